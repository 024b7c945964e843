//! Replication: followers dial the leader, prove the shared secret, and
//! receive either the writes they missed or a snapshot, then the live
//! stream; they acknowledge what they made durable.
//!
//! The rules are plain values that take events and answer with what to
//! do, in the shape of raft-rs's `RawNode`/`Ready`; the event loop in
//! `server` owns the sockets, moves the bytes and carries out the answers.
//!
//! - [`handshake`]: both sides of the follower and admin handshakes (pure).
//! - [`leader`]: the leader's book of followers: admission, acks, the
//!   output rule, dropping silent followers (pure).
//! - [`follower`]: the follower's link as a state machine, the rule for
//!   accepting a leader's plan, backoff (pure).
//! - [`epoch`]: what news of a higher epoch does (pure).
//! - [`auth`]: the HMAC proofs of the handshakes (pure).
//! - [`session`]: the MAC'd records every byte travels in after the
//!   handshake (pure).
//! - [`wire`]: the binary frames after `HELLO LEADER` (pure).
//! - [`feed`]: the leader's cursor into its own log for one follower (reads
//!   the log file).

pub(crate) mod auth;
pub(crate) mod epoch;
pub(crate) mod feed;
pub(crate) mod follower;
pub mod handshake;
pub(crate) mod leader;
pub mod session;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use epoch::{plausible_epoch, MAX_EPOCH_LEAP};

use crate::wal::snapshot::Receiver;
use feed::Feed;
use follower::Link;
use leader::Leader;

/// How often each side sends a heartbeat (`HEARTBEAT` / `ACK`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Silence after which a link is declared dead.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a follower's `CONFIRM` vouches for its leader: for this long
/// after a node changes leader (`FOLLOW`, `PROMOTE`), it helps no new
/// leader, so the old one may keep answering reads on the strength of
/// its last confirmations (see [`leader::Lease`]).
pub const LEASE: Duration = Duration::from_millis(1000);

/// How often a leader whose reads need a lease probes its followers.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// A node's replication state: on a leader its followers and their feeds,
/// on a follower its link to the leader and the snapshot it receives.
pub struct Replication {
    pub leader: Leader,
    /// Each follower's feed, by the connection it is on.
    pub feeds: BTreeMap<usize, Pump>,
    pub link: Link,
    /// The snapshot the link is receiving, with its threads.
    pub receiver: Option<Box<Receiver>>,
    /// Connections the loop must close (replaced or failed peers).
    pub evict: Vec<usize>,
    /// Next heartbeat tick.
    pub next_tick: Option<Instant>,
    /// Next probe for the read lease, on a leader that needs one.
    pub next_probe: Option<Instant>,
    /// A read waits for the lease: probe at the end of this turn.
    pub probe_soon: bool,
    pub counters: Counters,
}

/// One follower's feed.
pub struct Pump {
    pub feed: Feed,
    /// It stopped at the output bound with more to send: pump again as
    /// soon as the output drains, not at the next event.
    pub behind: bool,
}

/// Replication events since the node started, for `INFO`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Snapshots a leader began sending.
    pub snapshots_sent: u64,
    /// Catch-ups a leader began sending.
    pub catchups_sent: u64,
    /// Snapshots a follower installed.
    pub snapshots_received: u64,
    /// Catch-up plans a follower accepted.
    pub catchups_received: u64,
    /// Times a follower cut its log back to where a leader's continues.
    pub rewinds: u64,
}

impl Counters {
    /// The `INFO` lines.
    pub fn info(&self, lines: &mut Vec<String>) {
        lines.push(format!("snapshots_sent {}", self.snapshots_sent));
        lines.push(format!("catchups_sent {}", self.catchups_sent));
        lines.push(format!("snapshots_received {}", self.snapshots_received));
        lines.push(format!("catchups_received {}", self.catchups_received));
        lines.push(format!("rewinds {}", self.rewinds));
    }
}

impl Replication {
    /// Nothing yet: the first tick is a heartbeat from now, and a follower
    /// dials at once.
    pub fn new(now: Instant) -> Replication {
        Replication {
            leader: Leader::default(),
            feeds: BTreeMap::new(),
            link: Link::new(Some(now)),
            receiver: None,
            evict: Vec::new(),
            next_tick: Some(now + HEARTBEAT_INTERVAL),
            next_probe: None,
            probe_soon: false,
            counters: Counters::default(),
        }
    }
}

/// The cluster's output rule (`--sync-followers`, `--sync-timeout-ms`).
/// A leader announces it in every `PLAN`; followers keep it in their state
/// file, and a promoted follower enforces it, so a failover never weakens
/// it unless an operator gives the flag explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Followers that must hold a write durably before it is answered.
    pub followers: usize,
    /// How long a write waits for them (0 = forever).
    pub timeout_ms: u64,
}

impl SyncPolicy {
    /// No flags, nothing learned: writes wait for no follower.
    pub const DEFAULT: SyncPolicy = SyncPolicy {
        followers: 0,
        timeout_ms: 5000,
    };
}

/// Output buffered for one follower before the leader stops reading the
/// log for it (the feed resumes as the socket drains).
pub const FOLLOWER_BUF_LOW: usize = 1 << 20;
