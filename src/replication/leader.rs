//! The leader's book of its followers, and the rules it keeps with them:
//! who is admitted, what an acknowledgement may claim, which followers the
//! output rule waits for, the point up to which held writes may be
//! answered, and when a silent or stalled follower is dropped.
//!
//! [`Leader`] is a plain value. The event loop tells it what happened (a
//! follower proved the secret, its `SYNC` was planned, an `ACK` came, a
//! connection closed, a second passed) and does what the answers say:
//! send a `WAIT` or a heartbeat, close a connection. Each follower's
//! [`Feed`](super::feed::Feed), which reads the log file, is kept beside
//! it by the loop.
//!
//! The read lease (with `--sync-followers N`): a leader answers reads only
//! while N followers confirmed, within the last [`LEASE`], that they still
//! follow it. It probes them every [`PROBE_INTERVAL`](super::PROBE_INTERVAL)
//! (`PROBE`, answered `CONFIRM`). A node that changes leader helps no new
//! leader for [`LEASE`] afterwards, so no write a new leader acknowledges
//! can be missing from a read this leader answers under its lease. The
//! lease runs from when the probe was *sent* and counts a tenth less, for
//! clocks that run at slightly different rates.
//!
//! The output rule (`--sync-followers N`): N followers are *awaited*.
//! They are told so (in their `PLAN`, later by `WAIT`) and fsync every
//! batch; a write is answered once N followers acknowledged it. The others
//! defer their fsyncs, which leaves the disk to the ones that count. When
//! an awaited follower goes, the most advanced of the others takes its
//! place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::cell::Cell;
use std::collections::VecDeque;

use super::handshake::Refusal;
use super::{SyncPolicy, LEASE};

/// One follower past the handshake.
#[derive(Debug, Clone)]
pub struct Follower {
    /// The connection it is on (the loop's key).
    pub key: usize,
    pub addr: SocketAddr,
    /// The port it listens on for clients, if it said (`SYNC`).
    pub port: Option<u16>,
    /// Last seq it acknowledged as durable.
    pub acked: u64,
    /// It accepted its plan (sent its first `ACK`): counted as connected.
    pub accepted: bool,
    /// Client writes wait for its acks.
    pub awaited: bool,
    /// What it was last told about `awaited`; `None` before its plan.
    told_awaited: Option<bool>,
    /// Its `SYNC` was planned and its feed runs.
    planned: bool,
    /// The highest seq sent to it: what it may acknowledge at most.
    sent_seq: u64,
    /// Its feed still reads a log file a compaction replaced.
    pub behind_file: bool,
    /// When it was last heard from.
    last_heard: Instant,
    /// Bytes the socket had taken at the last tick, and since when that
    /// has not moved while output was waiting.
    stall_mark: (u64, Instant),
    /// The highest probe round it confirmed.
    confirmed: u64,
}

impl Follower {
    /// The port clients reach it on: the one it said it listens on, else
    /// the port it connected from.
    pub fn listen_port(&self) -> u16 {
        self.port.unwrap_or(self.addr.port())
    }
}

/// A follower's frame the leader cannot take: a protocol error, and the
/// follower is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// A frame out of place (`SYNC` twice, `ACK` before a plan, ...).
    Unexpected(&'static str),
    /// An acknowledgement of writes never sent to it.
    AckAboveSent { seq: u64, sent: u64 },
    /// A confirmation of a probe never sent.
    ConfirmAhead { round: u64, sent: u64 },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Unexpected(what) => write!(f, "unexpected frame from a follower: {what}"),
            StreamError::AckAboveSent { seq, sent } => write!(
                f,
                "the follower acknowledges seq {seq}, but only seq {sent} was sent to it"
            ),
            StreamError::ConfirmAhead { round, sent } => write!(
                f,
                "the follower confirms probe {round}, but only {sent} were sent"
            ),
        }
    }
}

