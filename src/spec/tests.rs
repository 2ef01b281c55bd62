//! Tests of spec resolution: defaults, precedence and every refusal.

use super::*;
use crate::api::crd::MAX_NAME_LEN;
use crate::api::crd::{CredentialsSecretRef, Refresh, Target};
use crate::api::reason::Reason;

fn spec(provider: Provider) -> OAuthClientSpec {
    serde_json::from_value(serde_json::json!({
        "provider": provider,
        "credentialsSecretRef": {"name": "creds"},
    }))
    .unwrap()
}

fn generic(url: &str) -> OAuthClientSpec {
    OAuthClientSpec {
        token_url: Some(url.into()),
        ..spec(Provider::Generic)
    }
}

fn resolve(spec: &OAuthClientSpec) -> Result<ClientSettings, Failure> {
    ClientSettings::resolve(spec, &Policy::default())
}

fn invalid(spec: &OAuthClientSpec) -> String {
    let err = resolve(spec).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidSpec, "{err}");
    err.message
}

#[test]
fn preset_supplies_defaults() {
    let s = resolve(&spec(Provider::Iotspot)).unwrap();
    assert_eq!(
        s.exchange.token_url.as_str(),
        "https://iotspot-m2mauth-prod.auth.eu-central-1.amazoncognito.com/oauth2/token"
    );
    assert_eq!(
        s.exchange.client_auth_method,
        ClientAuthMethod::ClientSecretBasic
    );
    assert_eq!(s.exchange.basic_auth_encoding, BasicAuthEncoding::Raw);
    assert_eq!(s.exchange.request_encoding, RequestEncoding::Form);
    assert_eq!(s.exchange.scopes, ["iotspot/openapi"]);
    assert!(s.exchange.client_id_in_body);
    assert_eq!(s.exchange.default_lifetime, Duration::from_secs(3600));
    assert_eq!(s.refresh.renew_before, None);
    assert_eq!(s.refresh.renew_before_percentage, 33);
}

#[test]
fn explicit_fields_win_over_the_preset() {
    let s = resolve(&OAuthClientSpec {
        token_url: Some("https://emulator.example/token".into()),
        client_auth_method: Some(ClientAuthMethod::ClientSecretPost),
        basic_auth_encoding: Some(BasicAuthEncoding::UrlEncoded),
        request_encoding: Some(RequestEncoding::Json),
        scopes: Some(vec!["a".into(), "b".into()]),
        ..spec(Provider::Iotspot)
    })
    .unwrap();
    assert_eq!(
        s.exchange.token_url.as_str(),
        "https://emulator.example/token"
    );
    assert_eq!(
        s.exchange.client_auth_method,
        ClientAuthMethod::ClientSecretPost
    );
    assert_eq!(
        s.exchange.basic_auth_encoding,
        BasicAuthEncoding::UrlEncoded
    );
    assert_eq!(s.exchange.request_encoding, RequestEncoding::Json);
    assert_eq!(s.exchange.scopes, ["a", "b"]);
    // An explicit empty list also wins: no scope is sent.
    let s = resolve(&OAuthClientSpec {
        scopes: Some(vec![]),
        ..spec(Provider::Iotspot)
    })
    .unwrap();
    assert!(s.exchange.scopes.is_empty());
}

#[test]
fn token_url_rules() {
    assert!(invalid(&spec(Provider::Generic)).contains("spec.tokenUrl is required"));
    assert!(invalid(&generic("not a url")).contains("not a valid URL"));
    assert!(invalid(&generic("http://127.0.0.1/token")).contains("--allow-insecure-http"));
    assert!(invalid(&generic("ftp://x/token")).contains("https://"));
    assert!(invalid(&generic("https://user:pw@x/token")).contains("user:password"));
    assert!(invalid(&generic("file:///etc/passwd")).contains("https://"));
    let allowed = ClientSettings::resolve(
        &generic("http://127.0.0.1:8080/token"),
        &Policy {
            allow_insecure_http: true,
            ..Default::default()
        },
    );
    assert!(allowed.is_ok());
    // The token URL policy applies (its rules are tested in url_policy).
    assert!(invalid(&generic("https://169.254.169.254/token")).contains("--token-url-deny-cidrs"));
}

