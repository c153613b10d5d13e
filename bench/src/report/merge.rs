//! A report of some parts (`bench/run.sh --terminal`) merged into the report already
//! written (BENCHMARKS.md), so a partial run replaces only its own figures.
//!
//! The report is cut at its `## ` headings: the header (with its table), `## Targets`, one
//! section per part (`## N. ...`, part `Part::ALL[N - 1]`), then the analysis. The merge
//! keeps the earlier report's header, target rows and sections of the parts that were not
//! run, takes the new ones of the parts that were, adds the new run's header rows prefixed
//! with the parts it measured (`terminal: load average at start`), and takes the analysis
//! from the new report (bench/notes.md as it is now).

use crate::measure::Part;

const MERGED_NOTE: &str = "Parts measured in a separate run are marked in the table above with \
their own command, date and load average; each comparison with OpenSSH is side by side within \
its own run.";

/// The parts of a report.
#[derive(Debug, Default)]
struct Doc<'a> {
    header: Vec<&'a str>,
    targets: Vec<&'a str>,
    sections: Vec<(Part, Vec<&'a str>)>,
    notes: Vec<&'a str>,
}

fn section_part(line: &str) -> Option<Part> {
    let rest = line.strip_prefix("## ")?;
    let (number, _) = rest.split_once('.')?;
    let n: usize = number.parse().ok()?;
    Part::ALL.get(n.checked_sub(1)?).copied()
}

fn parse(text: &str) -> Doc<'_> {
    enum At {
        Header,
        Targets,
        Section,
        Notes,
    }
    let mut doc = Doc::default();
    let mut at = At::Header;
    for line in text.lines() {
        if line.starts_with("## ") {
            if line == "## Targets" {
                at = At::Targets;
            } else if let Some(part) = section_part(line) {
                doc.sections.push((part, Vec::new()));
                at = At::Section;
            } else {
                at = At::Notes;
            }
        }
        match at {
            At::Header => doc.header.push(line),
            At::Targets => doc.targets.push(line),
            At::Section => {
                if let Some((_, lines)) = doc.sections.last_mut() {
                    lines.push(line);
                }
            }
            At::Notes => doc.notes.push(line),
        }
    }
    doc
}

/// The part a row of the targets table is about.
#[must_use]
pub fn target_part(row: &str) -> Option<Part> {
    let text = row.strip_prefix("| ")?;
    if text.starts_with("round trip") {
        Some(Part::Roundtrip)
    } else if text.starts_with("streaming") {
        Some(Part::Stream)
    } else if text.starts_with("keystroke echo") || text.starts_with("terminal output") {
        Some(Part::Terminal)
    } else if text.contains("idle agents")
        || text.starts_with("server RSS per idle agent")
        || text.starts_with("server CPU with those agents idle")
        || text.starts_with("all agents back after a server restart")
    {
        Some(Part::Sim)
    } else if text.contains("tunnel opens/s") || text.starts_with("tunnel open, one at a time") {
        Some(Part::Opens)
    } else if text.starts_with("idle rmm-agent") || text.starts_with("rmm-agent binary") {
        Some(Part::Agent)
    } else if text.starts_with("cross-node") {
        Some(Part::Cluster)
    } else {
        None
    }
}

/// A `| key | value |` row of the header table: its key.
fn header_key(line: &str) -> Option<&str> {
    let key = line.strip_prefix("| ")?.split(" |").next()?.trim();
    (!key.is_empty() && !key.starts_with('|')).then_some(key)
}

/// Whether a header row was added by an earlier merge of one of `run`'s parts.
fn from_earlier_merge_of(key: &str, run: &[Part]) -> bool {
    key.split_once(": ").is_some_and(|(parts, _)| {
        parts
            .split(", ")
            .any(|p| run.iter().any(|r| r.as_str() == p))
    })
}

fn header(old: &Doc<'_>, new: &Doc<'_>, run: &[Part]) -> Vec<String> {
    let prefix: Vec<&str> = run.iter().map(|p| p.as_str()).collect();
    let prefix = prefix.join(", ");
    let added: Vec<String> = new
        .header
        .iter()
        .filter_map(|line| {
            let key = header_key(line)?;
            let value = line.strip_prefix("| ")?.split_once(" | ")?.1;
            Some(format!("| {prefix}: {key} | {value}"))
        })
        .collect();
    let mut out = Vec::new();
    let last_row = old.header.iter().rposition(|l| header_key(l).is_some());
    let mut after_note = false;
    for (i, line) in old.header.iter().enumerate() {
        // An earlier merge's note and its blank line: added again below.
        if *line == MERGED_NOTE || (after_note && line.is_empty()) {
            after_note = *line == MERGED_NOTE;
            continue;
        }
        after_note = false;
        if header_key(line).is_some_and(|k| from_earlier_merge_of(k, run)) {
            if Some(i) == last_row {
                out.extend(added.iter().cloned());
            }
            continue;
        }
        out.push((*line).to_owned());
        if Some(i) == last_row {
            out.extend(added.iter().cloned());
        }
    }
    // The note goes after the header table's blank line.
    let after_table = out
        .iter()
        .rposition(|l| l.starts_with('|'))
        .map_or(out.len(), |i| (i + 2).min(out.len()));
    out.insert(after_table, format!("{MERGED_NOTE}\n"));
    out
}

