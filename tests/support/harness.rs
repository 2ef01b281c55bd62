//! Runs the real controller in-process against the API-server double and a vendor emulator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oauth_token_operator::base::clock::{Clock, SystemClock};
use oauth_token_operator::controller::{self, Config};
use oauth_token_operator::runtime::health::Health;
use oauth_token_operator::runtime::metrics::Metrics;
use oauth_token_operator::spec::Policy;
use serde_json::{Value, json};

use super::apiserver::{
    ApiServer, CLUSTER_CLIENTS_PROFILE, CLUSTEROAUTHCLIENTS, DEFAULT_PROFILE, EVENTS, OAUTHCLIENTS,
    SECRETS, SERVICE_ACCOUNT_TOKENS_PROFILE,
};

/// How a test configures the controller.
#[derive(Clone, Debug)]
pub struct Options {
    /// Token request timeout.
    pub request_timeout: Duration,
    /// `--allow-service-account-tokens`.
    pub service_account_tokens: bool,
    /// `--ca-file`: trust anchors beside the system store (the test CA of an mTLS endpoint).
    pub ca_file: Option<oauth_token_operator::oauth::transport::trust::CaBundle>,
}

impl Options {
    /// The defaults with `--allow-service-account-tokens`.
    pub fn with_service_account_tokens() -> Options {
        Options {
            service_account_tokens: true,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            request_timeout: Duration::from_secs(2),
            service_account_tokens: false,
            ca_file: None,
        }
    }
}

/// A running controller.
pub struct Operator {
    api: ApiServer,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Starts the controller against `api`. Its logs are captured at TRACE and scanned for
    /// secrets and tokens when it stops; with `TEST_LOG` set, they go to standard error instead.
    pub fn start(api: &ApiServer, namespaces: &[&str], max_concurrent_exchanges: usize) -> Self {
        Operator::start_with_timeout(
            api,
            namespaces,
            max_concurrent_exchanges,
            Duration::from_secs(2),
        )
    }

    /// As [`Operator::start`], with a token request timeout of `request_timeout`.
    pub fn start_with_timeout(
        api: &ApiServer,
        namespaces: &[&str],
        max_concurrent_exchanges: usize,
        request_timeout: Duration,
    ) -> Self {
        Operator::start_with(
            api,
            namespaces,
            max_concurrent_exchanges,
            Options {
                request_timeout,
                ..Options::default()
            },
        )
    }

    /// As [`Operator::start`], configured as `options` say.
    pub fn start_with(
        api: &ApiServer,
        namespaces: &[&str],
        max_concurrent_exchanges: usize,
        options: Options,
    ) -> Self {
        Operator::start_configured(api, |config| {
            config.namespaces = namespaces.iter().map(|s| (*s).to_owned()).collect();
            config.max_concurrent_exchanges = max_concurrent_exchanges;
            config.request_timeout = options.request_timeout;
            config.policy.allow_service_account_tokens = options.service_account_tokens;
            config.ca_file = options.ca_file;
        })
    }

    /// Starts the controller against `api` with the test defaults (all namespaces, 4 exchanges,
    /// a 2 s request timeout, http:// allowed) as `adjust` changes them.
    pub fn start_configured(api: &ApiServer, adjust: impl FnOnce(&mut Config)) -> Self {
        Operator::start_on_clock(api, Arc::new(SystemClock), adjust)
    }

    /// As [`Operator::start_configured`], on `clock`: with a [`oauth_token_operator::base::clock::ManualClock`], time passes only
    /// when the test moves it, and every client is looked at again when it does.
    pub fn start_on_clock(
        api: &ApiServer,
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let _ = trace_logs();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let health = Arc::new(Health::default());
        let mut config = Config {
            namespaces: Vec::new(),
            policy: Policy {
                allow_insecure_http: true,
                ..Default::default()
            },
            max_concurrent_exchanges: 4,
            request_timeout: Duration::from_secs(2),
            proxy: Default::default(),
            namespace: "oauth-token-operator-system".into(),
            ca_file: None,
            limits: Default::default(),
            refused_token_audiences: Vec::new(),
            own_service_account: None,
            cluster_clients: None,
        };
        adjust(&mut config);
        api.set_profile(if config.policy.allow_service_account_tokens {
            SERVICE_ACCOUNT_TOKENS_PROFILE
        } else if config.cluster_clients.is_some() {
            CLUSTER_CLIENTS_PROFILE
        } else {
            DEFAULT_PROFILE
        });
        let client = api.client();
        // A controller panic is written to a buffer that a timed-out wait prints.
        let logs = super::logs::Captured::default();
        api.operator_logs.lock().unwrap().push(logs.clone());
        let h = health.clone();
        let metrics = Arc::new(Metrics::default());
        let m = metrics.clone();
        let panic_log = logs.clone();
        let task = tokio::spawn(async move {
            use futures::FutureExt;
            let mut rx = stop_rx;
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let run = controller::run(client, config, clock, h, m, shutdown);
            match std::panic::AssertUnwindSafe(run).catch_unwind().await {
                Ok(result) => result.expect("controller runs"),
                Err(panic) => {
                    use std::io::Write;
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    let _ = writeln!(panic_log.clone(), "CONTROLLER PANICKED: {message}");
                    std::panic::resume_unwind(panic);
                }
            }
        });
        Operator {
            api: api.clone(),
            health,
            metrics,
            stop,
            task,
        }
    }

