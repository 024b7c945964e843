//! Replication: followers dial the leader, prove the shared secret, and
//! receive either the writes they missed or a snapshot, then the live
//! stream; they acknowledge what they made durable.
//!
//! - [`auth`]: the HMAC challenge-response of the handshake (pure).
//! - [`session`]: the MAC'd records every byte travels in after the
//!   handshake, for followers and admin connections alike (pure).
//! - [`wire`]: the binary frames after `HELLO LEADER` (pure).
//! - [`leader`]: the leader's cursor into its own log for each follower.
//! - [`follower`]: the follower's link state, its acceptance rule, backoff,
//!   and the snapshot builder.
//!
//! This module never owns a socket: the event loop in `server` does the IO
//! and calls in with bytes.

pub mod auth;
pub mod follower;
pub mod leader;
pub mod session;
pub mod wire;

use std::time::Duration;

/// How often each side sends a heartbeat (`HEARTBEAT` / `ACK`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Silence after which a link is declared dead.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(5);

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

/// How far above the highest epoch a node knows a peer's epoch may be.
/// Each promotion adds one, so a real cluster never comes near; a claim
/// past it (2^62, `u64::MAX`) is a protocol error, never learned: learned,
/// it would fence the real leader for good, and at `u64::MAX` no node
/// could ever be promoted again.
pub const MAX_EPOCH_LEAP: u64 = 1 << 16;

/// Whether `epoch`, claimed by a peer, is within [`MAX_EPOCH_LEAP`] of
/// `known`, the highest epoch this node knows.
pub fn plausible_epoch(epoch: u64, known: u64) -> bool {
    epoch <= known.saturating_add(MAX_EPOCH_LEAP)
}

/// Output buffered for one follower before the leader stops reading the
/// log for it (the feed resumes as the socket drains).
pub const FOLLOWER_BUF_LOW: usize = 1 << 20;
