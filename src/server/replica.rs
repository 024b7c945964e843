//! Replication as the node runs it: the loop hands in handshake lines,
//! frames, commits and ticks for the connections that carry replication;
//! this file asks the state machines in [`crate::replication`] what they
//! mean, and carries out the answers on the connection, the log and the
//! store.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use log::{error, info, warn};

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use crate::config::Role;
use crate::protocol::Reply;
use crate::replication::epoch::EpochLeap;
use crate::replication::feed::{Feed, FeedError};
use crate::replication::follower::{
    check_claims, check_plan, BadClaim, HandshakeStep, Holding, LeaderError, LinkTick, Phase,
};
use crate::replication::handshake::{Challenged, Claimant, DialError, Refusal};
use crate::replication::leader::{Admission, Output, StreamError, Tick};
use crate::replication::wire::{self, Frame, Mode, WireError};
use crate::replication::{Pump, SyncPolicy, FOLLOWER_BUF_LOW, LINK_TIMEOUT};
use crate::wal::lineage::{self, Lineage, LineageError, Plan};
use crate::wal::record::{Decoded, Record};
use crate::wal::snapshot::{Announced, Receiver, Snapshot, SnapshotError};
use crate::wal::WalError;

/// Why a replication connection is closed: the peer broke the protocol,
/// or this node could not do what the stream asked.
#[derive(Debug)]
pub enum StreamFault {
    /// Bytes that are no frame.
    Wire(WireError),
    /// A follower's frame the leader cannot take.
    Follower(StreamError),
    /// A frame out of place from the leader.
    Unexpected(String),
    /// An epoch far above any this node knows, from `source`.
    Epoch { source: String, leap: EpochLeap },
    /// A plan that cannot be true.
    Plan(BadClaim),
    /// A heartbeat with an implausible epoch.
    Leader(LeaderError),
    /// The follower's lineage in its `SYNC`.
    Lineage(LineageError),
    /// Opening the log for a feed.
    Feed(io::Error),
    /// The log refused a replicated record, a rewind or a mode change.
    Log(WalError),
    /// Receiving a snapshot.
    Snapshot(SnapshotError),
    /// A frame of a snapshot that is not being received.
    NoSnapshot,
    /// Putting a received snapshot in place of the log.
    Install(WalError),
    /// A record in the stream that fails its checksum.
    DamagedRecord,
}

impl std::fmt::Display for StreamFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamFault::Wire(e) => write!(f, "{e}"),
            StreamFault::Follower(e) => write!(f, "{e}"),
            StreamFault::Unexpected(frame) => {
                write!(f, "unexpected frame from the leader: {frame}")
            }
            StreamFault::Epoch { source, leap } => write!(f, "{source} claims {leap}"),
            StreamFault::Plan(e) => write!(f, "the leader's plan: {e}"),
            StreamFault::Leader(e) => write!(f, "{e}"),
            StreamFault::Lineage(e) => write!(f, "the follower's lineage: {e}"),
            StreamFault::Feed(e) => write!(f, "opening the log: {e}"),
            StreamFault::Log(e) => write!(f, "{e}"),
            StreamFault::Snapshot(e) => write!(f, "{e}"),
            StreamFault::NoSnapshot => write!(f, "no snapshot is being received"),
            StreamFault::Install(e) => write!(f, "installing the snapshot: {e}"),
            StreamFault::DamagedRecord => write!(f, "a damaged record in the stream"),
        }
    }
}

impl From<WalError> for StreamFault {
    fn from(e: WalError) -> StreamFault {
        StreamFault::Log(e)
    }
}

