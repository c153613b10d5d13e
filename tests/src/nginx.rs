//! Runs Debian's nginx for a test: in the foreground (`daemon off;`), with its prefix, pid
//! file, logs and temporary folders in a folder of its own, its site configuration given by
//! the test (an `http`-level file such as deploy/nginx/rmm.conf); stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    dir: TempDir,
}

/// The nginx program: Debian installs it in /usr/sbin, which a test's PATH may lack.
fn program() -> anyhow::Result<PathBuf> {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        return Ok(sbin.to_owned());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|p| p.exists())
        .context("nginx is not installed: `apt-get install nginx-light` (scripts/test.sh does)")
}

impl Nginx {
    /// Starts nginx with `site` (the text of an `http`-level configuration file) and waits
    /// until every address of `listening` accepts connections.
    ///
    /// # Errors
    /// When nginx is missing, refuses the configuration, exits, or does not listen in 30 s.
    pub async fn start(site: &str, listening: &[SocketAddr]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // nginx's workers run as `nobody` when it is started as root: let them reach their
        // temporary folders, which the master creates inside this one.
        #[cfg(unix)]
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let d = dir.path().display();
        std::fs::write(dir.path().join("rmm.conf"), site)?;
        let main = format!(
            "daemon off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log stderr warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/rmm.conf;\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main)?;
        let child = Command::new(program()?)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self {
            child: Some(child),
            dir,
        };
        nginx.wait_listening(listening).await?;
        Ok(nginx)
    }

    async fn wait_listening(&mut self, listening: &[SocketAddr]) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("nginx exited during start-up: {status}");
            }
            let mut up = true;
            for addr in listening {
                up &= tokio::net::TcpStream::connect(addr).await.is_ok();
            }
            if up {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("nginx did not listen on {listening:?} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// nginx's access log so far.
    #[must_use]
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The access log once it contains `needle` (nginx writes a request's line when it
    /// finalises the request, which may be after its client has the answer), or as it is
    /// after `within`.
    pub async fn access_log_with(&self, needle: &str, within: std::time::Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let log = self.access_log();
            if log.contains(needle) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master (it stops its workers), then SIGKILL if it lingers.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
