//! Typed builders for what the tests create in the API-server double (or a real API server):
//! an OAuthClient's spec ([`Spec`]) and a Secret ([`SecretObject`]), so that a test says what it
//! sets instead of spelling JSON. A test that means to send what the schema refuses, or a merge
//! patch, still writes its JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::apiserver::{ApiServer, OAUTHCLIENTS, SECRETS};

/// The API version of OAuthClients.
pub const API_VERSION: &str = "oauth.token-operator.dev/v1alpha1";

/// An OAuthClient spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec(Value);

impl Spec {
    /// A spec that sends the credentials of the Secret `creds` to `token_url` (the generic
    /// request shape, client_secret_basic).
    pub fn to(token_url: &str) -> Spec {
        Spec(json!({"tokenUrl": token_url, "credentialsSecretRef": {"name": "creds"}}))
    }

    /// `spec.provider`.
    pub fn provider(self, provider: &str) -> Spec {
        self.set("provider", provider)
    }

    /// `spec.credentialsSecretRef.name`.
    pub fn credentials(self, secret: &str) -> Spec {
        self.set("credentialsSecretRef/name", secret)
    }

    /// `spec.credentialsSecretRef.<field>` (`clientIdKey`, `privateKeyKey`, ...).
    pub fn credentials_key(self, field: &str, key: &str) -> Spec {
        self.set(&format!("credentialsSecretRef/{field}"), key)
    }

    /// No `credentialsSecretRef` (ServiceAccountToken).
    pub fn without_credentials(mut self) -> Spec {
        self.0
            .as_object_mut()
            .unwrap()
            .remove("credentialsSecretRef");
        self
    }

    /// `spec.clientAuthMethod`.
    pub fn method(self, method: &str) -> Spec {
        self.set("clientAuthMethod", method)
    }

    /// `spec.clientId`.
    pub fn client_id(self, id: &str) -> Spec {
        self.set("clientId", id)
    }

    /// `spec.audience`.
    pub fn audience(self, audience: &str) -> Spec {
        self.set("audience", audience)
    }

    /// `spec.scopes`.
    pub fn scopes(self, scopes: &[&str]) -> Spec {
        self.set("scopes", json!(scopes))
    }

    /// `spec.target.name`.
    pub fn target(self, name: &str) -> Spec {
        self.set("target/name", name)
    }

    /// One key of `spec.target.template`.
    pub fn template(self, key: &str, template: &str) -> Spec {
        self.set(&format!("target/template/{key}"), template)
    }

    /// `spec.refresh.renewBefore`.
    pub fn renew_before(self, duration: &str) -> Spec {
        self.set("refresh/renewBefore", duration)
    }

    /// `spec.caBundleRef` (`kind` ConfigMap or Secret).
    pub fn ca_bundle(self, kind: &str, name: &str, key: &str) -> Spec {
        self.set(
            "caBundleRef",
            json!({"kind": kind, "name": name, "key": key}),
        )
    }

    /// `spec.serviceAccountToken`, with the method `ServiceAccountToken` and no credentials
    /// Secret.
    pub fn service_account(self, name: &str, audience: &str) -> Spec {
        self.without_credentials()
            .method("ServiceAccountToken")
            .set(
                "serviceAccountToken",
                json!({"serviceAccountName": name, "audience": audience}),
            )
    }

    /// `spec.tokenUrl`.
    pub fn token_url(self, url: &str) -> Spec {
        self.set("tokenUrl", url)
    }

    /// One label of `spec.target.labels` (the key may hold a `/`).
    pub fn target_label(mut self, key: &str, value: &str) -> Spec {
        self.0["target"]["labels"][key] = json!(value);
        self
    }

    /// One annotation of `spec.target.annotations` (the key may hold a `/`).
    pub fn target_annotation(mut self, key: &str, value: &str) -> Spec {
        self.0["target"]["annotations"][key] = json!(value);
        self
    }

    /// One header of `spec.extraHeaders`.
    pub fn extra_header(mut self, name: &str, value: &str) -> Spec {
        self.0["extraHeaders"][name] = json!(value);
        self
    }