impl Node {
    /// `AUTH <fproof>` from a challenged follower: admitted if the proof
    /// holds and the leader has room.
    pub fn follower_auth(
        &mut self,
        conn: &mut Conn,
        key: usize,
        challenged: &Challenged,
        line: &[u8],
    ) {
        let Claimant::Follower(id) = challenged.who else {
            return;
        };
        let secret = self.config.secret.as_deref().unwrap_or_default();
        let rules = Admission {
            is_leader: self.role.role == Role::Leader,
            own_id: self.config.id,
            max_followers: self.config.max_followers,
        };
        let admitted = challenged.answer(secret, line).and_then(|session| {
            let admitted = self
                .repl
                .leader
                .admit(id, key, conn.peer, rules, Instant::now())?;
            Ok((session, admitted))
        });
        let (session, admitted) = match admitted {
            Ok(ok) => ok,
            Err(refusal @ Refusal::DuplicateId(_)) => {
                warn!("{}: follower refused: {refusal}", conn.peer);
                return conn.refuse(&refusal.reply());
            }
            Err(refusal) => {
                throttled!(
                    warn,
                    &format!("follower-refused-{id}"),
                    "{}: follower {id} refused: {refusal}",
                    conn.peer
                );
                return conn.refuse(&refusal.reply());
            }
        };
        if let Some((old_key, old_addr)) = admitted.replaced {
            throttled!(
                info,
                &format!("follower-replaced-{id}"),
                "follower {id}: reconnected from {}, replacing the connection from {old_addr}",
                conn.peer
            );
            self.repl.evict.push(old_key);
        }
        throttled!(
            info,
            &format!("follower-authenticated-{id}"),
            "{}: follower {id} authenticated",
            conn.peer
        );
        conn.reply(Reply::HelloLeader);
        conn.begin_session(session);
        conn.kind = Peer::Follower(id);
    }

    /// Whether the bytes on `conn` are frames rather than lines. A replaced
    /// link's bytes count as frames: they are read and dropped.
    pub fn is_framed(&self, conn: &Conn, key: usize) -> bool {
        match conn.kind {
            Peer::Follower(_) => true,
            Peer::Leader => !self.repl.link.is_current(key) || self.repl.link.is_framed(),
            _ => false,
        }
    }

    /// Whether the loop must leave `conn`'s input unread for now: the
    /// snapshot threads are behind, or the snapshot awaits its install.
    pub fn holds_input(&self, conn: &Conn, key: usize) -> bool {
        matches!(conn.kind, Peer::Leader)
            && self.repl.link.is_current(key)
            && self.repl.receiver.as_ref().is_some_and(|r| r.holds_input())
    }

    /// Whether `conn` is the link's connect in progress.
    pub fn is_connecting(&self, conn: &Conn, key: usize) -> bool {
        matches!(conn.kind, Peer::Leader)
            && self.repl.link.is_current(key)
            && matches!(self.repl.link.phase(), Phase::Connecting)
    }

    /// Frames from a follower (on a leader) or from the leader (on a
    /// follower). Returns the bytes consumed; a protocol error marks the
    /// connection for closing.
    pub fn process_frames(&mut self, conn: &mut Conn, key: usize, bytes: &[u8]) -> usize {
        if matches!(conn.kind, Peer::Leader) && !self.repl.link.is_current(key) {
            return bytes.len();
        }
        let mut off = 0;
        while !conn.closing && self.is_framed(conn, key) && !self.holds_input(conn, key) {
            let result = match Frame::decode(&bytes[off..]) {
                Ok(Some((frame, used))) => {
                    off += used;
                    match conn.kind {
                        Peer::Follower(id) => self.on_follower_frame(conn, key, id, frame),
                        _ => self.on_leader_frame(conn, frame),
                    }
                }
                Ok(None) => break,
                Err(e) => Err(StreamFault::Wire(e)),
            };
            if let Err(why) = result {
                error!("{}: replication stream: {why}; closing the link", conn.peer);
                conn.closing = true;
            }
        }
        off
    }

