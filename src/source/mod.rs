//! Sources of desired state. Today: watched directories ([`dir`]); the API store comes later.

pub mod dir;
