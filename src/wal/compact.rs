//! Compaction: rewriting the log to just the live data, off the event loop.
//!
//! The loop calls [`Wal::start_compaction`] between turns. A background
//! thread reads the log up to that point (offset `X`, seq `S`) through its
//! own handle, indexes the last write of every live key, and writes those
//! records, unchanged, behind a new header with base seq `S` into a temp
//! file in the same directory. A key last written by a batch record gets a
//! PUT record of its own, with the batch's seq: the snapshot part holds the
//! live data, not the writes (so several of its records may share a seq). It then copies the records the loop appended
//! meanwhile, until less than [`HANDOFF_BYTES`] remain, fsyncs, and reports
//! through a channel and the `notify` callback (the loop's waker). It
//! fsyncs the temp file every `SYNC_EVERY` bytes as it goes, so that its
//! writes never queue up as one large flush in front of the log's own
//! fsyncs.
//!
//! [`Wal::finish_compaction`] runs on the loop: it waits for the sync in
//! flight on the old file (see [`super::syncer`]), copies the last few
//! records, fsyncs, renames the temp file over the log and fsyncs the
//! directory before any later write is acknowledged. Everything written is
//! then durable in the new file, and later syncs go to the new file. A
//! crash at any moment leaves either the old log or the complete new one,
//! and a stale temp file that the next start removes.
//!
//! The thread may copy records that are written but not yet durable; that
//! is safe because the new file is fsynced as a whole before it is used,
//! and a compaction is dropped if the log fails before then.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use log::{info, warn};
use tempfile::NamedTempFile;

use super::record::{
    BatchEntries, Decoded, Header, Op, Record, BODY_FIXED_LEN, ENTRY_FIXED_LEN, HEADER_LEN,
    RECORD_PREFIX_LEN,
};
use super::{io_err, Wal, WalError};
use crate::store::Store;

/// The background thread hands over once fewer than this many bytes of
/// new records remain to be copied; the loop copies those itself.
const HANDOFF_BYTES: u64 = 256 << 10;

/// Size of the reads the compaction thread makes.
const READ_CHUNK: usize = 1 << 20;

/// The compaction thread fsyncs its temp file after every this many bytes.
/// One flush of a whole compacted log (tens of MB) at the end held up the
/// log's own fdatasync, and so every write's reply, for 50–70 ms here;
/// flushes of a few MiB interleave with the log's fsyncs instead.
const SYNC_EVERY: u64 = 4 << 20;

/// A compaction in progress on its thread.
pub struct Compaction {
    done: mpsc::Receiver<Result<Compacted, WalError>>,
}

/// The thread's result: a temp file holding the compacted log plus the
/// records appended through `copied_to` (an offset in the old log).
pub struct Compacted {
    temp: NamedTempFile,
    /// Where the thread started: old-log offset `X`.
    from: u64,
    copied_to: u64,
    new_len: u64,
    header: Header,
    live_keys: usize,
    /// The log generation it compacted; stale if the log was replaced since.
    generation: u64,
}

impl Compaction {
    /// The thread's result, once it has one.
    pub fn poll(&self) -> Option<Result<Compacted, WalError>> {
        match self.done.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(WalError::Io {
                path: PathBuf::new(),
                op: "compaction",
                source: io::Error::other("compaction thread died"),
            })),
        }
    }
}

impl Wal {
    /// Whether the log has grown past `min_bytes` and `ratio` times the size
    /// a compacted log of `store` would have.
    pub fn needs_compaction(&self, store: &Store, min_bytes: u64, ratio: f64) -> bool {
        let compacted = HEADER_LEN as u64 + store.live_bytes() + 19 * store.len() as u64;
        self.file_end >= min_bytes && self.file_end as f64 >= ratio * compacted as f64
    }

    /// Starts compacting everything written so far on a background thread;
    /// `notify` is called once its result is ready for [`Compaction::poll`].
    ///
    /// # Errors
    /// If the log file cannot be shared with the thread.
    pub fn start_compaction(&self, notify: Box<dyn Fn() + Send>) -> Result<Compaction, WalError> {
        let file = self.file.try_clone().map_err(io_err(&self.path, "dup"))?;
        let job = Job {
            path: self.path.clone(),
            file,
            header: Header {
                base_seq: self.file_seq,
                ..self.header
            },
            upto: self.file_end,
            shared_end: Arc::clone(&self.shared_end),
            generation: self.generation,
        };
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("compaction".into())
            .spawn(move || {
                let _ = tx.send(job.run());
                notify();
            })
            .map_err(io_err(&self.path, "spawn compaction thread"))?;
        Ok(Compaction { done: rx })
    }

