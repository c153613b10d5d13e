//! What every long-running binary of the workspace does the same way: logs to stderr (text,
//! colour only on a terminal, or one JSON object per line; filter from `RUST_LOG`), and
//! waiting for the signal to stop.

/// The variable choosing the log format: `text` (the default) or `json`.
pub const LOG_FORMAT_ENV: &str = "RMM_LOG_FORMAT";

/// Whether `RMM_LOG_FORMAT` asks for JSON lines (`json`) rather than text (`text`, empty or
/// unset). With JSON every line is one object: `timestamp`, `level`, `target`, the event's
/// fields (`message` among them) at the top level, and the enclosing span's fields (a
/// request's `request_id`) under `span`.
///
/// # Errors
/// When it is set to anything else.
pub fn json_logs() -> anyhow::Result<bool> {
    match std::env::var(LOG_FORMAT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(false),
        Ok(v) if v.is_empty() || v == "text" => Ok(false),
        Ok(v) if v == "json" => Ok(true),
        Ok(other) => anyhow::bail!("{LOG_FORMAT_ENV} must be `text` or `json`, not `{other}`"),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{LOG_FORMAT_ENV} must be `text` or `json`")
        }
    }
}

/// Installs the log subscriber; `default_filter` applies when `RUST_LOG` is unset; the
/// format is [`json_logs`]'s.
///
/// # Errors
/// As [`json_logs`] (nothing is installed).
#[cfg(feature = "env-filter")]
pub fn init_logging(default_filter: &str) -> anyhow::Result<()> {
    let json = json_logs()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. A signal that cannot be listened for is logged and never
/// fires, so the other still works.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    // Windows: a service stop arrives as a service control event, not Ctrl-C; running as a
    // Windows service (windows-service crate) is not built or tested here.
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// How a daemon ends: `Ok` exits 0; an error prints `error: <cause>: <cause>...` on one line of
/// stderr (never a backtrace, whatever `RUST_BACKTRACE` says: the error chain names the cause)
/// and exits 1, as the `rmm` CLI does.
#[must_use]
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, outermost first.
#[must_use]
pub fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    #[test]
    fn the_chain_names_every_cause_outermost_first() {
        let e = Err::<(), _>(std::io::Error::other("permission denied"))
            .context("cannot read /etc/rmm/key")
            .expect_err("an error");
        assert_eq!(
            super::chain(&e),
            "cannot read /etc/rmm/key: permission denied"
        );
    }

    #[test]
    fn an_error_exits_non_zero_and_success_zero() {
        assert_eq!(
            super::exit_code("t", Err(anyhow::anyhow!("boom"))),
            std::process::ExitCode::FAILURE
        );
        assert_eq!(
            super::exit_code("t", Ok(())),
            std::process::ExitCode::SUCCESS
        );
    }
}
