//! The admin channel: its handshake (see
//! [`handshake`](crate::replication::handshake)) and the commands that
//! change what a node is (`PROMOTE`, `FOLLOW`, `FENCE`, `COMPACT`).
//!
//! An admin proves the shared secret the way a follower does
//! (`docs/protocol.md`), so an admin tool never sends the secret and never
//! talks to an impostor. Role changes are persisted (see
//! [`role`](super::role)) before they are answered.

use std::time::Instant;

use log::{error, info, warn};

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use crate::config::{leader_is_self, LeaderAddr, Lookup, Role};
use crate::protocol::{AdminReply, AdminRequest, Reply};
use crate::replication::epoch;
use crate::replication::handshake::Challenged;

impl Node {
    /// `AUTH <aproof>` on a challenged admin connection.
    pub fn admin_auth(&mut self, conn: &mut Conn, challenged: &Challenged, line: &[u8]) {
        let secret = self.config.secret.as_deref().unwrap_or_default();
        match challenged.answer(secret, line) {
            Ok(session) => {
                info!("{}: admin authenticated", conn.peer);
                conn.kind = Peer::Admin;
                conn.reply(Reply::HelloServer);
                conn.begin_session(session);
            }
            Err(refusal) => {
                throttled!(
                    warn,
                    "admin-refused",
                    "{}: admin refused: {refusal}",
                    conn.peer
                );
                conn.refuse(&refusal.reply());
            }
        }
    }

    /// An admin command on an authenticated admin connection.
    pub fn admin(&mut self, conn: &mut Conn, request: AdminRequest<'_>) {
        let asked = match &request {
            AdminRequest::Follow { host, port } => {
                format!("FOLLOW {} {port}", String::from_utf8_lossy(host))
            }
            other => format!("{other:?}").to_uppercase(),
        };
        let reply = match request {
            AdminRequest::Promote => self.promote(),
            AdminRequest::Follow { host, port } => {
                self.follow(LeaderAddr::new(&String::from_utf8_lossy(host), port))
            }
            AdminRequest::Fence => self.fence(),
            AdminRequest::Compact if self.compact_now() => AdminReply::Ok,
            AdminRequest::Compact => AdminReply::CompactionNotStarted,
        };
        info!("{}: admin {asked}: {reply}", conn.peer);
        conn.reply_with(|out| out.extend_from_slice(format!("{reply}\n").as_bytes()));
    }

    /// `PROMOTE`: a follower (or a fenced leader) begins a new history one
    /// epoch above any it knows, and takes writes.
    fn promote(&mut self) -> AdminReply {
        if self.is_writable_leader() {
            return AdminReply::WrongRole("leader");
        }
        let from = self.wal.lineage().current();
        let Some(epoch) = epoch::next(self.known_epoch()) else {
            return AdminReply::NoEpochLeft;
        };
        let segment = match self
            .wal
            .defer_syncs(false)
            .and_then(|()| self.wal.fork(&mut self.store, epoch))
        {
            Ok(segment) => segment,
            Err(e) => {
                error!("promotion failed: {e}");
                return AdminReply::Error;
            }
        };
        self.repl.evict.extend(self.repl.link.stop());
        self.repl.receiver = None;
        self.role.role = Role::Leader;
        self.role.leader = None;
        self.role.fenced = false;
        self.role.may_discard = false;
        self.role.epoch_seen = epoch;
        self.save_role();
        self.begin_quiet(Instant::now());
        self.hold_reads_if_leading();
        let policy = self.policy();
        warn!(
            "promoted to leader: history {} epoch {epoch}, forked from history {} at seq {}; \
             writes wait for {} follower(s) (the output rule from its {})",
            hex::encode(segment.history),
            hex::encode(from.history),
            segment.start,
            policy.followers,
            self.policy_source()
        );
        AdminReply::Promoted {
            epoch,
            seq: segment.start,
        }
    }

    /// `FOLLOW <host> <port>`: become (or stay) a follower, of that node.
    /// Writes this node holds that the new leader lacks may be dropped.
    fn follow(&mut self, leader: LeaderAddr) -> AdminReply {
        if self.config.secret.is_none() {
            return AdminReply::NoSecret;
        }
        let port = self.listen_port;
        if let Some(addr) = leader_is_self(self.config.bind, port, &leader, Lookup::NoDns) {
            warn!(
                "FOLLOW {}:{} refused: that is this node itself ({addr})",
                leader.host, leader.port
            );
            return AdminReply::InvalidLeader {
                leader: format!("{}:{}", leader.host, leader.port),
                listen: format!("{}:{port}", self.config.bind),
            };
        }
        if self.role.role == Role::Leader {
            let followers = self.repl.leader.clear();
            self.repl.evict.extend(followers);
            self.drop_held = true;
        }
        self.repl
            .evict
            .extend(self.repl.link.restart(Instant::now()));
        self.repl.receiver = None;
        warn!(
            "now following {}:{} (was a {}{})",
            leader.host,
            leader.port,
            self.role_name(),
            if self.role.fenced { ", fenced" } else { "" }
        );
        self.role.role = Role::Follower;
        self.role.leader = Some(leader);
        self.role.fenced = false;
        self.role.may_discard = true;
        self.save_role();
        AdminReply::Ok
    }

    /// `FENCE`: a leader stops taking writes (the first step of a planned
    /// switchover).
    fn fence(&mut self) -> AdminReply {
        if self.role.role != Role::Leader {
            return AdminReply::WrongRole("follower");
        }
        if !self.role.fenced {
            self.role.fenced = true;
            self.save_role();
            warn!("fenced by an admin: this leader takes no more writes");
        }
        AdminReply::Fenced {
            seq: self.wal.last_seq(),
        }
    }
}
