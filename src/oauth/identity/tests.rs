//! Keys and certificates from the fixtures of `tests/fixtures/client-auth/make.sh` (test-only
//! keys made with openssl, and the thumbprints openssl computed for them).

use super::*;
use crate::api::reason::Reason;

pub(crate) const FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

/// A value of `expected.env`, which make.sh computed with openssl.
pub(crate) fn expected(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{FIXTURES}expected.env")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in expected.env"))
        .to_owned()
}

pub(crate) fn load(key: &str, cert: Option<&str>) -> Result<Identity, Failure> {
    let cert_bytes = cert.map(fixture);
    Identity::load(
        &fixture(key),
        &format!("key {key}"),
        cert_bytes.as_deref().map(|b| (b, cert.unwrap())),
    )
}

#[test]
fn every_supported_encoding_and_type_loads() {
    let cases = [
        ("rsa-pkcs1.pem", Some("rsa.crt"), KeyKind::Rsa),
        ("rsa-pkcs8.pem", Some("rsa.crt"), KeyKind::Rsa),
        ("ec-p256-sec1.pem", Some("ec-p256.crt"), KeyKind::EcP256),
        ("ec-p256-pkcs8.pem", Some("ec-p256.crt"), KeyKind::EcP256),
        ("ec-p384-sec1.pem", Some("ec-p384.crt"), KeyKind::EcP384),
        ("ec-p384-pkcs8.pem", None, KeyKind::EcP384),
        ("ed25519-pkcs8.pem", Some("ed25519.crt"), KeyKind::Ed25519),
    ];
    for (key, cert, kind) in cases {
        let identity = load(key, cert).unwrap_or_else(|f| panic!("{key}: {f}"));
        assert_eq!(identity.kind(), kind, "{key}");
        assert_eq!(identity.certificates().is_some(), cert.is_some());
        assert_eq!(identity.key_origin(), format!("key {key}"));
        assert!(!identity.jws_der().expose().is_empty());
    }
}

#[test]
fn thumbprints_are_the_ones_openssl_computed() {
    let identity = load("rsa-pkcs1.pem", Some("rsa.crt")).unwrap();
    let certs = identity.certificates().unwrap();
    assert_eq!(certs.x5t(), expected("RSA_X5T"));
    assert_eq!(certs.x5t_s256(), expected("RSA_X5T_S256"));
    assert_eq!(certs.chain().len(), 1);
}

#[test]
fn a_chain_is_kept_leaf_first() {
    let mut chain = fixture("ec-p256.crt");
    chain.extend(fixture("ca.crt"));
    let identity = Identity::load(
        &fixture("ec-p256-sec1.pem"),
        "key tls.key",
        Some((&chain, "key tls.crt")),
    )
    .unwrap();
    assert_eq!(identity.certificates().unwrap().chain().len(), 2);
    // The CA first is the wrong order: the leaf must be the key's.
    let mut reversed = fixture("ca.crt");
    reversed.extend(fixture("ec-p256.crt"));
    let f = Identity::load(
        &fixture("ec-p256-sec1.pem"),
        "key tls.key",
        Some((&reversed, "key tls.crt")),
    )
    .unwrap_err();
    assert!(f.message.contains("does not match"), "{}", f.message);
}

#[test]
fn a_certificate_of_another_key_or_unparseable_is_refused() {
    let f = load("rsa-other-pkcs1.pem", Some("rsa.crt")).unwrap_err();
    assert_eq!(f.reason, Reason::InvalidCredentials);
    assert_eq!(
        f.message,
        "the certificate in rsa.crt does not match the private key in key rsa-other-pkcs1.pem (the first certificate must be the key's)"
    );
    let f = load("ec-p256-sec1.pem", Some("rsa.crt")).unwrap_err();
    assert!(f.message.contains("does not match"), "{}", f.message);
    let key = fixture("ec-p256-sec1.pem");
    let garbage = b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    let f = Identity::load(&key, "key tls.key", Some((garbage, "key tls.crt"))).unwrap_err();
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::InvalidCredentials,
            "key tls.crt: certificate 1 of 1 cannot be parsed as X.509"
        )
    );
    let f = Identity::load(&key, "key tls.key", Some((b"nothing", "key tls.crt"))).unwrap_err();
    assert_eq!(f.message, "key tls.crt holds no PEM certificate");
}

#[test]
fn identity_keys_follow_the_key_and_the_chain_and_hide_both() {
    let a = load("ec-p256-sec1.pem", Some("ec-p256.crt")).unwrap();
    let again = load("ec-p256-sec1.pem", Some("ec-p256.crt")).unwrap();
    let foreign = load("ec-p256-sec1.pem", Some("ec-p256-foreign.crt")).unwrap();
    let bare = load("ec-p256-sec1.pem", None).unwrap();
    assert_eq!(a.key(), again.key());
    assert_eq!(a, again);
    assert_ne!(
        a.key(),
        foreign.key(),
        "another certificate is another identity"
    );
    assert_ne!(a.key(), bare.key());
    let shown = format!("{a:?} {:?}", a.key());
    assert!(
        shown.contains("EcP256") && shown.contains("key ec-p256-sec1.pem"),
        "{shown}"
    );
    let pem = String::from_utf8(fixture("ec-p256-sec1.pem")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "{shown}");
    }
    assert!(a.secret_forms().expose().contains(&body));
    assert!(!format!("{:?}", a.secret_forms()).contains(&body[..16]));
}
