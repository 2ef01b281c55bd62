//! Prometheus metrics (prometheus-client), all prefixed `oauth_token_operator_`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `exchanges_total` | counter | `provider`, `result` (`success` or the failure reason) |
//! | `exchange_triggers_total` | counter | `trigger` (why the attempt was due: `no_token`, `spec_changed`, `credentials_changed`, `trust_changed`, `refresh_due`, `requested`, `restore`) |
//! | `exchange_duration_seconds` | histogram | `provider` |
//! | `token_expiration_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `token_issued_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `client_ready_status` | gauge (1 for the current value) | `namespace`, `name`, `condition` (`True`, `False`, `Unknown`) |
//! | `reconcile_total` | counter | |
//! | `reconcile_errors_total` | counter | `error` |
//! | `reconcile_duration_seconds` | histogram | |
//! | `http_clients` | gauge | | (HTTP clients for token endpoints in use: one per distinct trust configuration)
//! | `cluster_client_targets` | gauge | `name`, `state` (`selected`, `written`, `conflicts`): each ClusterOAuthClient's namespaces |
//!
//! The per-OAuthClient gauges follow cert-manager's certificate gauges and are removed when the
//! OAuthClient is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `provider`, `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    /// The preset name.
    pub provider: String,
    /// `success` or a failure reason.
    pub result: String,
}

/// `trigger`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// Why the attempt was due.
    pub trigger: String,
}

/// `provider`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The preset name.
    pub provider: String,
}

/// What the per-OAuthClient gauges show, kept compactly (one map entry per OAuthClient instead
/// of five label sets of owned strings) and turned into series on each scrape.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ClientState {
    /// Issue and expiry times (Unix seconds) of the token in the managed Secret.
    token: Option<(f64, f64)>,
    /// Index of the Ready value in [`CONDITION_VALUES`].
    ready: u8,
}

use crate::api::name::NamespacedName as ClientKey;

/// The per-OAuthClient gauges: `token_issued_timestamp_seconds`,
/// `token_expiration_timestamp_seconds` and `client_ready_status`.
#[derive(Debug, Default)]
struct ClientGauges {
    clients: std::sync::Mutex<HashMap<ClientKey, ClientState>>,
}

impl ClientGauges {
    fn set(&self, namespace: &str, name: &str, state: ClientState) {
        let mut clients = self.clients.lock().expect("metrics lock");
        clients.insert(ClientKey::new(namespace, name), state);
    }

    fn remove(&self, namespace: &str, name: &str) {
        let mut clients = self.clients.lock().expect("metrics lock");
        clients.remove(&ClientKey::new(namespace, name));
    }
}

/// A per-OAuthClient time gauge: name, help, and which of (issued, expires) it shows.
type TimeGauge = (&'static str, &'static str, fn((f64, f64)) -> f64);

const TIME_GAUGES: [TimeGauge; 2] = [
    (
        "token_expiration_timestamp_seconds",
        "Expiry of the token in the managed Secret, as a Unix timestamp",
        |(_, expires)| expires,
    ),
    (
        "token_issued_timestamp_seconds",
        "Issue time of the token in the managed Secret, as a Unix timestamp",
        |(issued, _)| issued,
    ),
];

impl Collector for ClientGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clients = self.clients.lock().expect("metrics lock");
        let mut sorted: Vec<_> = clients.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (name, help, pick) in TIME_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, state) in &sorted {
                if let Some(token) = state.token {
                    let labels = [("namespace", &*key.namespace), ("name", &*key.name)];
                    ConstGauge::new(pick(token)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "client_ready_status",
            "The Ready condition of each OAuthClient (1 for the current condition value)",
            None,
            MetricType::Gauge,
        )?;
        for (key, state) in &sorted {
            for (i, value) in CONDITION_VALUES.iter().enumerate() {
                let labels = [
                    ("namespace", &*key.namespace),
                    ("name", &*key.name),
                    ("condition", value),
                ];
                ConstGauge::new(i64::from(usize::from(state.ready) == i))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// `name`, `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterTargetLabels {
    /// The ClusterOAuthClient.
    pub name: String,
    /// `selected`, `written` or `conflicts`.
    pub state: String,
}

/// The states of `cluster_client_targets`.
const TARGET_STATES: [&str; 3] = ["selected", "written", "conflicts"];

/// `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed.
    pub error: String,
}

const CONDITION_VALUES: [&str; 3] = ["True", "False", "Unknown"];

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    exchanges: Family<ExchangeLabels, Counter>,
    triggers: Family<TriggerLabels, Counter>,
    exchange_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    clients: Arc<ClientGauges>,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    http_clients: Gauge,
    cluster_targets: Family<ClusterTargetLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn exchange_histogram() -> Histogram {
    // 5 ms to about 20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oauth_token_operator");
        let exchanges = Family::<ExchangeLabels, Counter>::default();
        registry.register(
            "exchanges",
            "Token exchanges attempted, by provider and result (success or failure reason)",
            exchanges.clone(),
        );
        let triggers = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "exchange_triggers",
            "Token exchanges attempted, by why they were due (the same attempts as exchanges_total)",
            triggers.clone(),
        );
        let exchange_duration =
            Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                exchange_histogram,
            );
        registry.register(
            "exchange_duration_seconds",
            "Duration of token requests, by provider",
            exchange_duration.clone(),
        );
        let clients = Arc::new(ClientGauges::default());
        registry.register_collector(Box::new(clients.clone()));
        let reconciles = Counter::default();
        registry.register("reconcile", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended with an API error, by what failed",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            reconcile_duration.clone(),
        );
        let http_clients = Gauge::default();
        registry.register(
            "http_clients",
            "HTTP clients for token endpoints in use: one per distinct trust configuration (the default trust and each distinct CA bundle)",
            http_clients.clone(),
        );
        let cluster_targets = Family::<ClusterTargetLabels, Gauge>::default();
        registry.register(
            "cluster_client_targets",
            "Namespaces of each ClusterOAuthClient: selected, holding the current token (written), and with a conflicting Secret (conflicts)",
            cluster_targets.clone(),
        );
        Metrics {
            cluster_targets,
            registry,
            exchanges,
            triggers,
            exchange_duration,
            clients,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            http_clients,
        }
    }
}

