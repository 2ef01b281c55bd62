//! What `exchange` prints: the Secret the operator would store (the token redacted unless
//! `--show-token`), as text or JSON.

use serde_json::json;

use crate::api::crd::OAuthClient;
use crate::cli::{ExchangeArgs, OutputFormat};
use crate::oauth::response::Token;
use crate::output::redact::{REDACTED, Sensitive};
use crate::output::secret::token_entries;
use crate::spec::ClientSettings;
use crate::timing::refresh;
use crate::timing::time::rfc3339;

/// Prints the result of a successful exchange.
pub fn print(args: &ExchangeArgs, client: &OAuthClient, settings: &ClientSettings, token: &Token) {
    let name = client
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "oauthclient".into());
    let namespace = client
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let next_refresh =
        refresh::refresh_at(token.issued_at, token.expires_at, &settings.refresh, 0.0);
    let target = client.spec.target.clone().unwrap_or_default();
    let secret_name = target.name.unwrap_or_else(|| format!("{name}-token"));
    let entries = token_entries(token, &settings.templates);
    let shown = |value: &Sensitive<String>, holds_token: bool| -> String {
        if holds_token && !args.show_token {
            value
                .expose()
                .replace(token.access_token.expose().as_str(), REDACTED)
        } else {
            value.expose().clone()
        }
    };
    let lifetime = token.expires_at.duration_since(token.issued_at);

    match args.output {
        OutputFormat::Json => {
            let data: serde_json::Map<String, serde_json::Value> = entries
                .iter()
                .map(|e| (e.key.clone(), shown(&e.value, e.holds_token).into()))
                .collect();
            let value = json!({
                "ok": true,
                "provider": settings.exchange.provider.as_str(),
                "tokenUrl": settings.exchange.token_url.as_str(),
                "secret": {
                    "name": secret_name,
                    "namespace": namespace,
                    "type": target.type_,
                    "stringData": data,
                },
                "tokenType": token.token_type,
                "scope": token.scope,
                "issuedAt": rfc3339(token.issued_at),
                "expiresAt": rfc3339(token.expires_at),
                "lifetimeSeconds": lifetime.as_secs(),
                "lifetimeSource": token.lifetime_source,
                "nextRefreshAt": rfc3339(next_refresh),
                "vendorIssuedAt": token.vendor_issued_at.map(rfc3339),
                "tokenRedacted": !args.show_token,
            });
            println!("{value:#}");
        }
        OutputFormat::Text => {
            println!(
                "Exchange succeeded: provider {}, {}",
                settings.exchange.provider.as_str(),
                settings.exchange.token_url
            );
            println!(
                "The operator would store Secret {namespace}/{secret_name} (type {}):",
                target.type_
            );
            let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
            for e in &entries {
                println!(
                    "  {:width$}  {}",
                    format!("{}:", e.key),
                    shown(&e.value, e.holds_token),
                    width = width + 1
                );
            }
            println!(
                "Lifetime {}s (from {:?}); the operator would refresh at {}.",
                lifetime.as_secs(),
                token.lifetime_source,
                rfc3339(next_refresh)
            );
            if !args.show_token {
                println!("The token is redacted; pass --show-token to print it.");
            }
        }
    }
}
