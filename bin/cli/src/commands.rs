//! The subcommands other than `exec`: `login`, `agents`, `open`, `close`, `status`, `audit`;
//! and how an AGENT or SESSION argument is resolved (an id or a unique name; a remembered
//! session when none is given).

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};

use chrono::{DateTime, Utc};
use clap::Args;
use rmm_client::{AgentDto, ApiClient, AuditEntryDto, AuditFilter, ClientError, StatusDto};
use rmm_domain::{AgentId, SessionId};
use uuid::Uuid;

use super::CliError;
use super::config::{ConfigDir, Remembered, Sessions};
use super::render::{Table, ago, parse_time, print_json, print_stdout, time};

/// `rmm login`.
///
/// # Errors
/// [`CliError::Usage`] when there is no username and no terminal to ask on, or an empty
/// password; [`CliError::Local`] when no password can be read; client errors.
pub async fn login(
    client: &ApiClient,
    dir: &ConfigDir,
    username: Option<String>,
    password_stdin: bool,
) -> Result<(), CliError> {
    let username = match username {
        Some(name) => name,
        None if std::io::stdin().is_terminal() => prompt_line("Username: ")?,
        None => {
            return Err(CliError::Usage(
                "no username: pass --username NAME (standard input is not a terminal to ask on)"
                    .into(),
            ));
        }
    };
    let username = username.trim().to_owned();
    if username.is_empty() {
        return Err(CliError::Usage(
            "the username is empty: pass --username NAME".into(),
        ));
    }
    let password = if password_stdin {
        read_password_line()?
    } else {
        rpassword::prompt_password(format!("Password for {username}: ")).map_err(|e| {
            CliError::Local(format!(
                "cannot prompt for the password ({e}): pipe it in with --password-stdin"
            ))
        })?
    };
    if password.is_empty() {
        return Err(CliError::Usage(
            "the password is empty: type it, or give it on the first line of standard input with --password-stdin"
                .into(),
        ));
    }
    let issued = client.login(&username, &password).await?;
    dir.save_token(&issued.token)?;
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "Logged in to {} as {username}; the token is valid until {} and saved in {}",
        client.server(),
        time(issued.expires_at),
        dir.token_path().display()
    );
    if std::env::var_os("RMM_TOKEN").is_some_and(|v| !v.is_empty()) {
        let _ = writeln!(
            stderr,
            "Note: RMM_TOKEN is set and is used instead of the saved token; unset it to use this login"
        );
    }
    Ok(())
}

fn prompt_line(prompt: &str) -> Result<String, CliError> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Local(format!("cannot read standard input: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The first line of standard input, without its line ending.
fn read_password_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CliError::Local(format!("cannot read the password from standard input: {e}"))
    })?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `rmm agents`.
///
/// # Errors
/// Client errors; [`CliError::Local`] when stdout cannot be written.
pub async fn agents(client: &ApiClient, json: bool) -> Result<(), CliError> {
    let agents = client.agents().await?;
    if json {
        return print_json(&agents);
    }
    if agents.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "No agents are registered on {}.",
            client.server()
        );
        return Ok(());
    }
    let now = Utc::now();
    let mut table = Table::new(&["NAME", "ID", "GROUP", "CONNECTED", "MODE", "LAST SEEN"]);
    for agent in &agents {
        table.row(vec![
            agent.name.clone(),
            agent.agent_id.to_string(),
            agent.group.clone().unwrap_or_default(),
            if agent.connected { "yes" } else { "no" }.to_owned(),
            if agent.revoked {
                "revoked".to_owned()
            } else {
                agent.mode.clone()
            },
            agent
                .last_seen
                .map_or_else(|| "never".to_owned(), |at| ago(at, now)),
        ]);
    }
    table.print()
}

/// The agent the user means by `input`: its id, its exact name, or its name in any case
/// when only one agent has it.
///
/// # Errors
/// [`CliError::Usage`] when no agent or several match; client errors.
pub async fn resolve_agent(client: &ApiClient, input: &str) -> Result<AgentDto, CliError> {
    let agents = client.agents().await?;
    pick_agent(agents, input)
}