    /// Puts a finished compaction in place. Call between turns; a sync in
    /// flight is waited for first, and records still in the buffer go to
    /// the new file with the next [`Wal::commit`].
    ///
    /// # Errors
    /// IO errors, or a log that failed meanwhile; the old log then stays in
    /// use, untouched.
    pub fn finish_compaction(&mut self, mut done: Compacted) -> Result<(), WalError> {
        if done.generation != self.generation {
            info!(
                "{}: dropping a compaction of a log that was replaced since",
                self.path.display()
            );
            return Ok(());
        }
        let started = Instant::now();
        self.settle_before_replacing()?;
        let old_len = self.file_end;
        let tail = copy_range(&self.file, done.copied_to, old_len, done.temp.as_file_mut())
            .map_err(io_err(&self.path, "copy log tail"))?;
        done.temp
            .as_file()
            .sync_all()
            .map_err(io_err(done.temp.path(), "fsync"))?;
        let file = done
            .temp
            .persist(&self.path)
            .map_err(|e| io_err(&self.path, "rename")(e.error))?;
        drop(file);
        // From here on the old file is gone: failing to use the new one
        // must stop writes, or they would go to an unlinked file.
        let reopened = sync_dir(&self.path).and_then(|()| {
            // Append mode, as at open.
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err(&self.path, "open"))
        });
        match reopened {
            Ok(file) => self.replace_file(file),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        }
        let new_offset = done.new_len - (done.copied_to - done.from);
        self.next_generation(Some(super::Remap {
            from: self.generation,
            old_offset: done.from,
            new_offset,
        }));
        self.header = done.header;
        self.file_end = done.new_len + tail;
        self.durable_end = self.file_end;
        self.durable_seq = self.file_seq;
        self.shared_end.store(self.file_end, Ordering::Release);
        info!(
            "{}: compacted {old_len} bytes to {} ({} live keys, base seq {}; the loop paused {:.1} ms)",
            self.path.display(),
            self.file_end,
            done.live_keys,
            done.header.base_seq,
            started.elapsed().as_secs_f64() * 1e3,
        );
        Ok(())
    }
}

/// Everything the compaction thread needs, owned.
struct Job {
    path: PathBuf,
    file: File,
    header: Header,
    upto: u64,
    shared_end: Arc<AtomicU64>,
    generation: u64,
}

impl Job {
    fn run(self) -> Result<Compacted, WalError> {
        let path = &self.path;
        let live = index_live_records(&self.file, self.upto).map_err(|source| WalError::Io {
            path: path.clone(),
            op: "read for compaction",
            source,
        })?;
        let live_keys = live.len();
        let temp = temp_file_for(path)?;
        let mut paced = Paced::new(temp.as_file());
        let mut out = BufWriter::with_capacity(READ_CHUNK, &mut paced);
        let mut head = Vec::with_capacity(HEADER_LEN);
        self.header.encode(&mut head);
        out.write_all(&head).map_err(io_err(path, "write temp"))?;
        let mut new_len = HEADER_LEN as u64;
        let mut window = Window::new(&self.file);
        let mut put = Vec::new();
        for Live { offset, len, entry } in live {
            let record = window
                .get(offset, len as usize)
                .map_err(io_err(path, "read"))?;
            let record = if entry == 0 {
                record
            } else {
                put.clear();
                entry_as_put(record, entry as usize, &mut put).map_err(io_err(path, "read"))?;
                &put[..]
            };
            out.write_all(record).map_err(io_err(path, "write temp"))?;
            new_len += record.len() as u64;
        }
        out.flush().map_err(io_err(path, "write temp"))?;
        drop(out);
        // Follow the records the loop appended meanwhile.
        let mut copied_to = self.upto;
        loop {
            let end = self.shared_end.load(Ordering::Acquire);
            if end.saturating_sub(copied_to) < HANDOFF_BYTES {
                break;
            }
            new_len +=
                copy_range(&self.file, copied_to, end, &mut paced).map_err(io_err(path, "copy"))?;
            copied_to = end;
        }
        temp.as_file()
            .sync_all()
            .map_err(io_err(temp.path(), "fsync"))?;
        Ok(Compacted {
            temp,
            from: self.upto,
            copied_to,
            new_len,
            header: self.header,
            live_keys,
            generation: self.generation,
        })
    }
}

