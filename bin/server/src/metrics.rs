//! `/metrics`: the server's Prometheus metrics, on a listener of their own
//! (`RMM_METRICS_LISTEN`, off by default) so that they never face the API's clients. It has
//! no authentication: bind it to loopback or a private network.
//!
//! The adapters record through the `metrics` facade (the store's query times and command ends,
//! the gateway's bytes and dropped frames, the logins, the password-hash queue); here the
//! Prometheus recorder is installed and rendered. The connected agents and open sessions are
//! gauges read from the gateway at each scrape, so they cannot drift. Every series is listed,
//! with its type, labels and meaning, in docs/deploy.md ("Metrics").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::web::Data;
use poem::{EndpointExt, IntoResponse, Response, Route, get, handler};
use rmm_application::{App, OutputStream, Ports};
use rmm_domain::CommandStatus;
use rmm_gateway::agents::WsAgentGateway;
use rmm_gateway::streams::BroadcastStreams;
use rmm_gateway::telemetry::{Direction, Queue};

use crate::limits::Limits;

/// The buckets of `rmm_store_query_seconds`: 0.5 ms to 5 s.
const STORE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// How often histogram samples are folded in (bounds their memory between scrapes).
const UPKEEP: Duration = Duration::from_secs(5);
/// The `outcome` values of `rmm_logins_total` (rmm-http's `login_outcome`), shown from zero.
const LOGIN_OUTCOMES: [&str; 6] = [
    "ok",
    "bad_credentials",
    "throttled",
    "busy",
    "unavailable",
    "error",
];

/// The metrics listener, while it runs; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts `/metrics` on `listen` when it is set, logging where (or that metrics are off).
/// The recorder is installed only then: with metrics off, recording costs nothing.
///
/// # Errors
/// When the address cannot be bound, or a recorder is installed already.
pub async fn start<P>(
    listen: Option<SocketAddr>,
    app: Arc<App<P>>,
) -> anyhow::Result<Option<MetricsServer>>
where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let Some(listen) = listen else {
        tracing::info!("metrics off; set RMM_METRICS_LISTEN to serve /metrics");
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (RMM_METRICS_LISTEN)"))?;
    let addr = listener.local_addr()?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("rmm_store_query_seconds".into()),
            &STORE_BUCKETS,
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    let endpoint = Route::new()
        .at("/metrics", get(scrape::<P>::default()))
        .data(app)
        .data(handle.clone());
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
    let limits = Limits {
        max_json_body: 0,
        header_read_timeout: Duration::from_secs(10),
        max_connections: 16,
    };
    let task = tokio::spawn(async move {
        let upkeep = async {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        };
        let served = crate::http_server::run(acceptor, endpoint, limits, std::future::pending());
        tokio::select! {
            () = upkeep => {}
            served = served => if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener stopped");
            },
        }
    });
    tracing::info!(%addr, "metrics at http://{addr}/metrics (no authentication: keep this address private)");
    Ok(Some(MetricsServer { task }))
}

/// `GET /metrics`: the gauges read now, then every series in Prometheus' text format.
#[handler]
fn scrape<P>(app: Data<&Arc<App<P>>>, handle: Data<&PrometheusHandle>) -> Response
where
    P: Ports<Gateway = WsAgentGateway, Streams = BroadcastStreams>,
{
    let census = app.gateway().census();
    let agents = |mode: &'static str| metrics::gauge!("rmm_agents_connected", "mode" => mode);
    agents("heartbeat").set(census.heartbeat as f64);
    agents("tunnel").set(census.tunnel as f64);
    metrics::gauge!("rmm_sessions_open").set((census.tunnel + census.opening) as f64);
    handle
        .render()
        .with_content_type("text/plain; version=0.0.4; charset=utf-8")
        .into_response()
}

/// Each series' help text, and the counters of known label values at zero (so a rate over
/// them works before their first event).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "rmm_agents_connected",
        "Agents connected to this server, by mode (heartbeat, tunnel)."
    );
    describe_gauge!(
        "rmm_sessions_open",
        "Tunnel sessions open through this server (active, or waiting for the agent)."
    );
    describe_counter!("rmm_commands_total", "Commands ended, by final status.");
    describe_counter!(
        "rmm_command_output_bytes_total",
        Unit::Bytes,
        "Command output received from agents, by stream (stdout, stderr)."
    );
    describe_counter!(
        "rmm_file_transfer_bytes_total",
        Unit::Bytes,
        "File bytes moved to agents (upload) and from them (download)."
    );
    describe_counter!(
        "rmm_ws_frames_dropped_total",
        "WebSocket frames dropped because a bounded queue was full, by queue."
    );
    describe_histogram!(
        "rmm_store_query_seconds",
        Unit::Seconds,
        "Duration of store operations, by operation (port method)."
    );
    describe_counter!("rmm_logins_total", "Password logins, by outcome.");
    describe_gauge!(
        "rmm_cluster_nodes",
        "Cluster mode: the other nodes this one knows, by state (reachable: heard from within 4 s; silent)."
    );
    describe_counter!(
        "rmm_cluster_forwarded_total",
        "Cluster mode: requests for agents on other nodes, by result (forwarded; unreachable: answered 503 node_unreachable)."
    );
    describe_gauge!(
        "rmm_password_hashes",
        "Password hashes waiting for a hashing thread, and running."
    );
    for status in CommandStatus::ALL
        .into_iter()
        .filter(|s| *s != CommandStatus::Running)
    {
        metrics::counter!("rmm_commands_total", "status" => status.as_str()).absolute(0);
    }
    for outcome in LOGIN_OUTCOMES {
        metrics::counter!("rmm_logins_total", "outcome" => outcome).absolute(0);
    }
    for stream in [OutputStream::Stdout, OutputStream::Stderr] {
        metrics::counter!("rmm_command_output_bytes_total", "stream" => stream.as_str())
            .absolute(0);
    }
    for direction in Direction::ALL {
        metrics::counter!("rmm_file_transfer_bytes_total", "direction" => direction.as_str())
            .absolute(0);
    }
    for queue in Queue::ALL {
        metrics::counter!("rmm_ws_frames_dropped_total", "queue" => queue.as_str()).absolute(0);
    }
    for state in ["waiting", "running"] {
        metrics::gauge!("rmm_password_hashes", "state" => state).set(0.0);
    }
}
