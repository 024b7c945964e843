//! Replication as the node sees it: the leader's handshake with followers
//! and their feeds and acks, and the follower's link to its leader. The
//! loop (`server`) owns the sockets and calls in here with lines, frames
//! and ticks; this file decides what they mean.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{error, info, warn};

use super::conn::{Conn, FollowerSession, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use crate::config::Role;
use crate::protocol::Reply;
use crate::replication::auth::{self, Prover};
use crate::replication::follower::{check_claims, check_plan, Backoff, Holding, LinkState};
use crate::replication::leader::Feed;
use crate::replication::session::Session;
use crate::replication::wire::{self, Frame, Mode};
use crate::replication::{
    plausible_epoch, SyncPolicy, FOLLOWER_BUF_LOW, LINK_TIMEOUT, MAX_EPOCH_LEAP,
};
use crate::wal::lineage::{self, Lineage, Plan};
use crate::wal::record::{Decoded, Record};
use crate::wal::snapshot::{Announced, Receiver, Snapshot};
use crate::wal::WalError;

/// Leader-side facts about one follower, for `INFO`, the follower cap and
/// the output rule.
#[derive(Debug, Clone)]
pub struct FollowerEntry {
    /// The connection it is on.
    pub key: usize,
    pub addr: SocketAddr,
    /// Last seq acknowledged durable.
    pub acked: u64,
    /// It accepted the plan (sent its first `ACK`): counted as connected.
    pub accepted: bool,
    /// Its feed still reads a log file a compaction replaced: another
    /// compaction would overtake it (see `Node::feed_holding_compaction`).
    pub feed_behind_file: bool,
    /// Client writes wait for its acks: one of the `--sync-followers N`
    /// told to fsync every batch (see `Node::assign_awaited`).
    pub acks_awaited: bool,
}

/// `leader_link` in `INFO` on a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Down,
    Up,
    Refused,
}

/// A follower's view of its link to the leader.
#[derive(Debug, Default)]
pub struct LinkInfo {
    /// The connection, while there is one.
    pub key: Option<usize>,
    pub status: Option<LinkStatus>,
    /// When to dial again.
    pub reconnect_at: Option<Instant>,
    pub backoff: Backoff,
    /// The leader's last reported seq.
    pub leader_seq: u64,
    /// Last seq acknowledged to the leader.
    pub acked_sent: u64,
    /// When the leader was last heard from.
    pub last_heard: Option<Instant>,
    /// The leader waits for this follower's acks (`PLAN`, then `WAIT`).
    pub acks_awaited: bool,
    /// Why the link was last refused, by either side, until it comes up
    /// (`leader_link_error` in `INFO`, so `keyval-ctl follow` can say why;
    /// a full leader leaves the link `down` with this set).
    pub error: Option<String>,
}

/// Replication state of a node.
#[derive(Default)]
pub struct Replication {
    /// On a leader: followers past `HELLO LEADER`, by id.
    pub followers: BTreeMap<u32, FollowerEntry>,
    /// On a follower: the link.
    pub link: LinkInfo,
    /// Connections the loop must close (replaced or failed peers).
    pub evict: Vec<usize>,
    /// Acks arrived this turn: re-check held replies.
    pub acks_changed: bool,
    /// Next heartbeat tick.
    pub next_tick: Option<Instant>,
}

