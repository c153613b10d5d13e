//! The cluster part of the report: the same agent reached through the node it is connected
//! to and through another node, which forwards the requests to it (over TCP to its cluster
//! address, dialled over NATS; issue 18). The peer is the same-node row of the same run.

use std::fmt::Write as _;

use super::{commands, latency, mb, ms, not_available, part, throughput, verdict};
use crate::cluster_fleet::FleetFigures;
use crate::measure::{Figures, Measurement, Part};

/// Cross-node `rmm exec -- true` p50 over same-node, milliseconds (issue 18).
const TARGET_HOP_MS: f64 = 1.0;
/// Cross-node output throughput against same-node (issue 18).
const TARGET_THROUGHPUT_RATIO: f64 = 0.8;

/// The row names `bench/run.sh --cluster` writes.
pub const EXEC_SAME: &str = "rmm exec -- true, same node";
pub const EXEC_CROSS: &str = "rmm exec -- true, across nodes";
pub const CAT_SAME: &str = "rmm exec cat, same node";
pub const CAT_CROSS: &str = "rmm exec cat, across nodes";

fn row<'a>(rows: &[&'a Measurement], name: &str) -> Option<&'a Measurement> {
    rows.iter().copied().find(|m| m.name == name)
}

/// The targets table's rows of this part (each starts `cross-node`, which is how a merge
/// tells them apart).
pub(super) fn targets(out: &mut String, rows: &[Measurement]) {
    let rows = part(rows, Part::Cluster);
    let exec = |name| row(&rows, name).and_then(latency);
    match (exec(EXEC_SAME), exec(EXEC_CROSS)) {
        (Some(same), Some(cross)) => {
            let hop = cross.p50_ms - same.p50_ms;
            let _ = writeln!(
                out,
                "| cross-node `rmm exec -- true` p50 ≤ same-node + {TARGET_HOP_MS} ms | {} ms vs {} ms same-node: {:+.2} ms | {} |",
                ms(cross.p50_ms),
                ms(same.p50_ms),
                hop,
                verdict(hop <= TARGET_HOP_MS)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "| cross-node `rmm exec -- true` p50 ≤ same-node + {TARGET_HOP_MS} ms | not measured (see below) | — |"
            );
        }
    }
    let cat = |name| row(&rows, name).and_then(throughput);
    match (cat(CAT_SAME), cat(CAT_CROSS)) {
        (Some(same), Some(cross)) if same.mb_per_s > 0.0 => {
            let r = cross.mb_per_s / same.mb_per_s;
            let _ = writeln!(
                out,
                "| cross-node output throughput ≥ {TARGET_THROUGHPUT_RATIO}× same-node | {:.0} MB/s vs {:.0} MB/s same-node = {r:.2}× | {} |",
                cross.mb_per_s,
                same.mb_per_s,
                verdict(r >= TARGET_THROUGHPUT_RATIO)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "| cross-node output throughput ≥ {TARGET_THROUGHPUT_RATIO}× same-node | not measured (see below) | — |"
            );
        }
    }
}

