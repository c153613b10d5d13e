//! rmm-server's live connections: the agents' WebSocket gateway ([`agents`]), the file
//! transfer links over it ([`files`]), the broadcast of session output ([`streams`]) and the
//! technicians' session stream WebSocket ([`stream_ws`]).

pub mod agents;
pub mod files;
pub mod stream_ws;
pub mod streams;