#[test]
fn size_bounds_and_namespaced_references_are_invalid_spec() {
    let many: BTreeMap<String, String> = (0..=MAX_MAP_ENTRIES)
        .map(|i| (format!("p{i}"), "v".to_owned()))
        .collect();
    let long_name = [("n".repeat(MAX_NAME_LEN + 1), "v".to_owned())].into();
    let long_value = [("n".to_owned(), "v".repeat(MAX_VALUE_LEN + 1))].into();
    let at_limit: BTreeMap<String, String> = (0..MAX_MAP_ENTRIES)
        .map(|i| (format!("{i:0>256}"), "v".repeat(MAX_VALUE_LEN)))
        .collect();
    let params = |map: &BTreeMap<String, String>| OAuthClientSpec {
        extra_params: Some(map.clone()),
        ..generic("https://x/t")
    };
    assert!(invalid(&params(&many)).contains("at most 32"));
    assert!(invalid(&params(&long_name)).contains("names must be 1 to 256"));
    assert!(invalid(&params(&long_value)).contains("at most 4096"));
    assert!(resolve(&params(&at_limit)).is_ok());
    let headers = OAuthClientSpec {
        extra_headers: Some(many.clone()),
        ..generic("https://x/t")
    };
    assert!(invalid(&headers).contains("spec.extraHeaders has 33 entries"));
    let mut s = generic("https://x/t");
    s.target = Some(Target {
        template: Some(long_value),
        ..Target::default()
    });
    assert!(invalid(&s).contains("spec.target.template.n is 4097 bytes"));

    let mut s = generic("https://x/t");
    s.credentials_secret_ref.as_mut().unwrap().namespace = Some("other-team".into());
    assert!(invalid(&s).contains("own namespace"));
}

#[test]
fn forbidden_headers_and_bad_header_values() {
    for name in ["Authorization", "content-type", "Host", "Content-Length"] {
        let mut s = generic("https://x/t");
        s.extra_headers = Some([(name.to_owned(), "v".to_owned())].into());
        assert!(invalid(&s).contains("may not set"), "{name}");
    }
    let mut s = generic("https://x/t");
    s.extra_headers = Some([("bad name".to_owned(), "v".to_owned())].into());
    assert!(invalid(&s).contains("not a valid header name"));
    s.extra_headers = Some([("X-Ok".to_owned(), "line\nbreak".to_owned())].into());
    assert!(invalid(&s).contains("not a valid header value"));
    s.extra_headers = Some([("X-Api-Version".to_owned(), "2".to_owned())].into());
    assert_eq!(resolve(&s).unwrap().exchange.extra_headers.len(), 1);
}

#[test]
fn every_forbidden_header_is_refused_in_any_case() {
    for name in FORBIDDEN_HEADERS {
        let upper = name.to_ascii_uppercase();
        let title: String = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or(String::new(), |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("-");
        for variant in [name.to_owned(), upper, title] {
            let mut s = generic("https://x/t");
            s.extra_headers = Some([(variant.clone(), "v".to_owned())].into());
            let msg = invalid(&s);
            assert!(
                msg.contains("spec.extraHeaders may not set") && msg.contains(&variant),
                "{variant}: {msg}"
            );
        }
    }
    for name in [
        "Proxy-Authorization",
        "Proxy-Connection",
        "Cookie",
        "Connection",
        "TE",
        "Upgrade",
        "Expect",
        "Transfer-Encoding",
        "Keep-Alive",
    ] {
        assert!(
            FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()),
            "{name}"
        );
    }
}

