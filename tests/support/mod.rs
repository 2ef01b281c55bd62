//! Test support shared by the integration tests: token-endpoint emulators (and, for the
//! controller tests, the API-server double). Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

pub mod apiserver;
pub mod assertions;
pub mod builders;
pub mod control_plane;
pub mod harness;
pub mod logs;
pub mod mtls;
pub mod process;
pub mod proxy;
pub mod sts;
pub mod tls;
pub mod vendors;
