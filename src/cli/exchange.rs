//! `oauth-token-operator exchange`: one exchange from a YAML file, no cluster needed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{EXIT_EXCHANGE, EXIT_INPUT, ExchangeArgs, OutputFormat};
use crate::api::crd::OAuthClient;
use crate::api::reason::{Failure, Reason};
use crate::oauth::exchange::Exchanger;
use crate::oauth::proxy::ProxyConfig;
use crate::oauth::request::Credentials;
use crate::oauth::transport::Transport;
use crate::output::redact::{REDACTED, Sensitive};
use crate::output::secret::token_entries;
use crate::spec::{ClientSettings, Policy};
use crate::timing::clock::SystemClock;
use crate::timing::refresh;
use crate::timing::time::rfc3339;

/// Runs the command and maps the outcome to the exit code.
pub fn run(args: ExchangeArgs) -> ExitCode {
    let output = args.output;
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Outcome::Input(message)) => {
            report(output, None, &message);
            ExitCode::from(EXIT_INPUT)
        }
        Err(Outcome::Failed(failure)) => {
            let code = match failure.reason {
                Reason::InvalidSpec | Reason::CredentialsNotFound => EXIT_INPUT,
                _ => EXIT_EXCHANGE,
            };
            report(output, Some(failure.reason), &failure.message);
            ExitCode::from(code)
        }
    }
}

enum Outcome {
    /// The input could not be used (exit 2).
    Input(String),
    /// A classified failure (exit 2 for spec and credentials problems, else 3).
    Failed(Failure),
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Self {
        Outcome::Failed(f)
    }
}

fn report(output: OutputFormat, reason: Option<Reason>, message: &str) {
    match output {
        OutputFormat::Json => {
            let value = json!({
                "ok": false,
                "reason": reason.map(Reason::as_str),
                "message": message,
            });
            println!("{value:#}");
        }
        OutputFormat::Text => match reason {
            Some(reason) => eprintln!("error: exchange failed: {reason}: {message}"),
            None => eprintln!("error: {message}"),
        },
    }
}

fn run_inner(args: ExchangeArgs) -> Result<(), Outcome> {
    let text = read_input(&args)?;
    let file = InputFile::parse(&text)?;
    let client = file.client;
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

    let policy = Policy {
        allow_insecure_http: args.allow_insecure_http,
        token_urls: std::sync::Arc::new(args.token_urls.policy()),
    };
    let settings = ClientSettings::resolve(&client.spec, &policy)?;
    let credentials = credentials(&args, &client, &file.secrets)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Outcome::Input(format!("cannot start the async runtime: {e}")))?;
    let proxy = ProxyConfig::from_env();
    for warning in proxy.warnings() {
        eprintln!("warning: {warning}");
    }
    let transport = Transport::with_proxy(args.request_timeout, policy.token_urls.clone(), proxy)
        .map_err(|e| Outcome::Input(e.to_string()))?;
    let exchanger = Exchanger::new(transport);
    let clock = SystemClock;
    let token = runtime.block_on(exchanger.exchange(&settings.exchange, &credentials, &clock))?;

    let next_refresh =
        refresh::refresh_at(token.issued_at, token.expires_at, &settings.refresh, 0.0);
    let target = client.spec.target.clone().unwrap_or_default();
    let secret_name = target.name.unwrap_or_else(|| format!("{name}-token"));
    let entries = token_entries(&token, &settings.templates);
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
    Ok(())
}

