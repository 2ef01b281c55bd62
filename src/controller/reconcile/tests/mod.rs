//! Unit tests of the reconcile's steps, one file per step. Each step runs against a scripted
//! API server ([`Api`]: a `tower` service behind a real `kube::Client`, which answers each
//! request by the first rule that matches and records every request), with a [`ManualClock`],
//! so that a test says exactly which requests a step makes and what it returns for each answer.

mod exchange;
mod inputs;
mod observe;
mod record;
mod status;
mod write;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::observe::{Found, Snapshot};
use crate::api::crd::OAuthClient;
use crate::api::name::NamespacedName;
use crate::base::clock::{Clock, ManualClock};
use crate::controller::context::{Context, Shared};
use crate::controller::events::EventPublisher;
use crate::controller::gate::ExchangeGate;
use crate::controller::issuer::Issuer;
use crate::controller::memory::{Memories, Memory};
use crate::controller::references::References;
use crate::controller::secret_index::{ConfigMapIndex, ManagedIndex, SecretIndex};
use crate::decide::SecretState;
use crate::oauth::transport::Transport;
use crate::output::mac::SealKeys;
use crate::runtime::metrics::Metrics;
use crate::spec::{ClientSettings, Policy};

pub(super) const NS: &str = "team-a";

/// One request the scripted API server received.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    /// `GET`, `POST`, `PATCH`...
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// The `Accept` header (a metadata-only GET asks for `PartialObjectMetadata`).
    pub accept: String,
    /// The body, as JSON (`Null` when empty).
    pub body: Value,
}

impl Seen {
    /// `METHOD path` (without the query).
    pub fn line(&self) -> String {
        let path = self.uri.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method)
    }
}

/// An answer to the requests of one method and path, `times` times (then the next rule).
struct Rule {
    method: String,
    path: String,
    status: u16,
    body: Value,
    times: Option<usize>,
}

/// The scripted API server.
#[derive(Clone, Default)]
pub(super) struct Api {
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    /// Answers `METHOD path` (the path without its query) with `status` and `body`, always.
    pub fn on(&self, method: &str, path: &str, status: u16, body: Value) -> &Self {
        self.add(method, path, status, body, None)
    }

    /// As [`Api::on`], for the next `times` requests only.
    pub fn on_times(&self, method: &str, path: &str, times: usize, status: u16, body: Value) {
        self.add(method, path, status, body, Some(times));
    }

    fn add(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: Value,
        times: Option<usize>,
    ) -> &Self {
        self.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            body,
            times,
        });
        self
    }

    /// Every request so far, as `METHOD path`.
    pub fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(Seen::line).collect()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A kube client whose requests this answers (an unexpected request gets a 500 naming it).
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let seen = Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    accept: parts
                        .headers
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (status, body) = api.answer(&seen);
                api.seen.lock().unwrap().push(seen);
                let response = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(body.to_string().into_bytes()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        kube::Client::new(service, NS)
    }

    fn answer(&self, seen: &Seen) -> (u16, Value) {
        let path = seen.uri.split('?').next().unwrap_or_default().to_owned();
        let mut rules = self.rules.lock().unwrap();
        let found = rules
            .iter_mut()
            .position(|r| r.method == seen.method && r.path == path && r.times != Some(0));
        match found {
            Some(i) => {
                let rule = &mut rules[i];
                if let Some(times) = &mut rule.times {
                    *times -= 1;
                }
                (rule.status, rule.body.clone())
            }
            None => (
                500,
                status_body(500, "InternalError", &format!("unexpected {}", seen.line())),
            ),
        }
    }
}

/// A `metav1.Status` body.
pub(super) fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

