//! The instruments of the benchmark suite (`bench/run.sh`): figures side by side with OpenSSH,
//! and an agent simulator.
//!
//! Benchmarks are not tests: nothing here asserts a target. Each instrument measures one
//! thing against a running `rmm-server` (and, for the baselines, a local `sshd`) and writes
//! a [`measure::Measurement`] as JSON; [`report`] turns a folder of them into BENCHMARKS.md.
//!
//! Everything talks to the loopback range only: [`sim`] refuses other addresses, and the
//! HTTP client is only ever given the server's `127.0.0.1` URL by run.sh. Every loop is
//! bounded in count and in time.
//!
//! This crate knows the server only by its public faces: the HTTP API, the session stream
//! WebSocket and the agents' WebSocket, spoken with the wire types of
//! [`rmm_protocol`] so the simulator says exactly what real agents say.

pub mod agent_idle;
pub mod api;
pub mod attack;
pub mod bare_ws;
pub mod cluster_fleet;
pub mod limits;
pub mod measure;
pub mod procfs;
pub mod reliability;
pub mod report;
pub mod sim;
pub mod soak;
pub mod storm_check;
pub mod terminal;
pub mod watchers;
