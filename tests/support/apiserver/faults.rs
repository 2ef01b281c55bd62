//! Faults and the record of calls: [`Matcher`] (which requests a fault applies to), the queued
//! faults, injections and chaos; the RBAC call log ([`Call`], [`calls_log_path`]); and the
//! access and subject reviews (SelfSubjectAccessReview, SelfSubjectReview), answered from the
//! denied rights and the configured user name.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::requests::status_body;
use super::{Kind, Shared};

// === calls, faults ===

/// Random faults and latency (the chaos soak).
#[derive(Clone, Copy, Debug)]
pub(super) struct Chaos {
    pub(super) rate: f64,
    pub(super) max_latency: Duration,
}

/// One API call, as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
}

impl Call {
    /// `verb resource[/subresource]`, e.g. `patch oauthclients/status`.
    pub fn label(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{} {}/{}", self.verb, self.resource, sub),
            None => format!("{} {}", self.verb, self.resource),
        }
    }
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub verb: Option<&'static str>,
    pub resource: Option<&'static str>,
    pub subresource: Option<&'static str>,
    pub namespace: Option<&'static str>,
}

impl Matcher {
    pub fn new(verb: &'static str, resource: &'static str) -> Self {
        Matcher {
            verb: Some(verb),
            resource: Some(resource),
            subresource: None,
            namespace: None,
        }
    }
    /// Only requests in `namespace`.
    pub fn in_namespace(self, namespace: &'static str) -> Self {
        Matcher {
            namespace: Some(namespace),
            ..self
        }
    }
    pub fn status(verb: &'static str, resource: &'static str) -> Self {
        Matcher {
            subresource: Some("status"),
            ..Matcher::new(verb, resource)
        }
    }
    pub(super) fn matches(&self, call: &Call) -> bool {
        self.verb.is_none_or(|v| v == call.verb)
            && self.resource.is_none_or(|r| r == call.resource)
            && self
                .subresource
                .is_none_or(|s| call.subresource.as_deref() == Some(s))
            && self
                .namespace
                .is_none_or(|n| call.namespace.as_deref() == Some(n))
    }
}

pub(super) struct Fault {
    pub(super) matcher: Matcher,
    pub(super) remaining: usize,
    pub(super) status: u16,
}

/// An object created by someone else just before the next matching request is served (to race
/// the controller between its read of a cache and its write).
pub(super) struct Injection {
    pub(super) matcher: Matcher,
    pub(super) kind: Kind,
    pub(super) object: Value,
}

/// Every distinct call any double has served in this `cargo test` run, appended to a file that
/// the RBAC test reads. Test binaries of one run share their parent (cargo), hence the name.
pub fn calls_log_path() -> std::path::PathBuf {
    let run = std::os::unix::process::parent_id();
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api-calls-{run}.txt"))
}

/// Appends `verb group resource subresource profile` (a non-resource URL as `verb - URL -`).
pub(super) fn log_call(call: &Call, profile: &'static str) {
    use std::io::Write;
    static SEEN: std::sync::OnceLock<Mutex<std::collections::HashSet<(Call, &'static str)>>> =
        std::sync::OnceLock::new();
    let mut signature = call.clone();
    signature.namespace = None;
    let fresh = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert((signature, profile));
    if fresh {
        let group = match call.group.as_str() {
            "" if call.resource.starts_with('/') => "-",
            "" => "core",
            group => group,
        };
        let line = format!(
            "{} {group} {} {} {profile}\n",
            call.verb,
            call.resource,
            call.subresource.as_deref().unwrap_or("-")
        );
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(calls_log_path())
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

// === access and subject reviews ===

/// A SelfSubjectAccessReview: allowed unless [`ApiServer::deny`] matches it. Recorded as the
/// call `create selfsubjectaccessreviews`, which Kubernetes grants every authenticated user.
pub(super) fn self_subject_access_review(shared: &Shared, body: &[u8]) -> Response {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return status_body(400, "not a SelfSubjectAccessReview");
    };
    let attributes = &review["spec"]["resourceAttributes"];
    let field = |name: &str| attributes[name].as_str().unwrap_or_default().to_owned();
    let asked = Call {
        verb: field("verb"),
        group: field("group"),
        resource: field("resource"),
        subresource: Some(field("subresource")).filter(|s| !s.is_empty()),
        namespace: Some(field("namespace")).filter(|s| !s.is_empty()),
    };
    let mut store = shared.store.lock().unwrap();
    store.record(
        Call {
            verb: "create".into(),
            group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            subresource: None,
            namespace: None,
        },
        shared.log_profile(),
    );
    let allowed = !store.denied.iter().any(|m| m.matches(&asked));
    review["status"] = json!({"allowed": allowed});
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

/// A SelfSubjectReview: the user the double takes its clients for ([`ApiServer::set_username`]).
/// Recorded as `create selfsubjectreviews`, which Kubernetes grants every authenticated user.
pub(super) fn self_subject_review(shared: &Shared) -> Response {
    let username = shared.username.lock().unwrap().clone();
    shared.store.lock().unwrap().record(
        Call {
            verb: "create".into(),
            group: "authentication.k8s.io".into(),
            resource: "selfsubjectreviews".into(),
            subresource: None,
            namespace: None,
        },
        shared.log_profile(),
    );
    let review = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
        "metadata": {}, "status": {"userInfo": {"username": username}},
    });
    (StatusCode::CREATED, axum::Json(review)).into_response()
}
