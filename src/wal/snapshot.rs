//! Receiving a snapshot on a follower, off the event loop.
//!
//! The leader streams its log file in chunks. The loop only receives them:
//! it copies each chunk once and queues it for two threads, and never
//! touches the disk or the new map itself.
//!
//! ```text
//!  loop ── chunk ──┬─> writer thread:  write to the temp file beside the log,
//!                  │                   fdatasync every SYNC_EVERY bytes
//!                  └─> builder thread: decode the records, note them in a
//!                                      BulkLoad (a fresh Store reserved
//!                                      for the leader's key count) whose
//!                                      keys point into the chunks
//!  END seq ──> writer: fsync;  builder: check the order rule and the seq,
//!                                      fill the table region by region,
//!                                      copy out the chunks less than half
//!                                      used
//!          ──> both report through a channel and the loop's waker
//! ```
//!
//! - **Why two threads.** Decoding and inserting a million keys is the
//!   bulk of a snapshot's CPU time, and on the loop it delayed every client
//!   read behind it. The disk gets its own thread because an fsync blocks:
//!   on the builder it would stall the decoding, on the loop every client.
//! - **Why the table fills at `END`.** Inserted as they arrive, a million
//!   keys each waited for a cache miss in a table of tens of MiB while the
//!   transfer pushed everything else out of the cache: half the builder's
//!   time. Noted by table region and placed one region at a time
//!   ([`BulkLoad`]), they take about 40 ms after the last byte, and the
//!   builder's CPU time for 1M keys fell by about half.
//! - **Why fsync as it goes.** The page cache would otherwise hold the
//!   whole file dirty until the final fsync, which then flushes all of it
//!   (0.3 s for 132 MB here) after the last byte arrived. Flushed in
//!   `SYNC_EVERY` steps, the disk works while the data is still arriving
//!   and the final fsync has only the last few MiB left.
//! - **Bounded memory.** Each thread may have at most `QUEUE_MAX` bytes
//!   queued. Past that [`Receiver::holds_input`] is true and the loop stops
//!   reading the link (the leader's own output bound then holds it back);
//!   the thread that drains below half wakes the loop.
//! - **Crash safety.** Nothing replaces the old log until the loop calls
//!   [`super::Wal::install_snapshot`] with the finished [`Snapshot`]. A
//!   dropped [`Receiver`] (the link failed) stops both threads, and the
//!   temp file is removed (or, after a crash, at the next start).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver as Inbox, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

use super::lineage::Lineage;
use super::record::{
    self, Decoded, Header, HeaderError, Op, Record, RecordError, BODY_FIXED_LEN, HEADER_LEN,
    RECORD_PREFIX_LEN,
};
use super::{accept_logged, compact, OrderError, SeqCheck, WalError};
use crate::store::{BufferId, BulkLoad, Store};

/// The writer thread fdatasyncs the temp file after every this many bytes,
/// so the fsync at `END` has at most this much (plus what is queued) left:
/// about 10 ms here, against 0.3 s for the whole 132 MB file at once.
const SYNC_EVERY: usize = 8 << 20;

/// Bytes queued for one thread past which the loop stops reading the link.
/// Twice a sync step: the writer's queue absorbs what arrives during one
/// of its fsyncs, so the builder does not wait for the disk.
const QUEUE_MAX: usize = 16 << 20;

/// The smallest record: prefix, fixed body, a one-byte key and no value
/// (a DELETE, or a PUT of the empty value). A key-count hint is capped at
/// the number of such records the announced size can hold, so a wrong hint
/// cannot reserve much more than the data will fill (a batch record holds
/// keys more densely; the map then grows as it fills).
const MIN_RECORD_LEN: u64 = (RECORD_PREFIX_LEN + BODY_FIXED_LEN + 1) as u64;

/// What the leader announced about a snapshot in its `PLAN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// Bytes of log file it will send.
    pub bytes: u64,
    /// Live keys it held when it planned the snapshot (a hint).
    pub keys: u64,
}