fn read_input(args: &ExchangeArgs) -> Result<String, Outcome> {
    let path = &args.file;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Outcome::Input(format!("cannot read standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Outcome::Input(format!("cannot read {}: {e}", path.display())))
    }
}

/// The documents of the input file that matter: one OAuthClient and any Secrets.
struct InputFile {
    client: OAuthClient,
    secrets: Vec<FileSecret>,
}

/// A Secret given in the input file (only what is needed to find credentials).
#[derive(Deserialize)]
struct FileSecret {
    metadata: FileMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct FileMeta {
    name: String,
}

impl InputFile {
    fn parse(text: &str) -> Result<Self, Outcome> {
        let mut clients = Vec::new();
        let mut secrets = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(document).map_err(|e| {
                Outcome::Input(format!("document {} is not valid YAML: {e}", index + 1))
            })?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            match kind {
                "OAuthClient" => {
                    let client: OAuthClient = serde_yaml::from_value(value).map_err(|e| {
                        Outcome::Input(format!(
                            "document {} is not a valid OAuthClient: {e}",
                            index + 1
                        ))
                    })?;
                    clients.push(client);
                }
                "Secret" => {
                    if let Ok(secret) = serde_yaml::from_value::<FileSecret>(value) {
                        secrets.push(secret);
                    }
                }
                _ => {}
            }
        }
        match clients.len() {
            0 => Err(Outcome::Input("the file holds no OAuthClient".into())),
            1 => Ok(InputFile {
                client: clients.remove(0),
                secrets,
            }),
            n => Err(Outcome::Input(format!(
                "the file holds {n} OAuthClients; put the one to try in its own file"
            ))),
        }
    }
}

fn credentials(
    args: &ExchangeArgs,
    client: &OAuthClient,
    secrets: &[FileSecret],
) -> Result<Credentials, Outcome> {
    let reference = &client.spec.credentials_secret_ref;
    let file_secret = secrets.iter().find(|s| s.metadata.name == reference.name);
    let from_file = |key: &str| -> Result<Option<Vec<u8>>, Outcome> {
        let Some(secret) = file_secret else {
            return Ok(None);
        };
        if let Some(v) = secret.string_data.get(key) {
            return Ok(Some(v.clone().into_bytes()));
        }
        match secret.data.get(key) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map(Some)
                .map_err(|_| {
                    Outcome::Input(format!(
                        "Secret {}: data.{key} is not valid base64",
                        reference.name
                    ))
                }),
            None => Ok(None),
        }
    };
    let utf8 = |bytes: Vec<u8>, what: &str| {
        String::from_utf8(bytes).map_err(|_| {
            Outcome::Failed(Failure::invalid_spec(format!("{what} is not valid UTF-8")))
        })
    };

    let client_id = match (&args.client_id, &client.spec.client_id) {
        (Some(id), _) | (None, Some(id)) => id.clone(),
        (None, None) => match from_file(&reference.client_id_key)? {
            Some(bytes) => utf8(
                bytes,
                &format!(
                    "key {} of Secret {}",
                    reference.client_id_key, reference.name
                ),
            )?,
            None => {
                return Err(Outcome::Failed(Failure::new(
                    Reason::CredentialsNotFound,
                    "no client_id: pass --client-id, set OAUTH_CLIENT_ID or spec.clientId, or include the credentials Secret in the file",
                )));
            }
        },
    };

    let secret_bytes = if let Some(path) = &args.client_secret_file {
        let bytes = std::fs::read(path).map_err(|e| {
            Outcome::Input(format!(
                "cannot read --client-secret-file {}: {e}",
                path.display()
            ))
        })?;
        if bytes.ends_with(b"\n") {
            eprintln!(
                "warning: {} ends with a newline, which is sent as part of the secret (write it with printf or echo -n)",
                path.display()
            );
        }
        bytes
    } else if let Some(value) = std::env::var_os("OAUTH_CLIENT_SECRET") {
        value.into_encoded_bytes()
    } else {
        match from_file(&reference.client_secret_key)? {
            Some(bytes) => bytes,
            None => {
                return Err(Outcome::Failed(Failure::new(
                    Reason::CredentialsNotFound,
                    "no client secret: pass --client-secret-file, set OAUTH_CLIENT_SECRET, or include the credentials Secret in the file",
                )));
            }
        }
    };
    let client_secret = utf8(secret_bytes, "the client secret")?;
    if client_secret.is_empty() {
        return Err(Outcome::Failed(Failure::new(
            Reason::CredentialsNotFound,
            "the client secret is empty",
        )));
    }
    Ok(Credentials {
        client_id,
        client_secret: Sensitive::new(client_secret),
    })
}