/// `new` (a report of the parts in `run`) merged into `old` (an earlier report).
#[must_use]
pub fn merge(old: &str, new: &str, run: &[Part]) -> String {
    let (old, new) = (parse(old), parse(new));
    let mut out: Vec<String> = header(&old, &new, run);
    // The targets: the new heading and table head, then each part's rows in part order.
    let is_row = |l: &&str| target_part(l).is_some();
    out.extend(
        new.targets
            .iter()
            .take_while(|l| !is_row(l))
            .map(|l| (*l).to_owned()),
    );
    for part in Part::ALL {
        let from = if run.contains(&part) { &new } else { &old };
        out.extend(
            from.targets
                .iter()
                .filter(|l| target_part(l) == Some(part))
                .map(|l| (*l).to_owned()),
        );
    }
    out.push(String::new());
    for part in Part::ALL {
        let from = if run.contains(&part) || !old.sections.iter().any(|(p, _)| *p == part) {
            &new
        } else {
            &old
        };
        if let Some((_, lines)) = from.sections.iter().find(|(p, _)| *p == part) {
            out.extend(lines.iter().map(|l| (*l).to_owned()));
        }
    }
    out.extend(new.notes.iter().map(|l| (*l).to_owned()));
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "# Benchmarks\n\nintro\n\n| | |\n|---|---|\n| command | `bench/run.sh` |\n| load average at start | 3.8 (1, 5, 15 min) |\n\nshared\n\n## Targets\n\n| target | measured | verdict |\n|---|---|---|\n| round trip ≤ 0.5× ssh | old rt | **met** |\n| ≥ 1000 tunnel opens/s | old opens | **not met** |\n\n## 1. Command round trip\n\nold rt table\n\n## 5. Tunnel opens\n\nold opens table\n\n## Analysis\n\nold notes\n";

    const NEW: &str = "# Benchmarks\n\nintro\n\n| | |\n|---|---|\n| command | `bench/run.sh --terminal` |\n| load average at start | 0.9 (1, 5, 15 min) |\n\nshared\n\n## Targets\n\n| target | measured | verdict |\n|---|---|---|\n| round trip ≤ 0.5× ssh | not measured | — |\n| keystroke echo p50 ≤ 0.5× ssh -tt | new echo | **met** |\n| terminal output ≥ 1× ssh -tt | new cat | **not met** |\n\n## 1. Command round trip\n\nNot run.\n\n## 5. Tunnel opens\n\nNot run.\n\n## 6. Terminals\n\nnew terminal table\n\n## Analysis\n\nnew notes\n";

    #[test]
    fn a_partial_run_replaces_only_its_parts() {
        let merged = merge(OLD, NEW, &[Part::Terminal]);
        for kept in [
            "| command | `bench/run.sh` |",
            "| round trip ≤ 0.5× ssh | old rt | **met** |",
            "| ≥ 1000 tunnel opens/s | old opens | **not met** |",
            "old rt table",
            "old opens table",
            "| terminal: command | `bench/run.sh --terminal` |",
            "| terminal: load average at start | 0.9 (1, 5, 15 min) |",
            "new terminal table",
            "new notes",
            MERGED_NOTE,
        ] {
            assert!(merged.contains(kept), "{kept} missing:\n{merged}");
        }
        for gone in ["not measured", "Not run.", "old notes"] {
            assert!(!merged.contains(gone), "{gone} kept:\n{merged}");
        }
        // Target rows and sections in part order.
        let order = ["old rt |", "old opens", "new echo", "new cat"];
        let at: Vec<usize> = order.iter().filter_map(|s| merged.find(s)).collect();
        assert_eq!(at.len(), 4, "{merged}");
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{merged}");
        assert!(merged.find("old opens table") < merged.find("## 6. Terminals"));
        assert!(merged.find("## 6. Terminals") < merged.find("## Analysis"));
    }

    #[test]
    fn merging_the_same_part_again_replaces_its_earlier_rows() {
        let once = merge(OLD, NEW, &[Part::Terminal]);
        let twice = merge(&once, NEW, &[Part::Terminal]);
        assert_eq!(once, twice);
        assert_eq!(twice.matches("| terminal: command |").count(), 1);
        assert_eq!(twice.matches(MERGED_NOTE).count(), 1);
    }

    #[test]
    fn every_target_row_the_report_writes_belongs_to_a_part() {
        let text = crate::report::render(&crate::report::ReportInputs {
            rows: &[],
            command: "c",
            sizes: "s",
            profile: "release",
            ssh_version: "",
            load: "",
            machine: crate::procfs::machine(),
            date: chrono::Utc::now(),
            notes: None,
        });
        let doc = parse(&text);
        let rows: Vec<_> = doc.targets.iter().filter(|l| l.starts_with("| ")).collect();
        // The table head, then one "not measured" row per target.
        assert!(rows.len() >= 7, "{text}");
        let parts: Vec<_> = rows.iter().skip(1).map(|r| target_part(r)).collect();
        assert!(parts.iter().all(Option::is_some), "{parts:?}\n{text}");
        assert!(parts.contains(&Some(Part::Terminal)), "{text}");
        assert_eq!(doc.sections.len(), Part::ALL.len(), "{text}");
    }
}
