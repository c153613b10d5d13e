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
//! An AGENT:/path argument is told from a local one as scp does: a colon before any slash.
//! A local file with a colon in its name is written `./a:b`.

use std::ffi::OsString;
use std::io::{IsTerminal as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Args;
use futures_util::Stream;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rmm_client::{ApiClient, ClientError, UploadedResponse};
use rmm_domain::SessionId;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::CliError;
use super::commands::resolve_agent;
use super::config::ConfigDir;
use super::render::print_stdout;
use super::session::{Interrupts, Lease};

/// Bytes read from the local file per upload chunk, and the download's write buffer.
const CHUNK: usize = 256 * 1024;
/// Bytes read per step while hashing (nothing waits for them, so larger).
const HASH_CHUNK: usize = 1024 * 1024;
/// Appended to LOCAL for the file a download is written to until it is verified.
use rmm_protocol::limits::PARTIAL_SUFFIX;
/// 128 + SIGINT, as for `exec`.
const EXIT_INTERRUPTED: u8 = 130;
/// Upload requests per copy: the first, and those going on after a broken connection.
const UPLOAD_ATTEMPTS: u32 = 3;
/// A careful upload's first chunks: small, each followed by a pause.
const CAREFUL_CHUNKS: usize = 3;
const CAREFUL_CHUNK: usize = 64 * 1024;
const CAREFUL_PAUSE: Duration = Duration::from_millis(300);

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
            ClientError::TransferRefused { reason, .. } if reason.ends_with("is a directory") => {
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

/// The size and SHA-256 (hex) of a local file.
#[derive(Debug, Clone)]
struct Digest {
    size: u64,
    sha256: String,
}

struct Upload {
    local: PathBuf,
    remote: String,
}

impl Upload {
    /// A local file to send: it must be there and not be a directory.
    async fn check(local: &Path, remote: &str) -> Result<Self, CliError> {
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| local_error("read", local, &e))?;
        if meta.is_dir() {
            return Err(CliError::Usage(format!(
                "{} is a directory: rmm cp copies one file at a time",
                local.display()
            )));
        }
        Ok(Self {
            local: local.to_owned(),
            remote: remote.to_owned(),
        })
    }

    /// The file's size and SHA-256, taken before the transfer: the agent verifies against it.
    async fn hash(&self, progress: Progress) -> Result<Digest, CliError> {
        let local = &self.local;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| local_error("read", local, &e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| local_error("read", local, &e))?
            .len();
        let bar = progress.bar("hashing", size, 0);
        let sha256 = hash_prefix(&mut file, size, &bar)
            .await
            .map_err(|e| local_error("read", local, &e))?
            .ok_or_else(|| changed_while_read(local))?;
        Ok(Digest { size, sha256 })
    }

    async fn run(&self, digest: &Digest, t: &Transfer<'_>) -> Result<String, CliError> {
        let local = &self.local;
        let (size, sha256) = (digest.size, digest.sha256.as_str());
        let mut offset = if t.resume {
            let held = self.held(t, size).await?;
            if held > 0 {
                Transfer::note(&format!("resuming the upload at byte {held} of {size}"));
            }
            held
        } else {
            0
        };
        let mut attempt = 1;
        let done = loop {
            match self.send(t, offset, size, sha256, attempt > 1).await {
                // The connection broke: a real break, or the agent's refusal lost to the race
                // of an HTTP/1 server that answers mid-body. Go on from what the agent holds,
                // starting slowly: an answer that comes then is read, not lost.
                Err(Sent::Stopped(_)) if attempt < UPLOAD_ATTEMPTS => {
                    attempt += 1;
                    offset = self.held(t, size).await?;
                }
                Err(Sent::Stopped(e) | Sent::Failed(e)) => return Err(e),
                Ok(done) => break done,
            }
        };
        if done.size != size || !done.sha256.eq_ignore_ascii_case(sha256) {
            return Err(ClientError::Protocol(format!(
                "the agent reports {} bytes with sha256 {}, but {} has {size} bytes with sha256 {sha256}",
                done.size,
                done.sha256,
                local.display()
            ))
            .into());
        }
        Ok(format!(
            "uploaded {size} bytes to {}:{} (sha256 {sha256}, verified)",
            t.agent, self.remote
        ))
    }

    /// The bytes of an interrupted upload the agent holds, when they can be the start of
    /// this file (no more than it has); else 0, and it is sent again whole.
    async fn held(&self, t: &Transfer<'_>, size: u64) -> Result<u64, CliError> {
        let held = t
            .client
            .upload_status(t.session, &self.remote)
            .await
            .map_err(|e| t.named(e))?
            .received;
        if held > size {
            Transfer::note(&format!(
                "{}:{} holds {held} bytes of an upload, more than {} has: sending it all again",
                t.agent,
                self.remote,
                self.local.display()
            ));
            return Ok(0);
        }
        Ok(held)
    }

    /// One upload request: the file from `offset` on.
    async fn send(
        &self,
        t: &Transfer<'_>,
        offset: u64,
        size: u64,
        sha256: &str,
        careful: bool,
    ) -> Result<UploadedResponse, Sent> {
        let local = &self.local;
        let failed = |e: std::io::Error| Sent::Failed(local_error("read", local, &e));
        let mut file = tokio::fs::File::open(local).await.map_err(failed)?;
        file.seek(SeekFrom::Start(offset)).await.map_err(failed)?;
        let bar = t.progress.bar("uploading", size, offset);
        let read_failure = Arc::new(Mutex::new(None));
        let body = read_chunks(
            file,
            size.saturating_sub(offset),
            bar.handle(),
            Arc::clone(&read_failure),
            careful,
        );
        let result = t
            .client
            .upload_file(t.session, &self.remote, offset, sha256, body)
            .await;
        drop(bar);
        // A failed read of ours breaks the request: say so, not that the connection broke.
        if let Some(cause) = read_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(Sent::Failed(CliError::Local(format!(
                "cannot read {}: {cause}; run again with --resume",
                local.display()
            ))));
        }
        result.map_err(|e| match e {
            ClientError::TransferStopped(_) => Sent::Stopped(t.named(e)),
            other => Sent::Failed(t.explained(other, &self.remote, true)),
        })
    }
}

