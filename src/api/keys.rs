//! The names the operator reads and writes on Kubernetes objects: labels, annotations, the
//! label selector of managed Secrets and the field manager. All are built from the API group
//! (`oauth.token-operator.dev`) or the operator's name, never retyped.

/// Prefix of every label and annotation the operator owns (`oauth.token-operator.dev/`).
pub const PREFIX: &str = concat!(group!(), "/");

/// Label on every managed Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value: the operator's name.
pub const MANAGED_BY_VALUE: &str = name!();
/// The label selector of managed Secrets.
pub const MANAGED_SELECTOR: &str = concat!("app.kubernetes.io/managed-by=", name!());

/// Label naming the OAuthClient (see [`crate::output::secret::client_label_value`]).
pub const CLIENT_LABEL: &str = concat!(group!(), "/client");
/// Label naming the ClusterOAuthClient on the Secrets it writes into the namespaces it selects,
/// and on the OAuthClient that holds its token in the cluster resource namespace.
pub const CLUSTER_CLIENT_LABEL: &str = concat!(group!(), "/cluster-client");
/// The label selector of what ClusterOAuthClients write.
pub const CLUSTER_CLIENT_SELECTOR: &str = concat!(group!(), "/cluster-client");
/// When the token was issued (RFC 3339).
pub const ISSUED_AT_ANNOTATION: &str = concat!(group!(), "/issued-at");
/// When the token expires (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = concat!(group!(), "/expires-at");
/// Salted fingerprint of the spec and credentials the token was issued for.
pub const FINGERPRINT_ANNOTATION: &str = concat!(group!(), "/fingerprint");
/// Hash of the target settings (type, labels, annotations, template) the Secret was rendered
/// with; it holds nothing secret.
pub const TARGET_HASH_ANNOTATION: &str = concat!(group!(), "/target-hash");
/// The seal of what the operator wrote into the managed Secret (see [`crate::output::mac`]).
pub const MAC_ANNOTATION: &str = concat!(group!(), "/mac");
/// Annotation on an OAuthClient that forces one exchange.
pub const REFRESH_REQUESTED_ANNOTATION: &str = concat!(group!(), "/refresh-requested-at");

/// Annotation on a ServiceAccount listing the audiences (comma-separated, surrounding spaces
/// ignored) for which the operator may request its token (`clientAuthMethod:
/// ServiceAccountToken`): the ServiceAccount's opt-in.
pub const TOKEN_AUDIENCES_ANNOTATION: &str = concat!(group!(), "/token-audiences");

/// Annotation on a ServiceAccount listing the token endpoints its tokens may be sent to
/// (comma-separated origins `scheme://host[:port]`): the other half of its opt-in.
pub const TOKEN_ENDPOINTS_ANNOTATION: &str = concat!(group!(), "/token-endpoints");

/// The field manager of every write.
pub const FIELD_MANAGER: &str = name!();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::crd::GROUP;

    #[test]
    fn every_name_is_built_from_the_group_or_the_operator_name() {
        assert_eq!(PREFIX, format!("{GROUP}/"));
        for key in [
            CLIENT_LABEL,
            CLUSTER_CLIENT_LABEL,
            ISSUED_AT_ANNOTATION,
            EXPIRES_AT_ANNOTATION,
            FINGERPRINT_ANNOTATION,
            TARGET_HASH_ANNOTATION,
            MAC_ANNOTATION,
            REFRESH_REQUESTED_ANNOTATION,
            TOKEN_AUDIENCES_ANNOTATION,
            TOKEN_ENDPOINTS_ANNOTATION,
        ] {
            assert!(key.starts_with(PREFIX), "{key}");
        }
        assert_eq!(MANAGED_BY_VALUE, crate::NAME);
        assert_eq!(FIELD_MANAGER, crate::NAME);
        assert_eq!(
            MANAGED_SELECTOR,
            format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
        );
    }
}