/// What the loop does for a follower at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Send a heartbeat.
    Heartbeat,
    /// Nothing heard for [`LINK_TIMEOUT`](super::LINK_TIMEOUT): drop it.
    Silent,
    /// Its output has not moved for the timeout: it stopped reading.
    Stalled,
}

/// A follower connection's output, as the loop sees it at a tick.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Bytes waiting to be written.
    pub pending: bool,
    /// Bytes the socket ever took.
    pub written_total: u64,
}

/// The leader's followers, by id.
#[derive(Debug, Default)]
pub struct Leader {
    followers: BTreeMap<u32, Follower>,
    lease: Lease,
    /// Bumped by every change the lease depends on.
    changes: u64,
    /// [`Leader::lease_until`] as of `changes` and N: every read asks.
    lease_memo: Cell<Option<(u64, usize, Option<Instant>)>>,
}

/// The probes a leader sent for its read lease, and when.
#[derive(Debug, Default)]
pub struct Lease {
    /// The last round sent.
    round: u64,
    /// Rounds sent within the last [`LEASE`], oldest first.
    sent: VecDeque<(u64, Instant)>,
}

/// What admitting a follower replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The connection the same id had before (a reconnect): close it.
    pub replaced: Option<(usize, SocketAddr)>,
}

/// The rules admission applies after the follower's proof.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub is_leader: bool,
    pub own_id: u32,
    pub max_followers: usize,
}

impl Leader {
    /// A follower proved the secret: admit it unless this node is no
    /// leader, is full, or the id is its own. A follower reconnecting
    /// under the same id replaces its old connection.
    ///
    /// # Errors
    /// The [`Refusal`] to send.
    pub fn admit(
        &mut self,
        id: u32,
        key: usize,
        addr: SocketAddr,
        rules: Admission,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        self.changes += 1;
        if !rules.is_leader {
            return Err(Refusal::NotLeader);
        }
        let others = self.followers.keys().filter(|&&other| other != id).count();
        if others >= rules.max_followers {
            return Err(Refusal::Full);
        }
        if id == rules.own_id {
            return Err(Refusal::DuplicateId(id));
        }
        let replaced = self.followers.insert(
            id,
            Follower {
                key,
                addr,
                port: None,
                acked: 0,
                accepted: false,
                awaited: false,
                told_awaited: None,
                planned: false,
                sent_seq: 0,
                behind_file: false,
                last_heard: now,
                stall_mark: (0, now),
                confirmed: 0,
            },
        );
        Ok(Admitted {
            replaced: replaced.map(|old| (old.key, old.addr)),
        })
    }

    /// The follower `id` on connection `key`, if that connection is still
    /// its current one.
    pub fn get(&self, id: u32, key: usize) -> Option<&Follower> {
        self.followers.get(&id).filter(|f| f.key == key)
    }

    fn get_mut(&mut self, id: u32, key: usize) -> Option<&mut Follower> {
        self.followers.get_mut(&id).filter(|f| f.key == key)
    }

    /// Any frame from the follower: it is alive.
    pub fn heard(&mut self, id: u32, key: usize, now: Instant) {
        if let Some(f) = self.get_mut(id, key) {
            f.last_heard = now;
        }
    }

    /// Whether the follower may send `SYNC` now (once, first).
    ///
    /// # Errors
    /// A second `SYNC`.
    pub fn may_plan(&self, id: u32, key: usize) -> Result<(), StreamError> {
        match self.get(id, key) {
            Some(f) if !f.planned => Ok(()),
            _ => Err(StreamError::Unexpected("SYNC after the plan")),
        }
    }

    /// The port follower `id` serves clients on, from its `SYNC`.
    pub fn set_port(&mut self, id: u32, port: Option<u16>) {
        if let Some(f) = self.followers.get_mut(&id) {
            f.port = port;
        }
    }

