//! What the CLI tests share: a command's result ([`Run`]), running a program as a user does with
//! its output scanned for secrets ([`cli_as`], [`User`]), the values no command may print
//! ([`forbidden`]), the fleet of clients that `status` and `inspect` are run against ([`Fleet`]),
//! a kubeconfig for a cluster that is gone ([`unreachable_kubeconfig`]) and a one-route HTTP
//! server for the hostile API servers ([`serve`]).
//!
//! The double of the day-2 tests is started unlogged: these calls are a user's, not the
//! operator's, and stay out of the RBAC test's log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::apiserver::{ApiServer, EVENTS, SECRETS};
use crate::support::builders::{SecretObject, Spec, create_client};
use crate::support::harness::{Operator, credentials, wait_ready};
use crate::support::process::BIN;
use crate::support::vendors::{Canned, TokenServer, Tokens, Vendor};

pub const ID: &str = "day2-client";
pub const SECRET: &str = "day2-client-secret-value";
pub const WRONG_SECRET: &str = "day2-wrong-secret-value";
pub const ROTATED_SECRET: &str = "day2-rotated-elsewhere";
/// The kubeconfig user's bearer token ([`ApiServer::write_kubeconfig`]).
pub const KUBE_TOKEN: &str = "test-token";
pub const AUDIENCE: &str = "https://iot.streamhub.cl/v1/asset/track";
/// base64url of "this-is-the-signature-of-a-test-token-never-print-it".
pub const SIGNATURE: &str =
    "dGhpcy1pcy10aGUtc2lnbmF0dXJlLW9mLWEtdGVzdC10b2tlbi1uZXZlci1wcmludC1pdA";

// === running the binary ===

/// A finished command: its exit code and what it printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The rows of a table on standard output, split on runs of spaces.
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.stdout.lines().map(cells).collect()
    }

    /// The second column (NAME) of the table's rows, header left out.
    pub fn names(&self) -> Vec<String> {
        self.rows()[1..].iter().map(|r| r[1].clone()).collect()
    }
}

/// A line of a table or a detail view, split on runs of (three or more) spaces.
pub fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The values no command may print: client secrets and tokens in the double's Secrets, every
/// token the emulators issued, the JWT's signature and the kubeconfig's token.
pub fn forbidden(api: &ApiServer, vendors: &[&TokenServer]) -> Vec<String> {
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
///
/// `cargo test --test cli -- --nocapture` prints every command and its output (the
/// Troubleshooting section of `docs/operations.md` is copied from such a run).
pub async fn cli_as(
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
    let run = tokio::task::spawn_blocking(move || run_blocking(&program, &home, &args, env))
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
    crate::support::logs::assert_absent(
        &format!("{}\n{}", run.stdout, run.stderr),
        &refs,
        &format!("output of `{shown}`"),
    );
    run
}

/// Runs the program at RUST_LOG=trace and collects its output; kills it after 60 s.
fn run_blocking(program: &Path, home: &Path, args: &[String], env: Vec<(String, String)>) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
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
}

/// A temporary HOME and a kubeconfig for the double.
pub struct User {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl User {
    pub fn new(api: &ApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        User { dir, kubeconfig }
    }

    /// Runs the binary with `--kubeconfig` appended.
    pub async fn run(&self, args: &[&str], forbidden: &[String]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        let path = self.kubeconfig.to_string_lossy().into_owned();
        all.extend(["--kubeconfig", &path]);
        cli_as(Path::new(BIN), self.dir.path(), &all, &[], forbidden).await
    }