/// Reads ranges of a file in ascending order through one buffer, with a
/// read per [`READ_CHUNK`] rather than per record.
struct Window<'a> {
    file: &'a File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl<'a> Window<'a> {
    fn new(file: &'a File) -> Window<'a> {
        Window {
            file,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// `file[offset..offset + len]`; offsets must not go backwards.
    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            self.buf.resize(len.max(READ_CHUNK), 0);
            let n = read_full(
                &mut RangeReader {
                    file: self.file,
                    pos: offset,
                    end: offset + self.buf.len() as u64,
                },
                &mut self.buf,
            )?;
            if n < len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.truncate(n);
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }
}

/// The last `PUT` of every key still present, while the log is read.
///
/// Keys are copied once into one arena, and each slot keeps its key's hash,
/// so a lookup touches the slot and, only when the hashes match, the key's
/// bytes in the arena: no allocation per key, and no pointer to chase into
/// scattered small allocations for every record of the log.
struct LiveIndex {
    table: HashTable<Slot>,
    keys: Vec<u8>,
    hasher: RandomState,
}

struct Slot {
    hash: u64,
    key_at: usize,
    key_len: usize,
    record: Live,
}

/// Where the last write of a live key is in the log: a whole record, or
/// one PUT entry of a batch record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Live {
    /// The record's offset and length.
    offset: u64,
    len: u32,
    /// 0: the whole record; else where the PUT entry begins in it.
    entry: u32,
}

impl Live {
    fn record(offset: u64, len: u32) -> Live {
        Live {
            offset,
            len,
            entry: 0,
        }
    }
}

/// Appends a PUT record of the batch entry that begins `at` bytes into
/// `batch`, a whole batch record, with the batch's seq.
fn entry_as_put(batch: &[u8], at: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let damaged = || io::Error::other("a batch entry the index pointed at is not a PUT");
    let seq = Record::peek_seq(batch).ok_or_else(damaged)?;
    let entry = batch
        .get(at..)
        .and_then(|entries| BatchEntries::new(entries).next())
        .and_then(Result::ok)
        .filter(|e| e.op == Op::Put)
        .ok_or_else(damaged)?;
    Record {
        seq,
        op: Op::Put,
        key: entry.key,
        value: entry.value,
    }
    .encode(out);
    Ok(())
}

impl LiveIndex {
    fn new() -> LiveIndex {
        LiveIndex {
            table: HashTable::new(),
            keys: Vec::new(),
            hasher: RandomState::default(),
        }
    }

    /// The write at `record` is now the last `PUT` of `key`.
    fn put(&mut self, key: &[u8], record: Live) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        let found = self.table.find_mut(hash, |s| {
            s.hash == hash && &keys[s.key_at..s.key_at + s.key_len] == key
        });
        match found {
            Some(slot) => slot.record = record,
            None => {
                let slot = Slot {
                    hash,
                    key_at: self.keys.len(),
                    key_len: key.len(),
                    record,
                };
                self.keys.extend_from_slice(key);
                self.table.insert_unique(hash, slot, |s| s.hash);
            }
        }
    }

    /// `key` was deleted.
    fn delete(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Ok(entry) = self.table.find_entry(hash, |s| {
            s.hash == hash && &keys[s.key_at..s.key_at + s.key_len] == key
        }) {
            entry.remove();
        }
    }

    fn into_records(self) -> impl Iterator<Item = Live> {
        self.table.into_iter().map(|s| s.record)
    }
}