    fn on_follower_frame(
        &mut self,
        conn: &mut Conn,
        key: usize,
        id: u32,
        frame: Frame<'_>,
    ) -> Result<(), StreamFault> {
        self.repl.leader.heard(id, key, Instant::now());
        match frame {
            Frame::Sync {
                seq,
                epoch,
                want_snapshot,
                lineage: segments,
                port,
            } => {
                self.repl
                    .leader
                    .may_plan(id, key)
                    .map_err(StreamFault::Follower)?;
                self.repl.leader.set_port(id, port);
                let follower = Lineage::from_segments(&segments).map_err(StreamFault::Lineage)?;
                let plan = lineage::plan(
                    self.wal.lineage(),
                    self.wal.header().base_seq,
                    self.wal.committed_seq(),
                    &follower,
                    seq,
                );
                // A follower whose log may have lost records gets the whole
                // log even where it could catch up.
                let plan = match plan {
                    Plan::CatchUp { from, .. } if want_snapshot => {
                        Plan::Snapshot { common: Some(from) }
                    }
                    plan => plan,
                };
                let feed = Feed::new(&self.wal, plan).map_err(StreamFault::Feed)?;
                let sent_seq = feed.sent_seq();
                self.repl.feeds.insert(
                    key,
                    Pump {
                        feed,
                        behind: false,
                    },
                );
                self.learn(epoch, || format!("follower {id} at {}", conn.peer))?;
                self.send_plan(conn, key, id, plan, sent_seq, &follower, seq);
                Ok(())
            }
            Frame::Ack { seq, epoch } => {
                let first = self
                    .repl
                    .leader
                    .on_ack(id, key, seq)
                    .map_err(StreamFault::Follower)?;
                if first {
                    info!("{}: follower {id} connected", conn.peer);
                }
                self.learn(epoch, || format!("follower {id} at {}", conn.peer))
            }
            Frame::Confirm { round, epoch } => {
                self.repl
                    .leader
                    .on_confirm(id, key, round)
                    .map_err(StreamFault::Follower)?;
                self.learn(epoch, || format!("follower {id} at {}", conn.peer))
            }
            _ => Err(StreamFault::Follower(StreamError::Unexpected(frame.name()))),
        }
    }

    /// Logs the plan for follower `id` and sends it.
    #[allow(clippy::too_many_arguments)]
    fn send_plan(
        &mut self,
        conn: &mut Conn,
        key: usize,
        id: u32,
        plan: Plan,
        sent_seq: u64,
        follower: &Lineage,
        seq: u64,
    ) {
        let written = self.wal.committed_seq();
        let (mode, common, keep_forks) = match plan {
            Plan::CatchUp {
                from, keep_forks, ..
            } => {
                info!(
                    "{}: follower {id} catching up from seq {from} to {written}{}",
                    conn.peer,
                    if from < seq {
                        format!(" (it holds seq {seq}: it must drop {} writes)", seq - from)
                    } else {
                        String::new()
                    }
                );
                self.repl.counters.catchups_sent += 1;
                (Mode::CatchUp, Some(from), keep_forks)
            }
            Plan::Snapshot { common } => {
                info!(
                    "{}: follower {id} gets a snapshot ({} bytes, seq {written}; it had history {} \
                     seq {seq})",
                    conn.peer,
                    self.wal.committed_end(),
                    hex::encode(follower.current().history)
                );
                self.repl.counters.snapshots_sent += 1;
                (Mode::Snapshot, common, 0)
            }
        };
        let awaited = self.repl.leader.planned(id, key, sent_seq, self.policy());
        let current = self.wal.lineage().current();
        // The feed sends the file up to `committed_end` (see `Feed::new`).
        let announced = (mode == Mode::Snapshot).then(|| Announced {
            bytes: self.wal.committed_end(),
            keys: self.store.len() as u64,
        });
        Frame::Plan(wire::Plan {
            mode,
            history: current.history,
            epoch: current.epoch,
            seq: written,
            common,
            keep_forks: u32::try_from(keep_forks).unwrap_or(u32::MAX),
            acks_awaited: awaited,
            announced,
            policy: self.policy(),
        })
        .encode(conn.raw_out());
    }

