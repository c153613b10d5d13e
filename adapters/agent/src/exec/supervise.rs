//! The command supervisor (Linux): a tiny process between the agent and a command's shell,
//! so that no command outlives an agent that is killed outright (SIGKILL, the OOM killer, a
//! crash), which runs no cleanup code of its own.
//!
//! The agent starts `rmm-agent __supervise <agent pid> /bin/sh -c <command>` as the leader of
//! a new process group; the supervisor asks the kernel for a signal when the agent dies
//! (`PR_SET_PDEATHSIG`), starts the shell in its own group (so the agent's killpg reaches
//! both, as before) and waits. Any signal it receives while the agent lives is for the whole
//! group and is left to the command; once the agent is gone (its parent is no longer the
//! agent) it kills the group with SIGKILL, itself included. When the shell ends, the supervisor
//! ends the same way: the same exit code, or the same signal re-raised, so the agent reports
//! what the command did.
//!
//! It keeps no copy of the command's stdin, stdout or stderr open: end of input reaches the
//! command, and end of output reaches the agent, exactly as without it.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, raise, sigprocmask};
use nix::unistd::{Pid, getpgrp, getpid, getppid};

/// The hidden subcommand that runs [`main`]: the first argument of `rmm-agent`.
pub const SUBCOMMAND: &str = "__supervise";

/// Exit code when the supervisor cannot do its job (bad arguments, the shell cannot start).
const CANNOT_RUN: i32 = 127;
/// The argument before the program that makes the supervisor a spare (see [`spare`]).
pub const SPARE: &str = "--spare";
/// The longest command a spare takes (the server's limit on a command is far below).
const MAX_ORDER: usize = 1 << 20;

/// Runs the supervisor on `args` (after [`SUBCOMMAND`]: the agent's pid, the program and its
/// arguments); returns the exit code to end with, when it does not end by a signal. With
/// [`SPARE`] before the program, it is a spare (see [`spare`]).
#[must_use]
pub fn main(args: &[OsString]) -> i32 {
    let Some((parent, program, rest)) = parse(args) else {
        eprintln!(
            "rmm-agent {SUBCOMMAND}: usage: {SUBCOMMAND} <agent pid> [{SPARE}] <program> [args...]"
        );
        return CANNOT_RUN;
    };
    if program.as_os_str() == SPARE {
        let Some((program, rest)) = rest.split_first() else {
            return CANNOT_RUN;
        };
        return spare(parent, program, rest);
    }
    supervise(parent, program, rest, Stdio::inherit())
}

/// A spare supervisor: started before its command, so that a command costs the agent no
/// process start of its own (the agent keeps one ready while a tunnel is open). It waits for
/// its order on stdin ([`order`]), then supervises `program rest... <command>` as above.
/// It dies with the agent while it waits (SIGTERM by default action: nothing runs yet), and
/// ends quietly when the agent closes its stdin without an order.
fn spare(parent: Pid, program: &OsString, rest: &[OsString]) -> i32 {
    if set_pdeathsig(Signal::SIGTERM).is_err() || getppid() != parent {
        return CANNOT_RUN;
    }
    let Some((command, stdin)) = read_order() else {
        return 0;
    };
    // From here on as a supervisor started for this command: the request is made again once
    // the shell runs and the signals are blocked, and the parent looked at after it.
    if set_pdeathsig(None).is_err() {
        return CANNOT_RUN;
    }
    let mut args = rest.to_vec();
    args.push(command);
    let stdin = if stdin {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    supervise(parent, program, &args, stdin)
}

/// Reads a spare's order from stdin, unbuffered (what follows it is the command's stdin):
/// one byte (`1`: the command keeps this stdin; `0`: it gets /dev/null), the command's length
/// (4 bytes, big-endian, at most [`MAX_ORDER`]) and the command. `None` at end of input or
/// on a malformed order.
fn read_order() -> Option<(OsString, bool)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::ffi::OsStringExt as _;
    let stdin = std::io::stdin();
    let read_exact = |buf: &mut [u8]| -> Option<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match nix::unistd::read(stdin.as_fd(), &mut buf[filled..]) {
                Ok(0) => return None,
                Ok(n) => filled += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return None,
            }
        }
        Some(())
    };
    let mut head = [0u8; 5];
    read_exact(&mut head)?;
    let keep_stdin = match head[0] {
        b'0' => false,
        b'1' => true,
        _ => return None,
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_ORDER {
        return None;
    }
    let mut command = vec![0u8; len];
    read_exact(&mut command)?;
    Some((OsString::from_vec(command), keep_stdin))
}

