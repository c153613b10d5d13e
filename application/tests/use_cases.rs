//! Use cases against mocked ports.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use common::*;
use mockall::predicate::eq;
use rmm_application::*;
use rmm_domain::*;
use uuid::Uuid;

#[tokio::test]
async fn open_answers_active_only_after_the_agent_is_ready() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .withf(|sess, _, _| sess.status() == SessionStatus::Pending && sess.owner() == TECH.id)
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .with(eq(AGENT), eq(SESSION), eq(TECH.id))
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .with(
            eq(SESSION),
            eq(now()),
            eq(AuditNote::new(AuditAction::TunnelOpen, None)),
        )
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));

    let session = s.build().open_tunnel(TECH, AGENT).await.unwrap();
    assert_eq!(session.status(), SessionStatus::Active);
    assert_eq!(session.id(), SESSION);
}

#[tokio::test]
async fn open_of_an_offline_agent_touches_nothing() {
    let mut s = Setup::default();
    s.gateway.expect_mode().return_const(None);
    s.sessions.expect_insert_pending_capped().never();
    let err = s.build().open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::AgentOffline(a) if a == AGENT));
}

#[tokio::test]
async fn a_refusal_closes_the_pending_session_and_is_audited() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(async { Ok(OpenReply::Refused("busy".into())) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::Refused),
            eq(now()),
            eq(AuditNote::new(
                AuditAction::TunnelRefused,
                Some("agent refused the tunnel: busy".into()),
            )),
        )
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(Some(closed(TECH, CloseReason::Refused))) }));
    s.sessions.expect_activate().never();
    let err = s.build().open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::Refused(ref why) if why == "busy"));
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_open_times_out_abandons_and_closes() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(std::future::pending()));
    s.gateway
        .expect_abandon_open()
        .with(eq(AGENT), eq(SESSION))
        .times(1)
        .return_const(());
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::OpenTimeout),
            eq(now()),
            eq(AuditNote::new(
                AuditAction::TunnelTimeout,
                Some("agent did not confirm the tunnel within 10s".into()),
            )),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::OpenTimeout))) })
        });
    let app = s.build();
    let started = tokio::time::Instant::now();
    let err = app.open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::Timeout(d) if d == Duration::from_secs(10)));
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn a_disconnect_during_the_handshake_closes_the_pending_session() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(async { Err(GatewayError::Disconnected) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::AgentDisconnected),
            eq(now()),
            eq(AuditNote::new(
                AuditAction::TunnelClose,
                Some("agent disconnected before confirming the tunnel".into()),
            )),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::AgentDisconnected))) })
        });
    let err = s.build().open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::AgentGone));
}

#[tokio::test]
async fn a_ready_that_loses_the_race_with_a_disconnect_is_not_active() {
    let mut s = Setup::default().agent_connected();
    s.sessions
        .expect_insert_pending_capped()
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.gateway
        .expect_open_tunnel()
        .returning(|_, _, _| Box::pin(async { Ok(OpenReply::Ready) }));
    s.sessions
        .expect_activate()
        .returning(|_, _, _| Box::pin(async { Ok(false) }));
    s.gateway
        .expect_close_tunnel()
        .with(eq(AGENT), eq(SESSION))
        .times(1)
        .return_const(());
    s.audit.expect_append().never();
    let err = s.build().open_tunnel(TECH, AGENT).await.unwrap_err();
    assert!(matches!(err, OpenTunnelError::AgentGone));
}

#[tokio::test]
async fn the_owner_closes_tells_the_agent_and_audits() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .with(eq(SESSION))
        .returning(|_| Box::pin(async { Ok(Some(stored(TECH))) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::ClosedByOwner),
            eq(now()),
            eq(AuditNote::close(CloseReason::ClosedByOwner)),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::ClosedByOwner))) })
        });
    s.gateway
        .expect_close_tunnel()
        .with(eq(AGENT), eq(SESSION))
        .times(1)
        .return_const(());
    let session = s.build().close_tunnel(TECH, SESSION).await.unwrap();
    assert_eq!(session.close_reason(), Some(CloseReason::ClosedByOwner));
}

