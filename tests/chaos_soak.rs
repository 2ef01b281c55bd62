//! Chaos soak: 200 OAuthClients with 20–56 s tokens, served by the compiled operator binary
//! (logging at TRACE) while the API-server double and the token endpoints misbehave at random.
//!
//! Faults: the double fails requests (500, 429, and 409 on writes), adds latency, drops every
//! watch and forgets its history (410 Gone on resume); the endpoints answer 429 with
//! Retry-After, 503 with an HTML page, or slower than the request timeout, and two of them
//! answer 401 for a while. Invariants, checked every second and at the end:
//!
//! 1. no managed Secret ever loses its last good token, nor goes back to an older one;
//! 2. no Secret holds an expired token longer than its endpoint's outage plus the retry cap
//!    (the longest expired span is printed);
//! 3. every OAuthClient ends Ready after the faults stop;
//! 4. token requests stay within the bound computed from lifetimes, the refresh rule and the
//!    faults injected;
//! 5. the operator's memory stays flat;
//! 6. no client secret or token appears in the TRACE logs, in a status or in an event.
//!
//! `cargo test --test chaos_soak` runs 2 minutes of chaos; `CHAOS_SOAK_SECS=1800 cargo test
//! --test chaos_soak` runs longer.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS};
use support::builders::Spec;
use support::harness::{condition, credentials, oauth_client, secret_value};
use support::process::spawn_with;
use support::vendors::{Chaos, TokenServer, Tokens, Vendor};

const NS: &str = "chaos";
const CLIENTS: usize = 200;
const ENDPOINTS: usize = 10;
/// Transient failures back off to at most this (the contract's cap).
const TRANSIENT_CAP: Duration = Duration::from_secs(300);
/// Endpoints 0 and 1 answer 401 for this long, starting this far into the chaos phase.
const AUTH_OUTAGE: Duration = Duration::from_secs(12);
const AUTH_OUTAGE_AT: Duration = Duration::from_secs(10);

