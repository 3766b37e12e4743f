//! Sources of desired state: watched directories ([`dir`]), a git branch checked out as one
//! ([`git`]) and the durable store of API writes ([`api_store`]).

pub mod api_store;
pub mod dir;
pub mod git;