    fn on_leader_frame(&mut self, conn: &mut Conn, frame: Frame<'_>) -> Result<(), StreamFault> {
        self.repl.link.heard(Instant::now());
        let phase = self.repl.link.phase();
        let (snapshot, streaming) = (
            matches!(phase, Phase::Snapshot),
            matches!(phase, Phase::Streaming),
        );
        match frame {
            Frame::Plan(plan) if matches!(phase, Phase::AwaitPlan) => self.on_plan(conn, plan),
            Frame::Chunk(bytes) if snapshot => {
                self.receiver()?.push(bytes).map_err(StreamFault::Snapshot)
            }
            // The threads finish it; `feed_link` installs it once they are
            // done, and the link's input waits meanwhile.
            Frame::End { seq } if snapshot => {
                self.receiver()?.end(seq).map_err(StreamFault::Snapshot)
            }
            Frame::Records(mut bytes) if streaming => {
                while !bytes.is_empty() {
                    let Ok(Decoded::Record(rec, used)) = Record::decode(bytes) else {
                        return Err(StreamFault::DamagedRecord);
                    };
                    self.wal
                        .append_replicated(&mut self.store, &rec, &bytes[..used])?;
                    self.repl.link.received(rec.seq);
                    bytes = &bytes[used..];
                }
                Ok(())
            }
            Frame::Wait { awaited } if snapshot || streaming => {
                self.wal.defer_syncs(!awaited)?;
                self.repl.link.acks_awaited = awaited;
                info!(
                    "{}: the leader's writes {} for this follower's acks: fsync {}",
                    conn.peer,
                    if awaited {
                        "now wait"
                    } else {
                        "no longer wait"
                    },
                    if awaited { "every batch" } else { "deferred" }
                );
                Ok(())
            }
            Frame::Probe { round, epoch } if snapshot || streaming => {
                self.on_probe(conn, round, epoch)
            }
            Frame::Heartbeat { seq, epoch } => {
                match self.repl.link.on_heartbeat(seq, epoch, self.known_epoch()) {
                    Ok(()) => Ok(()),
                    Err(e @ LeaderError::Deposed { .. }) => {
                        error!("{}: {e}; not following it", conn.peer);
                        conn.closing = true;
                        Ok(())
                    }
                    Err(e) => Err(StreamFault::Leader(e)),
                }
            }
            other => Err(StreamFault::Unexpected(other.name().to_string())),
        }
    }

    /// News of `epoch` from the peer `source` names.
    fn learn(&mut self, epoch: u64, source: impl Fn() -> String) -> Result<(), StreamFault> {
        self.learn_epoch(epoch, &source)
            .map_err(|leap| StreamFault::Epoch {
                source: source(),
                leap,
            })
    }

    /// `PROBE round` from the leader: confirm it at once, unless the link
    /// keeps quiet after a change of leader. Its epoch is checked like a
    /// heartbeat's: a deposed leader gets no confirmation.
    fn on_probe(&mut self, conn: &mut Conn, round: u64, epoch: u64) -> Result<(), StreamFault> {
        let seq = self.repl.link.leader_seq;
        match self.repl.link.on_heartbeat(seq, epoch, self.known_epoch()) {
            Ok(()) => {}
            Err(e @ LeaderError::Deposed { .. }) => {
                error!("{}: {e}; not following it", conn.peer);
                conn.closing = true;
                return Ok(());
            }
            Err(e) => return Err(StreamFault::Leader(e)),
        }
        if let Some(round) = self.repl.link.on_probe(round, Instant::now()) {
            Frame::Confirm {
                round,
                epoch: self.known_epoch(),
            }
            .encode(conn.raw_out());
        }
        Ok(())
    }

    /// The snapshot being received.
    fn receiver(&mut self) -> Result<&mut Receiver, StreamFault> {
        self.repl
            .receiver
            .as_deref_mut()
            .ok_or(StreamFault::NoSnapshot)
    }

