//! The running process around the controller: health and metrics endpoints, the metrics
//! themselves, and leader election.

pub mod health;
pub mod leader;
pub mod metrics;
