//! `rmm cp LOCAL AGENT:/path` and `rmm cp AGENT:/path LOCAL`: one file either way, streamed in
//! bounded chunks (memory stays flat whatever the file's size), verified by SHA-256 end to end,
//! and resumable.
//!
//! - Upload: the local file is hashed first, then streamed as the request body with that hash.
//!   The agent writes `.<name>.rmm-partial` beside the target and renames it into place only
//!   when the whole file hashes to it. `--resume` asks the agent how much of an interrupted
//!   upload it holds and sends only the rest.
//! - Download: into `LOCAL.rmm-partial`, renamed to LOCAL only when the whole local file hashes
//!   to the SHA-256 the agent announced; a mismatch or an interruption keeps the partial file.
//!   `--resume` asks for the bytes past the partial file (`Range`) and appends them.
//!
//! A progress bar (bytes, rate, ETA) is drawn on stderr when it is a terminal, never when it is
//! piped. The result line goes to stdout. The session is the caller's open one to the agent,
//! else one opened for the copy (see [`super::session`]).
//!
//! An upload whose connection breaks goes on from what the agent holds (twice at most),
//! starting with small chunks and pauses: an HTTP/1 server that refuses an upload mid-body
//! answers and closes, and a client still writing can fail before it reads the answer; the
//! careful restart reads it.
//!
//! The upload is in [`upload`], the download in [`download`]; hashing and local errors in
//! [`local`], the progress bar in [`progress`].
//!
//! An AGENT:/path argument is told from a local one as scp does: a colon before any slash.
//! A local file with a colon in its name is written `./a:b`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rmm_client::{ApiClient, ClientError};
use rmm_domain::SessionId;

use super::CliError;
use super::commands::resolve_agent;
use super::config::ConfigDir;
use super::render::print_stdout;
use super::session::{Interrupts, Lease};

mod download;
mod local;
mod progress;
mod upload;

use download::Download;
use progress::Progress;
use upload::{Digest, Upload};

/// Bytes read from the local file per upload chunk, and the download's write buffer.
const CHUNK: usize = 256 * 1024;
/// 128 + SIGINT, as for `exec`.
const EXIT_INTERRUPTED: u8 = 130;

/// `rmm cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local file, or AGENT:/path (AGENT is an agent's name or id).
    pub source: String,
    /// Where to: AGENT:/path (ending in `/`: keep the local name), or a local file or
    /// directory.
    pub destination: String,
    /// Continue an interrupted copy: send only what the agent does not hold yet (upload), or
    /// append to LOCAL.rmm-partial (download). The whole file is verified either way.
    #[arg(long)]
    pub resume: bool,
    /// Keep the session open afterwards when cp opened it (the next command reuses it).
    #[arg(long)]
    pub keep: bool,
}

/// One side of a copy, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Local(PathBuf),
    Remote { agent: String, path: String },
}

impl Endpoint {
    /// `AGENT:/path` when there is a colon before any slash (as scp reads it), else a local
    /// path.
    fn parse(arg: &str) -> Self {
        match arg.split_once(':') {
            Some((agent, path))
                if !agent.is_empty() && !agent.contains(['/', '\\']) && !is_drive_letter(agent) =>
            {
                Self::Remote {
                    agent: agent.to_owned(),
                    path: path.to_owned(),
                }
            }
            Some(_) | None => Self::Local(PathBuf::from(arg)),
        }
    }
}

/// `C:` in `C:\file` on Windows is a drive, not an agent.
fn is_drive_letter(prefix: &str) -> bool {
    cfg!(windows) && prefix.len() == 1 && prefix.chars().all(|c| c.is_ascii_alphabetic())
}

/// What the two arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Upload {
        local: PathBuf,
        agent: String,
        remote: String,
    },
    Download {
        agent: String,
        remote: String,
        /// As given: a file, or a directory to put the remote file's name in.
        local: PathBuf,
    },
}

