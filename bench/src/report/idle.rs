//! The idle-agent rows of the Targets table (issue 15): server RSS per idle agent, server CPU
//! with those agents idle, and all agents back after a server restart. There is no ssh peer
//! for these; the figures before the work are printed as context.

use std::fmt::Write as _;

use crate::measure::SimFigures;

/// Server RSS per idle agent, KiB, at ~19k agents.
const TARGET_RSS_KIB: f64 = 8.0;
/// Server CPU with those agents idle, percent of one core.
const TARGET_IDLE_CPU_PCT: f64 = 2.0;
/// All agents back after a restart within this many seconds, none given up.
const TARGET_STORM_SECS: f64 = 20.0;
/// The figures before the work (issue 15's table), as context.
const BEFORE_RSS: &str = "16.3 KiB at 10k";
const BEFORE_CPU: &str = "6.8% at 10k, with 1000 connections pinging every second";

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

/// The three rows, from the simulator's run with the most agents; `peer` is the same fleet
/// against the bare peer (`rmm-bench bare-ws`), the floor of the stack, when it ran.
pub(super) fn targets(out: &mut String, sim: Option<&SimFigures>, peer: Option<&SimFigures>) {
    let Some(s) = sim else {
        for target in [
            format!("server RSS per idle agent ≤ {TARGET_RSS_KIB} KiB at ~19k agents"),
            format!("server CPU with those agents idle ≤ {TARGET_IDLE_CPU_PCT}% of a core"),
            format!(
                "all agents back after a server restart ≤ {TARGET_STORM_SECS} s, none given up"
            ),
        ] {
            let _ = writeln!(out, "| {target} | not measured (see below) | — |");
        }
        return;
    };
    let floor = |figure: fn(&SimFigures) -> String| {
        peer.map_or_else(String::new, |p| {
            format!(
                "; the bare tokio-tungstenite peer under the same fleet: {}",
                figure(p)
            )
        })
    };
    let _ = writeln!(
        out,
        "| server RSS per idle agent ≤ {TARGET_RSS_KIB} KiB at ~19k agents | {} agents: {:.1} KiB each (before: {BEFORE_RSS}){} | {} |",
        s.connected,
        s.server_rss_per_agent_kib,
        floor(|p| format!("{:.1} KiB each", p.server_rss_per_agent_kib)),
        verdict(s.server_rss_per_agent_kib <= TARGET_RSS_KIB)
    );
    let cpu_met = s.server_cpu_window_pct <= TARGET_IDLE_CPU_PCT;
    let cpu_verdict = match peer {
        Some(p) if !cpu_met && p.server_cpu_window_pct > TARGET_IDLE_CPU_PCT => format!(
            "**not met**: out of reach on this machine, the bare stack alone needs {:.1}%",
            p.server_cpu_window_pct
        ),
        _ => verdict(cpu_met).to_owned(),
    };
    let _ = writeln!(
        out,
        "| server CPU with those agents idle ≤ {TARGET_IDLE_CPU_PCT}% of a core | {} agents, heartbeats every {} s: {:.1}% of a core (before: {BEFORE_CPU}){} | {cpu_verdict} |",
        s.connected,
        s.heartbeat_secs,
        s.server_cpu_window_pct,
        floor(|p| format!("{:.1}% of a core", p.server_cpu_window_pct)),
    );
    let row = match &s.storm {
        Some(st) => {
            let given_up = st.agents.saturating_sub(st.back);
            let took = st.all_back_secs.map_or_else(
                || format!("not all back within {:.0} s", st.deadline_secs),
                |secs| format!("all back in {secs:.1} s"),
            );
            let met = st
                .all_back_secs
                .is_some_and(|secs| secs <= TARGET_STORM_SECS)
                && given_up == 0
                && st.rejected == 0;
            format!(
                "{} agents, server {}ed and started again: {took}; {} not back, {} answered 503, {} other failed dials, {} refused (401); server peak RSS {:.1} MiB, CPU {:.0}% of a core (before: not measured) | {} |",
                st.agents,
                st.signal,
                given_up,
                st.busy,
                st.failed_dials,
                st.rejected,
                st.server_peak_rss_kib as f64 / 1024.0,
                st.server_cpu_pct,
                verdict(met)
            )
        }
        None => "not measured (no restart in this run) | — |".to_owned(),
    };
    let _ = writeln!(
        out,
        "| all agents back after a server restart ≤ {TARGET_STORM_SECS} s, none given up | {row}"
    );
}