/// Why an upload request failed.
enum Sent {
    /// The connection broke or the agent went away: going on from what it holds may work.
    Stopped(CliError),
    Failed(CliError),
}

/// The first `len` bytes of `file` as the upload body, in chunks of at most [`CHUNK`]. A
/// file that shrank meanwhile ends the body early: the agent's checksum check reports it. A
/// read error ends it with an error, kept in `failure` for the message.
///
/// `careful` starts with [`CAREFUL_CHUNKS`] small chunks, each followed by a pause, so that a
/// refusal the server sends right away arrives while nothing is being written (and is read).
fn read_chunks(
    file: tokio::fs::File,
    len: u64,
    bar: ProgressBar,
    failure: Arc<Mutex<Option<String>>>,
    careful: bool,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    let slow = if careful { CAREFUL_CHUNKS } else { 0 };
    futures_util::stream::unfold((file, len, 0), move |(mut file, left, index)| {
        let (bar, failure) = (bar.clone(), Arc::clone(&failure));
        async move {
            if left == 0 {
                return None;
            }
            if index > 0 && index <= slow {
                tokio::time::sleep(CAREFUL_PAUSE).await;
            }
            let chunk = if index < slow { CAREFUL_CHUNK } else { CHUNK };
            let want = usize::try_from(left.min(chunk as u64)).unwrap_or(chunk);
            let mut buf = vec![0; want];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(read) => {
                    buf.truncate(read);
                    bar.inc(read as u64);
                    Some((Ok(buf), (file, left - read as u64, index + 1)))
                }
                Err(e) => {
                    let message = e.to_string();
                    *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                    Some((Err(e), (file, 0, index + 1)))
                }
            }
        }
    })
}

struct Download {
    remote: String,
    /// Where the file goes.
    local: PathBuf,
    /// Where it is written until verified.
    partial: PathBuf,
}

