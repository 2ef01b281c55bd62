//! The HTTP client an exchange goes through: the default trust's, or the one of the bundle
//! `spec.caBundleRef` names — read with one GET of its ConfigMap or Secret when the client's
//! memo does not hold a client for that reference at the object's current resourceVersion.
//! The bundle's data is never kept: the pooled client built from it is (and the pool shares
//! it with every OAuthClient whose bundle holds the same certificates).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;

use super::Error;
use super::observe::Observation;
use crate::api::crd::{CaBundleKind, CaBundleRef, OAuthClient};
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::memo::{Change, TrustMemo};
use crate::oauth::credentials::SecretData;
use crate::oauth::pool::TrustedClient;
use crate::oauth::trust::{self, Trust};

/// The client to use, and the resourceVersion of the bundle's object it came from.
#[derive(Clone, Debug)]
pub struct LoadedTrust {
    /// resourceVersion of the object (None: no `caBundleRef`, or the object does not exist).
    pub resource_version: Option<String>,
    /// The client, or why the bundle cannot be used.
    pub client: Result<TrustedClient, Failure>,
}

/// The resourceVersion of the object `reference` names, as the watch caches show it.
pub fn cached_version(
    ctx: &Context,
    namespace: &str,
    reference: Option<&CaBundleRef>,
) -> Option<String> {
    let reference = reference?;
    match reference.kind {
        CaBundleKind::ConfigMap => ctx.config_maps.resource_version(namespace, &reference.name),
        CaBundleKind::Secret => ctx.secrets.resource_version(namespace, &reference.name),
    }
}

/// The client of the observed spec (from the memo when it is current, else read and built;
/// what was learned goes to the observation).
pub async fn load(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
) -> Result<LoadedTrust, Error> {
    let transport = ctx.shared.exchanger.transport();
    let reference = observation
        .settings
        .as_ref()
        .ok()
        .and_then(|s| s.ca_bundle.clone());
    let Some(reference) = reference else {
        return Ok(LoadedTrust {
            resource_version: None,
            client: Ok(transport.default_client().clone()),
        });
    };
    let current = observation.memo.trust.as_ref().filter(|memo| {
        memo.reference == reference && Some(&memo.resource_version) == observation.trust_rv.as_ref()
    });
    if let Some(memo) = current {
        return Ok(LoadedTrust {
            resource_version: Some(memo.resource_version.clone()),
            client: Ok(memo.client.clone()),
        });
    }
    let namespace = client.namespace().unwrap_or_default();
    let (resource_version, data) = read(ctx, &namespace, &reference).await?;
    let built = trust::from_object(
        &reference,
        &namespace,
        data.as_ref().map(|d| d as &dyn SecretData),
    )
    .and_then(|bundle| transport.client(&Trust::Bundle(bundle), &namespace));
    observation.learned.trust = match (&built, &resource_version) {
        (Ok(built), Some(rv)) => Change::Set(TrustMemo {
            reference,
            resource_version: rv.clone(),
            client: built.clone(),
        }),
        _ => Change::Clear,
    };
    Ok(LoadedTrust {
        resource_version,
        client: built,
    })
}

/// The object's resourceVersion and the value of the reference's key (`None`: no object; an
/// empty map: no such key).
async fn read(
    ctx: &Context,
    namespace: &str,
    reference: &CaBundleRef,
) -> Result<(Option<String>, Option<BTreeMap<String, Vec<u8>>>), Error> {
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
        None => (None, None),
        Some((rv, value)) => (
            rv,
            Some(value.map(|v| (key.to_owned(), v)).into_iter().collect()),
        ),
    })
}
