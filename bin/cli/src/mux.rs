//! The exec mux: what ssh's ControlMaster is to ssh, for `rmm exec`.
//!
//! # Design
//!
//! A short command through `rmm exec` used to cost a process start, loading the TLS roots,
//! building an HTTP client, `GET /api/v1/agents`, the session's status, a TCP connection and
//! a WebSocket upgrade (with a replay) for the session's stream, and only then the command's
//! own round trip. The mux is a long-lived local process (`rmm mux`, hidden) that keeps the
//! HTTP connections, the agents it resolved, the remembered sessions and each session's
//! stream WebSocket warm, so one `rmm exec` costs a process start plus one round trip.
//!
//! - **One mux per server, config folder and login**: its Unix socket is
//!   `<config>/rmm/mux/<digest>.sock` (or in `RMM_MUX_DIR`), the digest of rmm's version,
//!   the server URL, the CA file, the config folder and the token ([`MuxPaths`]). A new login
//!   (a new token) gets a new mux; the old one ends when idle.
//! - **Private**: the folder must be a real folder of ours with mode 0700 and the socket a
//!   socket of ours with mode 0600; `rmm exec` refuses anything else (one line saying what
//!   is wrong and how to fix it, then it runs the command directly), and the mux checks each
//!   connecting process's uid (`SO_PEERCRED`) and drops others.
//! - **Started on first use**: an `rmm exec` that finds no mux starts one (detached: its own
//!   process group, no stdio, the token in its environment) and waits up to
//!   [`client::START_WAIT`] for its socket; otherwise, it runs the command directly.
//! - **Gone after an idle time**: with no exec for `--idle-secs` (`RMM_MUX_IDLE_SECS`, default
//!   600 s), or as soon as its socket is removed or replaced, the mux exits.
//! - **The same command as before**: the mux runs exactly what `rmm exec` runs
//!   ([`crate::exec::run_job`]: stream first, reconcile with stored output by byte count, the
//!   same endings and exit codes), with its output written to the exec's socket instead of
//!   its own stdout/stderr, byte for byte ([`crate::muxwire`]'s frames), and its Ctrl-C
//!   coming from that socket. A session opened for one command is closed after it, as
//!   before: the mux keeps warm only what the user kept open (`rmm open`, `exec --keep`),
//!   so it never holds an agent's one tunnel on its own.
//! - **Never hangs**: the exec sends its request, the mux answers "accepted", and only then
//!   does the exec say "go"; no answer within [`client::ACCEPT_WAIT`] and the exec runs the
//!   command directly (nothing ran). A mux that ends while the command runs is said in one
//!   line (exit 255); an exec that goes away cancels its command (as a Ctrl-C). A token
//!   that expired or was revoked is the same one-line error as without the mux; a session
//!   closed under the mux, or a server that restarted, is found stale on first use and looked
//!   up again (`run_job`).
//! - **Off**: `rmm exec --no-mux`, `RMM_MUX=off`, and whenever rmm's standard input carries
//!   input for the command (stdin is forwarded on the direct path).

pub(crate) mod client;
mod serve;

pub use serve::{MuxArgs, serve};

use crate::muxwire::MuxPaths;
