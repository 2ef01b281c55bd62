//! A token obtained but not written yet (the API server refused or failed the write). A later
//! reconcile writes it instead of exchanging again, while it is valid and issued for exactly the
//! current request settings and credentials; otherwise it is dropped.

use jiff::Timestamp;

use crate::decide::{self, StoredToken};
use crate::oauth::response::Token;
use crate::spec::{ExchangeSettings, RefreshSettings};

/// A token waiting to be written.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The token (its `Debug` is redacted).
    pub token: Token,
    /// The fingerprint to store with it.
    pub fingerprint: String,
    /// The request settings it was issued for.
    pub settings: ExchangeSettings,
    /// resourceVersion of the credentials Secret it was issued with.
    pub credentials_rv: Option<String>,
    /// Keyed digest of the credentials it was issued with.
    pub credentials_digest: [u8; 32],
}

impl Pending {
    /// Whether it may still be written, as far as the settings, the credentials' version and
    /// the time tell: issued for `settings` and the credentials at `credentials_rv`, and valid
    /// until after its refresh would be due.
    pub fn still_fresh(
        &self,
        settings: &ExchangeSettings,
        refresh: &RefreshSettings,
        credentials_rv: Option<&String>,
        now: Timestamp,
    ) -> bool {
        let token = StoredToken {
            issued_at: self.token.issued_at,
            expires_at: self.token.expires_at,
            current: true,
            target_current: true,
        };
        self.settings == *settings
            && self.credentials_rv.as_ref() == credentials_rv
            && decide::refresh_time(&token, refresh, "", None) > now
    }

    /// Whether it was issued with exactly the credentials whose keyed digest is `digest` (a
    /// changed key reference with an unchanged Secret must not pass).
    pub fn issued_with(&self, digest: Option<[u8; 32]>) -> bool {
        digest == Some(self.credentials_digest)
    }
}

/// The outbox of one client.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// The token waiting, if any.
    pub pending: Option<Box<Pending>>,
}
