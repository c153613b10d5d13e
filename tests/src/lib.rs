//! Black-box end-to-end tests of the rmm tunnel, and the harness other crates' tests share.
//!
//! The library part holds test support only: [`pg`] gives each test a brand-new PostgreSQL
//! database on one container per test process, and a SQLite URL helper; [`pg_own`] a
//! container of one test's own to kill and restart; [`server`] runs the real `rmm-server`
//! binary; [`agent`] is a scripted WebSocket agent; [`pki`] makes a CA and server
//! certificates; [`nginx`] runs nginx in front of a server; [`tcp_proxy`] cuts the network
//! between two processes; [`ops`] holds tunnel API calls the fault tests share. It must not
//! know the product's internals; tests drive the real binaries through their public faces.

pub mod agent;
pub mod cluster;
pub mod nginx;
pub mod ops;
pub mod pg;
pub mod pg_own;
pub mod pki;
pub mod procfs;
pub mod real_agent;
pub mod reliability;
pub mod server;
pub mod tcp_proxy;
pub mod terminal;

/// Deterministic pseudo-random bytes (xorshift64 from `seed`), for files too large to keep a
/// fixture of: the same `seed` and `len` give the same bytes in every test.
#[must_use]
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
