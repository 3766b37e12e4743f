//! Integration tests: one binary, topic files under `topics/`, the engine set up once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod common;
mod topics;
