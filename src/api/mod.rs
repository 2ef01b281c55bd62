//! The public API: the `OAuthClient` and `ClusterOAuthClient` types and CRDs, the label and annotation names, the status
//! conditions and the failure reasons. Nothing here does I/O.

pub mod cluster_crd;
pub mod conditions;
pub mod crd;
pub mod keys;
pub mod name;
pub mod reason;
