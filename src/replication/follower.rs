//! The follower's side: the state of its link to the leader, the rule that
//! decides whether to accept a leader at all, reconnect backoff, and the
//! builder that turns a streamed snapshot into a new log and store.
//!
//! Nothing here owns a socket; the event loop feeds bytes in and sends what
//! it is told.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tempfile::NamedTempFile;

use crate::store::Store;
use crate::wal::record::{Decoded, Header, HistoryId, Op, Record, HEADER_LEN};
use crate::wal::{compact, SeqCheck, WalError};

/// Where the link to the leader stands.
pub enum LinkState {
    /// Non-blocking connect in progress.
    Connecting,
    /// Sent `HELLO FOLLOWER|<id>:<fnonce>`; expecting `CHALLENGE`.
    AwaitChallenge { fnonce: String },
    /// Sent `AUTH`; expecting `HELLO LEADER`.
    AwaitWelcome,
    /// Sent `SYNC`; expecting `PLAN`.
    AwaitPlan,
    /// Receiving a snapshot.
    Snapshot(Box<SnapshotBuilder>),
    /// Receiving live records.
    Streaming,
}

impl LinkState {
    /// Whether bytes on the link are frames rather than lines.
    pub fn is_framed(&self) -> bool {
        matches!(
            self,
            LinkState::AwaitPlan | LinkState::Snapshot(_) | LinkState::Streaming
        )
    }
}

/// Why a follower turns a leader down (SPEC §3: never throw away data the
/// leader does not have).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The leader's history is not this follower's.
    UnrelatedHistory { mine: HistoryId, leader: HistoryId },
    /// Same history, but the leader has fewer writes than this follower.
    LeaderBehind { mine: u64, leader: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnrelatedHistory { mine, leader } => write!(
                f,
                "the leader's history {} is unrelated to this follower's history {} (was the leader \
                 restarted on an empty disk, or is it another cluster?)",
                hex::encode(leader),
                hex::encode(mine)
            ),
            Refusal::LeaderBehind { mine, leader } => write!(
                f,
                "the leader is at seq {leader}, behind this follower's seq {mine} in the same history \
                 (did the leader lose its log tail?)"
            ),
        }
    }
}

/// Accepts a leader unless following it would discard writes this follower
/// holds. An empty follower (seq 0) accepts any leader.
///
/// # Errors
/// The [`Refusal`] to log and show as `leader_link refused`.
pub fn check_leader(
    mine: HistoryId,
    my_seq: u64,
    leader: HistoryId,
    leader_seq: u64,
) -> Result<(), Refusal> {
    if my_seq == 0 {
        Ok(())
    } else if mine != leader {
        Err(Refusal::UnrelatedHistory { mine, leader })
    } else if leader_seq < my_seq {
        Err(Refusal::LeaderBehind {
            mine: my_seq,
            leader: leader_seq,
        })
    } else {
        Ok(())
    }
}

/// Capped exponential backoff for reconnecting.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// After a link that worked: start small again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Builds a new log and store from snapshot chunks: the bytes go to a temp
/// file beside the log (the old log stays untouched and served), and the
/// records are applied to a fresh store as they arrive, so installing the
/// snapshot at the end is a rename, not a replay.
pub struct SnapshotBuilder {
    temp: NamedTempFile,
    /// Bytes not yet decoded (a partial header or record).
    carry: Vec<u8>,
    header: Option<Header>,
    seqs: Option<SeqCheck>,
    store: Store,
    received: u64,
}

/// A complete snapshot, ready to install.
pub struct Snapshot {
    pub temp: NamedTempFile,
    pub header: Header,
    pub last_seq: u64,
    pub store: Store,
    pub bytes: u64,
}

impl SnapshotBuilder {
    /// Starts a snapshot in a temp file beside `log`.
    ///
    /// # Errors
    /// If the temp file cannot be created.
    pub fn new(log: &Path) -> Result<SnapshotBuilder, WalError> {
        Ok(SnapshotBuilder {
            temp: compact::temp_file_for(log)?,
            carry: Vec::new(),
            header: None,
            seqs: None,
            store: Store::new(),
            received: 0,
        })
    }

