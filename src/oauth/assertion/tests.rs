//! Assertions built with a fixed clock and random source, compared with the JWTs that
//! `tests/fixtures/client-auth/make.sh` built and signed with openssl alone (RS256, HS256,
//! EdDSA are deterministic), or verified with ring against the certificate's public key
//! (ES256, ES384, PS256 sign with fresh randomness).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;

use super::*;
use crate::api::reason::Reason;
use crate::oauth::identity::tests::{expected, fixture, load};

const NOW: i64 = 1_700_000_000;

fn random() -> [u8; 16] {
    std::array::from_fn(|i| i as u8)
}

fn settings(algorithm: Option<AssertionAlgorithm>, key_id: Option<&str>) -> AssertionSettings {
    AssertionSettings {
        algorithm,
        key_id: key_id.map(str::to_owned),
        audience: expected("AUDIENCE"),
        lifetime: Duration::from_secs(300),
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn part(jwt: &str, i: usize) -> serde_json::Value {
    let segment = jwt.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn expected_claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "test-client", "sub": "test-client", "aud": expected("AUDIENCE"),
        "jti": expected("JTI"), "iat": NOW, "exp": NOW + 300,
    })
}

/// The subjectPublicKey bits of the leaf certificate of a fixture.
fn public_key(cert: &str) -> Vec<u8> {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&fixture(cert)).unwrap();
    let spki = rustls::server::ParsedCertificate::try_from(&der)
        .unwrap()
        .subject_public_key_info();
    // SEQUENCE { SEQUENCE algorithm, BIT STRING } : skip to the BIT STRING's content.
    let bytes = spki.as_ref();
    let skip = |at: usize| -> (usize, usize) {
        let len = bytes[at + 1];
        if len < 0x80 {
            (at + 2, len as usize)
        } else {
            let n = (len & 0x7f) as usize;
            let l = bytes[at + 2..at + 2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            (at + 2 + n, l)
        }
    };
    let (inner, _) = skip(0);
    let (alg, alg_len) = skip(inner);
    let (bits, bits_len) = skip(alg + alg_len);
    bytes[bits + 1..bits + bits_len].to_vec()
}

fn verify(jwt: &str, algorithm: &'static dyn signature::VerificationAlgorithm, cert: &str) {
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    signature::UnparsedPublicKey::new(algorithm, public_key(cert))
        .verify(input.as_bytes(), &sig)
        .expect("the signature verifies with the certificate's public key");
}

use rustls::pki_types::pem::PemObject as _;

#[test]
fn rs256_with_kid_and_thumbprints_is_exactly_what_openssl_signed() {
    for key in ["rsa-pkcs1.pem", "rsa-pkcs8.pem"] {
        let identity = load(key, Some("rsa.crt")).unwrap();
        let jwt = build(
            &settings(None, Some("test-kid")),
            "test-client",
            Signer::Key(&identity),
            now(),
            random(),
        )
        .unwrap();
        assert_eq!(jwt.expose(), &expected("RS256_JWT"), "{key}");
        assert_eq!(
            part(jwt.expose(), 0),
            serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "test-kid",
                "x5t": expected("RSA_X5T"), "x5t#S256": expected("RSA_X5T_S256")})
        );
        assert_eq!(part(jwt.expose(), 1), expected_claims());
    }
}

#[test]
fn hs256_with_the_client_secret_is_exactly_what_openssl_computed() {
    let secret = Sensitive::new(expected("HS256_SECRET"));
    let jwt = build(
        &settings(Some(AssertionAlgorithm::HS256), None),
        "test-client",
        Signer::Secret(&secret),
        now(),
        random(),
    )
    .unwrap();
    assert_eq!(jwt.expose(), &expected("HS256_JWT"));
    assert_eq!(
        part(jwt.expose(), 0),
        serde_json::json!({"typ": "JWT", "alg": "HS256"})
    );
    // HS256 is the default with a secret.
    let default = build(
        &settings(None, None),
        "test-client",
        Signer::Secret(&secret),
        now(),
        random(),
    )
    .unwrap();
    assert_eq!(default.expose(), jwt.expose());
}

