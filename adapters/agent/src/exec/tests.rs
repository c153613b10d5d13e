use sha2::{Digest as _, Sha256};

use rmm_protocol::{AgentMessage, TerminalOutput, TunnelDataPayload};

use super::*;
use crate::chunker::CHUNK;

/// What one command sent, in order.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Every output frame except the last.
    chunks: Vec<TerminalOutput>,
    last: Option<TerminalOutput>,
    errors: Vec<String>,
    /// When the first output arrived, since the start.
    first_output_after: Option<Duration>,
    elapsed: Duration,
}

fn spec(command: &str, timeout: Option<Duration>) -> CommandSpec {
    CommandSpec {
        channel: ChannelId::parse("cmd-1").unwrap(),
        command: command.to_owned(),
        timeout,
        stdin: false,
        binary_output: false,
    }
}

fn fast_kill() -> KillTimings {
    KillTimings {
        grace: Duration::from_millis(500),
        drain: Duration::from_millis(500),
    }
}

/// Runs `command` through [`execute`] with a small queue (so backpressure is exercised)
/// and collects its frames; `on_first_output` may act on the stop sender once output has
/// started (the cancel tests).
async fn run_with(
    spec: CommandSpec,
    timings: KillTimings,
    mut on_first_output: impl FnMut(&[u8], &mut Option<oneshot::Sender<StopReason>>),
) -> Outcome {
    let (tx, mut rx) = mpsc::channel(4);
    let (stop, stopped) = oneshot::channel();
    let mut stop = Some(stop);
    let started = Instant::now();
    let task = tokio::spawn(async move { execute(spec, &tx, stopped, timings, None, None).await });
    let mut outcome = Outcome::default();
    while let Some(event) = rx.recv().await {
        let Event::Frame(frame) = event else {
            panic!("execute itself sends only frames, got {event:?}");
        };
        match frame {
            AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(output),
            } => {
                assert_eq!(channel_id, "cmd-1");
                assert!(
                    outcome.last.is_none(),
                    "a frame after the final one: {output:?}"
                );
                if output.exit_code.is_some() {
                    assert_eq!((output.stdout.as_str(), output.stderr.as_str()), ("", ""));
                    outcome.last = Some(output);
                    continue;
                }
                let (out, err) = output.bytes().unwrap();
                assert!(out.len() <= CHUNK && err.len() <= CHUNK);
                assert!(out.is_empty() != err.is_empty(), "one stream per frame");
                if outcome.first_output_after.is_none() {
                    outcome.first_output_after = Some(started.elapsed());
                }
                on_first_output(&out, &mut stop);
                outcome.stdout.extend_from_slice(&out);
                outcome.stderr.extend_from_slice(&err);
                outcome.chunks.push(output);
            }
            AgentMessage::TunnelError { error, .. } => outcome.errors.push(error),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    task.await.unwrap();
    outcome.elapsed = started.elapsed();
    outcome
}

async fn run(command: &str, timeout: Option<Duration>) -> Outcome {
    run_with(spec(command, timeout), fast_kill(), |_, _| {}).await
}

fn last(outcome: &Outcome) -> &TerminalOutput {
    outcome.last.as_ref().expect("a final frame")
}

/// The live (not zombie) processes of a process group, from /proc.
pub(crate) fn live_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

/// Polls briefly: a SIGKILLed process is gone a moment after the signal, not at once.
pub(crate) async fn assert_group_gone(pgid: i32) {
    for _ in 0..50 {
        if live_members(pgid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "processes of group {pgid} survived: {:?}",
        live_members(pgid)
    );
}

/// The commands below print `$$` first: the shell's pid, which is the group id.
fn pgid_of(outcome: &Outcome) -> i32 {
    let text = String::from_utf8_lossy(&outcome.stdout);
    text.lines().next().unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn stdout_stderr_and_the_exit_code_are_reported() {
    let outcome = run("echo out; echo err >&2; exit 3", None).await;
    assert_eq!(outcome.stdout, b"out\n");
    assert_eq!(outcome.stderr, b"err\n");
    let last = last(&outcome);
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(
        (last.signal.as_deref(), last.end_reason.as_deref()),
        (None, None)
    );
    // Valid UTF-8 travels as the reference's plain strings.
    assert!(
        outcome
            .chunks
            .iter()
            .all(|c| c.stdout_b64.is_none() && c.stderr_b64.is_none())
    );
}

#[tokio::test]
async fn bytes_that_are_not_utf8_arrive_byte_for_byte() {
    let outcome = run(r"printf '\377\376abc\200'", None).await;
    assert_eq!(outcome.stdout, b"\xff\xfeabc\x80");
    assert!(outcome.chunks[0].stdout_b64.is_some());
    assert_eq!(last(&outcome).exit_code, Some(0));
}

#[tokio::test]
async fn eight_megabytes_of_output_arrive_intact_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("expected");
    let outcome = run(
        &format!(
            "head -c 8000000 /dev/urandom | base64 | tee {}",
            copy.display()
        ),
        None,
    )
    .await;
    let expected = std::fs::read(&copy).unwrap();
    assert!(expected.len() > 10_000_000);
    assert_eq!(Sha256::digest(&outcome.stdout), Sha256::digest(&expected));
    assert!(outcome.chunks.len() >= expected.len() / CHUNK);
    assert_eq!(last(&outcome).exit_code, Some(0));
}

#[tokio::test]
async fn raw_binary_output_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("expected");
    let outcome = run(
        &format!("head -c 2000000 /dev/urandom | tee {}", copy.display()),
        None,
    )
    .await;
    let expected = std::fs::read(&copy).unwrap();
    assert_eq!(expected.len(), 2_000_000);
    assert!(outcome.stdout == expected, "binary output differs");
}

#[tokio::test]
async fn a_command_reading_stdin_sees_eof_at_once() {
    let outcome = run("cat; echo done", None).await;
    assert_eq!(outcome.stdout, b"done\n");
    assert_eq!(last(&outcome).exit_code, Some(0));
    assert!(
        outcome.elapsed < Duration::from_secs(2),
        "{:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn output_is_streamed_while_the_command_still_runs() {
    let outcome = run("echo first; sleep 3; echo last", None).await;
    let first = outcome.first_output_after.unwrap();
    assert!(
        first < Duration::from_secs(1),
        "first output after {first:?}"
    );
    assert_eq!(outcome.chunks[0].stdout, "first\n");
    assert_eq!(outcome.stdout, b"first\nlast\n");
    assert!(outcome.elapsed >= Duration::from_secs(3));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group_including_background_children() {
    let outcome = run(
        "echo $$; sleep 1000 & sleep 1000",
        Some(Duration::from_secs(1)),
    )
    .await;
    let last = last(&outcome);
    assert_eq!(last.end_reason.as_deref(), Some("timed_out"));
    assert_eq!(last.signal.as_deref(), Some("SIGTERM"));
    assert_eq!(last.exit_code, Some(128 + 15));
    assert!(outcome.elapsed >= Duration::from_secs(1));
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        outcome.elapsed
    );
    assert_group_gone(pgid_of(&outcome)).await;
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let outcome = run(
        "trap '' TERM; echo $$; sleep 1000 & sleep 1000",
        Some(Duration::from_millis(300)),
    )
    .await;
    let last = last(&outcome);
    assert_eq!(last.end_reason.as_deref(), Some("timed_out"));
    assert_eq!(
        (last.exit_code, last.signal.as_deref()),
        (Some(137), Some("SIGKILL"))
    );
    // Timeout, then the whole grace before the KILL.
    assert!(
        outcome.elapsed >= Duration::from_millis(800),
        "{:?}",
        outcome.elapsed
    );
    assert_group_gone(pgid_of(&outcome)).await;
}

#[tokio::test]
async fn a_cancel_kills_the_group_and_says_so() {
    let outcome = run_with(spec("echo $$; sleep 1000", None), fast_kill(), |_, stop| {
        if let Some(stop) = stop.take() {
            stop.send(StopReason::Cancelled).unwrap();
        }
    })
    .await;
    let last = last(&outcome);
    assert_eq!(last.end_reason.as_deref(), Some("cancelled"));
    assert!(last.exit_code.is_some_and(|code| code > 128));
    assert!(outcome.elapsed < Duration::from_secs(3));
    assert_group_gone(pgid_of(&outcome)).await;
}

#[tokio::test]
async fn a_dropped_stop_sender_kills_too() {
    // The registry of a lost connection goes away without a word: that is a kill.
    let outcome = run_with(spec("echo $$; sleep 1000", None), fast_kill(), |_, stop| {
        stop.take();
    })
    .await;
    assert_eq!(last(&outcome).end_reason.as_deref(), Some("cancelled"));
    assert_group_gone(pgid_of(&outcome)).await;
}

#[tokio::test]
async fn a_shell_killed_by_a_signal_reports_128_plus_its_number_and_its_name() {
    let outcome = run("kill -9 $$", None).await;
    let last = last(&outcome);
    assert_eq!(
        (
            last.exit_code,
            last.signal.as_deref(),
            last.end_reason.as_deref()
        ),
        (Some(137), Some("SIGKILL"), None)
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_tunnel_error() {
    // A NUL byte cannot go into an argument: spawning fails before any process exists.
    let outcome = run("echo a\0b", None).await;
    assert!(outcome.last.is_none());
    assert!(
        matches!(outcome.errors.as_slice(), [e] if e.starts_with("Failed to execute command")),
        "{:?}",
        outcome.errors
    );
}

#[tokio::test]
async fn an_aborted_task_still_kills_its_group() {
    // The runtime shutting down drops tasks mid-flight: the group must not survive that.
    let (tx, mut rx) = mpsc::channel(4);
    let (_stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        execute(
            spec("echo $$; sleep 1000", None),
            &tx,
            stopped,
            fast_kill(),
            None,
            None,
        )
        .await;
    });
    let Some(Event::Frame(AgentMessage::TunnelData {
        data: TunnelDataPayload::TerminalOutput(output),
        ..
    })) = rx.recv().await
    else {
        panic!("expected output");
    };
    let pgid: i32 = output.stdout.trim().parse().unwrap();
    assert!(!live_members(pgid).is_empty());
    task.abort();
    let _ = task.await;
    assert_group_gone(pgid).await;
}

#[tokio::test]
async fn the_registry_releases_channels_only_of_commands_still_in_the_tunnel() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut commands = Commands::new(tx, fast_kill());
    let one = ChannelId::parse("cmd-1").unwrap();
    let two = ChannelId::parse("cmd-2").unwrap();
    commands.start(CommandSpec {
        channel: one.clone(),
        command: "sleep 1000".into(),
        timeout: None,
        stdin: false,
        binary_output: false,
    });
    commands.start(CommandSpec {
        channel: two.clone(),
        command: "sleep 1000".into(),
        timeout: None,
        stdin: false,
        binary_output: false,
    });
    assert_eq!(commands.len(), 2);
    commands.cancel(&one);
    let mut released = Vec::new();
    let mut reasons = Vec::new();
    while released.is_empty() {
        match rx.recv().await.unwrap() {
            Event::Frame(AgentMessage::TunnelData {
                channel_id,
                data: TunnelDataPayload::TerminalOutput(output),
            }) => reasons.push((channel_id, output.end_reason)),
            Event::CommandEnded(run) => released.push(commands.finished(run)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(released, vec![Some(one)]);
    assert_eq!(
        reasons,
        vec![("cmd-1".to_owned(), Some("cancelled".to_owned()))]
    );
    // The tunnel closes: the other command dies too, but its channel is no longer ours.
    commands.stop_all(StopReason::Cancelled);
    loop {
        if let Event::CommandEnded(run) = rx.recv().await.unwrap() {
            assert_eq!(commands.finished(run), None);
            break;
        }
    }
    assert!(commands.is_empty());
    let _ = two;
}