impl Node {
    /// `HELLO FOLLOWER|<id>:<fnonce>` on a leader: challenge it.
    pub fn follower_hello(&mut self, conn: &mut Conn, id: &[u8], fnonce: &[u8]) {
        let fail = |conn: &mut Conn, reply: &[u8], why: &str| {
            throttled!(
                warn,
                "follower-refused",
                "{}: follower refused: {why}",
                conn.peer
            );
            conn.reply_with(|out| out.extend_from_slice(reply));
            conn.closing = true;
        };
        if self.role.role != Role::Leader {
            return fail(
                conn,
                b"CANNOT_ACCEPT_FOLLOWER_CONNECTION\n",
                "this node is not a leader",
            );
        }
        // Any id >= 1 (a deposed leader follows under its id 1); the leader's own
        // is refused once the follower proved the secret (`DUPLICATE_ID`).
        let id = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&id| id >= 1);
        let (Some(id), true) = (id, auth::is_nonce(fnonce)) else {
            return fail(
                conn,
                Reply::InvalidHandshake.as_bytes(),
                "malformed HELLO FOLLOWER",
            );
        };
        let Some(secret) = &self.config.secret else {
            return fail(
                conn,
                b"INVALID_SECRET_KEY\n",
                "this leader has no secret configured",
            );
        };
        let fnonce = String::from_utf8_lossy(fnonce).into_owned();
        let lnonce = auth::new_nonce();
        let lproof = auth::proof(secret, Prover::Leader, &id.to_string(), &fnonce, &lnonce);
        conn.reply_with(|out| {
            out.extend_from_slice(format!("CHALLENGE {lnonce} {lproof}\n").as_bytes())
        });
        conn.kind = Peer::FollowerAuth { id, fnonce, lnonce };
    }

    /// `AUTH <fproof>` from a challenged follower.
    pub fn follower_auth(&mut self, conn: &mut Conn, key: usize, line: &[u8]) {
        let Peer::FollowerAuth { id, fnonce, lnonce } = &conn.kind else {
            return;
        };
        let id = *id;
        let proof = line
            .strip_prefix(b"AUTH ")
            .or_else(|| line.strip_prefix(b"auth "));
        let secret = self.config.secret.as_deref().unwrap_or_default();
        let reply: Option<&[u8]> = match proof {
            None => Some(Reply::InvalidHandshake.as_bytes()),
            Some(p)
                if !auth::verify(secret, Prover::Follower, &id.to_string(), fnonce, lnonce, p) =>
            {
                Some(b"INVALID_SECRET_KEY\n")
            }
            Some(_) if self.role.role != Role::Leader => {
                Some(&b"CANNOT_ACCEPT_FOLLOWER_CONNECTION\n"[..])
            }
            Some(_) => {
                let others = self
                    .repl
                    .followers
                    .keys()
                    .filter(|&&other| other != id)
                    .count();
                (others >= self.config.max_followers).then_some(&b"MAX_SIZE_EXCEEDED\n"[..])
            }
        };
        if let Some(reply) = reply {
            throttled!(
                warn,
                &format!("follower-refused-{id}"),
                "{}: follower {id} refused: {}",
                conn.peer,
                String::from_utf8_lossy(reply).trim_end()
            );
            conn.reply_with(|out| out.extend_from_slice(reply));
            conn.closing = true;
            return;
        }
        // Checked once the follower proved the secret: ids must be unique.
        if id == self.config.id {
            let why = format!(
                "follower id {id} is this leader's own id; every node of a cluster needs an id \
                 no other node has"
            );
            warn!("{}: follower refused: {why}", conn.peer);
            conn.reply_with(|out| {
                out.extend_from_slice(format!("DUPLICATE_ID {why}\n").as_bytes())
            });
            conn.closing = true;
            return;
        }
        if let Some(old) = self.repl.followers.remove(&id) {
            throttled!(
                info,
                &format!("follower-replaced-{id}"),
                "follower {id}: reconnected from {}, replacing the connection from {}",
                conn.peer,
                old.addr
            );
            self.repl.evict.push(old.key);
        }
        throttled!(
            info,
            &format!("follower-authenticated-{id}"),
            "{}: follower {id} authenticated",
            conn.peer
        );
        let session = Session::new(
            secret,
            Prover::Leader,
            Prover::Follower,
            &id.to_string(),
            fnonce,
            lnonce,
        );
        conn.reply_with(|out| out.extend_from_slice(b"HELLO LEADER\n"));
        conn.begin_session(session);
        let now = Instant::now();
        conn.kind = Peer::Follower(Box::new(FollowerSession {
            id,
            feed: None,
            acked: 0,
            behind: false,
            last_heard: now,
            stall_mark: (0, now),
            told_awaited: None,
        }));
        self.repl.followers.insert(
            id,
            FollowerEntry {
                key,
                addr: conn.peer,
                acked: 0,
                accepted: false,
                feed_behind_file: false,
                acks_awaited: false,
            },
        );
    }

    /// Frames from a follower (on a leader) or from the leader (on a
    /// follower). Returns the bytes consumed; a protocol error marks the
    /// connection for closing.
    pub fn process_frames(&mut self, conn: &mut Conn, key: usize, bytes: &[u8]) -> usize {
        if matches!(conn.kind, Peer::Leader(_)) && !self.is_current_link(key) {
            return bytes.len();
        }
        let mut off = 0;
        while !conn.closing && conn.kind.is_framed() && !conn.kind.holds_input() {
            match Frame::decode(&bytes[off..]) {
                Ok(Some((frame, used))) => {
                    off += used;
                    let result = match &conn.kind {
                        Peer::Follower(_) => self.on_follower_frame(conn, key, frame),
                        _ => self.on_leader_frame(conn, frame),
                    };
                    if let Err(why) = result {
                        error!("{}: replication stream: {why}; closing the link", conn.peer);
                        conn.closing = true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error!("{}: replication stream: {e}; closing the link", conn.peer);
                    conn.closing = true;
                }
            }
        }
        off
    }

    fn on_follower_frame(
        &mut self,
        conn: &mut Conn,
        key: usize,
        frame: Frame<'_>,
    ) -> Result<(), String> {
        let Peer::Follower(session) = &mut conn.kind else {
            return Ok(());
        };
        session.last_heard = Instant::now();
        match frame {
            Frame::Sync {
                seq,
                epoch,
                want_snapshot,
                lineage: segments,
            } if session.feed.is_none() => {
                let id = session.id;
                let follower = Lineage::from_segments(&segments)
                    .map_err(|e| format!("the follower's lineage: {e}"))?;
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
                let feed =
                    Feed::new(&self.wal, plan).map_err(|e| format!("opening the log: {e}"))?;
                session.feed = Some(feed);
                self.learn_epoch(epoch, &format!("follower {id} at {}", conn.peer))?;
                self.send_plan(conn, id, plan, &follower, seq);
                Ok(())
            }
            Frame::Ack { seq, epoch } if session.feed.is_some() => {
                let sent = session.feed.as_ref().map_or(0, Feed::sent_seq);
                if seq > sent {
                    return Err(format!(
                        "the follower acknowledges seq {seq}, but only seq {sent} was sent to it"
                    ));
                }
                session.acked = seq;
                let id = session.id;
                if let Some(entry) = self.repl.followers.get_mut(&id).filter(|e| e.key == key) {
                    if !entry.accepted {
                        info!("{}: follower {id} connected", conn.peer);
                    }
                    entry.accepted = true;
                    entry.acked = seq;
                    self.repl.acks_changed = true;
                }
                self.learn_epoch(epoch, &format!("follower {id} at {}", conn.peer))
            }
            other => Err(format!("unexpected frame from a follower: {other:?}")),
        }
    }

    /// Logs the plan for follower `id` and sends it.
    fn send_plan(&mut self, conn: &mut Conn, id: u32, plan: Plan, follower: &Lineage, seq: u64) {
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
                (Mode::Snapshot, common, 0)
            }
        };
        // This follower's entry is new: the others awaited are elsewhere.
        let awaited = self.awaited_count() < self.policy().followers;
        if let Some(entry) = self.repl.followers.get_mut(&id) {
            entry.acks_awaited = awaited;
        }
        if let Peer::Follower(session) = &mut conn.kind {
            session.told_awaited = Some(awaited);
        }
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

    fn on_leader_frame(&mut self, conn: &mut Conn, frame: Frame<'_>) -> Result<(), String> {
        let Peer::Leader(state) = &mut conn.kind else {
            return Ok(());
        };
        self.repl.link.last_heard = Some(Instant::now());
        match (state, frame) {
            (LinkState::AwaitPlan, Frame::Plan(plan)) => {
                self.repl.link.leader_seq = plan.seq;
                let holding = Holding {
                    seq: self.wal.last_seq(),
                    forks: self.wal.lineage().forks(),
                    epoch: self.known_epoch(),
                    may_discard: self.role.may_discard,
                };
                check_claims(&plan, holding).map_err(|e| format!("the leader's plan: {e}"))?;
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
                        self.link_refused(format!("refusing this leader: {refusal}"));
                        conn.closing = true;
                        return Ok(());
                    }
                };
                self.learn_epoch(plan.epoch, &format!("the leader at {}", conn.peer))?;
                if let Some((first, last)) = acceptance.dropped {
                    warn!(
                        "{}: dropping {} writes (seq {first}..={last}) that the leader does not \
                         have, as FOLLOW allowed",
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
                self.wal
                    .defer_syncs(!plan.acks_awaited)
                    .map_err(|e| e.to_string())?;
                self.repl.link.acks_awaited = plan.acks_awaited;
                self.repl.link.status = Some(LinkStatus::Up);
                self.repl.link.error = None;
                self.repl.link.backoff.reset();
                let seq = plan.seq;
                match plan.mode {
                    Mode::CatchUp => {
                        info!(
                            "{}: leader accepted; catching up from seq {} to {seq}",
                            conn.peer,
                            self.wal.last_seq()
                        );
                        conn.kind = Peer::Leader(LinkState::Streaming);
                        self.repl.link.acked_sent = self.wal.durable_seq();
                        self.ack(conn, self.wal.durable_seq());
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
                        )
                        .map_err(|e| e.to_string())?;
                        conn.kind = Peer::Leader(LinkState::Snapshot(Box::new(receiver)));
                        self.ack(conn, 0);
                    }
                }
                Ok(())
            }
            (LinkState::Snapshot(receiver), Frame::Chunk(bytes)) => receiver.push(bytes),
            // The threads finish it; `feed_peer` installs it once they are
            // done, and the link's input waits meanwhile.
            (LinkState::Snapshot(receiver), Frame::End { seq }) => receiver.end(seq),
            (LinkState::Streaming, Frame::Records(mut bytes)) => {
                while !bytes.is_empty() {
                    let Ok(Decoded::Record(rec, used)) = Record::decode(bytes) else {
                        return Err("a damaged record in the stream".into());
                    };
                    self.wal
                        .append_replicated(&mut self.store, &rec, &bytes[..used])
                        .map_err(|e| e.to_string())?;
                    self.repl.link.leader_seq = self.repl.link.leader_seq.max(rec.seq);
                    bytes = &bytes[used..];
                }
                Ok(())
            }
            (LinkState::Streaming | LinkState::Snapshot(_), Frame::Wait { awaited }) => {
                self.wal.defer_syncs(!awaited).map_err(|e| e.to_string())?;
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
            (_, Frame::Heartbeat { seq, epoch }) => {
                if !plausible_epoch(epoch, self.known_epoch()) {
                    return Err(format!(
                        "a heartbeat claims epoch {epoch}, more than {MAX_EPOCH_LEAP} above the \
                         highest this node knows ({})",
                        self.known_epoch()
                    ));
                }
                self.repl.link.leader_seq = seq;
                if epoch < self.known_epoch() {
                    error!(
                        "{}: the leader is at epoch {epoch}, but epoch {} exists: it was replaced; \
                         not following it",
                        conn.peer,
                        self.known_epoch()
                    );
                    self.link_refused(format!(
                        "the leader is at epoch {epoch}, but epoch {} exists: it was replaced",
                        self.known_epoch()
                    ));
                    conn.closing = true;
                }
                Ok(())
            }
            (_, other) => Err(format!("unexpected frame from the leader: {other:?}")),
        }
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

    /// Whether connection `key` is this follower's link to its leader. A
    /// link replaced by `FOLLOW` or `PROMOTE` stays open until the end of
    /// the loop turn; what it still brings (a plan that would clear the
    /// permission `FOLLOW` gave to drop writes, records of the old leader)
    /// is ignored, and its close changes nothing.
    pub fn is_current_link(&self, key: usize) -> bool {
        self.repl.link.key == Some(key)
    }

    /// A line on the follower's link during the handshake.
    pub fn link_line(&mut self, conn: &mut Conn, line: &[u8]) {
        let mut kind = std::mem::replace(&mut conn.kind, Peer::AwaitHello);
        if let Peer::Leader(state) = &mut kind {
            self.link_handshake(conn, state, line);
        }
        conn.kind = kind;
    }

    fn link_handshake(&mut self, conn: &mut Conn, state: &mut LinkState, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        let id = self.config.id.to_string();
        let secret = self.config.secret.clone().unwrap_or_default();
        match state {
            LinkState::AwaitChallenge { fnonce } => {
                let mut parts = text.splitn(3, ' ');
                let (Some("CHALLENGE"), Some(lnonce), Some(lproof)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return self.link_refused_by_leader(conn, &text);
                };
                if !auth::verify(
                    &secret,
                    Prover::Leader,
                    &id,
                    fnonce,
                    lnonce,
                    lproof.as_bytes(),
                ) {
                    error!(
                        "{}: the leader could not prove the shared secret (an impostor, or a different \
                         KEYVAL_SECRET); not following it",
                        conn.peer
                    );
                    self.link_refused(
                        "the leader could not prove the shared secret (a different secret?)".into(),
                    );
                    conn.closing = true;
                    return;
                }
                let fproof = auth::proof(&secret, Prover::Follower, &id, fnonce, lnonce);
                conn.reply_with(|out| out.extend_from_slice(format!("AUTH {fproof}\n").as_bytes()));
                let session = Session::new(
                    &secret,
                    Prover::Follower,
                    Prover::Leader,
                    &id,
                    fnonce,
                    lnonce,
                );
                *state = LinkState::AwaitWelcome(Box::new(session));
            }
            LinkState::AwaitWelcome(_) if text == "HELLO LEADER" => {
                let LinkState::AwaitWelcome(session) =
                    std::mem::replace(state, LinkState::AwaitPlan)
                else {
                    unreachable!("matched above");
                };
                conn.begin_session(*session);
                Frame::Sync {
                    seq: self.wal.last_seq(),
                    epoch: self.known_epoch(),
                    want_snapshot: self.wal.snapshot_suspect(),
                    lineage: self.wal.lineage().segments().to_vec(),
                }
                .encode(conn.raw_out());
                *state = LinkState::AwaitPlan;
            }
            _ => self.link_refused_by_leader(conn, &text),
        }
    }

    /// The leader answered the handshake with an error: `<WORD>` or
    /// `<WORD> <why>`. The link shows `refused`, with the reason, until it
    /// comes up.
    fn link_refused_by_leader(&mut self, conn: &mut Conn, text: &str) {
        let (word, why) = text.split_once(' ').unwrap_or((text, ""));
        let hint = match word {
            "INVALID_SECRET_KEY" => "the leader does not share this follower's secret",
            "MAX_SIZE_EXCEEDED" => "the leader has its maximum number of followers",
            "CANNOT_ACCEPT_FOLLOWER_CONNECTION" => "that node is not a leader",
            "INVALID_HANDSHAKE_MESSAGE" => "the leader did not accept this follower's hello",
            _ if !why.is_empty() => why,
            _ => "unexpected reply",
        };
        let why = format!("{word}: {hint}");
        error!(
            "{}: the leader refused the handshake: {why}; retrying",
            conn.peer
        );
        if word == "MAX_SIZE_EXCEEDED" {
            // Room may free up: the link is down, not refused.
            self.repl.link.error = Some(why);
        } else {
            self.link_refused(why);
        }
        conn.closing = true;
    }

    /// Marks the link refused (by the leader, or by this follower's own
    /// checks) for `why`, as `INFO` shows it.
    pub fn link_refused(&mut self, why: String) {
        self.repl.link.status = Some(LinkStatus::Refused);
        self.repl.link.error = Some(why);
    }

    /// The link's socket connected: start the handshake.
    pub fn link_connected(&mut self, conn: &mut Conn) {
        let fnonce = auth::new_nonce();
        let hello = format!("HELLO FOLLOWER|{}:{fnonce}\n", self.config.id);
        conn.reply_with(|out| out.extend_from_slice(hello.as_bytes()));
        conn.kind = Peer::Leader(LinkState::AwaitChallenge { fnonce });
        info!("{}: connected to the leader", conn.peer);
    }

    /// A replication connection closed.
    pub fn on_close(&mut self, conn: &Conn, key: usize, now: Instant) {
        match &conn.kind {
            Peer::Follower(session)
                if self
                    .repl
                    .followers
                    .get(&session.id)
                    .is_some_and(|e| e.key == key) =>
            {
                let gone = self.repl.followers.remove(&session.id);
                self.repl.acks_changed = true;
                info!("{}: follower {} disconnected", conn.peer, session.id);
                if gone.is_some_and(|e| e.acks_awaited) {
                    self.assign_awaited();
                }
            }
            // A replaced link closes after its successor may have been
            // dialled, and must not orphan it (each orphan's close would
            // dial yet another link, for ever).
            Peer::Leader(_) if self.is_current_link(key) => {
                let link = &mut self.repl.link;
                link.key = None;
                if link.status != Some(LinkStatus::Refused) {
                    if link.status == Some(LinkStatus::Up) {
                        warn!("{}: lost the link to the leader", conn.peer);
                    }
                    link.status = Some(LinkStatus::Down);
                }
                link.reconnect_at = Some(now + link.backoff.next_delay());
            }
            _ => {}
        }
    }

    /// After the commit: feed every follower (leader), ack what became
    /// durable (follower).
    pub fn after_commit(&mut self, conn: &mut Conn, key: usize) {
        let mut kind = std::mem::replace(&mut conn.kind, Peer::AwaitHello);
        self.feed_peer(conn, &mut kind, key);
        conn.kind = kind;
    }

    fn feed_peer(&mut self, conn: &mut Conn, kind: &mut Peer, key: usize) {
        match kind {
            Peer::Follower(session) => {
                let want = self
                    .repl
                    .followers
                    .get(&session.id)
                    .filter(|e| e.key == key)
                    .map(|e| e.acks_awaited);
                if let (Some(told), Some(want)) = (session.told_awaited, want) {
                    if told != want {
                        info!(
                            "{}: follower {}: writes {} for its acks",
                            conn.peer,
                            session.id,
                            if want { "now wait" } else { "no longer wait" }
                        );
                        Frame::Wait { awaited: want }.encode(conn.raw_out());
                        session.told_awaited = Some(want);
                    }
                }
                let Some(feed) = &mut session.feed else {
                    return;
                };
                // The output buffer also holds what the socket already
                // took, until it drains: only what is still unsent counts.
                let room = FOLLOWER_BUF_LOW.saturating_sub(conn.pending_output());
                match feed.pump(&self.wal, conn.raw_out(), room) {
                    Ok(more) => {
                        session.behind = more;
                        if let Some(entry) = self.repl.followers.get_mut(&session.id) {
                            entry.feed_behind_file = feed.behind_file(&self.wal);
                        }
                    }
                    Err(e) => {
                        error!(
                            "{}: follower {}: {e}; disconnecting it",
                            conn.peer, session.id
                        );
                        self.repl.evict.push(key);
                    }
                }
            }
            Peer::Leader(LinkState::Streaming)
                if self.wal.leader_ack_seq() > self.repl.link.acked_sent =>
            {
                let seq = self.wal.leader_ack_seq();
                self.repl.link.acked_sent = seq;
                self.ack(conn, seq);
            }
            Peer::Leader(LinkState::Snapshot(receiver)) => {
                if receiver.holds_input() {
                    // The link is not read meanwhile: its silence is ours.
                    self.repl.link.last_heard = Some(Instant::now());
                }
                match receiver.poll() {
                    None => {}
                    Some(Ok(snapshot)) => {
                        if let Err(why) = self.install(conn, snapshot) {
                            error!("{}: replication stream: {why}; closing the link", conn.peer);
                            conn.closing = true;
                        }
                        *kind = Peer::Leader(LinkState::Streaming);
                    }
                    Some(Err(why)) => {
                        error!(
                            "{}: receiving the snapshot: {why}; closing the link",
                            conn.peer
                        );
                        conn.closing = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Puts a received snapshot in place of the log and the store, and
    /// acknowledges it.
    fn install(&mut self, conn: &mut Conn, snapshot: Snapshot) -> Result<(), String> {
        let (seq, keys, bytes) = (snapshot.last_seq, snapshot.store.len(), snapshot.bytes);
        let (receiving, finishing) = (snapshot.receiving, snapshot.finishing);
        self.wal
            .install_snapshot(
                snapshot.temp,
                snapshot.header,
                snapshot.lineage,
                snapshot.last_seq,
            )
            .map_err(|e| format!("installing the snapshot: {e}"))?;
        // Freeing a large old store takes tens of milliseconds.
        drop_off_loop(std::mem::replace(&mut self.store, snapshot.store));
        self.cancel_compaction();
        info!(
            "{}: installed a snapshot: seq {seq}, {keys} keys, {bytes} bytes (received in {:.2} s, \
             finished {:.3} s after its end)",
            conn.peer,
            receiving.as_secs_f64(),
            finishing.as_secs_f64()
        );
        self.repl.link.acked_sent = seq;
        self.ack(conn, seq);
        Ok(())
    }

    /// Once a second: heartbeats, and dropping peers that went silent or
    /// stopped reading.
    pub fn tick(&mut self, conn: &mut Conn, key: usize, now: Instant) {
        let mut kind = std::mem::replace(&mut conn.kind, Peer::AwaitHello);
        self.tick_peer(conn, &mut kind, key, now);
        conn.kind = kind;
    }

    fn tick_peer(&mut self, conn: &mut Conn, kind: &mut Peer, key: usize, now: Instant) {
        let epoch = self.wal.lineage().current().epoch;
        match kind {
            Peer::Follower(session) => {
                if now.duration_since(session.last_heard) > LINK_TIMEOUT {
                    warn!(
                        "{}: follower {} silent for {:?}; disconnecting it",
                        conn.peer, session.id, LINK_TIMEOUT
                    );
                    self.repl.evict.push(key);
                    return;
                }
                let (mark, since) = session.stall_mark;
                if conn.wants_write() && conn.written_total == mark {
                    if now.duration_since(since) > LINK_TIMEOUT {
                        warn!(
                            "{}: follower {} stopped reading ({} bytes waiting); disconnecting it, it \
                             catches up when it reconnects",
                            conn.peer,
                            session.id,
                            conn.pending_output()
                        );
                        self.repl.evict.push(key);
                        return;
                    }
                } else {
                    session.stall_mark = (conn.written_total, now);
                }
                Frame::Heartbeat {
                    seq: self.wal.committed_seq(),
                    epoch,
                }
                .encode(conn.raw_out());
            }
            Peer::Leader(state) => {
                let silent = self
                    .repl
                    .link
                    .last_heard
                    .is_some_and(|t| now.duration_since(t) > LINK_TIMEOUT);
                if silent {
                    warn!(
                        "{}: leader silent for {:?}; reconnecting",
                        conn.peer, LINK_TIMEOUT
                    );
                    self.repl.evict.push(key);
                } else if matches!(state, LinkState::Streaming | LinkState::Snapshot(_)) {
                    self.ack(conn, self.repl.link.acked_sent);
                }
            }
            _ => {}
        }
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
    fn rewind(&mut self, conn: &mut Conn, to: u64, keep_forks: usize) -> Result<(), String> {
        match self.wal.rewind(&mut self.store, to, keep_forks) {
            Ok((store, dropped)) => {
                self.store = store;
                self.cancel_compaction();
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
                self.link_refused(format!(
                    "{e}; empty this node's data directory to resync it with a snapshot"
                ));
                conn.closing = true;
                Ok(())
            }
            Err(e) => Err(format!("rewinding the log: {e}")),
        }
    }

    /// Whether a follower on `conn` has more to be sent and room for it: the
    /// loop must come round again without waiting for an event (a socket
    /// that took everything raises none).
    pub fn wants_pump(conn: &Conn) -> bool {
        matches!(&conn.kind, Peer::Follower(s) if s.behind)
            && conn.pending_output() < FOLLOWER_BUF_LOW
    }

    /// Followers told that client writes wait for their acks.
    pub(super) fn awaited_count(&self) -> usize {
        self.repl
            .followers
            .values()
            .filter(|e| e.acks_awaited)
            .count()
    }

    /// With `--sync-followers N`, N followers are told that client writes
    /// wait for their acks, and fsync every batch; the others defer their
    /// fsyncs (see `Wal::defer_syncs`), which leaves the disk to the ones
    /// that matter. When one of the N goes, the most advanced of the others
    /// takes its place (told with a `WAIT` frame by `feed_peer`).
    fn assign_awaited(&mut self) {
        while self.awaited_count() < self.policy().followers {
            let next = self
                .repl
                .followers
                .values_mut()
                .filter(|e| e.accepted && !e.acks_awaited)
                .max_by_key(|e| e.acked);
            match next {
                Some(entry) => entry.acks_awaited = true,
                None => break,
            }
        }
    }

    /// The seq through which held writes may be answered: the local ack
    /// point, and with `--sync-followers N` the N-th highest follower ack.
    pub fn release_point(&self, local: u64) -> u64 {
        let n = self.policy().followers;
        if n == 0 {
            return local;
        }
        let mut acks: Vec<u64> = self
            .repl
            .followers
            .values()
            .filter(|e| e.accepted)
            .map(|e| e.acked)
            .collect();
        if acks.len() < n {
            return 0;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        local.min(acks[n - 1])
    }

    /// `INFO` lines about replication.
    pub fn replication_info(&self, lines: &mut Vec<String>) {
        let policy = self.policy();
        lines.push(format!("sync_followers {}", policy.followers));
        lines.push(format!("sync_timeout_ms {}", policy.timeout_ms));
        lines.push(format!("sync_policy {}", self.policy_source()));
        match self.role.role {
            Role::Leader => {
                let connected: Vec<(&u32, &FollowerEntry)> = self
                    .repl
                    .followers
                    .iter()
                    .filter(|(_, e)| e.accepted)
                    .collect();
                lines.push(format!("followers {}", connected.len()));
                for (id, e) in connected {
                    let lag = self.wal.last_seq().saturating_sub(e.acked);
                    lines.push(format!(
                        "follower_{id} addr={} acked={} lag={lag}",
                        e.addr, e.acked
                    ));
                }
            }
            Role::Follower => {
                let link = &self.repl.link;
                let status = match link.status {
                    Some(LinkStatus::Up) => "up",
                    Some(LinkStatus::Refused) => "refused",
                    _ => "down",
                };
                lines.push(format!("leader_link {status}"));
                if let (false, Some(why)) = (link.status == Some(LinkStatus::Up), &link.error) {
                    lines.push(format!("leader_link_error {}", one_line(why)));
                }
                if let Some(leader) = &self.role.leader {
                    lines.push(format!("leader {}:{}", leader.host, leader.port));
                }
                lines.push(format!("leader_seq {}", link.leader_seq));
                lines.push(format!(
                    "acks_awaited {}",
                    if link.acks_awaited { "yes" } else { "no" }
                ));
                lines.push(format!(
                    "lag {}",
                    link.leader_seq.saturating_sub(self.wal.last_seq())
                ));
            }
        }
    }
}

/// `text` on one line, for an `INFO` value.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Drops `value` on a short-lived thread (or here, if none can start).
fn drop_off_loop<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}