/// Why a snapshot could not be received: the leader broke its
/// announcement, the bytes are not a valid log, or the temp file or a
/// thread failed.
#[derive(Debug)]
pub enum SnapshotError {
    /// More bytes arrived than the leader announced.
    Overrun { announced: u64 },
    /// `END` came before all the announced bytes.
    Short { received: u64, announced: u64 },
    /// A chunk after `END`.
    ChunkAfterEnd,
    /// A second `END`.
    SecondEnd,
    /// The threads are gone (the error that stopped them comes from
    /// [`Receiver::poll`]).
    ThreadsStopped,
    /// The writer or builder thread ended without a result (it panicked).
    ThreadDied(&'static str),
    /// The [`Receiver`] was dropped before `END`.
    Abandoned,
    /// Writing the temp file failed.
    Write(io::Error),
    /// Syncing the temp file failed.
    Sync(io::Error),
    /// The file header is unreadable.
    Header(HeaderError),
    /// Bytes that are not a record.
    Record(RecordError),
    /// A record that breaks the order rule or the lineage.
    Order(OrderError),
    /// Records without a header before them.
    NoHeader,
    /// The bytes ended before a whole header.
    EndedBeforeHeader,
    /// The bytes ended inside a record, `left` bytes of it in.
    EndsInsideRecord { left: usize },
    /// The records end at `last`, the leader's `END` said `said`.
    WrongEndSeq { last: u64, said: u64 },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Overrun { announced } => {
                write!(f, "the snapshot runs past the {announced} bytes announced")
            }
            SnapshotError::Short {
                received,
                announced,
            } => write!(
                f,
                "the snapshot ended after {received} of the {announced} bytes announced"
            ),
            SnapshotError::ChunkAfterEnd => write!(f, "a snapshot chunk after its end"),
            SnapshotError::SecondEnd => write!(f, "a second snapshot END"),
            SnapshotError::ThreadsStopped => write!(f, "the snapshot threads stopped"),
            SnapshotError::ThreadDied(who) => write!(f, "the snapshot {who} thread died"),
            SnapshotError::Abandoned => write!(f, "the snapshot was abandoned"),
            SnapshotError::Write(e) => write!(f, "writing the snapshot: {e}"),
            SnapshotError::Sync(e) => write!(f, "fsync of the snapshot: {e}"),
            SnapshotError::Header(e) => write!(f, "snapshot header: {e}"),
            SnapshotError::Record(e) => write!(f, "snapshot record: {e}"),
            SnapshotError::Order(e) => write!(f, "{e}"),
            SnapshotError::NoHeader => write!(f, "snapshot without header"),
            SnapshotError::EndedBeforeHeader => write!(f, "snapshot ended before its header"),
            SnapshotError::EndsInsideRecord { left } => {
                write!(f, "snapshot ends inside a record ({left} bytes left)")
            }
            SnapshotError::WrongEndSeq { last, said } => {
                write!(f, "snapshot ends at seq {last} but the leader said {said}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Write(e) | SnapshotError::Sync(e) => Some(e),
            SnapshotError::Order(e) => Some(e),
            _ => None,
        }
    }
}

impl From<OrderError> for SnapshotError {
    fn from(e: OrderError) -> SnapshotError {
        SnapshotError::Order(e)
    }
}

impl From<RecordError> for SnapshotError {
    fn from(e: RecordError) -> SnapshotError {
        SnapshotError::Record(e)
    }
}

impl From<HeaderError> for SnapshotError {
    fn from(e: HeaderError) -> SnapshotError {
        SnapshotError::Header(e)
    }
}

/// A complete snapshot, ready to install.
pub struct Snapshot {
    /// The received log file, fsynced.
    pub temp: NamedTempFile,
    pub header: Header,
    pub lineage: Lineage,
    pub last_seq: u64,
    pub store: Store,
    pub bytes: u64,
    /// From the plan to `END`, and from `END` to the threads' last report.
    pub receiving: Duration,
    pub finishing: Duration,
}

/// A message to either thread.
enum Msg {
    Chunk(Arc<[u8]>),
    /// The snapshot is complete through this seq.
    End(u64),
}

/// Queue accounting shared by the loop and the threads.
struct Flow {
    state: Mutex<FlowState>,
    /// Wakes the loop (its `mio::Waker`).
    wake: Box<dyn Fn() + Send + Sync>,
    queue_max: usize,
}

#[derive(Default)]
struct FlowState {
    /// Bytes queued for the writer and the builder.
    queued: [usize; 2],
    /// The loop stopped reading because a queue was full: wake it once
    /// both are below half.
    loop_waiting: bool,
}

const WRITER: usize = 0;
const BUILDER: usize = 1;

impl Flow {
    fn lock(&self) -> MutexGuard<'_, FlowState> {
        // A thread that panicked holding the lock left plain counters
        // behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Thread `who` is done with `n` bytes.
    fn done(&self, who: usize, n: usize) {
        let wake = {
            let mut s = self.lock();
            s.queued[who] -= n.min(s.queued[who]);
            let below_half = s.queued.iter().all(|&q| q <= self.queue_max / 2);
            let wake = s.loop_waiting && below_half;
            if wake {
                s.loop_waiting = false;
            }
            wake
        };
        if wake {
            (self.wake)();
        }
    }
}

/// The loop's side of a snapshot being received.
pub struct Receiver {
    flow: Arc<Flow>,
    /// Channels to the writer and the builder; `None` once ended.
    to_threads: Option<[Sender<Msg>; 2]>,
    written: Inbox<Result<NamedTempFile, SnapshotError>>,
    built: Inbox<Result<Built, SnapshotError>>,
    /// Results in so far.
    temp: Option<NamedTempFile>,
    store: Option<Built>,
    announced: Option<Announced>,
    received: u64,
    /// `END` arrived, with this seq.
    ended: Option<u64>,
    started: Instant,
    ended_at: Option<Instant>,
}

/// The builder's result.
struct Built {
    header: Header,
    lineage: Lineage,
    store: Store,
}

impl Receiver {
    /// Starts receiving a snapshot into a temp file beside `log`; `wake` is
    /// called from the threads when the loop should call [`Receiver::poll`]
    /// or may read again.
    ///
    /// # Errors
    /// If the temp file or the threads cannot be created.
    pub fn start(
        log: &Path,
        announced: Option<Announced>,
        wake: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Receiver, WalError> {
        Receiver::with_queue_max(log, announced, wake, QUEUE_MAX)
    }

    fn with_queue_max(
        log: &Path,
        announced: Option<Announced>,
        wake: Box<dyn Fn() + Send + Sync>,
        queue_max: usize,
    ) -> Result<Receiver, WalError> {
        let temp = compact::temp_file_for(log)?;
        let flow = Arc::new(Flow {
            state: Mutex::new(FlowState::default()),
            wake,
            queue_max,
        });
        let spawn_error = |e| WalError::Io {
            path: log.to_path_buf(),
            op: "spawn snapshot thread",
            source: e,
        };
        let (to_writer, writer_inbox) = mpsc::channel();
        let (written_tx, written) = mpsc::channel();
        let writer_flow = Arc::clone(&flow);
        thread::Builder::new()
            .name("snapshot-write".into())
            .spawn(move || {
                let result = write_snapshot(temp, &writer_inbox, &writer_flow);
                let _ = written_tx.send(result);
                (writer_flow.wake)();
            })
            .map_err(spawn_error)?;
        let keys_hint = announced.map_or(0, |a| a.keys.min(a.bytes / MIN_RECORD_LEN));
        let (to_builder, builder_inbox) = mpsc::channel();
        let (built_tx, built) = mpsc::channel();
        let builder_flow = Arc::clone(&flow);
        thread::Builder::new()
            .name("snapshot-build".into())
            .spawn(move || {
                let result = build_snapshot(keys_hint, &builder_inbox, &builder_flow);
                let _ = built_tx.send(result);
                (builder_flow.wake)();
            })
            .map_err(spawn_error)?;
        Ok(Receiver {
            flow,
            to_threads: Some([to_writer, to_builder]),
            written,
            built,
            temp: None,
            store: None,
            announced,
            received: 0,
            ended: None,
            started: Instant::now(),
            ended_at: None,
        })
    }

    /// Queues the next chunk of the leader's log file for both threads.
    ///
    /// # Errors
    /// More bytes than the leader announced, a chunk after `END`, or a
    /// thread that has stopped (its own error comes from [`Receiver::poll`]).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SnapshotError> {
        self.received += chunk.len() as u64;
        if let Some(a) = self.announced.filter(|a| self.received > a.bytes) {
            return Err(SnapshotError::Overrun { announced: a.bytes });
        }
        let Some(threads) = &self.to_threads else {
            return Err(SnapshotError::ChunkAfterEnd);
        };
        let chunk: Arc<[u8]> = Arc::from(chunk);
        {
            let mut s = self.flow.lock();
            for q in &mut s.queued {
                *q += chunk.len();
            }
        }
        for tx in threads {
            tx.send(Msg::Chunk(Arc::clone(&chunk)))
                .map_err(|_| SnapshotError::ThreadsStopped)?;
        }
        Ok(())
    }

