//! `rmm-bench cluster-fleet`: while `rmm-agent-sim` connects a fleet through the load balancer
//! to the cluster's nodes, how long until one node lists every agent as connected (the
//! presence the nodes tell each other), and then how the fleet spread over the nodes: each
//! node's connected agents (its `rmm_agents_connected` metric) and memory (`VmRSS`).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::api::Api;
use crate::measure::{self, Figures, Measurement, Part};

/// One node: `NAME=PID@METRICS_URL`.
#[derive(Debug, Clone)]
pub struct NodeArg {
    pub name: String,
    pub pid: u32,
    pub metrics: String,
}

impl std::str::FromStr for NodeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected NAME=PID@http://HOST:PORT/metrics");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (pid, metrics) = rest.split_once('@').ok_or_else(bad)?;
        Ok(Self {
            name: name.to_owned(),
            pid: pid.parse().map_err(|_| bad())?,
            metrics: metrics.to_owned(),
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// The node whose agent list is watched (http://127.0.0.1:PORT).
    #[arg(long)]
    pub server: String,
    #[arg(long, env = "RMM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Every node, `NAME=PID@METRICS_URL` (repeat).
    #[arg(long = "node", required = true)]
    pub nodes: Vec<NodeArg>,
    /// Agents the simulator connects.
    #[arg(long)]
    pub expect: usize,
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// What `cluster-fleet` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetFigures {
    pub agents: usize,
    /// From the start (with the simulator's) until the watched node listed every agent.
    pub listed_secs: f64,
    pub nodes: Vec<NodeShare>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeShare {
    pub node: String,
    pub agents: u64,
    pub rss_kib: u64,
}

/// Runs the measurement and writes its row.
///
/// # Errors
/// When the agents are not all listed in time, or a node's metrics or memory cannot be read.
pub async fn run(args: &FleetArgs) -> anyhow::Result<()> {
    let api = Api::with_token(&args.server, &args.token)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let listed_secs = loop {
        let connected = connected(&api).await.unwrap_or(0);
        if connected >= args.expect {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} agents listed as connected after {} s",
                connected,
                args.expect,
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut nodes = Vec::new();
    for node in &args.nodes {
        let text = api
            .http()
            .get(&node.metrics)
            .send()
            .await
            .with_context(|| format!("scraping {}", node.metrics))?
            .text()
            .await?;
        nodes.push(NodeShare {
            node: node.name.clone(),
            agents: agents_connected(&text),
            rss_kib: crate::procfs::rss_kib(node.pid)?,
        });
    }
    let m = Measurement {
        part: Part::Cluster,
        name: args.name.clone(),
        command: String::new(),
        figures: Figures::ClusterFleet(FleetFigures {
            agents: args.expect,
            listed_secs,
            nodes,
        }),
    };
    println!("{}", serde_json::to_string_pretty(&m)?);
    measure::write(&args.out, &m)
}

async fn connected(api: &Api) -> anyhow::Result<usize> {
    let listed: serde_json::Value = api
        .http()
        .get(api.url("/api/v1/agents"))
        .bearer_auth(api.token())
        .timeout(Duration::from_secs(20))
        .send()
        .await?
        .json()
        .await?;
    Ok(listed
        .as_array()
        .map_or(0, |a| a.iter().filter(|a| a["connected"] == true).count()))
}

/// The sum of `rmm_agents_connected` over its modes, from Prometheus' text format.
fn agents_connected(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("rmm_agents_connected{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn agents_are_summed_over_modes() {
        let text = "# HELP rmm_agents_connected x\n# TYPE rmm_agents_connected gauge\n\
                    rmm_agents_connected{mode=\"heartbeat\"} 1999\n\
                    rmm_agents_connected{mode=\"tunnel\"} 1\nrmm_sessions_open 1\n";
        assert_eq!(super::agents_connected(text), 2000);
    }

    #[test]
    fn a_node_argument_names_its_pid_and_metrics() {
        let node: super::NodeArg = "a=42@http://127.0.0.1:9/metrics".parse().expect("parses");
        assert_eq!(
            (node.name.as_str(), node.pid, node.metrics.as_str()),
            ("a", 42, "http://127.0.0.1:9/metrics")
        );
        assert!("a@1".parse::<super::NodeArg>().is_err());
    }
}
