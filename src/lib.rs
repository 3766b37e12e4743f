//! beast: a reconciliation operator for Docker that hosts CTF challenges.

pub mod backoff;
pub mod model;
pub mod queue;
