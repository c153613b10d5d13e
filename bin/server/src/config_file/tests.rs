use std::ffi::OsString;

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};

use super::*;
use crate::settings::Cli;

fn file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write config");
    file
}

fn parse(config: &str, args: &[&str]) -> anyhow::Result<Cli> {
    let config = file(config);
    let command = apply(Cli::command(), config.path())?;
    let mut argv = vec!["rmm-server".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let matches = command.try_get_matches_from(argv)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

#[test]
fn file_values_become_the_settings() {
    let cli = parse(
        "listen = \"127.0.0.1:9999\"\nmax_sessions_per_user = 3\ndev = true\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]\n",
        &[],
    )
    .expect("parse");
    assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(cli.settings.max_sessions_per_user, 3);
    assert!(cli.settings.dev);
    assert_eq!(
        cli.settings.trusted_proxies.to_string(),
        "10.0.0.0/8,192.168.1.1/32"
    );
}

#[test]
fn a_flag_wins_over_the_file() {
    let cli = parse(
        "listen = \"127.0.0.1:9999\"\n",
        &["--listen", "127.0.0.1:7777"],
    )
    .expect("parse");
    assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:7777");
}

#[test]
fn settings_absent_from_the_file_keep_their_defaults() {
    let cli = parse("listen = \"127.0.0.1:9999\"\n", &[]).expect("parse");
    assert_eq!(cli.settings.idle_timeout_secs, 1800);
    assert!(!cli.settings.dev);
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let e = parse("listne = \"127.0.0.1:9999\"\n", &[]).expect_err("typo accepted");
    let text = format!("{e:#}");
    assert!(text.contains("unknown setting `listne`"), "{text}");
}

#[test]
fn config_itself_is_not_a_key() {
    let e = parse("config = \"/etc/other.toml\"\n", &[]).expect_err("config key accepted");
    assert!(format!("{e:#}").contains("unknown setting `config`"));
}

#[test]
fn a_bad_value_names_the_key() {
    let e = parse("listen = 1.5\n", &[]).expect_err("float accepted");
    let text = format!("{e:#}");
    assert!(
        text.contains("`listen`") && text.contains("float"),
        "{text}"
    );
    let e = parse("listen = \"not an address\"\n", &[]).expect_err("bad address accepted");
    assert!(format!("{e:#}").contains("listen"), "{e:#}");
}

#[test]
fn bad_toml_names_the_file() {
    let config = file("listen = \n");
    let e = apply(Cli::command(), config.path()).expect_err("bad toml accepted");
    assert!(format!("{e:#}").contains("is not valid TOML"), "{e:#}");
}

#[test]
fn the_file_is_found_by_flag_or_by_equals() {
    let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(
        named(&args(&["rmm-server", "--config", "/a.toml", "serve"])),
        Some("/a.toml".into())
    );
    assert_eq!(
        named(&args(&["rmm-server", "user", "list", "--config=/b.toml"])),
        Some("/b.toml".into())
    );
}

/// docs/deploy.md's table of settings is this code's: `UPDATE_DOCS=1 cargo test -p rmm-server`
/// rewrites it.
#[test]
fn the_settings_table_in_the_docs_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploy.md");
    let docs = std::fs::read_to_string(path).expect("docs/deploy.md");
    let (start, end) = (
        "<!-- settings-table:start -->\n",
        "<!-- settings-table:end -->",
    );
    let from = docs.find(start).expect("start marker in docs/deploy.md") + start.len();
    let to = docs.find(end).expect("end marker in docs/deploy.md");
    let table = reference_table(&Cli::command());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &docs[..from], &docs[to..]);
        std::fs::write(path, updated).expect("write docs/deploy.md");
        return;
    }
    assert_eq!(
        docs[from..to],
        table,
        "docs/deploy.md's settings table is stale: run `UPDATE_DOCS=1 cargo test -p rmm-server settings_table`"
    );
}

/// One row per setting of `command` (and its subcommands' own settings are not settings):
/// config key, flag, environment variable, default, and its help.
fn reference_table(command: &Command) -> String {
    let mut out = String::from(
        "| config key | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
    );
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if matches!(long, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        let key = if long == "config" {
            "—".to_owned()
        } else {
            format!("`{}`", long.replace('-', "_"))
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_else(|| "—".to_owned());
        out.push_str(&format!(
            "| {key} | `--{long}` | {env} | {} | {} |\n",
            default_text(arg),
            help_line(arg)
        ));
    }
    out
}

fn default_text(arg: &Arg) -> String {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return "`false`".to_owned();
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    match defaults.join(",") {
        d if d.is_empty() => "—".to_owned(),
        d => format!("`{d}`"),
    }
}

fn help_line(arg: &Arg) -> String {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    // On one line, without table-breaking pipes.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    help.trim_end_matches('.').replace('|', "\\|")
}
