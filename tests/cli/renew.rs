//! `renew` as a user runs it: `--wait` prints the new token's issuedAt, or the reason it failed
//! and that the previous token stays; a renewal already pending is never requested twice (and a
//! failing client's request waits for its retry schedule, saying so); `--wait` times out saying
//! what it last saw, polling at a bounded rate; `--all` (with `-A`) requests every client but
//! the pending ones; usage errors and unknown clients have their own exit codes; a cluster that
//! is gone is one clear error with exit 2. Every command's output is scanned for secrets and
//! tokens.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::apiserver::{ApiServer, OAUTHCLIENTS};
use crate::support::builders::create_client;
use crate::support::harness::{Operator, credentials, wait_ready};
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const REQUESTED: &str = "oauth.token-operator.dev/refresh-requested-at";

/// The `--wait` arguments of these tests, with `timeout`.
fn renew_wait<'a>(name: &'a str, namespace: &'a str, timeout: &'a str) -> [&'a str; 7] {
    [
        "renew",
        name,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        timeout,
    ]
}

// === with an operator: --wait ===

/// `telemetry/streamhub` Ready, kept by a controller.
struct Served {
    api: ApiServer,
    vendor: TokenServer,
    operator: Operator,
    user: User,
}

impl Served {
    async fn start() -> Served {
        let api = ApiServer::start_unlogged().await;
        let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
        let operator = Operator::start(&api, &[], 2);
        credentials(&api, "telemetry", "creds", ID, SECRET);
        create_client(&api, "telemetry", "streamhub", &spec(&vendor, "creds"));
        wait_ready(&api, "telemetry", "streamhub", "True", "TokenIssued").await;
        let user = User::new(&api);
        Served {
            api,
            vendor,
            operator,
            user,
        }
    }

    /// Runs the binary, scanning its output for what is secret as of now.
    async fn run(&self, args: &[&str]) -> Run {
        let secrets = forbidden(&self.api, &[&self.vendor]);
        self.user.run(args, &secrets).await
    }

    /// The endpoint no longer accepts the secret, and `renew --wait` is run (and fails).
    async fn fail_a_renewal(&self) -> Run {
        self.vendor.set_credentials(ID, ROTATED_SECRET);
        // (a request must be later than issuedAt, which has second precision)
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let run = self.run(&renew_wait("streamhub", "telemetry", "30s")).await;
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        run
    }
}

/// Success: a new token, its issuedAt printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_prints_the_new_issued_at() {
    let served = Served::start().await;
    let api = &served.api;
    let issued_before =
        api.get(OAUTHCLIENTS, "telemetry", "streamhub").unwrap()["status"]["issuedAt"].clone();
    let run = served
        .run(&renew_wait("streamhub", "telemetry", "30s"))
        .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(served.vendor.count(), 2, "exactly one more exchange");
    let object = api.get(OAUTHCLIENTS, "telemetry", "streamhub").unwrap();
    let issued = object["status"]["issuedAt"].as_str().unwrap();
    assert_ne!(object["status"]["issuedAt"], issued_before);
    let requested = object["metadata"]["annotations"][REQUESTED]
        .as_str()
        .unwrap();
    assert!(
        run.stdout.contains(&format!(
            "telemetry/streamhub: renewal requested at {requested}"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "telemetry/streamhub: renewed: issuedAt {issued}, expires "
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("Waiting up to 30s for 1 new token..."),
        "{}",
        run.stderr
    );
    served.operator.stop().await;
}

/// Failure: the endpoint no longer accepts the secret; the reason and message are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_prints_the_failure_and_that_the_previous_token_stays() {
    let served = Served::start().await;
    let before = served.vendor.count();
    let run = served.fail_a_renewal().await;
    assert!(
        run.stdout
            .contains("telemetry/streamhub: renewal failed: InvalidClient: ")
            && run
                .stdout
                .contains("the previous token stays in the Secret until it expires in "),
        "{}",
        run.stdout
    );
    assert_eq!(
        served.vendor.count(),
        before + 1,
        "exactly one more exchange"
    );
    served.operator.stop().await;
}

/// A failing client: a request is served at once whatever the backoff (the first 401 waits a
/// minute), once per request; `renew` says so. Before, it answered that the operator would serve
/// the request "at its next retry (in 59s), not sooner" and `--wait` timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_failing_client_is_served_at_once() {
    let served = Served::start().await;
    served.fail_a_renewal().await;
    let before = served.vendor.count();
    let started = std::time::Instant::now();
    let run = served
        .run(&[
            "renew",
            "streamhub",
            "-n",
            "telemetry",
            "--wait",
            "--timeout",
            "20s",
        ])
        .await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("renewal requested at ")
            && run.stdout.contains(
                "  it is failing (InvalidClient, 1 consecutive failures): the operator tries again now, whatever its backoff"
            ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("telemetry/streamhub: renewal failed: InvalidClient: "),
        "{}",
        run.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "served within seconds, not at the retry a minute later: {:?}",
        started.elapsed()
    );
    assert_eq!(
        served.vendor.count(),
        before + 1,
        "one request, one exchange"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(served.vendor.count(), before + 1, "served once");
    served.operator.stop().await;
}

// === without an operator: requests stay pending ===

