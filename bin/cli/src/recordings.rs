//! `rmm recordings` (the terminal recordings one may see, newest first) and `rmm replay ID`
//! (one played back with its timing, or printed as is with `--raw`).
//!
//! The replay writes the output events to stdout, waiting between them as recorded, divided
//! by `--speed`, and never more than 2 s at once (asciinema's idle time limit, [`cast`]).
//! A marker (the size cap cut the recording short) is said on stderr at its place.

use std::collections::HashMap;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use clap::Args;
use rmm_client::{ApiClient, RecordingDto, RecordingFilter};
use uuid::Uuid;

use super::CliError;
use super::commands::resolve_agent;
use super::render::{Table, parse_time, print_json, time};

mod cast;

/// `rmm recordings`.
#[derive(Debug, Args)]
pub struct RecordingsArgs {
    /// Only recordings of terminals on this agent (id or name).
    #[arg(long)]
    agent: Option<String>,
    /// Only recordings of this user (id, or username for admins).
    #[arg(long)]
    user: Option<String>,
    /// Only recordings started at or after: RFC 3339 or a duration ago (15m, 2h, 7d).
    #[arg(long, value_parser = parse_time_now)]
    since: Option<DateTime<Utc>>,
    /// How many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `rmm replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording's id (its terminal's id), from `rmm recordings`.
    pub recording: Uuid,
    /// Play this many times faster (0.5 is half speed); pauses never exceed 2 s.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Print the cast file (asciicast v2) as it is, for asciinema or an archive.
    #[arg(long)]
    pub raw: bool,
}

fn parse_time_now(value: &str) -> Result<DateTime<Utc>, String> {
    parse_time(value, Utc::now())
}

fn parse_speed(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 => Ok(speed),
        _ => Err(format!(
            "{value:?} is not a speed: use a number above 0, e.g. 2 or 0.5"
        )),
    }
}

/// `rmm recordings`.
///
/// # Errors
/// Agent or user resolution, client errors; [`CliError::Local`] when stdout cannot be written.
pub async fn list(client: &ApiClient, args: RecordingsArgs) -> Result<(), CliError> {
    let agents: HashMap<Uuid, String> = client
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.agent_id, a.name))
        .collect();
    // Usernames are for admins only: the others see ids.
    let users: HashMap<Uuid, String> = client
        .users()
        .await
        .map(|users| users.into_iter().map(|u| (u.user_id, u.username)).collect())
        .unwrap_or_default();
    let agent = match args.agent.as_deref() {
        Some(input) => Some(resolve_agent(client, input).await?.agent_id),
        None => None,
    };
    let user = match args.user.as_deref() {
        Some(input) => Some(resolve_user(&users, input)?),
        None => None,
    };
    let filter = RecordingFilter {
        agent,
        user,
        since: args.since,
        until: None,
        limit: Some(args.limit),
    };
    let recordings = client.recordings(&filter).await?;
    if args.json {
        return print_json(&recordings);
    }
    if recordings.is_empty() {
        let _ = writeln!(std::io::stderr(), "No recordings match.");
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "AGENT",
        "USER",
        "STARTED",
        "DURATION",
        "SIZE",
        "TRUNCATED",
    ]);
    for r in &recordings {
        table.row(row(r, &agents, &users));
    }
    table.print()
}

fn row(
    r: &RecordingDto,
    agents: &HashMap<Uuid, String>,
    users: &HashMap<Uuid, String>,
) -> Vec<String> {
    let name = |names: &HashMap<Uuid, String>, id: Uuid| {
        names.get(&id).cloned().unwrap_or_else(|| id.to_string())
    };
    vec![
        r.recording_id.to_string(),
        name(agents, r.agent_id),
        name(users, r.user_id),
        time(r.started_at),
        r.ended_at.map_or_else(
            || "running".to_owned(),
            |end| duration((end - r.started_at).num_seconds()),
        ),
        size(r.size),
        if r.pruned {
            "pruned (retention)"
        } else if r.truncated {
            "yes"
        } else {
            "no"
        }
        .to_owned(),
    ]
}

fn resolve_user(users: &HashMap<Uuid, String>, input: &str) -> Result<Uuid, CliError> {
    if let Ok(id) = Uuid::parse_str(input.trim()) {
        return Ok(id);
    }
    users
        .iter()
        .find(|(_, name)| name.as_str() == input.trim())
        .map(|(id, _)| *id)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no user named {input:?} is visible to you: pass the user's id (admins may pass a username)"
            ))
        })
}

/// `1h02m`, `3m05s`, `42s`.
fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.0 MiB`.
#[allow(clippy::cast_precision_loss)] // Shown to one decimal.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        0..KIB => format!("{bytes} B"),
        KIB..1_048_576 => format!("{:.1} KiB", bytes as f64 / KIB as f64),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// `rmm replay`.
///
/// # Errors
/// [`rmm_client::ClientError::RecordingNotFound`] and other client errors; a cast that does
/// not parse ([`CliError::Local`], naming the line); stdout that cannot be written.
pub async fn replay(client: &ApiClient, args: ReplayArgs) -> Result<(), CliError> {
    let mut body = client.recording(args.recording).await?;
    let mut out = std::io::stdout().lock();
    let write_error = |e: std::io::Error| CliError::Local(format!("cannot write to stdout: {e}"));
    if args.raw {
        while let Some(chunk) = body.chunk().await? {
            out.write_all(&chunk).map_err(write_error)?;
        }
        return out.flush().map_err(write_error);
    }
    let mut player = Player::new(args.speed);
    let mut lines = cast::Lines::default();
    while let Some(chunk) = body.chunk().await? {
        for line in lines.push(&chunk) {
            player.line(&line, &mut out).await?;
        }
    }
    if let Some(line) = lines.finish() {
        player.line(&line, &mut out).await?;
    }
    if player.number == 0 {
        return Err(CliError::Local(
            cast::CastError::BadHeader("the recording is empty".into()).to_string(),
        ));
    }
    Ok(())
}

/// Plays events as their lines arrive.
struct Player {
    speed: f64,
    /// Lines seen so far.
    number: usize,
    /// The time of the last event played.
    previous: f64,
}

impl Player {
    fn new(speed: f64) -> Self {
        Self {
            speed,
            number: 0,
            previous: 0.0,
        }
    }

    async fn line(&mut self, line: &[u8], out: &mut impl std::io::Write) -> Result<(), CliError> {
        self.number += 1;
        let text = String::from_utf8_lossy(line);
        if self.number == 1 {
            cast::header(&text).map_err(|e| CliError::Local(e.to_string()))?;
            return Ok(());
        }
        let Some(event) =
            cast::event(&text, self.number).map_err(|e| CliError::Local(e.to_string()))?
        else {
            return Ok(());
        };
        tokio::time::sleep(cast::pause(self.previous, event.at, self.speed)).await;
        self.previous = event.at;
        let written = match event.kind.as_str() {
            "o" => out
                .write_all(event.data.as_bytes())
                .and_then(|()| out.flush()),
            "m" => writeln!(std::io::stderr(), "\r\n[rmm: {}]", event.data),
            _ => Ok(()),
        };
        written.map_err(|e| CliError::Local(format!("cannot write to stdout: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_easily() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(3720), "1h02m");
        assert_eq!(duration(-5), "0s");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1_048_576), "3.0 MiB");
    }

    #[test]
    fn speeds_must_be_positive_numbers() {
        assert_eq!(parse_speed("2"), Ok(2.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "fast", "inf", "NaN"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
