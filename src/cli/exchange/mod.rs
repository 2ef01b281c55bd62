//! `oauth-token-operator exchange`: one exchange from a YAML file, no cluster needed: read the
//! input ([`input`]: the spec, the credentials, the trust), resolve the spec and exchange as the
//! operator would (with the proxy environment, `--ca-file` and the bundle standing in for
//! `caBundleRef`), print what it would store ([`output`]).

mod input;
mod output;
mod strict;
mod warnings;

use crate::cli::terminal::{errln, outln};
use std::process::ExitCode;

use serde_json::json;

use super::{EXIT_EXCHANGE, EXIT_INPUT, ExchangeArgs, OutputFormat};
use crate::api::reason::{Failure, Reason};
use crate::base::clock::SystemClock;
use crate::oauth::exchange;
use crate::oauth::transport::proxy::ProxyConfig;
use crate::oauth::transport::{Transport, TransportConfig};
use crate::output::secret;
use crate::spec::{ClientSettings, Policy};

/// Runs the command and maps the outcome to the exit code.
pub fn run(args: ExchangeArgs) -> ExitCode {
    let output = args.output;
    let mut warnings = warnings::Warnings::new(output);
    match run_inner(args, &mut warnings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Outcome::Input(message)) => {
            report(output, None, &message, &warnings);
            ExitCode::from(EXIT_INPUT)
        }
        Err(Outcome::Failed(failure)) => {
            let code = match failure.reason {
                Reason::InvalidSpec | Reason::CredentialsNotFound | Reason::InvalidCredentials => {
                    EXIT_INPUT
                }
                _ => EXIT_EXCHANGE,
            };
            report(output, Some(failure.reason), &failure.message, &warnings);
            ExitCode::from(code)
        }
    }
}

/// Why the command did not succeed.
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

fn report(
    output: OutputFormat,
    reason: Option<Reason>,
    message: &str,
    warnings: &warnings::Warnings,
) {
    match output {
        OutputFormat::Json => {
            let value = json!({
                "ok": false,
                "reason": reason.map(Reason::as_str),
                "message": message,
                "warnings": warnings.all(),
            });
            outln!("{value:#}");
        }
        OutputFormat::Text => match reason {
            Some(reason) => errln!("error: exchange failed: {reason}: {message}"),
            None => errln!("error: {message}"),
        },
    }
}

fn run_inner(args: ExchangeArgs, warnings: &mut warnings::Warnings) -> Result<(), Outcome> {
    let file = input::InputFile::parse(&input::read_input(&args)?)?;
    let policy = Policy {
        allow_insecure_http: args.allow_insecure_http,
        token_urls: std::sync::Arc::new(args.token_urls.policy()),
        // ServiceAccountToken here sends the JWT of --assertion-file; no token is requested.
        allow_service_account_tokens: true,
    };
    let mut settings = ClientSettings::resolve(&file.client.spec, &policy)?;
    if let (Some(exchange), Some(given)) = (
        settings.exchange.token_exchange.as_mut(),
        &args.subject_token_type,
    ) {
        exchange.subject_token_type =
            crate::spec::token_exchange::uri("--subject-token-type", given)?;
    }
    let subject = input::subject(&args, &settings, &file.secrets)?;
    let credentials = input::credentials(&args, &file.client, &file.secrets)?;
    let credentials = match subject {
        Some(subject) => credentials.with_subject(subject),
        None => credentials,
    };
    for warning in warnings::placeholders(&credentials) {
        warnings.add(warning);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Outcome::Input(format!("cannot start the async runtime: {e}")))?;
    let proxy = ProxyConfig::from_env();
    for warning in proxy.warnings() {
        warnings.add(warning.to_string());
    }
    let trust = input::trust(&args, &settings, &file)?;
    let ca_file = args
        .ca_file
        .as_deref()
        .map(|path| super::read_ca_bundle_file("--ca-file", path).map_err(Outcome::Input))
        .transpose()?
        .transpose()?;
    let transport = Transport::from_config(TransportConfig {
        timeout: args.request_timeout,
        policy: policy.token_urls.clone(),
        proxy,
        ca_file,
        limits: Default::default(),
    })
    .map_err(|e| Outcome::Input(e.to_string()))?;
    let token = runtime.block_on(exchange::exchange_once(
        &transport,
        &trust,
        &settings.exchange,
        &credentials,
        &SystemClock,
    ))?;
    // The operator refuses a Secret over its size limit before writing it; so does this.
    secret::check_size(&token, &settings.templates)?;
    output::print(&args, &file.client, &settings, &token, warnings);
    Ok(())
}
