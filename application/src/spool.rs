//! What the store refused to take yet, kept in memory within bounds and written again: chunks
//! of command output ([`OutputSpool`]) and audit entries that go with no stored state
//! ([`AuditSpool`]). Nothing here writes; the use cases retry through the ports. The locks
//! are never held across an `.await`.
//!
//! Output is kept per command and stream, in order: once a chunk is waiting, later chunks of
//! that stream queue behind it, so what is stored is always a prefix of what was written.
//! When the spool is full, a stream gives up: its waiting chunks and everything it writes
//! afterwards are dropped (counted), and the command is stored as truncated.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rmm_domain::CommandId;
use tokio::time::Instant;

use crate::ports::{AuditEvent, OutputStream};

/// Output chunks waiting for the store, all commands together, bounded by bytes.
#[derive(Debug)]
pub(crate) struct OutputSpool {
    inner: Mutex<OutputInner>,
    cap: u64,
}

#[derive(Debug, Default)]
struct OutputInner {
    commands: HashMap<CommandId, Pending>,
    /// Bytes waiting, all commands together.
    bytes: u64,
    /// The store refused the last write: it is likely down (see [`OutputSpool::refusing`]).
    refusing: bool,
}

/// One command's waiting output.
#[derive(Debug, Default)]
struct Pending {
    stdout: Lane,
    stderr: Lane,
    /// When the command's end first had to wait for this output.
    end_waits_since: Option<Instant>,
}

/// One stream's chunks, in order.
#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<(u64, Bytes)>,
    /// Its head is being written.
    busy: bool,
    /// Dropped (spool full, or the end could not wait): nothing more is stored.
    lost: Lost,
}

/// Output of one stream that will never be stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    pub(crate) chunks: u64,
    pub(crate) bytes: u64,
    /// Set once the stream gave up, even when nothing was left to drop.
    pub(crate) given_up: bool,
}

impl Lost {
    fn add(&mut self, len: usize) {
        self.chunks += 1;
        self.bytes = self.bytes.saturating_add(len as u64);
    }
}

/// What became of a chunk handed to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued, to be written in turn.
    Queued,
    /// The stream gave up earlier: dropped.
    Dropped,
    /// The spool is full: the stream gives up now; what it dropped so far.
    Overflow(Lost),
}

impl Pending {
    fn lane(&mut self, stream: OutputStream) -> &mut Lane {
        match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        }
    }

    fn is_idle(&self) -> bool {
        [&self.stdout, &self.stderr]
            .iter()
            .all(|l| l.queue.is_empty() && !l.busy && !l.lost.given_up)
    }
}

impl Lane {
    /// Drops what waits and stops storing; the bytes freed.
    fn give_up(&mut self) -> u64 {
        let mut freed = 0;
        for (_, data) in self.queue.drain(..) {
            freed += data.len() as u64;
            self.lost.add(data.len());
        }
        self.lost.given_up = true;
        freed
    }
}