    /// The leader's `PLAN`: take it, rewinding first if it says so, or
    /// refuse the leader.
    fn on_plan(&mut self, conn: &mut Conn, plan: wire::Plan) -> Result<(), StreamFault> {
        self.repl.link.leader_seq = plan.seq;
        let holding = Holding {
            seq: self.wal.last_seq(),
            forks: self.wal.lineage().forks(),
            epoch: self.known_epoch(),
            may_discard: self.role.may_discard,
        };
        check_claims(&plan, holding).map_err(StreamFault::Plan)?;
        let acceptance = match check_plan(&plan, holding) {
            Ok(acceptance) => acceptance,
            Err(refusal) => {
                error!(
                    "{}: refusing this leader: {refusal}. This node keeps its data and keeps \
                     serving reads. To make it the leader, promote it (keyval-ctl promote); \
                     to follow this leader anyway, run keyval-ctl follow (drops the writes \
                     the leader lacks), or stop it and empty its data directory.",
                    conn.peer
                );
                self.repl
                    .link
                    .refused(format!("refusing this leader: {refusal}"));
                conn.closing = true;
                return Ok(());
            }
        };
        self.learn(plan.epoch, || format!("the leader at {}", conn.peer))?;
        if let Some((first, last)) = acceptance.dropped {
            warn!(
                "{}: dropping {} writes (seq {first}..={last}) that the leader does not have, as \
                 FOLLOW allowed",
                conn.peer,
                last - first + 1
            );
        }
        if let Some((to, keep_forks)) = acceptance.rewind {
            self.rewind(conn, to, keep_forks)?;
            if conn.closing {
                return Ok(());
            }
        }
        if self.role.may_discard {
            self.role.may_discard = false;
            self.save_role();
        }
        self.learn_policy(conn, plan.policy);
        self.wal.defer_syncs(!plan.acks_awaited)?;
        let seq = plan.seq;
        match plan.mode {
            Mode::CatchUp => {
                info!(
                    "{}: leader accepted; catching up from seq {} to {seq}",
                    conn.peer,
                    self.wal.last_seq()
                );
                self.repl.counters.catchups_received += 1;
            }
            Mode::Snapshot => {
                info!(
                    "{}: leader accepted; receiving a snapshot through seq {seq}{}",
                    conn.peer,
                    plan.announced.map_or(String::new(), |a| format!(
                        " ({} bytes, {} keys)",
                        a.bytes, a.keys
                    ))
                );
                let waker = Arc::clone(&self.waker);
                let receiver = Receiver::start(
                    self.wal.path(),
                    plan.announced,
                    Box::new(move || {
                        let _ = waker.wake();
                    }),
                )?;
                self.repl.receiver = Some(Box::new(receiver));
            }
        }
        let ack = self.repl.link.up(&plan, self.wal.durable_seq());
        self.ack(conn, ack);
        Ok(())
    }

    /// Keeps the cluster's output rule a leader announced, for when this
    /// node is promoted.
    fn learn_policy(&mut self, conn: &Conn, policy: SyncPolicy) {
        if self.role.policy == Some(policy) {
            return;
        }
        self.role.policy = Some(policy);
        self.save_role();
        info!(
            "{}: the cluster's output rule: writes wait for {} follower(s), for {} ms; kept for \
             when this node is promoted",
            conn.peer, policy.followers, policy.timeout_ms
        );
        if self.policy() != policy {
            let mine = self.policy();
            warn!(
                "this node's --sync-followers {} / --sync-timeout-ms {} differ from the cluster's \
                 rule and win if it is promoted; remove them to keep the cluster's",
                mine.followers, mine.timeout_ms
            );
        }
    }

    /// A line on the follower's link during the handshake.
    pub fn link_line(&mut self, conn: &mut Conn, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let secret = self.config.secret.clone().unwrap_or_default();
        match self.repl.link.on_line(&secret, &text) {
            HandshakeStep::Send(line) => {
                conn.reply_with(|out| out.extend_from_slice(line.as_bytes()));
            }
            HandshakeStep::Welcome(session) => {
                conn.begin_session(*session);
                Frame::Sync {
                    seq: self.wal.last_seq(),
                    epoch: self.known_epoch(),
                    want_snapshot: self.wal.snapshot_suspect(),
                    lineage: self.wal.lineage().segments().to_vec(),
                    port: Some(self.listen_port),
                }
                .encode(conn.raw_out());
            }
            HandshakeStep::Failed(DialError::Impostor) => {
                error!(
                    "{}: the leader could not prove the shared secret (an impostor, or a \
                     different KEYVAL_SECRET); not following it",
                    conn.peer
                );
                conn.closing = true;
            }
            HandshakeStep::Failed(e) => {
                error!(
                    "{}: the leader refused the handshake: {e}; retrying",
                    conn.peer
                );
                conn.closing = true;
            }
        }
    }

    /// The link's socket connected: start the handshake.
    pub fn link_connected(&mut self, conn: &mut Conn) {
        let hello = self.repl.link.connected(self.config.id);
        conn.reply_with(|out| out.extend_from_slice(hello.as_bytes()));
        info!("{}: connected to the leader", conn.peer);
    }

