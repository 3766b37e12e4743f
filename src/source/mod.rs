//! Sources of desired state: watched directories ([`dir`]) and the durable store of API writes
//! ([`api_store`]).

pub mod api_store;
pub mod dir;
