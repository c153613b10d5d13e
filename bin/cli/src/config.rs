//! What the CLI keeps between runs, in the user's config directory
//! (`$XDG_CONFIG_HOME/rmm`, else `~/.config/rmm`; `%APPDATA%\rmm` on Windows): the login
//! token (`token`, mode 0600, in a 0700 directory) and the sessions this CLI opened
//! (`sessions.json`), so `close`, `status` and `exec` can default to them; and the agents
//! `exec` resolved by name lately (`agents.json`, kept [`AGENT_CACHE_TTL`]), so a command
//! costs no `GET /api/v1/agents` (a stale entry fails the first call, and exec looks again).
//!
//! Files are replaced atomically (written beside, then renamed), so a crash or a concurrent
//! `rmm` never leaves half a file; two concurrent writers of `sessions.json` may lose one
//! update, which costs only a default (the session itself lives on the server).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rmm_client::Token;
use rmm_domain::{AgentId, SessionId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CliError;

const TOKEN_FILE: &str = "token";
const SESSIONS_FILE: &str = "sessions.json";
const AGENTS_FILE: &str = "agents.json";
/// How long a name resolved to an agent is reused without asking the server.
pub const AGENT_CACHE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The token from `RMM_TOKEN`, when set and not empty.
///
/// # Errors
/// [`CliError::Config`] when it is set but not a usable token.
pub fn token_from_env() -> Result<Option<Token>, CliError> {
    match std::env::var("RMM_TOKEN") {
        Ok(value) if !value.trim().is_empty() => Token::parse(&value).map(Some).map_err(|e| {
            CliError::Config(format!(
                "RMM_TOKEN is not usable: {e}; unset it or set it to the token from `rmm login`"
            ))
        }),
        Ok(_) | Err(_) => Ok(None),
    }
}

/// The CLI's folder in the user's config directory.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    /// Finds the folder (it is created on the first write).
    ///
    /// # Errors
    /// [`CliError::Config`] when neither `XDG_CONFIG_HOME` nor `HOME` (`APPDATA` on Windows)
    /// names an absolute directory.
    pub fn locate() -> Result<Self, CliError> {
        let absolute = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let base = absolute("XDG_CONFIG_HOME")
            .or_else(|| absolute("HOME").map(|home| home.join(".config")))
            .or_else(|| absolute("APPDATA"))
            .ok_or_else(|| {
                CliError::Config(
                    "cannot find your config directory: set HOME or XDG_CONFIG_HOME".into(),
                )
            })?;
        Ok(Self {
            path: base.join("rmm"),
        })
    }

    #[cfg(test)]
    fn at(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// The folder itself.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The agent `input` named on `server` when it was resolved less than
    /// [`AGENT_CACHE_TTL`] ago. Unreadable or damaged: none.
    #[must_use]
    pub fn cached_agent(&self, server: &str, input: &str) -> Option<rmm_client::AgentDto> {
        let bytes = fs::read(self.path.join(AGENTS_FILE)).ok()?;
        let cache: AgentCache = serde_json::from_slice(&bytes).ok()?;
        let now = Utc::now();
        cache
            .agents
            .into_iter()
            .find(|a| {
                a.server == server
                    && a.input == input
                    && now - a.resolved_at < AGENT_CACHE_TTL
                    && a.resolved_at <= now
            })
            .map(|a| a.agent)
    }

    /// Remembers (`Some`) or forgets (`None`) what `input` names on `server`; best effort
    /// (a cache that cannot be written costs only a lookup).
    pub fn cache_agent(&self, server: &str, input: &str, agent: Option<&rmm_client::AgentDto>) {
        let path = self.path.join(AGENTS_FILE);
        let mut cache: AgentCache = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let now = Utc::now();
        cache.agents.retain(|a| {
            !(a.server == server && a.input == input) && now - a.resolved_at < AGENT_CACHE_TTL
        });
        if let Some(agent) = agent {
            cache.agents.push(CachedAgent {
                server: server.to_owned(),
                input: input.to_owned(),
                agent: agent.clone(),
                resolved_at: now,
            });
        }
        if let Ok(json) = serde_json::to_vec(&cache) {
            let _ = self.write(AGENTS_FILE, &json);
        }
    }

    /// Where the token is kept.
    #[must_use]
    pub fn token_path(&self) -> PathBuf {
        self.path.join(TOKEN_FILE)
    }

    /// The saved token, if any.
    ///
    /// # Errors
    /// [`CliError::Config`] when the file exists but cannot be read or holds no token.
    pub fn load_token(&self) -> Result<Option<Token>, CliError> {
        let path = self.token_path();
        match fs::read_to_string(&path) {
            Ok(text) => Token::parse(&text).map(Some).map_err(|e| {
                CliError::Config(format!(
                    "{} is damaged ({e}): run `rmm login` again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CliError::Config(format!(
                "cannot read {}: {e}; check its permissions or run `rmm login` again",
                path.display()
            ))),
        }
    }

    /// Saves the token, readable by the user only.
    ///
    /// # Errors
    /// [`CliError::Config`] when the directory or file cannot be written.
    pub fn save_token(&self, token: &Token) -> Result<(), CliError> {
        self.write(TOKEN_FILE, format!("{}\n", token.expose()).as_bytes())
    }

    /// The sessions this CLI remembers.
    ///
    /// # Errors
    /// [`CliError::Config`] when the file exists but cannot be read. A file that does not
    /// parse is treated as empty: it only holds defaults, and the next save rewrites it.
    pub fn sessions(&self) -> Result<Sessions, CliError> {
        let path = self.path.join(SESSIONS_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sessions::default()),
            Err(e) => Err(CliError::Config(format!(
                "cannot read {}: {e}; check its permissions",
                path.display()
            ))),
        }
    }

    /// Saves the remembered sessions.
    ///
    /// # Errors
    /// [`CliError::Config`] when the directory or file cannot be written.
    pub fn save_sessions(&self, sessions: &Sessions) -> Result<(), CliError> {
        let json = serde_json::to_vec_pretty(sessions)
            .map_err(|e| CliError::Config(format!("cannot encode the sessions: {e}")))?;
        self.write(SESSIONS_FILE, &json)
    }

    /// Replaces `name` atomically with `contents`, mode 0600 in a 0700 directory.
    fn write(&self, name: &str, contents: &[u8]) -> Result<(), CliError> {
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            CliError::Config(format!(
                "cannot {what} {}: {e}; check its permissions or set XDG_CONFIG_HOME",
                path.display()
            ))
        };
        create_private_dir(&self.path).map_err(|e| failed("create", &self.path, e))?;
        let target = self.path.join(name);
        let temporary = self
            .path
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let result =
            write_private(&temporary, contents).and_then(|()| fs::rename(&temporary, &target));
        if let Err(e) = result {
            let _ = fs::remove_file(&temporary);
            return Err(failed("write", &target, e));
        }
        Ok(())
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        // An existing directory keeps its mode: tighten it, it holds a credential.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(path)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // `mode` applies only to a new file; a leftover one is tightened too.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }
}

/// The agents resolved by name lately.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AgentCache {
    #[serde(default)]
    agents: Vec<CachedAgent>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedAgent {
    server: String,
    /// What the user typed.
    input: String,
    agent: rmm_client::AgentDto,
    resolved_at: DateTime<Utc>,
}

/// The sessions this CLI opened and has not seen closed, per server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sessions {
    #[serde(default)]
    sessions: Vec<Remembered>,
}

