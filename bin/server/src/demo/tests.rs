//! The demo agent's registration and its printed next steps.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use rmm_application::{App, Config};
use rmm_domain::{Role, Username};
use rmm_server::wiring::{Production, build_app};
use rmm_store::SqliteStore;

use super::*;

async fn fresh(dir: &Path) -> (Arc<SqliteStore>, Arc<App<Production<SqliteStore>>>) {
    let url = format!("sqlite://{}", dir.join("rmm.db").display());
    let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let app = build_app(Arc::clone(&store), Config::default());
    (store, app)
}

async fn with_admin(dir: &Path) -> (Arc<SqliteStore>, Arc<App<Production<SqliteStore>>>) {
    let (store, app) = fresh(dir).await;
    app.create_user(
        None,
        Username::parse(ADMIN).unwrap(),
        "password-1",
        Role::Admin,
    )
    .await
    .unwrap();
    (store, app)
}

#[tokio::test]
async fn the_demo_agent_is_registered_once_and_found_again_by_its_kept_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = with_admin(dir.path()).await;
    let first = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    assert_eq!(first.name.as_str(), "demo");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    assert_eq!((again.id, again.key), (first.id, first.key));
    assert_eq!(app.list_agents().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_or_stale_key_registers_a_fresh_demo_agent_under_the_next_name() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = with_admin(dir.path()).await;
    let first = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
    let second = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    assert_eq!(second.name.as_str(), "demo-2");
    assert_ne!(second.id, first.id);
    std::fs::write(dir.path().join(KEY_FILE), "rmmk_not-a-key-of-ours\n").unwrap();
    let third = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    assert_eq!(third.name.as_str(), "demo-3");
    let kept = ensure_registered(&*store, &app, dir.path()).await.unwrap();
    assert_eq!(kept.id, third.id);
}

#[tokio::test]
async fn without_a_user_named_admin_the_demo_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, app) = fresh(dir.path()).await;
    let e = ensure_registered(&*store, &app, dir.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`admin`"), "{e}");
    assert!(!dir.path().join(KEY_FILE).exists());
}

#[test]
fn the_next_steps_use_the_real_address_the_agent_and_a_new_password() {
    let agent = DemoAgent {
        id: AgentId::parse("7f74e9bf-0f33-4b8d-8cf6-fd76b6a1437e").unwrap(),
        name: AgentName::parse("demo-2").unwrap(),
        key: AgentKey::parse("k").unwrap(),
    };
    let addr = reachable("0.0.0.0:9090".parse().unwrap());
    let steps = next_steps(addr, &agent, Some("pw-123"), None);
    assert!(steps.contains("URL=http://127.0.0.1:9090\n"), "{steps}");
    assert!(steps.contains(r#""password":"pw-123""#), "{steps}");
    assert!(steps.contains(r#"{"agent_id":"7f74e9bf-0f33-4b8d-8cf6-fd76b6a1437e"}"#));
    assert!(steps.contains("rmm exec demo-2 -- uname -a"), "{steps}");
    assert!(steps.contains("export RMM_SERVER=http://127.0.0.1:9090\n"));
    assert!(steps.contains("echo 'pw-123' | rmm login --username admin --password-stdin"));
    // Without a built CLI the steps say how to build it and where it lands.
    assert!(
        steps.contains("`cargo build --release -p rmm-cli` (it lands in target/release/rmm)"),
        "{steps}"
    );
    let later = next_steps(addr, &agent, None, None);
    assert!(
        later.contains("\n    rmm login --username admin\n"),
        "{later}"
    );
    assert!(
        later.contains(r#""password":"<admin password>""#),
        "{later}"
    );
    assert_eq!(
        reachable("[::]:1".parse().unwrap()),
        "[::1]:1".parse().unwrap()
    );
    assert_eq!(
        reachable("10.0.0.5:8080".parse().unwrap()),
        "10.0.0.5:8080".parse().unwrap()
    );
}

#[test]
fn with_the_cli_built_the_next_steps_name_it_by_its_path_quoted_for_the_shell() {
    let agent = DemoAgent {
        id: AgentId::parse("7f74e9bf-0f33-4b8d-8cf6-fd76b6a1437e").unwrap(),
        name: AgentName::parse("demo").unwrap(),
        key: AgentKey::parse("k").unwrap(),
    };
    let addr = reachable("127.0.0.1:8080".parse().unwrap());
    let plain = next_steps(
        addr,
        &agent,
        Some("pw"),
        Some(Path::new("/opt/rmm/bin/rmm")),
    );
    assert!(plain.contains("\n  With the CLI:\n"), "{plain}");
    assert!(
        plain.contains("echo 'pw' | /opt/rmm/bin/rmm login --username admin --password-stdin\n"),
        "{plain}"
    );
    assert!(plain.contains("\n    /opt/rmm/bin/rmm agents\n"), "{plain}");
    assert!(plain.contains("\n    /opt/rmm/bin/rmm exec demo -- uname -a\n"));
    assert!(!plain.contains("cargo build"), "{plain}");
    let spaced = next_steps(
        addr,
        &agent,
        None,
        Some(Path::new("/home/me/it's here/rmm")),
    );
    assert!(
        spaced.contains("\n    '/home/me/it'\\''s here/rmm' login --username admin\n"),
        "{spaced}"
    );
    assert!(spaced.contains("\n    '/home/me/it'\\''s here/rmm' agents\n"));
}

#[test]
fn the_cli_is_found_only_when_it_is_a_file_beside_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("rmm-server");
    std::fs::write(&program, "").unwrap();
    assert_eq!(cli_beside(&program), None);
    let cli = dir
        .path()
        .join(format!("rmm{}", std::env::consts::EXE_SUFFIX));
    std::fs::create_dir(&cli).unwrap();
    assert_eq!(cli_beside(&program), None, "a folder named rmm is no CLI");
    std::fs::remove_dir(&cli).unwrap();
    std::fs::write(&cli, "").unwrap();
    assert_eq!(cli_beside(&program), Some(cli));
}