impl Plan {
    fn parse(source: &str, destination: &str) -> Result<Self, CliError> {
        match (Endpoint::parse(source), Endpoint::parse(destination)) {
            (Endpoint::Local(local), Endpoint::Remote { agent, path }) => {
                require_path(&agent, &path)?;
                let remote = if path.ends_with(['/', '\\']) {
                    let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                        CliError::Usage(format!(
                            "{} has no file name to use on the agent: name the target, {agent}:{path}NAME",
                            local.display()
                        ))
                    })?;
                    format!("{path}{name}")
                } else {
                    path
                };
                Ok(Self::Upload {
                    local,
                    agent,
                    remote,
                })
            }
            (Endpoint::Remote { agent, path }, Endpoint::Local(local)) => {
                require_path(&agent, &path)?;
                Ok(Self::Download {
                    agent,
                    remote: path,
                    local,
                })
            }
            (Endpoint::Remote { .. }, Endpoint::Remote { .. }) => Err(CliError::Usage(
                "both sides name an agent: copy from one to this machine, then to the other"
                    .into(),
            )),
            (Endpoint::Local(_), Endpoint::Local(_)) => Err(CliError::Usage(
                "neither side names an agent: write one as AGENT:/path (a local name with a colon as ./a:b)"
                    .into(),
            )),
        }
    }

    fn agent(&self) -> &str {
        match self {
            Self::Upload { agent, .. } | Self::Download { agent, .. } => agent,
        }
    }
}

fn require_path(agent: &str, path: &str) -> Result<(), CliError> {
    if path.is_empty() {
        Err(CliError::Usage(format!(
            "no path on the agent: write {agent}:/absolute/path"
        )))
    } else {
        Ok(())
    }
}

