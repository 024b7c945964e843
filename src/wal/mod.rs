//! The write-ahead log: the only module that touches data files.
//!
//! A [`Wal`] owns one log file (`leader.log` or `follower_<id>.log`). Writes
//! are encoded into a user-space buffer by [`Wal::append`] and written
//! together by [`Wal::commit`] — one `write` per event-loop turn, the group
//! commit. Under `--fsync always` the `fdatasync` that makes them durable
//! runs on the sync thread ([`syncer`]) once one is started, so the loop
//! keeps serving while it runs; a write counts as done only once a sync
//! report covers it. While a sync is in flight the loop keeps serving and
//! collects the next batch in the buffer; it writes that batch when the
//! sync is reported, and the next sync covers all of it. Under a light load
//! (a small batch, no sync in flight) the loop fsyncs inline instead, which
//! is cheaper then (`SYNC_INLINE_BELOW`). [`Wal::open`] replays the file into a [`Store`],
//! cutting back a torn tail and refusing to start on damage before it
//! ([`tail`] tells the two apart). [`Wal::counters`] counts the torn tails
//! cut (and those that left the log suspect) and the fsyncs that failed,
//! for `INFO`.
//! Compaction ([`compact`]) rewrites the file on a background thread.
//!
//! Three points along the log matter:
//!
//! ```text
//!   durable <= file <= last
//!   durable: fsynced                   file: handed to write(2)
//!   last: appended to the buffer (and applied to the store)
//! ```
//!
//! The *ack point* is `durable` under `--fsync always` and `file` under
//! `everysec` and `no`: writes up to it may be answered, shown to readers
//! and sent to followers. Writes past it can still be lost to a disk error,
//! and are then undone in the store (fail-stop, see [`Wal::lost_from`]).
//!
//! Byte layout: see [`record`].

pub(crate) mod compact;
pub(crate) mod lineage;
pub mod record;
pub(crate) mod scan;
pub(crate) mod snapshot;
pub(crate) mod syncer;
pub(crate) mod tail;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::{info, warn};

use crate::store::{Store, UndoLog};
use lineage::{Lineage, LineageError, Segment};
use record::{Decoded, Header, HistoryId, Op, Record, HEADER_LEN, RECORD_PREFIX_LEN};
use syncer::{Outcome, Syncer, Target};
use tail::{ReadAt, Tail};

/// Under `--fsync always`, a batch smaller than this (about 120 writes of
/// 100-byte values), with no sync in flight, is fsynced on the loop
/// instead of the sync thread.
///
/// A write's reply waits for the fsync either way, and so does any read
/// made meanwhile (it may show the write). So handing the fsync over only
/// pays when the loop has other work to overlap with it. The signs of that
/// are a sync already in flight or a large batch. A small batch with the
/// thread idle means a light load. Then the hand-off costs two thread
/// wake-ups, and it splits the group commit into more, smaller fsyncs,
/// because the loop turns over every few requests instead of collecting
/// them while it waits. Measured with 50 clients and one request in flight
/// each on the 2-core development machine, every fsync on the thread gave
/// about 4 times the loop turns, 1.7 times the fsyncs and 20 % fewer
/// writes per second. This rule brought back the inline rate there, and
/// kept the thread's gain with 16 requests in flight.
const SYNC_INLINE_BELOW: u64 = 16 << 10;

/// When the log is fsynced (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every reply: no `OK` for a write that is not on disk.
    Always,
    /// Once a second, from the loop's timer, on the sync thread (as Redis
    /// `appendfsync everysec`).
    EverySec,
    /// Never; the kernel writes back when it likes.
    No,
}

/// Why a fork record was refused.
#[derive(Debug)]
pub enum ForkError {
    /// Forks are written by `Wal::fork`, not appended as writes.
    NotAnAppend,
    /// A fork record whose fields do not decode.
    Malformed,
    /// It does not fit the lineage: epochs or seqs going back, a history
    /// used twice.
    Lineage(LineageError),
}

impl fmt::Display for ForkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForkError::NotAnAppend => write!(f, "forks go through Wal::fork"),
            ForkError::Malformed => write!(f, "a malformed fork record"),
            ForkError::Lineage(e) => write!(f, "{e}"),
        }
    }
}

/// Errors of the log layer.
#[derive(Debug)]
pub enum WalError {
    /// An IO operation on the named file failed.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// The header is unreadable.
    BadHeader {
        path: PathBuf,
        reason: record::HeaderError,
    },
    /// Damage before the tail: a record out of sequence, or a damaged one
    /// with a valid record after it (see [`tail`]), so cutting here would
    /// drop acknowledged writes. Replay leaves the file as it is.
    Corrupt {
        path: PathBuf,
        /// Where the record replay could not take begins.
        offset: u64,
        reason: String,
        /// Where the valid record after a damaged one begins, if that is
        /// what made this damage and not a torn tail.
        next: Option<u64>,
    },
    /// Another process holds the log.
    Locked { path: PathBuf },
    /// An earlier append or fsync failed; the log takes no more writes.
    Failed,
    /// A replicated record does not follow the log's last one.
    OutOfOrder { expected: u64, got: u64 },
    /// A fork record that does not fit the log's lineage.
    BadFork(ForkError),
    /// A rewind to a seq the log no longer holds record by record.
    CannotRewind { to: u64, base_seq: u64 },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io { path, op, source } => write!(f, "{}: {op}: {source}", path.display()),
            WalError::BadHeader { path, reason } => {
                write!(f, "{}: offset 0: {reason}", path.display())
            }
            WalError::Corrupt {
                path,
                offset,
                reason,
                next,
            } => {
                write!(f, "{}: offset {offset}: {reason}; ", path.display())?;
                if let Some(next) = next {
                    write!(f, "a valid record follows at offset {next}, so ")?;
                }
                write!(
                    f,
                    "this is damage, not a torn tail; the file was left as it is (restore it, \
                     resync this node, or cut the file at offset {offset} by hand to drop every \
                     write from there on)"
                )
            }
            WalError::Locked { path } => {
                write!(
                    f,
                    "{}: another keyval process is using this log",
                    path.display()
                )
            }
            WalError::Failed => write!(f, "the log failed earlier and takes no more writes"),
            WalError::OutOfOrder { expected, got } => {
                write!(
                    f,
                    "replicated record seq {got} where seq {expected} was expected"
                )
            }
            WalError::BadFork(reason) => write!(f, "replicated fork record: {reason}"),
            WalError::CannotRewind { to, base_seq } => write!(
                f,
                "cannot rewind to seq {to}: the log was compacted through seq {base_seq}"
            ),
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Attaches the path and the operation to an IO error.
pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// An open, replayed log.
pub struct Wal {
    /// Runs the fsyncs off the loop, once [`Wal::start_sync_thread`] was
    /// called; without it they run inline. Declared first so that it is
    /// dropped first: the thread is joined before the lock is released.
    syncer: Option<Syncer>,
    /// [`SYNC_INLINE_BELOW`]; tests set 0 to send every fsync to the thread.
    inline_below: u64,
    path: PathBuf,
    /// Held open for the lifetime of the log; its lock keeps a second
    /// process off the same data.
    _lock: File,
    /// The log file, shared with the sync thread through each request.
    file: Arc<File>,
    header: Header,
    /// The histories the log holds (the header's, then its fork records).
    lineage: Lineage,
    policy: FsyncPolicy,
    /// Under `--fsync always`, whether fsyncs wait for [`Wal::sync_soon`]
    /// instead of following every commit (see [`Wal::defer_syncs`]).
    syncs_deferred: bool,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// What the writes past the ack point replaced in the store, oldest
    /// first, so a failure can undo them.
    uncommitted: UndoLog,
    /// Seq of the last record appended (written or not).
    last_seq: u64,
    /// Seq of the last record written to the file (in the page cache, not
    /// necessarily on disk).
    file_seq: u64,
    /// Seq of the last record known to be on disk.
    durable_seq: u64,
    /// File length after the last successful write.
    file_end: u64,
    /// File length known to be on disk.
    durable_end: u64,
    /// `file_end`, shared with a compaction thread copying the tail.
    shared_end: Arc<AtomicU64>,
    /// Set by the first failed write or fsync: fail-stop.
    failed: bool,
    /// The error that failed the log, until [`Wal::commit`] has undone the
    /// lost writes and reported it.
    failure: Option<WalError>,
    /// Once the lost writes are undone: the first seq that was lost.
    lost_from: Option<u64>,
    /// Bumped whenever the file is replaced (compaction, snapshot), so
    /// readers holding offsets know they must translate them.
    generation: u64,
    /// How offsets of the previous generation map into this one.
    remap: Option<Remap>,
    /// Replay cut a torn tail and no record past the base seq survived, so
    /// the cut may have reached the snapshot part: some live key may be
    /// missing although `last_seq` says the base seq. Cleared by a
    /// snapshot; see [`Wal::snapshot_suspect`].
    snapshot_suspect: bool,
    /// Rewinds so far. Each cut the file back in place, so bytes a reader
    /// (a `DIGEST` or `KEYS` scan, see [`scan`]) read past the cut may
    /// since have been written over.
    rewinds: u64,
    /// Rewinds and snapshot installs so far. Each replaced the data set
    /// instead of extending it, so a state from before it may no longer be
    /// in the file.
    resets: u64,
    /// Torn tails replay cut when the log was opened: 0 or 1.
    torn_tails_cut: u64,
    /// Of those, cuts that left the log suspect (see `snapshot_suspect`):
    /// 0 or 1, and unlike `snapshot_suspect` not cleared by a snapshot.
    torn_tails_suspect: u64,
    /// Fsyncs of the log that failed on the loop; the sync thread counts
    /// its own ([`Syncer::failures`]).
    inline_fsync_failures: u64,
    /// How the loop fsyncs the log: `File::sync_data`, or a stand-in that
    /// fails in tests.
    sync_data: fn(&File) -> io::Result<()>,
}

/// Facts about the log since it was opened, for `INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCounters {
    /// Torn (or damaged) tails replay cut back at open: 0 or 1, as the
    /// log is opened once per process.
    pub torn_tails_cut: u64,
    /// Of those, cuts after which no record past the base seq survived,
    /// so the cut may have reached the snapshot part and the log was
    /// suspect at open ([`Wal::snapshot_suspect`]): 0 or 1. It stays 1
    /// after a snapshot has made the log whole again.
    pub torn_tails_suspect: u64,
    /// Fsyncs of the log file that failed, inline on the loop or on the
    /// sync thread (under `--fsync always` and `everysec`; a sync thread
    /// that died with a sync in flight counts as one). The first fails
    /// the log, so this rarely goes past 1.
    pub fsync_failures: u64,
}

