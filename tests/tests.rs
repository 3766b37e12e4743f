//! Integration tests: one binary, topic files under `topics/`, the engine set up once.

mod common;
mod topics;
