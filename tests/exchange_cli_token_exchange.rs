//! The compiled binary's `exchange` command with a token exchange (RFC 8693), against the strict
//! exchange endpoint: `--subject-token-file` (a token as `kubectl create token` prints it),
//! `--subject-token-type`, a `secretRef` subject from the Secret in the file, and the refusals.
//! Messages name the file, never its content; nothing the binary prints (at TRACE) holds the
//! subject token, in any encoding, even when the endpoint echoes it.

mod support;

use std::path::Path;

use serde_json::Value;
use support::process::{Ran, run_scanned};
use support::sts::{ClientAuth, JWT_TYPE, Policy, StsServer, Subjects};

const SUBJECT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2k6YnVpbGRlciJ9.Y2xpLXN1YmplY3Qtc2lnbmF0dXJlLWxvbmctZW5vdWdo";
const POOL: &str =
    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/providers/k8s";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// Runs the binary; its output must hold the subject token in no form.
async fn run(args: &[&str]) -> Ran {
    let signature = SUBJECT.rsplit('.').next().unwrap();
    let args = args.iter().map(|s| (*s).to_owned()).collect();
    run_scanned(args, &[SUBJECT, signature]).await
}

/// `exchange -f file --allow-insecure-http` with `more` arguments.
async fn exchange(file: &str, more: &[&str]) -> Ran {
    let mut args = vec!["exchange", "-f", file, "--allow-insecure-http"];
    args.extend(more);
    run(&args).await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

async fn sts(subject_token_type: &str) -> StsServer {
    StsServer::start(Policy {
        client: ClientAuth::Public,
        subject_token_type: subject_token_type.into(),
        audience: Some(POOL.into()),
        subjects: Subjects::Known(vec![SUBJECT.into()]),
    })
    .await
}

/// A public token-exchange client of `url` whose subject is a key of the Secret `ci-token`.
fn client(url: &str) -> String {
    format!(
        "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: gcp\n  namespace: ci\nspec:\n  tokenUrl: {url}\n  grantType: TokenExchange\n  clientAuthMethod: None\n  audience: {POOL}\n  tokenExchange:\n    subjectToken:\n      secretRef:\n        name: ci-token\n        key: token\n"
    )
}

#[tokio::test]
async fn a_subject_token_file_is_exchanged_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = sts(JWT_TYPE).await;
    let file = write(dir.path(), "client.yaml", &client(&server.url()));
    let token = write(dir.path(), "token", &format!("{SUBJECT}\n"));
    let ok = exchange(&file, &["--subject-token-file", &token, "-o", "json"]).await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let printed: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(
        printed["issuedTokenType"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(
        printed["secret"]["stringData"]["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let form = &server.requests()[0];
    assert_eq!(support::sts::one(form, "subject_token"), Ok(SUBJECT));
    assert!(form.iter().all(|(k, _)| !k.starts_with("client_")));

    // Its type can be overridden; the endpoint that wants another refuses the default.
    let picky = sts(ID_TOKEN_TYPE).await;
    let file = write(dir.path(), "picky.yaml", &client(&picky.url()));
    let refused = exchange(&file, &["--subject-token-file", &token]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("subject_token_type"),
        "{}",
        refused.stderr
    );
    let typed = exchange(
        &file,
        &[
            "--subject-token-file",
            &token,
            "--subject-token-type",
            ID_TOKEN_TYPE,
        ],
    )
    .await;
    assert_eq!(typed.code, 0, "{}", typed.stderr);
}

#[tokio::test]
async fn the_secret_in_the_file_stands_in_and_refusals_name_where_the_token_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = sts(JWT_TYPE).await;
    // The Secret named by secretRef, in the same file.
    let with_secret = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: ci-token\nstringData:\n  token: {SUBJECT}\n",
        client(&server.url())
    );
    let file = write(dir.path(), "with-secret.yaml", &with_secret);
    let ok = exchange(&file, &[]).await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    // No subject at all.
    let bare = write(dir.path(), "bare.yaml", &client(&server.url()));
    let missing = exchange(&bare, &[]).await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("--subject-token-file"),
        "{}",
        missing.stderr
    );
    // An empty file, named.
    let empty = write(dir.path(), "empty-token", "\n");
    let blank = exchange(&bare, &["--subject-token-file", &empty]).await;
    assert_eq!(blank.code, 2, "{}", blank.stderr);
    assert!(blank.stderr.contains("empty-token") && blank.stderr.contains("is empty"));
    // A file that cannot be read, named.
    let gone = exchange(&bare, &["--subject-token-file", "/nonexistent/t"]).await;
    assert_eq!(gone.code, 2);
    assert!(
        gone.stderr.contains("--subject-token-file /nonexistent/t"),
        "{}",
        gone.stderr
    );
    // A client-credentials client has no subject.
    let plain = write(
        dir.path(),
        "plain.yaml",
        &format!(
            "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: p\nspec:\n  tokenUrl: {}\n  credentialsSecretRef:\n    name: c\n",
            server.url()
        ),
    );
    let token = write(dir.path(), "token", SUBJECT);
    let stray = exchange(
        &plain,
        &["--client-id", "x", "--subject-token-file", &token],
    )
    .await;
    assert_eq!(stray.code, 2);
    assert!(
        stray.stderr.contains("grantType TokenExchange"),
        "{}",
        stray.stderr
    );
    assert_eq!(server.count(), 1, "only the good run sent anything");
}

#[tokio::test]
async fn an_endpoint_that_echoes_the_subject_token_gets_it_into_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = sts(JWT_TYPE).await;
    server.echo_subject(true);
    let file = write(dir.path(), "client.yaml", &client(&server.url()));
    let token = write(dir.path(), "token", SUBJECT);
    for output in ["text", "json"] {
        let echoed = exchange(&file, &["--subject-token-file", &token, "-o", output]).await;
        assert_eq!(echoed.code, 3, "{}", echoed.stderr);
        assert!(
            echoed.stderr.contains("InvalidRequest") || echoed.stdout.contains("InvalidRequest"),
            "{}{}",
            echoed.stdout,
            echoed.stderr
        );
    }
}