/// Offsets at or past `old_offset` in generation `from` are at
/// `offset - old_offset + new_offset` in the next generation (compaction
/// copies the records after its snapshot point verbatim). Offsets before
/// `old_offset` do not exist in the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remap {
    pub from: u64,
    pub old_offset: u64,
    pub new_offset: u64,
}

/// What [`Wal::open`] found in the file.
pub struct Opened {
    pub wal: Wal,
    pub store: Store,
    /// Bytes cut off a torn tail, if any.
    pub truncated: Option<u64>,
}

impl Wal {
    /// Opens (creating if absent) and replays the log at `path`.
    ///
    /// # Errors
    /// IO errors, a damaged header, damage before the tail, or a log held by
    /// another process.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<Opened, WalError> {
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path, "open"))?;
        if lock.try_lock().is_err() {
            return Err(WalError::Locked {
                path: path.to_path_buf(),
            });
        }
        compact::remove_stale_temp_files(path);
        let exists = match std::fs::metadata(path) {
            Ok(meta) => meta.len() > 0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(path, "stat")(e)),
        };
        if !exists {
            let header = Header {
                history: new_history_id(),
                base_seq: 0,
                epoch: 1,
            };
            create_log(path, &header)?;
            info!(
                "{}: created a new log, history {}",
                path.display(),
                hex::encode(header.history)
            );
        }
        // Append mode: every write lands at the end whatever else reads the
        // file, and a truncation after a failed write cannot leave a hole.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        let replayed = replay(path, &file, None)?;
        let truncated = replayed.file_len - replayed.end;
        let snapshot_suspect = truncated > 0
            && replayed.header.base_seq > 0
            && replayed.last_seq == replayed.header.base_seq;
        if snapshot_suspect {
            warn!(
                "{}: the torn tail may have reached the snapshot part (no record after base seq {} \
                 survived); a follower resyncs from a snapshot, a leader may be missing keys",
                path.display(),
                replayed.header.base_seq
            );
        }
        if truncated > 0 {
            warn!(
                "{}: cut {truncated} bytes of torn or damaged tail at offset {} (seq {})",
                path.display(),
                replayed.end,
                replayed.last_seq
            );
            file.set_len(replayed.end)
                .map_err(io_err(path, "truncate"))?;
            file.sync_all().map_err(io_err(path, "fsync"))?;
        }
        let wal = Wal {
            path: path.to_path_buf(),
            _lock: lock,
            file: Arc::new(file),
            header: replayed.header,
            lineage: replayed.lineage,
            policy,
            syncs_deferred: false,
            pending: Vec::new(),
            uncommitted: UndoLog::new(),
            last_seq: replayed.last_seq,
            file_seq: replayed.last_seq,
            durable_seq: replayed.last_seq,
            file_end: replayed.end,
            durable_end: replayed.end,
            shared_end: Arc::new(AtomicU64::new(replayed.end)),
            syncer: None,
            inline_below: SYNC_INLINE_BELOW,
            failed: false,
            failure: None,
            lost_from: None,
            generation: 0,
            remap: None,
            snapshot_suspect,
            rewinds: 0,
            resets: 0,
            torn_tails_cut: u64::from(truncated > 0),
            torn_tails_suspect: u64::from(snapshot_suspect),
            inline_fsync_failures: 0,
            sync_data: File::sync_data,
        };
        Ok(Opened {
            wal,
            store: replayed.store,
            truncated: (truncated > 0).then_some(truncated),
        })
    }

    /// Starts the sync thread: from now on [`Wal::commit`] hands fsyncs to
    /// it and returns at once, and `notify` is called whenever a sync
    /// finished (the loop then calls [`Wal::commit`] again to learn of it).
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn start_sync_thread(&mut self, notify: Box<dyn Fn() + Send>) -> Result<(), WalError> {
        self.start_syncer(Syncer::spawn(notify))
    }

    fn start_syncer(&mut self, syncer: io::Result<Syncer>) -> Result<(), WalError> {
        self.syncer = Some(syncer.map_err(io_err(&self.path, "spawn the sync thread"))?);
        Ok(())
    }

    /// Logs a write and applies it to `store`. The write is not durable (and
    /// must not be acknowledged) until [`Wal::commit`] returns a seq at or
    /// past the returned one.
    ///
    /// # Errors
    /// [`WalError::Failed`] once the log has failed.
    pub fn append(
        &mut self,
        store: &mut Store,
        op: Op,
        key: &[u8],
        value: &[u8],
    ) -> Result<u64, WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        let seq = self.last_seq + 1;
        match op {
            Op::Put => store.put(key, value, seq, &mut self.uncommitted),
            Op::Delete => {
                // Deleting an absent key changes nothing, so nothing is logged.
                if !store.delete(key, seq, &mut self.uncommitted) {
                    return Ok(self.last_seq);
                }
            }
            Op::Fork => return Err(WalError::BadFork(ForkError::NotAnAppend)),
        }
        Record {
            seq,
            op,
            key,
            value,
        }
        .encode(&mut self.pending);
        self.last_seq = seq;
        Ok(seq)
    }

    /// Logs several writes (interim: one record each).
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub fn append_batch(
        &mut self,
        store: &mut Store,
        entries: &[(Op, &[u8], &[u8])],
    ) -> Result<u64, WalError> {
        let mut seq = self.last_seq;
        for (op, key, value) in entries {
            seq = self.append(store, *op, key, value)?;
        }
        Ok(seq)
    }

    /// Logs and applies a record received from the leader, keeping its seq.
    /// `raw` is the record as the leader encoded it (and `rec` was decoded
    /// from, checksum verified): it is logged as is.
    ///
    /// # Errors
    /// [`WalError::Failed`] once the log has failed; `OutOfOrder` when the
    /// record does not directly follow the last one, or deletes a key this
    /// copy does not have (the copies differ: refuse rather than hide it).
    pub fn append_replicated(
        &mut self,
        store: &mut Store,
        rec: &Record<'_>,
        raw: &[u8],
    ) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        if let Some((history, epoch)) = rec.as_fork() {
            if rec.seq != self.last_seq {
                return Err(WalError::OutOfOrder {
                    expected: self.last_seq,
                    got: rec.seq,
                });
            }
            self.lineage
                .fork(history, epoch, rec.seq)
                .map_err(|e| WalError::BadFork(ForkError::Lineage(e)))?;
            self.pending.extend_from_slice(raw);
            return Ok(());
        }
        let out_of_order = WalError::OutOfOrder {
            expected: self.last_seq + 1,
            got: rec.seq,
        };
        if rec.seq != self.last_seq + 1 {
            return Err(out_of_order);
        }
        match rec.op {
            Op::Put => store.put(rec.key, rec.value, rec.seq, &mut self.uncommitted),
            Op::Delete => {
                if !store.delete(rec.key, rec.seq, &mut self.uncommitted) {
                    return Err(out_of_order);
                }
            }
            Op::Fork => return Err(WalError::BadFork(ForkError::Malformed)),
        }
        self.pending.extend_from_slice(raw);
        self.last_seq = rec.seq;
        Ok(())
    }

    /// The group commit, called once per loop turn: takes in the sync
    /// thread's reports, writes the buffered records with one `write`, and
    /// under `--fsync always` has them fsynced — by the sync thread if one
    /// is started (the call then returns before they are durable), else
    /// inline. While a sync is in flight the records stay buffered, and the
    /// first commit after its report writes them all and starts the next
    /// one. A small batch while no sync is in flight is fsynced inline
    /// (see `SYNC_INLINE_BELOW`).
    ///
    /// # Returns
    /// The ack point: the seq up to which writes may now be acknowledged.
    ///
    /// # Errors
    /// The write or fsync error that failed the log, once. Every write past
    /// the ack point is then undone in `store` and cut from the file, and
    /// the log takes no more writes; [`Wal::lost_from`] says from which seq
    /// writes were lost.
    pub fn commit(&mut self, store: &mut Store) -> Result<u64, WalError> {
        self.absorb_reports(false);
        if !self.failed && !self.pending.is_empty() && !self.syncing_always() {
            self.write_pending();
        }
        if !self.failed && self.policy == FsyncPolicy::Always && !self.syncs_deferred {
            self.sync_to_file_end(self.inline_below);
        }
        if self.failed {
            self.roll_back(store)?;
        }
        self.forget_acknowledged();
        Ok(self.ack_seq())
    }

    /// Whether an `--fsync always` sync is in flight. The turns' records
    /// then wait in `pending` until it is reported, and the next sync
    /// covers all of them, written with one `write`. Appended while the
    /// sync runs, they would add to its work (ext4's fdatasync flushes the
    /// whole file) without counting as durable. Measured with 16 requests
    /// in flight per client, waiting gave about 10 % more writes per fsync
    /// and a somewhat lower p99 than writing every turn.
    fn syncing_always(&self) -> bool {
        self.policy == FsyncPolicy::Always
            && !self.syncs_deferred
            && self.syncer.as_ref().is_some_and(Syncer::is_busy)
    }

    /// Whether a small batch with no sync in flight may be fsynced on the
    /// loop (the default; see `SYNC_INLINE_BELOW`). A leader whose client
    /// writes wait for follower acks turns it off: its loop has those acks
    /// to take in while the disk works, and an fsync on the loop held each
    /// of them back by up to one fsync (with `--sync-followers 1` at 50
    /// connections, every fsync on the thread made 7–25 % more writes per
    /// second in four interleaved runs).
    pub fn set_inline_syncs(&mut self, on: bool) {
        self.inline_below = if on { SYNC_INLINE_BELOW } else { 0 };
    }

    /// A follower whose leader waits for no acks defers its fsyncs: the
    /// records it receives are already durable on the leader, so nothing
    /// is answered on the strength of its own fsync, and fsyncing every
    /// batch at once only takes the disk from the leader on the same
    /// machine or array. The node then calls [`Wal::sync_soon`] on a
    /// timer. Meanwhile reads are answered from what is written, as under
    /// `everysec`, while [`Wal::leader_ack_seq`] stays at what is durable.
    ///
    /// Turning it off first makes everything written durable, waiting for
    /// the disk: a rare step (a promotion, a leader that waits for acks).
    ///
    /// # Errors
    /// [`WalError::Failed`] if the log failed, now or earlier.
    pub fn defer_syncs(&mut self, on: bool) -> Result<(), WalError> {
        if self.syncs_deferred && !on {
            self.absorb_reports(true);
            if !self.failed && self.durable_end != self.file_end {
                self.sync_inline();
            }
            if self.failed {
                // The next commit reports the error and rolls back.
                return Err(WalError::Failed);
            }
        }
        self.syncs_deferred = on && self.policy == FsyncPolicy::Always;
        Ok(())
    }

    /// Whether written records wait for a deferred fsync.
    pub fn sync_owed(&self) -> bool {
        self.syncs_deferred && self.durable_end != self.file_end
    }

    /// Writes `pending` to the file; on error fails the log.
    fn write_pending(&mut self) {
        match (&*self.file).write_all(&self.pending) {
            Ok(()) => {
                self.file_end += self.pending.len() as u64;
                self.file_seq = self.last_seq;
                self.shared_end.store(self.file_end, Ordering::Release);
                self.pending.clear();
                if self.pending.capacity() > 16 << 20 {
                    self.pending.shrink_to(1 << 20);
                }
            }
            Err(e) => {
                // A sync may still be in flight (everysec): let it decide
                // what became durable before the log fails.
                self.absorb_reports(true);
                self.fail(io_err(&self.path, "write")(e));
            }
        }
    }

    /// Makes everything written durable: a request to the sync thread, or
    /// an inline fsync when there is none, or when nothing is in flight
    /// and fewer than `inline_below` bytes are not yet durable.
    fn sync_to_file_end(&mut self, inline_below: u64) {
        let unsynced = self.file_end - self.durable_end;
        if unsynced == 0 {
            return;
        }
        let target = self.file_end_target();
        match &mut self.syncer {
            Some(syncer) if syncer.is_busy() || unsynced >= inline_below => {
                syncer.request(&self.file, target);
            }
            _ => self.sync_inline(),
        }
    }

    /// Everything written so far, as a sync target.
    fn file_end_target(&self) -> Target {
        Target {
            generation: self.generation,
            end: self.file_end,
            seq: self.file_seq,
        }
    }

    /// Fsyncs on the calling thread.
    fn sync_inline(&mut self) {
        let target = self.file_end_target();
        match (self.sync_data)(&self.file) {
            Ok(()) => self.durable(target),
            Err(e) => {
                self.inline_fsync_failures += 1;
                self.fail(io_err(&self.path, "fsync")(e));
            }
        }
    }

    /// Takes in what the sync thread reported; with `wait`, first waits
    /// for the sync in flight to finish.
    fn absorb_reports(&mut self, wait: bool) {
        let Some(syncer) = &mut self.syncer else {
            return;
        };
        let outcome = if wait { syncer.wait() } else { syncer.poll() };
        match outcome {
            None => {}
            Some(Outcome::Durable(target)) => self.durable(target),
            Some(Outcome::Failed(e)) => self.fail(io_err(&self.path, "fsync")(e)),
        }
    }

    /// Records that the file is durable through `target`. Ignored after a
    /// failure (a sync after a failed one proves nothing) and for a file
    /// the log has replaced since.
    fn durable(&mut self, target: Target) {
        if self.failed || target.generation != self.generation || target.end <= self.durable_end {
            return;
        }
        self.durable_end = target.end;
        self.durable_seq = target.seq;
    }

    /// Marks the log failed; the first error is kept for [`Wal::commit`]
    /// to report.
    fn fail(&mut self, error: WalError) {
        if !self.failed {
            self.failed = true;
            self.failure = Some(error);
        }
    }

    /// Fail-stop after an IO error, once: undo every write past the ack
    /// point, newest first, cut them from the file, and refuse all later
    /// writes. Returns the error that failed the log, the first time.
    fn roll_back(&mut self, store: &mut Store) -> Result<(), WalError> {
        if self.lost_from.is_some() {
            return Ok(());
        }
        // Nothing may be syncing while the file is cut.
        self.absorb_reports(true);
        let (ack_seq, ack_end) = (self.ack_seq(), self.ack_end());
        self.uncommitted.roll_back(store);
        self.pending.clear();
        self.last_seq = ack_seq;
        self.file_seq = ack_seq;
        self.lost_from = Some(ack_seq + 1);
        // Best effort: the file may hold writes past the ack point, or part
        // of a batch whose write failed.
        let _ = self.file.set_len(ack_end);
        self.file_end = ack_end;
        self.shared_end.store(ack_end, Ordering::Release);
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drops the undo records of writes that can no longer be lost.
    fn forget_acknowledged(&mut self) {
        self.uncommitted.forget_through(self.ack_seq());
    }

    /// Asks for an fsync of what was written but not yet synced, without
    /// waiting for it (`--fsync everysec`). It runs on the sync thread if
    /// there is one, else inline.
    pub fn sync_soon(&mut self) {
        if !self.failed {
            self.sync_to_file_end(0);
        }
    }

    /// Waits for the sync in flight, then writes and fsyncs whatever is
    /// still not durable: the last act of a graceful stop.
    ///
    /// # Errors
    /// The error that failed the log, if it failed now or earlier.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.absorb_reports(true);
        if !self.failed && !self.pending.is_empty() {
            self.write_pending();
        }
        if !self.failed && self.durable_end != self.file_end {
            self.sync_inline();
        }
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the sync in flight before the file is replaced, so that its
    /// report is not taken for the new file.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the log failed (now or earlier); the lost
    /// writes are undone at the next [`Wal::commit`].
    fn settle_before_replacing(&mut self) -> Result<(), WalError> {
        self.absorb_reports(true);
        if self.failed {
            return Err(WalError::Failed);
        }
        Ok(())
    }

    /// The ack point: the seq up to which writes may be acknowledged, shown
    /// to readers and sent to followers.
    pub fn ack_seq(&self) -> u64 {
        if self.syncs_on_commit() {
            self.durable_seq
        } else {
            self.file_seq
        }
    }

    /// The file offset of the ack point.
    fn ack_end(&self) -> u64 {
        if self.syncs_on_commit() {
            self.durable_end
        } else {
            self.file_end
        }
    }

    /// `--fsync always`, not deferred: nothing is acknowledged before its
    /// fsync.
    fn syncs_on_commit(&self) -> bool {
        self.policy == FsyncPolicy::Always && !self.syncs_deferred
    }

    /// The seq a follower acknowledges to its leader: what is on disk
    /// under `--fsync always`, deferred or not; what is written otherwise
    /// (the operator chose not to wait for the disk).
    pub fn leader_ack_seq(&self) -> u64 {
        match self.policy {
            FsyncPolicy::Always => self.durable_seq,
            FsyncPolicy::EverySec | FsyncPolicy::No => self.file_seq,
        }
    }

    /// After a disk error, once the writes it lost are undone: the first
    /// seq that was lost. Every write with this seq or a later one was not
    /// applied and must be answered `ERROR`, and so must a read that may
    /// have seen one.
    pub fn lost_from(&self) -> Option<u64> {
        self.lost_from
    }

    /// Seq of the last write appended.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Seq of the last write on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// The file header (first history, base seq, its epoch).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The histories this log holds; the last is the one new writes join.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// Begins a new history at `epoch` after the last write: a fork record,
    /// written and fsynced before this returns. A leader forks when it
    /// starts (so a tail it may have lost can never be mistaken for the
    /// writes it makes next) and when it is promoted (with a higher epoch).
    ///
    /// # Errors
    /// IO errors (the log then fails), a failed log, or an epoch below the
    /// current one.
    pub fn fork(&mut self, store: &mut Store, epoch: u64) -> Result<Segment, WalError> {
        let history = new_history_id();
        let mut candidate = self.lineage.clone();
        candidate
            .fork(history, epoch, self.last_seq)
            .map_err(|e| WalError::BadFork(ForkError::Lineage(e)))?;
        self.write_everything(store)?;
        let mut bytes = Vec::new();
        Record::encode_fork(&mut bytes, self.last_seq, &history, epoch);
        match (&*self.file).write_all(&bytes) {
            Ok(()) => {
                self.file_end += bytes.len() as u64;
                self.shared_end.store(self.file_end, Ordering::Release);
                self.sync_inline();
            }
            Err(e) => self.fail(io_err(&self.path, "write fork record")(e)),
        }
        if self.failed {
            self.roll_back(store)?;
            return Err(WalError::Failed);
        }
        self.lineage = candidate;
        Ok(self.lineage.current())
    }

    /// Commits, waits for the sync in flight, and writes and fsyncs what is
    /// still buffered, so the file holds every write, durably: the step
    /// before the log itself is changed (a fork, a rewind).
    fn write_everything(&mut self, store: &mut Store) -> Result<(), WalError> {
        self.commit(store)?;
        self.settle_before_replacing()?;
        if !self.pending.is_empty() {
            self.write_pending();
        }
        if !self.failed {
            self.sync_inline();
        }
        if self.failed {
            self.roll_back(store)?;
            return Err(WalError::Failed);
        }
        Ok(())
    }

    /// Cuts the log back to seq `to` and its first `keep_forks` fork
    /// records, dropping the writes after them (a follower's writes its new
    /// leader does not have), and rebuilds the store from what is left.
    ///
    /// # Returns
    /// The new store and the seqs of the dropped writes, if any.
    ///
    /// # Errors
    /// [`WalError::CannotRewind`] when `to` is inside the compacted part or
    /// what must go is not a tail; IO errors (the log then fails).
    pub fn rewind(
        &mut self,
        store: &mut Store,
        to: u64,
        keep_forks: usize,
    ) -> Result<(Store, Option<(u64, u64)>), WalError> {
        self.write_everything(store)?;
        let cannot = WalError::CannotRewind {
            to,
            base_seq: self.header.base_seq,
        };
        if to < self.header.base_seq {
            return Err(cannot);
        }
        let reader = File::open(&self.path).map_err(io_err(&self.path, "open"))?;
        let replayed = replay(&self.path, &reader, Some(Cut { to, keep_forks }))?;
        if replayed.uncut {
            return Err(cannot);
        }
        self.rewinds += 1;
        self.resets += 1;
        let cut = self
            .file
            .set_len(replayed.end)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = cut {
            self.failed = true;
            return Err(io_err(&self.path, "truncate")(e));
        }
        self.lineage = replayed.lineage;
        self.last_seq = replayed.last_seq;
        self.file_seq = replayed.last_seq;
        self.durable_seq = replayed.last_seq;
        self.file_end = replayed.end;
        self.durable_end = replayed.end;
        // The old data set is gone with its undo records.
        self.uncommitted.clear();
        self.shared_end.store(replayed.end, Ordering::Release);
        self.next_generation(None);
        Ok((replayed.store, replayed.dropped))
    }

    /// The torn tails cut at open (and whether the cut left the log
    /// suspect) and the fsyncs that failed.
    pub fn counters(&self) -> WalCounters {
        WalCounters {
            torn_tails_cut: self.torn_tails_cut,
            torn_tails_suspect: self.torn_tails_suspect,
            fsync_failures: self.inline_fsync_failures
                + self.syncer.as_ref().map_or(0, Syncer::failures),
        }
    }

    /// Whether the snapshot part of this log may have lost records to a
    /// torn tail (see the field). Such a log must not claim its base seq:
    /// a follower asks for a snapshot instead, and does not compact (which
    /// would make the loss look complete) until then.
    pub fn snapshot_suspect(&self) -> bool {
        self.snapshot_suspect
    }

    /// Bytes in the file.
    pub fn len_bytes(&self) -> u64 {
        self.file_end
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Whether an IO error has stopped the log taking writes.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Whether nothing is buffered or being synced.
    pub fn is_quiescent(&self) -> bool {
        self.pending.is_empty() && !self.syncer.as_ref().is_some_and(Syncer::is_busy)
    }

    /// End of the records at the ack point: what readers (followers,
    /// snapshots) may be sent. Under `--fsync always` that is only what is
    /// durable, so a follower never holds a write its leader could lose.
    pub fn committed_end(&self) -> u64 {
        self.ack_end()
    }

    /// Seq of the last record readers may be sent (see
    /// [`Wal::committed_end`]).
    pub fn committed_seq(&self) -> u64 {
        self.ack_seq()
    }

    /// Which file generation offsets refer to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How the previous generation's offsets map into this one.
    pub fn remap(&self) -> Option<Remap> {
        self.remap
    }

    /// A second handle on the current file, for a reader that must keep
    /// reading it even after it is replaced.
    ///
    /// # Errors
    /// If the descriptor cannot be duplicated.
    pub fn reader(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Puts `file` in place of the current log file, which was renamed
    /// over. The old handle is closed on a thread of its own: it may be the
    /// last one on the unlinked file, and freeing the blocks of a big file
    /// takes ext4 tens of milliseconds the loop must not wait.
    fn replace_file(&mut self, file: File) {
        let old = std::mem::replace(&mut self.file, Arc::new(file));
        close_off_loop(old);
    }

    /// Marks the file as replaced.
    pub(crate) fn next_generation(&mut self, remap: Option<Remap>) {
        self.generation += 1;
        self.remap = remap;
    }

    /// Replaces the whole log with a snapshot received from the leader: the
    /// complete, fsynced `temp` file is renamed over the log and the
    /// directory fsynced. Call between turns, with nothing appended since
    /// the last [`Wal::commit`]; a sync in flight is waited for first.
    ///
    /// # Errors
    /// IO errors. Before the rename the old log is untouched; after it, the
    /// log is marked failed if the new file cannot be opened.
    pub fn install_snapshot(
        &mut self,
        temp: tempfile::NamedTempFile,
        header: Header,
        lineage: Lineage,
        last_seq: u64,
    ) -> Result<(), WalError> {
        self.settle_before_replacing()?;
        temp.persist(&self.path)
            .map_err(|e| io_err(&self.path, "rename")(e.error))?;
        let reopened = compact::sync_dir(&self.path).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err(&self.path, "open"))
        });
        let file = match reopened {
            Ok(file) => file,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        let len = file.metadata().map_err(io_err(&self.path, "stat"))?.len();
        self.replace_file(file);
        self.resets += 1;
        self.header = header;
        self.lineage = lineage;
        self.snapshot_suspect = false;
        self.last_seq = last_seq;
        self.file_seq = last_seq;
        self.durable_seq = last_seq;
        self.file_end = len;
        self.durable_end = len;
        // The old data set is gone with its undo records.
        self.pending.clear();
        self.uncommitted.clear();
        self.shared_end.store(len, Ordering::Release);
        self.next_generation(None);
        Ok(())
    }
}

