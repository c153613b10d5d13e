//! Adapters of the rmm tunnel: everything that touches the outside world. The HTTP API
//! (poem-openapi), the agents' WebSocket endpoint and live-connection gateway, the SQL stores,
//! JWTs, password and key hashing, the wire protocol's serde types, and the agent runtime.
//!
//! Wire types (DTOs, protocol messages) live here and nowhere else; they convert to domain
//! types explicitly at the boundary.

pub mod agent;
pub mod client;
pub mod client_ws;
pub mod credentials;
pub mod files;
pub mod gateway;
pub mod http;
pub mod protocol;
pub mod server;
pub mod store;
pub mod streams;
pub mod system;
