//! Unit tests of the command lifecycle: text, statuses, ends and their reasons.

use super::*;

#[test]
fn command_text_rejects_blank_long_and_nul() {
    assert_eq!(CommandText::parse("ls -la").unwrap().as_str(), "ls -la");
    assert_eq!(CommandText::parse("  \n"), Err(CommandTextError::Empty));
    assert_eq!(
        CommandText::parse(&"x".repeat(CommandText::MAX_LEN + 1)),
        Err(CommandTextError::TooLong)
    );
    // Characters, not bytes: the longest command of 2-byte characters is accepted.
    assert!(CommandText::parse(&"é".repeat(CommandText::MAX_LEN)).is_ok());
    assert_eq!(CommandText::parse("a\0b"), Err(CommandTextError::Nul));
}

#[test]
fn running_ends_once_in_any_end() {
    for end in [
        CommandStatus::Completed,
        CommandStatus::TimedOut,
        CommandStatus::Cancelled,
        CommandStatus::Failed,
    ] {
        assert_eq!(CommandStatus::Running.finish(end), Ok(end));
        assert_eq!(
            end.finish(CommandStatus::Completed),
            Err(CommandStatusError::Ended(end))
        );
    }
    assert_eq!(
        CommandStatus::Running.finish(CommandStatus::Running),
        Err(CommandStatusError::NotAnEnd)
    );
}

#[test]
fn the_agents_end_reason_and_a_requested_cancel_decide_a_reported_end() {
    let end = |reason, cancel| {
        let end = CommandEnd::reported(0, None, reason, cancel);
        (end.status(), end.reason())
    };
    assert_eq!(end(None, false), (CommandStatus::Completed, None));
    let timed_out = (CommandStatus::TimedOut, Some(CommandEndReason::Timeout));
    assert_eq!(end(Some("timed_out"), false), timed_out);
    assert_eq!(end(Some("timed_out"), true), timed_out);
    let by_user = (
        CommandStatus::Cancelled,
        Some(CommandEndReason::CancelledByUser),
    );
    assert_eq!(end(Some("cancelled"), true), by_user);
    assert_eq!(end(None, true), by_user);
    assert_eq!(
        end(Some("cancelled"), false),
        (
            CommandStatus::Cancelled,
            Some(CommandEndReason::CancelledByAgent)
        )
    );
    assert_eq!(
        end(Some("something_new"), false),
        (CommandStatus::Completed, None)
    );
    let killed = CommandEnd::reported(137, Some("SIGKILL".into()), None, false);
    assert_eq!(killed.exit_code(), Some(137));
    assert_eq!(killed.signal(), Some("SIGKILL"));
    assert_eq!(killed.reason(), None);
}

#[test]
fn the_server_decides_only_ends_without_an_exit_code_and_never_a_completion() {
    for reason in CommandEndReason::ALL {
        let parts = CommandEnd::decided(reason).into_parts();
        assert_eq!(
            parts,
            CommandEndParts {
                status: reason.status(),
                exit_code: None,
                signal: None,
                reason: Some(reason),
            }
        );
        assert!(
            !matches!(
                parts.status,
                CommandStatus::Running | CommandStatus::Completed
            ),
            "{reason:?}"
        );
    }
}

#[test]
fn a_session_that_went_with_its_agent_fails_its_commands_and_a_closed_one_cancels_them() {
    let status = |r| CommandEndReason::SessionClosed(r).status();
    assert_eq!(
        status(CloseReason::AgentDisconnected),
        CommandStatus::Failed
    );
    assert_eq!(status(CloseReason::ServerRestart), CommandStatus::Failed);
    assert_eq!(status(CloseReason::AgentReconnected), CommandStatus::Failed);
    assert_eq!(status(CloseReason::AgentRevoked), CommandStatus::Failed);
    assert_eq!(status(CloseReason::ClosedByOwner), CommandStatus::Cancelled);
    assert_eq!(status(CloseReason::Idle), CommandStatus::Cancelled);
    assert_eq!(
        status(CloseReason::ServerShutdown),
        CommandStatus::Cancelled
    );
    assert_eq!(status(CloseReason::LoggedOut), CommandStatus::Cancelled);
    assert_eq!(CommandEndReason::AgentError.status(), CommandStatus::Failed);
    assert_eq!(
        CommandEndReason::NotDelivered.status(),
        CommandStatus::Failed
    );
    assert_eq!(
        CommandEndReason::ChannelInUse.status(),
        CommandStatus::Failed
    );
    assert_eq!(CommandEndReason::Timeout.status(), CommandStatus::TimedOut);
    assert_eq!(
        CommandEndReason::CancelledByUser.status(),
        CommandStatus::Cancelled
    );
}

#[test]
fn end_reasons_round_trip_through_text_and_reuse_the_sessions_words() {
    for reason in CommandEndReason::ALL {
        assert_eq!(CommandEndReason::parse(reason.as_str()), Some(reason));
    }
    for close in CloseReason::ALL {
        let reason = CommandEndReason::SessionClosed(close);
        assert!(CommandEndReason::ALL.contains(&reason), "{close:?}");
        assert_eq!(reason.as_str(), close.as_str());
    }
    let mut words: Vec<_> = CommandEndReason::ALL.iter().map(|r| r.as_str()).collect();
    words.sort_unstable();
    words.dedup();
    assert_eq!(
        words.len(),
        CommandEndReason::ALL.len(),
        "a word used twice"
    );
    assert_eq!(
        CommandEndReason::parse("agent_disconnected"),
        Some(CommandEndReason::SessionClosed(
            CloseReason::AgentDisconnected
        ))
    );
    assert_eq!(CommandEndReason::parse("completed"), None);
}

#[test]
fn a_run_takes_one_end_and_refuses_cancels_after_it() {
    let mut run = CommandRun::new();
    assert_eq!(run.status(), CommandStatus::Running);
    run.request_cancel().unwrap();
    assert!(run.cancel_requested());
    let cancelled = CommandEnd::reported(0, None, None, run.cancel_requested());
    run.end(&cancelled).unwrap();
    assert_eq!(run.status(), CommandStatus::Cancelled);
    let failed = CommandEnd::decided(CommandEndReason::AgentError);
    assert_eq!(
        run.end(&failed),
        Err(CommandStatusError::Ended(CommandStatus::Cancelled))
    );
    assert_eq!(
        run.request_cancel(),
        Err(CommandStatusError::Ended(CommandStatus::Cancelled))
    );
    assert_eq!(run.status(), CommandStatus::Cancelled);
}

#[test]
fn statuses_round_trip_through_text() {
    for s in CommandStatus::ALL {
        assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(CommandStatus::parse("done"), None);
}