/// Each node's share of a fleet, in words.
pub(super) fn shares(f: &FleetFigures) -> String {
    f.nodes
        .iter()
        .map(|n| {
            // Per agent only where the agents dominate the process's memory.
            let per = if n.agents >= 1000 {
                format!(", {:.1} KiB/agent", n.rss_kib as f64 / n.agents as f64)
            } else {
                String::new()
            };
            format!(
                "{}: {} agents, {} KiB RSS{per}",
                n.node, n.agents, n.rss_kib
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fleet spread over the nodes: the simulator's row and the nodes' shares.
fn fleet(out: &mut String, rows: &[&Measurement]) {
    for m in rows {
        match &m.figures {
            Figures::Sim(s) => {
                let _ = writeln!(
                    out,
                    "- **{}**: {} of {} connected through HAProxy in {:.1} s ({:.0}/s); handshake p50 {} ms, p99 {} ms; heartbeat round trip p50 {} ms, p99 {} ms.",
                    m.name,
                    s.connected,
                    s.requested,
                    s.connect_secs,
                    s.connect_rate_per_s,
                    ms(s.handshake_p50_ms),
                    ms(s.handshake_p99_ms),
                    ms(s.rtt_p50_ms),
                    ms(s.rtt_p99_ms)
                );
            }
            Figures::ClusterFleet(f) => {
                let _ = writeln!(
                    out,
                    "- **{}**: node A listed all {} agents as connected {:.1} s after the simulator started (the nodes' presence, over NATS). Per node (`rmm_agents_connected`, `VmRSS`, whole process): {}.",
                    m.name,
                    f.agents,
                    f.listed_secs,
                    shares(f)
                );
            }
            _ => {}
        }
    }
}

/// Section 8.
pub(super) fn section(out: &mut String, rows: &[Measurement]) {
    let _ = writeln!(out, "## 8. Cluster mode: the hop between nodes\n");
    let rows = part(rows, Part::Cluster);
    let measured: Vec<_> = rows
        .iter()
        .filter(|m| latency(m).is_some() || throughput(m).is_some())
        .collect();
    let fleet_rows = rows
        .iter()
        .any(|m| matches!(m.figures, Figures::Sim(_) | Figures::ClusterFleet(_)));
    if measured.is_empty() && !fleet_rows {
        let _ = writeln!(out, "Not measured in this run.");
    } else if !measured.is_empty() {
        let _ = writeln!(
            out,
            "Three nodes on one PostgreSQL and one `nats-server`; the agents are connected to node C. \
             \"Same node\" sends the CLI to node C, \"across nodes\" to node A, which forwards each \
             request to C (over TCP to C's cluster address, dialled over NATS). The `true` runs \
             alternate between the two in rounds, on two agents (one session kept open each).\n"
        );
        let _ = writeln!(out, "| | p50 | p99 | throughput |\n|---|---|---|---|");
        for m in measured {
            let (p50, p99) = latency(m).map_or(("—".into(), "—".into()), |l| {
                (
                    format!("{} ms", ms(l.p50_ms)),
                    format!("{} ms", ms(l.p99_ms)),
                )
            });
            let rate = throughput(m).map_or("—".into(), |t| {
                format!(
                    "{:.0} MB/s ({} in {:.2} s, median of {})",
                    t.mb_per_s,
                    mb(t.bytes),
                    t.secs,
                    t.runs
                )
            });
            let _ = writeln!(out, "| {} | {p50} | {p99} | {rate} |", m.name);
        }
        let _ = writeln!(out);
    }
    fleet(out, &rows);
    commands(out, &rows);
    not_available(out, &rows);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;
    use crate::measure::{Figures, Throughput};

    fn exec(name: &str, p50: f64) -> Measurement {
        crate::report::tests::lat(Part::Cluster, name, p50)
    }

    fn cat(name: &str, mb_per_s: f64) -> Measurement {
        Measurement {
            part: Part::Cluster,
            name: name.to_owned(),
            command: String::new(),
            figures: Figures::Throughput(
                Throughput::from_runs(
                    1_000_000,
                    &[std::time::Duration::from_secs_f64(1.0 / mb_per_s)],
                )
                .unwrap(),
            ),
        }
    }

    #[test]
    fn the_hop_is_judged_against_the_same_node_rows_of_the_run() {
        let rows = [
            exec(EXEC_SAME, 4.0),
            exec(EXEC_CROSS, 4.6),
            cat(CAT_SAME, 100.0),
            cat(CAT_CROSS, 70.0),
        ];
        let mut out = String::new();
        targets(&mut out, &rows);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains("+0.60 ms") && lines[0].ends_with("**met** |"),
            "{out}"
        );
        assert!(
            lines[1].contains("0.70×") && lines[1].ends_with("**not met** |"),
            "{out}"
        );
        for line in lines {
            assert_eq!(crate::report::merge::target_part(line), Some(Part::Cluster));
        }
    }

    #[test]
    fn without_rows_the_targets_say_not_measured() {
        let mut out = String::new();
        targets(&mut out, &[exec(EXEC_SAME, 4.0)]);
        assert_eq!(out.matches("not measured").count(), 2, "{out}");
    }
}
