//! What `exchange` prints: the Secret the operator would store (the token redacted unless
//! `--show-token`), as text or JSON.

use crate::cli::terminal::{out, outln};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::warnings::{self, Warnings};
use crate::api::crd::OAuthClient;
use crate::base::REDACTED;
use crate::base::time::rfc3339;
use crate::cli::{ExchangeArgs, OutputFormat};
use crate::oauth::response::Token;
use crate::output::secret::token_entries;
use crate::spec::ClientSettings;
use crate::timing::refresh;

/// Prints the result of a successful exchange.
pub fn print(
    args: &ExchangeArgs,
    client: &OAuthClient,
    settings: &ClientSettings,
    token: &Token,
    warnings: &mut Warnings,
) {
    let name = client
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "oauthclient".into());
    let target = client.spec.target.clone().unwrap_or_default();
    let entries = token_entries(token, &settings.templates)
        .iter()
        .map(|e| {
            let value = if e.holds_token && !args.show_token {
                e.value
                    .expose()
                    .replace(token.access_token.expose().as_str(), REDACTED)
            } else {
                e.value.expose().clone()
            };
            (e.key.clone(), value)
        })
        .collect();
    let stored = Stored {
        namespace: client
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        secret_name: target.name.unwrap_or_else(|| format!("{name}-token")),
        secret_type: target.type_,
        entries,
        next_refresh: refresh::refresh_at(
            token.issued_at,
            token.expires_at,
            &settings.refresh,
            0.0,
        ),
        redacted: !args.show_token,
    };
    if let Some(warning) = warnings::short_margin(stored.next_refresh, token.expires_at) {
        warnings.add(warning);
    }
    match args.output {
        OutputFormat::Json => {
            let mut value = stored.json(settings, token);
            value["warnings"] = warnings.all().into();
            outln!("{value:#}");
        }
        OutputFormat::Text => out!("{}", stored.text(settings, token)),
    }
}

/// What the operator would store, with the token redacted unless `--show-token`.
struct Stored {
    namespace: String,
    secret_name: String,
    secret_type: String,
    /// The Secret's keys and their shown values.
    entries: Vec<(String, String)>,
    next_refresh: Timestamp,
    redacted: bool,
}

impl Stored {
    fn json(&self, settings: &ClientSettings, token: &Token) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        json!({
            "ok": true,
            "provider": settings.exchange.provider.as_str(),
            "tokenUrl": settings.exchange.token_url.as_str(),
            "secret": {
                "name": self.secret_name,
                "namespace": self.namespace,
                "type": self.secret_type,
                "stringData": data,
            },
            "tokenType": token.token_type,
            "scope": token.scope,
            "issuedTokenType": token.issued_token_type,
            "issuedAt": rfc3339(token.issued_at),
            "expiresAt": rfc3339(token.expires_at),
            "lifetimeSeconds": lifetime(token).as_secs(),
            "lifetimeSource": token.lifetime_source,
            "nextRefreshAt": rfc3339(self.next_refresh),
            "vendorIssuedAt": token.vendor_issued_at.map(rfc3339),
            "tokenRedacted": self.redacted,
        })
    }

    fn text(&self, settings: &ClientSettings, token: &Token) -> String {
        let mut out = format!(
            "Exchange succeeded: provider {}, {}\nThe operator would store Secret {}/{} (type {}):\n",
            settings.exchange.provider.as_str(),
            settings.exchange.token_url,
            self.namespace,
            self.secret_name,
            self.secret_type
        );
        let width = self.entries.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.entries {
            out.push_str(&format!(
                "  {:width$}  {value}\n",
                format!("{key}:"),
                width = width + 1
            ));
        }
        out.push_str(&format!(
            "Lifetime {}s (from {:?}); the operator would refresh at {}.\n",
            lifetime(token).as_secs(),
            token.lifetime_source,
            rfc3339(self.next_refresh)
        ));
        if self.redacted {
            out.push_str("The token is redacted; pass --show-token to print it.\n");
        }
        out
    }
}

fn lifetime(token: &Token) -> SignedDuration {
    token.expires_at.duration_since(token.issued_at)
}
