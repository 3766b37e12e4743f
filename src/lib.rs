//! beast: a reconciliation operator for Docker that hosts CTF challenges.
//!
//! Data flows one way: sources ([`source`]) → [`desired`] store → [`queue`] → [`reconcile`]
//! (which asks the pure [`plan`]ner) → [`runtime`]; the outcome lands in [`status`], which the
//! [`api`] serves. See `docs/architecture.md`. [`client`] holds the command line's API client verbs.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod build;
pub mod cli;
pub mod client;
pub mod containers;
pub mod control;
pub mod desired;
pub mod dryrun;
pub mod durable;
pub mod egress;
pub mod events;
pub mod import;
pub mod instances;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod netpool;
pub mod notify;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod ports;
pub mod probe;
pub mod queue;
pub mod reconcile;
pub mod runtime;
pub mod source;
pub mod status;
pub mod tasks;
pub mod web;