/// Closes a handle on a log file on a thread of its own: it may be the
/// last one on a file that was renamed over, and freeing the blocks of a
/// big file takes ext4 tens of milliseconds the loop must not wait.
pub(crate) fn close_off_loop<F: Send + 'static>(file: F) {
    let closing = std::thread::Builder::new()
        .name("log-close".into())
        .spawn(move || drop(file));
    if let Err(e) = closing {
        // The handle was dropped with the closure: closed inline.
        warn!("cannot start a thread to close an old log file: {e}");
    }
}

/// Why a record read from a log file cannot follow the records before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderError {
    /// A put or delete whose seq is not one more than the `last` one's.
    SeqGap { seq: u64, last: u64 },
    /// A fork record whose seq is not the last write's.
    MisplacedFork { seq: u64, last: u64 },
    /// A fork record that does not fit the log's lineage.
    Lineage(LineageError),
    /// A record with the fork op that is not a well-formed fork.
    MalformedFork,
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::SeqGap { seq, last } => write!(f, "seq {seq} follows seq {last}"),
            OrderError::MisplacedFork { seq, last } => {
                write!(f, "a fork at seq {seq} after seq {last}")
            }
            OrderError::Lineage(e) => write!(f, "{e}"),
            OrderError::MalformedFork => write!(f, "a malformed fork record"),
        }
    }
}

