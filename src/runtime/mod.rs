//! The running process around the controller: health and metrics endpoints (TLS, and who may
//! read `/metrics`), the metrics themselves, and leader election.

pub mod client_gauges;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod metrics_auth;
pub mod tls;
