//! Which writes a read on the leader must not show yet, per key.
//!
//! With `--sync-followers N` a write is acknowledged only once it passed
//! the output rule (durable here and on N followers). A read must not show
//! it before then either: the leader could die, a follower without the
//! write could be promoted, and a later read would return the older value,
//! so a client would have seen a value the cluster then forgot.
//!
//! [`Unreleased`] keeps, for each key written and not yet released, the seq
//! of its newest write. A `GET` of a key with none answers at once; a `GET`
//! of a key with one waits for that seq, and only that seq: reads of other
//! keys are not held up by it.
//!
//! A node that becomes the leader (at start, or promoted) does not know
//! which of the writes already in its log passed the rule under the last
//! leader: its whole log is unreleased until N followers hold it
//! ([`Unreleased::hold_all_through`]). Pure: no clock, no IO.

use std::collections::{HashMap, VecDeque};

/// Whose reads a client connection gets, decided when it says
/// `HELLO CLIENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Opened to a writable leader: the leader's reads, and none from this
    /// node once it no longer leads.
    Leader,
    /// Opened to a follower (or a leader that takes no writes): the node's
    /// own copy, which may lag.
    Local,
}

impl ReadMode {
    /// The mode of a connection opened now.
    pub fn at_hello(writable_leader: bool) -> ReadMode {
        if writable_leader {
            ReadMode::Leader
        } else {
            ReadMode::Local
        }
    }

    /// Whether a read of stored data on such a connection is answered by
    /// this node, or sent to the leader (`NOT_LEADER`): a connection that
    /// read from the leader must not be handed a copy that may lag writes
    /// a new leader acknowledged.
    pub fn serves(self, writable_leader: bool) -> bool {
        writable_leader || self == ReadMode::Local
    }
}

/// The newest unreleased write of each key, and the order to forget them
/// in as the release point advances.
#[derive(Debug, Default)]
pub struct Unreleased {
    /// Every key waits for this seq, until it is released.
    floor: u64,
    newest: HashMap<Box<[u8]>, u64>,
    /// Every noted write, oldest first.
    order: VecDeque<(u64, Box<[u8]>)>,
}

impl Unreleased {
    /// Write `seq` (a `PUT` or a `DELETE`) changed `key`.
    pub fn note(&mut self, key: &[u8], seq: u64) {
        let key: Box<[u8]> = key.into();
        self.newest.insert(key.clone(), seq);
        self.order.push_back((seq, key));
    }

    /// Every write through `seq` is unreleased, whatever its key: the log
    /// this node leads from was written before it knew who holds what.
    pub fn hold_all_through(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
    }

    /// The newest write of `key` not yet released, if any.
    pub fn seq_of(&self, key: &[u8]) -> Option<u64> {
        if self.newest.is_empty() && self.floor == 0 {
            // The common case of a read-mostly load: nothing to hash.
            return None;
        }
        let own = self.newest.get(key).copied();
        let floor = (self.floor > 0).then_some(self.floor);
        own.max(floor)
    }

    /// Writes through `seq` passed the output rule: forget them.
    pub fn release_through(&mut self, seq: u64) {
        if self.floor <= seq {
            self.floor = 0;
        }
        while self.order.front().is_some_and(|(s, _)| *s <= seq) {
            let Some((s, key)) = self.order.pop_front() else {
                break;
            };
            // A later write of the same key keeps its entry.
            if self.newest.get(&key) == Some(&s) {
                self.newest.remove(&key);
            }
        }
        if self.order.is_empty() && self.order.capacity() > 4096 {
            self.order = VecDeque::new();
            self.newest = HashMap::new();
        }
    }

    /// Forgets everything (this node stops being the leader, or its log
    /// failed).
    pub fn clear(&mut self) {
        self.floor = 0;
        self.newest.clear();
        self.order.clear();
    }

    /// Whether every noted write was released.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && self.floor == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_s_clients_are_sent_away_once_it_no_longer_leads() {
        let leader_conn = ReadMode::at_hello(true);
        assert_eq!(leader_conn, ReadMode::Leader);
        assert!(leader_conn.serves(true));
        assert!(!leader_conn.serves(false), "fenced, re-pointed or deposed");
        let follower_conn = ReadMode::at_hello(false);
        assert!(follower_conn.serves(false));
        assert!(
            follower_conn.serves(true),
            "promoted: its reads are the leader's"
        );
    }

    #[test]
    fn a_key_waits_for_its_newest_write_only() {
        let mut u = Unreleased::default();
        u.note(b"a", 5);
        u.note(b"b", 6);
        u.note(b"a", 7);
        assert_eq!(u.seq_of(b"a"), Some(7));
        assert_eq!(u.seq_of(b"b"), Some(6));
        assert_eq!(u.seq_of(b"c"), None);
        u.release_through(6);
        assert_eq!(u.seq_of(b"a"), Some(7), "its own write 5 went, 7 stays");
        assert_eq!(u.seq_of(b"b"), None);
        assert_eq!(u.order.len(), 1);
        u.release_through(7);
        assert_eq!(u.seq_of(b"a"), None);
        assert!(u.is_empty());
    }

    #[test]
    fn a_new_leader_holds_its_whole_log_until_followers_hold_it() {
        let mut u = Unreleased::default();
        u.hold_all_through(40);
        assert_eq!(u.seq_of(b"any"), Some(40));
        u.note(b"k", 41);
        assert_eq!(u.seq_of(b"k"), Some(41));
        u.release_through(39);
        assert_eq!(u.seq_of(b"any"), Some(40));
        u.release_through(40);
        assert_eq!(u.seq_of(b"any"), None);
        assert_eq!(u.seq_of(b"k"), Some(41));
        assert!(!u.is_empty());
        u.release_through(41);
        assert!(u.is_empty());
    }

    #[test]
    fn releasing_nothing_or_everything_at_once() {
        let mut u = Unreleased::default();
        u.release_through(100);
        assert!(u.is_empty());
        for seq in 1..=10_000u64 {
            u.note(format!("k{}", seq % 10).as_bytes(), seq);
        }
        u.release_through(9_995);
        assert_eq!(u.seq_of(b"k5"), None);
        assert_eq!(u.seq_of(b"k6"), Some(9_996));
        u.release_through(u64::MAX);
        assert!(u.is_empty());
        u.note(b"x", 3);
        u.clear();
        assert_eq!(u.seq_of(b"x"), None);
    }
}