    /// A replication connection closed.
    pub fn on_close(&mut self, conn: &Conn, key: usize, now: Instant) {
        self.repl.feeds.remove(&key);
        match conn.kind {
            Peer::Follower(id) => self.follower_gone(conn, key, id),
            // A replaced link closes after its successor may have been
            // dialled, and must not orphan it (each orphan's close would
            // dial yet another link, for ever).
            Peer::Leader if self.repl.link.is_current(key) => {
                self.repl.receiver = None;
                if self.repl.link.closed(now) {
                    warn!("{}: lost the link to the leader", conn.peer);
                }
            }
            _ => {}
        }
    }

    /// Follower `id`'s connection closed; if it was the current one, its
    /// place in the output rule passes on.
    fn follower_gone(&mut self, conn: &Conn, key: usize, id: u32) {
        if self.repl.leader.remove(id, key, self.policy()) {
            info!("{}: follower {id} disconnected", conn.peer);
        }
    }

    /// After the commit: feed a follower (leader), or ack what became
    /// durable and install a finished snapshot (follower).
    pub fn after_commit(&mut self, conn: &mut Conn, key: usize) {
        match conn.kind {
            Peer::Follower(id) => self.feed_follower(conn, key, id),
            Peer::Leader if self.repl.link.is_current(key) => self.feed_link(conn),
            _ => {}
        }
    }

    fn feed_follower(&mut self, conn: &mut Conn, key: usize, id: u32) {
        if let Some(awaited) = self.repl.leader.wait_news(id, key) {
            info!(
                "{}: follower {id}: writes {} for its acks",
                conn.peer,
                if awaited {
                    "now wait"
                } else {
                    "no longer wait"
                }
            );
            Frame::Wait { awaited }.encode(conn.raw_out());
        }
        let Some(pump) = self.repl.feeds.get_mut(&key) else {
            return;
        };
        // The output buffer also holds what the socket already took, until
        // it drains: only what is still unsent counts.
        let room = FOLLOWER_BUF_LOW.saturating_sub(conn.pending_output());
        match pump.feed.pump(&self.wal, conn.raw_out(), room) {
            Ok(more) => {
                pump.behind = more;
                let (sent, behind_file) = (pump.feed.sent_seq(), pump.feed.behind_file(&self.wal));
                self.repl.leader.fed(id, key, sent, behind_file);
            }
            Err(e) => self.drop_feed(conn, key, id, &e),
        }
    }

    fn drop_feed(&mut self, conn: &Conn, key: usize, id: u32, e: &FeedError) {
        error!("{}: follower {id}: {e}; disconnecting it", conn.peer);
        self.repl.evict.push(key);
    }

    fn feed_link(&mut self, conn: &mut Conn) {
        if let Some(seq) = self
            .repl
            .link
            .durable(self.wal.leader_ack_seq(), Instant::now())
        {
            self.ack(conn, seq);
        }
        let Some(receiver) = &mut self.repl.receiver else {
            return;
        };
        if receiver.holds_input() {
            // The link is not read meanwhile: its silence is ours.
            self.repl.link.heard(Instant::now());
        }
        match receiver.poll() {
            None => {}
            Some(Ok(snapshot)) => {
                self.repl.receiver = None;
                if let Err(why) = self.install(conn, snapshot) {
                    error!("{}: replication stream: {why}; closing the link", conn.peer);
                    conn.closing = true;
                }
            }
            Some(Err(why)) => {
                self.repl.receiver = None;
                error!(
                    "{}: receiving the snapshot: {why}; closing the link",
                    conn.peer
                );
                conn.closing = true;
            }
        }
    }

    /// Puts a received snapshot in place of the log and the store, and
    /// acknowledges it.
    fn install(&mut self, conn: &mut Conn, snapshot: Snapshot) -> Result<(), StreamFault> {
        let (seq, keys, bytes) = (snapshot.last_seq, snapshot.store.len(), snapshot.bytes);
        let (receiving, finishing) = (snapshot.receiving, snapshot.finishing);
        self.wal
            .install_snapshot(
                snapshot.temp,
                snapshot.header,
                snapshot.lineage,
                snapshot.last_seq,
            )
            .map_err(StreamFault::Install)?;
        // Freeing a large old store takes tens of milliseconds.
        drop_off_loop(std::mem::replace(&mut self.store, snapshot.store));
        self.cancel_compaction();
        self.repl.counters.snapshots_received += 1;
        info!(
            "{}: installed a snapshot: seq {seq}, {keys} keys, {bytes} bytes (received in {:.2} s, \
             finished {:.3} s after its end)",
            conn.peer,
            receiving.as_secs_f64(),
            finishing.as_secs_f64()
        );
        let ack = self.repl.link.installed(seq);
        self.ack(conn, ack);
        Ok(())
    }

