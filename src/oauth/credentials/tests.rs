use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

fn spec(extra: serde_json::Value) -> OAuthClientSpec {
    let mut spec =
        serde_json::json!({"tokenUrl": "https://idp/t", "credentialsSecretRef": {"name": "creds"}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(spec).unwrap()
}

fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn refused(spec: &OAuthClientSpec, d: Option<&BTreeMap<String, Vec<u8>>>) -> Failure {
    from_secret(spec, "ns", d.map(|d| d as &dyn SecretData)).unwrap_err()
}

#[test]
fn values_are_bytes_and_every_refusal_names_its_source() {
    let s = spec(serde_json::json!({}));
    let good = data(&[("client_id", b"id"), ("client_secret", b"s3cret\n")]);
    let c = from_secret(&s, "ns", Some(&good)).unwrap();
    assert_eq!(c.client_id, "id");
    assert_eq!(
        c.client_secret().unwrap().expose(),
        "s3cret\n",
        "byte for byte"
    );

    let f = refused(&s, None);
    assert_eq!(f.reason, Reason::CredentialsNotFound);
    assert_eq!(f.message, "Secret creds not found in namespace ns");
    let f = refused(&s, Some(&data(&[("client_id", b"id")])));
    assert_eq!(f.message, "Secret creds has no key client_secret");
    let f = refused(
        &s,
        Some(&data(&[("client_id", b""), ("client_secret", b"x")])),
    );
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::CredentialsNotFound,
            "key client_id of Secret creds is empty"
        )
    );
    // The contract moved a value that is not UTF-8 from InvalidSpec to InvalidCredentials.
    let f = refused(
        &s,
        Some(&data(&[
            ("client_id", b"id"),
            ("client_secret", b"\xff\xfe"),
        ])),
    );
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::InvalidCredentials,
            "key client_secret of Secret creds is not valid UTF-8"
        )
    );
    let f = refused(
        &s,
        Some(&data(&[("client_id", b"\xc3"), ("client_secret", b"x")])),
    );
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::InvalidCredentials,
            "key client_id of Secret creds is not valid UTF-8"
        )
    );
}

#[test]
fn an_inline_client_id_and_custom_keys() {
    let s = spec(serde_json::json!({
        "clientId": "inline",
        "credentialsSecretRef": {"name": "creds", "clientSecretKey": "password"},
    }));
    let c = from_secret(&s, "ns", Some(&data(&[("password", b"pw")]))).unwrap();
    assert_eq!(
        (
            c.client_id.as_str(),
            c.client_secret().unwrap().expose().as_str()
        ),
        ("inline", "pw")
    );
}

#[test]
fn other_origins_are_named_as_written() {
    let f = value(
        Some(b""),
        Origin::Other("--client-secret-file /tmp/s"),
        || unreachable!(),
    )
    .unwrap_err();
    assert_eq!(f.message, "--client-secret-file /tmp/s is empty");
}