    /// Takes the next chunk of the leader's log file.
    ///
    /// # Errors
    /// A description of what is wrong with the bytes or the disk.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.temp
            .as_file_mut()
            .write_all(chunk)
            .map_err(|e| format!("writing snapshot: {e}"))?;
        self.received += chunk.len() as u64;
        self.carry.extend_from_slice(chunk);
        let mut off = 0;
        if self.header.is_none() {
            if self.carry.len() < HEADER_LEN {
                return Ok(());
            }
            let header =
                Header::decode(&self.carry).map_err(|e| format!("snapshot header: {e}"))?;
            self.seqs = Some(SeqCheck::new(header.base_seq));
            self.header = Some(header);
            off = HEADER_LEN;
        }
        let seqs = self.seqs.as_mut().ok_or("snapshot without header")?;
        loop {
            match Record::decode(&self.carry[off..]) {
                Ok(Decoded::Record(rec, used)) => {
                    seqs.accept(rec.seq)?;
                    match rec.op {
                        Op::Put => drop(self.store.put(rec.key, rec.value)),
                        Op::Delete => drop(self.store.delete(rec.key)),
                    }
                    off += used;
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => return Err(format!("snapshot record: {e}")),
            }
        }
        self.carry.drain(..off);
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks the snapshot ends at `seq` and fsyncs it.
    ///
    /// # Errors
    /// A snapshot that is incomplete, ends elsewhere, or cannot be synced.
    pub fn finish(self, seq: u64) -> Result<Snapshot, String> {
        let (Some(header), Some(seqs)) = (self.header, self.seqs) else {
            return Err("snapshot ended before its header".into());
        };
        if !self.carry.is_empty() {
            return Err(format!(
                "snapshot ends inside a record ({} bytes left)",
                self.carry.len()
            ));
        }
        if seqs.last() != seq {
            return Err(format!(
                "snapshot ends at seq {} but the leader said {seq}",
                seqs.last()
            ));
        }
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| format!("fsync snapshot: {e}"))?;
        Ok(Snapshot {
            temp: self.temp,
            header,
            last_seq: seq,
            store: self.store,
            bytes: self.received,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_follower_accepts_any_leader() {
        assert_eq!(check_leader([1; 16], 0, [2; 16], 0), Ok(()));
    }

    #[test]
    fn a_follower_with_data_refuses_unrelated_or_shorter_histories() {
        assert_eq!(check_leader([1; 16], 5, [1; 16], 5), Ok(()));
        assert_eq!(check_leader([1; 16], 5, [1; 16], 9), Ok(()));
        assert_eq!(
            check_leader([1; 16], 5, [2; 16], 100),
            Err(Refusal::UnrelatedHistory {
                mine: [1; 16],
                leader: [2; 16]
            })
        );
        assert_eq!(
            check_leader([1; 16], 5, [1; 16], 4),
            Err(Refusal::LeaderBehind { mine: 5, leader: 4 })
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }

    #[test]
    fn snapshot_builder_accepts_a_log_in_any_chunking() {
        let mut log = Vec::new();
        Header {
            history: [9; 16],
            base_seq: 0,
            epoch: 1,
        }
        .encode(&mut log);
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
        let dir = tempfile::tempdir().expect("tempdir");
        for chunk in [1, 7, 48, 1000] {
            let mut b = SnapshotBuilder::new(&dir.path().join("follower_2.log")).expect("builder");
            for piece in log.chunks(chunk) {
                b.feed(piece).expect("feed");
            }
            let snap = b.finish(21).expect("finish");
            assert_eq!(snap.store.len(), 6);
            assert_eq!(snap.header.history, [9; 16]);
            assert_eq!(std::fs::read(snap.temp.path()).expect("read"), log);
        }
        let mut b = SnapshotBuilder::new(&dir.path().join("follower_2.log")).expect("builder");
        b.feed(&log[..log.len() - 3]).expect("feed");
        assert!(b.finish(21).is_err());
        let mut b = SnapshotBuilder::new(&dir.path().join("follower_2.log")).expect("builder");
        b.feed(&log).expect("feed");
        assert!(b.finish(22).is_err());
    }
}
