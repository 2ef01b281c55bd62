//! Prometheus metrics (prometheus-client), all prefixed `oauth_token_operator_`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `exchanges_total` | counter | `provider`, `result` (`success` or the failure reason) |
//! | `exchange_duration_seconds` | histogram | `provider` |
//! | `token_expiration_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `token_issued_timestamp_seconds` | gauge | `namespace`, `name` |
//! | `client_ready_status` | gauge (1 for the current value) | `namespace`, `name`, `condition` (`True`, `False`, `Unknown`) |
//! | `reconcile_total` | counter | |
//! | `reconcile_errors_total` | counter | `error` |
//! | `reconcile_duration_seconds` | histogram | |
//!
//! The per-OAuthClient gauges follow cert-manager's certificate gauges and are removed when the
//! OAuthClient is deleted.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// `provider`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The preset name.
    pub provider: String,
}

/// `namespace`, `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// The OAuthClient's namespace.
    pub namespace: String,
    /// The OAuthClient's name.
    pub name: String,
}

/// `namespace`, `name`, `condition`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// The OAuthClient's namespace.
    pub namespace: String,
    /// The OAuthClient's name.
    pub name: String,
    /// `True`, `False` or `Unknown`.
    pub condition: String,
}

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
    exchange_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    token_expiration: Family<ClientLabels, Gauge<f64, AtomicU64>>,
    token_issued: Family<ClientLabels, Gauge<f64, AtomicU64>>,
    ready_status: Family<ReadyLabels, Gauge>,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
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
        let exchange_duration =
            Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                exchange_histogram,
            );
        registry.register(
            "exchange_duration_seconds",
            "Duration of token requests, by provider",
            exchange_duration.clone(),
        );
        let token_expiration = Family::<ClientLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiration_timestamp_seconds",
            "Expiry of the token in the managed Secret, as a Unix timestamp",
            token_expiration.clone(),
        );
        let token_issued = Family::<ClientLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_issued_timestamp_seconds",
            "Issue time of the token in the managed Secret, as a Unix timestamp",
            token_issued.clone(),
        );
        let ready_status = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "client_ready_status",
            "The Ready condition of each OAuthClient (1 for the current condition value)",
            ready_status.clone(),
        );
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
        Metrics {
            registry,
            exchanges,
            exchange_duration,
            token_expiration,
            token_issued,
            ready_status,
            reconciles,
            reconcile_errors,
            reconcile_duration,
        }
    }
}

impl Metrics {
    /// Counts an exchange attempt; `seconds` is the request duration when a request was sent.
    pub fn exchange(&self, provider: &str, result: &str, seconds: Option<f64>) {
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
        let client = ClientLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        match token {
            Some((issued, expires)) => {
                self.token_issued.get_or_create(&client).set(issued);
                self.token_expiration.get_or_create(&client).set(expires);
            }
            None => {
                self.token_issued.remove(&client);
                self.token_expiration.remove(&client);
            }
        }
        for value in CONDITION_VALUES {
            let labels = ReadyLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                condition: value.to_owned(),
            };
            self.ready_status
                .get_or_create(&labels)
                .set(i64::from(value == ready));
        }
    }

    /// Removes the gauges of a deleted OAuthClient.
    pub fn forget_client(&self, namespace: &str, name: &str) {
        let client = ClientLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.token_expiration.remove(&client);
        self.token_issued.remove(&client);
        for value in CONDITION_VALUES {
            self.ready_status.remove(&ReadyLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                condition: value.to_owned(),
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
        m.exchange("microbilt", "success", Some(0.02));
        m.exchange("microbilt", "InvalidClient", Some(0.01));
        m.exchange("generic", "InvalidSpec", None);
        m.client_state("ns", "a", Some((1_699_996_400.0, 1_700_000_000.0)), "True");
        m.reconcile(0.003, None);
        m.reconcile(0.004, Some("writing the OAuthClient status"));
        let text = m.encode();
        for line in [
            "oauth_token_operator_exchanges_total{provider=\"microbilt\",result=\"success\"} 1",
            "oauth_token_operator_exchanges_total{provider=\"microbilt\",result=\"InvalidClient\"} 1",
            "oauth_token_operator_exchange_duration_seconds_count{provider=\"microbilt\"} 2",
            "oauth_token_operator_token_expiration_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1700000000.0",
            "oauth_token_operator_token_issued_timestamp_seconds{namespace=\"ns\",name=\"a\"} 1699996400.0",
            "oauth_token_operator_client_ready_status{namespace=\"ns\",name=\"a\",condition=\"True\"} 1",
            "oauth_token_operator_client_ready_status{namespace=\"ns\",name=\"a\",condition=\"False\"} 0",
            "oauth_token_operator_reconcile_total 2",
            "oauth_token_operator_reconcile_errors_total{error=\"writing the OAuthClient status\"} 1",
            "oauth_token_operator_reconcile_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("exchange_duration_seconds_count{provider=\"generic\"}"));
        m.forget_client("ns", "a");
        let text = m.encode();
        assert!(!text.contains("name=\"a\""), "{text}");
    }
}