#[test]
fn each_method_reads_only_what_it_uses() {
    let key = fixture("ec-p256-sec1.pem");
    let cert = fixture("ec-p256.crt");
    let all = data(&[
        ("client_id", b"id"),
        ("client_secret", b"s"),
        ("tls.key", &key),
        ("tls.crt", &cert),
    ]);
    for method in ["ClientSecretBasic", "ClientSecretPost", "ClientSecretJwt"] {
        let s = spec(serde_json::json!({"clientAuthMethod": method}));
        let c = from_secret(&s, "ns", Some(&all)).unwrap();
        assert!(matches!(c.proof, Proof::Secret(_)), "{method}");
    }
    // PrivateKeyJwt: the certificate is optional; with one, it is read and checked.
    let s = spec(serde_json::json!({"clientAuthMethod": "PrivateKeyJwt"}));
    let without = data(&[("client_id", b"id"), ("tls.key", &key)]);
    let c = from_secret(&s, "ns", Some(&without)).unwrap();
    assert!(c.identity().unwrap().certificates().is_none());
    let c = from_secret(&s, "ns", Some(&all)).unwrap();
    assert!(c.identity().unwrap().certificates().is_some());
    assert_eq!(
        refused(&s, Some(&data(&[("client_id", b"id")]))).message,
        "Secret creds has no key tls.key"
    );
    // TlsClientAuth: the certificate is required.
    let s = spec(serde_json::json!({"clientAuthMethod": "TlsClientAuth"}));
    let f = refused(&s, Some(&without));
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::CredentialsNotFound,
            "Secret creds has no key tls.crt"
        )
    );
    let f = refused(
        &s,
        Some(&data(&[
            ("client_id", b"id"),
            ("tls.key", &key),
            ("tls.crt", b""),
        ])),
    );
    assert_eq!(f.message, "key tls.crt of Secret creds is empty");
    // Custom keys.
    let s = spec(serde_json::json!({
        "clientAuthMethod": "TlsClientAuth",
        "credentialsSecretRef": {"name": "creds", "privateKeyKey": "k", "certificateKey": "c"},
    }));
    let custom = data(&[("client_id", b"id"), ("k", &key), ("c", &cert)]);
    let c = from_secret(&s, "ns", Some(&custom)).unwrap();
    assert_eq!(c.identity().unwrap().key_origin(), "key k of Secret creds");
}

#[test]
fn unusable_keys_are_invalid_credentials_naming_the_key_never_its_content() {
    let s = spec(serde_json::json!({"clientAuthMethod": "PrivateKeyJwt"}));
    let cases: [(&[u8], &str); 5] = [
        (
            b"not a key at all",
            "key tls.key of Secret creds holds no PEM private key",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA!!!!\n-----END PRIVATE KEY-----\n",
            "key tls.key of Secret creds is not valid PEM",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
            "key tls.key of Secret creds: is not a usable private key",
        ),
        (
            &fixture("rsa-encrypted-pkcs8.pem"),
            "key tls.key of Secret creds holds an encrypted private key",
        ),
        (
            &fixture("rsa-1024.pem"),
            "key tls.key of Secret creds: the RSA key is smaller than 2048 bits",
        ),
    ];
    for (key, expected) in cases {
        let f = refused(&s, Some(&data(&[("client_id", b"id"), ("tls.key", key)])));
        assert_eq!(f.reason, Reason::InvalidCredentials, "{}", f.message);
        assert!(f.message.starts_with(expected), "{}", f.message);
        assert!(!f.message.contains("MAMC") && !f.message.contains("AAAA"));
    }
    let legacy = fixture("rsa-encrypted-legacy.pem");
    let f = refused(
        &s,
        Some(&data(&[("client_id", b"id"), ("tls.key", &legacy)])),
    );
    assert!(f.message.contains("encrypted private key"), "{}", f.message);
}

/// Annotations of a ServiceAccount: the audiences and the token endpoints it allows.
fn opted_in(audiences: Option<&str>, endpoints: Option<&str>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Some(v) = audiences {
        map.insert(TOKEN_AUDIENCES_ANNOTATION.to_owned(), v.to_owned());
    }
    if let Some(v) = endpoints {
        map.insert(TOKEN_ENDPOINTS_ANNOTATION.to_owned(), v.to_owned());
    }
    map
}

const IDP: &str = "https://login.microsoftonline.com/tenant/oauth2/v2.0/token";

fn read_sa(
    url: &str,
    a: Option<&BTreeMap<String, String>>,
) -> Result<Credentials, crate::api::reason::Failure> {
    let url = url::Url::parse(url).unwrap();
    from_service_account("client", "sa", "api://AzureADTokenExchange", &url, "ns", a)
}

