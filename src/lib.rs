//! beast: a reconciliation operator for Docker that hosts CTF challenges.

pub mod model;
pub mod containers;
pub mod plan;
pub mod ports;
pub mod runtime;
pub mod desired;
pub mod status;
pub mod reconcile;
pub mod source;
pub mod api;