    /// The follower's `SYNC` was answered with a plan whose feed starts
    /// at `sent_seq`. Returns whether its writes are awaited: yes while
    /// fewer than the policy's N are.
    pub fn planned(&mut self, id: u32, key: usize, sent_seq: u64, policy: SyncPolicy) -> bool {
        self.changes += 1;
        let awaited = self.awaited_count() < policy.followers;
        if let Some(f) = self.get_mut(id, key) {
            f.planned = true;
            f.sent_seq = sent_seq;
            f.awaited = awaited;
            f.told_awaited = Some(awaited);
        }
        awaited
    }

    /// The follower's feed sent up to `sent_seq`, and does or does not
    /// still read a replaced log file.
    pub fn fed(&mut self, id: u32, key: usize, sent_seq: u64, behind_file: bool) {
        if let Some(f) = self.get_mut(id, key) {
            f.sent_seq = f.sent_seq.max(sent_seq);
            f.behind_file = behind_file;
        }
    }

    /// An `ACK` of `seq`. Returns whether it is the follower's first: it
    /// accepted the plan and now counts as connected.
    ///
    /// # Errors
    /// An ack before the plan, or above what was sent.
    pub fn on_ack(&mut self, id: u32, key: usize, seq: u64) -> Result<bool, StreamError> {
        self.changes += 1;
        let f = self
            .get_mut(id, key)
            .filter(|f| f.planned)
            .ok_or(StreamError::Unexpected("ACK before the plan"))?;
        if seq > f.sent_seq {
            return Err(StreamError::AckAboveSent {
                seq,
                sent: f.sent_seq,
            });
        }
        let first = !f.accepted;
        f.accepted = true;
        f.acked = seq;
        Ok(first)
    }

    /// A new probe round, sent now to every follower: its number.
    pub fn probe(&mut self, now: Instant) -> u64 {
        self.changes += 1;
        let lease = &mut self.lease;
        lease.round += 1;
        lease.sent.push_back((lease.round, now));
        while lease
            .sent
            .front()
            .is_some_and(|&(_, at)| now.saturating_duration_since(at) > LEASE)
        {
            lease.sent.pop_front();
        }
        lease.round
    }

    /// The follower confirmed probe `round`.
    ///
    /// # Errors
    /// A round never sent.
    pub fn on_confirm(&mut self, id: u32, key: usize, round: u64) -> Result<(), StreamError> {
        let sent = self.lease.round;
        if round > sent {
            return Err(StreamError::ConfirmAhead { round, sent });
        }
        if let Some(f) = self.get_mut(id, key) {
            f.confirmed = f.confirmed.max(round);
        }
        self.changes += 1;
        Ok(())
    }

    /// Until when this leader may answer reads on the strength of its
    /// followers' confirmations: the N-th newest round confirmed by a
    /// connected follower, from when it was sent, plus nine tenths of
    /// [`LEASE`]. `None` when fewer than N confirmed a round still in the
    /// lease; with N = 0 reads need no lease, and this is never asked.
    pub fn lease_until(&self, policy: SyncPolicy) -> Option<Instant> {
        let n = policy.followers;
        if let Some((changes, memo_n, until)) = self.lease_memo.get() {
            if changes == self.changes && memo_n == n {
                return until;
            }
        }
        let until = self.compute_lease_until(n);
        self.lease_memo.set(Some((self.changes, n, until)));
        until
    }

    fn compute_lease_until(&self, n: usize) -> Option<Instant> {
        let mut rounds: Vec<u64> = self
            .followers
            .values()
            .filter(|f| f.accepted)
            .map(|f| f.confirmed)
            .collect();
        if n == 0 || rounds.len() < n {
            return None;
        }
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let round = rounds[n - 1];
        let (_, sent) = self.lease.sent.iter().find(|&&(r, _)| r == round)?;
        Some(*sent + LEASE * 9 / 10)
    }