#[test]
fn a_service_account_is_read_only_when_it_opted_in_to_the_audience() {
    let endpoints = Some("https://login.microsoftonline.com");
    let annotations = |value: Option<&str>| opted_in(value, endpoints);
    let read = |a: Option<&BTreeMap<String, String>>| read_sa(IDP, a);
    let ok = annotations(Some(" other ,  api://AzureADTokenExchange , "));
    let c = read(Some(&ok)).unwrap();
    assert_eq!(c.client_id, "client");
    assert!(matches!(c.proof, Proof::ServiceAccount(ref g) if g.name == "sa"));

    let f = read(None).unwrap_err();
    assert_eq!(
        (f.reason, f.message.as_str()),
        (
            Reason::CredentialsNotFound,
            "ServiceAccount sa not found in namespace ns"
        )
    );
    let f = read(Some(&annotations(None))).unwrap_err();
    assert_eq!(f.reason, Reason::ServiceAccountTokenDenied);
    assert!(f.message.contains("it has no annotation"), "{}", f.message);
    for listed in [
        "",
        "api://AzureADTokenExchange2",
        "api://azureadtokenexchange",
    ] {
        let f = read(Some(&annotations(Some(listed)))).unwrap_err();
        assert_eq!(f.reason, Reason::ServiceAccountTokenDenied, "{listed:?}");
        assert!(f.message.contains("lists"), "{}", f.message);
    }
    assert_eq!(allowed_audiences(" a, ,b ,"), ["a", "b"]);
}

/// Security round three, item 2: an OAuthClient creator names an opted-in ServiceAccount and
/// points the token URL at their own server. The audience opt-in alone let the token go there;
/// the ServiceAccount must also list the token endpoint's origin.
#[test]
fn a_service_account_token_goes_only_to_the_endpoints_its_owner_lists() {
    let audience = Some("api://AzureADTokenExchange");
    let listed = |endpoints: Option<&str>| opted_in(audience, endpoints);
    // Listed: compared after lower-casing the host and dropping the default port.
    for (url, endpoints) in [
        (IDP, "https://login.microsoftonline.com"),
        (IDP, "https://LOGIN.microsoftonline.com:443/"),
        (
            IDP,
            "https://other.example, https://login.microsoftonline.com",
        ),
        ("https://idp.example:8443/token", "https://idp.example:8443"),
        ("http://127.0.0.1:8080/token", "http://127.0.0.1:8080"),
    ] {
        read_sa(url, Some(&listed(Some(endpoints))))
            .unwrap_or_else(|f| panic!("{url} with {endpoints}: {}", f.message));
    }
    // The attacker's endpoint, or anything but the exact origin.
    for (url, endpoints) in [
        ("https://attacker.example/token", None),
        ("https://attacker.example/token", Some("")),
        (
            "https://attacker.example/token",
            Some("https://login.microsoftonline.com"),
        ),
        (
            "https://login.microsoftonline.com.attacker.example/token",
            Some("https://login.microsoftonline.com"),
        ),
        (
            "https://login.microsoftonline.com:8443/token",
            Some("https://login.microsoftonline.com"),
        ),
        (
            "http://login.microsoftonline.com/token",
            Some("https://login.microsoftonline.com"),
        ),
        (IDP, Some("login.microsoftonline.com")),
        (IDP, Some("https://login.microsoftonline.com/tenant")),
        (IDP, Some("https://user@login.microsoftonline.com")),
        (IDP, Some("https://*.microsoftonline.com")),
        (IDP, Some("*")),
    ] {
        let f = read_sa(url, Some(&listed(endpoints))).unwrap_err();
        assert_eq!(
            f.reason,
            Reason::ServiceAccountTokenDenied,
            "{url} {endpoints:?}"
        );
        assert!(
            f.message.contains(TOKEN_ENDPOINTS_ANNOTATION)
                && f.message
                    .contains(&endpoint_origin(&url::Url::parse(url).unwrap())),
            "{}",
            f.message
        );
    }
}
