//! The trust an exchange verifies its endpoint against: the default trust, or the bundle
//! `spec.caBundleRef` names — read with one GET of its ConfigMap or Secret when the client's
//! memory does not hold a client for that reference at the object's current resourceVersion.
//! The bundle's data is never kept: the pooled client built from it is (and the pool shares
//! it with every OAuthClient whose bundle holds the same certificates).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;

use super::error::Error;
use super::observe::Snapshot;
use crate::api::crd::{CaBundleKind, CaBundleRef, OAuthClient};
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::memory::{Change, TrustHandle};
use crate::oauth::credentials::SecretData;
use crate::oauth::transport::HttpClient;
use crate::oauth::transport::trust::{self, Trust};

/// The HTTP client of the trust (without an identity), and the resourceVersion of the bundle's
/// object it came from.
#[derive(Clone, Debug)]
pub struct LoadedTrust {
    /// resourceVersion of the object (None: no `caBundleRef`, or the object does not exist).
    pub resource_version: Option<String>,
    /// The client, or why the bundle cannot be used.
    pub client: Result<HttpClient, Failure>,
    /// What the client's memory keeps of it.
    pub handle: Change<TrustHandle>,
}

/// The client of the observed spec's trust: the one the memory holds when it is current, else
/// the bundle read and its client built.
pub async fn load(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
) -> Result<LoadedTrust, Error> {
    let transport = &ctx.shared.transport;
    let namespace = client.namespace().unwrap_or_default();
    let reference = seen
        .settings
        .as_ref()
        .ok()
        .and_then(|s| s.ca_bundle.clone());
    let Some(reference) = reference else {
        return Ok(LoadedTrust {
            resource_version: None,
            client: transport.client(&Trust::Default, None, &namespace),
            handle: Change::Keep,
        });
    };
    let current = seen.memory.handles.trust.as_ref().filter(|held| {
        held.reference == reference && Some(&held.resource_version) == seen.trust_rv.as_ref()
    });
    if let Some(held) = current {
        return Ok(LoadedTrust {
            resource_version: Some(held.resource_version.clone()),
            client: Ok(held.client.clone()),
            handle: Change::Keep,
        });
    }
    let BundleObject {
        resource_version,
        data,
    } = read(ctx, &namespace, &reference).await?;
    let built = trust::from_object(
        &reference,
        &namespace,
        data.as_ref().map(|d| d as &dyn SecretData),
    )
    .and_then(|bundle| transport.client(&Trust::Bundle(bundle), None, &namespace));
    let handle = match (&built, &resource_version) {
        (Ok(built), Some(rv)) => Change::Set(TrustHandle {
            reference,
            resource_version: rv.clone(),
            client: built.clone(),
        }),
        _ => Change::Clear,
    };
    Ok(LoadedTrust {
        resource_version,
        client: built,
        handle,
    })
}

/// The bundle's object as read.
struct BundleObject {
    /// Its resourceVersion (None: no object).
    resource_version: Option<String>,
    /// The value of the reference's key (`None`: no object; an empty map: no such key).
    data: Option<BTreeMap<String, Vec<u8>>>,
}

/// Reads the object the reference names.
async fn read(
    ctx: &Context,
    namespace: &str,
    reference: &CaBundleRef,
) -> Result<BundleObject, Error> {
    let kube = ctx.shared.kube.clone();
    let key = reference.key.as_str();
    let found = match reference.kind {
        CaBundleKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(kube, namespace);
            let map = api
                .get_opt(&reference.name)
                .await
                .map_err(Error::ReadCaBundle)?;
            map.map(|map| {
                let value = map
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key).map(|v| v.as_bytes().to_vec()))
                    .or_else(|| {
                        map.binary_data
                            .as_ref()
                            .and_then(|d| d.get(key).map(|v| v.0.clone()))
                    });
                (map.resource_version(), value)
            })
        }
        CaBundleKind::Secret => {
            let api: Api<Secret> = Api::namespaced(kube, namespace);
            let secret = api
                .get_opt(&reference.name)
                .await
                .map_err(Error::ReadCaBundle)?;
            secret.map(|secret| {
                let value = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key).map(|v| v.0.clone()));
                (secret.resource_version(), value)
            })
        }
    };
    Ok(match found {
        None => BundleObject {
            resource_version: None,
            data: None,
        },
        Some((resource_version, value)) => BundleObject {
            resource_version,
            data: Some(value.map(|v| (key.to_owned(), v)).into_iter().collect()),
        },
    })
}
