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

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::client_gauges::{CONDITION_VALUES, ClientGauges, ClientState};

/// The prefix of every metric's name.
const PREFIX: &str = "oauth_token_operator";

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
        let mut registry = Registry::with_prefix(PREFIX);
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
        // Encoded apart, streamed (see `exposition`).
        let clients = Arc::new(ClientGauges::default());
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

    /// The OpenMetrics text exposition, in chunks produced as they are read: the registry's
    /// metrics, then the per-OAuthClient gauges a few hundred clients at a time (at 10,000
    /// clients they are about 7 MB of text, which one string would hold at every scrape), then
    /// `# EOF`.
    pub fn exposition(&self) -> impl Iterator<Item = String> + Send + 'static {
        let mut registry = String::new();
        prometheus_client::encoding::text::encode_registry(&mut registry, &self.registry)
            .expect("writing to a String cannot fail");
        let mut eof = String::new();
        prometheus_client::encoding::text::encode_eof(&mut eof)
            .expect("writing to a String cannot fail");
        std::iter::once(registry)
            .chain(self.clients.exposition(PREFIX))
            .chain(std::iter::once(eof))
    }

    /// The whole exposition as one string (the tests' and small scrapers' view).
    pub fn encode(&self) -> String {
        self.exposition().collect()
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