/// Three Ready clients (`telemetry/streamhub`, `telemetry/second`, `billing/invoices`) whose
/// controller has stopped, so that requests stay pending.
struct Unserved {
    api: ApiServer,
    user: User,
    secrets: Vec<String>,
}

impl Unserved {
    async fn start() -> Unserved {
        let api = ApiServer::start_unlogged().await;
        let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
        let operator = Operator::start(&api, &[], 2);
        credentials(&api, "telemetry", "creds", ID, SECRET);
        credentials(&api, "billing", "creds", ID, SECRET);
        let spec = spec(&vendor, "creds");
        let clients = [
            ("telemetry", "streamhub"),
            ("telemetry", "second"),
            ("billing", "invoices"),
        ];
        for (ns, name) in clients {
            create_client(&api, ns, name, &spec);
        }
        for (ns, name) in clients {
            wait_ready(&api, ns, name, "True", "TokenIssued").await;
        }
        // No operator from now on: requests stay pending.
        operator.stop().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let user = User::new(&api);
        let secrets = forbidden(&api, &[&vendor]);
        Unserved { api, user, secrets }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.user.run(args, &self.secrets).await
    }

    /// The client's refresh-requested annotation.
    fn requested(&self, ns: &str, name: &str) -> Option<String> {
        self.api.get(OAUTHCLIENTS, ns, name).unwrap()["metadata"]["annotations"][REQUESTED]
            .as_str()
            .map(str::to_owned)
    }

    /// `renew streamhub -n telemetry`: a request left pending; returns its time.
    async fn request_streamhub(&self) -> String {
        let run = self.run(&["renew", "streamhub", "-n", "telemetry"]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let first = self
            .requested("telemetry", "streamhub")
            .expect("the annotation is set");
        assert!(
            run.stdout
                .contains(&format!("renewal requested at {first}"))
        );
        first
    }
}

/// Already being renewed: not requested twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_is_never_made_twice() {
    let unserved = Unserved::start().await;
    let api = &unserved.api;
    api.reset_counts();
    let first = unserved.request_streamhub().await;
    assert_eq!(api.count("patch oauthclients"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = unserved
        .run(&["renew", "streamhub", "-n", "telemetry"])
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "telemetry/streamhub: a renewal requested at {first} is already pending; not requesting another"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(api.count("patch oauthclients"), 1, "no second request");
    assert_eq!(
        unserved.requested("telemetry", "streamhub").as_deref(),
        Some(first.as_str())
    );
}

/// Nobody serves it: --wait times out, exit 1, and says what it last saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_times_out_saying_what_it_last_saw_with_bounded_polls() {
    let unserved = Unserved::start().await;
    unserved.api.reset_counts();
    unserved.request_streamhub().await;
    let started = Instant::now();
    let run = unserved
        .run(&renew_wait("streamhub", "telemetry", "2s"))
        .await;
    assert_eq!(run.code, 1);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        run.stdout.contains(
            "telemetry/streamhub: timed out after 2s waiting for a new token; last seen: issuedAt "
        ) && run.stdout.contains(
            ", Ready True (TokenIssued: Secret streamhub-token holds a token valid until "
        ),
        "{}",
        run.stdout
    );
    // Each poll is one GET, every 500 ms: bounded.
    let gets = unserved.api.count("get oauthclients");
    assert!((2..=8).contains(&gets), "{gets} polls in 2 s");
}

/// --all -A: every client of every namespace, the pending one left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_every_namespace_requests_each_client_but_the_pending_one() {
    let unserved = Unserved::start().await;
    let first = unserved.request_streamhub().await;
    let api = &unserved.api;
    api.reset_counts();
    let run = unserved.run(&["renew", "--all", "-A"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(api.count("patch oauthclients"), 2, "{}", run.stdout);
    assert!(unserved.requested("billing", "invoices").is_some());
    assert!(unserved.requested("telemetry", "second").is_some());
    assert_eq!(
        unserved.requested("telemetry", "streamhub").as_deref(),
        Some(first.as_str())
    );
    for line in [
        "billing/invoices: renewal requested at ",
        "telemetry/second: renewal requested at ",
        "telemetry/streamhub: a renewal requested at ",
    ] {
        assert!(run.stdout.contains(line), "{line} in {}", run.stdout);
    }
}

/// --all in one namespace, and --wait on several: one LIST per poll, all timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_namespace_waits_for_each_pending_request() {
    let unserved = Unserved::start().await;
    let run = unserved.run(&["renew", "--all", "-A"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = unserved
        .run(&[
            "renew",
            "--all",
            "-n",
            "billing",
            "--wait",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("billing/invoices: a renewal requested at "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("billing/invoices: timed out after 1s"),
        "{}",
        run.stdout
    );
}

// === usage and connection problems ===

/// Usage: NAME or --all, -A only with --all; a client that does not exist is exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_needs_a_name_or_all_and_an_unknown_client_is_exit_1() {
    let api = ApiServer::start_unlogged().await;
    let user = User::new(&api);
    let secrets = forbidden(&api, &[]);
    let run = user.run(&["renew", "-A", "x"], &secrets).await;
    assert_eq!(run.code, 2);
    let run = user
        .run(&["renew", "nope", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("error: OAuthClient telemetry/nope not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_one_clear_error_with_exit_2() {
    assert_unreachable_cluster_is_exit_2(&["renew", "x"]).await;
}