impl std::error::Error for OrderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OrderError::Lineage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LineageError> for OrderError {
    fn from(e: LineageError) -> OrderError {
        OrderError::Lineage(e)
    }
}

/// The order rule of a log file: records with seq up to the header's base
/// seq form the snapshot part (one per live key, any order); after them,
/// every record's seq is one more than the previous one.
#[derive(Debug, Clone, Copy)]
pub struct SeqCheck {
    base: u64,
    last: u64,
}

impl SeqCheck {
    /// The rule for a file whose header says `base_seq`.
    pub fn new(base_seq: u64) -> SeqCheck {
        SeqCheck {
            base: base_seq,
            last: base_seq,
        }
    }

    /// Checks the next record's seq.
    ///
    /// # Errors
    /// [`OrderError::SeqGap`]: the break in the order.
    pub fn accept(&mut self, seq: u64) -> Result<(), OrderError> {
        let in_snapshot_part = seq <= self.base && self.in_snapshot_part();
        if in_snapshot_part {
            Ok(())
        } else if seq == self.last + 1 {
            self.last = seq;
            Ok(())
        } else {
            Err(OrderError::SeqGap {
                seq,
                last: self.last,
            })
        }
    }

    /// Checks a fork record's seq: it begins a history after the last
    /// write, so it repeats that write's seq.
    ///
    /// # Errors
    /// [`OrderError::MisplacedFork`]: the break in the order.
    pub fn accept_fork(&mut self, seq: u64) -> Result<(), OrderError> {
        let in_snapshot_part = seq <= self.base && self.in_snapshot_part();
        if in_snapshot_part || seq == self.last {
            Ok(())
        } else {
            Err(OrderError::MisplacedFork {
                seq,
                last: self.last,
            })
        }
    }