fn pick_agent(agents: Vec<AgentDto>, input: &str) -> Result<AgentDto, CliError> {
    let input = input.trim();
    if let Ok(id) = Uuid::parse_str(input)
        && let Some(agent) = agents.iter().find(|a| a.agent_id == id)
    {
        return Ok(agent.clone());
    }
    let (exact, other): (Vec<AgentDto>, Vec<AgentDto>) =
        agents.into_iter().partition(|a| a.name == input);
    let candidates = if exact.is_empty() {
        other
            .into_iter()
            .filter(|a| a.name.eq_ignore_ascii_case(input))
            .collect()
    } else {
        exact
    };
    let mut candidates = candidates.into_iter();
    match (candidates.next(), candidates.next()) {
        (Some(agent), None) => Ok(agent),
        (None, _) => Err(CliError::Usage(format!(
            "no agent is named {input:?} or has that id: see `rmm agents`"
        ))),
        (Some(first), Some(second)) => {
            let listed = [first, second]
                .into_iter()
                .chain(candidates)
                .map(|a| format!("{} ({})", a.name, a.agent_id))
                .collect::<Vec<_>>()
                .join(", ");
            Err(CliError::Usage(format!(
                "{input:?} matches several agents: {listed}; pass the exact name or the id"
            )))
        }
    }
}

/// The session this CLI remembers to `agent`, if the server still has it active; forgets it
/// otherwise.
///
/// # Errors
/// Client errors other than "not found" and "not yours"; config errors.
pub async fn remembered_active(
    client: &ApiClient,
    dir: &ConfigDir,
    agent: AgentId,
) -> Result<Option<SessionId>, CliError> {
    let mut sessions = dir.sessions()?;
    let Some(entry) = sessions.for_agent(client.server(), agent).cloned() else {
        return Ok(None);
    };
    match client.tunnel_status(entry.session()).await {
        Ok(status) if status.is_active() => Ok(Some(entry.session())),
        Ok(_) | Err(ClientError::SessionNotFound(_) | ClientError::SessionForbidden(_)) => {
            sessions.forget(client.server(), entry.session());
            dir.save_sessions(&sessions)?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Remembers a session this CLI opened.
///
/// # Errors
/// Config errors.
pub fn remember(
    client: &ApiClient,
    dir: &ConfigDir,
    agent: &AgentDto,
    session: SessionId,
) -> Result<(), CliError> {
    let mut sessions = dir.sessions()?;
    sessions.remember(Remembered {
        server: client.server().to_owned(),
        agent_id: agent.agent_id,
        agent_name: agent.name.clone(),
        session_id: session.as_uuid(),
        opened_at: Utc::now(),
    });
    dir.save_sessions(&sessions)
}

/// `rmm open AGENT`: prints the session id (or JSON).
///
/// # Errors
/// Agent resolution, client and config errors.
pub async fn open(
    client: &ApiClient,
    dir: &ConfigDir,
    input: &str,
    json: bool,
) -> Result<(), CliError> {
    let agent = resolve_agent(client, input).await?;
    if let Some(session) = remembered_active(client, dir, agent.id()).await? {
        let _ = writeln!(
            std::io::stderr(),
            "Session {session} to {} is already open.",
            agent.name
        );
        return if json {
            print_json(&client.tunnel_status(session).await?)
        } else {
            print_stdout(&format!("{session}\n"))
        };
    }
    let opened = client
        .open_tunnel(agent.id())
        .await
        .map_err(|e| e.naming_agent(&agent.name))?;
    remember(client, dir, &agent, opened.session())?;
    if json {
        print_json(&opened)
    } else {
        print_stdout(&format!("{}\n", opened.session_id))
    }
}

/// The session a SESSION argument names: a session id, or an agent (id or name) with a
/// remembered session; without one, the only remembered session.
fn pick_session(
    sessions: &Sessions,
    server: &str,
    input: Option<&str>,
    verb: &str,
) -> Result<SessionId, CliError> {
    let mut remembered = sessions.on(server);
    let Some(input) = input.map(str::trim) else {
        return match (remembered.next(), remembered.next()) {
            (Some(only), None) => Ok(only.session()),
            (None, _) => Err(CliError::Usage(format!(
                "no open session is remembered: pass a SESSION id (`rmm {verb} SESSION`), or open one with `rmm open AGENT`"
            ))),
            (Some(first), Some(second)) => {
                let listed = [first, second]
                    .into_iter()
                    .chain(remembered)
                    .map(|s| format!("{} ({})", s.session_id, s.agent_name))
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(CliError::Usage(format!(
                    "several sessions are open: {listed}; pass one: `rmm {verb} SESSION` (or the agent's name)"
                )))
            }
        };
    };
    if let Ok(id) = Uuid::parse_str(input) {
        let by_agent = sessions.on(server).find(|s| s.agent_id == id);
        return Ok(by_agent.map_or(SessionId::from_uuid(id), Remembered::session));
    }
    sessions
        .on(server)
        .find(|s| s.agent_name == input)
        .map(Remembered::session)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{input:?} is neither a session id nor an agent with a session opened here: pass the SESSION id"
            ))
        })
}

