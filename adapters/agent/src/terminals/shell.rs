//! Starting a terminal's process: a new PTY of the asked size, `TERM` set, the process the
//! leader of a new session with the PTY as its controlling terminal (pty-process's spawn does
//! `setsid` and `TIOCSCTTY`). The command runs with `sh -c`; without one, the login shell of
//! the agent's user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pty_process::{Command, Pty, Size};
use tokio::process::Child;

use crate::tunnel::PtyRequest;

/// Opens the PTY and starts the process on it. Our copies of the PTY's slave end are closed
/// when this returns, so reading the master ends (EIO) once the session's processes are gone.
pub(super) fn open(request: &PtyRequest) -> Result<(Pty, Child), pty_process::Error> {
    let (pty, pts) = pty_process::open()?;
    pty.resize(Size::new(request.rows, request.cols))?;
    let command = match &request.command {
        Some(command) => Command::new("/bin/sh").arg("-c").arg(command),
        None => login_shell(),
    };
    // `spawn` consumes the command and the slave end: no copy of it stays in the agent.
    let child = command
        .env("TERM", &request.term)
        // A last resort for the leader should the task vanish; the group kill covers the rest.
        .kill_on_drop(true)
        .spawn(pts)?;
    Ok((pty, child))
}

/// The login shell of the agent's user: `$SHELL`, else the user's entry in the password
/// database, else `/bin/sh`; started as a login shell (`argv[0]` `-name`), in the user's home
/// with `HOME`, `USER`, `LOGNAME` and `SHELL` set (a service's environment may lack them).
fn login_shell() -> Command {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten();
    let from_env = std::env::var_os("SHELL").map(PathBuf::from);
    let path = [from_env, user.as_ref().map(|u| u.shell.clone())]
        .into_iter()
        .flatten()
        .find(|shell| usable(shell))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let name = path
        .file_name()
        .map_or_else(|| OsString::from("sh"), ToOwned::to_owned);
    let mut argv0 = OsString::from("-");
    argv0.push(&name);
    let mut command = Command::new(&path).arg0(argv0).env("SHELL", &path);
    if let Some(user) = user {
        command = command
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("HOME", &user.dir);
        if user.dir.is_dir() {
            command = command.current_dir(&user.dir);
        }
    }
    command
}

/// An absolute path to an existing file that is not a refusal to log in.
fn usable(shell: &Path) -> bool {
    let refusal = shell
        .file_name()
        .is_some_and(|name| name == "nologin" || name == "false");
    shell.is_absolute() && !refusal && shell.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_refusals_and_relative_paths_are_not_shells() {
        assert!(usable(Path::new("/bin/sh")));
        assert!(!usable(Path::new("sh")));
        assert!(!usable(Path::new("/usr/sbin/nologin")));
        assert!(!usable(Path::new("/bin/false")));
        assert!(!usable(Path::new("/no/such/shell")));
    }
}