impl OutputSpool {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            inner: Mutex::default(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutputInner> {
        // Every update keeps the counts consistent statement by statement.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues chunk `seq` of a stream. A chunk for an empty stream is always taken (it is
    /// written at once; the cap bounds what waits behind a failure).
    pub(crate) fn push(
        &self,
        id: CommandId,
        stream: OutputStream,
        seq: u64,
        data: Bytes,
    ) -> Pushed {
        let mut inner = self.lock();
        let over = inner.bytes.saturating_add(data.len() as u64) > self.cap;
        let lane = inner.commands.entry(id).or_default().lane(stream);
        if lane.lost.given_up {
            lane.lost.add(data.len());
            return Pushed::Dropped;
        }
        if over && !lane.queue.is_empty() {
            let freed = lane.give_up();
            lane.lost.add(data.len());
            let lost = lane.lost;
            inner.bytes -= freed;
            return Pushed::Overflow(lost);
        }
        let len = data.len() as u64;
        lane.queue.push_back((seq, data));
        inner.bytes += len;
        Pushed::Queued
    }

    /// The next chunk of a stream to write, unless none waits or another task is writing
    /// it. Settle the claim with [`HeadClaim::settle`]; dropped unsettled, it failed.
    pub(crate) fn claim(&self, id: CommandId, stream: OutputStream) -> Option<HeadClaim<'_>> {
        let mut inner = self.lock();
        let lane = inner.commands.get_mut(&id)?.lane(stream);
        if lane.busy {
            return None;
        }
        let (seq, data) = lane.queue.front()?.clone();
        lane.busy = true;
        Some(HeadClaim {
            spool: self,
            id,
            stream,
            seq,
            data,
            settled: false,
        })
    }

    /// A claimed head was written (`true`) or not. A failure with the spool over its cap
    /// makes the stream give up; what it dropped.
    fn settle(&self, id: CommandId, stream: OutputStream, written: bool) -> Option<Lost> {
        let mut inner = self.lock();
        inner.refusing = !written;
        let over = inner.bytes > self.cap;
        let pending = inner.commands.get_mut(&id)?;
        let lane = pending.lane(stream);
        lane.busy = false;
        let mut freed = 0;
        let mut overflow = None;
        if written {
            if let Some((_, data)) = lane.queue.pop_front() {
                freed = data.len() as u64;
            }
        } else if over {
            freed = lane.give_up();
            overflow = Some(lane.lost);
        }
        if pending.is_idle() {
            inner.commands.remove(&id);
        }
        inner.bytes -= freed;
        overflow
    }

    /// Whether the store refused the last write of output (none has succeeded since). Then
    /// new output only queues and the end of a command whose output waits is kept, without
    /// a write that would only wait for the store's timeout: the connection that delivers
    /// them would stall for that long per chunk. Maintenance writes what waits, in order;
    /// its first success clears this.
    pub(crate) fn refusing(&self) -> bool {
        self.lock().refusing
    }

    /// Whether output of `id` still waits (or is being written).
    pub(crate) fn waiting(&self, id: CommandId) -> bool {
        self.lock().commands.get(&id).is_some_and(|p| {
            [&p.stdout, &p.stderr]
                .iter()
                .any(|l| !l.queue.is_empty() || l.busy)
        })
    }

    /// Commands with output waiting.
    pub(crate) fn commands(&self) -> Vec<CommandId> {
        let inner = self.lock();
        inner.commands.keys().copied().collect()
    }

    /// `id`'s end has to wait for its output: whether it has waited `patience` already
    /// (counting from the first time it had to).
    pub(crate) fn end_waited(&self, id: CommandId, patience: Duration) -> bool {
        let mut inner = self.lock();
        let Some(pending) = inner.commands.get_mut(&id) else {
            return true;
        };
        let since = *pending.end_waits_since.get_or_insert_with(Instant::now);
        since.elapsed() >= patience
    }

    /// Gives up what still waits for `id` (its end cannot wait longer).
    pub(crate) fn give_up(&self, id: CommandId) {
        let mut inner = self.lock();
        let mut freed = 0;
        if let Some(pending) = inner.commands.get_mut(&id) {
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                let lane = pending.lane(stream);
                if !lane.queue.is_empty() {
                    freed += lane.give_up();
                }
            }
        }
        inner.bytes -= freed;
    }

    /// Forgets `id` (its end is stored); what each stream lost, stdout then stderr.
    pub(crate) fn finish(&self, id: CommandId) -> (Lost, Lost) {
        let mut inner = self.lock();
        let Some(mut pending) = inner.commands.remove(&id) else {
            return (Lost::default(), Lost::default());
        };
        let freed: u64 = [&pending.stdout, &pending.stderr]
            .iter()
            .flat_map(|l| l.queue.iter())
            .map(|(_, d)| d.len() as u64)
            .sum();
        inner.bytes -= freed;
        // Anything still queued is lost too (the caller flushed first).
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let lane = pending.lane(stream);
            if !lane.queue.is_empty() {
                lane.give_up();
            }
        }
        (pending.stdout.lost, pending.stderr.lost)
    }

    /// What `id`'s streams lost so far, stdout then stderr.
    pub(crate) fn lost(&self, id: CommandId) -> (Lost, Lost) {
        self.lock()
            .commands
            .get(&id)
            .map_or_else(Default::default, |p| (p.stdout.lost, p.stderr.lost))
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// The head of a stream, claimed for writing.
#[derive(Debug)]
pub(crate) struct HeadClaim<'a> {
    spool: &'a OutputSpool,
    id: CommandId,
    stream: OutputStream,
    pub(crate) seq: u64,
    pub(crate) data: Bytes,
    settled: bool,
}

impl HeadClaim<'_> {
    /// See [`OutputSpool::settle`].
    pub(crate) fn settle(mut self, written: bool) -> Option<Lost> {
        self.settled = true;
        self.spool.settle(self.id, self.stream, written)
    }
}

impl Drop for HeadClaim<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.spool.settle(self.id, self.stream, false);
        }
    }
}

/// Audit entries the store refused, oldest first, bounded by count.
#[derive(Debug)]
pub(crate) struct AuditSpool {
    entries: Mutex<VecDeque<AuditEvent>>,
    cap: usize,
}