/// `rmm close [SESSION]`.
///
/// # Errors
/// [`CliError::Usage`] when no session is given and none or several are remembered; client
/// and config errors.
pub async fn close(
    client: &ApiClient,
    dir: &ConfigDir,
    input: Option<&str>,
) -> Result<(), CliError> {
    let mut sessions = dir.sessions()?;
    let session = pick_session(&sessions, client.server(), input, "close")?;
    let result = client.close_tunnel(session).await;
    if matches!(result, Ok(_) | Err(ClientError::SessionNotFound(_)))
        && sessions.forget(client.server(), session)
    {
        dir.save_sessions(&sessions)?;
    }
    let closed = result?;
    print_stdout(&format!(
        "Session {session} closed ({}).\n",
        if closed.close_reason.is_empty() {
            "closed"
        } else {
            closed.close_reason.as_str()
        }
    ))
}

/// `rmm status [SESSION]`: one session, or every remembered one.
///
/// # Errors
/// [`CliError::Usage`] when no session is given and none is remembered; client and config
/// errors.
pub async fn status(
    client: &ApiClient,
    dir: &ConfigDir,
    input: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let mut sessions = dir.sessions()?;
    let names: HashMap<Uuid, String> = sessions
        .on(client.server())
        .map(|s| (s.agent_id, s.agent_name.clone()))
        .collect();
    let wanted: Vec<SessionId> = match input {
        Some(_) => vec![pick_session(&sessions, client.server(), input, "status")?],
        None => {
            let all: Vec<SessionId> = sessions
                .on(client.server())
                .map(Remembered::session)
                .collect();
            if all.is_empty() {
                return Err(CliError::Usage(
                    "no open session is remembered: pass a SESSION id (`rmm status SESSION`), or open one with `rmm open AGENT`".into(),
                ));
            }
            all
        }
    };
    let mut found: Vec<StatusDto> = Vec::with_capacity(wanted.len());
    let mut changed = false;
    for session in wanted {
        match client.tunnel_status(session).await {
            Ok(status) => {
                // A closed session is shown once more, then no longer remembered.
                if !status.is_active() && status.status != "pending" {
                    changed |= sessions.forget(client.server(), session);
                }
                found.push(status);
            }
            Err(e @ (ClientError::SessionNotFound(_) | ClientError::SessionForbidden(_))) => {
                changed |= sessions.forget(client.server(), session);
                if input.is_some() {
                    save_if(dir, &sessions, changed)?;
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    save_if(dir, &sessions, changed)?;
    if json {
        return match (input, found.as_slice()) {
            (Some(_), [one]) => print_json(one),
            _ => print_json(&found),
        };
    }
    let now = Utc::now();
    let mut table = Table::new(&[
        "SESSION",
        "AGENT",
        "STATUS",
        "OPENED",
        "LAST ACTIVITY",
        "CLOSE REASON",
    ]);
    for s in &found {
        table.row(vec![
            s.session_id.to_string(),
            names
                .get(&s.agent_id)
                .cloned()
                .unwrap_or_else(|| s.agent_id.to_string()),
            s.status.clone(),
            time(s.opened_at),
            ago(s.last_activity, now),
            s.close_reason.clone().unwrap_or_default(),
        ]);
    }
    table.print()
}

fn save_if(dir: &ConfigDir, sessions: &Sessions, changed: bool) -> Result<(), CliError> {
    if changed {
        dir.save_sessions(sessions)
    } else {
        Ok(())
    }
}

/// `rmm audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this agent (id or name).
    #[arg(long)]
    agent: Option<String>,
    /// Only entries of this session.
    #[arg(long)]
    session: Option<SessionId>,
    /// Only entries at or after: RFC 3339 (2026-11-05T10:00:00Z) or a duration ago (15m, 2h, 7d).
    #[arg(long, value_parser = parse_time_now)]
    since: Option<DateTime<Utc>>,
    /// Only entries before: RFC 3339 or a duration ago.
    #[arg(long, value_parser = parse_time_now)]
    until: Option<DateTime<Utc>>,
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Only entries older than this entry id (the hint printed after a full listing).
    #[arg(long)]
    before: Option<i64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write every matching entry (no --limit) to standard output as `ndjson` or `csv`.
    #[arg(long, value_parser = ["ndjson", "csv"], conflicts_with = "json")]
    export: Option<String>,
}

fn parse_time_now(value: &str) -> Result<DateTime<Utc>, String> {
    parse_time(value, Utc::now())
}

/// The most entries the server returns per page.
const AUDIT_PAGE: u32 = 500;

/// `rmm audit`.
///
/// # Errors
/// Agent resolution and client errors.
pub async fn audit(client: &ApiClient, args: AuditArgs) -> Result<(), CliError> {
    let agents = client.agents().await?;
    let agent = match args.agent.as_deref() {
        Some(input) => Some(pick_agent(agents.clone(), input)?.id()),
        None => None,
    };
    let mut filter = AuditFilter {
        agent,
        session: args.session,
        since: args.since,
        until: args.until,
        limit: None,
        before: args.before,
    };
    if let Some(format) = &args.export {
        return super::audit_export::export_audit(client, &filter, format).await;
    }
    let mut entries: Vec<AuditEntryDto> = Vec::new();
    let mut remaining = args.limit;
    // Where older entries continue, when the listing stopped at the limit.
    let mut more = None;
    while remaining > 0 {
        filter.limit = Some(remaining.min(AUDIT_PAGE));
        let page = client.audit(&filter).await?;
        let got = u32::try_from(page.entries.len()).unwrap_or(u32::MAX);
        entries.extend(page.entries.into_iter().take(remaining as usize));
        remaining = remaining.saturating_sub(got);
        more = page.next_before.filter(|_| got > 0);
        match more {
            Some(before) => filter.before = Some(before),
            None => break,
        }
    }
    if args.json {
        return print_json(&entries);
    }
    if entries.is_empty() {
        let _ = writeln!(std::io::stderr(), "No audit entries match.");
        return Ok(());
    }
    print_audit(&entries, &agents)?;
    if let Some(before) = more {
        let _ = writeln!(
            std::io::stderr(),
            "More entries are older than these {}: add --before {before} to see them (or raise --limit).",
            entries.len()
        );
    }
    Ok(())
}

/// The entries as a table: agents by name, users by username.
fn print_audit(entries: &[AuditEntryDto], agents: &[AgentDto]) -> Result<(), CliError> {
    let names: HashMap<Uuid, &str> = agents
        .iter()
        .map(|a| (a.agent_id, a.name.as_str()))
        .collect();
    let mut table = Table::new(&["TIME", "EVENT", "USER", "AGENT", "SESSION", "DETAIL"]);
    for entry in entries {
        table.row(vec![
            time(entry.at),
            entry.event.clone(),
            match (&entry.username, entry.tech_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => id.to_string(),
                (None, None) => String::new(),
            },
            entry.agent_id.map_or_else(String::new, |id| {
                names
                    .get(&id)
                    .map_or_else(|| id.to_string(), |name| (*name).to_owned())
            }),
            entry.session_id.map(|s| s.to_string()).unwrap_or_default(),
            audit_detail(entry),
        ]);
    }
    table.print()
}

/// The interesting fields of an entry, in one cell.
fn audit_detail(entry: &AuditEntryDto) -> String {
    let mut parts = Vec::new();
    if let Some(command) = &entry.command {
        let shown: String = command.chars().take(60).collect();
        let cut = if shown.len() < command.len() {
            "…"
        } else {
            ""
        };
        parts.push(format!("{shown:?}{cut}"));
    }
    // A `command` entry is written as the command starts: its status says only "running".
    // A `command_end` entry's detail is why it ended: shown with its status, `failed
    // (agent_disconnected)`.
    let mut detail = entry.detail.as_ref();
    if let Some(status) = entry.status.as_ref().filter(|_| entry.event != "command") {
        match detail.filter(|_| entry.event == "command_end") {
            Some(why) => {
                parts.push(format!("{status} ({why})"));
                detail = None;
            }
            None => parts.push(status.clone()),
        }
    }
    if let Some(code) = entry.exit_code {
        parts.push(format!("exit {code}"));
    }
    if let Some(ms) = entry.duration_ms {
        parts.push(format!("{}.{:03}s", ms / 1000, ms % 1000));
    }
    if let (Some(direction), Some(path)) = (&entry.direction, &entry.path) {
        parts.push(format!("{direction} {path}"));
    }
    if let Some(size) = entry.size {
        parts.push(format!("{size} bytes"));
    }
    if let Some(result) = &entry.result {
        parts.push(result.clone());
    }
    if let Some(detail) = detail {
        parts.push(detail.clone());
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn agent(id: u128, name: &str) -> AgentDto {
        AgentDto {
            agent_id: Uuid::from_u128(id),
            name: name.into(),
            group: None,
            revoked: false,
            connected: true,
            mode: "heartbeat".into(),
            last_seen: None,
            agent_version: None,
            hostname: None,
            os: None,
            uptime_secs: None,
        }
    }

    #[test]
    fn agents_resolve_by_id_exact_name_or_unique_name_in_any_case() {
        let all = vec![agent(1, "web-01"), agent(2, "WEB-01"), agent(3, "db-01")];
        let pick = |input: &str| pick_agent(all.clone(), input).map(|a| a.agent_id);
        assert_eq!(pick("web-01").unwrap(), Uuid::from_u128(1));
        assert_eq!(
            pick(&Uuid::from_u128(2).to_string()).unwrap(),
            Uuid::from_u128(2)
        );
        assert_eq!(pick("DB-01").unwrap(), Uuid::from_u128(3));
        let ambiguous = pick("Web-01").unwrap_err().to_string();
        assert!(ambiguous.contains("matches several agents"), "{ambiguous}");
        let unknown = pick("mail").unwrap_err().to_string();
        assert_eq!(
            unknown,
            "no agent is named \"mail\" or has that id: see `rmm agents`"
        );
    }

    #[test]
    fn a_missing_session_defaults_to_the_only_one_and_ambiguity_says_what_to_pass() {
        let mut sessions = Sessions::default();
        let entry = |agent: u128, session: u128, name: &str| Remembered {
            server: "s".into(),
            agent_id: Uuid::from_u128(agent),
            agent_name: name.into(),
            session_id: Uuid::from_u128(session),
            opened_at: Utc::now(),
        };
        assert!(pick_session(&sessions, "s", None, "close").is_err());
        sessions.remember(entry(1, 10, "web-01"));
        assert_eq!(
            pick_session(&sessions, "s", None, "close").unwrap(),
            SessionId::from_uuid(Uuid::from_u128(10))
        );
        sessions.remember(entry(2, 20, "db-01"));
        let message = pick_session(&sessions, "s", None, "close")
            .unwrap_err()
            .to_string();
        assert!(message.contains("several sessions are open"), "{message}");
        assert!(message.contains("`rmm close SESSION`"), "{message}");
        assert_eq!(
            pick_session(&sessions, "s", Some("db-01"), "close").unwrap(),
            SessionId::from_uuid(Uuid::from_u128(20))
        );
        assert_eq!(
            pick_session(
                &sessions,
                "s",
                Some(&Uuid::from_u128(1).to_string()),
                "close"
            )
            .unwrap(),
            SessionId::from_uuid(Uuid::from_u128(10))
        );
        let other = Uuid::from_u128(99);
        assert_eq!(
            pick_session(&sessions, "s", Some(&other.to_string()), "close").unwrap(),
            SessionId::from_uuid(other)
        );
    }

    #[test]
    fn a_command_end_shows_its_reason_with_its_status() {
        let entry: AuditEntryDto = serde_json::from_value(serde_json::json!({
            "id": 9, "at": "2026-01-01T00:00:00Z", "event": "command_end",
            "tech_id": null, "agent_id": null, "session_id": null,
            "command": "sleep 300", "status": "failed", "duration_ms": 1500,
            "detail": "server_restart"
        }))
        .unwrap();
        assert_eq!(
            audit_detail(&entry),
            "\"sleep 300\"  failed (server_restart)  1.500s"
        );
        let close = AuditEntryDto {
            event: "tunnel_close".into(),
            status: None,
            command: None,
            duration_ms: None,
            detail: Some("idle".into()),
            ..entry
        };
        assert_eq!(audit_detail(&close), "idle");
    }
}
