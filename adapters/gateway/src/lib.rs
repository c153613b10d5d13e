//! rmm-server's live connections: the agents' WebSocket gateway ([`agents`], with the file
//! transfers over it), the broadcast of session output ([`streams`]) and the technicians'
//! session stream WebSocket ([`stream_ws`]).

pub mod agents;
pub mod stream_ws;
pub mod streams;
pub mod telemetry;
pub mod terminal_ws;
