//! The compiled binary's `exchange` command with the key and assertion methods:
//! `--private-key-file`, `--certificate-file`, `--assertion-file`, through the operator's own
//! credentials reader. Messages name the file, never its content; nothing the binary prints (at
//! TRACE) holds a key, a secret or an assertion.

mod support;

use std::path::Path;

use serde_json::Value;
use support::assertions::{Expectation, VerifyingKey};
use support::mtls::fixture;
use support::process::{Ran, run_scanned};
use support::vendors::*;

/// Runs the binary; its output must hold none of `secrets`.
async fn run(args: Vec<String>, secrets: Vec<String>) -> Ran {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    run_scanned(args, &refs).await
}

/// The private key's PEM body lines and the whole PEM, as secrets to scan for.
fn key_lines(name: &str) -> Vec<String> {
    let pem = String::from_utf8(fixture(name)).unwrap();
    let mut lines: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    lines.push(pem);
    lines
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

fn yaml(url: &str, method: &str, extra: &str) -> String {
    format!(
        "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\n  namespace: team-a\nspec:\n  tokenUrl: {url}\n  clientAuthMethod: {method}\n{extra}"
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn private_key_jwt_from_files_and_refusals_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = server.url();
    let registered = VerifyingKey::of_certificate(&fixture("rsa.crt"), &["RS256"]);
    server.expect_assertions(Expectation::of_client("cli-client", registered, &url));
    let file = write(
        dir.path(),
        "client.yaml",
        yaml(
            &url,
            "PrivateKeyJwt",
            "  clientId: cli-client\n  credentialsSecretRef:\n    name: unused\n",
        )
        .as_bytes(),
    );
    let key = write(dir.path(), "key.pem", &fixture("rsa-pkcs8.pem"));
    let cert = write(dir.path(), "cert.pem", &fixture("rsa.crt"));
    let base = |more: &[&str]| {
        let mut list = args(&["exchange", "-f", &file, "--allow-insecure-http"]);
        list.extend(args(more));
        list
    };
    let secrets = key_lines("rsa-pkcs8.pem");
    let ok = run(
        base(&[
            "--private-key-file",
            &key,
            "--certificate-file",
            &cert,
            "-o",
            "json",
        ]),
        secrets.clone(),
    )
    .await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let out: Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    let sent: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.form())
        .filter(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sent.len(), 1);
    let signature = sent[0].rsplit('.').next().unwrap();
    assert!(!ok.stdout.contains(signature) && !ok.stderr.contains(signature));

    // Refusals: each names the file, never shows what is in it.
    let garbage = write(
        dir.path(),
        "garbage.pem",
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n",
    );
    let locked = write(
        dir.path(),
        "locked.pem",
        &fixture("rsa-encrypted-pkcs8.pem"),
    );
    let other = write(dir.path(), "other-cert.pem", &fixture("ec-p256.crt"));
    let cases = [
        (
            base(&["--private-key-file", &garbage]),
            2,
            format!(
                "InvalidCredentials: --private-key-file {garbage}: is not a usable private key"
            ),
        ),
        (
            base(&["--private-key-file", &locked]),
            2,
            format!(
                "InvalidCredentials: --private-key-file {locked} holds an encrypted private key"
            ),
        ),
        (
            base(&["--private-key-file", &key, "--certificate-file", &other]),
            2,
            format!(
                "InvalidCredentials: the certificate in --certificate-file {other} does not match the private key in --private-key-file {key}"
            ),
        ),
        (
            base(&[]),
            2,
            "CredentialsNotFound: no private key: pass --private-key-file".to_owned(),
        ),
        (
            base(&["--private-key-file", "/nonexistent/key.pem"]),
            2,
            "cannot read --private-key-file /nonexistent/key.pem".to_owned(),
        ),
    ];
    for (argv, code, expected) in cases {
        let r = run(argv, secrets.clone()).await;
        assert_eq!(r.code, code, "{}", r.stderr);
        assert!(r.stderr.contains(&expected), "{expected}\n{}", r.stderr);
        assert!(!r.stderr.contains("c2VjcmV0LWJ5dGVz"), "{}", r.stderr);
    }
}

#[tokio::test]
async fn assertion_file_stands_in_for_a_service_account_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = server.url();
    let federation = VerifyingKey::Secret("federation-key-for-the-test-000000".into());
    server.expect_assertions(Expectation {
        issuer: Some("https://issuer.example".into()),
        subject: Some("system:serviceaccount:team-a:workload".into()),
        ..Expectation::of_client("app", federation, "api://AzureADTokenExchange")
    });
    // A token as `kubectl create token` prints it: a JWT and a newline.
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({"iss": "https://issuer.example", "sub": "system:serviceaccount:team-a:workload",
        "aud": ["api://AzureADTokenExchange"], "iat": now, "exp": now + 120, "jti": "one-jti"});
    let jwt = hs256(&claims, b"federation-key-for-the-test-000000");
    let token = write(dir.path(), "token", format!("{jwt}\n").as_bytes());
    let file = write(
        dir.path(),
        "client.yaml",
        yaml(&url, "ServiceAccountToken", "  clientId: app\n  serviceAccountToken:\n    serviceAccountName: workload\n    audience: api://AzureADTokenExchange\n").as_bytes(),
    );
    let signature = jwt.rsplit('.').next().unwrap().to_owned();
    let secrets = vec![jwt.clone(), signature];
    let ok = run(
        args(&[
            "exchange",
            "-f",
            &file,
            "--allow-insecure-http",
            "--assertion-file",
            &token,
        ]),
        secrets.clone(),
    )
    .await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    // The same token again: the endpoint refuses the replay, and says so without showing it.
    let again = run(
        args(&[
            "exchange",
            "-f",
            &file,
            "--allow-insecure-http",
            "--assertion-file",
            &token,
        ]),
        secrets.clone(),
    )
    .await;
    assert_eq!(again.code, 3);
    assert!(
        again.stderr.contains("InvalidClient") && again.stderr.contains("replayed"),
        "{}",
        again.stderr
    );
    let missing = run(
        args(&["exchange", "-f", &file, "--allow-insecure-http"]),
        secrets,
    )
    .await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains(
            "no client assertion: clientAuthMethod ServiceAccountToken needs --assertion-file"
        ),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn a_client_secret_that_is_not_utf8_is_invalid_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let server = TokenServer::start(Vendor::Generic, "id", "whatever", Tokens::Unique).await;
    let file = write(
        dir.path(),
        "client.yaml",
        format!(
            "apiVersion: oauth.token-operator.dev/v1alpha1\nkind: OAuthClient\nmetadata:\n  name: demo\nspec:\n  tokenUrl: {}\n  credentialsSecretRef:\n    name: demo\n",
            server.url()
        )
        .as_bytes(),
    );
    let secret = write(dir.path(), "secret", &[0xff, 0xfe, 0x41]);
    let r = run(
        args(&[
            "exchange",
            "-f",
            &file,
            "--allow-insecure-http",
            "--client-id",
            "id",
            "--client-secret-file",
            &secret,
        ]),
        vec![],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!(
            "InvalidCredentials: --client-secret-file {secret} is not valid UTF-8"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(server.count(), 0);
}

fn hs256(claims: &Value, key: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        input.as_bytes(),
    );
    format!("{input}.{}", b64(tag.as_ref()))
}
