//! The compiled binary's `exchange` command against the vendor emulators, as a user runs it.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::vendors::*;

const ID: &str = "my-client-id";
const SECRET: &str = "cli/secret+value=";
const BIN: &str = env!("CARGO_BIN_EXE_oauth-token-operator");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs the binary off the async runtime (the emulators live on it).
async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> Run {
    let output: Output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(BIN);
        command
            .args(&args)
            .env_remove("OAUTH_CLIENT_SECRET")
            .env_remove("OAUTH_CLIENT_ID");
        command.env("RUST_LOG", "trace");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let run = Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    // Nothing the binary prints may hold the secret (logs are at TRACE).
    let mut forbidden = vec![SECRET.to_owned(), "wrong-secret".to_owned()];
    forbidden.extend(support::logs::basic_pairs(ID, SECRET));
    forbidden.extend(support::logs::basic_pairs(ID, "wrong-secret"));
    let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    support::logs::assert_absent(
        &format!("{}{}", run.stdout, run.stderr),
        &forbidden,
        "exchange output",
    );
    run
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn client_yaml(provider: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\n  namespace: team-a\nspec:\n  provider: {provider}\n  tokenUrl: {url}\n  credentialsSecretRef:\n    name: demo-credentials\n{extra}"
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn each_seed_vendor_succeeds_and_wrong_credentials_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let wrong_file = write(dir.path(), "wrong", "wrong-secret");
    let cases = [
        (
            Vendor::Microboxlabs,
            "microboxlabs",
            format!("  audience: {STREAMHUB_AUDIENCE}\n"),
            MICROBOXLABS_TOKEN,
            "access_denied: Unauthorized",
        ),
        (
            Vendor::Microbilt,
            "microbilt",
            String::new(),
            MICROBILT_TOKEN,
            "Client credentials are invalid",
        ),
        (
            Vendor::Iotspot,
            "iotspot",
            String::new(),
            IOTSPOT_TOKEN,
            "invalid_client",
        ),
    ];
    for (vendor, provider, extra, token, description) in cases {
        let server = TokenServer::start(vendor, ID, SECRET, Tokens::Documented).await;
        let file = write(
            dir.path(),
            &format!("{provider}.yaml"),
            &client_yaml(provider, &server.url(), &extra),
        );

        // exchange -f FILE --client-id ID --allow-insecure-http [more...]
        let argv = |more: &[&str]| {
            let mut list = args(&[
                "exchange",
                "-f",
                &file,
                "--client-id",
                ID,
                "--allow-insecure-http",
            ]);
            list.extend(args(more));
            list
        };

        let ok = run(
            argv(&["--client-secret-file", &secret_file, "--output", "json"]),
            vec![],
        )
        .await;
        assert_eq!(ok.code, 0, "{provider}: {}{}", ok.stdout, ok.stderr);
        let out = ok.json();
        assert_eq!(out["ok"], true);
        assert_eq!(out["secret"]["name"], "demo-token");
        assert_eq!(out["secret"]["namespace"], "team-a");
        assert_eq!(out["secret"]["stringData"]["access_token"], "[redacted]");
        assert_eq!(out["secret"]["stringData"]["token_type"], "Bearer");
        assert_eq!(out["tokenType"], "Bearer");
        assert!(
            !ok.stdout.contains(token),
            "token printed without --show-token"
        );

        let shown = run(
            argv(&["--show-token", "-o", "json"]),
            vec![("OAUTH_CLIENT_SECRET", SECRET.to_owned())],
        )
        .await;
        assert_eq!(shown.code, 0, "{provider}: {}", shown.stderr);
        assert_eq!(shown.json()["secret"]["stringData"]["access_token"], token);

        let bad = run(argv(&["--client-secret-file", &wrong_file]), vec![]).await;
        assert_eq!(bad.code, 3, "{provider}: {}", bad.stderr);
        assert!(
            bad.stderr.contains("InvalidClient"),
            "{provider}: {}",
            bad.stderr
        );
        assert!(
            bad.stderr.contains(description),
            "{provider}: {}",
            bad.stderr
        );

        let bad_json = run(
            argv(&["--client-secret-file", &wrong_file, "-o", "json"]),
            vec![],
        )
        .await;
        assert_eq!(bad_json.code, 3);
        let out = bad_json.json();
        assert_eq!(out["reason"], "InvalidClient");
        assert!(out["message"].as_str().unwrap().contains(description));
    }
}

#[tokio::test]
async fn text_output_and_credentials_from_a_secret_in_the_same_file() {
    let server = TokenServer::start(Vendor::Microbilt, ID, SECRET, Tokens::Documented).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo-credentials\n  namespace: team-a\nstringData:\n  client_id: {ID}\n  client_secret: \"{SECRET}\"\n---\n{}",
        client_yaml(
            "microbilt",
            &server.url(),
            "  target:\n    template:\n      Authorization: \"Bearer {{ access_token }}\"\n"
        )
    );
    let file = write(dir.path(), "both.yaml", &yaml);
    let out = run(
        args(&["exchange", "-f", &file, "--allow-insecure-http"]),
        vec![],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("Secret team-a/demo-token (type Opaque)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Authorization:  Bearer [redacted]"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("token_type:"), "{}", out.stdout);
    assert!(!out.stdout.contains(MICROBILT_TOKEN));
    let request = &server.requests()[0];
    assert_eq!(request.json().unwrap()["client_secret"], SECRET);
}

#[tokio::test]
async fn unusable_input_exits_2_with_a_clear_message() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let good = write(
        dir.path(),
        "good.yaml",
        &client_yaml("generic", &server.url(), ""),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(&[
                "exchange",
                "-f",
                "/nonexistent/file.yaml",
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
            ]),
            "cannot read /nonexistent/file.yaml",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &write(dir.path(), "bad.yaml", "kind: [unclosed"),
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
            ]),
            "not valid YAML",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &write(dir.path(), "none.yaml", "kind: ConfigMap\n"),
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
            ]),
            "no OAuthClient",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &write(
                    dir.path(),
                    "nospec.yaml",
                    "kind: OAuthClient\nmetadata: {name: x}\nspec: {provider: nope}\n",
                ),
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
            ]),
            "spec.provider: \"nope\" is not one of generic, microboxlabs",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &good,
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
            ]),
            "InvalidSpec: spec.tokenUrl uses http://",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &good,
                "--client-id",
                ID,
                "--allow-insecure-http",
            ]),
            "CredentialsNotFound: no client secret",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &good,
                "--client-secret-file",
                &secret_file,
                "--allow-insecure-http",
            ]),
            "CredentialsNotFound: no client_id",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &good,
                "--client-id",
                ID,
                "--client-secret-file",
                "/nonexistent/secret",
                "--allow-insecure-http",
            ]),
            "cannot read --client-secret-file",
        ),
        (
            args(&[
                "exchange",
                "-f",
                &good,
                "--client-id",
                ID,
                "--client-secret-file",
                &secret_file,
                "--allow-insecure-http",
                "--request-timeout",
                "ten",
            ]),
            "invalid duration",
        ),
    ];
    for (argv, expected) in cases {
        let out = run(argv.clone(), vec![]).await;
        assert_eq!(out.code, 2, "{argv:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{argv:?}: expected {expected:?} in {}",
            out.stderr
        );
    }
    assert_eq!(
        server.count(),
        0,
        "unusable input must not reach the endpoint"
    );
}

