//! The Kubernetes API server's issuer, read from its discovery document when first needed and
//! kept for a while: a ServiceAccount token is never requested for it (see
//! [`crate::controller::service_account`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::reason::{Failure, Reason};

/// The discovery document's path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How long the issuer read from the discovery document is kept.
const ISSUER_TTL: Duration = Duration::from_secs(600);

/// The API server's issuer, as last read.
#[derive(Debug, Default)]
pub struct Issuer {
    cached: Mutex<Option<Reading>>,
}

/// One reading of the issuer.
#[derive(Clone, Debug)]
struct Reading {
    issuer: String,
    at: Instant,
}

impl Issuer {
    /// The issuer: the one read less than [`ISSUER_TTL`] ago, or a new reading. An error: the
    /// API server could not be asked.
    pub async fn get(&self, kube: &kube::Client) -> Result<IssuerAnswer, kube::Error> {
        if let Some(reading) = self.cached.lock().expect("issuer lock").clone()
            && reading.at.elapsed() < ISSUER_TTL
        {
            return Ok(IssuerAnswer::Known(reading.issuer));
        }
        let request = http::Request::get(DISCOVERY_PATH)
            .body(Vec::new())
            .expect("a static request is valid");
        let text = match kube.request_text(request).await {
            Ok(text) => text,
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                return Ok(IssuerAnswer::Refused(unknown_issuer(&format!(
                    "HTTP {}",
                    e.code
                ))));
            }
            Err(e) => return Err(e),
        };
        let issuer = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .filter(|i| !i.is_empty());
        let Some(issuer) = issuer else {
            return Ok(IssuerAnswer::Refused(unknown_issuer(
                "the document names no issuer",
            )));
        };
        *self.cached.lock().expect("issuer lock") = Some(Reading {
            issuer: issuer.clone(),
            at: Instant::now(),
        });
        Ok(IssuerAnswer::Known(issuer))
    }
}

fn unknown_issuer(why: &str) -> Failure {
    Failure::new(
        Reason::ServiceAccountTokenDenied,
        format!(
            "cannot read the API server's issuer from {DISCOVERY_PATH} ({why}), so the audience cannot be checked against it; no ServiceAccount token is requested"
        ),
    )
}

/// What the API server said about its issuer.
#[derive(Clone, Debug)]
pub enum IssuerAnswer {
    /// The issuer.
    Known(String),
    /// It would not tell: no token can be requested, since the audience cannot be checked.
    Refused(Failure),
}
