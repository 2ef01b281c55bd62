//! Client credentials, and the one set of rules for reading them, shared by the controller
//! (from the credentials Secret) and the `exchange` command (from flags, the environment or a
//! Secret in the file).
//!
//! Every value is used byte for byte (a trailing newline is part of the secret); a value that
//! is missing or empty is `CredentialsNotFound`, one that is not UTF-8 is `InvalidSpec`; every
//! message names where the value came from (the Secret key, the flag), never the value.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

use crate::api::crd::OAuthClientSpec;
use crate::api::reason::{Failure, Reason};
use crate::output::redact::Sensitive;

/// Client credentials. `client_id` is not a secret; `client_secret` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The client identifier.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Sensitive<String>,
}

/// Where a credential value comes from, as messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A key of the credentials Secret.
    Key {
        /// The Secret's name.
        secret: &'a str,
        /// The key.
        key: &'a str,
    },
    /// Anything else: a flag, a file, an environment variable (as written, e.g.
    /// `--client-secret-file /tmp/secret`).
    Other(&'a str),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Key { secret, key } => write!(f, "key {key} of Secret {secret}"),
            Origin::Other(what) => f.write_str(what),
        }
    }
}

/// One credential value by the shared rules: present (else `missing`), not empty, UTF-8.
pub fn value(
    bytes: Option<&[u8]>,
    origin: Origin<'_>,
    missing: impl FnOnce() -> Failure,
) -> Result<String, Failure> {
    let bytes = bytes.ok_or_else(missing)?;
    if bytes.is_empty() {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("{origin} is empty"),
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Failure::invalid_spec(format!("{origin} is not valid UTF-8")))
}

/// The data of a credentials Secret (or of the object holding a CA bundle), by key.
pub trait SecretData {
    /// The bytes of `key`, if the Secret has it.
    fn bytes(&self, key: &str) -> Option<&[u8]>;
}

impl SecretData for BTreeMap<String, ByteString> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(|v| v.0.as_slice())
    }
}

/// A ConfigMap's `data` (text values).
impl SecretData for BTreeMap<String, String> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(String::as_bytes)
    }
}

impl SecretData for BTreeMap<String, Vec<u8>> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(Vec::as_slice)
    }
}

/// Reads the credentials `spec` names from its credentials Secret (`None`: the Secret does not
/// exist in `namespace`). `spec.clientId`, when set, is the client_id.
pub fn from_secret(
    spec: &OAuthClientSpec,
    namespace: &str,
    secret: Option<&dyn SecretData>,
) -> Result<Credentials, Failure> {
    let reference = &spec.credentials_secret_ref;
    let name = reference.name.as_str();
    let Some(data) = secret else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("Secret {name} not found in namespace {namespace}"),
        ));
    };
    let key = |key: &str| {
        value(data.bytes(key), Origin::Key { secret: name, key }, || {
            Failure::new(
                Reason::CredentialsNotFound,
                format!("Secret {name} has no key {key}"),
            )
        })
    };
    let client_id = match &spec.client_id {
        Some(id) => id.clone(),
        None => key(&reference.client_id_key)?,
    };
    Ok(Credentials {
        client_id,
        client_secret: Sensitive::new(key(&reference.client_secret_key)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> OAuthClientSpec {
        let mut spec = serde_json::json!({"tokenUrl": "https://idp/t", "credentialsSecretRef": {"name": "creds"}});
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
        assert_eq!(c.client_secret.expose(), "s3cret\n", "byte for byte");

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
                Reason::InvalidSpec,
                "key client_secret of Secret creds is not valid UTF-8"
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
            (c.client_id.as_str(), c.client_secret.expose().as_str()),
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
}