#[tokio::test]
async fn crd_command_matches_the_committed_file() {
    let out = run(args(&["crd"]), vec![]).await;
    assert_eq!(out.code, 0);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/oauthclient.yaml"
    ))
    .unwrap();
    assert_eq!(
        out.stdout, committed,
        "crds/oauthclient.yaml is stale: run `cargo run -- crd > crds/oauthclient.yaml`"
    );
}

#[tokio::test]
async fn token_url_policy_flags_refuse_before_sending() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let by_name = server.url().replace("127.0.0.1", "localhost");
    let file = write(dir.path(), "c.yaml", &client_yaml("generic", &by_name, ""));
    let base = [
        "exchange",
        "-f",
        &file,
        "--client-id",
        ID,
        "--client-secret-file",
        &secret_file,
        "--allow-insecure-http",
    ];
    let with = |more: &[&str]| {
        let mut all = args(&base);
        all.extend(args(more));
        all
    };
    // Default policy: loopback is allowed.
    let ok = run(with(&[]), vec![]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // Denied by resolved address (the URL holds a name), through the flag and its variable.
    // InvalidSpec is unusable input: exit 2.
    let denied = run(with(&["--token-url-deny-cidrs", "127.0.0.0/8,::1"]), vec![]).await;
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    assert!(denied.stderr.contains("InvalidSpec"), "{}", denied.stderr);
    assert!(
        denied.stderr.contains("--token-url-deny-cidrs"),
        "{}",
        denied.stderr
    );
    let denied = run(
        with(&[]),
        vec![(
            "OAUTH_TOKEN_OPERATOR_TOKEN_URL_DENY_CIDRS",
            "127.0.0.0/8,::1".into(),
        )],
    )
    .await;
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    // Allow-list.
    let refused = run(
        with(&["--token-url-allow-hosts", "idp.example.com"]),
        vec![],
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--token-url-allow-hosts"),
        "{}",
        refused.stderr
    );
    let allowed = run(
        with(&["--token-url-allow-hosts", "idp.example.com,localhost"]),
        vec![],
    )
    .await;
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    // A malformed flag is a usage error naming the value.
    let bad = run(with(&["--token-url-deny-cidrs", "metadata"]), vec![]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("not a CIDR"), "{}", bad.stderr);
    assert_eq!(
        server.count(),
        2,
        "only the two allowed runs reached the endpoint"
    );
}

