//! ClusterOAuthClients in the day-2 commands: the NAME forms that name one
//! (`clusteroauthclient/NAME`, `clusteroauthclients/NAME`, `coac/NAME`, or a plain NAME with
//! `--cluster`), reading them, and the OAuthClient view of one (its metadata, spec and
//! status, without a namespace) that the commands' OAuthClient code reads.

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::kube_config::{CliError, Connection, checked_name};
use crate::api::cluster_crd::ClusterOAuthClient;
use crate::api::crd::OAuthClient;

/// The resource words before `/` that name a ClusterOAuthClient, as kubectl spells them.
const CLUSTER_KINDS: [&str; 3] = ["clusteroauthclient", "clusteroauthclients", "coac"];

/// The resource words before `/` that name an OAuthClient.
const CLIENT_KINDS: [&str; 3] = ["oauthclient", "oauthclients", "oac"];

/// What a NAME argument names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Named<'a> {
    /// An OAuthClient in the connection's namespace.
    Client(&'a str),
    /// A ClusterOAuthClient.
    Cluster(&'a str),
}

/// What `name` names: `clusteroauthclient/NAME` (or `clusteroauthclients/`, `coac/`) and, with
/// `cluster` (`--cluster`), a plain NAME are a ClusterOAuthClient; `oauthclient/NAME`
/// (or `oauthclients/`, `oac/`) and a plain NAME otherwise an OAuthClient. The name itself is
/// checked ([`checked_name`]) before any request.
pub(super) fn named(name: &str, cluster: bool) -> Result<Named<'_>, CliError> {
    let (cluster, name) = match name.split_once('/') {
        Some((kind, rest)) if CLUSTER_KINDS.contains(&kind.to_ascii_lowercase().as_str()) => {
            (true, rest)
        }
        Some((kind, rest)) if CLIENT_KINDS.contains(&kind.to_ascii_lowercase().as_str()) => {
            if cluster {
                return Err(CliError::usage(format!(
                    "--cluster names a ClusterOAuthClient, not {kind}/{rest}; nothing was read"
                )));
            }
            (false, rest)
        }
        _ => (cluster, name),
    };
    if cluster {
        Ok(Named::Cluster(checked_name("ClusterOAuthClient", name)?))
    } else {
        Ok(Named::Client(checked_name("OAuthClient", name)?))
    }
}

/// How the commands name a ClusterOAuthClient in what they print.
pub(super) fn label(name: &str) -> String {
    format!("clusteroauthclient/{name}")
}

/// The ClusterOAuthClient `name` (a name [`named`] checked), if it exists.
pub(super) async fn get_opt(
    connection: &Connection,
    name: &str,
) -> Result<Option<ClusterOAuthClient>, CliError> {
    let name = checked_name("ClusterOAuthClient", name)?;
    let api: Api<ClusterOAuthClient> = Api::all(connection.client.clone());
    api.get_opt(name)
        .await
        .map_err(|e| CliError::api(e, &format!("ClusterOAuthClient {name}"), &connection.url))
}

/// The ClusterOAuthClient `name`; exit 1 when it does not exist.
pub(super) async fn get(
    connection: &Connection,
    name: &str,
) -> Result<ClusterOAuthClient, CliError> {
    get_opt(connection, name)
        .await?
        .ok_or_else(|| CliError::not_found(format!("ClusterOAuthClient {name} not found")))
}

/// Every ClusterOAuthClient, by name.
pub(super) async fn list(connection: &Connection) -> Result<Vec<ClusterOAuthClient>, CliError> {
    let api: Api<ClusterOAuthClient> = Api::all(connection.client.clone());
    let mut clients = api
        .list(&ListParams::default())
        .await
        .map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 404 => CliError::usage(format!(
                "the ClusterOAuthClient CRD (clusteroauthclients.oauth.token-operator.dev) is not installed in the cluster at {}: kubectl apply -f crds/clusteroauthclient.yaml",
                connection.url
            )),
            _ => CliError::api(e, "ClusterOAuthClients", &connection.url),
        })?
        .items;
    clients.sort_by_key(|c| c.name_any());
    Ok(clients)
}

/// `cluster` as an OAuthClient without a namespace: its metadata (name, uid, annotations), its
/// spec and its status without `targets`, for the code that reads an OAuthClient's.
pub(super) fn as_client(cluster: &ClusterOAuthClient) -> OAuthClient {
    let mut client = OAuthClient::new(&cluster.name_any(), cluster.spec.client.clone());
    client.metadata = cluster.metadata.clone();
    client.metadata.namespace = None;
    client.status = cluster.status.as_ref().map(|s| s.client.clone());
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_forms_name_a_cluster_oauth_client() {
        for form in [
            "clusteroauthclient/vendor",
            "ClusterOAuthClients/vendor",
            "coac/vendor",
        ] {
            assert_eq!(
                named(form, false).unwrap(),
                Named::Cluster("vendor"),
                "{form}"
            );
        }
        assert_eq!(named("vendor", true).unwrap(), Named::Cluster("vendor"));
        assert_eq!(
            named("coac/vendor", true).unwrap(),
            Named::Cluster("vendor")
        );
        assert_eq!(named("vendor", false).unwrap(), Named::Client("vendor"));
        assert_eq!(
            named("oauthclient/vendor", false).unwrap(),
            Named::Client("vendor")
        );
    }

    #[test]
    fn names_that_are_no_names_are_refused() {
        for hostile in [
            "clusteroauthclient/../x",
            "coac/",
            "coac/a/b",
            "clusteroauthclient/%2e%2e",
            "pods/x",
        ] {
            assert_eq!(named(hostile, false).unwrap_err().code, 2, "{hostile}");
        }
        assert!(named("oauthclient/x", true).is_err());
    }
}