    /// The follower's connection closed. Returns whether it was the
    /// follower's current one; an awaited follower's role passes on.
    pub fn remove(&mut self, id: u32, key: usize, policy: SyncPolicy) -> bool {
        self.changes += 1;
        if self.get(id, key).is_none() {
            return false;
        }
        if self.followers.remove(&id).is_some_and(|f| f.awaited) {
            self.assign_awaited(policy);
        }
        true
    }

    /// Forgets every follower (this node stops being a leader); their
    /// connections, to close.
    pub fn clear(&mut self) -> Vec<usize> {
        self.changes += 1;
        std::mem::take(&mut self.followers)
            .into_values()
            .map(|f| f.key)
            .collect()
    }

    /// A change of the follower's `awaited` it was not told yet: send a
    /// `WAIT` with it. Returns the new value once.
    pub fn wait_news(&mut self, id: u32, key: usize) -> Option<bool> {
        let f = self.get_mut(id, key)?;
        let told = f.told_awaited?;
        (told != f.awaited).then(|| {
            f.told_awaited = Some(f.awaited);
            f.awaited
        })
    }

    /// Followers whose writes are awaited.
    pub fn awaited_count(&self) -> usize {
        self.followers.values().filter(|f| f.awaited).count()
    }

    /// Fills the policy's N awaited places from the connected followers
    /// not awaited, most advanced first.
    fn assign_awaited(&mut self, policy: SyncPolicy) {
        while self.awaited_count() < policy.followers {
            let next = self
                .followers
                .values_mut()
                .filter(|f| f.accepted && !f.awaited)
                .max_by_key(|f| f.acked);
            match next {
                Some(f) => f.awaited = true,
                None => break,
            }
        }
    }