#[tokio::test]
async fn exchange_honours_the_proxy_environment() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = support::proxy::ProxyDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let by_name = server.url().replace("127.0.0.1", "localhost");
    let file = write(dir.path(), "c.yaml", &client_yaml("generic", &by_name, ""));
    let unresolvable = write(
        dir.path(),
        "u.yaml",
        &client_yaml("generic", "https://no-such-host.invalid/token", ""),
    );
    let with = |file: &str, more: &[&str]| {
        let mut all = args(&[
            "exchange",
            "-f",
            file,
            "--client-id",
            ID,
            "--client-secret-file",
            &secret_file,
            "--allow-insecure-http",
        ]);
        all.extend(args(more));
        all
    };
    // The child's environment only (an empty lowercase variable counts as unset, so any
    // inherited one is neutralised).
    let env = |proxy_url: String| {
        vec![
            ("HTTPS_PROXY", proxy_url.clone()),
            ("HTTP_PROXY", proxy_url),
            ("https_proxy", String::new()),
            ("http_proxy", String::new()),
            ("NO_PROXY", String::new()),
            ("no_proxy", String::new()),
        ]
    };

    let ok = run(with(&file, &["--output", "json"]), env(proxy.url())).await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert_eq!(ok.json()["ok"], true);
    assert_eq!(proxy.requests()[0].line, format!("POST {by_name} HTTP/1.1"));
    assert_eq!(server.count(), 1);

    // Denied: refused before the proxy gets a connection.
    let connections = proxy.connections();
    let denied = run(
        with(&file, &["--token-url-deny-cidrs", "127.0.0.0/8,::1"]),
        env(proxy.url()),
    )
    .await;
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    assert!(denied.stderr.contains("InvalidSpec"), "{}", denied.stderr);
    assert_eq!(proxy.connections(), connections);

    // Not resolvable locally: refused, saying what to set; allow-listed, the proxy's 502.
    let refused = run(with(&unresolvable, &[]), env(proxy.url())).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("EndpointUnavailable")
            && refused.stderr.contains("--token-url-allow-hosts"),
        "{}",
        refused.stderr
    );
    assert_eq!(proxy.connections(), connections);
    let user_info = proxy.url_with_userinfo("cli-proxy-user", "cliProxyPassw0rd");
    let bad_gateway = run(
        with(
            &unresolvable,
            &["--token-url-allow-hosts", "no-such-host.invalid"],
        ),
        env(user_info),
    )
    .await;
    assert_eq!(bad_gateway.code, 3, "{}", bad_gateway.stderr);
    assert!(
        bad_gateway.stderr.contains("HTTP 502"),
        "{}",
        bad_gateway.stderr
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.line == "CONNECT no-such-host.invalid:443 HTTP/1.1")
    );
    // The child logs at TRACE: its whole output is free of the proxy's userinfo.
    support::logs::assert_absent(
        &format!("{}{}", bad_gateway.stdout, bad_gateway.stderr),
        &["cli-proxy-user", "cliProxyPassw0rd"],
        "exchange output",
    );
}
/// The security issue, item 3: "the rendered Secret's total size is checked before the apply body
/// is built (InvalidSpec if templates make it exceed 256 KiB) ... The same limits apply in
/// `exchange`"; contract *Reading responses*: "`exchange` applies the same limits"). Attacks
/// `cli::exchange`: it renders `token_entries` without `secret::check_size`, so a 60 KiB token
/// in five templates (about 360 KiB) is reported as a success of what "the operator would
/// store", while the operator refuses it with InvalidSpec (and renders 360 KiB, plus the copies
/// `shown` makes, in the process).
#[tokio::test]
async fn exchange_applies_the_256_kib_secret_limit() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Documented).await;
    let token = format!("eyJ{}", "A".repeat(60 * 1024));
    server.push(Canned::new(
        200,
        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})
            .to_string(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let templates: String = (0..5)
        .map(|i| format!("      copy{i}: \"Bearer {{{{ access_token }}}}\"\n"))
        .collect();
    let file = write(
        dir.path(),
        "big.yaml",
        &client_yaml(
            "generic",
            &server.url(),
            &format!("  target:\n    template:\n{templates}"),
        ),
    );
    let out = run(
        args(&[
            "exchange",
            "-f",
            &file,
            "--client-id",
            ID,
            "--client-secret-file",
            &secret_file,
            "--allow-insecure-http",
            "--output",
            "json",
        ]),
        vec![],
    )
    .await;
    assert_eq!(server.count(), 1);
    assert_ne!(
        out.code,
        0,
        "exchange reports success for a Secret the operator refuses: {}",
        out.stdout.chars().take(300).collect::<String>()
    );
    assert!(
        out.stderr.contains("InvalidSpec") || out.stdout.contains("InvalidSpec"),
        "{}",
        out.stderr
    );
}