    /// One field of `spec.responseFields` (`accessToken`, `expiresIn`, ...).
    pub fn response_field(self, field: &str, path: &str) -> Spec {
        self.set(&format!("responseFields/{field}"), path)
    }

    /// `spec.clientAssertion.algorithm`.
    pub fn assertion_algorithm(self, algorithm: &str) -> Spec {
        self.set("clientAssertion/algorithm", algorithm)
    }

    /// `spec.clientAssertion.lifetime`.
    pub fn assertion_lifetime(self, lifetime: &str) -> Spec {
        self.set("clientAssertion/lifetime", lifetime)
    }

    /// `spec.serviceAccountToken.expirationSeconds`.
    pub fn expiration_seconds(self, seconds: u64) -> Spec {
        self.set("serviceAccountToken/expirationSeconds", seconds)
    }

    /// Removes the field at `path` (`/`-separated), if it is there.
    pub fn unset(mut self, path: &str) -> Spec {
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        let mut at = Some(&mut self.0);
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            at = at.and_then(|v| v.get_mut(part));
        }
        if let Some(object) = at.and_then(Value::as_object_mut) {
            object.remove(last);
        }
        self
    }

    /// Sets the field at `path` (`/`-separated, objects created on the way) to `value`.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Spec {
        let mut at = &mut self.0;
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !at[*part].is_object() {
                at[*part] = json!({});
            }
            at = &mut at[*part];
        }
        at[parts[parts.len() - 1]] = value.into();
        self
    }

    /// The spec as JSON.
    pub fn json(&self) -> Value {
        self.0.clone()
    }

    /// The whole OAuthClient `namespace/name` with this spec.
    pub fn object(&self, namespace: &str, name: &str) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": "OAuthClient",
            "metadata": {"name": name, "namespace": namespace},
            "spec": self.0,
        })
    }
}

impl From<Spec> for Value {
    fn from(spec: Spec) -> Value {
        spec.0
    }
}

/// A Secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretObject {
    name: String,
    data: BTreeMap<String, Vec<u8>>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    type_: Option<String>,
}

impl SecretObject {
    /// An empty Secret `name`.
    pub fn named(name: &str) -> SecretObject {
        SecretObject {
            name: name.to_owned(),
            ..SecretObject::default()
        }
    }

    /// The credentials Secret `creds` with `client_id` and `client_secret`.
    pub fn client_credentials(id: &str, secret: &str) -> SecretObject {
        SecretObject::named("creds")
            .entry("client_id", id)
            .entry("client_secret", secret)
    }

    /// A key with a text value.
    pub fn entry(self, key: &str, value: &str) -> SecretObject {
        self.bytes(key, value.as_bytes())
    }

    /// A key with any bytes.
    pub fn bytes(mut self, key: &str, value: &[u8]) -> SecretObject {
        self.data.insert(key.to_owned(), value.to_vec());
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> SecretObject {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// An annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> SecretObject {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Its `type`.
    pub fn type_(mut self, type_: &str) -> SecretObject {
        self.type_ = Some(type_.to_owned());
        self
    }

    /// The Secret in `namespace`, as JSON.
    pub fn json(&self, namespace: &str) -> Value {
        let data: BTreeMap<&String, String> = self
            .data
            .iter()
            .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.name, "namespace": namespace},
            "data": data,
        });
        if !self.labels.is_empty() {
            object["metadata"]["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            object["metadata"]["annotations"] = json!(self.annotations);
        }
        if let Some(type_) = &self.type_ {
            object["type"] = json!(type_);
        }
        object
    }

    /// Creates it in the double, in `namespace`.
    pub fn create(&self, api: &ApiServer, namespace: &str) -> Value {
        api.create(SECRETS, self.json(namespace))
    }
}

/// Creates the OAuthClient `namespace/name` with `spec` in the double.
pub fn create_client(api: &ApiServer, namespace: &str, name: &str, spec: &Spec) -> Value {
    api.create(OAUTHCLIENTS, spec.object(namespace, name))
}