#[tokio::test]
async fn another_tech_may_neither_close_nor_read() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Ok(Some(stored(TECH))) }));
    s.sessions.expect_close().never();
    let app = s.build();
    assert!(matches!(
        app.close_tunnel(OTHER_TECH, SESSION).await,
        Err(CloseTunnelError::Forbidden(_))
    ));
    assert!(matches!(
        app.tunnel_status(OTHER_TECH, SESSION).await,
        Err(GetTunnelStatusError::Forbidden(_))
    ));
}

#[tokio::test]
async fn an_admin_closes_anothers_session_with_the_admin_reason() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Ok(Some(stored(TECH))) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::ClosedByAdmin),
            eq(now()),
            eq(AuditNote::close(CloseReason::ClosedByAdmin)),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::ClosedByAdmin))) })
        });
    s.gateway.expect_close_tunnel().return_const(());
    let session = s.build().close_tunnel(ADMIN, SESSION).await.unwrap();
    assert_eq!(session.close_reason(), Some(CloseReason::ClosedByAdmin));
}

#[tokio::test]
async fn closing_a_closed_session_reports_it_without_a_second_close() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Ok(Some(closed(TECH, CloseReason::Idle))) }));
    s.sessions
        .expect_close()
        .returning(|_, _, _, _| Box::pin(async { Ok(None) }));
    s.gateway.expect_close_tunnel().never();
    s.audit.expect_append().never();
    let session = s.build().close_tunnel(TECH, SESSION).await.unwrap();
    assert_eq!(session.close_reason(), Some(CloseReason::Idle));
}

#[tokio::test]
async fn status_of_an_unknown_session_is_not_found() {
    let mut s = Setup::default();
    s.sessions
        .expect_get()
        .returning(|_| Box::pin(async { Ok(None) }));
    assert!(matches!(
        s.build().tunnel_status(TECH, SESSION).await,
        Err(GetTunnelStatusError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_disconnect_closes_only_that_connections_session() {
    let mut s = Setup::default();
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::AgentDisconnected),
            eq(now()),
            eq(AuditNote::close(CloseReason::AgentDisconnected)),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::AgentDisconnected))) })
        });
    let app = s.build();
    app.agent_disconnected(AGENT, Some(SESSION)).await.unwrap();
    app.agent_disconnected(AGENT, None).await.unwrap();
}

#[tokio::test]
async fn a_running_command_whose_agent_disconnects_ends_failed_saying_why() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.commands
        .expect_insert_command()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .returning(|_, _, _, _, _, _| Ok(()));
    s.gateway
        .expect_release_channel()
        .withf(|agent, ch| *agent == AGENT && *ch == ChannelId::for_command(COMMAND))
        .times(1)
        .return_const(());
    let why = CommandEndReason::SessionClosed(CloseReason::AgentDisconnected);
    s.commands
        .expect_finish_command()
        .withf(move |id, o, e| {
            *id == COMMAND
                && o.status == CommandStatus::Failed
                && o.end_reason == Some(why)
                && o.exit_code.is_none()
                && e.action == AuditAction::CommandEnd
                && e.detail.as_deref() == Some("agent_disconnected")
                && e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("failed")
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::AgentDisconnected),
            eq(now()),
            eq(AuditNote::close(CloseReason::AgentDisconnected)),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::AgentDisconnected))) })
        });
    let app = s.build();
    app.run_command(TECH, SESSION, "sleep 300", None, None)
        .await
        .unwrap();
    app.agent_disconnected(AGENT, Some(SESSION)).await.unwrap();
}