/// Where the last `PUT` of every key still present is (a record, or an
/// entry of a batch record), and every fork record, in file order.
fn index_live_records(file: &File, upto: u64) -> io::Result<Vec<Live>> {
    let mut live = LiveIndex::new();
    let mut forks: Vec<Live> = Vec::new();
    let mut reader = RangeReader {
        file,
        pos: HEADER_LEN as u64,
        end: upto,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0usize;
    let mut offset = HEADER_LEN as u64;
    loop {
        match Record::decode(&buf[start..]) {
            Ok(Decoded::Record(rec, used)) => {
                let whole = Live::record(offset, used as u32);
                match rec.op {
                    Op::Put => live.put(rec.key, whole),
                    Op::Delete => live.delete(rec.key),
                    // The lineage is kept whole.
                    Op::Fork => forks.push(whole),
                    Op::Batch => {
                        // A batch has no key: its entries begin right
                        // after the fixed fields.
                        let mut at = RECORD_PREFIX_LEN + BODY_FIXED_LEN;
                        for entry in rec.entries() {
                            match entry.op {
                                Op::Put => live.put(
                                    entry.key,
                                    Live {
                                        entry: at as u32,
                                        ..whole
                                    },
                                ),
                                _ => live.delete(entry.key),
                            }
                            at += ENTRY_FIXED_LEN + entry.key.len() + entry.value.len();
                        }
                    }
                }
                start += used;
                offset += used as u64;
            }
            Ok(Decoded::Incomplete { needed }) => {
                buf.drain(..start);
                start = 0;
                let before = buf.len();
                buf.resize(needed.max(READ_CHUNK), 0);
                let n = read_full(&mut reader, &mut buf[before..])?;
                buf.truncate(before + n);
                if n == 0 {
                    if buf.is_empty() {
                        break;
                    }
                    return Err(io::Error::other(format!(
                        "log ends inside a record at offset {offset}"
                    )));
                }
            }
            Err(e) => return Err(io::Error::other(format!("{e} at offset {offset}"))),
        }
    }
    let mut records: Vec<Live> = live.into_records().chain(forks).collect();
    records.sort_unstable();
    Ok(records)
}

/// Reads `file[pos..end]` with positional reads, leaving the file offset
/// (which the loop appends through) alone.
pub struct RangeReader<'a> {
    pub file: &'a File,
    pub pos: u64,
    pub end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Fills `buf` as far as the reader goes; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends `from[start..end]` to `to`; returns the bytes copied.
fn copy_range(from: &File, start: u64, end: u64, to: &mut impl Write) -> io::Result<u64> {
    let mut reader = RangeReader {
        file: from,
        pos: start,
        end,
    };
    io::copy(&mut reader, to)
}

/// Writes to a file, fsyncing it after every [`SYNC_EVERY`] bytes.
struct Paced<'a> {
    file: &'a File,
    unsynced: u64,
}

