//! rmm-server's wiring: the production ports over one store ([`wiring`]) and the system
//! clock and id generator ([`system`]). `main.rs` holds the configuration and the commands.

pub mod access_log;
pub mod admission;
pub mod front_door;
pub mod http_server;
pub mod limits;
pub mod metrics;
pub mod read_ahead;
pub mod system;
pub mod tls;
pub mod wiring;
