//! The agent's settings: flags, environment and config file.

use super::*;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("rmm-agent").chain(args.iter().copied())).unwrap()
}

#[test]
fn flags_win_over_the_file_and_the_file_fills_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "server = \"ws://file:1\"\nkey = \"file-key\"\nheartbeat_secs = 7\n",
    )
    .unwrap();
    let c = config(cli(&[
        "--config",
        path.to_str().unwrap(),
        "--server",
        "ws://flag:2",
    ]))
    .unwrap();
    assert_eq!(c.server.as_str(), "ws://flag:2/api/v1/agent/ws");
    assert_eq!(c.key, AgentKey::parse("file-key").unwrap());
    assert_eq!(c.timings.heartbeat_interval, Duration::from_secs(7));
    assert_eq!(c.command_timeout, None);
}

#[test]
fn the_default_command_timeout_comes_from_the_flag_or_the_file_and_0_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "server = \"ws://h\"\nkey = \"k\"\ncommand_timeout_secs = 600\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let c = config(cli(&["--config", file])).unwrap();
    assert_eq!(c.command_timeout, Some(Duration::from_secs(600)));
    let c = config(cli(&["--config", file, "--command-timeout-secs", "5"])).unwrap();
    assert_eq!(c.command_timeout, Some(Duration::from_secs(5)));
    let c = config(cli(&["--config", file, "--command-timeout-secs", "0"])).unwrap();
    assert_eq!(c.command_timeout, None);
}

#[test]
fn a_missing_server_or_key_names_what_to_set() {
    let e = config(cli(&["--key", "k"])).unwrap_err().to_string();
    assert!(e.contains("--server") && e.contains("RMM_SERVER"), "{e}");
    let e = config(cli(&["--server", "ws://h"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("RMM_AGENT_KEY") && e.contains("--key"), "{e}");
}

#[test]
fn the_help_opens_with_the_programs_purpose() {
    use clap::CommandFactory as _;
    let help = Cli::command().render_help().to_string();
    assert!(
        help.starts_with("rmm-agent: connects this machine to an rmm-server"),
        "{help}"
    );
    let long = Cli::command().render_long_help().to_string();
    assert!(
        long.starts_with("rmm-agent: connects this machine to an rmm-server"),
        "{long}"
    );
}

#[test]
fn the_servers_http_url_serves_the_agent_too() {
    let c = config(cli(&["--server", "https://rmm.example.com", "--key", "k"])).unwrap();
    assert_eq!(c.server.as_str(), "wss://rmm.example.com/api/v1/agent/ws");
    let e = format!(
        "{:#}",
        config(cli(&["--server", "ftp://h", "--key", "k"])).unwrap_err()
    );
    assert!(
        e.contains("invalid server URL") && e.contains("https://"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn a_key_file_open_to_others_gets_a_warning_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "key = \"k\"\n").unwrap();
    let warning = |mode: u32, holds_key: bool| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        key_file_warning(&path, &std::fs::metadata(&path).unwrap(), holds_key)
    };
    let w = warning(0o644, true).unwrap();
    assert!(
        w.contains("0644") && w.contains(&format!("chmod 600 {}", path.display())),
        "{w}"
    );
    assert!(warning(0o640, true).is_some());
    assert!(warning(0o602, true).is_some());
    assert_eq!(warning(0o600, true), None);
    assert_eq!(warning(0o400, true), None);
    assert_eq!(
        warning(0o644, false),
        None,
        "no key in the file: nothing to protect"
    );
}

#[test]
fn plain_ws_is_warned_about_beyond_this_machine_only() {
    let warned = |url: &str| plaintext_warning(&ServerUrl::parse(url).unwrap()).is_some();
    assert!(warned("ws://rmm.example.com"));
    assert!(warned("http://10.0.0.5:8080"));
    assert!(!warned("wss://rmm.example.com"));
    assert!(!warned("https://10.0.0.5"));
    assert!(!warned("ws://127.0.0.1:8080"));
    assert!(!warned("http://localhost:8080"));
    assert!(!warned("ws://[::1]:8080"));
}

#[test]
fn the_state_folder_and_partial_age_come_from_the_flag_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "server = \"ws://h\"\nkey = \"k\"\nstate_dir = \"/var/lib/x\"\npartial_max_age_secs = 60\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let c = config(cli(&["--config", file])).unwrap();
    assert_eq!(
        c.partial_journal.as_deref(),
        Some(Path::new("/var/lib/x/partials.journal"))
    );
    assert_eq!(c.partial_max_age, Duration::from_secs(60));
    let c = config(cli(&[
        "--config",
        file,
        "--state-dir",
        "/s",
        "--partial-max-age-secs",
        "0",
    ]))
    .unwrap();
    assert_eq!(
        c.partial_journal.as_deref(),
        Some(Path::new("/s/partials.journal"))
    );
    assert_eq!(
        c.partial_max_age,
        Duration::from_secs(1),
        "0 is the least, 1 s"
    );
}

#[test]
fn unknown_config_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "sever = \"ws://typo\"\n").unwrap();
    let e = format!(
        "{:#}",
        config(cli(&["--config", path.to_str().unwrap()])).unwrap_err()
    );
    assert!(e.contains("sever"), "{e}");
}