impl Download {
    fn prepare(remote: &str, local: &Path, as_given: &str) -> Result<Self, CliError> {
        let local = if local.is_dir() || as_given.ends_with(['/', '\\']) {
            let name = remote
                .trim_end_matches(['/', '\\'])
                .rsplit(['/', '\\'])
                .next()
                .filter(|name| !name.is_empty() && *name != "." && *name != "..")
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{remote} names no file: rmm cp copies one file at a time"
                    ))
                })?;
            local.join(name)
        } else {
            local.to_owned()
        };
        let parent = match local.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            Some(_) | None => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(CliError::Local(format!(
                "cannot write {}: there is no directory {}; create it first",
                local.display(),
                parent.display()
            )));
        }
        let mut partial = OsString::from(local.as_os_str());
        partial.push(PARTIAL_SUFFIX);
        Ok(Self {
            remote: remote.to_owned(),
            partial: PathBuf::from(partial),
            local,
        })
    }

    async fn run(&self, t: &Transfer<'_>) -> Result<String, CliError> {
        let held = if t.resume {
            match tokio::fs::metadata(&self.partial).await {
                Ok(meta) if meta.is_file() => meta.len(),
                Ok(_) | Err(_) => 0,
            }
        } else {
            0
        };
        let mut download = {
            let _waiting = t
                .progress
                .spinner(format!("waiting for {} to hash {}", t.agent, self.remote));
            match t.client.download_file(t.session, &self.remote, held).await {
                Ok(download) => download,
                // The agent refuses a range past the end: the remote file is shorter than the
                // partial one now, so the partial one is of no use.
                Err(ClientError::TransferRefused { .. }) if held > 0 => {
                    let download = t
                        .client
                        .download_file(t.session, &self.remote, 0)
                        .await
                        .map_err(|e| t.named(e))?;
                    Transfer::note(&format!(
                        "{} does not fit {}:{} any more: downloading it again from the start",
                        self.partial.display(),
                        t.agent,
                        self.remote
                    ));
                    download
                }
                Err(e) => return Err(t.explained(e, &self.remote, false)),
            }
        };
        let start = download.offset;
        if start > 0 {
            Transfer::note(&format!(
                "resuming the download at byte {start} of {}",
                download.size
            ));
        }
        let (file, mut hasher) = self.open_partial(start, t.progress).await?;
        let mut out = tokio::io::BufWriter::with_capacity(CHUNK, file);
        let bar = t.progress.bar("downloading", download.size, start);
        let mut received = start;
        let copied: Result<(), CliError> = async {
            while let Some(chunk) = download.chunk().await.map_err(|e| t.named(e))? {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| local_error("write", &self.partial, &e))?;
                hasher.update(&chunk);
                received += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
            }
            Ok(())
        }
        .await;
        drop(bar);
        // What arrived is kept for a resume, whatever went wrong.
        let flushed = out.flush().await;
        copied?;
        flushed.map_err(|e| local_error("write", &self.partial, &e))?;
        if received != download.size {
            return Err(ClientError::TransferStopped(format!(
                "the download ended after {received} of {} bytes",
                download.size
            ))
            .into());
        }
        out.into_inner()
            .sync_all()
            .await
            .map_err(|e| local_error("write", &self.partial, &e))?;
        let sha256 = hex::encode(hasher.finalize());
        if sha256 != download.sha256 {
            return Err(CliError::Local(format!(
                "checksum mismatch: the file changed during transfer; run again without --resume (the unverified bytes are kept in {})",
                self.partial.display()
            )));
        }
        tokio::fs::rename(&self.partial, &self.local)
            .await
            .map_err(|e| {
                CliError::Local(format!(
                    "cannot move {} to {}: {e}",
                    self.partial.display(),
                    self.local.display()
                ))
            })?;
        Ok(format!(
            "downloaded {} bytes from {}:{} to {} (sha256 {sha256}, verified)",
            download.size,
            t.agent,
            self.remote,
            self.local.display()
        ))
    }

    /// The partial file positioned at `start`, with the hash of the bytes before it: a new
    /// empty one for 0, else the kept one cut back to `start`.
    async fn open_partial(
        &self,
        start: u64,
        progress: Progress,
    ) -> Result<(tokio::fs::File, Sha256), CliError> {
        let path = &self.partial;
        let failed = |e: std::io::Error| local_error("write", path, &e);
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        if start == 0 {
            let file = options.truncate(true).open(path).await.map_err(failed)?;
            return Ok((file, Sha256::new()));
        }
        let mut file = options.truncate(false).open(path).await.map_err(failed)?;
        file.set_len(start).await.map_err(failed)?;
        let mut hasher = Sha256::new();
        let bar = progress.bar("checking", start, 0);
        if !hash_into(&mut file, start, &mut hasher, &bar)
            .await
            .map_err(failed)?
        {
            return Err(changed_while_read(path));
        }
        file.seek(SeekFrom::Start(start)).await.map_err(failed)?;
        Ok((file, hasher))
    }
}