impl<'a> Paced<'a> {
    fn new(file: &'a File) -> Paced<'a> {
        Paced { file, unsynced: 0 }
    }
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.file;
        let n = file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A temp file beside `log`, named `.<log name>.<random>.tmp`.
///
/// # Errors
/// If the directory does not take new files.
pub fn temp_file_for(log: &Path) -> Result<NamedTempFile, WalError> {
    let dir = parent_dir(log);
    tempfile::Builder::new()
        .prefix(&temp_prefix(log))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err(dir, "create temp file"))
}

fn temp_prefix(log: &Path) -> String {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// Deletes temp files a crash left behind.
pub fn remove_stale_temp_files(log: &Path) {
    let prefix = temp_prefix(log);
    let Ok(entries) = std::fs::read_dir(parent_dir(log)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!("removed stale temp file {}", entry.path().display()),
                Err(e) => warn!(
                    "cannot remove stale temp file {}: {e}",
                    entry.path().display()
                ),
            }
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
///
/// # Errors
/// If the directory cannot be opened or synced.
pub fn sync_dir(path: &Path) -> Result<(), WalError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        batch, commit_durably, open, open_controlled, put, reopen, write_mix,
    };
    use super::super::Opened;
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_live_index_keeps_the_last_put_of_each_present_key() {
        let mut index = LiveIndex::new();
        index.put(b"a", Live::record(10, 1));
        index.put(b"b", Live::record(20, 2));
        index.put(b"a", Live::record(30, 3));
        index.delete(b"b");
        index.delete(b"never");
        index.put(b"c", Live::record(40, 4));
        index.delete(b"c");
        index.put(b"c", Live::record(50, 5));
        let mut records: Vec<Live> = index.into_records().collect();
        records.sort_unstable();
        assert_eq!(records, vec![Live::record(30, 3), Live::record(50, 5)]);
    }

    fn wait(c: &Compaction) -> Compacted {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(result) = c.poll() {
                return result.expect("compaction");
            }
            assert!(Instant::now() < deadline, "compaction did not finish");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn compaction_keeps_live_data_and_later_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        for round in 0..20 {
            for k in 0..50 {
                let value = format!("v{round}");
                o.wal
                    .append(
                        &mut o.store,
                        Op::Put,
                        format!("k{k}").as_bytes(),
                        value.as_bytes(),
                    )
                    .expect("put");
            }
        }
        o.wal
            .append(&mut o.store, Op::Delete, b"k0", b"")
            .expect("delete");
        o.wal.commit(&mut o.store).expect("commit");
        assert!(o.wal.needs_compaction(&o.store, 0, 2.0));
        let before = o.wal.len_bytes();
        let c = o.wal.start_compaction(Box::new(|| {})).expect("start");
        // Writes keep coming while the thread works.
        o.wal
            .append(&mut o.store, Op::Put, b"late", b"1")
            .expect("put");
        o.wal
            .append(&mut o.store, Op::Delete, b"k1", b"")
            .expect("delete");
        o.wal.commit(&mut o.store).expect("commit");
        let done = wait(&c);
        o.wal.finish_compaction(done).expect("finish");
        assert!(
            o.wal.len_bytes() < before / 5,
            "{} vs {before}",
            o.wal.len_bytes()
        );
        o.wal
            .append(&mut o.store, Op::Put, b"after", b"2")
            .expect("put");
        o.wal.commit(&mut o.store).expect("commit");
        let digest = o.store.digest();
        let seq = o.wal.last_seq();
        drop(o);
        let o = open(dir.path());
        assert_eq!(o.store.digest(), digest);
        assert_eq!(o.wal.last_seq(), seq);
        assert_eq!(o.store.get(b"k0"), None);
        assert_eq!(o.store.get(b"k2"), Some(&b"v19"[..]));
        assert_eq!(o.wal.header().base_seq, 1001);
    }

    /// The records of the log file at `path`: seq, op and entries.
    fn records(path: &Path) -> Vec<(u64, Op, usize)> {
        let bytes = std::fs::read(path).expect("read");
        let mut rest = &bytes[HEADER_LEN..];
        let mut out = Vec::new();
        while let Ok(Decoded::Record(rec, used)) = Record::decode(rest) {
            out.push((rec.seq, rec.op, rec.entries().count()));
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "a record that does not decode");
        out
    }

    fn compact(o: &mut Opened, meanwhile: impl FnOnce(&mut Opened)) {
        let c = o.wal.start_compaction(Box::new(|| {})).expect("start");
        meanwhile(o);
        let done = wait(&c);
        o.wal.finish_compaction(done).expect("finish");
    }

    #[test]
    fn keys_last_written_by_a_batch_get_puts_of_their_own_with_its_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        write_mix(&mut o, 150);
        // The last write: a batch of two live keys, one of them empty.
        let last = batch(
            &mut o,
            &[
                (Op::Put, b"k1", b"\0\r\n"),
                (Op::Delete, b"k2", b""),
                (Op::Put, b"k2", b""),
                (Op::Put, b"gone", b"x"),
                (Op::Delete, b"gone", b""),
            ],
        );
        o.wal.commit(&mut o.store).expect("commit");
        let (digest, keys) = (o.store.digest(), o.store.len());
        compact(&mut o, |o| {
            // Written while the thread works: copied as it is.
            batch(o, &[(Op::Put, b"late", b""), (Op::Delete, b"k1", b"")]);
            o.wal.commit(&mut o.store).expect("commit");
        });
        assert_eq!(o.wal.header().base_seq, last);
        let records = records(o.wal.path());
        let (snapshot, after) = records.split_at(records.len() - 1);
        assert_eq!(snapshot.len(), keys, "one PUT per live key");
        assert!(snapshot
            .iter()
            .all(|&(seq, op, n)| op == Op::Put && n == 1 && seq <= last));
        assert_eq!(
            snapshot.iter().filter(|&&(seq, ..)| seq == last).count(),
            2,
            "k1 and k2 share the batch's seq"
        );
        assert_eq!(after, &[(last + 1, Op::Batch, 2)]);
        let o = reopen(o, dir.path());
        assert_eq!(o.store.get(b"late"), Some(&b""[..]));
        assert_eq!(o.store.get(b"k2"), Some(&b""[..]));
        assert_eq!(o.store.get(b"k1"), None);
        // The same data as before the late batch, as of the base seq.
        let mut then = Store::new();
        match o.wal.view_at(last) {
            crate::wal::scan::ViewAt::Ready(view) => view
                .replay(|op, key, value| match op {
                    Op::Put => then.set(key, value),
                    _ => drop(then.remove(key)),
                })
                .expect("replay"),
            _ => panic!("the base seq is readable"),
        }
        assert_eq!(then.digest(), digest);
    }