#[test]
fn header_values_must_be_printable_ascii() {
    let with_value = |value: &str| {
        let mut s = generic("https://x/t");
        s.extra_headers = Some([("X-Tenant".to_owned(), value.to_owned())].into());
        s
    };
    for hostile in ["café", "é", "\u{80}", "a\u{7f}b", "a\rb", "a\0b", "日本"] {
        let msg = invalid(&with_value(hostile));
        assert!(
            msg.contains("spec.extraHeaders") && msg.contains("X-Tenant"),
            "{hostile:?}: {msg}"
        );
        assert!(msg.contains("printable ASCII"), "{msg}");
    }
    for fine in ["v1", "a b\tc", "~!@#$%^&*()_+{}|:<>?", ""] {
        let s = resolve(&with_value(fine)).unwrap();
        assert_eq!(s.exchange.extra_headers[0].1.as_bytes(), fine.as_bytes());
    }
}

#[test]
fn reserved_params_are_compared_trimmed_and_case_folded() {
    for name in [
        " Client_Secret ",
        "CLIENT_ID",
        "SCOPE",
        "Grant_Type",
        "\taudience",
        "client_assertion",
        "Client_Assertion_Type",
    ] {
        let mut s = generic("https://x/t");
        s.extra_params = Some([(name.to_owned(), "v".to_owned())].into());
        let msg = invalid(&s);
        assert!(
            msg.contains("spec.extraParams may not set") && msg.contains(name.trim()),
            "{name:?}: {msg}"
        );
    }
    let mut s = generic("https://x/t");
    s.extra_params = Some([("resource".to_owned(), "https://api".to_owned())].into());
    assert_eq!(resolve(&s).unwrap().exchange.extra_params.len(), 1);
}

#[test]
fn reserved_params_and_bad_scopes() {
    for name in RESERVED_PARAMS {
        let mut s = generic("https://x/t");
        s.extra_params = Some([(name.to_owned(), "v".to_owned())].into());
        assert!(invalid(&s).contains(name), "{name}");
    }
    let mut s = generic("https://x/t");
    s.scopes = Some(vec!["a b".into()]);
    assert!(invalid(&s).contains("not a single scope"));
}

#[test]
fn refresh_and_template_errors_name_the_field() {
    let mut s = generic("https://x/t");
    s.refresh = Some(Refresh {
        renew_before: Some("5 minutes".into()),
        ..Refresh::default()
    });
    assert!(invalid(&s).contains("spec.refresh.renewBefore"));
    s.refresh = Some(Refresh {
        default_lifetime: "0s".into(),
        ..Refresh::default()
    });
    assert!(invalid(&s).contains("spec.refresh.defaultLifetime"));
    s.refresh = Some(Refresh {
        renew_before_percentage: 95,
        ..Refresh::default()
    });
    assert!(invalid(&s).contains("between 1 and 90"));
    s.refresh = None;
    s.target = Some(Target {
        template: Some([("auth".to_owned(), "Bearer {{ token }}".to_owned())].into()),
        ..Target::default()
    });
    let msg = invalid(&s);
    assert!(msg.contains("spec.target.template.auth") && msg.contains("unknown placeholder"));
    s.target = Some(Target {
        template: Some([("access_token".to_owned(), "x".to_owned())].into()),
        ..Target::default()
    });
    assert!(invalid(&s).contains("standard key"));
    s.target = Some(Target {
        template: Some([("a/b".to_owned(), "x".to_owned())].into()),
        ..Target::default()
    });
    assert!(invalid(&s).contains("not a valid Secret key"));
}

#[test]
fn credentials_ref_defaults() {
    let r = CredentialsSecretRef::named("c");
    assert_eq!(
        (r.client_id_key.as_str(), r.client_secret_key.as_str()),
        ("client_id", "client_secret")
    );
}