    /// The leader's `END seq`: the threads finish, and [`Receiver::poll`]
    /// then gives the snapshot.
    ///
    /// # Errors
    /// Fewer bytes than the leader announced, or a second `END`.
    pub fn end(&mut self, seq: u64) -> Result<(), SnapshotError> {
        if let Some(a) = self.announced.filter(|a| self.received != a.bytes) {
            return Err(SnapshotError::Short {
                received: self.received,
                announced: a.bytes,
            });
        }
        let Some(threads) = self.to_threads.take() else {
            return Err(SnapshotError::SecondEnd);
        };
        self.ended = Some(seq);
        self.ended_at = Some(Instant::now());
        for tx in threads {
            tx.send(Msg::End(seq))
                .map_err(|_| SnapshotError::ThreadsStopped)?;
        }
        Ok(())
    }

    /// Whether the loop must stop reading the link: a thread's queue is
    /// full (it is woken when there is room), or the snapshot has ended and
    /// what follows it must wait until it is installed.
    pub fn holds_input(&self) -> bool {
        if self.ended.is_some() {
            return true;
        }
        let mut s = self.flow.lock();
        let full = s.queued.iter().any(|&q| q >= self.flow.queue_max);
        if full {
            s.loop_waiting = true;
        }
        full
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes in what the threads reported: `None` while they work, the
    /// first error either of them met, or (after `END`) the snapshot.
    pub fn poll(&mut self) -> Option<Result<Snapshot, SnapshotError>> {
        if self.temp.is_none() {
            match take(&self.written, "writer") {
                None => {}
                Some(Ok(temp)) => self.temp = Some(temp),
                Some(Err(e)) => return Some(Err(e)),
            }
        }
        if self.store.is_none() {
            match take(&self.built, "builder") {
                None => {}
                Some(Ok(built)) => self.store = Some(built),
                Some(Err(e)) => return Some(Err(e)),
            }
        }
        let seq = self.ended?;
        if self.temp.is_none() || self.store.is_none() {
            return None;
        }
        let (temp, built) = (self.temp.take()?, self.store.take()?);
        let ended_at = self.ended_at.unwrap_or(self.started);
        Some(Ok(Snapshot {
            receiving: ended_at - self.started,
            finishing: ended_at.elapsed(),
            temp,
            header: built.header,
            lineage: built.lineage,
            last_seq: seq,
            store: built.store,
            bytes: self.received,
        }))
    }
}

/// A thread's result, if it sent one; a thread that ended without one
/// (it panicked) is an error.
fn take<T>(
    inbox: &Inbox<Result<T, SnapshotError>>,
    who: &'static str,
) -> Option<Result<T, SnapshotError>> {
    match inbox.try_recv() {
        Ok(result) => Some(result),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(SnapshotError::ThreadDied(who))),
    }
}

/// The writer thread: appends chunks to the temp file, fdatasyncs every
/// [`SYNC_EVERY`] bytes, and fsyncs at the end.
fn write_snapshot(
    mut temp: NamedTempFile,
    inbox: &Inbox<Msg>,
    flow: &Flow,
) -> Result<NamedTempFile, SnapshotError> {
    let mut unsynced = 0;
    for msg in inbox {
        match msg {
            Msg::Chunk(chunk) => {
                temp.as_file_mut()
                    .write_all(&chunk)
                    .map_err(SnapshotError::Write)?;
                flow.done(WRITER, chunk.len());
                unsynced += chunk.len();
                if unsynced >= SYNC_EVERY {
                    temp.as_file().sync_data().map_err(SnapshotError::Sync)?;
                    unsynced = 0;
                }
            }
            Msg::End(_) => {
                temp.as_file().sync_all().map_err(SnapshotError::Sync)?;
                return Ok(temp);
            }
        }
    }
    Err(SnapshotError::Abandoned)
}

/// The builder thread: decodes and applies every chunk, then checks the
/// end.
fn build_snapshot(keys_hint: u64, inbox: &Inbox<Msg>, flow: &Flow) -> Result<Built, SnapshotError> {
    let mut decoder = Decoder::new(usize::try_from(keys_hint).unwrap_or(0));
    for msg in inbox {
        match msg {
            Msg::Chunk(chunk) => {
                decoder.feed(&chunk)?;
                flow.done(BUILDER, chunk.len());
            }
            Msg::End(seq) => return decoder.finish(seq),
        }
    }
    Err(SnapshotError::Abandoned)
}

/// Turns the bytes of a log file, in chunks of any size, into a store:
/// checks the header, every record's checksum and the order rule, and
/// applies the records. Records are decoded in place in each chunk, and
/// the store keeps each chunk as a shared buffer its keys point into (see
/// [`BulkLoad`]); only a record that straddles two chunks is copied.
pub struct Decoder {
    /// A partial header or record from the end of the last chunk.
    carry: Vec<u8>,
    /// Set once the header is in.
    state: Option<(Header, SeqCheck, Lineage)>,
    load: BulkLoad,
}

impl Decoder {
    /// A decoder whose store has room for `keys` keys (a hint: a store that
    /// cannot get the memory grows as it goes instead).
    pub fn new(keys: usize) -> Decoder {
        Decoder {
            carry: Vec::new(),
            state: None,
            load: BulkLoad::new(keys),
        }
    }