/// One remembered session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub server: String,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub session_id: Uuid,
    pub opened_at: DateTime<Utc>,
}

impl Remembered {
    #[must_use]
    pub fn session(&self) -> SessionId {
        SessionId::from_uuid(self.session_id)
    }
}

impl Sessions {
    /// The sessions on `server`, oldest first.
    pub fn on<'a, 's>(
        &'a self,
        server: &'s str,
    ) -> impl Iterator<Item = &'a Remembered> + use<'a, 's> {
        self.sessions.iter().filter(move |s| s.server == server)
    }

    /// The remembered session to `agent` on `server`.
    #[must_use]
    pub fn for_agent(&self, server: &str, agent: AgentId) -> Option<&Remembered> {
        self.on(server).find(|s| s.agent_id == agent.as_uuid())
    }

    /// Remembers a session, replacing any other to the same agent on the same server (an
    /// agent has at most one tunnel).
    pub fn remember(&mut self, entry: Remembered) {
        self.sessions
            .retain(|s| !(s.server == entry.server && s.agent_id == entry.agent_id));
        self.sessions.push(entry);
    }

    /// Forgets a session; whether it was remembered.
    pub fn forget(&mut self, server: &str, session: SessionId) -> bool {
        let before = self.sessions.len();
        self.sessions
            .retain(|s| !(s.server == server && s.session_id == session.as_uuid()));
        self.sessions.len() != before
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(server: &str, agent: u128, session: u128) -> Remembered {
        Remembered {
            server: server.into(),
            agent_id: Uuid::from_u128(agent),
            agent_name: format!("agent-{agent}"),
            session_id: Uuid::from_u128(session),
            opened_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn one_session_per_agent_and_server_is_remembered() {
        let mut sessions = Sessions::default();
        sessions.remember(entry("a", 1, 10));
        sessions.remember(entry("a", 1, 11));
        sessions.remember(entry("b", 1, 12));
        assert_eq!(sessions.on("a").count(), 1);
        let agent = AgentId::from_uuid(Uuid::from_u128(1));
        assert_eq!(
            sessions.for_agent("a", agent).map(|s| s.session_id),
            Some(Uuid::from_u128(11))
        );
        assert!(sessions.forget("a", SessionId::from_uuid(Uuid::from_u128(11))));
        assert!(!sessions.forget("a", SessionId::from_uuid(Uuid::from_u128(11))));
        assert_eq!(sessions.on("b").count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_token_is_saved_for_the_user_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let temp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::at(&temp.path().join("rmm"));
        assert!(dir.load_token().unwrap().is_none());
        dir.save_token(&Token::parse("abc.def").unwrap()).unwrap();
        assert_eq!(dir.load_token().unwrap().unwrap().expose(), "abc.def");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.token_path()), 0o600);
        assert_eq!(mode(&temp.path().join("rmm")), 0o700);

        let mut sessions = Sessions::default();
        sessions.remember(entry("a", 1, 10));
        dir.save_sessions(&sessions).unwrap();
        assert_eq!(dir.sessions().unwrap().on("a").count(), 1);
    }
}