#[tokio::test]
async fn a_known_key_authenticates_without_touching_any_session() {
    let mut s = Setup::default();
    let digest = KeyDigest([9; 32]);
    s.credentials
        .expect_digest_agent_key()
        .with(eq("k"))
        .return_const(digest);
    s.agents.expect_find_agent_by_key().returning(move |d| {
        Box::pin(async move {
            Ok(Some(AgentRecord {
                id: AGENT,
                name: AgentName::parse("web-01").unwrap(),
                group: rmm_domain::GroupName::default_group(),
                revoked: false,
                key_digest: d,
                created_at: now(),
                last_seen: None,
                facts: HostFacts::default(),
            }))
        })
    });
    // Authentication alone changes nothing: the upgrade may still fail.
    let agent = s.build().authenticate_agent("k").await.unwrap();
    assert_eq!(agent.id, AGENT);
}

#[tokio::test]
async fn a_connected_agent_closes_what_its_previous_connection_left_open() {
    let mut s = Setup::default();
    s.sessions
        .expect_close()
        .with(
            eq(SESSION),
            eq(CloseReason::AgentReconnected),
            eq(now()),
            eq(AuditNote::close(CloseReason::AgentReconnected)),
        )
        .times(1)
        .returning(|_, _, _, _| {
            Box::pin(async { Ok(Some(closed(TECH, CloseReason::AgentReconnected))) })
        });
    let app = s.build();
    app.agent_connected(AGENT, Some(SESSION)).await.unwrap();
    // A first connection (nothing replaced) closes nothing.
    app.agent_connected(AGENT, None).await.unwrap();
}

#[tokio::test]
async fn an_unknown_agent_key_is_rejected() {
    let mut s = Setup::default();
    s.credentials
        .expect_digest_agent_key()
        .return_const(KeyDigest([1; 32]));
    s.agents
        .expect_find_agent_by_key()
        .returning(|_| Box::pin(async { Ok(None) }));
    assert!(matches!(
        s.build().authenticate_agent("nope").await,
        Err(ConnectAgentError::UnknownKey)
    ));
}

#[tokio::test]
async fn a_heartbeat_that_omits_a_fact_keeps_the_earlier_one() {
    let mut s = Setup::default();
    s.agents
        .expect_record_seen()
        .withf(|seen| {
            let facts = seen[0].2.as_ref().unwrap();
            facts.hostname.as_deref() == Some("h1") && facts.os.as_deref() == Some("linux")
        })
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    s.sessions
        .expect_close_idle()
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
    no_open_sessions(&mut s);
    let app = s.build();
    app.agent_heartbeat(
        AGENT,
        Some(HostFacts {
            hostname: Some("h1".into()),
            ..HostFacts::default()
        }),
    );
    app.agent_heartbeat(
        AGENT,
        Some(HostFacts {
            os: Some("linux".into()),
            ..HostFacts::default()
        }),
    );
    app.agent_heartbeat(AGENT, None);
    app.flush_presence_and_close_idle().await.unwrap();
}

#[tokio::test]
async fn heartbeats_are_written_in_one_batch_per_flush() {
    let mut s = Setup::default();
    s.agents
        .expect_record_seen()
        .withf(|seen| {
            seen.len() == 1
                && seen[0].0 == AGENT
                && seen[0].2.as_ref().and_then(|f| f.hostname.as_deref()) == Some("h2")
        })
        .times(1)
        .returning(|_| Box::pin(async { Ok(()) }));
    s.sessions.expect_touch().never();
    s.sessions
        .expect_close_idle()
        .times(2)
        .returning(|_, _, _| Box::pin(async { Ok(vec![]) }));
    no_open_sessions(&mut s);
    let app = s.build();
    for host in ["h1", "h2"] {
        app.agent_heartbeat(
            AGENT,
            Some(HostFacts {
                hostname: Some(host.into()),
                ..HostFacts::default()
            }),
        );
    }
    assert_eq!(app.flush_presence_and_close_idle().await.unwrap(), 0);
    // Nothing new: the second flush writes nothing.
    assert_eq!(app.flush_presence_and_close_idle().await.unwrap(), 0);
}