/// The order a spare reads: see [`read_order`].
#[must_use]
pub fn order(command: &str, keep_stdin: bool) -> Option<Vec<u8>> {
    let len = u32::try_from(command.len())
        .ok()
        .filter(|&len| len as usize <= MAX_ORDER)?;
    let mut order = Vec::with_capacity(5 + command.len());
    order.push(if keep_stdin { b'1' } else { b'0' });
    order.extend_from_slice(&len.to_be_bytes());
    order.extend_from_slice(command.as_bytes());
    Some(order)
}

/// Supervises `program rest...` with `stdin` (see the module's documentation).
fn supervise(parent: Pid, program: &OsString, rest: &[OsString], stdin: Stdio) -> i32 {
    // The signals that matter are taken with sigwait below, never by a handler.
    let mut watched = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        watched.add(signal);
    }
    // Started before any signal is blocked: a child inherits the signal mask (std does not
    // reset it), and the shell must get the usual signals.
    let mut child = match std::process::Command::new(program)
        .args(rest)
        .stdin(stdin)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "rmm-agent {SUBCOMMAND}: cannot start {}: {e}",
                program.to_string_lossy()
            );
            return CANNOT_RUN;
        }
    };
    // A group signal arriving before this line ends the supervisor by its default action, as
    // it does the shell; the agent's death cannot be missed: it is asked for only now.
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&watched), None).is_err()
        || set_pdeathsig(Signal::SIGTERM).is_err()
    {
        kill_all(&mut child);
        return CANNOT_RUN;
    }
    // The agent may have died before the request above: then nobody would tell us.
    if getppid() != parent {
        kill_all(&mut child);
    }
    release_stdio();
    loop {
        // The shell may have ended before SIGCHLD was blocked (and that SIGCHLD was
        // discarded): look before each wait.
        match child.try_wait() {
            Ok(Some(status)) => return end_like(status, &watched),
            Ok(None) => {}
            Err(_) => return CANNOT_RUN,
        }
        let Ok(signal) = watched.wait() else {
            continue;
        };
        if signal != Signal::SIGCHLD && getppid() != parent {
            // The agent is gone: nothing of this command may keep running.
            kill_all(&mut child);
        }
    }
}

/// SIGKILL to the command's process group, this process included, when this process leads it
/// (as the agent starts it); else (started by hand) to the shell only.
fn kill_all(child: &mut std::process::Child) {
    if getpgrp() == getpid() {
        let _ = killpg(getpgrp(), Signal::SIGKILL);
    }
    let _ = child.kill();
}

fn parse(args: &[OsString]) -> Option<(Pid, &OsString, &[OsString])> {
    let (parent, rest) = args.split_first()?;
    let parent: i32 = parent.to_str()?.parse().ok()?;
    let (program, rest) = rest.split_first()?;
    Some((Pid::from_raw(parent), program, rest))
}

/// Points our stdin, stdout and stderr at /dev/null: the shell holds the real ones.
fn release_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
}

/// Ends this process as the shell ended: its exit code, or its signal (no core file of ours).
fn end_like(status: ExitStatus, watched: &SigSet) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    let Some(signal) = status.signal().and_then(|s| Signal::try_from(s).ok()) else {
        return CANNOT_RUN;
    };
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    // Unblock it, or raising it would only make it pending. No handler is installed for the
    // watched ones, and std ignores only SIGPIPE: the default action ends the process.
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(watched), None);
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = raise(signal);
    // Still here: the signal is ignored in this process (SIGPIPE) or only stops it.
    128 + signal as i32
}
