//! The leader's side of one follower: what to send it and from where.
//!
//! The leader's own log file is the replication backlog. A [`Feed`] is a
//! cursor into it: a snapshot is the file's bytes from offset 0 to the
//! point the plan was made, a catch-up is the records after the point
//! where the follower's log and the leader's part (see
//! [`lineage::plan`](crate::wal::lineage::plan)), and the live stream is
//! the same cursor following the file as it grows. The feed reads only while the follower's output buffer is below
//! a bound, so a slow follower costs disk reads later, not leader memory,
//! and nothing is ever skipped.
//!
//! Reads go through the feed's own file handle, so a compaction that
//! replaces the file mid-stream is followed through [`Remap`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::wire::{self, Frame};
use crate::wal::lineage::Plan;
use crate::wal::record::{Decoded, Op, Record, HEADER_LEN};
use crate::wal::{close_off_loop, Remap, Wal};

/// Bytes read from the log per step.
const READ_CHUNK: usize = 256 << 10;

/// A snapshot in progress: raw file bytes up to `end`, then `END seq`.
#[derive(Debug, Clone, Copy)]
struct SnapshotPart {
    end: u64,
    seq: u64,
}

/// A cursor into the leader's log for one follower.
pub struct Feed {
    /// Its own handle on the log file; `None` only while being dropped.
    file: Option<File>,
    generation: u64,
    cursor: u64,
    /// Writes with seq up to this are not sent (the follower has them).
    skip_through: u64,
    /// Fork records still to pass over before sending any (the follower
    /// has them).
    skip_forks: usize,
    snapshot: Option<SnapshotPart>,
    /// Set once every record from the cursor on is to be sent: they are
    /// then copied without decoding (the follower verifies each checksum).
    past_skip: bool,
    scratch: Vec<u8>,
    /// The highest seq this follower can hold: the seq its data agreed
    /// with the leader's at, then the last record or snapshot sent. An ack
    /// above it is a protocol error.
    sent_seq: u64,
}

/// Why a feed cannot continue; the follower is disconnected and starts over
/// when it reconnects.
#[derive(Debug)]
pub enum FeedError {
    Io(io::Error),
    /// The log was replaced twice while this feed was behind.
    Overtaken,
    /// The log holds bytes that are not a record.
    Corrupt(u64),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Io(e) => write!(f, "reading the log: {e}"),
            FeedError::Overtaken => {
                write!(f, "the log was compacted twice while this follower lagged")
            }
            FeedError::Corrupt(at) => write!(f, "unreadable record in the log at offset {at}"),
        }
    }
}

impl From<io::Error> for FeedError {
    fn from(e: io::Error) -> FeedError {
        FeedError::Io(e)
    }
}

impl Feed {
    /// A feed for `plan`, from the log as it is now.
    ///
    /// # Errors
    /// If the log file cannot be opened a second time.
    pub fn new(wal: &Wal, plan: Plan) -> io::Result<Feed> {
        let file = wal.reader()?;
        let sent_seq = match plan {
            Plan::CatchUp { from, .. } => from,
            Plan::Snapshot { .. } => 0,
        };
        let (cursor, skip_through, skip_forks, snapshot) = match plan {
            Plan::CatchUp {
                from, skip_forks, ..
            } => (HEADER_LEN as u64, from, skip_forks, None),
            Plan::Snapshot { .. } => {
                let part = SnapshotPart {
                    end: wal.committed_end(),
                    seq: wal.committed_seq(),
                };
                (0, part.seq, 0, Some(part))
            }
        };
        Ok(Feed {
            file: Some(file),
            generation: wal.generation(),
            cursor,
            skip_through,
            skip_forks,
            snapshot,
            past_skip: false,
            scratch: Vec::new(),
            sent_seq,
        })
    }

    /// The highest seq sent so far (or known to the follower when the feed
    /// began): what it may acknowledge at most.
    pub fn sent_seq(&self) -> u64 {
        self.sent_seq
    }

    /// Whether the snapshot part is still being sent.
    pub fn in_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Whether the feed still reads a file the log has replaced: it sends
    /// a snapshot part from it, or records only that file holds. It
    /// follows one replacement; a second one before it moves over drops
    /// it ([`FeedError::Overtaken`]).
    pub fn behind_file(&self, wal: &Wal) -> bool {
        self.generation != wal.generation()
    }

