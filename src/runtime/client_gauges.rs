//! The per-OAuthClient gauges (`token_expiration_timestamp_seconds`,
//! `token_issued_timestamp_seconds`, `client_ready_status`): one compact entry per OAuthClient,
//! turned into series on each scrape, a few hundred clients at a time.
//!
//! At 10,000 OAuthClients these are 50,000 lines (about 7 MB of text). Encoded into one string,
//! every scrape briefly held that string and its doubling copies (the operator's peak memory
//! was set by the scrapes). Streamed in chunks of [`CHUNK`] clients, each taken under the lock
//! after the last client sent, a scrape holds one chunk (tens of KiB) and never holds the lock
//! while the scraper reads. The lines are exactly those prometheus-client writes (its number
//! formatting, its label escaping; a test compares both).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::api::name::NamespacedName as ClientKey;

/// The values of the `condition` label of `client_ready_status`.
pub const CONDITION_VALUES: [&str; 3] = ["True", "False", "Unknown"];

/// Clients per chunk of the exposition.
const CHUNK: usize = 256;

/// What the gauges of one OAuthClient show.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientState {
    /// Issue and expiry times (Unix seconds) of the token in the managed Secret.
    pub token: Option<(f64, f64)>,
    /// Index of the Ready value in [`CONDITION_VALUES`].
    pub ready: u8,
}

/// What a gauge family shows of a client.
#[derive(Clone, Copy)]
enum Shows {
    /// A time of its token (issue or expiry), when it has one.
    TokenTime(fn((f64, f64)) -> f64),
    /// Its Ready condition: one series per value, 1 for the current one.
    Ready,
}

/// One gauge family: its name (after the prefix), its help, and what it shows.
struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    shows: Shows,
}

const FAMILIES: [GaugeFamily; 3] = [
    GaugeFamily {
        name: "token_expiration_timestamp_seconds",
        help: "Expiry of the token in the managed Secret, as a Unix timestamp",
        shows: Shows::TokenTime(|(_, expires)| expires),
    },
    GaugeFamily {
        name: "token_issued_timestamp_seconds",
        help: "Issue time of the token in the managed Secret, as a Unix timestamp",
        shows: Shows::TokenTime(|(issued, _)| issued),
    },
    GaugeFamily {
        name: "client_ready_status",
        help: "The Ready condition of each OAuthClient (1 for the current condition value)",
        shows: Shows::Ready,
    },
];

/// The lines of one client in one family.
fn lines(out: &mut String, metric: &str, shows: Shows, key: &ClientKey, state: &ClientState) {
    match shows {
        Shows::TokenTime(pick) => {
            if let Some(token) = state.token {
                sample_head(out, metric, key, None);
                out.push_str(dtoa::Buffer::new().format(pick(token)));
                out.push('\n');
            }
        }
        Shows::Ready => {
            for (i, value) in CONDITION_VALUES.iter().enumerate() {
                let current = i64::from(usize::from(state.ready) == i);
                sample_head(out, metric, key, Some(value));
                out.push_str(itoa::Buffer::new().format(current));
                out.push('\n');
            }
        }
    }
}

/// `metric{namespace="…",name="…"[,condition="…"]} ` (the value follows).
fn sample_head(out: &mut String, metric: &str, key: &ClientKey, condition: Option<&str>) {
    out.push_str(metric);
    out.push_str("{namespace=\"");
    escaped(out, &key.namespace);
    out.push_str("\",name=\"");
    escaped(out, &key.name);
    if let Some(condition) = condition {
        out.push_str("\",condition=\"");
        escaped(out, condition);
    }
    out.push_str("\"} ");
}

/// A label value as OpenMetrics writes it: backslash, double quote and newline escaped.
fn escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The per-OAuthClient gauges, by (namespace, name) in order (so a scrape can go on after the
/// last client it sent).
#[derive(Debug, Default)]
pub struct ClientGauges {
    clients: Mutex<BTreeMap<ClientKey, ClientState>>,
}

impl ClientGauges {
    /// Sets the gauges of a client.
    pub fn set(&self, namespace: &str, name: &str, state: ClientState) {
        let mut clients = self.clients.lock().expect("metrics lock");
        clients.insert(ClientKey::new(namespace, name), state);
    }

    /// Removes the gauges of a client.
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut clients = self.clients.lock().expect("metrics lock");
        clients.remove(&ClientKey::new(namespace, name));
    }

    /// The families' text for a scrape, produced chunk by chunk as it is read: each family's
    /// `# HELP` and `# TYPE` lines, then its samples, [`CHUNK`] clients per item. Clients set
    /// or removed during the scrape show or not in the families not yet written, as with any
    /// scrape racing an update.
    pub fn exposition(self: &Arc<Self>, prefix: &'static str) -> Exposition {
        Exposition {
            gauges: self.clone(),
            prefix,
            family: 0,
            after: None,
        }
    }
}