#[test]
fn eddsa_is_exactly_what_openssl_signed() {
    let identity = load("ed25519-pkcs8.pem", None).unwrap();
    let jwt = build(
        &settings(None, Some("ed-kid")),
        "test-client",
        Signer::Key(&identity),
        now(),
        random(),
    )
    .unwrap();
    assert_eq!(jwt.expose(), &expected("EDDSA_JWT"));
}

/// (key, certificate, algorithm asked, alg expected, verifier)
type Case = (
    &'static str,
    &'static str,
    Option<AssertionAlgorithm>,
    &'static str,
    &'static dyn signature::VerificationAlgorithm,
);

#[test]
fn ecdsa_and_pss_verify_with_the_certificates_public_key() {
    let cases: [Case; 4] = [
        (
            "ec-p256-sec1.pem",
            "ec-p256.crt",
            None,
            "ES256",
            &signature::ECDSA_P256_SHA256_FIXED,
        ),
        (
            "ec-p256-pkcs8.pem",
            "ec-p256.crt",
            None,
            "ES256",
            &signature::ECDSA_P256_SHA256_FIXED,
        ),
        (
            "ec-p384-sec1.pem",
            "ec-p384.crt",
            None,
            "ES384",
            &signature::ECDSA_P384_SHA384_FIXED,
        ),
        (
            "rsa-pkcs8.pem",
            "rsa.crt",
            Some(AssertionAlgorithm::PS256),
            "PS256",
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
    ];
    for (key, cert, algorithm, alg, verifier) in cases {
        let identity = load(key, Some(cert)).unwrap();
        let jwt = build(
            &settings(algorithm, None),
            "test-client",
            Signer::Key(&identity),
            now(),
            random(),
        )
        .unwrap();
        let header = part(jwt.expose(), 0);
        assert_eq!(header["alg"], alg, "{key}");
        assert_eq!(header["typ"], "JWT");
        assert!(header.get("kid").is_none());
        assert!(header["x5t"].is_string() && header["x5t#S256"].is_string());
        assert_eq!(part(jwt.expose(), 1), expected_claims());
        verify(jwt.expose(), verifier, cert);
    }
}

#[test]
fn each_request_gets_a_new_jti_and_the_lifetime_is_exp_minus_iat() {
    let identity = load("ec-p256-sec1.pem", None).unwrap();
    let mut s = settings(None, None);
    s.lifetime = Duration::from_secs(10);
    let a = build(&s, "c", Signer::Key(&identity), now(), [1; 16]).unwrap();
    let b = build(&s, "c", Signer::Key(&identity), now(), [2; 16]).unwrap();
    let (a, b) = (part(a.expose(), 1), part(b.expose(), 1));
    assert_ne!(a["jti"], b["jti"]);
    assert_eq!(a["exp"].as_i64().unwrap() - a["iat"].as_i64().unwrap(), 10);
    assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused_naming_the_key() {
    let rsa = load("rsa-pkcs1.pem", None).unwrap();
    let ec = load("ec-p384-pkcs8.pem", None).unwrap();
    for (identity, algorithm, kind) in [
        (&rsa, AssertionAlgorithm::ES256, "RSA"),
        (&rsa, AssertionAlgorithm::EdDSA, "RSA"),
        (&ec, AssertionAlgorithm::ES256, "EC P-384"),
        (&ec, AssertionAlgorithm::RS256, "EC P-384"),
    ] {
        let f = build(
            &settings(Some(algorithm), None),
            "c",
            Signer::Key(identity),
            now(),
            random(),
        )
        .unwrap_err();
        assert_eq!(f.reason, Reason::InvalidCredentials);
        assert_eq!(
            f.message,
            format!(
                "spec.clientAssertion.algorithm {} does not fit the {kind} key in {}",
                algorithm.as_str(),
                identity.key_origin()
            )
        );
    }
    let secret = Sensitive::new("secret".to_owned());
    let f = build(
        &settings(Some(AssertionAlgorithm::RS256), None),
        "c",
        Signer::Secret(&secret),
        now(),
        random(),
    )
    .unwrap_err();
    assert_eq!(f.reason, Reason::InvalidSpec);
}