/// The SHA-256 (hex) of the first `len` bytes of `file`, read from where it stands; `None`
/// when it has fewer.
async fn hash_prefix(
    file: &mut tokio::fs::File,
    len: u64,
    bar: &Bar,
) -> std::io::Result<Option<String>> {
    let mut hasher = Sha256::new();
    let complete = hash_into(file, len, &mut hasher, bar).await?;
    Ok(complete.then(|| hex::encode(hasher.finalize())))
}

/// Feeds the next `len` bytes of `file` to `hasher`; false when the file ends before.
async fn hash_into(
    file: &mut tokio::fs::File,
    len: u64,
    hasher: &mut Sha256,
    bar: &Bar,
) -> std::io::Result<bool> {
    let mut buf = vec![0; HASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(HASH_CHUNK as u64)).unwrap_or(HASH_CHUNK);
        let Some(space) = buf.get_mut(..want) else {
            break;
        };
        let read = file.read(space).await?;
        let Some(data) = space.get(..read).filter(|data| !data.is_empty()) else {
            return Ok(false);
        };
        hasher.update(data);
        left -= read as u64;
        bar.inc(read as u64);
    }
    Ok(true)
}

fn local_error(verb: &str, path: &Path, e: &std::io::Error) -> CliError {
    CliError::Local(format!("cannot {verb} {}: {e}", path.display()))
}

fn changed_while_read(path: &Path) -> CliError {
    CliError::Local(format!(
        "{} shrank while it was read; run again when nothing writes to it",
        path.display()
    ))
}

/// Progress on stderr when it is a terminal; nothing at all when it is not, so piped stderr
/// holds only rmm's messages.
#[derive(Debug, Clone, Copy)]
struct Progress {
    visible: bool,
}

impl Progress {
    fn for_stderr() -> Self {
        Self {
            visible: std::io::stderr().is_terminal(),
        }
    }

    /// A bar of `total` bytes at `position`: bytes, rate, ETA.
    fn bar(self, what: &str, total: u64, position: u64) -> Bar {
        if !self.visible {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_owned());
        bar.set_position(position);
        // The rate is of this run's bytes, not of those a resume skipped.
        bar.reset_eta();
        Bar(bar)
    }

    /// A spinner with `message`, for a wait of unknown length.
    fn spinner(self, message: String) -> Bar {
        if !self.visible {
            return Bar(ProgressBar::hidden());
        }
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        spinner.set_message(message);
        spinner.enable_steady_tick(Duration::from_millis(120));
        Bar(spinner)
    }
}

/// A progress bar that is cleared from the terminal when dropped, however the step ended, so
/// the next line starts clean.
#[derive(Debug)]
struct Bar(ProgressBar);

impl Bar {
    fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    /// A handle to advance it from elsewhere (the upload's body stream).
    fn handle(&self) -> ProgressBar {
        self.0.clone()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
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

    #[test]
    fn a_download_into_a_directory_takes_the_remote_name_and_writes_a_partial_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let as_given = dir.path().to_str().unwrap();
        let download = Download::prepare("/var/log/syslog", dir.path(), as_given).unwrap();
        assert_eq!(download.local, dir.path().join("syslog"));
        assert_eq!(download.partial, dir.path().join("syslog.rmm-partial"));

        let named = dir.path().join("copy.log");
        let download = Download::prepare("/var/log/syslog", &named, "copy.log").unwrap();
        assert_eq!(download.local, named);

        assert!(matches!(
            Download::prepare("/", dir.path(), as_given),
            Err(CliError::Usage(_))
        ));
        let nowhere = dir.path().join("missing").join("x");
        assert!(matches!(
            Download::prepare("/x", &nowhere, "missing/x"),
            Err(CliError::Local(_))
        ));
    }

    #[tokio::test]
    async fn hashing_reads_exactly_the_prefix_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"hello world").unwrap();
        let bar = Progress { visible: false }.bar("hashing", 5, 0);
        let mut file = tokio::fs::File::open(&path).await.unwrap();
        assert_eq!(
            hash_prefix(&mut file, 5, &bar).await.unwrap().unwrap(),
            hex::encode(Sha256::digest(b"hello"))
        );
        let mut file = tokio::fs::File::open(&path).await.unwrap();
        assert_eq!(hash_prefix(&mut file, 12, &bar).await.unwrap(), None);
    }
}
