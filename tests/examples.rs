//! Every example under `examples/` is a spec the operator accepts: each OAuthClient in it passes
//! the generated CRD's OpenAPI schema (applied by the API-server double; the real-cluster suite
//! dry-runs every example file on a real kube-apiserver, CEL rules included) and resolves
//! against its preset. The documentation (the README or a page under `docs/`) names every
//! example file, and the client authentication examples the contract asks for exist.

mod support;

use std::sync::Arc;

use kube::api::{Api, PostParams};
use oauth_token_operator::api::crd::{ClientAuthMethod, OAuthClient};
use oauth_token_operator::spec::url_policy::TokenUrlPolicy;
use oauth_token_operator::spec::{ClientSettings, Policy};
use serde_json::Value;
use support::apiserver::ApiServer;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");

/// The YAML examples: (file name, its documents).
fn examples() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let documents = serde_yaml::Deserializer::from_str(&text)
                .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
                .collect();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, documents)
        })
        .collect()
}

#[tokio::test]
async fn every_example_oauthclient_passes_the_crd_and_resolves() {
    let api = ApiServer::start_unlogged().await;
    let policy = Policy {
        allow_insecure_http: true,
        token_urls: Arc::new(TokenUrlPolicy::permissive()),
        allow_service_account_tokens: true,
    };
    let mut methods = Vec::new();
    for (file, documents) in examples() {
        for doc in documents.into_iter().filter(|d| d["kind"] == "OAuthClient") {
            let client: OAuthClient = serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{file}: not an OAuthClient: {e}"));
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            let clients: Api<OAuthClient> = Api::namespaced(api.client(), namespace);
            clients
                .create(&PostParams::default(), &client)
                .await
                .unwrap_or_else(|e| panic!("{file}: refused by the CRD: {e}"));
            let settings = ClientSettings::resolve(&client.spec, &policy)
                .unwrap_or_else(|f| panic!("{file}: {}: {}", f.reason, f.message));
            methods.push((file.clone(), settings.exchange.client_auth_method));
        }
    }
    let with = |file: &str, method: ClientAuthMethod| {
        assert!(
            methods.contains(&(file.to_owned(), method)),
            "{file} shows {method:?}: {methods:?}"
        );
    };
    with("entra-id-certificate.yaml", ClientAuthMethod::PrivateKeyJwt);
    with(
        "entra-id-workload-identity.yaml",
        ClientAuthMethod::ServiceAccountToken,
    );
    with("keycloak-signed-jwt.yaml", ClientAuthMethod::PrivateKeyJwt);
    with(
        "keycloak-signed-jwt.yaml",
        ClientAuthMethod::ClientSecretJwt,
    );
    with("okta-private-key-jwt.yaml", ClientAuthMethod::PrivateKeyJwt);
    with("mtls-cert-manager.yaml", ClientAuthMethod::TlsClientAuth);
    with("gcp-workload-identity.yaml", ClientAuthMethod::None);
    with("token-exchange-chain.yaml", ClientAuthMethod::None);
}

/// The README and every page under `docs/`, as one text.
fn documentation() -> String {
    let mut pages: Vec<_> = std::fs::read_dir(DOCS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages under docs/");
    let mut text = std::fs::read_to_string(README).unwrap();
    for page in pages {
        text.push_str(&std::fs::read_to_string(page).unwrap());
    }
    text
}

#[test]
fn the_documentation_names_every_example() {
    let docs = documentation();
    for (file, _) in examples() {
        assert!(
            docs.contains(&format!("examples/{file}")),
            "neither the README nor a page under docs/ mentions examples/{file}"
        );
    }
}

#[test]
fn the_federation_example_opts_its_service_account_in_to_its_audience() {
    let (_, documents) = examples()
        .into_iter()
        .find(|(f, _)| f == "entra-id-workload-identity.yaml")
        .unwrap();
    let client = documents
        .iter()
        .find(|d| d["kind"] == "OAuthClient")
        .unwrap();
    let source = &client["spec"]["serviceAccountToken"];
    let account = documents
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .unwrap();
    assert_eq!(account["metadata"]["name"], source["serviceAccountName"]);
    let allowed = account["metadata"]["annotations"]["oauth.token-operator.dev/token-audiences"]
        .as_str()
        .unwrap();
    assert!(
        allowed
            .split(',')
            .any(|a| a.trim() == source["audience"].as_str().unwrap())
    );
    let endpoints = account["metadata"]["annotations"]["oauth.token-operator.dev/token-endpoints"]
        .as_str()
        .unwrap();
    let token_url = url::Url::parse(client["spec"]["tokenUrl"].as_str().unwrap()).unwrap();
    assert!(
        oauth_token_operator::oauth::credentials::allowed_endpoints(endpoints)
            .contains(&Some(token_url.origin().ascii_serialization())),
        "the example's ServiceAccount lists its token URL's origin"
    );
}
