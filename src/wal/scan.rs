//! Reading the data set as of a given seq back from the log file, off the
//! event loop: how `DIGEST` and `KEYS` over a large data set are answered
//! (see `server::jobs` for the scheduling).
//!
//! The log replays to exactly the store's state, so the state as of seq
//! `S` is the log's records through `S`. [`Wal::view_at`] hands out a
//! [`LogView`] once the file holds them (records still in the log's
//! buffer are not in the file yet). The view shares the log's own file
//! handle and remembers the current end of the file; a job thread then
//! reads the records through `S` with positional reads
//! ([`LogView::replay`]) while the loop goes on appending after that end.
//!
//! What can happen to the file meanwhile:
//!
//! - **Compaction or a snapshot install** renames another file over the
//!   log. The view's handle still reads the old file, whose bytes never
//!   change, so the scan is unaffected.
//! - **A rewind** cuts the file back in place, and new records may then be
//!   written where the scan is reading. The scan cannot tell, so the caller
//!   compares [`Wal::rewinds`] before and after and throws the result away.
//! - **A disk error** cuts the writes past the ack point and stops all
//!   writing. A scan that needed them fails to read them or is answered
//!   `ERROR` anyway, like any read that saw a lost write.
//!
//! A view of a state from before a rewind or a snapshot install
//! ([`Wal::resets`]) must not be asked for: the file no longer holds it.
//! Compaction is harmless here too. A compacted file's base seq is the
//! file seq at the start of the compaction, so a view asked for as soon
//! as the file holds `S` (the loop asks right after each commit, before
//! it puts a compaction in place) never finds the base seq past `S`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{Decoded, Op, Record, HEADER_LEN};
use super::{io_err, Wal, WalError};

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 1 << 20;

/// Whether the state as of a seq can be read from the file.
pub enum ViewAt {
    /// It can, through this view.
    Ready(LogView),
    /// Not yet: records through the seq are still in the log's buffer; the
    /// next commits write them.
    NotYet,
    /// Never: the writes up to it were lost to a disk error, or the file
    /// no longer starts before it.
    Gone,
}

/// The records of a log file through one seq, for reading on another
/// thread.
pub struct LogView {
    path: PathBuf,
    /// The log's own handle (shared, not duplicated: views queued behind a
    /// running one cost no descriptor). Dropping the last handle on a
    /// replaced file frees its blocks, which can take ext4 tens of
    /// milliseconds, so a view is dropped on its job thread, or through
    /// [`super::close_off_loop`].
    file: Arc<File>,
    /// The header's base seq: records up to it form the snapshot part, in
    /// any order.
    base_seq: u64,
    /// The end of the file when the view was taken; the scan never reads
    /// past it.
    upto: u64,
    /// The state to read: every record through this seq, none after.
    seq: u64,
}

impl Wal {
    /// A view of the data as of `seq`, which must not be past
    /// [`Wal::last_seq`], nor from before the last of [`Wal::resets`].
    pub fn view_at(&self, seq: u64) -> ViewAt {
        if self.lost_from.is_some_and(|from| seq >= from) || self.header.base_seq > seq {
            return ViewAt::Gone;
        }
        if self.file_seq < seq {
            return ViewAt::NotYet;
        }
        ViewAt::Ready(LogView {
            path: self.path.clone(),
            file: Arc::clone(&self.file),
            base_seq: self.header.base_seq,
            upto: self.file_end,
            seq,
        })
    }

    /// Rewinds so far: a [`LogView`] taken before one may have read bytes
    /// that were cut and written over since.
    pub fn rewinds(&self) -> u64 {
        self.rewinds
    }

