//! The day-2 commands `status`, `renew` and `inspect` as a user runs them: the compiled binary as
//! a separate process with a kubeconfig pointing at the API-server double, while the real
//! controller (in-process) keeps the clients' tokens and statuses. Also as the kubectl plugin
//! `kubectl-oauth_token` (and through `kubectl` itself when it is installed).
//!
//! Every command's standard output and error (at RUST_LOG=trace) is scanned for the client
//! secrets, every token the emulators issued or the Secrets hold, the JWT's signature segment and
//! the kubeconfig's bearer token, raw and base64-encoded.
//!
//! The double is started unlogged: these calls are a user's, not the operator's, and stay out
//! of the RBAC test's log.
//!
//! `cargo test --test cli_day2 -- --nocapture` prints every command and its output (the
//! Troubleshooting section of `docs/operations.md` is copied from such a run).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::process::BIN;
use support::vendors::*;

const ID: &str = "day2-client";
const SECRET: &str = "day2-client-secret-value";
const WRONG_SECRET: &str = "day2-wrong-secret-value";
const ROTATED_SECRET: &str = "day2-rotated-elsewhere";
/// The kubeconfig user's bearer token ([`ApiServer::write_kubeconfig`]).
const KUBE_TOKEN: &str = "test-token";
const AUDIENCE: &str = "https://iot.streamhub.cl/v1/asset/track";
/// base64url of "this-is-the-signature-of-a-test-token-never-print-it".
const SIGNATURE: &str = "dGhpcy1pcy10aGUtc2lnbmF0dXJlLW9mLWEtdGVzdC10b2tlbi1uZXZlci1wcmludC1pdA";

// === running the binary ===

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
    /// The rows of a table on standard output, split on runs of spaces.
    fn rows(&self) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect()
    }
}

/// The values no command may print: client secrets and tokens in the double's Secrets, every
/// token the emulators issued, the JWT's signature and the kubeconfig's token.
fn forbidden(api: &ApiServer, vendors: &[&TokenServer]) -> Vec<String> {
    let mut values = vec![
        SECRET.to_owned(),
        WRONG_SECRET.to_owned(),
        ROTATED_SECRET.to_owned(),
        SIGNATURE.to_owned(),
        KUBE_TOKEN.to_owned(),
    ];
    for secret in api.list(SECRETS, None) {
        for (key, value) in secret["data"].as_object().into_iter().flatten() {
            let decoded = value
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let sensitive =
                key.contains("secret") || key == "access_token" || key == "Authorization";
            if sensitive && decoded.len() >= 8 {
                values.push(decoded);
            }
        }
    }
    for vendor in vendors {
        values.extend(vendor.issued());
    }
    values
}

/// Runs `program args` with `env` (HOME is `home`, KUBECONFIG unset unless given), at most 60 s,
/// prints the command and its output, and checks that nothing forbidden is in it.
async fn cli_as(
    program: &Path,
    home: &Path,
    args: &[&str],
    env: &[(&str, String)],
    forbidden: &[String],
) -> Run {
    let program = program.to_owned();
    let home = home.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let shown = format!(
        "{} {}",
        program.file_name().unwrap().to_string_lossy(),
        args.join(" ")
    );
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&program)
            .args(&args)
            .env_remove("KUBECONFIG")
            .env("HOME", &home)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).unwrap();
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            err.read_to_string(&mut s).unwrap();
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the command did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    })
    .await
    .unwrap();
    // The trace lines are long; docs/operations.md shows what a user sees without RUST_LOG.
    let visible: String = run
        .stderr
        .lines()
        .filter(|l| !l.contains(" TRACE ") && !l.contains(" DEBUG "))
        .map(|l| format!("{l}\n"))
        .collect();
    println!("$ {shown}   # exit {}\n{}{visible}", run.code, run.stdout);
    let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    support::logs::assert_absent(
        &format!("{}\n{}", run.stdout, run.stderr),
        &refs,
        &format!("output of `{shown}`"),
    );
    run
}

/// A temporary HOME and a kubeconfig for the double.
struct User {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl User {
    fn new(api: &ApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        User { dir, kubeconfig }
    }