/// `rmm cp`: 0 when the file arrived and was verified, 130 when interrupted.
///
/// # Errors
/// Usage errors (bad arguments, unknown agent), local file errors, client errors (naming the
/// agent); each is one line, and rmm leaves with 1.
pub async fn cp(client: &ApiClient, dir: &ConfigDir, args: CpArgs) -> Result<ExitCode, CliError> {
    let plan = Plan::parse(&args.source, &args.destination)?;
    // Local mistakes are found before the server is asked anything.
    let job = match &plan {
        Plan::Upload { local, remote, .. } => Job::Upload(Upload::check(local, remote).await?),
        Plan::Download { remote, local, .. } => {
            Job::Download(Download::prepare(remote, local, &args.destination)?)
        }
    };
    let mut interrupts = Interrupts::listen()?;
    let progress = Progress::for_stderr();
    let agent = tokio::select! {
        agent = resolve_agent(client, plan.agent()) => agent?,
        () = interrupts.recv() => return Ok(interrupted(false)),
    };
    // Hashing a large file takes a while: done before the session is opened, so the agent's
    // one tunnel is not held meanwhile.
    let job = tokio::select! {
        job = job.ready(progress) => job?,
        () = interrupts.recv() => return Ok(interrupted(false)),
    };
    let Some(lease) = Lease::acquire(client, dir, &agent, args.keep, &mut interrupts).await? else {
        return Ok(interrupted(false));
    };
    let transfer = Transfer {
        client,
        session: lease.session(),
        agent: &agent.name,
        resume: args.resume,
        progress,
    };
    let outcome = tokio::select! {
        outcome = job.run(&transfer) => Some(outcome),
        () = interrupts.recv() => None,
    };
    lease.release(client).await;
    match outcome {
        Some(Ok(done)) => {
            print_stdout(&format!("{done}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => Err(e),
        None => Ok(interrupted(true)),
    }
}

fn interrupted(started: bool) -> ExitCode {
    let message = if started {
        "interrupted; what arrived is kept: run the same command with --resume to continue"
    } else {
        "interrupted before the copy started; nothing was copied"
    };
    let _ = writeln!(std::io::stderr(), "rmm: {message}");
    ExitCode::from(EXIT_INTERRUPTED)
}

/// What every transfer needs.
struct Transfer<'a> {
    client: &'a ApiClient,
    session: SessionId,
    /// The agent's name, for messages.
    agent: &'a str,
    resume: bool,
    progress: Progress,
}

impl Transfer<'_> {
    fn named(&self, e: ClientError) -> CliError {
        CliError::Client(e.naming_agent(self.agent))
    }

    /// A client error of a transfer of `remote`, naming the agent, with the fix for a
    /// directory where a file was meant.
    fn explained(&self, e: ClientError, remote: &str, upload: bool) -> CliError {
        match e {
            ClientError::RemoteIsDirectory { .. } => {
                let target = format!("{}:{remote}", self.agent);
                CliError::Usage(if upload {
                    format!(
                        "{target} is a directory: end it with / to copy into it ({}/)",
                        target.trim_end_matches(['/', '\\'])
                    )
                } else {
                    format!("{target} is a directory: rmm cp copies one file at a time")
                })
            }
            other => self.named(other),
        }
    }

    /// A line on stderr about what is being done differently (a resume, a restart).
    fn note(message: &str) {
        let _ = writeln!(std::io::stderr(), "rmm: {message}");
    }
}

enum Job {
    Upload(Upload),
    Download(Download),
}

impl Job {
    /// Ready to transfer: an upload's file hashed.
    async fn ready(self, progress: Progress) -> Result<Ready, CliError> {
        match self {
            Self::Upload(upload) => {
                let digest = upload.hash(progress).await?;
                Ok(Ready::Upload(upload, digest))
            }
            Self::Download(download) => Ok(Ready::Download(download)),
        }
    }
}

/// A [`Job`] ready to run.
enum Ready {
    Upload(Upload, Digest),
    Download(Download),
}

impl Ready {
    /// The result line.
    async fn run(&self, transfer: &Transfer<'_>) -> Result<String, CliError> {
        match self {
            Self::Upload(upload, digest) => upload.run(digest, transfer).await,
            Self::Download(download) => download.run(transfer).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn remote(agent: &str, path: &str) -> Endpoint {
        Endpoint::Remote {
            agent: agent.into(),
            path: path.into(),
        }
    }

    #[test]
    fn a_colon_before_any_slash_names_an_agent() {
        assert_eq!(Endpoint::parse("web-01:/tmp/x"), remote("web-01", "/tmp/x"));
        assert_eq!(
            Endpoint::parse("0196a3c4-0000-7000-8000-000000000001:/a:b"),
            remote("0196a3c4-0000-7000-8000-000000000001", "/a:b")
        );
        assert_eq!(Endpoint::parse("web-01:"), remote("web-01", ""));
        for local in ["./a:b", "/abs/a:b", "plain", ":x", "dir/x:y"] {
            assert_eq!(
                Endpoint::parse(local),
                Endpoint::Local(PathBuf::from(local))
            );
        }
    }

    #[test]
    fn one_side_must_be_an_agent_and_a_trailing_slash_keeps_the_local_name() {
        assert_eq!(
            Plan::parse("dir/report.pdf", "web-01:/tmp/").unwrap(),
            Plan::Upload {
                local: PathBuf::from("dir/report.pdf"),
                agent: "web-01".into(),
                remote: "/tmp/report.pdf".into(),
            }
        );
        assert_eq!(
            Plan::parse("web-01:/var/log/syslog", ".").unwrap(),
            Plan::Download {
                agent: "web-01".into(),
                remote: "/var/log/syslog".into(),
                local: PathBuf::from("."),
            }
        );
        for (source, destination) in [
            ("a", "b"),
            ("web-01:/a", "web-02:/b"),
            ("a", "web-01:"),
            ("web-01:", "a"),
        ] {
            assert!(
                matches!(Plan::parse(source, destination), Err(CliError::Usage(_))),
                "{source} {destination}"
            );
        }
    }
}