    /// The kubeconfig's path, as an argument or a variable's value.
    pub fn kubeconfig_arg(&self) -> String {
        self.kubeconfig.to_string_lossy().into_owned()
    }
}

fn b64url(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A JWT with the usual claims of a client-credentials access token.
pub fn jwt() -> String {
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

/// A client of `vendor` with the credentials Secret `credentials`.
pub fn spec(vendor: &TokenServer, credentials: &str) -> Spec {
    Spec::to(&vendor.url()).credentials(credentials)
}

/// The program on the PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

// === the fleet that status and inspect look at ===

/// Five clients in two namespaces, kept by the real controller (in-process):
///
/// * `telemetry/streamhub`: Ready, its token a JWT (audience, scope, an Authorization template);
/// * `telemetry/broken`: wrong credentials, InvalidClient, its ExchangeFailed event copied twice
///   (as a restarted operator might write it) beside an event about another object;
/// * `telemetry/taken`: its Secret `taken-token` exists and is not its own, SecretConflict;
/// * `billing/expired`: an 8 s token whose endpoint stopped accepting the secret, TokenExpired;
/// * `billing/quick`: Ready with 90 s tokens, a refresh margin short enough to warn of.
pub struct Fleet {
    pub api: ApiServer,
    /// The endpoint of `streamhub`: the JWT first, then tokens of its own.
    pub jwt_vendor: TokenServer,
    /// The endpoint of `broken` and `taken`.
    pub vendor: TokenServer,
    /// The endpoint of `expired`.
    pub short: TokenServer,
    /// The endpoint of `quick`.
    pub quick: TokenServer,
    pub operator: Operator,
    /// The JWT `streamhub` holds.
    pub token: String,
    pub user: User,
    /// What no command may print ([`forbidden`]), as of the start.
    pub secrets: Vec<String>,
}

impl Fleet {
    /// Starts the double, the emulators and the controller, and waits until every client is in
    /// the state it is there for.
    pub async fn start() -> Fleet {
        let api = ApiServer::start_unlogged().await;
        let token = jwt();
        let jwt_vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
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
        let user = User::new(&api);
        let mut fleet = Fleet {
            api,
            jwt_vendor,
            vendor,
            short,
            quick,
            operator,
            token,
            user,
            secrets: Vec::new(),
        };
        fleet.create_clients();
        fleet.wait_for_every_state().await;
        fleet.copy_events();
        fleet.secrets = forbidden(&fleet.api, &fleet.vendors());
        assert!(
            fleet.secrets.contains(&fleet.token),
            "the scan looks for the stored JWT"
        );
        assert!(
            fleet.secrets.contains(&format!("Bearer {}", fleet.token)),
            "and the template holding it"
        );
        fleet
    }

    fn create_clients(&self) {
        let api = &self.api;
        credentials(api, "telemetry", "streamhub-credentials", ID, SECRET);
        credentials(api, "telemetry", "wrong-credentials", ID, WRONG_SECRET);
        credentials(api, "billing", "billing-credentials", ID, SECRET);
        SecretObject::named("taken-token")
            .entry("a", "b")
            .create(api, "telemetry");
        let streamhub = spec(&self.jwt_vendor, "streamhub-credentials")
            .audience(AUDIENCE)
            .scopes(&["read:tracks"])
            .template("Authorization", "Bearer {{ access_token }}");
        create_client(api, "telemetry", "streamhub", &streamhub);
        let broken = spec(&self.vendor, "wrong-credentials");
        create_client(api, "telemetry", "broken", &broken);
        let taken = spec(&self.vendor, "streamhub-credentials");
        create_client(api, "telemetry", "taken", &taken);
        let expired = spec(&self.short, "billing-credentials");
        create_client(api, "billing", "expired", &expired);
        let quick = spec(&self.quick, "billing-credentials");
        create_client(api, "billing", "quick", &quick);
    }

    async fn wait_for_every_state(&self) {
        let api = &self.api;
        wait_ready(api, "telemetry", "streamhub", "True", "TokenIssued").await;
        wait_ready(api, "telemetry", "broken", "False", "InvalidClient").await;
        wait_ready(api, "telemetry", "taken", "False", "SecretConflict").await;
        wait_ready(api, "billing", "quick", "True", "TokenIssued").await;
        wait_ready(api, "billing", "expired", "True", "TokenIssued").await;
        // The endpoint stops accepting the client's secret: the refresh fails, the token expires.
        self.short.set_credentials(ID, ROTATED_SECRET);
        wait_ready(api, "billing", "expired", "False", "TokenExpired").await;
    }

    /// Two more copies of the ExchangeFailed event of `broken` (as a restarted operator might
    /// write), and an event about another object, which its detail view must not show.
    fn copy_events(&self) {
        let failed = self
            .api
            .list(EVENTS, Some("telemetry"))
            .into_iter()
            .find(|e| e["regarding"]["name"] == "broken" && e["reason"] == "ExchangeFailed")
            .expect("an ExchangeFailed event for broken");
        for i in 0..2 {
            let mut copy = failed.clone();
            copy["metadata"] = json!({"name": format!("broken.copy{i}"), "namespace": "telemetry"});
            self.api.create(EVENTS, copy);
        }
        let mut other = failed.clone();
        other["metadata"] = json!({"name": "someone-else.1", "namespace": "telemetry"});
        other["regarding"]["name"] = json!("someone-else");
        other["note"] = json!("InvalidClient: not about broken");
        self.api.create(EVENTS, other);
    }

    /// The four emulators.
    pub fn vendors(&self) -> [&TokenServer; 4] {
        [&self.jwt_vendor, &self.vendor, &self.short, &self.quick]
    }

    /// Runs the binary as the fleet's user (`--kubeconfig` appended), scanning its output.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.user.run(args, &self.secrets).await
    }

    /// Runs `program` (the binary, the plugin or kubectl) in the user's HOME with `env`,
    /// scanning its output.
    pub async fn run_as(&self, program: &Path, args: &[&str], env: &[(&str, String)]) -> Run {
        cli_as(program, self.user.dir.path(), args, env, &self.secrets).await
    }

    /// Nothing secret in anything printed (the scan runs on every command); the tokens issued
    /// meanwhile are checked by one more run. Then stops the controller, which scans its logs,
    /// the statuses and the events.
    pub async fn finish(self) {
        let secrets = forbidden(&self.api, &self.vendors());
        let run = self
            .user
            .run(&["status", "-A", "-o", "wide"], &secrets)
            .await;
        assert_eq!(run.code, 1);
        self.operator.stop().await;
    }
}

// === clusters that are gone, and hostile API servers ===

/// A kubeconfig `gone` in `dir` whose server is a local port nothing listens on (bound, then
/// released), and that port.
pub fn unreachable_kubeconfig(dir: &Path) -> (PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("gone");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: gone\n  context:\n    cluster: gone\ncurrent-context: gone\nusers: []\n"),
    )
    .unwrap();
    (path, port)
}

/// `args` (a day-2 command) with a kubeconfig for a cluster that is gone: exit 2, one clear
/// error naming the server, no panic, no kubeconfig token printed.
pub async fn assert_unreachable_cluster_is_exit_2(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (path, port) = unreachable_kubeconfig(dir.path());
    let kubeconfig = path.to_string_lossy().into_owned();
    let mut args = args.to_vec();
    args.extend(["--kubeconfig", &kubeconfig]);
    let run = cli_as(
        Path::new(BIN),
        dir.path(),
        &args,
        &[],
        &[KUBE_TOKEN.to_owned()],
    )
    .await;
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

/// Serves `app` on 127.0.0.1 (for as long as the test's runtime lives); returns its URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    format!("http://{addr}")
}
