//! The start-up check: the cluster is reachable, serves OAuthClients, and grants every right the
//! controller will use, each asked of the API server with a SelfSubjectAccessReview (which every
//! authenticated user may create), so that a missing rule is named at start instead of showing
//! up later as a watch that retries forever or a write refused with 403.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

use super::StartError;
use crate::api::crd::OAuthClient;

/// One right the controller needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Right {
    /// `get`, `list`, `watch`, `create`, `patch`.
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, e.g. `secrets`.
    pub resource: &'static str,
    /// The subresource, e.g. `status`.
    pub subresource: Option<&'static str>,
    /// The namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// The object's name, for a right granted for one object only.
    pub name: Option<String>,
}

impl std::fmt::Display for Right {
    /// `patch oauthclients/status (oauth.token-operator.dev) in namespace a`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        if !self.group.is_empty() {
            write!(f, " ({})", self.group)?;
        }
        if let Some(name) = &self.name {
            write!(f, " named {name}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " in all namespaces"),
        }
    }
}

/// What the controller is configured to do, as far as its rights go.
#[derive(Clone, Debug)]
pub struct Needs<'a> {
    /// `--namespaces` (empty: all).
    pub namespaces: &'a [String],
    /// The operator's own namespace (the seal key Secret).
    pub own_namespace: &'a str,
    /// `--allow-service-account-tokens`.
    pub service_account_tokens: bool,
    /// With `--leader-elect`: the Lease's namespace.
    pub lease_namespace: Option<&'a str>,
    /// `--metrics-secure`: the token and access reviews of the callers of `/metrics`.
    pub metrics_reviews: bool,
    /// With `--allow-service-account-tokens`, when it runs as a ServiceAccount: that one
    /// (namespace, name), whose token it requests once at start to learn the API server's
    /// audiences.
    pub own_service_account: Option<(&'a str, &'a str)>,
    /// With `--enable-cluster-clients`: the cluster resource namespace.
    pub cluster_clients: Option<&'a str>,
}

/// Every right the controller uses, configured as `needs` says (the chart's RBAC grants exactly
/// these; `tests/rbac.rs` and the real-cluster suite prove it).
pub fn rights(needs: &Needs<'_>) -> Vec<Right> {
    let scopes: Vec<Option<String>> = if needs.namespaces.is_empty() {
        vec![None]
    } else {
        needs.namespaces.iter().cloned().map(Some).collect()
    };
    let mut rights = Vec::new();
    let right = |verb, group, resource, subresource, namespace: &Option<String>| Right {
        verb,
        group,
        resource,
        subresource,
        namespace: namespace.clone(),
        name: None,
    };
    for scope in &scopes {
        for verb in ["get", "list", "watch"] {
            rights.push(right(
                verb,
                crate::api::crd::GROUP,
                "oauthclients",
                None,
                scope,
            ));
        }
        rights.push(right(
            "patch",
            crate::api::crd::GROUP,
            "oauthclients",
            Some("status"),
            scope,
        ));
        for verb in ["get", "list", "watch", "create", "patch"] {
            rights.push(right(verb, "", "secrets", None, scope));
        }
        for verb in ["get", "list", "watch"] {
            rights.push(right(verb, "", "configmaps", None, scope));
        }
        rights.push(right("create", "events.k8s.io", "events", None, scope));
        if needs.service_account_tokens {
            for verb in ["get", "list", "watch"] {
                rights.push(right(verb, "", "serviceaccounts", None, scope));
            }
            rights.push(right("create", "", "serviceaccounts", Some("token"), scope));
        }
    }
    let own = Some(needs.own_namespace.to_owned());
    rights.push(Right {
        name: Some(super::seal_key::SECRET_NAME.to_owned()),
        ..right("get", "", "secrets", None, &own)
    });
    rights.push(right("create", "", "secrets", None, &own));
    if let (true, Some((namespace, name))) =
        (needs.service_account_tokens, needs.own_service_account)
    {
        rights.push(Right {
            verb: "create",
            group: "",
            resource: "serviceaccounts",
            subresource: Some("token"),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
        });
    }
    if needs.metrics_reviews {
        rights.push(right(
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            None,
            &None,
        ));
        rights.push(right(
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            None,
            &None,
        ));
    }
    if let Some(namespace) = needs.cluster_clients {
        let all = None;
        for verb in ["list", "watch"] {
            rights.push(right(
                verb,
                crate::api::crd::GROUP,
                "clusteroauthclients",
                None,
                &all,
            ));
        }
        rights.push(right(
            "patch",
            crate::api::crd::GROUP,
            "clusteroauthclients",
            Some("status"),
            &all,
        ));
        for verb in ["list", "watch"] {
            rights.push(right(verb, "", "namespaces", None, &all));
        }
        rights.push(right("delete", "", "secrets", None, &all));
        let resources = Some(namespace.to_owned());
        for verb in ["create", "patch"] {
            rights.push(right(
                verb,
                crate::api::crd::GROUP,
                "oauthclients",
                None,
                &resources,
            ));
        }
    }
    if let Some(lease_namespace) = needs.lease_namespace {
        let lease = Some(lease_namespace.to_owned());
        for verb in ["get", "create", "patch"] {
            rights.push(Right {
                name: (verb != "create").then(|| crate::NAME.to_owned()),
                ..right(verb, "coordination.k8s.io", "leases", None, &lease)
            });
        }
    }
    rights
}