impl AuditSpool {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            entries: Mutex::default(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<AuditEvent>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `event` to write later; hands it back when the spool is full.
    pub(crate) fn keep(&self, event: AuditEvent) -> Result<(), Box<AuditEvent>> {
        let mut entries = self.lock();
        if entries.len() >= self.cap {
            return Err(Box::new(event));
        }
        entries.push_back(event);
        Ok(())
    }

    /// The oldest entry, to write.
    pub(crate) fn take(&self) -> Option<AuditEvent> {
        self.lock().pop_front()
    }

    /// An entry taken that could not be written: first again.
    pub(crate) fn put_back(&self, event: AuditEvent) {
        self.lock().push_front(event);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const ID: CommandId = CommandId::from_uuid(Uuid::from_u128(7));
    const OUT: OutputStream = OutputStream::Stdout;

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn a_refused_write_marks_the_store_refusing_until_a_write_succeeds() {
        let spool = OutputSpool::new(100);
        assert!(!spool.refusing());
        assert_eq!(spool.push(ID, OUT, 0, chunk(10)), Pushed::Queued);
        assert_eq!(spool.claim(ID, OUT).unwrap().settle(false), None);
        assert!(spool.refusing());
        // A claim dropped unsettled failed too.
        drop(spool.claim(ID, OUT).unwrap());
        assert!(spool.refusing());
        assert_eq!(spool.claim(ID, OUT).unwrap().settle(true), None);
        assert!(!spool.refusing());
        assert!(!spool.waiting(ID));
    }

    #[test]
    fn chunks_wait_in_order_and_leave_when_written() {
        let spool = OutputSpool::new(100);
        assert_eq!(spool.push(ID, OUT, 0, chunk(10)), Pushed::Queued);
        let head = spool.claim(ID, OUT).unwrap();
        assert_eq!(head.seq, 0);
        // Another writer finds the head taken; a later chunk queues behind it.
        assert!(spool.claim(ID, OUT).is_none());
        assert_eq!(spool.push(ID, OUT, 1, chunk(20)), Pushed::Queued);
        assert_eq!(head.settle(false), None);
        let head = spool.claim(ID, OUT).unwrap();
        assert_eq!(head.seq, 0, "the failed chunk is first again");
        head.settle(true);
        assert_eq!(spool.bytes(), 20);
        let head = spool.claim(ID, OUT).unwrap();
        assert_eq!(head.seq, 1);
        head.settle(true);
        assert!(!spool.waiting(ID));
        assert!(
            spool.commands().is_empty(),
            "nothing kept for an idle command"
        );
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn a_dropped_claim_counts_as_a_failure() {
        let spool = OutputSpool::new(100);
        spool.push(ID, OUT, 0, chunk(10));
        drop(spool.claim(ID, OUT).unwrap());
        assert_eq!(spool.claim(ID, OUT).unwrap().seq, 0);
    }

    #[test]
    fn a_full_spool_makes_the_stream_give_up_for_good() {
        let spool = OutputSpool::new(25);
        spool.push(ID, OUT, 0, chunk(10));
        spool.claim(ID, OUT).unwrap().settle(false);
        assert_eq!(spool.push(ID, OUT, 1, chunk(10)), Pushed::Queued);
        let lost = Lost {
            chunks: 3,
            bytes: 30,
            given_up: true,
        };
        assert_eq!(spool.push(ID, OUT, 2, chunk(10)), Pushed::Overflow(lost));
        assert_eq!(spool.bytes(), 0);
        assert!(!spool.waiting(ID));
        // Later output of that stream is dropped too: stored output stays a prefix.
        assert_eq!(spool.push(ID, OUT, 3, chunk(5)), Pushed::Dropped);
        // The other stream is not affected.
        let err = OutputStream::Stderr;
        assert_eq!(spool.push(ID, err, 0, chunk(5)), Pushed::Queued);
        spool.claim(ID, err).unwrap().settle(true);
        let (stdout, stderr) = spool.finish(ID);
        assert_eq!((stdout.chunks, stdout.bytes), (4, 35));
        assert_eq!(stderr, Lost::default());
    }

    #[test]
    fn a_failure_over_the_cap_gives_up() {
        let spool = OutputSpool::new(15);
        // An empty stream always takes its chunk, even over the cap...
        spool.push(ID, OUT, 0, chunk(20));
        // ...but when it cannot be written it does not stay over the cap.
        let lost = spool.claim(ID, OUT).unwrap().settle(false).unwrap();
        assert_eq!((lost.chunks, lost.bytes), (1, 20));
        assert_eq!(spool.bytes(), 0);
    }

    #[test]
    fn giving_up_at_the_end_drops_what_waits() {
        let spool = OutputSpool::new(100);
        spool.push(ID, OUT, 0, chunk(10));
        spool.push(ID, OUT, 1, chunk(10));
        spool.give_up(ID);
        assert!(!spool.waiting(ID));
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.finish(ID).0.bytes, 20);
    }

    #[test]
    fn the_audit_spool_is_bounded_and_keeps_order() {
        let spool = AuditSpool::new(2);
        let at = rmm_domain::Timestamp::from_unix_micros(1);
        let event = |n| {
            let mut e = AuditEvent::new(at, crate::ports::AuditAction::FileUpload);
            e.detail = Some(format!("{n}"));
            e
        };
        spool.keep(event(1)).unwrap();
        spool.keep(event(2)).unwrap();
        assert_eq!(
            spool.keep(event(3)).unwrap_err().detail.as_deref(),
            Some("3")
        );
        let first = spool.take().unwrap();
        spool.put_back(first);
        assert_eq!(spool.take().unwrap().detail.as_deref(), Some("1"));
        assert_eq!(spool.len(), 1);
    }
}