    /// Appends frames to `out` until it has added `room` bytes or the
    /// follower has everything written so far.
    ///
    /// # Returns
    /// Whether it stopped for lack of room, with more to send.
    ///
    /// # Errors
    /// A [`FeedError`]; the caller drops the follower.
    pub fn pump(&mut self, wal: &Wal, out: &mut Vec<u8>, room: usize) -> Result<bool, FeedError> {
        let limit = out.len() + room;
        while out.len() < limit {
            let end = match self.follow_generation(wal)? {
                Some(end) => end,
                None => continue,
            };
            if let Some(part) = self.snapshot {
                let n = self.read(part.end)?;
                Frame::Chunk(&self.scratch[..n]).encode(out);
                self.cursor += n as u64;
                if self.cursor >= part.end {
                    Frame::End { seq: part.seq }.encode(out);
                    self.sent_seq = part.seq;
                    self.snapshot = None;
                }
                continue;
            }
            if self.cursor >= end {
                break;
            }
            self.send_records(end, out)?;
        }
        Ok(out.len() >= limit)
    }

    /// Moves the cursor into the current file generation when it can.
    /// Returns the offset up to which the feed's file may be read, or `None`
    /// when the cursor was just translated (go round again).
    fn follow_generation(&mut self, wal: &Wal) -> Result<Option<u64>, FeedError> {
        if self.generation == wal.generation() {
            return Ok(Some(wal.committed_end()));
        }
        match wal.remap() {
            Some(Remap {
                from,
                old_offset,
                new_offset,
            }) if from == self.generation => {
                if self.snapshot.is_none() && self.cursor >= old_offset {
                    self.cursor = self.cursor - old_offset + new_offset;
                    self.generation = wal.generation();
                    if let Some(old) = self.file.replace(wal.reader()?) {
                        close_off_loop(old);
                    }
                    Ok(None)
                } else {
                    // Finish what only the old file holds.
                    Ok(Some(old_offset))
                }
            }
            _ => Err(FeedError::Overtaken),
        }
    }

    /// Reads up to a chunk of `file[cursor..end]` into `scratch`.
    fn read(&mut self, end: u64) -> io::Result<usize> {
        let want = READ_CHUNK.min((end - self.cursor) as usize);
        self.fill(want)?;
        Ok(want)
    }

    /// Reads exactly `len` bytes at the cursor into `scratch`.
    fn fill(&mut self, len: usize) -> io::Result<()> {
        self.scratch.resize(len, 0);
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("the feed's log handle is closed"))?;
        file.read_exact_at(&mut self.scratch, self.cursor)
    }

    /// Sends the records in the next chunk, skipping those the follower has.
    fn send_records(&mut self, end: u64, out: &mut Vec<u8>) -> Result<(), FeedError> {
        let mut n = self.read(end)?;
        // A record bigger than a chunk: read exactly that record.
        if let Ok(Decoded::Incomplete { needed }) = Record::decode(&self.scratch[..n]) {
            let needed = needed as u64;
            if self.cursor + needed > end {
                return Err(FeedError::Corrupt(self.cursor));
            }
            self.fill(needed as usize)?;
            n = needed as usize;
        }
        let frame_at = wire::begin(out, b'R');
        let mut off = 0;
        if self.past_skip {
            let mut last = None;
            while let Ok(Some(len)) = Record::peek_len(&self.scratch[off..n]) {
                if off + len > n {
                    break;
                }
                last = Some(off);
                off += len;
            }
            out.extend_from_slice(&self.scratch[..off]);
            if let Some(seq) = last.and_then(|at| Record::peek_seq(&self.scratch[at..off])) {
                self.sent_seq = self.sent_seq.max(seq);
            }
        }
        while off < n && !self.past_skip {
            match Record::decode(&self.scratch[off..n]) {
                Ok(Decoded::Record(rec, used)) => {
                    let send = if rec.op == Op::Fork {
                        let known = self.skip_forks > 0;
                        self.skip_forks = self.skip_forks.saturating_sub(1);
                        !known
                    } else {
                        rec.seq > self.skip_through
                    };
                    if send {
                        out.extend_from_slice(&self.scratch[off..off + used]);
                        self.sent_seq = self.sent_seq.max(rec.seq);
                    }
                    // Later writes have higher seqs, and no fork is skipped.
                    // Not before a write past `skip_through`: records of a
                    // compacted snapshot part may share a seq (the PUTs
                    // made of one batch's entries), and a record after one
                    // at `skip_through` may still be at it.
                    self.past_skip = self.skip_forks == 0 && rec.seq > self.skip_through;
                    off += used;
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(_) => return Err(FeedError::Corrupt(self.cursor + off as u64)),
            }
        }
        if off == 0 && n > 0 {
            // The chunk holds at least one whole record (see above), so
            // this is a length no record has.
            return Err(FeedError::Corrupt(self.cursor));
        }
        if out.len() == frame_at + wire::FRAME_HEADER_LEN {
            out.truncate(frame_at);
        } else {
            wire::finish(out, frame_at);
        }
        self.cursor += off as u64;
        Ok(())
    }
}

