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

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::api::crd::OAuthClientSpec;
    use crate::base::Sensitive;
    use crate::oauth::response::LifetimeSource;
    use crate::spec::{ClientSettings, Policy};

    fn settings(url: &str) -> ClientSettings {
        let spec: OAuthClientSpec = serde_json::from_value(
            serde_json::json!({"tokenUrl": url, "credentialsSecretRef": {"name": "creds"}}),
        )
        .unwrap();
        ClientSettings::resolve(&spec, &Policy::default()).unwrap()
    }

    fn pending(issued_at: Timestamp, settings: &ExchangeSettings) -> Pending {
        Pending {
            token: Token {
                access_token: Sensitive::new("t".to_owned()),
                token_type: "Bearer".into(),
                scope: None,
                issued_at,
                expires_at: issued_at + SignedDuration::from_secs(3600),
                lifetime_source: LifetimeSource::ExpiresIn,
                vendor_issued_at: None,
                issued_token_type: None,
            },
            fingerprint: "fp".into(),
            settings: settings.clone(),
            credentials_rv: Some("1".into()),
            credentials_digest: [3; 32],
        }
    }

    #[test]
    fn a_waiting_token_is_written_only_for_the_same_settings_credentials_and_before_its_refresh() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let current = settings("https://idp.example/token");
        let token = pending(t0, &current.exchange);
        let rv = Some("1".to_owned());
        let at = |secs| t0 + SignedDuration::from_secs(secs);
        assert!(token.still_fresh(&current.exchange, &current.refresh, rv.as_ref(), at(60)));
        let other = settings("https://other.example/token");
        assert!(!token.still_fresh(&other.exchange, &current.refresh, rv.as_ref(), at(60)));
        let newer = Some("2".to_owned());
        assert!(!token.still_fresh(&current.exchange, &current.refresh, newer.as_ref(), at(60)));
        assert!(
            !token.still_fresh(&current.exchange, &current.refresh, rv.as_ref(), at(3500)),
            "past its refresh time"
        );
        assert!(token.issued_with(Some([3; 32])));
        assert!(!token.issued_with(Some([4; 32])));
        assert!(!token.issued_with(None));
    }
}
