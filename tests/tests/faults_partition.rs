//! Reliability (issue 17): a network partition between the real `rmm-agent` and the real
//! `rmm-server`. A [`TcpProxy`] between them stops forwarding without closing anything (a
//! black hole): each side must find its peer dead by its own read deadline (the server's
//! `RMM_AGENT_READ_IDLE_SECS` with pings every `RMM_PING_INTERVAL_SECS`; the agent's
//! `RMM_AGENT_READ_IDLE_SECS` with heartbeats every `RMM_AGENT_HEARTBEAT_SECS`), the
//! technician's session reads closed with its reason, and once the path returns the agent is
//! back through the proxy and a new tunnel runs a command.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use reqwest::Method;
use rmm_e2e::ops::{open_session, run_command, wait_session};
use rmm_e2e::real_agent::agent_command;
use rmm_e2e::reliability;
use rmm_e2e::server::TestServer;
use rmm_e2e::tcp_proxy::{Side, TcpProxy};

/// The server's read deadline and ping interval, seconds.
const SERVER_READ_IDLE: u64 = 3;
const SERVER_PING: u64 = 1;
/// The agent's read deadline and heartbeat interval, seconds (longer than the server's, so
/// each side is seen to act on its own setting).
const AGENT_READ_IDLE: u64 = 4;
const AGENT_HEARTBEAT: u64 = 1;
/// What a timer firing late, and the socket's close reaching the proxy, may add on a loaded
/// 2-core machine. The deadline each side applies is exactly its configured time after the
/// last frame it received (checked as a lower bound); this allowance only covers the wake-up.
/// Measured here: under 20 ms.
const SCHEDULING: Duration = Duration::from_secs(1);

async fn agents_connected(server: &TestServer, token: &str, agent_id: &str) -> bool {
    let (_, agents) = server
        .call(Method::GET, "/api/v1/agents", Some(token), None)
        .await
        .unwrap();
    agents
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent_id"] == agent_id && a["connected"] == true)
}

#[tokio::test]
async fn a_partition_is_detected_on_both_sides_and_the_agent_comes_back_after_it() {
    let db = rmm_e2e::pg::fresh_database().await.unwrap();
    let server = TestServer::start(
        &db,
        &[
            ("RMM_PING_INTERVAL_SECS", &SERVER_PING.to_string()),
            ("RMM_AGENT_READ_IDLE_SECS", &SERVER_READ_IDLE.to_string()),
        ],
    )
    .await
    .unwrap();
    let proxy = TcpProxy::start(server.addr).await.unwrap();
    let admin = server.admin_token().await.unwrap();
    let (agent_id, key) = server.register_agent(&admin, "web-01").await.unwrap();
    let _agent = agent_command(&server, &key, &[])
        .unwrap()
        .env("RMM_SERVER", format!("ws://{}", proxy.addr()))
        .env("RMM_AGENT_HEARTBEAT_SECS", AGENT_HEARTBEAT.to_string())
        .env("RMM_AGENT_READ_IDLE_SECS", AGENT_READ_IDLE.to_string())
        .spawn()
        .unwrap();
    server.wait_connected(&admin, &agent_id).await.unwrap();
    let tech = server.tech_token("tina").await.unwrap();
    let session = open_session(&server, &tech, &agent_id).await.unwrap();
    let before = run_command(
        &server,
        &tech,
        &session,
        "echo before",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(before["stdout"], "before\n", "{before}");
    assert_eq!(
        proxy.connections().len(),
        1,
        "the agent dialled more than once"
    );

    let partitioned = proxy.partition();

    // The technician sees the session closed, and why.
    let closed = wait_session(&server, &tech, &session, Duration::from_secs(15), |s| {
        s["status"] == "closed"
    })
    .await
    .unwrap();
    let seen_closed = partitioned.elapsed();
    assert_eq!(closed["close_reason"], "agent_disconnected", "{closed}");

    // Each side dropped the connection by its own deadline: the server's first (its socket
    // closed on the proxy's server side), then the agent's.
    let server_gave_up = proxy
        .wait_closed(0, Side::Upstream, Duration::from_secs(15))
        .await
        .unwrap();
    let agent_gave_up = proxy
        .wait_closed(0, Side::Client, Duration::from_secs(15))
        .await
        .unwrap();
    let log = &proxy.connections()[0];
    // Measured from the last bytes that reached each side: that is where its deadline starts.
    let server_silent = server_gave_up - log.last_to_upstream.unwrap();
    let agent_silent = agent_gave_up - log.last_to_client.unwrap();
    let server_detect = server_gave_up - partitioned;
    let agent_detect = agent_gave_up - partitioned;
    let server_window = Duration::from_secs(SERVER_READ_IDLE);
    let agent_window = Duration::from_secs(AGENT_READ_IDLE);
    assert!(
        server_silent >= server_window && server_detect <= server_window + SCHEDULING,
        "the server dropped the agent {server_silent:?} after its last frame ({server_detect:?} \
         into the partition); its read deadline is {server_window:?}"
    );
    assert!(
        agent_silent >= agent_window && agent_detect <= agent_window + SCHEDULING,
        "the agent dropped the server {agent_silent:?} after its last frame ({agent_detect:?} \
         into the partition); its read deadline is {agent_window:?}"
    );
    assert!(
        seen_closed <= server_window + SCHEDULING + Duration::from_secs(1),
        "the session read closed {seen_closed:?} into the partition"
    );
    assert!(!agents_connected(&server, &admin, &agent_id).await);

    // The path returns: the agent's next dial (held by the black hole, or a later one) gets
    // through, and the agent is back with a working tunnel.
    let healed = proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agents_connected(&server, &admin, &agent_id).await {
        assert!(
            Instant::now() < deadline,
            "the agent did not reconnect within 30 s of the path returning"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = healed.elapsed();
    assert!(
        proxy.connections().len() >= 2,
        "the agent came back without dialling again through the proxy"
    );
    let again = open_session(&server, &tech, &agent_id).await.unwrap();
    let after = run_command(
        &server,
        &tech,
        &again,
        "echo after",
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(after["stdout"], "after\n", "{after}");
    assert_eq!(after["status"], "completed", "{after}");

    let figure = format!(
        "server dropped the dead agent {:.2} s into the partition (deadline {SERVER_READ_IDLE} s, \
         pings every {SERVER_PING} s), agent dropped the server at {:.2} s (deadline \
         {AGENT_READ_IDLE} s, heartbeats every {AGENT_HEARTBEAT} s); session read closed \
         (agent_disconnected) at {:.2} s; agent back {:.2} s after the path returned, new \
         tunnel and command ok",
        server_detect.as_secs_f64(),
        agent_detect.as_secs_f64(),
        seen_closed.as_secs_f64(),
        back_after.as_secs_f64(),
    );
    reliability::record(
        "faults",
        "network partition agent-server (black hole, nothing closed): both sides detect it by their read deadlines, session closed with reason, agent reconnects when the path returns",
        &figure,
        "cargo build --workspace --bins && cargo test -p rmm-e2e --test faults_partition",
    );
}