    /// The seq the records so far bring the data to.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether no record past the base seq has come yet, so the next one
    /// may still belong to the snapshot part (any seq up to the base).
    pub fn in_snapshot_part(&self) -> bool {
        self.last == self.base
    }
}

/// Applies one record read from a log file (at open, or from a snapshot)
/// to the store and lineage it describes.
///
/// # Errors
/// A record out of order, or a fork that does not fit the lineage.
pub fn apply_logged(
    rec: &Record<'_>,
    seqs: &mut SeqCheck,
    store: &mut Store,
    lineage: &mut Lineage,
) -> Result<(), OrderError> {
    match accept_logged(rec, seqs, lineage)? {
        Some(Op::Put) => store.set(rec.key, rec.value),
        Some(Op::Delete) => drop(store.remove(rec.key)),
        Some(Op::Fork) | None => {}
    }
    Ok(())
}

/// Checks the seq of one record read from a log file and applies it to
/// the lineage if it is a fork. Returns what is left to apply to the
/// data: a put or a delete.
///
/// # Errors
/// A record out of order, or a fork that does not fit the lineage.
pub fn accept_logged(
    rec: &Record<'_>,
    seqs: &mut SeqCheck,
    lineage: &mut Lineage,
) -> Result<Option<Op>, OrderError> {
    if let Some((history, epoch)) = rec.as_fork() {
        seqs.accept_fork(rec.seq)?;
        lineage.fork(history, epoch, rec.seq)?;
        return Ok(None);
    }
    seqs.accept(rec.seq)?;
    match rec.op {
        Op::Fork => Err(OrderError::MalformedFork),
        op => Ok(Some(op)),
    }
}

/// Fresh random history id.
pub fn new_history_id() -> HistoryId {
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        // No OS randomness: fall back to the clock and pid, still unique in
        // practice for telling histories apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        id.copy_from_slice(&(nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
    }
    id
}

/// Creates a log holding only a header, atomically: temp file, fsync,
/// rename, directory fsync.
fn create_log(path: &Path, header: &Header) -> Result<(), WalError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    header.encode(&mut bytes);
    let mut temp = compact::temp_file_for(path)?;
    temp.write_all(&bytes).map_err(io_err(path, "write"))?;
    temp.as_file().sync_all().map_err(io_err(path, "fsync"))?;
    temp.persist(path)
        .map_err(|e| io_err(path, "rename")(e.error))?;
    compact::sync_dir(path)
}

/// The result of reading a log from start to end.
struct Replayed {
    header: Header,
    lineage: Lineage,
    store: Store,
    last_seq: u64,
    /// End of the last whole record (or where a [`Cut`] falls).
    end: u64,
    file_len: u64,
    /// First and last seq of the writes a cut dropped.
    dropped: Option<(u64, u64)>,
    /// A cut found records to keep after records to drop.
    uncut: bool,
}

/// Where a rewind cuts: after seq `to` and `keep_forks` fork records.
#[derive(Debug, Clone, Copy)]
struct Cut {
    to: u64,
    keep_forks: usize,
}

/// Read size for replay.
const REPLAY_CHUNK: usize = 4 << 20;

