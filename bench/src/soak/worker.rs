//! One soak worker: operations on its own agent, one at a time (an agent holds one tunnel),
//! each checked as it ends. Any surprise is an error that ends the worker.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::time::Instant;

use super::{Agent, Counts, below};
use crate::api::Api;

#[derive(Debug, Clone, Copy)]
enum Op {
    /// `seq 1 N` and a line on stderr: both checked byte for byte.
    Command,
    /// A file of random bytes up, then down again: the content checked.
    Transfer,
    /// `sleep 30`, cancelled: it must end `cancelled`.
    Cancel,
    /// The tunnel closed by its owner.
    Close,
    /// The agent SIGKILLed with its tunnel open, then started again.
    Kill,
}

impl Op {
    /// Out of 100: mostly commands, transfers and closes; now and then a cancel or a kill.
    fn pick() -> Self {
        match below(100) {
            0..=44 => Self::Command,
            45..=64 => Self::Transfer,
            65..=72 => Self::Cancel,
            73..=95 => Self::Close,
            _ => Self::Kill,
        }
    }
}

pub(super) struct Worker {
    pub(super) agent: Agent,
    pub(super) counts: Counts,
    /// Every session this worker opened.
    pub(super) sessions: Vec<String>,
    open: Option<String>,
    files: u64,
}

impl Worker {
    pub(super) fn new(agent: Agent) -> Self {
        Self {
            agent,
            counts: Counts::default(),
            sessions: Vec::new(),
            open: None,
            files: 0,
        }
    }

    /// Until `deadline`, or one of each operation with `warm_up`; the tunnel is closed at
    /// the end.
    pub(super) async fn run(
        &mut self,
        api: &Api,
        deadline: Instant,
        warm_up: bool,
    ) -> anyhow::Result<()> {
        if warm_up {
            for op in [Op::Command, Op::Transfer, Op::Cancel, Op::Close, Op::Kill] {
                self.step(api, op).await?;
            }
        } else {
            while Instant::now() < deadline {
                let op = Op::pick();
                self.step(api, op)
                    .await
                    .with_context(|| format!("{op:?}"))?;
                // A technician's pace, not a benchmark's: the machine is shared.
                tokio::time::sleep(Duration::from_millis(50 + below(200))).await;
            }
        }
        if let Some(session) = self.open.take() {
            api.close_tunnel(&session).await?;
            self.counts.closes += 1;
        }
        Ok(())
    }

    async fn session(&mut self, api: &Api) -> anyhow::Result<String> {
        if let Some(s) = &self.open {
            return Ok(s.clone());
        }
        let s = api.open_tunnel(&self.agent.id).await.context("open")?;
        self.counts.opens += 1;
        self.sessions.push(s.clone());
        self.open = Some(s.clone());
        Ok(s)
    }

    async fn step(&mut self, api: &Api, op: Op) -> anyhow::Result<()> {
        match op {
            Op::Command => self.command(api).await,
            Op::Transfer => self.transfer(api).await,
            Op::Cancel => self.cancel(api).await,
            Op::Close => {
                if let Some(session) = self.open.take() {
                    api.close_tunnel(&session).await?;
                    self.counts.closes += 1;
                }
                Ok(())
            }
            Op::Kill => self.kill(api).await,
        }
    }

    async fn command(&mut self, api: &Api) -> anyhow::Result<()> {
        let session = self.session(api).await?;
        let n = 1 + below(30_000);
        let started = api
            .run_command(&session, &format!("seq 1 {n}; echo err-{n} >&2"), 60)
            .await?;
        let done = api.wait_command(&session, &started.command_id, 60).await?;
        let stdout: String = (1..=n).map(|i| format!("{i}\n")).collect();
        ensure!(
            done["status"] == "completed" && done["exit_code"] == 0,
            "seq 1 {n} ended {} / {}",
            done["status"],
            done["exit_code"]
        );
        ensure!(
            done["stdout"].as_str() == Some(stdout.as_str()),
            "seq 1 {n}: stdout differs ({} bytes stored)",
            done["stdout"].as_str().map_or(0, str::len)
        );
        ensure!(
            done["stderr"].as_str() == Some(format!("err-{n}\n").as_str()),
            "seq 1 {n}: stderr is {}",
            done["stderr"]
        );
        self.counts.commands += 1;
        self.counts.output_bytes += stdout.len() as u64;
        Ok(())
    }

    async fn transfer(&mut self, api: &Api) -> anyhow::Result<()> {
        let session = self.session(api).await?;
        let size = 1 + below(1024 * 1024);
        let data = random_bytes(usize::try_from(size).unwrap_or(1));
        self.files += 1;
        let path = self
            .agent
            .dir
            .join("files")
            .join(format!("f-{}.bin", self.files));
        let remote = path.to_string_lossy().into_owned();
        let url = files_url(api, &session, &remote)?;
        let r = api
            .http()
            .put(url.clone())
            .bearer_auth(api.token())
            .header("content-type", "application/octet-stream")
            .timeout(Duration::from_secs(120))
            .body(data.clone())
            .send()
            .await?;
        let status = r.status().as_u16();
        ensure!(
            status == 201,
            "upload answered {status}: {}",
            r.text().await?
        );
        let r = api
            .http()
            .get(url)
            .bearer_auth(api.token())
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        let status = r.status().as_u16();
        ensure!(status == 200, "download answered {status}");
        let back = r.bytes().await?;
        ensure!(
            back.as_ref() == data.as_slice(),
            "downloaded {} bytes differ from the {size} uploaded",
            back.len()
        );
        std::fs::remove_file(&path).with_context(|| format!("removing {remote}"))?;
        self.counts.transfers += 1;
        self.counts.transfer_bytes += 2 * size;
        Ok(())
    }

    async fn cancel(&mut self, api: &Api) -> anyhow::Result<()> {
        let session = self.session(api).await?;
        let started = api.run_command(&session, "sleep 30", 60).await?;
        let r = api
            .http()
            .delete(api.url(&format!(
                "/api/v1/tunnel/{session}/commands/{}",
                started.command_id
            )))
            .bearer_auth(api.token())
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        ensure!(
            status == 200 && body["status"] == "cancelled",
            "cancel answered {status}: {body}"
        );
        self.counts.cancels += 1;
        Ok(())
    }

    /// SIGKILL with the tunnel open: the session must close, and the agent come back.
    async fn kill(&mut self, api: &Api) -> anyhow::Result<()> {
        let session = self.session(api).await?;
        self.agent.kill().await;
        self.open = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = super::session_status(api, &session).await?;
            if status == "closed" {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the session of a killed agent is still {status} after 15 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.agent.start(api).await?;
        self.counts.agent_kills += 1;
        Ok(())
    }
}

fn files_url(api: &Api, session: &str, remote: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&api.url(&format!("/api/v1/tunnel/{session}/files")))?;
    url.query_pairs_mut().append_pair("path", remote);
    Ok(url)
}

/// `len` bytes of xorshift output from a random seed: random enough that a misplaced chunk
/// shows, cheap enough for megabytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = below(u64::MAX).max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