impl Metrics {
    /// Counts an exchange attempt (or a refusal before one) once: by provider and result, and
    /// by trigger; `seconds` is the request duration when a request was sent.
    pub fn exchange(&self, provider: &str, trigger: &str, result: &str, seconds: Option<f64>) {
        self.triggers
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_owned(),
            })
            .inc();
        self.exchanges
            .get_or_create(&ExchangeLabels {
                provider: provider.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(seconds) = seconds {
            self.exchange_duration
                .get_or_create(&ProviderLabels {
                    provider: provider.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// Records an OAuthClient's state: its token's issue and expiry times (when it has one) and
    /// its Ready condition value.
    pub fn client_state(
        &self,
        namespace: &str,
        name: &str,
        token: Option<(f64, f64)>,
        ready: &str,
    ) {
        let ready = CONDITION_VALUES
            .iter()
            .position(|v| *v == ready)
            .unwrap_or(CONDITION_VALUES.len() - 1);
        self.clients.set(
            namespace,
            name,
            ClientState {
                token,
                ready: u8::try_from(ready).unwrap_or(2),
            },
        );
    }

    /// Removes the gauges of a deleted OAuthClient.
    pub fn forget_client(&self, namespace: &str, name: &str) {
        self.clients.remove(namespace, name);
    }

    /// Records a ClusterOAuthClient's namespaces: selected, written, conflicts.
    pub fn cluster_targets(&self, name: &str, counts: [usize; 3]) {
        for (state, count) in TARGET_STATES.iter().zip(counts) {
            self.cluster_targets
                .get_or_create(&ClusterTargetLabels {
                    name: name.to_owned(),
                    state: (*state).to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Removes the gauges of a deleted ClusterOAuthClient.
    pub fn forget_cluster_client(&self, name: &str) {
        for state in TARGET_STATES {
            self.cluster_targets.remove(&ClusterTargetLabels {
                name: name.to_owned(),
                state: state.to_owned(),
            });
        }
    }

    /// Counts a reconcile, its duration and, if it failed, what failed.
    pub fn reconcile(&self, seconds: f64, error: Option<&str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(seconds);
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: error.to_owned(),
                })
                .inc();
        }
    }

    /// Records how many HTTP clients for token endpoints are in use.
    pub fn http_clients(&self, count: usize) {
        self.http_clients
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_removal() {
        let m = Metrics::default();
        m.exchange("microbilt", "no_token", "success", Some(0.02));
        m.exchange("microbilt", "refresh_due", "InvalidClient", Some(0.01));
        m.exchange("generic", "refresh_due", "InvalidSpec", None);
        m.client_state("ns", "a", Some((1_699_996_400.0, 1_700_000_000.0)), "True");
        m.reconcile(0.003, None);
        m.reconcile(0.004, Some("writing the OAuthClient status"));
        m.http_clients(2);
        let text = m.encode();
        for line in [
            "oauth_token_operator_exchanges_total{provider=\"microbilt\",result=\"success\"} 1",
            "oauth_token_operator_exchanges_total{provider=\"microbilt\",result=\"InvalidClient\"} 1",
            "oauth_token_operator_exchange_duration_seconds_count{provider=\"microbilt\"} 2",
            "oauth_token_operator_exchange_triggers_total{trigger=\"no_token\"} 1",
            "oauth_token_operator_exchange_triggers_total{trigger=\"refresh_due\"} 2",
            "oauth_token_operator_token_expiration_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1700000000.0",
            "oauth_token_operator_token_issued_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1699996400.0",
            "oauth_token_operator_client_ready_status{namespace=\"ns\",name=\"a\",condition=\"True\"} 1",
            "oauth_token_operator_client_ready_status{namespace=\"ns\",name=\"a\",condition=\"False\"} 0",
            "oauth_token_operator_reconcile_total 2",
            "oauth_token_operator_reconcile_errors_total{error=\"writing the OAuthClient status\"} 1",
            "oauth_token_operator_reconcile_duration_seconds_count 2",
            "oauth_token_operator_http_clients 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("exchange_duration_seconds_count{provider=\"generic\"}"));
        m.forget_client("ns", "a");
        let text = m.encode();
        assert!(!text.contains("name=\"a\""), "{text}");
    }
}