#[tokio::test]
async fn idle_sessions_are_closed_and_their_agents_told() {
    let mut s = Setup::default();
    s.sessions
        .expect_close_idle()
        .with(
            eq(now().minus(Duration::from_secs(60))),
            eq(now()),
            eq(AuditNote::close(CloseReason::Idle)),
        )
        .returning(|_, _, _| Box::pin(async { Ok(vec![closed(TECH, CloseReason::Idle)]) }));
    s.gateway
        .expect_close_tunnel()
        .with(eq(AGENT), eq(SESSION))
        .times(1)
        .return_const(());
    no_open_sessions(&mut s);
    assert_eq!(s.build().flush_presence_and_close_idle().await.unwrap(), 1);
}

#[tokio::test]
async fn only_admins_register_agents() {
    let s = Setup::default();
    let err = s
        .build()
        .register_agent(TECH, AgentName::parse("x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterAgentError::Forbidden));
}

#[tokio::test]
async fn login_with_an_unknown_user_still_verifies_a_hash_and_fails() {
    let mut s = Setup::default();
    s.users
        .expect_find_user()
        .returning(|_| Box::pin(async { Ok(None) }));
    s.credentials
        .expect_verify_password()
        .times(1)
        .returning(|_, _| Box::pin(async { Ok(false) }));
    assert!(matches!(
        s.build().login("ghost", "pw", None).await,
        Err(LoginError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn login_with_the_right_password_yields_the_actor() {
    let mut s = Setup::default();
    s.users.expect_find_user().returning(|name| {
        let username = name.clone();
        Box::pin(async move {
            Ok(Some(UserRecord {
                id: ADMIN.id,
                username,
                password_hash: "h".into(),
                role: Role::Admin,
                created_at: now(),
                disabled: false,
                last_login_at: None,
            }))
        })
    });
    s.credentials
        .expect_verify_password()
        .withf(|p, h| p == "pw" && h == "h")
        .returning(|_, _| Box::pin(async { Ok(true) }));
    assert_eq!(s.build().login("admin", "pw", None).await.unwrap(), ADMIN);
}

// ---- commands ----

#[tokio::test]
async fn a_command_is_stored_with_its_audit_entry_before_it_is_sent() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    let mut seq = mockall::Sequence::new();
    s.commands
        .expect_insert_command()
        .withf(|r, e| {
            r.id == COMMAND
                && r.status == CommandStatus::Running
                && e.action == AuditAction::Command
                && e.user == Some(TECH.id)
                && e.session == Some(SESSION)
                && e.command.as_ref().and_then(|c| c.command_id) == Some(COMMAND)
                && e.command.as_ref().and_then(|c| c.text.as_deref()) == Some("uptime")
                && e.command.as_ref().and_then(|c| c.status.as_deref()) == Some("running")
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .withf(|a, sess, _, cmd, timeout, stdin| {
            *a == AGENT && *sess == SESSION && cmd == "uptime" && *timeout == 300 && !*stdin
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _, _, _| Ok(()));
    let record = s
        .build()
        .run_command(TECH, SESSION, "uptime", None, None)
        .await
        .unwrap();
    assert_eq!(record.status, CommandStatus::Running);
    assert_eq!(record.channel, ChannelId::for_command(COMMAND));
}

#[tokio::test]
async fn a_command_is_refused_when_it_cannot_be_recorded_with_its_audit_entry() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.commands
        .expect_insert_command()
        .times(1)
        .returning(|_, _| {
            Box::pin(async { Err(StoreError::backend(std::io::Error::other("disk full"))) })
        });
    s.gateway.expect_send_command().never();
    let err = s
        .build()
        .run_command(TECH, SESSION, "uptime", None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RunCommandError::AuditUnavailable(_)));
}

#[tokio::test]
async fn commands_are_validated_and_only_the_owner_may_run_them() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.gateway.expect_send_command().never();
    let app = s.build();
    assert!(matches!(
        app.run_command(TECH, SESSION, "  ", None, None).await,
        Err(RunCommandError::Invalid(_))
    ));
    assert!(matches!(
        app.run_command(TECH, SESSION, "x", Some(0), None).await,
        Err(RunCommandError::Invalid(_))
    ));
    assert!(matches!(
        app.run_command(TECH, SESSION, "x", Some(7 * 24 * 3600), None)
            .await,
        Err(RunCommandError::Invalid(_))
    ));
    assert!(matches!(
        app.run_command(OTHER_TECH, SESSION, "x", None, None).await,
        Err(RunCommandError::Forbidden(_))
    ));
    assert!(matches!(
        app.run_command(ADMIN, SESSION, "x", None, None).await,
        Err(RunCommandError::Forbidden(_))
    ));
}

#[tokio::test]
async fn output_is_stored_up_to_the_cap_streamed_whole_and_the_end_recorded() {
    let mut s = Setup::default();
    active_session_store(&mut s);
    s.commands
        .expect_insert_command()
        .returning(|_, _| Box::pin(async { Ok(()) }));
    s.gateway
        .expect_send_command()
        .returning(|_, _, _, _, _, _| Ok(()));
    s.commands
        .expect_append_output()
        .withf(|id, stream, seq, data| {
            *id == COMMAND && *stream == OutputStream::Stdout && *seq == 0 && data == b"0123456789"
        })
        .times(1)
        .returning(|_, _, _, _| Box::pin(async { Ok(()) }));
    s.commands
        .expect_finish_command()
        .withf(|id, o, e| {
            let c = e.command.as_ref();
            *id == COMMAND
                && o.status == CommandStatus::TimedOut
                && o.end_reason == Some(CommandEndReason::Timeout)
                && e.detail.as_deref() == Some("timeout")
                && o.exit_code == Some(137)
                && o.stdout_bytes == 14
                && o.stdout_truncated
                && !o.stderr_truncated
                && e.action == AuditAction::CommandEnd
                && e.session == Some(SESSION)
                && c.and_then(|c| c.command_id) == Some(COMMAND)
                && c.and_then(|c| c.status.as_deref()) == Some("timed_out")
                && c.and_then(|c| c.exit_code) == Some(137)
                && c.and_then(|c| c.stdout_bytes) == Some(14)
        })
        .times(1)
        .returning(|_, _, _| Box::pin(async { Ok(true) }));
    s.streams.expect_publish().times(2).return_const(());
    s.max_stored_output = Some(10);
    let app = s.build();
    app.run_command(TECH, SESSION, "yes", None, None)
        .await
        .unwrap();
    let channel = ChannelId::for_command(COMMAND);
    // Another agent's output on the same channel id touches nothing.
    let other = AgentId::from_uuid(Uuid::from_u128(0xB));
    assert!(
        !app.command_output(
            other,
            &channel,
            OutputChunk {
                stdout: b"x".to_vec(),
                ..OutputChunk::default()
            }
        )
        .await
    );
    assert!(
        app.command_output(
            AGENT,
            &channel,
            OutputChunk {
                stdout: b"0123456789abcd".to_vec(),
                ..OutputChunk::default()
            }
        )
        .await
    );
    let end = OutputChunk {
        exit_code: Some(137),
        signal: Some("SIGKILL".into()),
        end_reason: Some("timed_out".into()),
        ..OutputChunk::default()
    };
    assert!(app.command_output(AGENT, &channel, end).await);
    // Ended: later frames on the channel are not a command's any more.
    assert!(
        !app.command_output(AGENT, &channel, OutputChunk::default())
            .await
    );
}

#[tokio::test]
async fn technicians_read_only_their_own_audit_entries() {
    let mut s = Setup::default();
    s.audit
        .expect_list_audit()
        .withf(|q| q.user == Some(TECH.id) && q.limit == 500)
        .times(1)
        .returning(|_| Box::pin(async { Ok(vec![]) }));
    let app = s.build();
    let everything = AuditQuery {
        limit: 10_000,
        ..AuditQuery::default()
    };
    assert!(app.list_audit(TECH, everything).await.unwrap().is_empty());
    let others = AuditQuery {
        user: Some(OTHER_TECH.id),
        limit: 10,
        ..AuditQuery::default()
    };
    assert!(matches!(
        app.list_audit(TECH, others).await,
        Err(ListAuditError::Forbidden)
    ));
}