/// `exchange` is as strict as the cluster (issue 22, item 2): a misspelt field is an error naming
/// it and the field it most likely meant, before anything is sent. Before, `tokenURL:` was
/// dropped and the request (credentials included) went to the preset's production endpoint, and
/// `scope:` printed `Exchange succeeded` with no scope.
#[tokio::test]
async fn misspelt_fields_are_refused_before_anything_is_sent() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let url = server.url();
    let cases = [
        (
            format!(
                "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\nspec:\n  provider: microboxlabs\n  audience: https://api.example\n  tokenURL: {url}\n  credentialsSecretRef:\n    name: demo-credentials\n"
            ),
            "spec.tokenURL: unknown field (did you mean tokenUrl?)",
        ),
        (
            client_yaml("generic", &url, "  scope: [read]\n"),
            "spec.scope: unknown field (did you mean scopes?)",
        ),
        (
            client_yaml("generic", &url, "  refresh:\n    renewbefore: 5m\n"),
            "spec.refresh.renewbefore: unknown field (did you mean renewBefore?)",
        ),
        (
            client_yaml("generic", &url, "  clientAuthMethod: client_secret_basic\n"),
            "spec.clientAuthMethod: \"client_secret_basic\" is not one of",
        ),
    ];
    for (yaml, expected) in cases {
        let file = write(dir.path(), "typo.yaml", &yaml);
        let argv = args(&[
            "exchange",
            "-f",
            &file,
            "--client-id",
            ID,
            "--client-secret-file",
            &secret_file,
            "--allow-insecure-http",
        ]);
        let out = run(argv.clone(), vec![]).await;
        assert_eq!(out.code, 2, "{expected}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
        assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
        let mut json = argv;
        json.extend(args(&["-o", "json"]));
        let out = run(json, vec![]).await;
        assert_eq!(out.code, 2);
        let value = out.json();
        assert_eq!(value["ok"], false);
        assert!(
            value["message"].as_str().unwrap().contains(expected),
            "{value}"
        );
    }
    assert_eq!(server.count(), 0, "a request was sent despite a typo");
}