    /// Takes the next chunk.
    ///
    /// # Errors
    /// What is wrong with the bytes.
    pub fn feed(&mut self, shared: &Arc<[u8]>) -> Result<(), SnapshotError> {
        let mut chunk: &[u8] = shared;
        if self.state.is_none() {
            let take = (HEADER_LEN - self.carry.len()).min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.carry.len() < HEADER_LEN {
                return Ok(());
            }
            let header = Header::decode(&self.carry)?;
            let lineage = Lineage::new(header.history, header.epoch);
            self.state = Some((header, SeqCheck::new(header.base_seq), lineage));
            self.carry.clear();
        }
        let Some((_, seqs, lineage)) = self.state.as_mut() else {
            return Err(SnapshotError::NoHeader);
        };
        // Complete a record begun in the last chunk, a few bytes at a time
        // (its prefix first, then the rest its length asks for). Its key
        // and value are copied.
        while !self.carry.is_empty() {
            match Record::decode(&self.carry) {
                Ok(Decoded::Record(rec, _)) => {
                    apply(&rec, 0, &mut |_| None, seqs, lineage, &mut self.load)?;
                    self.carry.clear();
                }
                Ok(Decoded::Incomplete { needed }) => {
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    let take = needed.saturating_sub(self.carry.len()).min(chunk.len());
                    self.carry.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut off = shared.len() - chunk.len();
        // Shared with the store at its first PUT: a chunk with none (a
        // piece of one record, say) costs the store nothing.
        let mut buffer = None;
        let mut share = |load: &mut BulkLoad| {
            *buffer.get_or_insert_with(|| load.share(Arc::clone(shared), record::key_value_at))
        };
        loop {
            match Record::decode(&shared[off..]) {
                Ok(Decoded::Record(rec, used)) => {
                    apply(&rec, off, &mut share, seqs, lineage, &mut self.load)?;
                    off += used;
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(id) = buffer.flatten() {
            self.load.unpin(id);
        }
        self.carry.extend_from_slice(&shared[off..]);
        Ok(())
    }

    /// Checks that the bytes ended after a whole record, at `seq`.
    fn finish(self, seq: u64) -> Result<Built, SnapshotError> {
        let Some((header, seqs, lineage)) = self.state else {
            return Err(SnapshotError::EndedBeforeHeader);
        };
        if !self.carry.is_empty() {
            return Err(SnapshotError::EndsInsideRecord {
                left: self.carry.len(),
            });
        }
        if seqs.last() != seq {
            return Err(SnapshotError::WrongEndSeq {
                last: seqs.last(),
                said: seq,
            });
        }
        Ok(Built {
            header,
            lineage,
            store: self.load.finish(),
        })
    }
}

/// Applies one decoded record. A PUT's key and value stay where they are,
/// at `at` in the buffer `share` gives (or copied, if it gives none). A
/// batch's entries are copied, in order: the shared buffer's reader
/// ([`record::key_value_at`]) finds one key and value per record.
fn apply(
    rec: &Record<'_>,
    at: usize,
    share: &mut impl FnMut(&mut BulkLoad) -> Option<BufferId>,
    seqs: &mut SeqCheck,
    lineage: &mut Lineage,
    load: &mut BulkLoad,
) -> Result<(), SnapshotError> {
    match accept_logged(rec, seqs, lineage)? {
        Some(Op::Put) => match share(load) {
            Some(buffer) => load.set_shared(buffer, at, rec.key, rec.value),
            None => load.set(rec.key, rec.value),
        },
        Some(Op::Delete) => load.remove(rec.key),
        Some(Op::Batch) => {
            for entry in rec.entries() {
                match entry.op {
                    Op::Put => load.set(entry.key, entry.value),
                    Op::Delete => load.remove(entry.key),
                    Op::Fork | Op::Batch => {}
                }
            }
        }
        Some(Op::Fork) | None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A log of just the header, history `[9; 16]`, base seq 0.
    fn empty_log() -> Vec<u8> {
        let mut log = Vec::new();
        Header {
            history: [9; 16],
            base_seq: 0,
            epoch: 1,
        }
        .encode(&mut log);
        log
    }

    /// A log of 20 puts over 7 keys and a delete: 6 keys, seq 21.
    fn sample_log() -> Vec<u8> {
        let mut log = empty_log();
        for seq in 1..=20u64 {
            let key = format!("k{}", seq % 7);
            Record {
                seq,
                op: Op::Put,
                key: key.as_bytes(),
                value: b"value",
            }
            .encode(&mut log);
        }
        Record {
            seq: 21,
            op: Op::Delete,
            key: b"k0",
            value: b"",
        }
        .encode(&mut log);
        log
    }

    #[test]
    fn the_decoder_accepts_a_log_in_any_chunking() {
        let log = sample_log();
        for chunk in [1, 2, 7, 8, 9, 30, 48, 49, 1000] {
            let mut d = Decoder::new(10);
            for piece in log.chunks(chunk) {
                d.feed(&Arc::from(piece)).expect("feed");
            }
            let built = d.finish(21).expect("finish");
            assert_eq!(built.store.len(), 6, "chunks of {chunk}");
            if chunk < 26 {
                // No chunk holds a whole record (the smallest is 26 bytes).
                assert_eq!(built.store.buffers_shared(), 0, "chunks of {chunk}");
            }
            assert_eq!(built.store.get(b"k6"), Some(&b"value"[..]));
            assert_eq!(built.header.history, [9; 16]);
        }
    }

    #[test]
    fn a_key_deleted_and_another_put_in_the_same_chunk_read_back_whole() {
        // The chunk's only key leaves its buffer before the next PUT of the
        // chunk points into it: the buffer must still be there.
        let mut log = empty_log();
        for (seq, op, key, value) in [
            (1, Op::Put, &b"gone"[..], &b"1"[..]),
            (2, Op::Delete, b"gone", b""),
            (3, Op::Put, b"kept", b"22"),
            (4, Op::Put, b"also", b"333"),
        ] {
            Record {
                seq,
                op,
                key,
                value,
            }
            .encode(&mut log);
        }
        let mut d = Decoder::new(4);
        d.feed(&Arc::from(&log[..])).expect("feed");
        let built = d.finish(4).expect("finish");
        let mut want = Store::new();
        want.set(b"kept", b"22");
        want.set(b"also", b"333");
        assert_eq!(built.store.get(b"kept"), Some(&b"22"[..]));
        assert_eq!(built.store.digest(), want.digest());
    }

    #[test]
    fn the_store_keeps_well_used_chunks_and_copies_out_the_rest() {
        let mut log = empty_log();
        for seq in 1..=100u64 {
            let key = format!("key{seq}");
            Record {
                seq,
                op: Op::Put,
                key: key.as_bytes(),
                value: &[b'v'; 50],
            }
            .encode(&mut log);
        }
        let mut d = Decoder::new(100);
        for piece in log.chunks(1000) {
            d.feed(&Arc::from(piece)).expect("feed");
        }
        let built = d.finish(100).expect("finish");
        let (held, live) = built.store.shared_bytes();
        assert!(
            held > 0 && live > held / 2,
            "every key live: kept ({live} of {held})"
        );
        assert_eq!(built.store.get(b"key77"), Some(&[b'v'; 50][..]));
        assert_eq!(built.store.len(), 100);

        // The sample log is mostly overwritten records: copied out.
        let mut d = Decoder::new(10);
        d.feed(&Arc::from(&sample_log()[..])).expect("feed");
        let built = d.finish(21).expect("finish");
        assert_eq!(built.store.shared_bytes(), (0, 0));
        assert_eq!(built.store.get(b"k6"), Some(&b"value"[..]));
    }

    #[test]
    fn the_decoder_refuses_short_wrong_or_damaged_logs() {
        let log = sample_log();
        let mut d = Decoder::new(0);
        d.feed(&Arc::from(&log[..log.len() - 3])).expect("feed");
        assert!(
            matches!(d.finish(21), Err(SnapshotError::EndsInsideRecord { .. })),
            "ends inside a record"
        );
        let mut d = Decoder::new(0);
        d.feed(&Arc::from(&log[..])).expect("feed");
        assert!(
            matches!(d.finish(22), Err(SnapshotError::WrongEndSeq { .. })),
            "ends at another seq"
        );
        let mut d = Decoder::new(0);
        d.feed(&Arc::from(&log[..HEADER_LEN - 1])).expect("feed");
        assert!(
            matches!(d.finish(0), Err(SnapshotError::EndedBeforeHeader)),
            "no header"
        );
        let mut bad = log.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        for chunk in [5, 1000] {
            let mut d = Decoder::new(0);
            let fed: Result<Vec<()>, SnapshotError> =
                bad.chunks(chunk).map(|p| d.feed(&Arc::from(p))).collect();
            assert!(fed.is_err(), "a flipped bit in chunks of {chunk}");
        }
    }

    #[test]
    fn the_decoder_survives_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let log = sample_log();
        for round in 0..500 {
            let mut bytes = log.clone();
            for _ in 0..1 + round % 4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % bytes.len();
                bytes[at] = (x >> 32) as u8;
            }
            let mut d = Decoder::new(0);
            let chunk = 1 + (x as usize >> 40) % 64;
            for piece in bytes.chunks(chunk) {
                if d.feed(&Arc::from(piece)).is_err() {
                    break;
                }
            }
        }
    }

    /// A leader's log of puts, deletes and batches with odd values, as
    /// its file's bytes, and the data it holds.
    fn mixed_log(dir: &Path) -> (Vec<u8>, u64, Store) {
        let mut o = super::super::tests::open(dir);
        super::super::tests::write_mix(&mut o, 80);
        let bytes = std::fs::read(o.wal.path()).expect("read");
        (bytes, o.wal.last_seq(), o.store)
    }

    #[test]
    fn batches_and_odd_values_build_the_same_store_in_any_chunking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, seq, store) = mixed_log(dir.path());
        assert!(log.len() > 1000);
        for chunk in [1, 7, 19, 64, 300, 4096, log.len()] {
            let mut d = Decoder::new(8);
            for piece in log.chunks(chunk) {
                d.feed(&Arc::from(piece)).expect("feed");
            }
            let built = d.finish(seq).expect("finish");
            assert_eq!(built.store.digest(), store.digest(), "chunks of {chunk}");
            assert_eq!(
                built.store.live_bytes(),
                store.live_bytes(),
                "chunks of {chunk}"
            );
        }
        // A batch whose entries do not parse, checksum and all, is refused.
        let mut bad = empty_log();
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&[4, 0, 0, 2, 1, 0, 1, 0, 0, 0, b'k', b'v']);
        bad.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bad.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bad.extend_from_slice(&body);
        let mut d = Decoder::new(0);
        assert!(matches!(
            d.feed(&Arc::from(&bad[..])),
            Err(SnapshotError::Record(RecordError::BadBody))
        ));
    }

    /// Receives `log` (through `seq`) into a follower's log at `dir` as a
    /// leader's snapshot, in chunks of `chunk` bytes, and installs it.
    fn transfer(log: &[u8], seq: u64, dir: &Path, chunk: usize) -> super::super::Opened {
        let mut follower = super::super::tests::open(dir);
        let announced = Announced {
            bytes: log.len() as u64,
            keys: 10,
        };
        let mut r =
            Receiver::start(follower.wal.path(), Some(announced), Box::new(|| {})).expect("start");
        for piece in log.chunks(chunk) {
            r.push(piece).expect("push");
        }
        r.end(seq).expect("end");
        let snap = wait_done(&mut r).expect("snapshot");
        follower
            .wal
            .install_snapshot(snap.temp, snap.header, snap.lineage, snap.last_seq)
            .expect("install");
        follower.store = snap.store;
        follower
    }

    #[test]
    fn a_full_transfer_with_batches_and_odd_values_reproduces_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leader_dir = dir.path().join("leader");
        std::fs::create_dir_all(&leader_dir).expect("mkdir");
        let (log, seq, store) = mixed_log(&leader_dir);
        let follower = transfer(&log, seq, dir.path(), 1000);
        assert_eq!(follower.store.digest(), store.digest());
        assert_eq!(follower.wal.last_seq(), seq);
        assert_eq!(std::fs::read(follower.wal.path()).expect("read"), log);
        let follower = super::super::tests::reopen(follower, dir.path());
        assert_eq!(follower.store.digest(), store.digest());
    }

    #[test]
    fn a_version_1_snapshot_is_installed_as_version_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = Header {
            history: [9; 16],
            base_seq: 0,
            epoch: 1,
        };
        let mut log = record::tests::header_bytes(&header, 1);
        log.extend_from_slice(&sample_log()[HEADER_LEN..]);
        let follower = transfer(&log, 21, dir.path(), 50);
        assert_eq!(follower.store.len(), 6);
        let installed = std::fs::read(follower.wal.path()).expect("read");
        assert_eq!(
            Header::decode_versioned(&installed),
            Ok((header, record::VERSION))
        );
        assert_eq!(installed[HEADER_LEN..], log[HEADER_LEN..]);
        drop(follower);
        let reopened = super::super::tests::open(dir.path());
        assert_eq!(reopened.wal.last_seq(), 21);
    }