struct Endpoint {
    server: TokenServer,
    id: String,
    secret: String,
    lifetime: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn name(i: usize) -> String {
    format!("c{i:03}")
}

/// Per-client memory of what the Secret held.
#[derive(Default)]
struct Seen {
    /// Index of the stored token in its endpoint's issue order.
    index: Option<usize>,
    expired_since: Option<Instant>,
    longest_expired: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    // The chaos phase; recovery and the checks after it add up to a minute.
    let chaos_for = Duration::from_secs(
        std::env::var("CHAOS_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120)
            .max(30),
    );
    let mut soak = Soak::start().await;
    println!(
        "all {CLIENTS} Ready after {:.1}s; chaos for {chaos_for:?}",
        soak.started.elapsed().as_secs_f64()
    );
    soak.chaos(chaos_for).await;
    soak.recover().await;
    let worst = soak.longest_expired_span();
    soak.check_token_requests();
    soak.check_memory_flat();
    soak.check_nothing_secret_written(worst).await;
}

/// The soak: the API-server double, the endpoints, the operator binary, and what was seen.
struct Soak {
    api: ApiServer,
    endpoints: Vec<Endpoint>,
    operator: support::process::Process,
    pid: u32,
    started: Instant,
    /// When the chaos started (set by [`Soak::chaos`]).
    chaos_start: Instant,
    seen: Vec<Seen>,
    /// (time into the chaos, RSS in KiB).
    rss: Vec<(Duration, u64)>,
    /// The 401 window of endpoints 0 and 1: from, until.
    auth_outage: Option<(Instant, Option<Instant>)>,
    /// The 401s answered during it.
    auth_failures: usize,
}

impl Soak {
    /// The endpoints, the clients and the operator binary (logging at TRACE), every client
    /// Ready.
    async fn start() -> Soak {
        let started = Instant::now();
        let api = ApiServer::start().await;
        let mut endpoints = Vec::new();
        for e in 0..ENDPOINTS {
            let id = format!("chaos-client-{e}");
            let secret = format!("chaos-secret-{e}-{:016x}/+=", rand::random::<u64>());
            let server = TokenServer::start(Vendor::Generic, &id, &secret, Tokens::Unique).await;
            let lifetime = 20 + 4 * e as u64; // 20..56 s
            server.set_expires_in(json!(lifetime));
            server.set_delay(Duration::from_millis(5));
            endpoints.push(Endpoint {
                server,
                id,
                secret,
                lifetime,
            });
        }
        for i in 0..CLIENTS {
            let endpoint = &endpoints[i % ENDPOINTS];
            let creds = format!("creds-{i}");
            credentials(&api, NS, &creds, &endpoint.id, &endpoint.secret);
            let spec = Spec::to(&endpoint.server.url()).credentials(&creds);
            oauth_client(&api, NS, &name(i), spec.json());
        }
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        let operator = spawn_with(
            support::process::BIN,
            &kubeconfig,
            &[
                "--max-concurrent-exchanges",
                "16",
                "--request-timeout",
                "2s",
            ],
            "chaos-0",
            &[("RUST_LOG", "trace")],
        );
        let pid = operator.child.id();
        let soak = Soak {
            api,
            endpoints,
            operator,
            pid,
            started,
            chaos_start: Instant::now(),
            seen: (0..CLIENTS).map(|_| Seen::default()).collect(),
            rss: Vec::new(),
            auth_outage: None,
            auth_failures: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while soak.ready() < CLIENTS {
            assert!(
                Instant::now() < deadline,
                "only {} of {CLIENTS} Ready before the chaos",
                soak.ready()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        soak
    }

    /// How many clients are Ready.
    fn ready(&self) -> usize {
        (0..CLIENTS)
            .filter(|&i| condition(&self.api, NS, &name(i), "Ready").is_some_and(|c| c.0 == "True"))
            .count()
    }

    /// `chaos_for` of faults: the double fails and slows requests, drops its watches every 15 s
    /// and forgets its history every 25 s; the endpoints answer 429, 503 or slowly, and two of
    /// them refuse the credentials for a while. Invariants 1 and 2 checked every second.
    async fn chaos(&mut self, chaos_for: Duration) {
        self.api.set_chaos(0.05, Duration::from_millis(50));
        for endpoint in &self.endpoints {
            endpoint.server.set_chaos(Some(Chaos {
                rate_429: 0.05,
                rate_503: 0.05,
                rate_slow: 0.03,
                slow: Duration::from_secs(3),
            }));
        }
        self.chaos_start = Instant::now();
        let mut auth_requests_from = 0;
        let mut last_drop = Instant::now();
        let mut last_compact = Instant::now();
        let mut ticks = 0u64;
        while self.chaos_start.elapsed() < chaos_for {
            let at = self.chaos_start.elapsed();
            let auth = &self.endpoints[..2];
            if self.auth_outage.is_none() && at >= AUTH_OUTAGE_AT {
                auth_requests_from = auth.iter().map(|e| e.server.count()).sum();
                for e in auth {
                    e.server.set_credentials(&e.id, "rotated-away");
                }
                self.auth_outage = Some((Instant::now(), None));
            }
            if let Some((from, None)) = self.auth_outage
                && from.elapsed() >= AUTH_OUTAGE
            {
                for e in auth {
                    e.server.set_credentials(&e.id, &e.secret);
                }
                let now: usize = auth.iter().map(|e| e.server.count()).sum();
                self.auth_failures = now - auth_requests_from;
                self.auth_outage = Some((from, Some(Instant::now())));
            }
            if last_drop.elapsed() >= Duration::from_secs(15) {
                self.api.drop_watches();
                last_drop = Instant::now();
            }
            if last_compact.elapsed() >= Duration::from_secs(25) {
                self.api.compact();
                self.api.drop_watches();
                last_compact = Instant::now();
            }
            check_secrets(&self.api, &self.endpoints, &mut self.seen, self.auth_outage);
            if ticks % 2 == 0 {
                self.rss
                    .push((self.chaos_start.elapsed(), rss_kib(self.pid)));
            }
            ticks += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The faults stop; invariant 3: every client ends Ready, by the latest retry any of them
    /// announced plus a margin.
    async fn recover(&mut self) {
        self.api.set_chaos(0.0, Duration::ZERO);
        for endpoint in &self.endpoints {
            endpoint.server.set_chaos(None);
        }
        let stopped = Instant::now();
        let latest_retry = (0..CLIENTS)
            .filter_map(|i| {
                let object = self.api.get(OAUTHCLIENTS, NS, &name(i))?;
                let at: jiff::Timestamp =
                    object["status"]["nextRefreshAt"].as_str()?.parse().ok()?;
                Some(at)
            })
            .max()
            .unwrap();
        let wait = (latest_retry - jiff::Timestamp::now())
            .total(jiff::Unit::Second)
            .unwrap_or(0.0)
            .clamp(0.0, TRANSIENT_CAP.as_secs_f64());
        let deadline = Instant::now() + Duration::from_secs_f64(wait) + Duration::from_secs(20);
        loop {
            check_secrets(&self.api, &self.endpoints, &mut self.seen, self.auth_outage);
            let not_ready = self.not_ready();
            if not_ready.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let first = self.api.get(OAUTHCLIENTS, NS, &not_ready[0]).unwrap();
                panic!(
                    "{} clients not Ready {:?} after the faults stopped (e.g. {}: {:#})",
                    not_ready.len(),
                    stopped.elapsed(),
                    not_ready[0],
                    first["status"]
                );
            }
            self.rss
                .push((self.chaos_start.elapsed(), rss_kib(self.pid)));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!(
            "every client Ready {:.1}s after the faults stopped; soak {:.0}s",
            stopped.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The clients not Ready, or still Degraded.
    fn not_ready(&self) -> Vec<String> {
        (0..CLIENTS)
            .filter(|&i| {
                condition(&self.api, NS, &name(i), "Ready").is_none_or(|c| c.0 != "True")
                    || condition(&self.api, NS, &name(i), "Degraded").is_none_or(|c| c.0 != "False")
            })
            .map(name)
            .collect()
    }

    /// Invariant 2, reported: the longest span a Secret held an expired token; returns that
    /// client.
    fn longest_expired_span(&self) -> usize {
        let (worst, longest) = self
            .seen
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.longest_expired))
            .max_by_key(|(_, d)| *d)
            .unwrap();
        println!(
            "longest span a Secret held an expired token: {:.1}s ({}, endpoint {}, events {:?})",
            longest.as_secs_f64(),
            name(worst),
            worst % ENDPOINTS,
            self.api
                .list(EVENTS, Some(NS))
                .iter()
                .filter(|e| e["regarding"]["name"] == name(worst).as_str())
                .map(|e| format!("{} {} {}", e["eventTime"], e["reason"], e["note"]))
                .collect::<Vec<_>>()
        );
        worst
    }

    /// Invariant 4: token requests within the computed bound. A client refreshes no sooner than
    /// (1 - 0.33 * 1.1) of the lifetime after issuance; add its first token and one spare. Every
    /// fault the endpoints injected and every 401 costs one request more.
    fn check_token_requests(&self) {
        let soak = self.started.elapsed();
        let mut requests = 0;
        let mut bound = 0;
        for endpoint in &self.endpoints {
            let per_client = (soak.as_secs_f64() / (endpoint.lifetime as f64 * (1.0 - 0.33 * 1.1)))
                .ceil() as usize
                + 2;
            bound += per_client * CLIENTS / ENDPOINTS + endpoint.server.chaos_faults();
            requests += endpoint.server.count();
        }
        bound += self.auth_failures;
        println!(
            "token requests: {requests} (bound {bound}); endpoint faults {}, 401s {}, API faults {}",
            self.endpoints
                .iter()
                .map(|e| e.server.chaos_faults())
                .sum::<usize>(),
            self.auth_failures,
            self.api.chaos_faults()
        );
        assert!(
            requests <= bound,
            "{requests} token requests, bound {bound}"
        );
        assert!(
            self.api.chaos_faults() > 50,
            "the API chaos injected too little to mean anything"
        );
    }

    /// Invariant 5: memory flat. Compare the last third of the samples with the first third.
    fn check_memory_flat(&self) {
        let rss = &self.rss;
        let third = rss.len() / 3;
        let early = rss[..third].iter().map(|r| r.1).max().unwrap();
        let late = rss[rss.len() - third..].iter().map(|r| r.1).max().unwrap();
        println!("operator RSS: early max {early} KiB, late max {late} KiB");
        assert!(
            late <= early + early / 4 + 4096,
            "memory grew from {early} KiB to {late} KiB: {rss:?}"
        );
    }

    /// Invariant 6: nothing secret in logs, statuses or events (the operator stopped); prints
    /// the log lines of the `worst` client.
    async fn check_nothing_secret_written(self, worst: usize) {
        self.operator.signal("TERM");
        let (code, logs) = self.operator.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(code, 0);
        let mut forbidden: Vec<String> = Vec::new();
        for e in &self.endpoints {
            let basic_raw = format!("{}:{}", e.id, e.secret);
            let encode =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic_rfc = format!("{}:{}", encode(&e.id), encode(&e.secret));
            // assert_absent looks for every form of each (form-urlencoded, JSON- and
            // HTML-escaped, base64: the Basic header's encodings).
            forbidden.extend([e.secret.clone(), encode(&e.secret), basic_raw, basic_rfc]);
            forbidden.extend(support::logs::basic_pairs(&e.id, &e.secret));
        }
        // Every token the emulators issue starts with this.
        forbidden.push("emulated-token-".into());
        let statuses: String = self
            .api
            .list(OAUTHCLIENTS, Some(NS))
            .iter()
            .map(|o| o["status"].to_string())
            .collect();
        let events: String = self
            .api
            .list(EVENTS, Some(NS))
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            logs.lines().count() > 10_000,
            "TRACE logs were captured ({} lines)",
            logs.lines().count()
        );
        let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
        for (what, text) in [
            ("logs", &logs),
            ("statuses", &statuses),
            ("events", &events),
        ] {
            support::logs::assert_absent(text, &forbidden, what);
        }
        println!("{} log lines scanned", logs.lines().count());
        let needle = name(worst);
        for line in logs
            .lines()
            .filter(|l| l.contains("oauth_token_operator") && l.contains(needle.as_str()))
            .filter(|l| !l.contains("TRACE"))
            .take(40)
        {
            println!("  {}", &line[..line.len().min(400)]);
        }
    }
}

/// Invariants 1 and 2 for every client, now.
fn check_secrets(
    api: &ApiServer,
    endpoints: &[Endpoint],
    seen: &mut [Seen],
    auth_outage: Option<(Instant, Option<Instant>)>,
) {
    // Read every Secret first, then what the endpoints issued: a token stored after the
    // snapshot of issued tokens would otherwise look foreign.
    let stored: Vec<Option<(String, String)>> = (0..seen.len())
        .map(|i| {
            let secret = format!("{}-token", name(i));
            let token = secret_value(api, NS, &secret, "access_token")?;
            let expires = secret_value(api, NS, &secret, "expires_at")?;
            Some((token, expires))
        })
        .collect();
    let issued: Vec<HashMap<String, usize>> = endpoints
        .iter()
        .map(|e| {
            e.server
                .issued()
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, i))
                .collect()
        })
        .collect();
    let now = jiff::Timestamp::now();
    for (i, (state, stored)) in seen.iter_mut().zip(stored).enumerate() {
        let secret = format!("{}-token", name(i));
        let Some((token, expires)) = stored.filter(|(t, _)| !t.is_empty()) else {
            assert!(state.index.is_none(), "{secret} lost its token");
            continue;
        };
        let index = *issued[i % ENDPOINTS]
            .get(&token)
            .unwrap_or_else(|| panic!("{secret} holds a token its endpoint never issued"));
        if let Some(before) = state.index {
            assert!(index >= before, "{secret} went back to an older token");
        }
        state.index = Some(index);
        let expires: jiff::Timestamp = expires.parse().unwrap();
        if expires < now {
            let since = *state.expired_since.get_or_insert_with(Instant::now);
            let expired = since.elapsed();
            state.longest_expired = state.longest_expired.max(expired);
            // The endpoint's outage (the 401 window, for endpoints 0 and 1) plus the retry cap.
            // The retry cap is the transient one; an auth outage's first retry (about 1 min)
            // comes well within it.
            let outage = match auth_outage {
                Some((from, until)) if i % ENDPOINTS < 2 => {
                    until.unwrap_or_else(Instant::now).duration_since(from)
                }
                _ => Duration::ZERO,
            };
            assert!(
                expired <= outage + TRANSIENT_CAP,
                "{secret} has held an expired token for {expired:?}"
            );
        } else {
            state.expired_since = None;
        }
    }
}