/// Placeholder credentials left from an example and a refresh margin under two minutes are
/// warned about, as text on standard error and as `warnings` in `-o json` (the exchange itself
/// goes ahead: the vendor is the judge of a secret). The warning never holds the value.
#[tokio::test]
async fn placeholders_and_a_short_refresh_margin_are_warned_about() {
    let placeholder = "YOUR_CLIENT_SECRET";
    let server = TokenServer::start(Vendor::Generic, ID, placeholder, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo-credentials\nstringData:\n  client_id: {ID}\n  client_secret: {placeholder}\n---\n{}",
        client_yaml("generic", &server.url(), "")
    );
    let file = write(dir.path(), "placeholder.yaml", &yaml);
    let text = run(
        args(&["exchange", "-f", &file, "--allow-insecure-http"]),
        vec![],
    )
    .await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stderr
            .contains("warning: the client_secret looks like a placeholder from an example"),
        "{}",
        text.stderr
    );
    let json = run(
        args(&[
            "exchange",
            "-f",
            &file,
            "--allow-insecure-http",
            "-o",
            "json",
        ]),
        vec![],
    )
    .await;
    let warnings = json.json()["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("client_secret looks like a placeholder")),
        "{warnings}"
    );
    for out in [&text, &json] {
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert!(!shown.contains(placeholder), "{shown}");
    }

    // A token of 100 s leaves a margin under two minutes whatever renewBefore says.
    let short = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Documented).await;
    short.push(Canned::new(
        200,
        serde_json::json!({"access_token": "t", "token_type": "Bearer", "expires_in": 100})
            .to_string(),
    ));
    short.push(Canned::new(
        200,
        serde_json::json!({"access_token": "t", "token_type": "Bearer", "expires_in": 100})
            .to_string(),
    ));
    let secret_file = write(dir.path(), "secret", SECRET);
    let file = write(
        dir.path(),
        "short.yaml",
        &client_yaml("generic", &short.url(), ""),
    );
    let base = args(&[
        "exchange",
        "-f",
        &file,
        "--client-id",
        ID,
        "--client-secret-file",
        &secret_file,
        "--allow-insecure-http",
    ]);
    let text = run(base.clone(), vec![]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stderr
            .contains("warning: the operator would warn: its refresh margin of")
            && text.stderr.contains("is under 120s"),
        "{}",
        text.stderr
    );
    let mut json = base;
    json.extend(args(&["-o", "json"]));
    let value = run(json, vec![]).await.json();
    assert!(
        value["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("refresh margin")),
        "{value}"
    );
    assert_eq!(short.count(), 2);
}

/// YAML merge keys are applied before the strict check, as kubectl applies them.
#[tokio::test]
async fn yaml_merge_keys_are_applied_before_the_check() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "secret", SECRET);
    let yaml = format!(
        "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\nspec:\n  base: &base\n    tokenUrl: {}\n  <<: *base\n  credentialsSecretRef:\n    name: demo-credentials\n",
        server.url()
    );
    // `base` itself is no field of the spec: refused, naming it; without it the merge passes.
    let file = write(dir.path(), "merge.yaml", &yaml);
    let argv = |file: &str| {
        args(&[
            "exchange",
            "-f",
            file,
            "--client-id",
            ID,
            "--client-secret-file",
            &secret_file,
            "--allow-insecure-http",
        ])
    };
    let out = run(argv(&file), vec![]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("spec.base: unknown field"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("<<"), "{}", out.stderr);
    let anchored = format!(
        "x-defaults: &base\n  tokenUrl: {}\n---\napiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\nspec:\n  <<: {{tokenUrl: {}}}\n  credentialsSecretRef:\n    name: demo-credentials\n",
        server.url(),
        server.url()
    );
    let file = write(dir.path(), "merged.yaml", &anchored);
    let out = run(argv(&file), vec![]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.count(), 1);
}