    /// Polls until the receiver reports, within a bound.
    fn wait_done(r: &mut Receiver) -> Result<Snapshot, SnapshotError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(result) = r.poll() {
                return result;
            }
            assert!(Instant::now() < deadline, "the snapshot threads hung");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_received_snapshot_is_written_synced_and_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = sample_log();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let announced = Announced {
            bytes: log.len() as u64,
            keys: 6,
        };
        let mut r = Receiver::start(
            &dir.path().join("follower_2.log"),
            Some(announced),
            Box::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("start");
        for piece in log.chunks(10) {
            r.push(piece).expect("push");
        }
        assert!(r.poll().is_none(), "no result before END");
        r.end(21).expect("end");
        assert!(r.holds_input(), "input waits for the install");
        let snap = wait_done(&mut r).expect("snapshot");
        assert_eq!(snap.store.len(), 6);
        assert_eq!(snap.last_seq, 21);
        assert_eq!(snap.bytes, log.len() as u64);
        assert_eq!(std::fs::read(snap.temp.path()).expect("read"), log);
        assert!(
            wakes.load(Ordering::Relaxed) >= 2,
            "each thread wakes the loop"
        );
    }

    #[test]
    fn a_snapshot_that_breaks_its_announcement_or_its_records_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("follower_2.log");
        let log = sample_log();
        let short = Announced {
            bytes: log.len() as u64 - 1,
            keys: 6,
        };
        let mut r = Receiver::start(&path, Some(short), Box::new(|| {})).expect("start");
        assert!(
            matches!(r.push(&log), Err(SnapshotError::Overrun { .. })),
            "more bytes than announced"
        );
        let long = Announced {
            bytes: log.len() as u64 + 1,
            keys: 6,
        };
        let mut r = Receiver::start(&path, Some(long), Box::new(|| {})).expect("start");
        r.push(&log).expect("push");
        assert!(
            matches!(r.end(21), Err(SnapshotError::Short { .. })),
            "fewer bytes than announced"
        );
        let mut r = Receiver::start(&path, None, Box::new(|| {})).expect("start");
        r.push(&log).expect("push");
        r.end(20).expect("end");
        let Err(why) = wait_done(&mut r) else {
            panic!("a wrong end seq was accepted")
        };
        assert!(
            matches!(why, SnapshotError::WrongEndSeq { last: 21, said: 20 }),
            "{why:?}"
        );
        assert_eq!(
            why.to_string(),
            "snapshot ends at seq 21 but the leader said 20"
        );
    }