    /// The seq through which held writes may be answered: `local`, the
    /// leader's own durable point, and under `--sync-followers N` the N-th
    /// highest acknowledgement of a connected follower (0 with fewer than
    /// N connected).
    pub fn release_point(&self, local: u64, policy: SyncPolicy) -> u64 {
        let n = policy.followers;
        if n == 0 {
            return local;
        }
        let mut acks: Vec<u64> = self
            .followers
            .values()
            .filter(|f| f.accepted)
            .map(|f| f.acked)
            .collect();
        if acks.len() < n {
            return 0;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        local.min(acks[n - 1])
    }

    /// Once a second, for the follower on `key`: a heartbeat, or drop it
    /// if it went silent or stopped reading for `timeout`.
    pub fn tick(
        &mut self,
        id: u32,
        key: usize,
        output: Output,
        now: Instant,
        timeout: Duration,
    ) -> Tick {
        let Some(f) = self.get_mut(id, key) else {
            return Tick::Silent;
        };
        if now.duration_since(f.last_heard) > timeout {
            return Tick::Silent;
        }
        let (mark, since) = f.stall_mark;
        if output.pending && output.written_total == mark {
            if now.duration_since(since) > timeout {
                return Tick::Stalled;
            }
        } else {
            f.stall_mark = (output.written_total, now);
        }
        Tick::Heartbeat
    }

    /// A follower whose feed reads the file the last compaction replaced:
    /// a second compaction now would overtake it.
    pub fn behind_file(&self) -> Option<u32> {
        self.followers
            .iter()
            .find(|(_, f)| f.behind_file)
            .map(|(&id, _)| id)
    }

    /// Followers that accepted their plan, by id.
    pub fn connected(&self) -> impl Iterator<Item = (u32, &Follower)> {
        self.followers
            .iter()
            .filter(|(_, f)| f.accepted)
            .map(|(&id, f)| (id, f))
    }

    /// Every follower's connection and id.
    pub fn conns(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.followers.iter().map(|(&id, f)| (f.key, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Admission = Admission {
        is_leader: true,
        own_id: 1,
        max_followers: 3,
    };

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().expect("addr")
    }

    fn policy(followers: usize) -> SyncPolicy {
        SyncPolicy {
            followers,
            timeout_ms: 5000,
        }
    }

    /// A leader with followers `ids` (on connection keys equal to their
    /// ids), planned under `policy`, each having acked `acks[i]`.
    fn leader_with(ids: &[u32], acks: &[u64], policy: SyncPolicy) -> Leader {
        let now = Instant::now();
        let mut leader = Leader::default();
        for (&id, &ack) in ids.iter().zip(acks) {
            leader
                .admit(id, id as usize, addr(), RULES, now)
                .expect("admit");
            leader.planned(id, id as usize, 1000, policy);
            leader.on_ack(id, id as usize, ack).expect("ack");
        }
        leader
    }

    #[test]
    fn admission_refuses_a_non_leader_a_full_leader_and_its_own_id() {
        let now = Instant::now();
        let mut leader = Leader::default();
        let not_leader = Admission {
            is_leader: false,
            ..RULES
        };
        assert_eq!(
            leader.admit(2, 2, addr(), not_leader, now),
            Err(Refusal::NotLeader)
        );
        assert_eq!(
            leader.admit(1, 1, addr(), RULES, now),
            Err(Refusal::DuplicateId(1))
        );
        for id in 2..5 {
            assert!(leader.admit(id, id as usize, addr(), RULES, now).is_ok());
        }
        assert_eq!(leader.admit(5, 5, addr(), RULES, now), Err(Refusal::Full));
        // A follower reconnecting takes its own place, even when full.
        assert_eq!(
            leader.admit(3, 30, addr(), RULES, now),
            Ok(Admitted {
                replaced: Some((3, addr()))
            })
        );
        // The old connection's close changes nothing.
        assert!(!leader.remove(3, 3, policy(0)));
        assert!(leader.get(3, 30).is_some());
    }

    #[test]
    fn the_output_rule_waits_for_the_nth_highest_ack_of_n_awaited() {
        // Two of three followers awaited; acks 90, 70, 80.
        let leader = leader_with(&[2, 3, 4], &[90, 70, 80], policy(2));
        assert_eq!(leader.awaited_count(), 2);
        assert_eq!(leader.release_point(100, policy(2)), 80);
        assert_eq!(leader.release_point(75, policy(2)), 75, "never past local");
        assert_eq!(leader.release_point(100, policy(1)), 90);
        assert_eq!(leader.release_point(100, policy(3)), 70);
        assert_eq!(leader.release_point(100, policy(0)), 100);
        // Fewer connected followers than N: nothing is released.
        assert_eq!(leader.release_point(100, policy(4)), 0);
    }

    #[test]
    fn a_follower_not_yet_accepted_does_not_count_for_the_output_rule() {
        let now = Instant::now();
        let mut leader = leader_with(&[2], &[50], policy(2));
        leader.admit(3, 3, addr(), RULES, now).expect("admit");
        assert!(
            leader.planned(3, 3, 100, policy(2)),
            "awaited from its plan"
        );
        assert_eq!(leader.release_point(100, policy(2)), 0);
        leader.on_ack(3, 3, 0).expect("first ack");
        assert_eq!(leader.release_point(100, policy(2)), 0);
        leader.on_ack(3, 3, 60).expect("ack");
        assert_eq!(leader.release_point(100, policy(2)), 50);
    }

    #[test]
    fn the_awaited_role_passes_to_the_most_advanced_other_follower() {
        // N = 1: follower 2, planned first, is awaited.
        let mut leader = leader_with(&[2, 3, 4], &[10, 40, 30], policy(1));
        let awaited: Vec<u32> = leader
            .connected()
            .filter(|(_, f)| f.awaited)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(awaited, [2]);
        assert_eq!(leader.wait_news(3, 3), None, "told in its plan");
        assert!(leader.remove(2, 2, policy(1)));
        // Follower 3 acked the most: it is awaited now, and told once.
        assert!(leader.get(3, 3).expect("3").awaited);
        assert!(!leader.get(4, 4).expect("4").awaited);
        assert_eq!(leader.wait_news(3, 3), Some(true));
        assert_eq!(leader.wait_news(3, 3), None);
        assert_eq!(leader.wait_news(4, 4), None);
        assert_eq!(leader.release_point(100, policy(1)), 40);
    }

    #[test]
    fn acks_above_what_was_sent_or_before_the_plan_are_protocol_errors() {
        let now = Instant::now();
        let mut leader = Leader::default();
        leader.admit(2, 2, addr(), RULES, now).expect("admit");
        assert_eq!(
            leader.on_ack(2, 2, 0),
            Err(StreamError::Unexpected("ACK before the plan"))
        );
        assert_eq!(leader.may_plan(2, 2), Ok(()));
        leader.planned(2, 2, 10, policy(0));
        assert!(leader.may_plan(2, 2).is_err(), "one SYNC only");
        assert_eq!(leader.on_ack(2, 2, 10), Ok(true));
        assert_eq!(leader.on_ack(2, 2, 10), Ok(false));
        assert_eq!(
            leader.on_ack(2, 2, 11),
            Err(StreamError::AckAboveSent { seq: 11, sent: 10 })
        );
        leader.fed(2, 2, 20, false);
        assert_eq!(leader.on_ack(2, 2, 20), Ok(false));
    }

    #[test]
    fn the_read_lease_runs_from_the_nth_newest_confirmed_probe() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut leader = leader_with(&[2, 3], &[0, 0], policy(2));
        assert_eq!(leader.lease_until(policy(1)), None, "nothing confirmed");
        let r1 = leader.probe(at(0));
        let r2 = leader.probe(at(200));
        leader.on_confirm(2, 2, r2).expect("confirm");
        leader.on_confirm(3, 3, r1).expect("confirm");
        let trusted = LEASE * 9 / 10;
        assert_eq!(leader.lease_until(policy(1)), Some(at(200) + trusted));
        assert_eq!(leader.lease_until(policy(2)), Some(at(0) + trusted));
        assert_eq!(leader.lease_until(policy(3)), None, "only two follow");
        // An older confirmation does not take the lease back.
        leader.on_confirm(2, 2, r1).expect("confirm");
        assert_eq!(leader.lease_until(policy(1)), Some(at(200) + trusted));
        // A round older than the lease is forgotten: no lease from it.
        leader.probe(at(1500));
        assert_eq!(leader.lease_until(policy(2)), None);
        // A round never sent is a protocol error.
        assert_eq!(
            leader.on_confirm(2, 2, 99),
            Err(StreamError::ConfirmAhead { round: 99, sent: 3 })
        );
        // A follower that goes takes its confirmations with it.
        assert!(leader.remove(2, 2, policy(2)));
        assert_eq!(leader.lease_until(policy(1)), None);
    }

    #[test]
    fn silent_or_stalled_followers_are_dropped_after_the_timeout() {
        let start = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut leader = leader_with(&[2], &[0], policy(0));
        let idle = Output {
            pending: false,
            written_total: 0,
        };
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(leader.tick(2, 2, idle, at(1), timeout), Tick::Heartbeat);
        assert_eq!(leader.tick(2, 2, idle, at(6), timeout), Tick::Silent);
        leader.heard(2, 2, at(6));
        // Output waiting and not moving: stalled after the timeout.
        let stuck = Output {
            pending: true,
            written_total: 100,
        };
        assert_eq!(leader.tick(2, 2, stuck, at(7), timeout), Tick::Heartbeat);
        leader.heard(2, 2, at(12));
        assert_eq!(leader.tick(2, 2, stuck, at(12), timeout), Tick::Heartbeat);
        leader.heard(2, 2, at(13));
        assert_eq!(leader.tick(2, 2, stuck, at(13), timeout), Tick::Stalled);
        // Moving output is not a stall.
        let moving = Output {
            pending: true,
            written_total: 200,
        };
        assert_eq!(leader.tick(2, 2, moving, at(13), timeout), Tick::Heartbeat);
    }
}