/// Replays the log into a store. Stops at the first record it cannot
/// take (damaged, or running past the end of the file) and asks
/// [`tail::judge`] what the rest is: a torn tail, which `end` then marks
/// for cutting, or damage, which is an error naming the offset. A record
/// out of sequence is always an error.
fn replay<R: ReadAt + ?Sized>(
    path: &Path,
    src: &R,
    cut: Option<Cut>,
) -> Result<Replayed, WalError> {
    let file_len = src.size().map_err(io_err(path, "stat"))?;
    let mut head = [0u8; HEADER_LEN];
    tail::read_exact_at(src, &mut head, 0).map_err(|_| WalError::BadHeader {
        path: path.to_path_buf(),
        reason: record::HeaderError::Short,
    })?;
    let header = Header::decode(&head).map_err(|reason| WalError::BadHeader {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut store = Store::new();
    let mut lineage = Lineage::new(header.history, header.epoch);
    let mut offset = HEADER_LEN as u64;
    // The file offset of the end of `buf`.
    let mut read_to = offset;
    let mut seqs = SeqCheck::new(header.base_seq);
    let mut cut_at: Option<u64> = None;
    let mut dropped: Option<(u64, u64)> = None;
    let mut uncut = false;
    let mut buf: Vec<u8> = Vec::with_capacity(REPLAY_CHUNK);
    let mut start = 0usize;
    let mut eof = false;
    loop {
        let outcome = Record::decode(&buf[start..]);
        let stop = match outcome {
            Ok(Decoded::Record(rec, used)) => {
                let keep = cut.is_none_or(|c| match rec.op {
                    Op::Fork => lineage.forks() < c.keep_forks,
                    Op::Put | Op::Delete => rec.seq <= c.to,
                });
                if !keep {
                    cut_at.get_or_insert(offset);
                    if rec.op != Op::Fork {
                        let first = dropped.map_or(rec.seq, |d| d.0);
                        dropped = Some((first, rec.seq));
                    }
                } else if cut_at.is_some() {
                    uncut = true;
                } else {
                    apply_logged(&rec, &mut seqs, &mut store, &mut lineage).map_err(|reason| {
                        WalError::Corrupt {
                            path: path.to_path_buf(),
                            offset,
                            reason: reason.to_string(),
                            next: None,
                        }
                    })?;
                }
                start += used;
                offset += used as u64;
                continue;
            }
            Ok(Decoded::Incomplete { needed }) if eof => {
                if offset == file_len {
                    break;
                }
                if needed > RECORD_PREFIX_LEN {
                    format!("a record of {needed} bytes runs past the end of the file ({file_len} bytes)")
                } else {
                    format!("the file ends inside a record prefix ({file_len} bytes)")
                }
            }
            Ok(Decoded::Incomplete { needed }) => {
                buf.drain(..start);
                start = 0;
                // Never more than the file holds, whatever a damaged
                // length asks for.
                let have = buf.len();
                let left = usize::try_from(file_len.saturating_sub(read_to)).unwrap_or(usize::MAX);
                let want = needed.max(REPLAY_CHUNK).saturating_sub(have).min(left);
                if want == 0 {
                    eof = true;
                    continue;
                }
                buf.resize(have + want, 0);
                let mut filled = have;
                while filled < buf.len() {
                    match src.read_at(&mut buf[filled..], read_to) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            filled += n;
                            read_to += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_err(path, "read")(e)),
                    }
                }
                buf.truncate(filled);
                continue;
            }
            Err(reason) => reason.to_string(),
        };
        let window = tail::SeqWindow::after(&seqs, file_len - offset);
        match tail::judge(src, offset, file_len, window).map_err(io_err(path, "read"))? {
            Tail::Torn => break,
            Tail::Damaged { next } => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    reason: stop,
                    next: Some(next),
                })
            }
        }
    }
    Ok(Replayed {
        header,
        lineage,
        store,
        last_seq: seqs.last(),
        end: cut_at.unwrap_or(offset),
        file_len,
        dropped,
        uncut,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::Gate;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Steers a sync thread whose fsyncs wait at `gate` and fail while
    /// `fail` is set.
    pub(crate) struct SyncControl {
        /// Closed: fsyncs wait (stay in flight).
        pub gate: Gate,
        /// Set: fsyncs fail.
        pub fail: Arc<AtomicBool>,
        reports: mpsc::Receiver<()>,
    }

    impl SyncControl {
        /// Waits for the sync thread's next report.
        pub fn next_report(&self) {
            self.reports
                .recv_timeout(Duration::from_secs(10))
                .expect("a sync report within 10 s");
        }
    }

    impl Wal {
        /// Starts a sync thread the test steers.
        pub(crate) fn start_controlled_sync(&mut self) -> SyncControl {
            let (gate, fail) = (Gate::default(), Arc::new(AtomicBool::new(false)));
            let (report_tx, reports) = mpsc::channel();
            let (door, failing) = (gate.clone(), Arc::clone(&fail));
            let sync: syncer::SyncFn = Box::new(move |file: &File| {
                door.pass();
                if failing.load(Ordering::SeqCst) {
                    return Err(io::Error::other("injected fsync error"));
                }
                file.sync_data()
            });
            let notify = Box::new(move || {
                let _ = report_tx.send(());
            });
            self.start_syncer(Syncer::spawn_with(notify, sync))
                .expect("start the sync thread");
            self.inline_below = 0;
            SyncControl {
                gate,
                fail,
                reports,
            }
        }
    }

    pub(crate) fn open(dir: &Path) -> Opened {
        Wal::open(&dir.join("leader.log"), FsyncPolicy::Always).expect("open")
    }

    pub(crate) fn put(o: &mut Opened, key: &str, value: &str) -> u64 {
        o.wal
            .append(&mut o.store, Op::Put, key.as_bytes(), value.as_bytes())
            .expect("append")
    }

    /// A log whose fsyncs go to a sync thread the test steers.
    pub(crate) fn open_controlled(dir: &Path) -> (Opened, SyncControl) {
        let mut o = open(dir);
        let control = o.wal.start_controlled_sync();
        (o, control)
    }

    /// Closes the log and opens it again, checking that replay gives the
    /// same data.
    pub(crate) fn reopen(o: Opened, dir: &Path) -> Opened {
        let digest = o.store.digest();
        drop(o);
        let o = open(dir);
        assert_eq!(o.store.digest(), digest, "replay gave other data");
        o
    }

    /// Commits, then waits until the sync thread made it all durable.
    pub(crate) fn commit_durably(o: &mut Opened, control: &SyncControl) {
        o.wal.commit(&mut o.store).expect("commit");
        while o.wal.durable_seq() < o.wal.last_seq() {
            control.next_report();
            o.wal.commit(&mut o.store).expect("commit");
        }
    }

    #[test]
    fn commit_hands_the_fsync_to_the_sync_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        control.gate.close();
        put(&mut o, "a", "1");
        put(&mut o, "b", "2");
        // Written, not yet durable: nothing may be acknowledged or shipped.
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 0);
        assert_eq!(o.wal.durable_seq(), 0);
        assert_eq!(o.wal.committed_seq(), 0);
        assert_eq!(o.wal.committed_end(), HEADER_LEN as u64);
        let written = o.wal.len_bytes();
        assert!(written > HEADER_LEN as u64);
        assert!(!o.wal.is_quiescent());
        // The next turn's records wait in the buffer while the sync runs ...
        put(&mut o, "c", "3");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 0);
        assert_eq!(o.wal.len_bytes(), written);
        // ... and go to the file, with the next sync, once it is reported.
        control.gate.open();
        control.next_report();
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 2);
        assert!(o.wal.len_bytes() > written);
        commit_durably(&mut o, &control);
        assert_eq!(o.wal.durable_seq(), 3);
        assert_eq!(o.wal.committed_seq(), 3);
        assert_eq!(o.wal.committed_end(), o.wal.len_bytes());
        assert!(o.wal.is_quiescent());
        drop(o);
        let o = open(dir.path());
        assert_eq!(o.wal.last_seq(), 3);
        assert_eq!(o.store.get(b"c"), Some(&b"3"[..]));
    }

    #[test]
    fn small_batches_sync_inline_unless_a_sync_is_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        o.wal.inline_below = SYNC_INLINE_BELOW;
        control.gate.close();
        // A small batch with the thread idle: durable when commit returns.
        put(&mut o, "small", "1");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        // A large one goes to the (held) thread ...
        let value = "v".repeat(1000);
        for i in 0..20 {
            put(&mut o, &format!("big{i}"), &value);
        }
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        // ... and so does a small one while that sync is in flight.
        put(&mut o, "small", "2");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        control.gate.open();
        commit_durably(&mut o, &control);
        assert_eq!(o.wal.durable_seq(), 22);
        // With inline syncs off (a leader awaiting acks), even a small
        // batch on an idle thread goes to it.
        o.wal.set_inline_syncs(false);
        control.gate.close();
        put(&mut o, "small", "3");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 22);
        control.gate.open();
        commit_durably(&mut o, &control);
        assert_eq!(o.wal.durable_seq(), 23);
        o.wal.set_inline_syncs(true);
        put(&mut o, "small", "4");
        assert_eq!(
            o.wal.commit(&mut o.store).expect("commit"),
            24,
            "inline again"
        );
    }

    #[test]
    fn a_failed_fsync_undoes_every_write_not_yet_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        put(&mut o, "a", "1");
        put(&mut o, "gone", "soon");
        commit_durably(&mut o, &control);
        let durable_len = o.wal.len_bytes();

        // Two turns written while their fsyncs wait, then fail.
        control.gate.close();
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "a", "2");
        put(&mut o, "b", "1");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 2);
        assert!(o.wal.append(&mut o.store, Op::Delete, b"gone", b"").is_ok());
        put(&mut o, "c", "1");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 2);
        assert_eq!(o.wal.last_seq(), 6);
        control.gate.open();
        control.next_report();
        let error = o.wal.commit(&mut o.store).expect_err("the fsync failed");
        assert!(error.to_string().contains("injected"), "{error}");

        // Both turns are undone, in the store and in the file.
        assert_eq!(o.wal.lost_from(), Some(3));
        assert!(o.wal.has_failed());
        assert_eq!(o.wal.last_seq(), 2);
        assert_eq!(o.wal.len_bytes(), durable_len);
        assert_eq!(o.store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(o.store.get(b"gone"), Some(&b"soon"[..]));
        assert_eq!(o.store.get(b"b"), None);
        assert_eq!(o.store.get(b"c"), None);
        assert_eq!(o.store.len(), 2);
        // Fail-stop: no more writes, and the error is reported once.
        assert!(matches!(
            o.wal.append(&mut o.store, Op::Put, b"d", b"1"),
            Err(WalError::Failed)
        ));
        assert_eq!(o.wal.commit(&mut o.store).expect("already reported"), 2);
        let o = reopen(o, dir.path());
        assert_eq!(o.wal.last_seq(), 2);
    }

    #[test]
    fn failed_fsyncs_on_the_sync_thread_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        put(&mut o, "a", "1");
        commit_durably(&mut o, &control);
        assert_eq!(o.wal.counters().fsync_failures, 0, "a sync that worked");
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "b", "2");
        o.wal.commit(&mut o.store).expect("commit");
        control.next_report();
        assert!(o.wal.commit(&mut o.store).is_err(), "the fsync failed");
        assert_eq!(o.wal.counters().fsync_failures, 1);
        // The failed log asks for no more syncs.
        o.wal.sync_soon();
        assert!(o.wal.commit(&mut o.store).is_ok());
        assert_eq!(o.wal.counters().fsync_failures, 1);
    }

    #[test]
    fn failed_inline_fsyncs_are_counted_under_always_and_everysec() {
        for policy in [FsyncPolicy::Always, FsyncPolicy::EverySec] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut o = Wal::open(&dir.path().join("leader.log"), policy).expect("open");
            put(&mut o, "a", "1");
            o.wal.commit(&mut o.store).expect("commit");
            o.wal.sync_soon();
            assert_eq!(o.wal.durable_seq(), 1, "{policy:?}");
            assert_eq!(o.wal.counters().fsync_failures, 0, "{policy:?}");
            o.wal.sync_data = |_| Err(io::Error::other("injected inline fsync error"));
            put(&mut o, "b", "2");
            // Under always the commit fsyncs; under everysec the timer's
            // sync_soon does.
            let _ = o.wal.commit(&mut o.store);
            o.wal.sync_soon();
            assert!(o.wal.has_failed(), "{policy:?}");
            assert_eq!(
                o.wal.counters(),
                WalCounters {
                    torn_tails_cut: 0,
                    torn_tails_suspect: 0,
                    fsync_failures: 1
                },
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_sync_that_succeeds_after_a_failed_one_proves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "a", "1");
        o.wal.commit(&mut o.store).expect("commit");
        control.next_report();
        control.fail.store(false, Ordering::SeqCst);
        assert!(o.wal.commit(&mut o.store).is_err());
        assert_eq!(o.wal.durable_seq(), 0);
        assert_eq!(o.wal.lost_from(), Some(1));
        assert_eq!(o.store.get(b"a"), None);
    }

    #[test]
    fn a_graceful_stop_waits_for_the_sync_in_flight_and_writes_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = open_controlled(dir.path());
        control.gate.close();
        put(&mut o, "a", "1");
        o.wal.commit(&mut o.store).expect("commit");
        // Buffered behind the sync in flight.
        put(&mut o, "b", "2");
        o.wal.commit(&mut o.store).expect("commit");
        let opener = control.gate.open_after(Duration::from_millis(20));
        o.wal.sync().expect("sync");
        assert_eq!(o.wal.durable_seq(), 2);
        assert!(o.wal.is_quiescent());
        opener.join().expect("opener");
        let o = reopen(o, dir.path());
        assert_eq!(o.wal.last_seq(), 2);
    }

    #[test]
    fn everysec_acknowledges_on_write_and_syncs_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Wal::open(&dir.path().join("leader.log"), FsyncPolicy::EverySec).expect("open");
        let control = o.wal.start_controlled_sync();
        put(&mut o, "a", "1");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        assert_eq!(o.wal.durable_seq(), 0);
        o.wal.sync_soon();
        control.next_report();
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        assert_eq!(o.wal.durable_seq(), 1);
        // A failed background fsync stops writes but undoes nothing that
        // was acknowledged.
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "b", "2");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 2);
        o.wal.sync_soon();
        control.next_report();
        assert!(o.wal.commit(&mut o.store).is_err());
        assert_eq!(o.store.get(b"b"), Some(&b"2"[..]));
        assert_eq!(o.wal.lost_from(), Some(3));
        assert!(o.wal.has_failed());
    }

    #[test]
    fn deferred_syncs_wait_for_sync_soon_and_acks_to_the_leader_wait_for_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        let control = o.wal.start_controlled_sync();
        o.wal.defer_syncs(true).expect("defer");
        put(&mut o, "a", "1");
        // Readers may see it at once; the leader hears of it once on disk.
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1);
        assert!(o.wal.sync_owed());
        assert_eq!(o.wal.leader_ack_seq(), 0);
        o.wal.sync_soon();
        control.next_report();
        o.wal.commit(&mut o.store).expect("commit");
        assert_eq!(o.wal.leader_ack_seq(), 1);
        assert!(!o.wal.sync_owed());
        // Turning it off syncs what is owed before anything else.
        put(&mut o, "b", "2");
        o.wal.commit(&mut o.store).expect("commit");
        assert!(o.wal.sync_owed());
        o.wal.defer_syncs(false).expect("undefer");
        assert_eq!(o.wal.durable_seq(), 2);
        put(&mut o, "c", "3");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 2);
        assert!(!o.wal.sync_owed());
    }

    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history;
        {
            let mut o = open(dir.path());
            history = o.wal.header().history;
            assert_eq!(put(&mut o, "a", "1"), 1);
            assert_eq!(put(&mut o, "b", "2"), 2);
            assert!(o.wal.append(&mut o.store, Op::Delete, b"a", b"").is_ok());
            assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 3);
        }
        let o = open(dir.path());
        assert_eq!(o.wal.header().history, history);
        assert_eq!(o.wal.last_seq(), 3);
        assert_eq!(o.store.get(b"a"), None);
        assert_eq!(o.store.get(b"b"), Some(&b"2"[..]));
        assert_eq!(o.truncated, None);
    }

    #[test]
    fn uncommitted_writes_are_not_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut o = open(dir.path());
            put(&mut o, "a", "1");
            o.wal.commit(&mut o.store).expect("commit");
            put(&mut o, "b", "2");
        }
        let o = open(dir.path());
        assert_eq!(o.wal.last_seq(), 1);
        assert_eq!(o.store.get(b"b"), None);
    }

    #[test]
    fn torn_tail_is_cut_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        {
            let mut o = open(dir.path());
            put(&mut o, "a", "1");
            put(&mut o, "b", "2");
            o.wal.commit(&mut o.store).expect("commit");
        }
        let full = std::fs::metadata(&path).expect("stat").len();
        for cut in 1..21 {
            let f = OpenOptions::new().write(true).open(&path).expect("open");
            f.set_len(full - cut).expect("truncate");
            drop(f);
            let o = open(dir.path());
            assert_eq!(o.wal.last_seq(), 1, "cut {cut}");
            assert!(o.truncated.is_some());
            drop(o);
            // Restore the second record for the next round.
            let mut o = open(dir.path());
            put(&mut o, "b", "2");
            o.wal.commit(&mut o.store).expect("commit");
        }
    }

    #[test]
    fn a_torn_tail_that_may_reach_the_snapshot_part_is_suspect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        // Base seq 2: records 1 and 2 are the snapshot part.
        let write = |seqs: &[u64], cut: u64| {
            let mut bytes = Vec::new();
            Header {
                history: [9; 16],
                base_seq: 2,
                epoch: 1,
            }
            .encode(&mut bytes);
            for &seq in seqs {
                let key = format!("k{seq}");
                Record {
                    seq,
                    op: Op::Put,
                    key: key.as_bytes(),
                    value: b"v",
                }
                .encode(&mut bytes);
            }
            bytes.truncate(bytes.len() - cut as usize);
            std::fs::write(&path, bytes).expect("write");
            open(dir.path())
        };
        let whole = write(&[1, 2], 0);
        assert!(!whole.wal.snapshot_suspect());
        drop(whole);
        let torn_after_base = write(&[1, 2, 3, 4], 3);
        assert_eq!(torn_after_base.wal.last_seq(), 3);
        assert!(!torn_after_base.wal.snapshot_suspect());
        assert_eq!(torn_after_base.wal.counters().torn_tails_cut, 1);
        assert_eq!(torn_after_base.wal.counters().torn_tails_suspect, 0);
        drop(torn_after_base);
        let torn_snapshot = write(&[1, 2], 3);
        assert_eq!(torn_snapshot.wal.last_seq(), 2);
        assert_eq!(torn_snapshot.store.len(), 1);
        assert!(torn_snapshot.wal.snapshot_suspect());
        assert_eq!(
            torn_snapshot.wal.counters(),
            WalCounters {
                torn_tails_cut: 1,
                torn_tails_suspect: 1,
                fsync_failures: 0
            }
        );
    }

    #[test]
    fn a_torn_tail_cut_at_open_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        let mut o = open(dir.path());
        assert_eq!(o.wal.counters(), WalCounters::default(), "a new log");
        put(&mut o, "a", "1");
        put(&mut o, "b", "2");
        o.wal.commit(&mut o.store).expect("commit");
        let o = reopen(o, dir.path());
        assert_eq!(o.wal.counters().torn_tails_cut, 0, "a clean reopen");
        drop(o);
        let full = std::fs::metadata(&path).expect("stat").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 3).expect("truncate");
        drop(f);
        let o = open(dir.path());
        assert_eq!(o.wal.last_seq(), 1);
        assert_eq!(o.wal.counters().torn_tails_cut, 1, "the cut");
        drop(o);
        let o = open(dir.path());
        assert_eq!(o.wal.counters().torn_tails_cut, 0, "cut once, clean since");
    }

    #[test]
    fn garbage_tail_is_cut_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        {
            let mut o = open(dir.path());
            put(&mut o, "a", "1");
            o.wal.commit(&mut o.store).expect("commit");
        }
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0u8; 100]).expect("zeros");
        f.write_all(b"\xff\xfe garbage").expect("garbage");
        drop(f);
        let o = open(dir.path());
        assert_eq!(o.wal.last_seq(), 1);
        assert_eq!(o.truncated, Some(110));
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        {
            let mut o = open(dir.path());
            for i in 0..10 {
                put(&mut o, &format!("k{i}"), "value");
            }
            o.wal.commit(&mut o.store).expect("commit");
        }
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER_LEN + 30] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        match Wal::open(&path, FsyncPolicy::Always) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, HEADER_LEN as u64 + 26),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a damaged log opened"),
        }
    }

    #[test]
    fn forks_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        let lineage;
        {
            let mut o = open(dir.path());
            put(&mut o, "a", "1");
            let first = o.wal.fork(&mut o.store, 1).expect("fork");
            assert_eq!(first.start, 1);
            put(&mut o, "a", "2");
            put(&mut o, "b", "3");
            o.wal.fork(&mut o.store, 4).expect("fork");
            assert!(o.wal.fork(&mut o.store, 3).is_err(), "epochs never go back");
            put(&mut o, "c", "5");
            o.wal.commit(&mut o.store).expect("commit");
            assert_eq!(o.wal.lineage().forks(), 2);
            lineage = o.wal.lineage().clone();
            let compaction = o.wal.start_compaction(Box::new(|| {})).expect("start");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let done = loop {
                if let Some(done) = compaction.poll() {
                    break done.expect("compaction");
                }
                assert!(std::time::Instant::now() < deadline, "compaction hangs");
                std::thread::sleep(std::time::Duration::from_millis(2));
            };
            o.wal.finish_compaction(done).expect("finish");
            assert_eq!(o.wal.lineage(), &lineage);
        }
        let o = Wal::open(&path, FsyncPolicy::Always).expect("reopen");
        assert_eq!(o.wal.lineage(), &lineage);
        assert_eq!(o.wal.last_seq(), 4);
        assert_eq!(o.store.get(b"a"), Some(&b"2"[..]));
    }

    #[test]
    fn rewind_drops_exactly_the_tail_after_the_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        put(&mut o, "a", "1");
        put(&mut o, "b", "2");
        o.wal.fork(&mut o.store, 1).expect("fork");
        put(&mut o, "a", "changed");
        put(&mut o, "c", "3");
        o.wal.commit(&mut o.store).expect("commit");
        let (store, dropped) = o.wal.rewind(&mut o.store, 2, 0).expect("rewind");
        assert_eq!(dropped, Some((3, 4)));
        assert_eq!(o.wal.last_seq(), 2);
        assert_eq!(o.wal.lineage().forks(), 0);
        assert_eq!(store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(store.get(b"c"), None);
        o.store = store;
        assert_eq!(put(&mut o, "d", "4"), 3);
        o.wal.commit(&mut o.store).expect("commit");
        drop(o);
        let o = open(dir.path());
        assert_eq!(o.wal.last_seq(), 3);
        assert_eq!(o.store.get(b"a"), Some(&b"1"[..]));
        assert_eq!(o.store.get(b"d"), Some(&b"4"[..]));
    }

    #[test]
    fn rewind_into_the_compacted_part_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        let mut bytes = Vec::new();
        Header {
            history: [1; 16],
            base_seq: 5,
            epoch: 1,
        }
        .encode(&mut bytes);
        for seq in [2, 5] {
            Record {
                seq,
                op: Op::Put,
                key: format!("k{seq}").as_bytes(),
                value: b"v",
            }
            .encode(&mut bytes);
        }
        std::fs::write(&path, &bytes).expect("write");
        let mut o = open(dir.path());
        assert!(matches!(
            o.wal.rewind(&mut o.store, 3, 0),
            Err(WalError::CannotRewind { to: 3, base_seq: 5 })
        ));
        assert_eq!(o.wal.last_seq(), 5, "nothing changed");
    }

    #[test]
    fn a_second_process_cannot_open_the_same_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = open(dir.path());
        assert!(matches!(
            Wal::open(&dir.path().join("leader.log"), FsyncPolicy::Always),
            Err(WalError::Locked { .. })
        ));
    }

    #[test]
    fn the_order_rule_names_the_break() {
        let mut seqs = SeqCheck::new(0);
        seqs.accept(1).expect("first");
        assert_eq!(seqs.accept(3), Err(OrderError::SeqGap { seq: 3, last: 1 }));
        assert_eq!(
            seqs.accept_fork(0),
            Err(OrderError::MisplacedFork { seq: 0, last: 1 })
        );
        let mut lineage = Lineage::new([1; 16], 2);
        let mut fork = Vec::new();
        Record::encode_fork(&mut fork, 1, &[2; 16], 1);
        let Ok(Decoded::Record(rec, _)) = Record::decode(&fork) else {
            panic!("a fork record")
        };
        let refused = accept_logged(&rec, &mut seqs, &mut lineage).expect_err("epoch went back");
        assert_eq!(
            refused,
            OrderError::Lineage(LineageError::EpochBack {
                epoch: 1,
                current: 2
            })
        );
        // The texts replay puts in its errors, as before.
        assert_eq!(
            refused.to_string(),
            "a fork to epoch 1 below the current epoch 2"
        );
        assert_eq!(
            OrderError::SeqGap { seq: 3, last: 1 }.to_string(),
            "seq 3 follows seq 1"
        );
        assert_eq!(
            OrderError::MisplacedFork { seq: 0, last: 1 }.to_string(),
            "a fork at seq 0 after seq 1"
        );
        assert_eq!(
            OrderError::MalformedFork.to_string(),
            "a malformed fork record"
        );
    }
}