    /// Once a second: heartbeats, and dropping peers that went silent or
    /// stopped reading.
    pub fn tick(&mut self, conn: &mut Conn, key: usize, now: Instant) {
        match conn.kind {
            Peer::Follower(id) => {
                let output = Output {
                    pending: conn.wants_write(),
                    written_total: conn.written_total,
                };
                match self.repl.leader.tick(id, key, output, now, LINK_TIMEOUT) {
                    Tick::Heartbeat => Frame::Heartbeat {
                        seq: self.wal.committed_seq(),
                        epoch: self.wal.lineage().current().epoch,
                    }
                    .encode(conn.raw_out()),
                    Tick::Silent => {
                        warn!(
                            "{}: follower {id} silent for {LINK_TIMEOUT:?}; disconnecting it",
                            conn.peer
                        );
                        self.repl.evict.push(key);
                    }
                    Tick::Stalled => {
                        warn!(
                            "{}: follower {id} stopped reading ({} bytes waiting); disconnecting \
                             it, it catches up when it reconnects",
                            conn.peer,
                            conn.pending_output()
                        );
                        self.repl.evict.push(key);
                    }
                }
            }
            Peer::Leader if self.repl.link.is_current(key) => {
                match self.repl.link.tick(now, LINK_TIMEOUT) {
                    LinkTick::Nothing => {}
                    LinkTick::Silent => {
                        warn!(
                            "{}: leader silent for {LINK_TIMEOUT:?}; reconnecting",
                            conn.peer
                        );
                        self.repl.evict.push(key);
                    }
                    LinkTick::Ack(seq) => self.ack(conn, seq),
                }
            }
            _ => {}
        }
    }

    /// Sends probe `round` for the read lease to a follower.
    pub fn send_probe(&self, conn: &mut Conn, round: u64) {
        Frame::Probe {
            round,
            epoch: self.wal.lineage().current().epoch,
        }
        .encode(conn.raw_out());
    }

    /// Acknowledges `seq` to the leader, with the highest epoch known.
    fn ack(&self, conn: &mut Conn, seq: u64) {
        Frame::Ack {
            seq,
            epoch: self.known_epoch(),
        }
        .encode(conn.raw_out());
    }

    /// Cuts this follower's log back to where the leader's continues.
    fn rewind(&mut self, conn: &mut Conn, to: u64, keep_forks: usize) -> Result<(), StreamFault> {
        match self.wal.rewind(&mut self.store, to, keep_forks) {
            Ok((store, dropped)) => {
                self.store = store;
                self.cancel_compaction();
                self.repl.counters.rewinds += 1;
                match dropped {
                    Some((first, last)) => warn!(
                        "{}: rewound the log to seq {to}: dropped {} writes, seq {first}..={last}",
                        conn.peer,
                        last - first + 1
                    ),
                    None => info!("{}: rewound the log's history to seq {to}", conn.peer),
                }
                Ok(())
            }
            Err(e @ WalError::CannotRewind { .. }) => {
                error!(
                    "{}: {e}; stop this node and empty its data directory to resync it with a \
                     snapshot",
                    conn.peer
                );
                self.repl.link.refused(format!(
                    "{e}; empty this node's data directory to resync it with a snapshot"
                ));
                conn.closing = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a follower on connection `key` has more to be sent and room
    /// for it: the loop must come round again without waiting for an event
    /// (a socket that took everything raises none).
    pub fn wants_pump(&self, conn: &Conn, key: usize) -> bool {
        self.repl.feeds.get(&key).is_some_and(|p| p.behind)
            && conn.pending_output() < FOLLOWER_BUF_LOW
    }
}

/// Drops `value` on a short-lived thread (or here, if none can start).
fn drop_off_loop<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}