    /// Runs the binary with `--kubeconfig` appended.
    async fn run(&self, args: &[&str], forbidden: &[String]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        let path = self.kubeconfig.to_string_lossy().into_owned();
        all.extend(["--kubeconfig", &path]);
        cli_as(Path::new(BIN), self.dir.path(), &all, &[], forbidden).await
    }
}

fn b64url(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A JWT with the usual claims of a client-credentials access token.
fn jwt() -> String {
    let now = jiff::Timestamp::now().as_second();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "test-key-1"});
    let claims = json!({
        "iss": "https://idp.example.com/",
        "sub": "streamhub-client@clients",
        "aud": AUDIENCE,
        "azp": "streamhub-client",
        "scope": "read:tracks",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": "6f1c2a9e-4b7d-4c3e-9a51-0d2f7e8b1c44",
        "gty": "client-credentials",
    });
    format!("{}.{}.{SIGNATURE}", b64url(&header), b64url(&claims))
}

fn spec(vendor: &TokenServer, credentials: &str) -> Value {
    json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": credentials}})
}

// === status and inspect on a fleet of clients ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_inspect_show_ready_failing_expired_and_conflicting_clients() {
    let api = ApiServer::start_unlogged().await;
    let jwt_vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let token = jwt();
    jwt_vendor.push(Canned::new(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "read:tracks"})
            .to_string(),
    ));
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let short = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    short.set_expires_in(json!(8));
    let quick = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    quick.set_expires_in(json!(90));
    let operator = Operator::start(&api, &[], 4);

    credentials(&api, "telemetry", "streamhub-credentials", ID, SECRET);
    credentials(&api, "telemetry", "wrong-credentials", ID, WRONG_SECRET);
    credentials(&api, "billing", "billing-credentials", ID, SECRET);
    api.create(
        SECRETS,
        json!({"metadata": {"name": "taken-token", "namespace": "telemetry"}, "stringData": {"a": "b"}}),
    );
    let mut streamhub = spec(&jwt_vendor, "streamhub-credentials");
    streamhub["audience"] = json!(AUDIENCE);
    streamhub["scopes"] = json!(["read:tracks"]);
    streamhub["target"] = json!({"template": {"Authorization": "Bearer {{ access_token }}"}});
    oauth_client(&api, "telemetry", "streamhub", streamhub);
    oauth_client(
        &api,
        "telemetry",
        "broken",
        spec(&vendor, "wrong-credentials"),
    );
    oauth_client(
        &api,
        "telemetry",
        "taken",
        spec(&vendor, "streamhub-credentials"),
    );
    oauth_client(
        &api,
        "billing",
        "expired",
        spec(&short, "billing-credentials"),
    );
    oauth_client(
        &api,
        "billing",
        "quick",
        spec(&quick, "billing-credentials"),
    );
    wait_ready(&api, "telemetry", "streamhub", "True", "TokenIssued").await;
    wait_ready(&api, "telemetry", "broken", "False", "InvalidClient").await;
    wait_ready(&api, "telemetry", "taken", "False", "SecretConflict").await;
    wait_ready(&api, "billing", "quick", "True", "TokenIssued").await;
    wait_ready(&api, "billing", "expired", "True", "TokenIssued").await;
    // The endpoint stops accepting the client's secret: the refresh fails, the token expires.
    short.set_credentials(ID, ROTATED_SECRET);
    wait_ready(&api, "billing", "expired", "False", "TokenExpired").await;

    // Two more copies of the ExchangeFailed event of `broken` (as a restarted operator might
    // write), and an event about another object, which its detail view must not show.
    let failed = api
        .list(EVENTS, Some("telemetry"))
        .into_iter()
        .find(|e| e["regarding"]["name"] == "broken" && e["reason"] == "ExchangeFailed")
        .expect("an ExchangeFailed event for broken");
    for i in 0..2 {
        let mut copy = failed.clone();
        copy["metadata"] = json!({"name": format!("broken.copy{i}"), "namespace": "telemetry"});
        api.create(EVENTS, copy);
    }
    let mut other = failed.clone();
    other["metadata"] = json!({"name": "someone-else.1", "namespace": "telemetry"});
    other["regarding"]["name"] = json!("someone-else");
    other["note"] = json!("InvalidClient: not about broken");
    api.create(EVENTS, other);

    let user = User::new(&api);
    let vendors = [&jwt_vendor, &vendor, &short, &quick];
    let secrets = forbidden(&api, &vendors);
    assert!(
        secrets.contains(&token),
        "the scan looks for the stored JWT"
    );
    assert!(
        secrets.contains(&format!("Bearer {token}")),
        "and the template holding it"
    );

    // --- the table: not Ready first, exit 1 ---
    let run = user.run(&["status", "-n", "telemetry"], &secrets).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let rows = run.rows();
    assert_eq!(
        rows[0],
        [
            "NAMESPACE",
            "NAME",
            "PROVIDER",
            "READY",
            "REASON",
            "EXPIRES",
            "NEXT-REFRESH",
            "FAILURES",
            "MESSAGE"
        ]
    );
    let names: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["broken", "taken", "streamhub"], "not Ready first");
    assert_eq!(&rows[1][2..5], ["generic", "False", "InvalidClient"]);
    assert_eq!(rows[1][5], "-", "broken never had a token");
    assert!(
        rows[1]
            .last()
            .unwrap()
            .contains("Client authentication failed"),
        "{:?}",
        rows[1]
    );
    assert_eq!(&rows[2][3..5], ["False", "SecretConflict"]);
    assert_eq!(&rows[3][3..5], ["True", "TokenIssued"]);
    assert!(
        rows[3][5].starts_with("in 5") && rows[3][5].ends_with('m'),
        "{:?}",
        rows[3]
    );
    assert!(rows[3][6].starts_with("in "), "{:?}", rows[3]);
    assert_eq!(rows[3][7], "0");
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);

    // -A: every namespace; the short margin of billing/quick is a warning.
    let run = user.run(&["status", "-A"], &secrets).await;
    assert_eq!(run.code, 1);
    let rows = run.rows();
    let listed: Vec<(String, String, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[3].clone()))
        .collect();
    let expected = [
        ("billing", "expired", "False"),
        ("telemetry", "broken", "False"),
        ("telemetry", "taken", "False"),
        ("billing", "quick", "True"),
        ("telemetry", "streamhub", "True"),
    ];
    assert_eq!(
        listed,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert!(rows[1][4] == "TokenExpired", "{:?}", rows[1]);
    assert!(
        run.stderr
            .contains("warning: billing/quick: the refresh margin (expiresAt - nextRefreshAt) is "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("so pods may read an expired token"));

    // -o wide adds the Secret and does not cut messages; -o json for scripts.
    let run = user.run(&["status", "-A", "-o", "wide"], &secrets).await;
    let rows = run.rows();
    assert_eq!(rows[0][8], "SECRET");
    assert_eq!(rows[5][8], "streamhub-token");
    assert!(rows[1][9].len() > 80, "full message: {:?}", rows[1]);
    let run = user.run(&["status", "-A", "-o", "json"], &secrets).await;
    assert_eq!(run.code, 1);
    let value = run.json();
    assert_eq!(value["allReady"], false);
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["name"], "expired");
    assert_eq!(items[0]["reason"], "TokenExpired");
    assert_eq!(items[3]["name"], "quick");
    assert_eq!(items[3]["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(items[4]["secretName"], "streamhub-token");
    assert!(items[4]["expiresInSeconds"].as_i64().unwrap() > 3500);

    // All Ready: exit 0. None at all: exit 0 and a note.
    let run = user
        .run(&["status", "streamhub", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run_empty = user.run(&["status", "-n", "nothing-here"], &secrets).await;
    assert_eq!(run_empty.code, 0);
    assert!(
        run_empty
            .stderr
            .contains("No OAuthClients found in namespace nothing-here")
    );

    // --- the detail view of a Ready client ---
    let text = &run.stdout;
    for needle in [
        "Name:                streamhub",
        "Namespace:           telemetry",
        "Provider:            generic",
        &format!("Token URL:           {}", jwt_vendor.url()),
        "Conditions:",
        "  secretName:           streamhub-token",
        "  tokenType:            Bearer",
        "  scope:                read:tracks",
        "  consecutiveFailures:  0",
        "Secret telemetry/streamhub-token (Opaque, controlled by this OAuthClient; values not shown):",
        "Events (oldest first):",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let line = |prefix: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
            .split("   ")
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let ready = line("Ready ");
    assert_eq!(&ready[..3], ["Ready", "True", "TokenIssued"]);
    assert!(ready[3].ends_with(" ago"), "{ready:?}");
    assert_eq!(
        &line("Degraded ")[..3],
        ["Degraded", "False", "RefreshSucceeded"]
    );
    assert_eq!(
        line("access_token "),
        ["access_token", &token.len().to_string()]
    );
    assert_eq!(
        line("Authorization "),
        ["Authorization", &(token.len() + 7).to_string()]
    );
    assert_eq!(line("expires_at "), ["expires_at", "20"]);
    let issued = line("Normal ");
    assert_eq!(&issued[..3], ["Normal", "TokenIssued", "1"]);
    assert!(line("issuedAt:").concat().contains(" ago)"), "{text}");
    assert!(line("expiresAt:").concat().contains("(in "), "{text}");

    // --- the detail view of a failing client: events folded with counts, others' left out ---
    let run = user
        .run(&["status", "broken", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    let text = &run.stdout;
    let failed_line = text
        .lines()
        .find(|l| l.contains("Warning") && l.contains("ExchangeFailed"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = failed_line
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(&cells[..3], ["Warning", "ExchangeFailed", "3"], "{text}");
    assert!(cells[4].starts_with("InvalidClient: "), "{text}");
    assert!(!text.contains("not about broken"), "{text}");
    assert!(
        text.contains("Secret telemetry/broken-token: does not exist"),
        "{text}"
    );
    assert!(text.contains("  consecutiveFailures:  "), "{text}");

    // ... a conflicting one, and an expired one.
    let run = user
        .run(&["status", "taken", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("Secret telemetry/taken-token (Opaque, NOT controlled by this OAuthClient"),
        "{}",
        run.stdout
    );
    let run = user
        .run(
            &["status", "expired", "-n", "billing", "-o", "json"],
            &secrets,
        )
        .await;
    assert_eq!(run.code, 1);
    let value = run.json();
    assert_eq!(value["reason"], "TokenExpired");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("no new one could be obtained: InvalidClient"),
        "{value:#}"
    );
    let keys: Vec<&str> = value["secret"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["access_token", "expires_at", "token_type"]);
    assert!(value["status"]["consecutiveFailures"].as_i64() >= Some(1));

    // The margin warning in the detail view too.
    let run = user
        .run(&["status", "quick", "-n", "billing"], &secrets)
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr
            .contains("warning: billing/quick: the refresh margin"),
        "{}",
        run.stderr
    );

    // A client that does not exist: exit 1.
    let run = user
        .run(&["status", "nope", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("error: OAuthClient telemetry/nope not found"),
        "{}",
        run.stderr
    );

    // --- inspect: a JWT's header and claims, never the token ---
    let run = user
        .run(&["inspect", "streamhub", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = &run.stdout;
    for needle in [
        "Secret telemetry/streamhub-token of OAuthClient telemetry/streamhub",
        "  token_type:    Bearer",
        "  scope:         read:tracks",
        &format!(
            "Access token: JWT, {} bytes (decoded; signature not verified)",
            token.len()
        ),
        "  alg:  RS256",
        "  kid:  test-key-1",
        "  iss:    https://idp.example.com/",
        &format!("  aud:    {AUDIENCE}"),
        "  scope:  read:tracks",
        "  gty:    client-credentials",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let exp = text
        .lines()
        .find(|l| l.trim_start().starts_with("exp:"))
        .unwrap();
    assert!(exp.contains("Z, in 5") && exp.ends_with("m)"), "{exp}");
    let claims: Vec<&str> = text[text.find("Claims:").unwrap()..]
        .lines()
        .skip(1)
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert_eq!(
        claims,
        [
            "iss", "sub", "aud", "azp", "scope", "iat", "nbf", "exp", "jti", "gty"
        ],
        "known claims first"
    );
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
    let run = user
        .run(
            &["inspect", "streamhub", "-n", "telemetry", "-o", "json"],
            &secrets,
        )
        .await;
    let value = run.json();
    assert_eq!(value["token"]["format"], "JWT");
    assert_eq!(value["token"]["signatureVerified"], false);
    assert_eq!(value["token"]["claims"]["aud"], AUDIENCE);
    assert!(
        value["token"]["claimTimes"]["exp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // With --secret the OAuthClient is not read (see also the test below).
    let run = user
        .run(
            &[
                "inspect",
                "streamhub",
                "-n",
                "telemetry",
                "--secret",
                "streamhub-token",
            ],
            &secrets,
        )
        .await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Access token: JWT"));

    // An opaque token says so; the short margin is a warning here too.
    let run = user
        .run(&["inspect", "quick", "-n", "billing"], &secrets)
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("Access token: opaque token (not a JWT): "),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("warning: billing/quick: the refresh margin"),
        "{}",
        run.stderr
    );
    // An expired token is a warning.
    let run = user
        .run(&["inspect", "expired", "-n", "billing"], &secrets)
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("warning: the token expired at "),
        "{}",
        run.stderr
    );
    // No Secret yet: exit 1.
    let run = user
        .run(&["inspect", "broken", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "error: Secret telemetry/broken-token not found: no token has been stored yet"
        ),
        "{}",
        run.stderr
    );

    // --- kubeconfig handling: KUBECONFIG with two files, the context's namespace, --context ---
    let dir = user.dir.path();
    let contexts = dir.join("contexts.yaml");
    std::fs::write(
        &contexts,
        "apiVersion: v1\nkind: Config\ncurrent-context: tele\ncontexts:\n- name: tele\n  context:\n    cluster: double\n    user: test\n    namespace: telemetry\n- name: bill\n  context:\n    cluster: double\n    user: test\n    namespace: billing\n",
    )
    .unwrap();
    let both = std::env::join_paths([&contexts, &user.kubeconfig])
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let env = [("KUBECONFIG", both)];
    let bin = Path::new(BIN);
    let run = cli_as(bin, dir, &["status"], &env, &secrets).await;
    assert_eq!(run.code, 1);
    let names: Vec<String> = run.rows()[1..].iter().map(|r| r[1].clone()).collect();
    assert_eq!(
        names,
        ["broken", "taken", "streamhub"],
        "the context's namespace"
    );
    let run = cli_as(bin, dir, &["status", "--context", "bill"], &env, &secrets).await;
    let names: Vec<String> = run.rows()[1..].iter().map(|r| r[1].clone()).collect();
    assert_eq!(names, ["expired", "quick"], "--context");
    let run = cli_as(bin, dir, &["status", "-n", "billing"], &env, &secrets).await;
    assert_eq!(run.rows().len(), 3, "-n overrides the context");
    // ~/.kube/config when KUBECONFIG is unset.
    std::fs::create_dir_all(dir.join(".kube")).unwrap();
    std::fs::copy(&user.kubeconfig, dir.join(".kube/config")).unwrap();
    let run = cli_as(
        bin,
        dir,
        &["status", "-n", "telemetry", "-o", "json"],
        &[],
        &secrets,
    )
    .await;
    assert_eq!(run.json()["items"].as_array().unwrap().len(), 3);
    let run = cli_as(bin, dir, &["status", "--context", "missing"], &[], &secrets).await;
    assert_eq!(run.code, 2, "an unknown context is a usage error");
    assert!(
        run.stderr.starts_with("error: ") || run.stderr.contains("\nerror: "),
        "{}",
        run.stderr
    );
    // Usage errors are clap's: exit 2.
    let run = cli_as(bin, dir, &["status", "-A", "-n", "x"], &[], &secrets).await;
    assert_eq!(run.code, 2);

    // --- the kubectl plugin ---
    let plugins = dir.join("bin");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("kubectl-oauth_token");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let kubeconfig = user.kubeconfig.to_string_lossy().into_owned();
    let run = cli_as(
        &plugin,
        dir,
        &["status", "-n", "telemetry", "--kubeconfig", &kubeconfig],
        &[],
        &secrets,
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.rows().len(), 4);
    let run = cli_as(&plugin, dir, &["--help"], &[], &secrets).await;
    assert!(
        run.stdout.contains("Usage: kubectl oauth-token <COMMAND>"),
        "{}",
        run.stdout
    );
    for command in ["status", "renew", "inspect"] {
        assert!(
            run.stdout.contains(&format!("\n  {command} ")),
            "{}",
            run.stdout
        );
    }
    let run = cli_as(&plugin, dir, &["renew"], &[], &secrets).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("Usage: kubectl oauth-token renew"),
        "{}",
        run.stderr
    );
    // Through kubectl itself, when it is installed.
    match which("kubectl") {
        Some(kubectl) => {
            let path = format!(
                "{}:{}",
                plugins.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let env = [("PATH", path), ("KUBECONFIG", kubeconfig.clone())];
            let run = cli_as(
                &kubectl,
                dir,
                &["oauth-token", "status", "-n", "telemetry"],
                &env,
                &secrets,
            )
            .await;
            assert_eq!(run.code, 1, "{}", run.stderr);
            let names: Vec<String> = run.rows()[1..].iter().map(|r| r[1].clone()).collect();
            assert_eq!(names, ["broken", "taken", "streamhub"]);
            let run = cli_as(
                &kubectl,
                dir,
                &["oauth-token", "inspect", "streamhub", "-n", "telemetry"],
                &env,
                &secrets,
            )
            .await;
            assert_eq!(run.code, 0);
            assert!(run.stdout.contains("Access token: JWT"));
        }
        None => println!("kubectl is not installed: `kubectl oauth-token` itself not tried"),
    }

    // Nothing secret in anything printed since (the scan above runs on every command); the
    // tokens issued meanwhile are checked by one more run.
    let secrets = forbidden(&api, &vendors);
    let run = user.run(&["status", "-A", "-o", "wide"], &secrets).await;
    assert_eq!(run.code, 1);
    operator.stop().await;
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

// === inspect with least privilege ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_needs_only_get_on_the_managed_secret() {
    let api = ApiServer::start_unlogged().await;
    let token = jwt();
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    api.create(
        SECRETS,
        json!({
            "metadata": {"name": "streamhub-token", "namespace": "telemetry",
                "annotations": {"oauth.token-operator.dev/issued-at": "2026-01-01T00:00:00Z"}},
            "stringData": {"access_token": token, "token_type": "Bearer",
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
        }),
    );
    let user = User::new(&api);
    let secrets = forbidden(&api, &[]);
    api.reset_counts();
    let run = user
        .run(
            &[
                "inspect",
                "streamhub",
                "-n",
                "telemetry",
                "--secret",
                "streamhub-token",
            ],
            &secrets,
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Access token: JWT"), "{}", run.stdout);
    let counts = api.counts();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("get secrets".to_owned(), 1)]
    );
    // A user who may not read the OAuthClient: the default Secret name, and a note saying so.
    api.reset_counts();
    api.fail_next(
        support::apiserver::Matcher::new("get", "oauthclients"),
        1,
        403,
    );
    let run = user
        .run(&["inspect", "streamhub", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("note: cannot read OAuthClient telemetry/streamhub (forbidden); reading Secret streamhub-token"),
        "{}",
        run.stdout
    );
    assert_eq!(api.count("get secrets"), 1);
}

// === connection problems ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_or_a_missing_crd_is_one_clear_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("gone");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: gone\n  context:\n    cluster: gone\ncurrent-context: gone\nusers: []\n"),
    )
    .unwrap();
    let kubeconfig = path.to_string_lossy().into_owned();
    let bin = Path::new(BIN);
    for args in [
        vec!["status", "--kubeconfig", &kubeconfig],
        vec!["renew", "x", "--kubeconfig", &kubeconfig],
        vec!["inspect", "x", "--kubeconfig", &kubeconfig],
    ] {
        let run = cli_as(bin, dir.path(), &args, &[], &[KUBE_TOKEN.to_owned()]).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "error: cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
            )),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"));
    }
    let missing = dir.path().join("missing");
    let run = cli_as(
        bin,
        dir.path(),
        &["status", "--kubeconfig", &missing.to_string_lossy()],
        &[],
        &[],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("error: cannot read --kubeconfig"),
        "{}",
        run.stderr
    );

    let api = ApiServer::start_unlogged_with(false).await;
    let user = User::new(&api);
    let run = user.run(&["status", "-A"], &[KUBE_TOKEN.to_owned()]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed"
        ),
        "{}",
        run.stderr
    );
}

// === renew ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_wait_prints_the_new_issued_at_or_the_failure() {
    let api = ApiServer::start_unlogged().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 2);
    credentials(&api, "telemetry", "creds", ID, SECRET);
    oauth_client(&api, "telemetry", "streamhub", spec(&vendor, "creds"));
    wait_ready(&api, "telemetry", "streamhub", "True", "TokenIssued").await;
    let issued_before =
        api.get(OAUTHCLIENTS, "telemetry", "streamhub").unwrap()["status"]["issuedAt"].clone();
    let user = User::new(&api);

    // Success: a new token, its issuedAt printed.
    let secrets = forbidden(&api, &[&vendor]);
    let run = user
        .run(
            &[
                "renew",
                "streamhub",
                "-n",
                "telemetry",
                "--wait",
                "--timeout",
                "30s",
            ],
            &secrets,
        )
        .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(vendor.count(), 2, "exactly one more exchange");
    let object = api.get(OAUTHCLIENTS, "telemetry", "streamhub").unwrap();
    let issued = object["status"]["issuedAt"].as_str().unwrap();
    assert_ne!(object["status"]["issuedAt"], issued_before);
    let requested =
        object["metadata"]["annotations"]["oauth.token-operator.dev/refresh-requested-at"]
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

    // Failure: the endpoint no longer accepts the secret; the reason and message are printed.
    vendor.set_credentials(ID, ROTATED_SECRET);
    // (a request must be later than issuedAt, which has second precision)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let secrets = forbidden(&api, &[&vendor]);
    let run = user
        .run(
            &[
                "renew",
                "streamhub",
                "-n",
                "telemetry",
                "--wait",
                "--timeout",
                "30s",
            ],
            &secrets,
        )
        .await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("telemetry/streamhub: renewal failed: InvalidClient: ")
            && run
                .stdout
                .contains("the previous token stays in the Secret until it expires in "),
        "{}",
        run.stdout
    );
    assert_eq!(vendor.count(), 3);

    // A failing client: the request waits for the retry schedule, and says so.
    let run = user
        .run(&["renew", "streamhub", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("a renewal requested at ")
            && run
                .stdout
                .contains("is already pending; not requesting another"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  it is failing (InvalidClient, 1 consecutive failures)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("the operator serves the request at its next retry"),
        "{}",
        run.stdout
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_never_requests_twice_times_out_with_what_it_saw_and_renews_all_namespaces() {
    let api = ApiServer::start_unlogged().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 2);
    credentials(&api, "telemetry", "creds", ID, SECRET);
    credentials(&api, "billing", "creds", ID, SECRET);
    oauth_client(&api, "telemetry", "streamhub", spec(&vendor, "creds"));
    oauth_client(&api, "telemetry", "second", spec(&vendor, "creds"));
    oauth_client(&api, "billing", "invoices", spec(&vendor, "creds"));
    for (ns, name) in [
        ("telemetry", "streamhub"),
        ("telemetry", "second"),
        ("billing", "invoices"),
    ] {
        wait_ready(&api, ns, name, "True", "TokenIssued").await;
    }
    // No operator from now on: requests stay pending.
    operator.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let user = User::new(&api);
    let secrets = forbidden(&api, &[&vendor]);
    let annotation = |ns: &str, name: &str| {
        api.get(OAUTHCLIENTS, ns, name).unwrap()["metadata"]["annotations"]
            ["oauth.token-operator.dev/refresh-requested-at"]
            .as_str()
            .map(str::to_owned)
    };

    api.reset_counts();
    let run = user
        .run(&["renew", "streamhub", "-n", "telemetry"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = annotation("telemetry", "streamhub").expect("the annotation is set");
    assert!(
        run.stdout
            .contains(&format!("renewal requested at {first}"))
    );
    assert_eq!(api.count("patch oauthclients"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Already being renewed: not requested twice.
    let run = user
        .run(&["renew", "streamhub", "-n", "telemetry"], &secrets)
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
        annotation("telemetry", "streamhub").as_deref(),
        Some(first.as_str())
    );

    // Nobody serves it: --wait times out, exit 1, and says what it last saw.
    let started = Instant::now();
    let run = user
        .run(
            &[
                "renew",
                "streamhub",
                "-n",
                "telemetry",
                "--wait",
                "--timeout",
                "2s",
            ],
            &secrets,
        )
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
    let gets = api.count("get oauthclients");
    assert!((2..=8).contains(&gets), "{gets} polls in 2 s");

    // --all -A: every client of every namespace, the pending one left as it is.
    api.reset_counts();
    let run = user.run(&["renew", "--all", "-A"], &secrets).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(api.count("patch oauthclients"), 2, "{}", run.stdout);
    assert!(annotation("billing", "invoices").is_some());
    assert!(annotation("telemetry", "second").is_some());
    assert_eq!(
        annotation("telemetry", "streamhub").as_deref(),
        Some(first.as_str())
    );
    for line in [
        "billing/invoices: renewal requested at ",
        "telemetry/second: renewal requested at ",
        "telemetry/streamhub: a renewal requested at ",
    ] {
        assert!(run.stdout.contains(line), "{line} in {}", run.stdout);
    }
    // --all in one namespace, and --wait on several: one LIST per poll, all timed out.
    let run = user
        .run(
            &[
                "renew",
                "--all",
                "-n",
                "billing",
                "--wait",
                "--timeout",
                "1s",
            ],
            &secrets,
        )
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
    // Usage: NAME or --all, -A only with --all.
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