#[test]
fn ca_bundle_refs_are_checked_and_kept_out_of_the_exchange_settings() {
    use crate::api::crd::CaBundleRef;
    let with = |reference: CaBundleRef| OAuthClientSpec {
        ca_bundle_ref: Some(reference),
        ..generic("https://idp.example/token")
    };
    let plain = resolve(&generic("https://idp.example/token")).unwrap();
    let s = resolve(&with(CaBundleRef::config_map("corp-ca", "ca.crt"))).unwrap();
    assert_eq!(
        s.ca_bundle,
        Some(CaBundleRef::config_map("corp-ca", "ca.crt"))
    );
    // The trust is not what a token is issued for: the request settings are unchanged.
    assert_eq!(s.exchange, plain.exchange);
    assert_eq!(plain.ca_bundle, None);
    let mut namespaced = CaBundleRef::config_map("corp-ca", "ca.crt");
    namespaced.namespace = Some("other".into());
    assert!(invalid(&with(namespaced)).contains("spec.caBundleRef.namespace is not allowed"));
    assert!(
        invalid(&with(CaBundleRef::config_map("Corp_CA", "ca.crt")))
            .contains("spec.caBundleRef.name")
    );
    assert!(
        invalid(&with(CaBundleRef::config_map("corp-ca", "ca/crt")))
            .contains("spec.caBundleRef.key")
    );
}

fn auth_spec(fields: serde_json::Value) -> OAuthClientSpec {
    let mut spec = serde_json::json!({"tokenUrl": "https://idp.example/token"});
    spec.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    serde_json::from_value(spec).unwrap()
}

fn with_tokens() -> Policy {
    Policy {
        allow_service_account_tokens: true,
        ..Policy::default()
    }
}

/// [`with_tokens`], also allowing `http://` token URLs.
fn insecure_with_tokens() -> Policy {
    Policy {
        allow_insecure_http: true,
        ..with_tokens()
    }
}

fn federated() -> serde_json::Value {
    serde_json::json!({
        "clientAuthMethod": "ServiceAccountToken",
        "clientId": "app",
        "serviceAccountToken": {"serviceAccountName": "workload", "audience": "api://AzureADTokenExchange"},
    })
}

#[test]
fn each_method_gets_its_settings_and_defaults() {
    let creds = serde_json::json!({"name": "c"});
    let s = resolve(&auth_spec(serde_json::json!({
        "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
    })))
    .unwrap()
    .exchange;
    let a = s.assertion.unwrap();
    assert_eq!(a.algorithm, None, "from the key");
    assert_eq!(a.audience, "https://idp.example/token", "the token URL");
    assert_eq!(a.lifetime, Duration::from_secs(300));
    assert!(s.service_account.is_none());
    let s = resolve(&auth_spec(serde_json::json!({
        "clientAuthMethod": "ClientSecretJwt", "credentialsSecretRef": creds,
        "clientAssertion": {"keyId": "k1", "audience": "https://issuer.example", "lifetime": "1h"},
    })))
    .unwrap()
    .exchange;
    let a = s.assertion.unwrap();
    assert_eq!(
        a.algorithm,
        Some(crate::api::crd::AssertionAlgorithm::HS256)
    );
    assert_eq!(
        (a.key_id.as_deref(), a.audience.as_str(), a.lifetime),
        (
            Some("k1"),
            "https://issuer.example",
            Duration::from_secs(3600)
        )
    );
    let s = ClientSettings::resolve(&auth_spec(federated()), &with_tokens())
        .unwrap()
        .exchange;
    let sa = s.service_account.unwrap();
    assert_eq!(
        (
            sa.name.as_str(),
            sa.audience.as_str(),
            sa.expiration_seconds
        ),
        ("workload", "api://AzureADTokenExchange", 600)
    );
    assert!(s.assertion.is_none());
}