    #[test]
    fn a_compacted_log_with_batches_compacts_again_to_the_same_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        write_mix(&mut o, 100);
        compact(&mut o, |_| {});
        write_mix(&mut o, 100);
        let digest = o.store.digest();
        compact(&mut o, |_| {});
        assert!(records(o.wal.path())
            .iter()
            .all(|&(_, op, _)| op == Op::Put));
        let o = reopen(o, dir.path());
        assert_eq!(o.store.digest(), digest);
    }

    /// A log worth compacting: 20 rounds over 50 keys, durable.
    fn overwritten_log(dir: &Path) -> (Opened, super::super::tests::SyncControl) {
        let (mut o, control) = open_controlled(dir);
        for round in 0..20 {
            for k in 0..50 {
                put(&mut o, &format!("k{k}"), &format!("v{round}"));
            }
        }
        commit_durably(&mut o, &control);
        (o, control)
    }

    #[test]
    fn the_hand_off_waits_for_the_sync_in_flight_and_later_syncs_use_the_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = overwritten_log(dir.path());
        let c = o.wal.start_compaction(Box::new(|| {})).expect("start");
        // A turn written while its fsync is held in flight on the old file.
        control.gate.close();
        put(&mut o, "late", "1");
        assert_eq!(o.wal.commit(&mut o.store).expect("commit"), 1000);
        let done = wait(&c);
        let opener = control.gate.open_after(Duration::from_millis(20));
        o.wal.finish_compaction(done).expect("finish");
        opener.join().expect("opener");
        assert_eq!(o.wal.generation(), 1);
        assert_eq!(o.wal.durable_seq(), 1001);
        assert!(o.wal.is_quiescent());
        // The old file's report was taken in before the switch; a report
        // about generation 0 can no longer move the new file's point.
        let before = (o.wal.durable_seq(), o.wal.committed_end());
        o.wal.durable(super::super::syncer::Target {
            generation: 0,
            end: u64::MAX,
            seq: u64::MAX,
        });
        assert_eq!((o.wal.durable_seq(), o.wal.committed_end()), before);
        // Later writes are synced through the new file.
        put(&mut o, "after", "2");
        commit_durably(&mut o, &control);
        assert_eq!(o.wal.durable_seq(), 1002);
        let o = reopen(o, dir.path());
        assert_eq!(o.wal.last_seq(), 1002);
        assert_eq!(o.wal.header().base_seq, 1000);
    }

    #[test]
    fn a_failed_sync_before_the_hand_off_keeps_the_old_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut o, control) = overwritten_log(dir.path());
        let digest = o.store.digest();
        let len = o.wal.len_bytes();
        let c = o.wal.start_compaction(Box::new(|| {})).expect("start");
        control.fail.store(true, Ordering::SeqCst);
        put(&mut o, "late", "1");
        o.wal.commit(&mut o.store).expect("commit");
        let done = wait(&c);
        assert!(matches!(
            o.wal.finish_compaction(done),
            Err(WalError::Failed)
        ));
        assert_eq!(o.wal.generation(), 0, "the log was not replaced");
        assert!(
            o.wal.commit(&mut o.store).is_err(),
            "the failure is reported"
        );
        assert_eq!(o.wal.lost_from(), Some(1001));
        assert_eq!(o.store.digest(), digest);
        assert_eq!(o.wal.len_bytes(), len);
        let o = reopen(o, dir.path());
        assert_eq!(o.wal.last_seq(), 1000);
        assert_eq!(o.wal.header().base_seq, 0);
    }

    #[test]
    fn paced_writes_keep_every_byte_and_sync_as_they_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("paced")).expect("create");
        let mut paced = Paced::new(&file);
        let chunk: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        for _ in 0..9 {
            paced.write_all(&chunk).expect("write");
            assert!(
                paced.unsynced < SYNC_EVERY,
                "{} bytes unsynced",
                paced.unsynced
            );
        }
        assert_eq!(paced.unsynced, 9 * (1 << 20) - 2 * SYNC_EVERY);
        let written = std::fs::read(dir.path().join("paced")).expect("read");
        assert_eq!(written.len(), 9 << 20);
        assert!(written.chunks(1 << 20).all(|c| c == &chunk[..]));
    }

    #[test]
    fn stale_temp_files_are_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let stale = dir.path().join(".leader.log.abc123.tmp");
        std::fs::write(&stale, b"half a compaction").expect("write");
        drop(open(dir.path()));
        assert!(!stale.exists());
    }
}
