//! The server's config file (TOML, `--config` or `RMM_CONFIG`): each key is a setting's long
//! flag name in snake case (`listen`, `database_url`, `max_sessions_per_user`), and its value
//! becomes that setting's default. So a flag wins over its environment variable, which wins
//! over the file, which wins over the built-in default. Unknown keys are errors: a typo must
//! not silently fall back to a default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Command;

/// The config file named by `--config FILE`, `--config=FILE` or `RMM_CONFIG`.
pub(crate) fn named(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("RMM_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `command` with the file's values as its settings' defaults.
pub(crate) fn apply(command: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut command = command;
    for (key, value) in table {
        let Some(id) = setting_id(&command, &key) else {
            bail!(
                "unknown setting `{key}` in {}: the keys are the long flags of `rmm-server --help` in snake case (e.g. `database_url`)",
                path.display()
            );
        };
        let value = value_text(&key, &value, path)?;
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    Ok(command)
}

/// The id of the setting whose long flag is `key` in snake case.
fn setting_id(command: &Command, key: &str) -> Option<String> {
    let flag = key.replace('_', "-");
    if flag == "config" || flag == "help" || flag == "version" {
        return None;
    }
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(flag.as_str()))
        .map(|arg| arg.get_id().to_string())
}

/// A TOML value as a command-line value: strings, integers and booleans as written; an array
/// of strings joined by commas (`trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]`).
fn value_text(key: &str, value: &toml::Value, path: &Path) -> anyhow::Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let parts: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            match parts {
                Some(parts) => parts.join(","),
                None => bail!(
                    "`{key}` in {}: a list must hold strings only",
                    path.display()
                ),
            }
        }
        other => bail!(
            "`{key}` in {}: expected a string, a number, true/false or a list of strings, not a {}",
            path.display(),
            other.type_str()
        ),
    })
}

/// Keys whose values are secrets: a config file holding one should be readable by its owner
/// only.
const SECRET_KEYS: [&str; 3] = ["jwt_secret", "database_url", "admin_password"];

/// Warns when the config file at `path` holds a secret and any user may read it. Called once
/// logging runs (the file is read before it, to parse the command line).
pub(crate) fn warn_if_readable_secrets(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let (Ok(meta), Ok(text)) = (std::fs::metadata(path), std::fs::read_to_string(path)) else {
            return;
        };
        let open = meta.permissions().mode() & 0o004 != 0;
        let has_secret = text.lines().any(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            SECRET_KEYS.contains(&key)
        });
        if open && has_secret {
            tracing::warn!(
                path = %path.display(),
                "the config file holds a secret and any user may read it; restrict it with `chmod 600 {}` (or 640 with the server's group)",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests;