#[test]
fn what_a_method_needs_and_forbids_is_checked_as_the_cel_rules_do() {
    let creds = serde_json::json!({"name": "c"});
    let cases = [
        (serde_json::json!({}), "credentialsSecretRef is required"),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAssertion": {}}),
            "clientAssertion is only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAuthMethod": "PrivateKeyJwt",
                "clientAssertion": {"algorithm": "HS256"}}),
            "does not fit clientAuthMethod PrivateKeyJwt",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAuthMethod": "ClientSecretJwt",
                "clientAssertion": {"algorithm": "ES256"}}),
            "does not fit clientAuthMethod ClientSecretJwt",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAuthMethod": "PrivateKeyJwt",
                "clientAssertion": {"lifetime": "9s"}}),
            "between 10s and 1h",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAuthMethod": "PrivateKeyJwt",
                "clientAssertion": {"lifetime": "61m"}}),
            "between 10s and 1h",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "clientAuthMethod": "PrivateKeyJwt",
                "clientAssertion": {"keyId": ""}}),
            "spec.clientAssertion.keyId is 0 bytes",
        ),
        (
            serde_json::json!({"credentialsSecretRef": creds, "serviceAccountToken":
                {"serviceAccountName": "a", "audience": "b"}}),
            "serviceAccountToken is only allowed with clientAuthMethod ServiceAccountToken",
        ),
        (
            serde_json::json!({"clientAuthMethod": "ServiceAccountToken", "clientId": "x"}),
            "requires spec.serviceAccountToken",
        ),
        (
            serde_json::json!({"clientAuthMethod": "ServiceAccountToken",
                "serviceAccountToken": {"serviceAccountName": "a", "audience": "b"}}),
            "and spec.clientId",
        ),
        (
            serde_json::json!({"clientAuthMethod": "TlsClientAuth", "credentialsSecretRef": creds,
                "tokenUrl": "http://idp.example/token"}),
            "TlsClientAuth presents the client certificate in the TLS handshake",
        ),
    ];
    let policy = insecure_with_tokens();
    for (fields, expected) in cases {
        let err = ClientSettings::resolve(&auth_spec(fields.clone()), &policy).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec, "{fields}");
        assert!(err.message.contains(expected), "{fields}: {}", err.message);
    }
}

#[test]
fn service_account_and_assertion_bounds_are_checked_as_the_cel_rules_do() {
    let creds = serde_json::json!({"name": "c"});
    let policy = insecure_with_tokens();
    let mut both = federated();
    both["credentialsSecretRef"] = creds.clone();
    let err = ClientSettings::resolve(&auth_spec(both), &policy).unwrap_err();
    assert!(err.message.contains("must be absent"), "{}", err.message);
    for seconds in [599, 86_401] {
        let mut spec = federated();
        spec["serviceAccountToken"]["expirationSeconds"] = serde_json::json!(seconds);
        let err = ClientSettings::resolve(&auth_spec(spec), &policy).unwrap_err();
        assert!(
            err.message.contains("between 600 and 3600"),
            "{}",
            err.message
        );
    }
    for lifetime in ["10s", "1h", "90s"] {
        let spec = auth_spec(serde_json::json!({"credentialsSecretRef": creds,
            "clientAuthMethod": "PrivateKeyJwt", "clientAssertion": {"lifetime": lifetime}}));
        resolve(&spec).unwrap();
    }
}

#[test]
fn service_account_tokens_need_the_operator_flag() {
    let err = resolve(&auth_spec(federated())).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidSpec);
    assert!(
        err.message.contains("--allow-service-account-tokens"),
        "{}",
        err.message
    );
}

/// A preset whose vendor refuses a request without `audience` refuses the spec first, naming the
/// field (before, the vendor's 400 said it, after the credentials were sent).
#[test]
fn presets_that_need_an_audience_refuse_a_spec_without_one() {
    let mut s = spec(Provider::Microboxlabs);
    assert_eq!(
        invalid(&s),
        "spec.audience is required by the microboxlabs preset: set it to the API identifier the vendor gave with the credentials"
    );
    s.audience = Some(" ".into());
    assert!(invalid(&s).starts_with("spec.audience is required"));
    s.audience = Some("https://api.example".into());
    assert!(resolve(&s).is_ok());
    assert!(
        resolve(&spec(Provider::Iotspot)).is_ok(),
        "no audience needed"
    );
    // Auth0 falls back to the tenant's Default Audience.
    let mut auth0 = spec(Provider::Auth0);
    auth0.token_url = Some("https://tenant.example/oauth/token".into());
    assert!(resolve(&auth0).is_ok());
}