    /// Rewinds and snapshot installs so far: a state from before one may no
    /// longer be in the file.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

impl LogView {
    /// The seq whose state the view reads.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Calls `apply` with every `PUT` and `DELETE` through the view's seq,
    /// in log order: a batch record's entries one by one, in order (fork
    /// records change no data and are skipped). Replaying them into an
    /// empty map gives the data as of that seq.
    ///
    /// # Errors
    /// Read errors, and records that are damaged or missing (the log never
    /// holds such records before its tail; see the module docs for when
    /// this can still happen).
    pub fn replay(&self, mut apply: impl FnMut(Op, &[u8], &[u8])) -> Result<(), WalError> {
        let damaged = |what: String| WalError::Io {
            path: self.path.clone(),
            op: "scan",
            source: std::io::Error::other(what),
        };
        // Past the snapshot part the records are numbered consecutively, so
        // the one with the view's seq is the last to apply.
        let ends_at_seq = self.seq > self.base_seq;
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0usize;
        // File offset of `buf[start]`, and of the end of `buf`.
        let mut offset = HEADER_LEN as u64;
        let mut read_to = offset;
        loop {
            match Record::decode(&buf[start..]) {
                Ok(Decoded::Record(rec, used)) => {
                    match rec.op {
                        Op::Fork => {}
                        _ if rec.seq > self.seq => return Ok(()),
                        _ => {
                            for entry in rec.entries() {
                                apply(entry.op, entry.key, entry.value);
                            }
                        }
                    }
                    if ends_at_seq && rec.seq == self.seq && rec.op != Op::Fork {
                        return Ok(());
                    }
                    start += used;
                    offset += used as u64;
                }
                Ok(Decoded::Incomplete { needed }) => {
                    buf.drain(..start);
                    start = 0;
                    let have = buf.len();
                    let want = needed.max(READ_CHUNK).saturating_sub(have);
                    let want = want.min(usize::try_from(self.upto - read_to).unwrap_or(usize::MAX));
                    if want == 0 {
                        if buf.is_empty() && !ends_at_seq {
                            return Ok(());
                        }
                        return Err(damaged(format!(
                            "the log ends at offset {offset} before seq {} was read",
                            self.seq
                        )));
                    }
                    buf.resize(have + want, 0);
                    let mut filled = 0;
                    while filled < want {
                        let n = self
                            .file
                            .read_at(&mut buf[have + filled..], read_to)
                            .map_err(io_err(&self.path, "read"))?;
                        if n == 0 {
                            return Err(damaged(format!(
                                "the log was cut at offset {read_to} while being read"
                            )));
                        }
                        filled += n;
                        read_to += n as u64;
                    }
                }
                Err(e) => return Err(damaged(format!("{e} at offset {offset}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{batch, open, put, write_mix};
    use super::super::Opened;
    use super::*;
    use crate::store::Store;

    /// Replays a view into a fresh store.
    fn state(view: &LogView) -> Store {
        let mut store = Store::new();
        view.replay(|op, key, value| match op {
            Op::Put => store.set(key, value),
            _ => drop(store.remove(key)),
        })
        .expect("replay");
        store
    }

    fn ready(o: &Opened, seq: u64) -> LogView {
        match o.wal.view_at(seq) {
            ViewAt::Ready(view) => view,
            ViewAt::NotYet => panic!("seq {seq} not yet in the file"),
            ViewAt::Gone => panic!("seq {seq} gone"),
        }
    }

    fn delete(o: &mut Opened, key: &str) {
        o.wal
            .append(&mut o.store, Op::Delete, key.as_bytes(), b"")
            .expect("delete");
    }

    #[test]
    fn a_view_shows_the_state_as_of_its_seq_and_nothing_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        assert_eq!(state(&ready(&o, 0)).len(), 0, "an empty log");
        put(&mut o, "a", "1");
        put(&mut o, "b", "2");
        delete(&mut o, "a");
        let seq = o.wal.last_seq();
        assert!(matches!(o.wal.view_at(seq), ViewAt::NotYet), "buffered");
        o.wal.commit(&mut o.store).expect("commit");
        let expected = o.store.digest();
        let view = ready(&o, seq);
        // Later writes, committed before the scan runs, are not in it.
        put(&mut o, "c", "3");
        put(&mut o, "b", "22");
        o.wal.commit(&mut o.store).expect("commit");
        assert_eq!(state(&view).digest(), expected);
        assert_eq!(
            state(&ready(&o, o.wal.last_seq())).digest(),
            o.store.digest()
        );
        // An older state is still there too.
        let first = state(&ready(&o, 1));
        assert_eq!(first.get(b"a"), Some(&b"1"[..]));
        assert_eq!(first.len(), 1);
    }

    #[test]
    fn a_view_applies_a_batch_whole_and_the_digest_fold_agrees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        write_mix(&mut o, 120);
        let seq = o.wal.last_seq();
        let expected = o.store.digest();
        batch(
            &mut o,
            &[
                (Op::Put, b"k1", b""),
                (Op::Delete, b"k2", b""),
                (Op::Put, b"new", b"\0"),
            ],
        );
        o.wal.commit(&mut o.store).expect("commit");
        assert_eq!(
            state(&ready(&o, seq)).digest(),
            expected,
            "before the batch"
        );
        let now = ready(&o, seq + 1);
        assert_eq!(state(&now).digest(), o.store.digest(), "with all of it");
        let mut fold = crate::query::Query::Digest.fold();
        now.replay(|op, key, value| {
            assert!(
                matches!(op, Op::Put | Op::Delete),
                "{op:?} reached the fold"
            );
            fold.apply(op, key, value);
        })
        .expect("replay");
        assert_eq!(fold.finish(), crate::query::Query::Digest.answer(&o.store));
    }

    #[test]
    fn a_view_keeps_reading_the_old_file_across_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        for round in 0..10 {
            for k in 0..20 {
                put(&mut o, &format!("k{k}"), &format!("v{round}"));
            }
        }
        delete(&mut o, "k3");
        o.wal.commit(&mut o.store).expect("commit");
        let (seq, expected) = (o.wal.last_seq(), o.store.digest());
        let before = ready(&o, seq);
        let c = o.wal.start_compaction(Box::new(|| {})).expect("start");
        put(&mut o, "late", "1");
        o.wal.commit(&mut o.store).expect("commit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let done = loop {
            if let Some(done) = c.poll() {
                break done.expect("compaction");
            }
            assert!(std::time::Instant::now() < deadline, "compaction hangs");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        o.wal.finish_compaction(done).expect("finish");
        assert_eq!(o.wal.header().base_seq, seq);
        assert_eq!(state(&before).digest(), expected, "the old file");
        assert_eq!(state(&ready(&o, seq)).digest(), expected, "the new file");
        let now = ready(&o, o.wal.last_seq());
        assert_eq!(state(&now).digest(), o.store.digest());
        assert!(
            matches!(o.wal.view_at(seq - 1), ViewAt::Gone),
            "compacted away"
        );
    }

    #[test]
    fn a_rewind_and_a_snapshot_count_as_resets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        for k in 0..5 {
            put(&mut o, &format!("k{k}"), "v");
        }
        o.wal.commit(&mut o.store).expect("commit");
        assert_eq!((o.wal.rewinds(), o.wal.resets()), (0, 0));
        let (store, _) = o.wal.rewind(&mut o.store, 3, 0).expect("rewind");
        o.store = store;
        assert_eq!((o.wal.rewinds(), o.wal.resets()), (1, 1));
        assert_eq!(state(&ready(&o, 3)).digest(), o.store.digest());
    }

    #[test]
    fn damage_inside_the_range_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = open(dir.path());
        for k in 0..50 {
            put(&mut o, &format!("k{k}"), "value");
        }
        o.wal.commit(&mut o.store).expect("commit");
        let last = o.wal.last_seq();
        // A view that claims more than the file holds.
        let short = LogView {
            seq: last + 1,
            ..ready(&o, last)
        };
        assert!(short.replay(|_, _, _| {}).is_err());
        let view = ready(&o, last);
        let damage = std::fs::OpenOptions::new()
            .write(true)
            .open(o.wal.path())
            .expect("open");
        damage
            .write_all_at(b"garbage", HEADER_LEN as u64 + 40)
            .expect("damage");
        assert!(view.replay(|_, _, _| {}).is_err());
    }
}
