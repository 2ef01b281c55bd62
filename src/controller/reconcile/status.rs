//! Step 6, write the status: server-side apply of the whole status, only when it changed.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::Error;
use super::retries::with_retries;
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::api::keys::FIELD_MANAGER;
use crate::api::name::NamespacedName;
use crate::controller::context::Context;
use crate::controller::own_writes::WriteOf;

/// Applies `desired` when it differs from `current`. An OAuthClient deleted meanwhile has
/// nothing to report on.
pub async fn write(
    client: &OAuthClient,
    ctx: &Context,
    current: &OAuthClientStatus,
    desired: &OAuthClientStatus,
) -> Result<(), Error> {
    if desired == current {
        return Ok(());
    }
    let namespace = client.namespace().unwrap_or_default();
    let api: Api<OAuthClient> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
    let body = json!({
        "apiVersion": OAuthClient::api_version(&()),
        "kind": OAuthClient::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    let name = client.name_any();
    let key = NamespacedName::new(&namespace, &name);
    let write = ctx.begin_write(WriteOf::Status, &key, &key);
    let result = with_retries(|| api.patch_status(&name, &params, &patch)).await;
    write.end(
        result
            .as_ref()
            .ok()
            .and_then(|c| c.metadata.resource_version.as_deref()),
    );
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::WriteStatus(e)),
    }
}