    #[test]
    fn a_chunk_or_end_after_the_end_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = sample_log();
        let mut r = Receiver::start(&dir.path().join("follower_2.log"), None, Box::new(|| {}))
            .expect("start");
        r.push(&log).expect("push");
        r.end(21).expect("end");
        assert!(matches!(r.push(b"x"), Err(SnapshotError::ChunkAfterEnd)));
        assert!(matches!(r.end(21), Err(SnapshotError::SecondEnd)));
        assert!(wait_done(&mut r).is_ok());
    }

    #[test]
    fn errors_read_as_before() {
        let disk = || io::Error::other("disk");
        let cases = [
            (
                SnapshotError::Overrun { announced: 9 },
                "the snapshot runs past the 9 bytes announced",
            ),
            (
                SnapshotError::Short {
                    received: 3,
                    announced: 9,
                },
                "the snapshot ended after 3 of the 9 bytes announced",
            ),
            (
                SnapshotError::ChunkAfterEnd,
                "a snapshot chunk after its end",
            ),
            (SnapshotError::SecondEnd, "a second snapshot END"),
            (
                SnapshotError::ThreadsStopped,
                "the snapshot threads stopped",
            ),
            (
                SnapshotError::ThreadDied("writer"),
                "the snapshot writer thread died",
            ),
            (SnapshotError::Abandoned, "the snapshot was abandoned"),
            (SnapshotError::Write(disk()), "writing the snapshot: disk"),
            (SnapshotError::Sync(disk()), "fsync of the snapshot: disk"),
            (
                SnapshotError::Header(HeaderError::BadMagic),
                "snapshot header: not a keyval log (bad magic)",
            ),
            (
                SnapshotError::Record(RecordError::BadChecksum),
                "snapshot record: record checksum mismatch",
            ),
            (
                SnapshotError::Order(OrderError::SeqGap { seq: 5, last: 3 }),
                "seq 5 follows seq 3",
            ),
            (SnapshotError::NoHeader, "snapshot without header"),
            (
                SnapshotError::EndedBeforeHeader,
                "snapshot ended before its header",
            ),
            (
                SnapshotError::EndsInsideRecord { left: 4 },
                "snapshot ends inside a record (4 bytes left)",
            ),
            (
                SnapshotError::WrongEndSeq { last: 21, said: 20 },
                "snapshot ends at seq 21 but the leader said 20",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text, "{error:?}");
        }
    }

    #[test]
    fn a_dropped_receiver_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = sample_log();
        let mut r = Receiver::start(&dir.path().join("follower_2.log"), None, Box::new(|| {}))
            .expect("start");
        r.push(&log[..100]).expect("push");
        drop(r);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(dir.path()).expect("list").count() > 0 {
            assert!(Instant::now() < deadline, "the temp file stayed");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_full_queue_holds_input_until_the_threads_drain_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = sample_log();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&wakes);
        let mut r = Receiver::with_queue_max(
            &dir.path().join("follower_2.log"),
            None,
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            1,
        )
        .expect("start");
        // Pretend the threads are behind: a queue at its bound holds input.
        r.flow.lock().queued[BUILDER] += 1;
        assert!(r.holds_input());
        assert!(r.flow.lock().loop_waiting);
        r.flow.done(BUILDER, 1);
        assert!(!r.holds_input());
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "the drain woke the loop");
        r.push(&log).expect("push");
        r.end(21).expect("end");
        assert!(wait_done(&mut r).is_ok());
    }
}