impl Drop for Feed {
    /// The feed may hold the last handle on a log file a compaction
    /// replaced; closing it frees the file's blocks, which the loop must
    /// not wait for.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            close_off_loop(file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::wal::record::Op;
    use crate::wal::FsyncPolicy;

    fn frames(bytes: &[u8]) -> Vec<Frame<'_>> {
        let mut rest = bytes;
        let mut out = Vec::new();
        while let Ok(Some((frame, used))) = Frame::decode(rest) {
            out.push(frame);
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "trailing bytes");
        out
    }

    fn record_seqs(frames: &[Frame<'_>]) -> Vec<u64> {
        let mut seqs = Vec::new();
        for f in frames {
            if let Frame::Records(mut bytes) = f {
                while let Ok(Decoded::Record(rec, used)) = Record::decode(bytes) {
                    seqs.push(rec.seq);
                    bytes = &bytes[used..];
                }
            }
        }
        seqs
    }

    fn catch_up(from: u64, skip_forks: usize) -> Plan {
        Plan::CatchUp {
            from,
            keep_forks: 0,
            skip_forks,
        }
    }

    #[test]
    fn catch_up_skips_the_forks_the_follower_has_and_sends_later_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Wal::open(&dir.path().join("leader.log"), FsyncPolicy::Always).expect("open");
        let mut store = Store::new();
        o.wal.append(&mut store, Op::Put, b"a", b"1").expect("put");
        o.wal.fork(&mut store, 1).expect("fork");
        o.wal.append(&mut store, Op::Put, b"b", b"2").expect("put");
        o.wal.fork(&mut store, 2).expect("fork");
        o.wal.append(&mut store, Op::Put, b"c", b"3").expect("put");
        o.wal.commit(&mut store).expect("commit");
        let forks = |bytes: &[u8]| -> Vec<u64> {
            let mut epochs = Vec::new();
            for f in frames(bytes) {
                if let Frame::Records(mut b) = f {
                    while let Ok(Decoded::Record(rec, used)) = Record::decode(b) {
                        epochs.extend(rec.as_fork().map(|(_, epoch)| epoch));
                        b = &b[used..];
                    }
                }
            }
            epochs
        };
        for (skip, want) in [(0, vec![1, 2]), (1, vec![2]), (2, vec![])] {
            let mut feed = Feed::new(&o.wal, catch_up(1, skip)).expect("feed");
            let mut out = Vec::new();
            feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
            assert_eq!(forks(&out), want, "skipping {skip}");
            assert_eq!(record_seqs(&frames(&out)).last(), Some(&3));
        }
    }

    #[test]
    fn catch_up_sends_only_missing_records_and_follows_growth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Wal::open(&dir.path().join("leader.log"), FsyncPolicy::Always).expect("open");
        let mut store = Store::new();
        for i in 0..10 {
            o.wal
                .append(&mut store, Op::Put, format!("k{i}").as_bytes(), b"v")
                .expect("put");
        }
        o.wal.commit(&mut store).expect("commit");
        let mut feed = Feed::new(&o.wal, catch_up(6, 0)).expect("feed");
        assert_eq!(feed.sent_seq(), 6, "the follower holds seq 6");
        let mut out = Vec::new();
        feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
        assert_eq!(record_seqs(&frames(&out)), vec![7, 8, 9, 10]);
        assert_eq!(feed.sent_seq(), 10);
        out.clear();
        feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
        assert!(out.is_empty());
        o.wal
            .append(&mut store, Op::Put, b"late", b"v")
            .expect("put");
        o.wal.commit(&mut store).expect("commit");
        feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
        assert_eq!(record_seqs(&frames(&out)), vec![11]);
        assert_eq!(
            feed.sent_seq(),
            11,
            "records copied without decoding count too"
        );
    }

    #[test]
    fn pump_adds_up_to_its_room_whatever_the_buffer_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Wal::open(&dir.path().join("leader.log"), FsyncPolicy::Always).expect("open");
        let mut store = Store::new();
        for i in 0..100 {
            o.wal
                .append(
                    &mut store,
                    Op::Put,
                    format!("k{i}").as_bytes(),
                    &[b'v'; 100],
                )
                .expect("put");
        }
        o.wal.commit(&mut store).expect("commit");
        let mut feed = Feed::new(&o.wal, catch_up(0, 0)).expect("feed");
        // Bytes the socket already took stay in the buffer until it drains;
        // a room counted from the buffer's length would add nothing here.
        let sent = vec![0u8; 1 << 20];
        let mut out = sent.clone();
        assert!(
            feed.pump(&o.wal, &mut out, 0).expect("pump"),
            "no room: more to send"
        );
        assert_eq!(out.len(), sent.len());
        assert!(
            feed.pump(&o.wal, &mut out, 1000).expect("pump"),
            "stopped at its room"
        );
        let added = out.len() - sent.len();
        assert!((1000..1000 + (256 << 10)).contains(&added), "{added}");
        assert!(
            !feed.pump(&o.wal, &mut out, 1 << 20).expect("pump"),
            "all sent"
        );
        assert_eq!(
            record_seqs(&frames(&out[sent.len()..])),
            (1..=100).collect::<Vec<u64>>()
        );
    }

    /// Pumps `feed` until the follower has everything, and applies the
    /// records of the frames to `follower`'s log and store as a follower
    /// does; returns the records' bytes as sent.
    fn deliver(feed: &mut Feed, leader: &Wal, follower: &mut crate::wal::Opened) -> Vec<u8> {
        let mut sent = Vec::new();
        loop {
            let mut out = Vec::new();
            let more = feed.pump(leader, &mut out, 1 << 20).expect("pump");
            let mut rest = &out[..];
            while !rest.is_empty() {
                let Ok(Some((frame, used))) = Frame::decode(rest) else {
                    panic!("not a frame");
                };
                let Frame::Records(mut bytes) = frame else {
                    panic!("not records: {}", frame.name());
                };
                sent.extend_from_slice(bytes);
                while let Ok(Decoded::Record(rec, used)) = Record::decode(bytes) {
                    follower
                        .wal
                        .append_replicated(&mut follower.store, &rec, &bytes[..used])
                        .expect("replicated");
                    bytes = &bytes[used..];
                }
                assert!(bytes.is_empty(), "a partial record in a frame");
                rest = &rest[used..];
            }
            if !more {
                follower.wal.commit(&mut follower.store).expect("commit");
                return sent;
            }
        }
    }

    fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (leader, follower) = (dir.path().join("leader"), dir.path().join("follower"));
        std::fs::create_dir_all(&leader).expect("mkdir");
        std::fs::create_dir_all(&follower).expect("mkdir");
        (dir, leader, follower)
    }

    #[test]
    fn catch_up_carries_batches_and_16_mib_values_as_they_are() {
        let (_dir, leader_dir, follower_dir) = dirs();
        let mut leader = crate::wal::tests::open(&leader_dir);
        crate::wal::tests::write_mix(&mut leader, 40);
        let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut odd = big.clone();
        odd[..4].copy_from_slice(b"\r\n\0\xff");
        for (key, value) in [(&b"big"[..], &big[..]), (b"empty", b""), (b"nl", b"\n")] {
            leader
                .wal
                .append(&mut leader.store, Op::Put, key, value)
                .expect("put");
        }
        crate::wal::tests::batch(
            &mut leader,
            &[
                (Op::Put, b"big2", &odd),
                (Op::Put, b"k1", b""),
                (Op::Delete, b"big", b""),
            ],
        );
        crate::wal::tests::write_mix(&mut leader, 10);
        let mut follower = crate::wal::tests::open(&follower_dir);
        let mut feed = Feed::new(&leader.wal, catch_up(0, 0)).expect("feed");
        let sent = deliver(&mut feed, &leader.wal, &mut follower);
        let log = std::fs::read(leader.wal.path()).expect("read");
        assert_eq!(sent, log[HEADER_LEN..], "the records byte for byte");
        assert_eq!(follower.wal.last_seq(), leader.wal.last_seq());
        assert_eq!(follower.store.get(b"big2"), Some(&odd[..]));
        assert_eq!(follower.store.digest(), leader.store.digest());
        let follower = crate::wal::tests::reopen(follower, &follower_dir);
        assert_eq!(follower.store.digest(), leader.store.digest());
    }

    #[test]
    fn catch_up_from_the_base_seq_skips_every_put_made_of_its_batch() {
        let (_dir, leader_dir, follower_dir) = dirs();
        let mut leader = crate::wal::tests::open(&leader_dir);
        let mut follower = crate::wal::tests::open(&follower_dir);
        crate::wal::tests::write_mix(&mut leader, 30);
        // The last write before the compaction: a batch of three live keys,
        // which the compacted log holds as three PUTs at the base seq.
        let base = crate::wal::tests::batch(
            &mut leader,
            &[
                (Op::Put, b"x", b"1"),
                (Op::Put, b"y", b""),
                (Op::Put, b"z", b"\n"),
            ],
        );
        leader.wal.commit(&mut leader.store).expect("commit");
        let mut feed = Feed::new(&leader.wal, catch_up(0, 0)).expect("feed");
        deliver(&mut feed, &leader.wal, &mut follower);
        assert_eq!(follower.wal.last_seq(), base);
        let compaction = leader.wal.start_compaction(Box::new(|| {})).expect("start");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let done = loop {
            if let Some(done) = compaction.poll() {
                break done.expect("compaction");
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        leader.wal.finish_compaction(done).expect("finish");
        assert_eq!(leader.wal.header().base_seq, base);
        crate::wal::tests::batch(
            &mut leader,
            &[(Op::Put, b"after", b""), (Op::Delete, b"x", b"")],
        );
        leader.wal.commit(&mut leader.store).expect("commit");
        // A new feed from the follower's seq, on the compacted file.
        let mut feed = Feed::new(&leader.wal, catch_up(base, 0)).expect("feed");
        deliver(&mut feed, &leader.wal, &mut follower);
        assert_eq!(follower.wal.last_seq(), base + 1);
        assert_eq!(follower.store.digest(), leader.store.digest());
    }

    #[test]
    fn snapshot_sends_the_file_then_end_then_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leader.log");
        let mut o = Wal::open(&path, FsyncPolicy::Always).expect("open");
        let mut store = Store::new();
        o.wal.append(&mut store, Op::Put, b"a", b"1").expect("put");
        o.wal.commit(&mut store).expect("commit");
        let mut feed = Feed::new(&o.wal, Plan::Snapshot { common: None }).expect("feed");
        o.wal.append(&mut store, Op::Put, b"b", b"2").expect("put");
        o.wal.commit(&mut store).expect("commit");
        let mut out = Vec::new();
        feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
        let got = frames(&out);
        let file = std::fs::read(&path).expect("read");
        let Frame::Chunk(chunk) = got[0] else {
            panic!("chunk first: {got:?}")
        };
        assert_eq!(chunk, &file[..chunk.len()]);
        assert_eq!(got[1], Frame::End { seq: 1 });
        assert_eq!(record_seqs(&got[2..]), vec![2]);
    }

    #[test]
    fn a_feed_follows_the_log_through_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Wal::open(&dir.path().join("leader.log"), FsyncPolicy::Always).expect("open");
        let mut store = Store::new();
        for i in 0..100 {
            o.wal
                .append(&mut store, Op::Put, b"same", format!("v{i}").as_bytes())
                .expect("put");
        }
        o.wal.commit(&mut store).expect("commit");
        let mut feed = Feed::new(&o.wal, catch_up(100, 0)).expect("feed");
        let compaction = o.wal.start_compaction(Box::new(|| {})).expect("start");
        o.wal.append(&mut store, Op::Put, b"x", b"1").expect("put");
        o.wal.commit(&mut store).expect("commit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let done = loop {
            if let Some(done) = compaction.poll() {
                break done.expect("compaction");
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        assert!(!feed.behind_file(&o.wal));
        o.wal.finish_compaction(done).expect("finish");
        assert!(feed.behind_file(&o.wal), "on the replaced file");
        o.wal.append(&mut store, Op::Put, b"y", b"2").expect("put");
        o.wal.commit(&mut store).expect("commit");
        let mut out = Vec::new();
        feed.pump(&o.wal, &mut out, 1 << 20).expect("pump");
        assert_eq!(record_seqs(&frames(&out)), vec![101, 102]);
        assert!(!feed.behind_file(&o.wal), "moved over");
    }
}