/// The test's context: the scripted API server's client, a manual clock, empty caches.
pub(super) struct Fixture {
    pub api: Api,
    pub clock: Arc<ManualClock>,
    pub ctx: Context,
    /// Kept so that the gate's scope stays open.
    _woken: tokio::sync::mpsc::UnboundedReceiver<crate::controller::gate::QueueRef>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_policy(Policy {
            allow_insecure_http: true,
            ..Policy::default()
        })
    }

    pub fn with_policy(policy: Policy) -> Fixture {
        let api = Api::default();
        let kube = api.client();
        let clock = Arc::new(ManualClock::at(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let gate = ExchangeGate::new(4);
        let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
        let scope = gate.add_scope(wake);
        let shared = Arc::new(Shared {
            kube: kube.clone(),
            transport: Transport::new(Duration::from_secs(2)).unwrap(),
            policy,
            clock: clock.clone(),
            gate,
            request_timeout: Duration::from_secs(2),
            credentials_key: [7; 32],
            seal_keys: SealKeys::random(),
            events: EventPublisher::new(kube, "test".into()),
            metrics: Arc::new(Metrics::default()),
            issuer: Issuer::default(),
            refused_audiences: Vec::new(),
        });
        let ctx = Context {
            shared,
            managed: Arc::new(ManagedIndex::of_managed()),
            secrets: Arc::new(SecretIndex::of_versions()),
            config_maps: Arc::new(ConfigMapIndex::of_versions()),
            memories: Memories::default(),
            references: References::default(),
            config_map_references: References::default(),
            service_accounts: None,
            service_account_refs: References::default(),
            client_refs: References::default(),
            secrets_synced: tokio::sync::watch::channel(true).1,
            subject_secrets: Default::default(),
            subject_clients: Default::default(),
            scope,
            queue: Arc::new(crate::controller::queue::Queue::new(16)),
            detached: Default::default(),
            own_writes: Default::default(),
        };
        Fixture {
            api,
            clock,
            ctx,
            _woken: woken,
        }
    }

    /// Puts a Secret in the caches (the all-Secrets index, and the managed one when `managed`).
    pub fn cache_secret(&self, secret: &Value, managed: bool) {
        let meta: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": secret["metadata"],
        }))
        .unwrap();
        let event = watcher::Event::Apply(meta);
        self.ctx.secrets.apply(&event);
        if managed {
            self.ctx.managed.apply(&event);
        }
    }

    /// The client's settings, resolved.
    pub fn settings(&self, client: &OAuthClient) -> ClientSettings {
        ClientSettings::resolve(&client.spec, &self.ctx.shared.policy).unwrap()
    }

    /// A snapshot of `client` as a reconcile that read nothing would have it: no Secret, no
    /// memory.
    pub fn snapshot(&self, client: &OAuthClient) -> Snapshot {
        Snapshot {
            now: self.clock.now(),
            key: NamespacedName::of(&client.metadata),
            status: client.status.clone().unwrap_or_default(),
            generation: client.metadata.generation,
            uid: client.metadata.uid.clone().unwrap_or_default(),
            secret_name: crate::output::secret::target_name(client),
            settings: ClientSettings::resolve(&client.spec, &self.ctx.shared.policy),
            credentials_rv: Some("11".into()),
            secret: SecretState::Absent,
            credentials: None,
            credentials_changed: false,
            trust_rv: None,
            trust_changed: false,
            refresh_requested_at: None,
            memory: Memory::default(),
            drift: None,
            intact_token: None,
            found: Found::default(),
        }
    }
}

/// The OAuthClient `demo` of [`NS`] with `spec` (its token URL on 127.0.0.1).
pub(super) fn client(spec: Value) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1",
        "kind": "OAuthClient",
        "metadata": {"name": "demo", "namespace": NS, "uid": "uid-demo", "generation": 1, "resourceVersion": "3"},
        "spec": spec,
    }))
    .unwrap()
}

/// The plain spec: client_secret_basic to `url`, credentials in Secret `creds`.
pub(super) fn spec(url: &str) -> Value {
    json!({"tokenUrl": url, "credentialsSecretRef": {"name": "creds"}})
}

/// The credentials Secret `creds` at resourceVersion `rv`.
pub(super) fn credentials_secret(rv: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NS, "resourceVersion": rv},
        "data": {"client_id": b64("client-1"), "client_secret": b64("secret-1")},
    })
}

/// The path of a core object of [`NS`].
pub(super) fn path(kind: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{kind}/{name}")
}

/// A token, issued at the clock's time, valid for an hour.
pub(super) fn token(clock: &ManualClock, value: &str) -> crate::oauth::response::Token {
    let now = clock.now();
    crate::oauth::response::Token {
        access_token: crate::base::Sensitive::new(value.to_owned()),
        token_type: "Bearer".into(),
        scope: None,
        issued_at: now,
        expires_at: now + jiff::SignedDuration::from_secs(3600),
        lifetime_source: crate::oauth::response::LifetimeSource::ExpiresIn,
        vendor_issued_at: None,
        issued_token_type: None,
    }
}

/// The managed Secret the operator writes for `token`, as the API server returns it (at
/// resourceVersion `rv`).
pub(super) fn managed_secret(
    fixture: &Fixture,
    client: &OAuthClient,
    token: &crate::oauth::response::Token,
    rv: &str,
) -> Value {
    let settings = fixture.settings(client);
    let fingerprint = crate::output::fingerprint::compute(
        &crate::output::fingerprint::new_salt(),
        &settings.exchange,
        &crate::oauth::credentials::Credentials::with_secret("client-1", "secret-1"),
    );
    let mut body = crate::output::secret::managed_secret(
        client,
        token,
        &settings.templates,
        &fingerprint,
        &fixture.ctx.shared.seal_keys,
    );
    body["metadata"]["resourceVersion"] = json!(rv);
    body
}
