//! Packaging (issue 16): the container image `scripts/build-image.sh` makes runs the server
//! against the PostgreSQL container, a real agent connects to it and a command runs through a
//! tunnel; the systemd unit as shipped passes `systemd-analyze verify`; the config file is
//! read by the real binary, under the environment and the flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use reqwest::Method;
use rmm_e2e::pg::fresh_database;
use rmm_e2e::real_agent::open_tunnel_on;
use rmm_e2e::server::{StartOptions, TestServer, binary};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image of the server binary these tests run (the debug build: the recipe is the same
/// for the release binary, the script's default).
fn build_image() -> anyhow::Result<String> {
    let out = std::process::Command::new("bash")
        .arg(workspace().join("scripts/build-image.sh"))
        .arg("--binary")
        .arg(binary("rmm-server")?)
        .args(["--image", "rmm-server:e2e"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running scripts/build-image.sh")?;
    ensure!(
        out.status.success(),
        "scripts/build-image.sh failed: {}",
        out.status
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn run_command(
    server: &TestServer,
    tech: &str,
    session: &str,
    command: &str,
) -> anyhow::Result<Value> {
    let (code, started) = server
        .call(
            Method::POST,
            &format!("/api/v1/tunnel/{session}/command"),
            Some(tech),
            Some(json!({ "command": command })),
        )
        .await?;
    ensure!(
        code == 200 || code == 202,
        "command answered {code}: {started}"
    );
    let id = started["command_id"].as_str().context("no command_id")?;
    for _ in 0..30 {
        let (code, status) = server
            .call(
                Method::GET,
                &format!("/api/v1/tunnel/{session}/commands/{id}?wait=10"),
                Some(tech),
                None,
            )
            .await?;
        ensure!(code == 200, "command status answered {code}: {status}");
        if status["status"] != "running" {
            return Ok(status);
        }
    }
    bail!("the command did not end")
}

#[tokio::test]
async fn the_image_serves_postgres_backed_tunnels_to_a_real_agent() -> anyhow::Result<()> {
    let image = build_image()?;
    let db = fresh_database().await?;
    let options = StartOptions {
        image: Some(image.clone()),
        capture_log: true,
        ..StartOptions::default()
    };
    let server = TestServer::start_with(&db, &[], options).await?;
    let tunnel = open_tunnel_on(server).await?;
    let done = run_command(
        &tunnel.server,
        &tunnel.tech,
        &tunnel.session,
        "echo from-agent; exit 4",
    )
    .await?;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["exit_code"], 4, "{done}");
    assert_eq!(done["stdout"], "from-agent\n", "{done}");
    // The server ran inside the image, as its unprivileged user.
    let log = tunnel.server.log_text().unwrap_or_default();
    assert!(
        log.contains("listening"),
        "no start-up line in the container's log:\n{log}"
    );
    let user = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "id", &image, "-un"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "rmm");
    Ok(())
}

#[test]
fn the_shipped_systemd_unit_verifies() -> anyhow::Result<()> {
    let unit = std::fs::read_to_string(workspace().join("deploy/rmm-server.service"))?;
    for line in [
        "User=rmm",
        "ProtectSystem=strict",
        "StateDirectory=rmm-server",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.contains(line),
            "deploy/rmm-server.service lacks {line}"
        );
    }
    // systemd-analyze checks the unit's syntax and that ExecStart's program exists: point it
    // at the binary under test.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rmm-server.service");
    let server = binary("rmm-server")?;
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rmm-server", &server.display().to_string()),
    )?;
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .context("systemd-analyze (Debian's systemd package) is missing")?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    Ok(())
}

/// Where the server listens with this config file, environment and flags (the `listening`
/// line first, then the lines logged before it).
async fn listening_on(
    config: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(binary("rmm-server")?);
    let data = tempfile::tempdir()?;
    cmd.env_clear()
        .env("RMM_CONFIG", config)
        .env("RMM_DATA_DIR", data.path())
        .env("RMM_DEV", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        let mut before = String::new();
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("listening") {
                return anyhow::Ok(format!("{}\n{before}", &line[at..]));
            }
            before.push_str(&line);
            before.push('\n');
        }
        bail!("the server exited without listening")
    })
    .await
    .context("no listening line within 30 s")??;
    child.kill().await.ok();
    Ok(found)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn a_flag_beats_the_environment_which_beats_the_config_file() -> anyhow::Result<()> {
    let (file_port, env_port, flag_port) = (free_port()?, free_port()?, free_port()?);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{file_port}\"\nidle_timeout_secs = 60\n"),
    )?;
    let from_file = listening_on(&config, &[], &[]).await?;
    assert!(
        from_file
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!(":{file_port}"))),
        "{from_file}"
    );
    assert!(!from_file.contains("holds a secret"), "{from_file}");
    let env = format!("127.0.0.1:{env_port}");
    let from_env = listening_on(&config, &[("RMM_LISTEN", &env)], &[]).await?;
    assert!(
        from_env
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!(":{env_port}"))),
        "{from_env}"
    );
    let flag = format!("127.0.0.1:{flag_port}");
    let from_flag = listening_on(&config, &[("RMM_LISTEN", &env)], &["--listen", &flag]).await?;
    assert!(
        from_flag
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!(":{flag_port}"))),
        "{from_flag}"
    );
    Ok(())
}

#[tokio::test]
async fn a_config_file_with_a_secret_that_anyone_may_read_is_named_in_a_warning()
-> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("server.toml");
    let port = free_port()?;
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\njwt_secret = \"{}\"\n",
            "s".repeat(40)
        ),
    )?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
    let open = listening_on(&config, &[], &[]).await?;
    assert!(
        open.contains("holds a secret") && open.contains("chmod 600"),
        "{open}"
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let closed = listening_on(&config, &[], &[]).await?;
    assert!(!closed.contains("holds a secret"), "{closed}");
    Ok(())
}

#[tokio::test]
async fn a_typo_in_the_config_file_stops_the_start_with_its_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nmax_sesions_per_user = 3\n",
    )?;
    let out = tokio::process::Command::new(binary("rmm-server")?)
        .env_clear()
        .env("RMM_DATA_DIR", dir.path())
        .args(["--config", &config.display().to_string(), "--dev"])
        .output()
        .await?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unknown setting `max_sesions_per_user`"),
        "{said}"
    );
    assert!(said.contains(&config.display().to_string()), "{said}");
    Ok(())
}