/// The per-client families of one scrape, as an iterator of text chunks.
#[derive(Debug)]
pub struct Exposition {
    gauges: Arc<ClientGauges>,
    prefix: &'static str,
    /// The family being written (its index in [`FAMILIES`]).
    family: usize,
    /// The last client written in it (none: its header comes next).
    after: Option<ClientKey>,
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            let family = FAMILIES.get(self.family)?;
            let metric = format!("{}_{}", self.prefix, family.name);
            let mut out = String::new();
            if self.after.is_none() {
                let _ = writeln!(out, "# HELP {metric} {}", family.help);
                let _ = writeln!(out, "# TYPE {metric} gauge");
            }
            let clients = self.gauges.clients.lock().expect("metrics lock");
            let from = match &self.after {
                Some(key) => Bound::Excluded(key),
                None => Bound::Unbounded,
            };
            let mut last = None;
            for (key, state) in clients.range((from, Bound::Unbounded)).take(CHUNK) {
                lines(&mut out, &metric, family.shows, key, state);
                last = Some(key);
            }
            match last {
                Some(key) => self.after = Some(key.clone()),
                None => {
                    // Past the last client: the next family.
                    self.family += 1;
                    self.after = None;
                }
            }
            if !out.is_empty() {
                return Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The same families encoded by prometheus-client in one piece (how they were encoded
    /// before they were streamed).
    #[derive(Debug)]
    struct Reference(Vec<(ClientKey, ClientState)>);

    impl Collector for Reference {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            for (i, family) in FAMILIES.iter().enumerate().take(2) {
                let mut f =
                    encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
                for (key, state) in &self.0 {
                    if let Some((issued, expires)) = state.token {
                        let labels = [("namespace", &*key.namespace), ("name", &*key.name)];
                        let value = if i == 0 { expires } else { issued };
                        ConstGauge::new(value).encode(f.encode_family(&labels)?)?;
                    }
                }
            }
            let family = &FAMILIES[2];
            let mut f =
                encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
            for (key, state) in &self.0 {
                for (i, value) in CONDITION_VALUES.iter().enumerate() {
                    let labels = [
                        ("namespace", &*key.namespace),
                        ("name", &*key.name),
                        ("condition", value),
                    ];
                    ConstGauge::new(i64::from(usize::from(state.ready) == i))
                        .encode(f.encode_family(&labels)?)?;
                }
            }
            Ok(())
        }
    }

    fn streamed(gauges: &Arc<ClientGauges>) -> String {
        gauges.exposition("oauth_token_operator").collect()
    }

    fn reference(gauges: &ClientGauges) -> String {
        let clients = gauges.clients.lock().unwrap();
        let mut registry = Registry::with_prefix("oauth_token_operator");
        registry.register_collector(Box::new(Reference(
            clients.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        )));
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn the_stream_is_byte_for_byte_what_prometheus_client_writes() {
        let gauges = Arc::new(ClientGauges::default());
        assert_eq!(streamed(&gauges), reference(&gauges), "no clients");
        // More clients than a chunk, in several namespaces, some without a token, every Ready
        // value, fractional and integral times, and label values that must be escaped.
        for i in 0..(2 * CHUNK + 7) {
            let token = (i % 5 != 0).then_some((1_700_000_000.0 + i as f64, 1_700_003_600.5));
            let ready = u8::try_from(i % 3).unwrap();
            gauges.set(
                &format!("ns-{}", i % 4),
                &format!("client-{i}"),
                ClientState { token, ready },
            );
        }
        gauges.set(
            "odd\"ns\\",
            "line\nbreak",
            ClientState {
                token: Some((0.0, -1.25)),
                ready: 2,
            },
        );
        let text = streamed(&gauges);
        assert_eq!(text, reference(&gauges));
        assert!(
            text.contains("namespace=\"odd\\\"ns\\\\\",name=\"line\\nbreak\""),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE ").count(), 3, "one header per family");
    }

    #[test]
    fn a_scrape_comes_in_chunks_of_a_bounded_number_of_clients() {
        let gauges = Arc::new(ClientGauges::default());
        for i in 0..(10 * CHUNK) {
            let state = ClientState {
                token: Some((1.0, 2.0)),
                ready: 0,
            };
            gauges.set("ns", &format!("c{i:05}"), state);
        }
        let chunks: Vec<String> = gauges.exposition("p").collect();
        assert_eq!(chunks.len(), 3 * 10, "10 chunks per family, none empty");
        let largest = chunks.iter().map(String::len).max().unwrap();
        let total: usize = chunks.iter().map(String::len).sum();
        assert!(
            largest * 5 < total,
            "largest chunk {largest} of {total} bytes"
        );
        for chunk in &chunks {
            let ready_lines = chunk.matches("p_client_ready_status{").count();
            assert!(ready_lines <= 3 * CHUNK, "{ready_lines}");
        }
    }

    #[test]
    fn clients_removed_or_added_during_a_scrape_leave_it_well_formed() {
        let gauges = Arc::new(ClientGauges::default());
        for i in 0..(3 * CHUNK) {
            let state = ClientState {
                token: Some((1.0, 2.0)),
                ready: 0,
            };
            gauges.set("ns", &format!("c{i:04}"), state);
        }
        let mut scrape = gauges.exposition("p");
        let mut text = scrape.next().unwrap();
        // The client the scrape stopped after, and others, go; new ones come.
        gauges.remove("ns", &format!("c{:04}", CHUNK - 1));
        gauges.remove("ns", "c0000");
        gauges.set(
            "ns",
            "c9999",
            ClientState {
                token: None,
                ready: 1,
            },
        );
        text.extend(scrape);
        for family in [
            "token_expiration_timestamp_seconds",
            "token_issued_timestamp_seconds",
            "client_ready_status",
        ] {
            assert_eq!(text.matches(&format!("# TYPE p_{family} gauge")).count(), 1);
        }
        // Each client at most once per family, none lost that stayed.
        let expiry: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("p_token_expiration_timestamp_seconds{"))
            .collect();
        let unique: std::collections::BTreeSet<&&str> = expiry.iter().collect();
        assert_eq!(unique.len(), expiry.len());
        assert_eq!(
            expiry.len(),
            3 * CHUNK,
            "c0000 and the cursor's client were sent before they went"
        );
        assert!(text.contains(
            "p_client_ready_status{namespace=\"ns\",name=\"c9999\",condition=\"False\"} 1"
        ));
    }
}
