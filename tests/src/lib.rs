//! Black-box end-to-end tests of the rmm tunnel, and the harness other crates' tests share.
//!
//! The library part holds test support only: [`pg`] gives each test a brand-new PostgreSQL
//! database on one container per test process, and a SQLite URL helper; [`server`] runs the
//! real `rmm-server` binary; [`agent`] is a scripted WebSocket agent; [`pki`] makes a CA and
//! server certificates; [`nginx`] runs nginx in front of a server. It must not know the
//! product's internals; tests drive the real binaries through their public faces.

pub mod agent;
pub mod nginx;
pub mod pg;
pub mod pki;
pub mod real_agent;
pub mod server;
pub mod terminal;
