use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::*;
use crate::NO_TUNNEL;

#[tokio::test]
async fn a_terminal_frame_outside_a_tunnel_is_refused() {
    let (listener, url) = listener().await;
    let agent = tokio::spawn(run(config(url, fast(), false), std::future::pending()));
    let mut ws = accept(&listener).await;
    assert_eq!(next_json(&mut ws).await["type"], "heartbeat");
    send_json(
        &mut ws,
        terminal("terminal-1", "touch /tmp/should-not-exist"),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type":"tunnel_error","payload":{"channel_id":"terminal-1","error": NO_TUNNEL}})
    );
    agent.abort();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn concurrent_commands_each_stream_on_their_own_channel_and_channels_are_reused() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    send_json(&mut ws, terminal("cmd-a", "sleep 0.3; echo a")).await;
    send_json(&mut ws, terminal("cmd-b", "echo b >&2; exit 4")).await;
    // A duplicate of a running channel is refused; the running command is untouched.
    send_json(&mut ws, terminal("cmd-a", "echo dup")).await;
    let mut got: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    let mut refused = Vec::new();
    while got
        .values()
        .filter(|frames| frames.last().is_some_and(|f| !f["exit_code"].is_null()))
        .count()
        < 2
    {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("tunnel_error") => refused.push(frame["payload"].clone()),
            Some("tunnel_data") => got
                .entry(frame["payload"]["channel_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(frame["payload"]["data"]["payload"].clone()),
            _ => {}
        }
    }
    assert_eq!(
        refused,
        vec![serde_json::json!({"channel_id":"cmd-a","error":"channel cmd-a is already open"})]
    );
    assert_eq!(got["cmd-a"][0]["stdout"], "a\n");
    assert_eq!(got["cmd-a"][1]["exit_code"], 0);
    assert_eq!(got["cmd-b"][0]["stderr"], "b\n");
    assert_eq!(got["cmd-b"][1]["exit_code"], 4);
    // Finished commands released their channels: the ids run again.
    send_json(&mut ws, terminal("cmd-a", "echo again")).await;
    assert_eq!(next_output(&mut ws).await.1["stdout"], "again\n");
    assert_eq!(next_output(&mut ws).await.1["exit_code"], 0);
    agent.abort();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_frames_timeout_and_a_cancel_kill_the_group_with_their_end_reason() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    send_json(
        &mut ws,
        serde_json::json!({"type":"tunnel_data","payload":{"channel_id":"cmd-t","data":{"type":"terminal","payload":{"command":"echo $$; sleep 1000","timeout_secs":1}}}}),
    )
    .await;
    let (_, first) = next_output(&mut ws).await;
    let pgid: i32 = first["stdout"].as_str().unwrap().trim().parse().unwrap();
    let (channel, last) = next_output(&mut ws).await;
    assert_eq!(channel, "cmd-t");
    assert_eq!(last["end_reason"], "timed_out");
    exec::tests::assert_group_gone(pgid).await;

    let pgid = start_sleeper(&mut ws, "cmd-c").await;
    send_json(
        &mut ws,
        serde_json::json!({"type":"command_cancel","payload":{"channel_id":"cmd-c"}}),
    )
    .await;
    let (channel, last) = next_output(&mut ws).await;
    assert_eq!(channel, "cmd-c");
    assert_eq!(last["end_reason"], "cancelled");
    assert!(last["exit_code"].as_i64().is_some_and(|code| code > 128));
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn closing_the_tunnel_kills_its_running_commands() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let one = start_sleeper(&mut ws, "cmd-1").await;
    let two = start_sleeper(&mut ws, "cmd-2").await;
    send_json(
        &mut ws,
        serde_json::json!({"type":"tunnel_close","payload":{"session_id": SESSION}}),
    )
    .await;
    // Each still reports its end (the socket is up), as cancelled.
    let mut ended = [next_output(&mut ws).await, next_output(&mut ws).await];
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ended[0].0, "cmd-1");
    assert_eq!(ended[1].0, "cmd-2");
    assert!(
        ended
            .iter()
            .all(|(_, last)| last["end_reason"] == "cancelled")
    );
    exec::tests::assert_group_gone(one).await;
    exec::tests::assert_group_gone(two).await;
    agent.abort();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn losing_the_server_kills_the_running_commands() {
    let (mut ws, _stop, agent) = tunnel_agent(fast()).await;
    let pgid = start_sleeper(&mut ws, "cmd-1").await;
    drop(ws);
    // TERM at once; the shell and its children die of it well within the grace.
    exec::tests::assert_group_gone(pgid).await;
    agent.abort();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shutdown_kills_the_commands_and_reports_their_end_before_closing() {
    let (mut ws, stop, agent) = tunnel_agent(fast()).await;
    let pgid = start_sleeper(&mut ws, "cmd-1").await;
    stop.send(()).unwrap();
    let (channel, last) = next_output(&mut ws).await;
    assert_eq!(
        (channel.as_str(), &last["end_reason"]),
        ("cmd-1", &serde_json::json!("cancelled"))
    );
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(agent.await.unwrap().is_ok());
    exec::tests::assert_group_gone(pgid).await;
}
