//! `inspect` as a user runs it: a JWT's header and claims (known claims first), decoded and never
//! the token itself, as text and as JSON; an opaque token, an expired one and a missing Secret
//! each said so; the managed Secret read with nothing but `get` on it (with `--secret`, or with
//! the default name when the OAuthClient may not be read); a cluster that is gone is one clear
//! error with exit 2. Every command's output is scanned for secrets and tokens.

use crate::common::*;
use crate::support::apiserver::{ApiServer, Matcher};
use crate::support::builders::SecretObject;

// === a fleet's tokens ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwts_header_and_claims_are_shown_never_the_token() {
    let fleet = Fleet::start().await;
    let run = fleet
        .run(&["inspect", "streamhub", "-n", "telemetry"])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = &run.stdout;
    for needle in [
        "Secret telemetry/streamhub-token of OAuthClient telemetry/streamhub",
        "  token_type:    Bearer",
        "  scope:         read:tracks",
        &format!(
            "Access token: JWT, {} bytes (decoded; signature not verified)",
            fleet.token.len()
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
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_decodes_the_claims_and_says_the_signature_is_not_verified() {
    let fleet = Fleet::start().await;
    let run = fleet
        .run(&["inspect", "streamhub", "-n", "telemetry", "-o", "json"])
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
    fleet.finish().await;
}

/// With --secret the OAuthClient is not read (see also
/// [`with_the_secret_flag_only_the_secret_is_read`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_flag_names_the_secret_to_read() {
    let fleet = Fleet::start().await;
    let run = fleet
        .run(&[
            "inspect",
            "streamhub",
            "-n",
            "telemetry",
            "--secret",
            "streamhub-token",
        ])
        .await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Access token: JWT"));
    fleet.finish().await;
}

/// What inspect says of tokens that are not a fresh JWT: (arguments, exit code, what standard
/// output holds, what standard error holds).
fn tokens_that_are_no_fresh_jwt() -> Vec<(&'static [&'static str], i32, &'static str, &'static str)>
{
    vec![
        // An opaque token says so; the short margin is a warning here too.
        (
            &["inspect", "quick", "-n", "billing"],
            0,
            "Access token: opaque token (not a JWT): ",
            "warning: billing/quick: the refresh margin",
        ),
        // An expired token is a warning.
        (
            &["inspect", "expired", "-n", "billing"],
            0,
            "",
            "warning: the token expired at ",
        ),
        // No Secret yet: exit 1.
        (
            &["inspect", "broken", "-n", "telemetry"],
            1,
            "",
            "error: Secret telemetry/broken-token not found: no token has been stored yet",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_expired_and_missing_tokens_are_each_said_so() {
    let fleet = Fleet::start().await;
    for (args, code, stdout, stderr) in tokens_that_are_no_fresh_jwt() {
        let run = fleet.run(args).await;
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(run.stdout.contains(stdout), "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(stderr), "{args:?}: {}", run.stderr);
    }
    fleet.finish().await;
}

// === least privilege ===

/// A double holding only the managed Secret `telemetry/streamhub-token` (a JWT), a user, and
/// what its commands may not print.
async fn managed_secret_only() -> (ApiServer, User, Vec<String>) {
    let api = ApiServer::start_unlogged().await;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    SecretObject::named("streamhub-token")
        .annotation("oauth.token-operator.dev/issued-at", "2026-01-01T00:00:00Z")
        .entry("access_token", &jwt())
        .entry("token_type", "Bearer")
        .entry(
            "expires_at",
            &expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
        .create(&api, "telemetry");
    let user = User::new(&api);
    let secrets = forbidden(&api, &[]);
    (api, user, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_secret_flag_only_the_secret_is_read() {
    let (api, user, secrets) = managed_secret_only().await;
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
}

/// A user who may not read the OAuthClient: the default Secret name, and a note saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_access_to_the_client_the_default_secret_is_read_with_a_note() {
    let (api, user, secrets) = managed_secret_only().await;
    api.reset_counts();
    api.fail_next(Matcher::new("get", "oauthclients"), 1, 403);
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
async fn an_unreachable_cluster_is_one_clear_error_with_exit_2() {
    assert_unreachable_cluster_is_exit_2(&["inspect", "x"]).await;
}
