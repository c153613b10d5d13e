//! The retention sweep: command output and terminal recordings past their age, and the
//! oldest command output beyond the total size allowed, pruned; the rows stay (pruned output
//! reads as pruned) and so does every audit entry. A running command's output and a live
//! terminal's recording are never touched (the stores prune only ended ones).

use rmm_domain::Timestamp;

use crate::app::{App, Ports};
use crate::ports::{
    AuditAction, AuditEvent, AuditLog, Clock, CommandRepository, Pruned, RecordingRepository,
    StoreError,
};

/// What one sweep pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Command output past its age.
    pub output_by_age: Pruned,
    /// Command output beyond the total size.
    pub output_by_size: Pruned,
    /// Recordings past their age.
    pub recordings: Pruned,
}

impl RetentionReport {
    /// Whether the sweep pruned anything.
    #[must_use]
    pub fn pruned_any(&self) -> bool {
        self.output_by_age.items + self.output_by_size.items + self.recordings.items > 0
    }

    /// The figures, as the audit entry's detail and the log line say them.
    #[must_use]
    pub fn detail(&self) -> String {
        let output = add(self.output_by_age, self.output_by_size);
        format!(
            "output_commands={} output_bytes={} output_by_age={} output_by_size={} \
             recordings={} recording_bytes={}",
            output.items,
            output.bytes,
            self.output_by_age.items,
            self.output_by_size.items,
            self.recordings.items,
            self.recordings.bytes
        )
    }
}

fn add(a: Pruned, b: Pruned) -> Pruned {
    Pruned {
        items: a.items.saturating_add(b.items),
        bytes: a.bytes.saturating_add(b.bytes),
    }
}

/// Commands or recordings looked at per store round trip.
const SWEEP_PAGE: u32 = 200;

impl<P: Ports> App<P> {
    /// One retention sweep under [`crate::Config::retention`]: output past its age, then the
    /// oldest output beyond the total size, then recordings past their age. A sweep that
    /// pruned something is audited (`retention_sweep`, the figures in its detail) and logged.
    ///
    /// # Errors
    /// The first [`StoreError`]; what was pruned before it stays pruned, unaudited.
    pub async fn retention_sweep(&self) -> Result<RetentionReport, StoreError> {
        let retention = self.config.retention;
        let now = self.clock.now();
        let mut report = RetentionReport::default();
        if let Some(age) = retention.output_age {
            report.output_by_age = self.prune_output_before(now.minus(age), now).await?;
        }
        if let Some(budget) = retention.output_bytes {
            report.output_by_size = self.prune_output_beyond(budget, now).await?;
        }
        if let Some(age) = retention.recording_age {
            report.recordings = self.prune_recordings_before(now.minus(age), now).await?;
        }
        if report.pruned_any() {
            let detail = report.detail();
            tracing::info!(
                output_commands = report.output_by_age.items + report.output_by_size.items,
                output_bytes = report.output_by_age.bytes + report.output_by_size.bytes,
                recordings = report.recordings.items,
                recording_bytes = report.recordings.bytes,
                "retention sweep: {detail}"
            );
            let mut entry = AuditEvent::new(now, AuditAction::RetentionSweep);
            entry.detail = Some(detail);
            self.audit.append(&entry).await?;
        }
        Ok(report)
    }

    async fn prune_output_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        loop {
            let page = self.commands.ended_output(Some(cutoff), SWEEP_PAGE).await?;
            if page.is_empty() {
                return Ok(total);
            }
            let ids: Vec<_> = page.iter().map(|o| o.id).collect();
            let pruned = self.commands.prune_output(&ids, now).await?;
            total = add(total, pruned);
            if pruned.items == 0 {
                return Ok(total);
            }
        }
    }

    /// Prunes the oldest ended commands' output until all stored output is within `budget`
    /// (or only running commands' output is left).
    async fn prune_output_beyond(&self, budget: u64, now: Timestamp) -> Result<Pruned, StoreError> {
        let mut stored = self.commands.stored_output_bytes().await?;
        let mut total = Pruned::default();
        while stored > budget {
            let page = self.commands.ended_output(None, SWEEP_PAGE).await?;
            let mut planned = stored;
            let mut ids = Vec::new();
            for output in &page {
                if planned <= budget {
                    break;
                }
                planned = planned.saturating_sub(output.bytes);
                ids.push(output.id);
            }
            if ids.is_empty() {
                break;
            }
            let pruned = self.commands.prune_output(&ids, now).await?;
            total = add(total, pruned);
            stored = stored.saturating_sub(pruned.bytes);
            if pruned.items == 0 {
                break;
            }
        }
        Ok(total)
    }

    async fn prune_recordings_before(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        loop {
            let page = self.recordings.ended_recordings(cutoff, SWEEP_PAGE).await?;
            if page.is_empty() {
                return Ok(total);
            }
            let pruned = self.recordings.prune_recordings(&page, now).await?;
            total = add(total, pruned);
            if pruned.items == 0 {
                return Ok(total);
            }
        }
    }
}