/// Asks the API server whether the operator's identity holds `right`.
async fn allowed(client: &Client, right: &Right) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(right.verb.to_owned()),
                group: Some(right.group.to_owned()),
                resource: Some(right.resource.to_owned()),
                subresource: right.subresource.map(str::to_owned),
                namespace: right.namespace.clone(),
                name: right.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Checks that the cluster is reachable and serves OAuthClients, and that every right of
/// [`rights`] is granted; a missing right is named in [`StartError::MissingRights`].
pub async fn preflight(client: &Client, needs: &Needs<'_>, url: &str) -> Result<(), StartError> {
    let unreachable = |source| StartError::Unreachable {
        url: url.to_owned(),
        source,
    };
    // Reachable, and the CRD installed: one list of at most one OAuthClient where the
    // controller will watch them.
    let scope = needs.namespaces.first();
    let one = ListParams::default().limit(1);
    match scoped::<OAuthClient>(client, scope)
        .list_metadata(&one)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(StartError::CrdMissing),
        // Forbidden: the rights check below says exactly what is missing.
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        Err(e) => return Err(unreachable(e)),
    }
    let mut missing = Vec::new();
    for right in rights(needs) {
        match allowed(client, &right).await {
            Ok(true) => {}
            Ok(false) => missing.push(right.to_string()),
            // An API server that does not answer access reviews: the lists below still find a
            // missing read right.
            Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404) => {
                return lists_allowed(client, needs).await;
            }
            Err(e) => return Err(unreachable(e)),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartError::MissingRights(missing))
    }
}

/// The fallback check: the controller may list OAuthClients, Secrets and ConfigMaps (each
/// watched, metadata only) in every scope.
async fn lists_allowed(client: &Client, needs: &Needs<'_>) -> Result<(), StartError> {
    let scopes: Vec<Option<&String>> = if needs.namespaces.is_empty() {
        vec![None]
    } else {
        needs.namespaces.iter().map(Some).collect()
    };
    for scope in scopes {
        let one = ListParams::default().limit(1);
        let forbidden = |kind: &'static str, e: kube::Error| match e {
            kube::Error::Api(e) if e.code == 403 => StartError::MissingRights(vec![format!(
                "list {kind}{}: {}",
                scope
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default(),
                e.message
            )]),
            source => StartError::Unreachable {
                url: String::new(),
                source,
            },
        };
        scoped::<OAuthClient>(client, scope)
            .list_metadata(&one)
            .await
            .map_err(|e| forbidden("oauthclients", e))?;
        scoped::<Secret>(client, scope)
            .list_metadata(&one)
            .await
            .map_err(|e| forbidden("secrets", e))?;
        scoped::<ConfigMap>(client, scope)
            .list_metadata(&one)
            .await
            .map_err(|e| forbidden("configmaps", e))?;
    }
    Ok(())
}

fn scoped<K>(client: &Client, namespace: Option<&String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(needs: &Needs<'_>) -> Vec<String> {
        rights(needs).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_rights_follow_the_configuration() {
        let wide = Needs {
            namespaces: &[],
            own_namespace: "ops",
            service_account_tokens: false,
            lease_namespace: None,
            metrics_reviews: false,
            own_service_account: None,
            cluster_clients: None,
        };
        let all = labels(&wide);
        assert!(all.contains(
            &"patch oauthclients/status (oauth.token-operator.dev) in all namespaces".to_owned()
        ));
        assert!(all.contains(&"create events (events.k8s.io) in all namespaces".to_owned()));
        assert!(all.contains(
            &"get secrets named oauth-token-operator-seal-key in namespace ops".to_owned()
        ));
        assert!(
            !all.iter()
                .any(|r| r.contains("serviceaccounts") || r.contains("leases"))
        );

        let namespaces = ["a".to_owned(), "b".to_owned()];
        let scoped = Needs {
            namespaces: &namespaces,
            service_account_tokens: true,
            lease_namespace: Some("ops"),
            own_service_account: Some(("ops", "operator")),
            metrics_reviews: true,
            ..wide
        };
        let all = labels(&scoped);
        // Nothing cluster-wide but the reviews of /metrics (cluster-scoped kinds).
        assert!(
            all.iter()
                .filter(|r| r.contains("all namespaces"))
                .all(|r| r.contains("reviews"))
        );
        for ns in ["a", "b"] {
            assert!(all.contains(&format!("create serviceaccounts/token in namespace {ns}")));
            assert!(all.contains(&format!("watch secrets in namespace {ns}")));
        }
        assert!(
            all.contains(
                &"patch leases (coordination.k8s.io) named oauth-token-operator in namespace ops"
                    .to_owned()
            )
        );
        assert!(all.contains(&"create leases (coordination.k8s.io) in namespace ops".to_owned()));
        assert!(
            all.contains(
                &"create serviceaccounts/token named operator in namespace ops".to_owned()
            )
        );
    }
}
