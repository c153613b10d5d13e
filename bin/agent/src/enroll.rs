//! `rmm-agent enroll`: registers this machine with an enrollment token and writes the
//! agent's config file (its own key and the server), owner-only, atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use rmm_agent_runtime::{EnrollError, ServerUrl, enroll, host_facts};

/// The config file written when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/rmm-agent/agent.toml";
/// How long the enrollment request may take.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The server: https:// or http:// (its API URL), or wss:// or ws:// (the agents'
    /// WebSocket URL); either serves both.
    #[arg(long)]
    server: String,
    /// The enrollment token (from `rmm enroll-token create`).
    #[arg(long, env = "RMM_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// The agent's name (default: this machine's hostname).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the agent's config file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Overwrite an existing config file.
    #[arg(long)]
    force: bool,
    /// PEM file of extra CA certificates to trust for https:// / wss:// (self-signed
    /// servers); also written to the config file.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Enrolls and writes the config file; a refused token is one line saying why.
///
/// # Errors
/// A refused or failed enrollment, or a config file that cannot be written.
pub async fn run(args: EnrollArgs) -> anyhow::Result<()> {
    let server = ServerUrl::parse(&args.server).context("invalid server URL (--server)")?;
    if args.config.exists() && !args.force {
        bail!(
            "the config file {} exists already: pass --force to overwrite it",
            args.config.display()
        );
    }
    let name = match args.name.or_else(|| host_facts().hostname) {
        Some(name) => name,
        None => bail!("cannot read this machine's hostname: pass --name"),
    };
    let ca_file = args
        .ca_file
        .as_ref()
        .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.clone()));
    let enrolled = match enroll(
        &server,
        ca_file.as_deref(),
        &args.token,
        &name,
        ENROLL_TIMEOUT,
    )
    .await
    {
        Ok(enrolled) => enrolled,
        Err(
            e @ (EnrollError::Expired
            | EnrollError::UsedUp
            | EnrollError::Revoked
            | EnrollError::Invalid),
        ) => {
            bail!("enrollment refused: {e}")
        }
        Err(e) => return Err(e).context("enrollment failed"),
    };
    let mut text = format!(
        "# Written by `rmm-agent enroll`: agent {} ({}), group {}.\nserver = {}\nkey = {}\n",
        enrolled.agent_id,
        enrolled.name,
        enrolled.group,
        toml_string(server.as_str()),
        toml_string(&enrolled.agent_key),
    );
    if let Some(ca) = &ca_file {
        text.push_str(&format!(
            "ca_file = {}\n",
            toml_string(&ca.to_string_lossy())
        ));
    }
    write_private(&args.config, &text, args.force)
        .with_context(|| format!("cannot write the config file {}", args.config.display()))?;
    println!(
        "enrolled as agent {} ({}) in group {}; config written to {}\nrun it with: rmm-agent --config {}",
        enrolled.name,
        enrolled.agent_id,
        enrolled.group,
        args.config.display(),
        args.config.display()
    );
    Ok(())
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `text` to `path` with mode 0600: to a temporary file beside it, then renamed over
/// it, so a reader sees the old file or the whole new one. Refuses an existing `path` unless
/// `force`.
fn write_private(path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&folder)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent.toml".into());
    let temp = folder.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        if !force && path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it appeared while enrolling; pass --force to overwrite it",
            ));
        }
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_for_toml() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        let parsed: toml::Table =
            toml::from_str(&format!("k = {}", toml_string("x\"\n\\y"))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("x\"\n\\y"));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_owner_only_and_an_existing_one_needs_force() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.toml");
        write_private(&path, "a = 1\n", false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_private(&path, "a = 2\n", false).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 1\n");
        write_private(&path, "a = 2\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
