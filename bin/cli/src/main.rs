//! `rmm`: the technician's command-line client. Logs in once, then lists agents, opens and
//! closes tunnels, runs commands with live output, copies files both ways and reads the audit
//! log, all through the server's public API ([`rmm_client`]).
//!
//! This file holds the command line (clap, with environment variables and shell
//! completions), `main`, and the mapping of every failure to one line on stderr and an exit
//! code: 1 for API and local errors, 2 for usage errors (clap's), and for `exec` the remote
//! command's own code, 124 when it timed out, 130 when it was cancelled, 255 when it failed
//! (the agent went away, or the server shut down and closed the session); `cp` leaves with
//! 130 when interrupted. What each subcommand does lives in the modules below; where the
//! token and remembered sessions are kept, in `config`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use rmm_client::{ApiClient, ClientError};

mod agent_admin;
mod audit_export;
mod commands;
mod config;
mod cp;
mod enroll_token;
mod exec;
mod input;
#[cfg(unix)]
mod mux;
#[cfg(unix)]
mod muxwire;
mod recordings;
mod render;
mod session;
mod shell;
mod users;

/// The rmm technician's client: log in once, then reach managed machines through the server.
#[derive(Debug, Parser)]
#[command(name = "rmm", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The rmm server, http(s)://host[:port] (ws:// and wss:// are read as http:// and
    /// https://). The token comes from `rmm login`, or RMM_TOKEN.
    #[arg(
        long,
        env = "RMM_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// A PEM file of CA certificates to trust beside the system's, for a server whose
    /// certificate a private CA signed (as the agent's --ca-file).
    #[arg(long, env = "RMM_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and keep the token in the config directory (file mode 0600).
    Login {
        /// Your username (prompted for on a terminal when missing).
        #[arg(long, env = "RMM_USERNAME")]
        username: Option<String>,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the agents: name, id, group, connected, mode, last seen; or change one (admins:
    /// revoke, rotate-key, move, rename).
    Agents {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<agent_admin::AgentsAction>,
    },
    /// Open a tunnel session to an agent (by id or unique name) and remember it.
    Open {
        /// The agent: its id, or its name.
        agent: String,
        /// Print the session as JSON instead of its id.
        #[arg(long)]
        json: bool,
    },
    /// Close a session (default: the one session this CLI has open).
    Close {
        /// The session id, or an agent whose remembered session to close.
        session: Option<String>,
    },
    /// Show a session (default: every session this CLI has open).
    Status {
        /// The session id, or an agent whose remembered session to show.
        session: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command on an agent, streaming its output live; exits with its exit code.
    ///
    /// The words after `--` are joined with spaces and run by the agent's shell (`sh -c`),
    /// as ssh does: quote for the remote shell, e.g. `rmm exec web-01 -- 'cd /tmp && ls'`.
    /// Reuses your open session to the agent; otherwise opens one and closes it afterwards.
    /// Exit codes: the remote command's, 124 timed out, 130 cancelled (Ctrl-C cancels the
    /// remote command), 255 failed (the agent went away, or the server shut down and closed
    /// the session), 1 for other errors.
    ///
    /// Like ssh's ControlMaster, the first exec starts a local mux process (per server and
    /// login; its socket is private, in the config folder's `mux/`, or RMM_MUX_DIR) that keeps
    /// the connection, the agents and your kept-open sessions warm; later execs hand it the
    /// command. It exits after RMM_MUX_IDLE_SECS (default 600) without an exec. `--no-mux` or
    /// RMM_MUX=off runs directly; so does an exec whose standard input is forwarded.
    #[command(override_usage = "rmm exec [OPTIONS] <AGENT> -- <COMMAND>...")]
    Exec(exec::ExecArgs),
    /// Open an interactive terminal on an agent (its user's login shell, or COMMAND), as ssh.
    ///
    /// Your terminal is put in raw mode (when stdin is one): every key goes to the remote side,
    /// Ctrl-C included. Type `~.` at the start of a line to disconnect (`~~` sends one `~`).
    /// The window size follows yours. A lost connection is reattached by itself for up to
    /// 60 s. The terminal is recorded on the server (`rmm recordings`). Reuses your open
    /// session to the agent; otherwise opens one and closes it afterwards. Exit codes: the
    /// remote process's, 128+N when signal N killed it, 255 when disconnected (`~.`, closed
    /// elsewhere, or the connection could not be reattached), 1 for other errors.
    #[command(override_usage = "rmm shell [OPTIONS] <AGENT> [-- <COMMAND>...]")]
    Shell(shell::ShellArgs),
    /// List terminal recordings, newest first: id, agent, user, started, duration, size,
    /// truncated (technicians see their own).
    Recordings(recordings::RecordingsArgs),
    /// Play a terminal recording back with its timing (pauses capped at 2 s), or print the
    /// cast file (asciicast v2) with --raw.
    Replay(recordings::ReplayArgs),
    /// Copy a file to or from an agent, verified by SHA-256: `rmm cp LOCAL AGENT:/path` or
    /// `rmm cp AGENT:/path LOCAL`.
    ///
    /// Streams any size with a progress bar on a terminal (none when stderr is piped). The
    /// file lands only once its SHA-256 matches: an upload as `.NAME.rmm-partial` beside the
    /// target, a download as LOCAL.rmm-partial, renamed when verified. An interrupted copy
    /// keeps what arrived; run it again with --resume to send only the rest. Reuses your open
    /// session to the agent; otherwise opens one and closes it afterwards. Exit codes: 0
    /// copied and verified, 1 failed (one line says why), 130 interrupted.
    #[command(
        override_usage = "rmm cp [OPTIONS] <LOCAL> <AGENT:/path>\n       rmm cp [OPTIONS] <AGENT:/path> <LOCAL>"
    )]
    Cp(cp::CpArgs),
    /// Read the audit log, newest first (technicians see their own entries).
    Audit(commands::AuditArgs),
    /// List the users (admins only): username, role, state, groups.
    Users {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enrollment tokens that let machines register as agents (admins): create, list,
    /// revoke.
    EnrollToken(enroll_token::EnrollTokenArgs),
    /// The exec mux (started by `rmm exec`; see `rmm exec --help`).
    #[cfg(unix)]
    #[command(hide = true)]
    Mux(mux::MuxArgs),
    /// Print a shell completion script, e.g. `rmm completions bash > /etc/bash_completion.d/rmm`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Every failure of the CLI; each displays as one line naming the cause and the fix.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Bad input the argument parser could not catch (an unknown agent, a bad time, ...).
    #[error("{0}")]
    Usage(String),
    /// The config directory or a file in it.
    #[error("{0}")]
    Config(String),
    /// Local stdin, stdout or terminal.
    #[error("{0}")]
    Local(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built with rustls and no provider of its own: ring is the tree's one provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The mux serves several execs at once, and writes to their sockets blocking.
    #[cfg(unix)]
    let multi = matches!(cli.command, Command::Mux(_));
    #[cfg(not(unix))]
    let multi = false;
    let built = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(e) => return fail(&CliError::Local(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(error: &CliError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "rmm: {error}");
    ExitCode::from(1)
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let server = cli.global.server;
    let ca_file = cli.global.ca_file;
    let ca_file = ca_file.as_deref();
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "rmm", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Login {
            username,
            password_stdin,
        } => {
            let dir = config::ConfigDir::locate()?;
            let client = ApiClient::with_ca_file(&server, None, ca_file)?;
            commands::login(&client, &dir, username, password_stdin).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents { json, action } => {
            let (client, _) = connect(&server, ca_file)?;
            match action {
                Some(action) => agent_admin::run(&client, action).await?,
                None => commands::agents(&client, json).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Open { agent, json } => {
            let (client, dir) = connect(&server, ca_file)?;
            commands::open(&client, &dir, &agent, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Close { session } => {
            let (client, dir) = connect(&server, ca_file)?;
            commands::close(&client, &dir, session.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { session, json } => {
            let (client, dir) = connect(&server, ca_file)?;
            commands::status(&client, &dir, session.as_deref(), json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(args) => {
            let (dir, token) = login()?;
            #[cfg(unix)]
            if let Some(code) =
                mux::client::exec(&dir, &server, ca_file, token.expose(), &args).await?
            {
                return Ok(code);
            }
            let client = ApiClient::with_ca_file(&server, Some(token), ca_file)?;
            exec::exec(&client, &dir, args).await
        }
        #[cfg(unix)]
        Command::Mux(args) => Ok(mux::serve(&server, ca_file, args).await),
        command @ (Command::Shell(_) | Command::Recordings(_) | Command::Replay(_)) => {
            let (client, dir) = connect(&server, ca_file)?;
            terminals(&client, &dir, command).await
        }
        Command::Cp(args) => {
            let (client, dir) = connect(&server, ca_file)?;
            cp::cp(&client, &dir, args).await
        }
        Command::Audit(args) => {
            let (client, _) = connect(&server, ca_file)?;
            commands::audit(&client, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Users { json } => {
            let (client, _) = connect(&server, ca_file)?;
            users::users(&client, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::EnrollToken(args) => {
            let (client, _) = connect(&server, ca_file)?;
            enroll_token::run(&client, args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `shell`, `recordings` and `replay`.
async fn terminals(
    client: &ApiClient,
    dir: &config::ConfigDir,
    command: Command,
) -> Result<ExitCode, CliError> {
    match command {
        Command::Shell(args) => shell::shell(client, dir, args).await,
        Command::Recordings(args) => recordings::list(client, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => recordings::replay(client, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        _ => Err(CliError::Usage("not a terminal command".into())),
    }
}

/// A client with the user's token (RMM_TOKEN first, then the saved one) and the config
/// directory.
fn connect(
    server: &str,
    ca_file: Option<&Path>,
) -> Result<(ApiClient, config::ConfigDir), CliError> {
    let (dir, token) = login()?;
    Ok((ApiClient::with_ca_file(server, Some(token), ca_file)?, dir))
}

/// The config directory and the user's token (RMM_TOKEN first, then the saved one).
fn login() -> Result<(config::ConfigDir, rmm_client::Token), CliError> {
    let dir = config::ConfigDir::locate()?;
    let token = match config::token_from_env()? {
        Some(token) => Some(token),
        None => dir.load_token()?,
    };
    let token = token.ok_or(ClientError::NotLoggedIn)?;
    Ok((dir, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_takes_an_optional_command_after_the_agent() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Shell(args),
                ..
            }) => Some((args.agent, args.command)),
            Ok(_) | Err(_) => None,
        };
        assert_eq!(
            parse(&["rmm", "shell", "web-01"]),
            Some(("web-01".to_owned(), vec![]))
        );
        assert_eq!(
            parse(&["rmm", "shell", "web-01", "--", "top", "-d", "1"]),
            Some((
                "web-01".to_owned(),
                vec!["top".into(), "-d".into(), "1".into()]
            ))
        );
        assert_eq!(parse(&["rmm", "shell"]), None);
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_the_agent_with_or_without_a_double_dash() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Exec(args),
                ..
            }) => Some((args.agent, args.keep, args.timeout, args.command)),
            Ok(_) | Err(_) => None,
        };
        assert_eq!(
            parse(&["rmm", "exec", "web-01", "--keep", "--", "ls", "-la"]),
            Some((
                "web-01".to_owned(),
                true,
                None,
                vec!["ls".to_owned(), "-la".to_owned()]
            ))
        );
        assert_eq!(
            parse(&[
                "rmm",
                "exec",
                "--timeout",
                "5",
                "web-01",
                "uptime",
                "--keep"
            ]),
            Some((
                "web-01".to_owned(),
                false,
                Some(5),
                vec!["uptime".to_owned(), "--keep".to_owned()]
            ))
        );
        assert_eq!(parse(&["rmm", "exec", "web-01"]), None);
        assert!(matches!(
            Cli::try_parse_from(["rmm", "exec", "-n", "web-01", "--", "cat"]),
            Ok(Cli { command: Command::Exec(args), .. }) if args.no_stdin && args.command == ["cat"]
        ));
        assert_eq!(
            parse(&["rmm", "exec", "web-01", "--timeout", "0", "x"]),
            None
        );
    }
}
