//! beast: a reconciliation operator for Docker that hosts CTF challenges.

pub mod manifest;
pub mod model;
