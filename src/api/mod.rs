//! The public API: the `OAuthClient` types and CRD, the label and annotation names, the status
//! conditions and the failure reasons. Nothing here does I/O.

pub mod conditions;
pub mod crd;
pub mod keys;
pub mod name;
pub mod reason;
