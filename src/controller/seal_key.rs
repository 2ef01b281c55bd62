//! The operator's seal key: a Secret in the operator's own namespace, created on first start.
//!
//! `oauth-token-operator-seal-key` holds `key` (32 random bytes; new seals use it) and, during a
//! rotation, `previous` (seals made with it still verify and are re-sealed with `key` without a
//! new token). To rotate: move `key` to `previous`, put 32 new random bytes in `key`, restart the
//! operator; once every managed Secret is re-sealed (one reconcile each), drop `previous`.
//! Nothing else reads the Secret; the key never appears in logs, status or events.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::api::keys::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::output::mac::{SealKey, SealKeys};

/// The seal key Secret's name.
pub const SECRET_NAME: &str = concat!(name!(), "-seal-key");

/// Why the seal key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    /// Reading or creating the Secret failed.
    #[error("cannot read or create the seal key Secret {namespace}/{SECRET_NAME}: {source}")]
    Api {
        /// The operator's namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret holds no usable key.
    #[error(
        "the seal key Secret {namespace}/{SECRET_NAME} has no usable key (data.key must hold at least 32 bytes)"
    )]
    Unusable {
        /// The operator's namespace.
        namespace: String,
    },
}

/// Reads the seal keys from the operator's namespace, creating the Secret with a new random key
/// when there is none.
pub async fn load_or_create(kube: &Client, namespace: &str) -> Result<SealKeys, SealKeyError> {
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let failed = |source| SealKeyError::Api {
        namespace: namespace.to_owned(),
        source,
    };
    let secret = match api.get_opt(SECRET_NAME).await.map_err(failed)? {
        Some(secret) => secret,
        None => {
            let key: [u8; 32] = rand::random();
            let object = Secret {
                metadata: ObjectMeta {
                    name: Some(SECRET_NAME.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(
                        [(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into(),
                    ),
                    ..Default::default()
                },
                data: Some([("key".to_owned(), ByteString(key.to_vec()))].into()),
                ..Default::default()
            };
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            match api.create(&params, &object).await {
                Ok(created) => created,
                // Another replica created it meanwhile.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    api.get(SECRET_NAME).await.map_err(failed)?
                }
                Err(e) => return Err(failed(e)),
            }
        }
    };
    keys_of(&secret).ok_or_else(|| SealKeyError::Unusable {
        namespace: namespace.to_owned(),
    })
}

fn keys_of(secret: &Secret) -> Option<SealKeys> {
    let data = secret.data.as_ref()?;
    let key = |name: &str| data.get(name).and_then(|v| SealKey::new(v.0.clone()));
    Some(SealKeys {
        current: key("key")?,
        previous: key("previous"),
    })
}