    /// Stops the controller, waits for it to finish, and checks that no client secret or token
    /// reached the logs, a status or an event.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown within 10 s")
            .expect("controller task");
        let forbidden = secret_values(&self.api);
        let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
        if let Some(logs) = trace_logs() {
            let text = logs.text();
            assert!(text.contains("TRACE"), "TRACE logs are captured");
            super::logs::assert_absent(&text, &refs, "controller TRACE logs");
        }
        let written: String = [OAUTHCLIENTS, CLUSTEROAUTHCLIENTS, EVENTS]
            .into_iter()
            .flat_map(|kind| self.api.list(kind, None))
            .map(|o| format!("{}{}", o["status"], o["note"]))
            .collect();
        super::logs::assert_absent(&written, &refs, "statuses and events");
    }

    /// Waits until the watch caches have synced.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.health.is_ready() {
            assert!(Instant::now() < deadline, "not ready within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Creates a credentials Secret.
pub fn credentials(api: &ApiServer, ns: &str, name: &str, id: &str, secret: &str) -> Value {
    api.create(
        SECRETS,
        json!({
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"client_id": id, "client_secret": secret},
        }),
    )
}

/// Creates an OAuthClient with `spec`.
pub fn oauth_client(api: &ApiServer, ns: &str, name: &str, spec: Value) -> Value {
    api.create(
        OAUTHCLIENTS,
        json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1",
            "kind": "OAuthClient",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }),
    )
}

/// The condition `type_` of an OAuthClient as (status, reason, message).
pub fn condition(
    api: &ApiServer,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let object = api.get(OAUTHCLIENTS, ns, name)?;
    let conditions = object["status"]["conditions"].as_array()?.clone();
    conditions.iter().find(|c| c["type"] == type_).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_owned(),
            c["reason"].as_str().unwrap_or("").to_owned(),
            c["message"].as_str().unwrap_or("").to_owned(),
        )
    })
}

/// Polls `check` every 25 ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until Ready has `status` and `reason`; on timeout, panics showing the object's status.
pub async fn wait_ready(
    api: &ApiServer,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(c) =
            condition(api, ns, name, "Ready").filter(|c| c.0 == status && c.1 == reason)
        {
            return c;
        }
        if Instant::now() > deadline {
            let object = api.get(OAUTHCLIENTS, ns, name);
            let logs: String = api
                .operator_logs
                .lock()
                .unwrap()
                .iter()
                .map(|l| l.text())
                .collect();
            panic!(
                "timed out waiting for {ns}/{name} Ready={status} {reason}; status: {:#}; calls: {:?}\n{logs}",
                object.map(|o| o["status"].clone()).unwrap_or_default(),
                api.counts()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The decoded value of `key` in a Secret.
pub fn secret_value(api: &ApiServer, ns: &str, name: &str, key: &str) -> Option<String> {
    use base64::Engine as _;
    let secret = api.get(SECRETS, ns, name)?;
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The TRACE log of every in-process controller of this test binary (`None` with `TEST_LOG`,
/// whose logs go to standard error).
fn trace_logs() -> Option<&'static super::logs::Captured> {
    static LOGS: std::sync::OnceLock<Option<super::logs::Captured>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
            return None;
        }
        super::logs::try_capture_global()
    })
    .as_ref()
}

/// Client assertions and tokens the emulators saw in this test binary (each registers what it
/// received), scanned for as secrets too.
pub fn seen_secret(value: &str) {
    if !value.is_empty() {
        SEEN.lock().unwrap().push(value.to_owned());
    }
}

static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Values that must never be logged: every client secret and private key in the double's
/// Secrets (and the `id:secret` pairs of its Basic header), every token the managed Secrets
/// hold, the prefix of every token the emulators issue, every ServiceAccount token the double
/// issued, and every client assertion the emulators received, with the signature of each JWT.
/// `assert_absent` looks for each in all its forms.
fn secret_values(api: &ApiServer) -> Vec<String> {
    use base64::Engine as _;
    let mut values = vec![
        "emulated-token-".to_owned(),
        super::vendors::MICROBILT_TOKEN.to_owned(),
    ];
    let jwts: Vec<String> = api
        .issued_service_account_tokens()
        .into_iter()
        .chain(SEEN.lock().unwrap().iter().cloned())
        .collect();
    for jwt in jwts {
        if let Some((_, signature)) = jwt.rsplit_once('.') {
            values.push(signature.to_owned());
        }
        values.push(jwt);
    }
    for secret in api.list(SECRETS, None) {
        // The operator's seal key: random bytes, stored base64; never in a log, status or event.
        if secret["metadata"]["name"] == "oauth-token-operator-seal-key" {
            for (_, value) in secret["data"].as_object().into_iter().flatten() {
                let encoded = value.as_str().unwrap_or_default().to_owned();
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&encoded) {
                    values.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
                }
                values.push(encoded);
            }
            continue;
        }
        let mut client_id = None;
        let mut client_secret = None;
        for (key, value) in secret["data"].as_object().into_iter().flatten() {
            let Some(decoded) = value
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            let sensitive = key.contains("secret") || key.contains("key") || key == "access_token";
            if sensitive && decoded.contains("PRIVATE KEY-----") {
                // The PEM, and each line of its base64 body (what a log line might cut).
                values.extend(
                    decoded
                        .lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                        .map(str::to_owned),
                );
            }
            if key == "client_id" {
                client_id = Some(decoded.clone());
            }
            if key == "client_secret" {
                client_secret = Some(decoded.clone());
            }
            if sensitive && decoded.trim().len() >= 8 {
                values.push(decoded);
            }
        }
        if let (Some(id), Some(secret)) = (client_id, client_secret) {
            if secret.trim().len() >= 8 {
                values.extend(super::logs::basic_pairs(&id, &secret));
            }
        }
    }
    values
}
