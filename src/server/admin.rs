//! The admin channel: its handshake and the commands that change what a
//! node is (`PROMOTE`, `FOLLOW`, `FENCE`, `COMPACT`).
//!
//! ```text
//! A: HELLO ADMIN|<anonce>
//! N: CHALLENGE <nnonce> <nproof>   nproof = HMAC(secret, "keyval-leader|admin|<anonce>|<nnonce>")
//! A: AUTH <aproof>                 aproof = HMAC(secret, "keyval-admin|admin|<anonce>|<nnonce>")
//! N: HELLO SERVER                  then every client command, plus the admin ones
//! ```
//!
//! The same mutual proof as a follower's (`docs/protocol.md`), so an admin
//! tool never sends the secret and never talks to an impostor. Role changes
//! are persisted (see [`role`](super::role)) before they are answered.

use std::time::Instant;

use log::{error, info, warn};

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::node::Node;
use super::replica::LinkStatus;
use crate::config::{leader_is_self, LeaderAddr, Lookup, Role};
use crate::protocol::{AdminRequest, Reply};
use crate::replication::auth::{self, Prover};
use crate::replication::session::Session;
use crate::replication::{plausible_epoch, MAX_EPOCH_LEAP};

/// The id an admin connection proves under.
const ADMIN_ID: &str = "admin";

impl Node {
    /// `HELLO ADMIN|<anonce>`: challenge it.
    pub fn admin_hello(&mut self, conn: &mut Conn, anonce: &[u8]) {
        let refuse = |conn: &mut Conn, reply: &[u8], why: &str| {
            throttled!(warn, "admin-refused", "{}: admin refused: {why}", conn.peer);
            conn.reply_with(|out| out.extend_from_slice(reply));
            conn.closing = true;
        };
        if !auth::is_nonce(anonce) {
            return refuse(conn, Reply::InvalidHandshake.as_bytes(), "malformed nonce");
        }
        let Some(secret) = &self.config.secret else {
            return refuse(conn, b"INVALID_SECRET_KEY\n", "no secret configured");
        };
        let anonce = String::from_utf8_lossy(anonce).into_owned();
        let nnonce = auth::new_nonce();
        let nproof = auth::proof(secret, Prover::Leader, ADMIN_ID, &anonce, &nnonce);
        conn.reply_with(|out| {
            out.extend_from_slice(format!("CHALLENGE {nnonce} {nproof}\n").as_bytes())
        });
        conn.kind = Peer::AdminAuth { anonce, nnonce };
    }

    /// `AUTH <aproof>` on a challenged admin connection.
    pub fn admin_auth(&mut self, conn: &mut Conn, line: &[u8]) {
        let Peer::AdminAuth { anonce, nnonce } = &conn.kind else {
            return;
        };
        let secret = self.config.secret.as_deref().unwrap_or_default();
        let proof = line
            .strip_prefix(b"AUTH ")
            .or_else(|| line.strip_prefix(b"auth "));
        let reply: &[u8] = match proof {
            None => Reply::InvalidHandshake.as_bytes(),
            Some(p) if auth::verify(secret, Prover::Admin, ADMIN_ID, anonce, nnonce, p) => {
                info!("{}: admin authenticated", conn.peer);
                let session = Session::new(
                    secret,
                    Prover::Leader,
                    Prover::Admin,
                    ADMIN_ID,
                    anonce,
                    nnonce,
                );
                conn.kind = Peer::Admin;
                conn.reply(Reply::HelloServer);
                conn.begin_session(session);
                return;
            }
            Some(_) => b"INVALID_SECRET_KEY\n",
        };
        throttled!(
            warn,
            "admin-refused",
            "{}: admin refused: {}",
            conn.peer,
            String::from_utf8_lossy(reply).trim_end()
        );
        conn.reply_with(|out| out.extend_from_slice(reply));
        conn.closing = true;
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
            AdminRequest::Compact => {
                if self.compact_now() {
                    "OK".into()
                } else {
                    "COMPACTION_NOT_STARTED (one is running, or the log failed)".into()
                }
            }
        };
        info!("{}: admin {asked}: {reply}", conn.peer);
        conn.reply_with(|out| {
            out.extend_from_slice(reply.as_bytes());
            out.push(b'\n');
        });
    }

    /// `PROMOTE`: a follower (or a fenced leader) begins a new history one
    /// epoch above any it knows, and takes writes.
    fn promote(&mut self) -> String {
        if self.is_writable_leader() {
            return "WRONG_ROLE leader".into();
        }
        let from = self.wal.lineage().current();
        let Some(epoch) = self.known_epoch().checked_add(1) else {
            return "ERROR no epoch above the highest known".into();
        };
        let segment = match self
            .wal
            .defer_syncs(false)
            .and_then(|()| self.wal.fork(&mut self.store, epoch))
        {
            Ok(segment) => segment,
            Err(e) => {
                error!("promotion failed: {e}");
                return "ERROR".into();
            }
        };
        if let Some(key) = self.repl.link.key.take() {
            self.repl.evict.push(key);
        }
        self.repl.link.status = None;
        self.role.role = Role::Leader;
        self.role.leader = None;
        self.role.fenced = false;
        self.role.may_discard = false;
        self.role.epoch_seen = epoch;
        self.save_role();
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
        format!("OK epoch {epoch} seq {}", segment.start)
    }

    /// `FOLLOW <host> <port>`: become (or stay) a follower, of that node.
    /// Writes this node holds that the new leader lacks may be dropped.
    fn follow(&mut self, leader: LeaderAddr) -> String {
        if self.config.secret.is_none() {
            return "ERROR no secret to follow with".into();
        }
        let port = self.listen_port;
        if let Some(addr) = leader_is_self(self.config.bind, port, &leader, Lookup::NoDns) {
            warn!(
                "FOLLOW {}:{} refused: that is this node itself ({addr})",
                leader.host, leader.port
            );
            return format!(
                "INVALID_LEADER {}:{} is this node itself (it listens on {}:{port})",
                leader.host, leader.port, self.config.bind
            );
        }
        if self.role.role == Role::Leader {
            let followers: Vec<usize> = self.repl.followers.values().map(|e| e.key).collect();
            self.repl.evict.extend(followers);
            self.drop_held = true;
        }
        if let Some(key) = self.repl.link.key.take() {
            self.repl.evict.push(key);
        }
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
        let link = &mut self.repl.link;
        link.status = Some(LinkStatus::Down);
        link.error = None;
        link.backoff.reset();
        link.reconnect_at = Some(Instant::now());
        "OK".into()
    }

    /// `FENCE`: a leader stops taking writes (the first step of a planned
    /// switchover).
    fn fence(&mut self) -> String {
        if self.role.role != Role::Leader {
            return "WRONG_ROLE follower".into();
        }
        if !self.role.fenced {
            self.role.fenced = true;
            self.save_role();
            warn!("fenced by an admin: this leader takes no more writes");
        }
        format!("OK seq {}", self.wal.last_seq())
    }

    /// News of `epoch` from `source`: a leader that hears of a higher epoch
    /// was replaced by a promotion and stops taking writes.
    ///
    /// # Errors
    /// An epoch implausibly far above any this node knows
    /// ([`MAX_EPOCH_LEAP`]): a protocol error, and nothing is learned.
    pub fn learn_epoch(&mut self, epoch: u64, source: &str) -> Result<(), String> {
        let known = self.known_epoch();
        if !plausible_epoch(epoch, known) {
            return Err(format!(
                "{source} claims epoch {epoch}, more than {MAX_EPOCH_LEAP} above the highest \
                 this node knows ({known}); not believed"
            ));
        }
        if epoch <= known {
            return Ok(());
        }
        self.role.epoch_seen = epoch;
        if self.role.role == Role::Leader && !self.role.fenced {
            self.role.fenced = true;
            error!(
                "{source} knows epoch {epoch}, above this leader's {}: another node was promoted. \
                 This node takes no more writes (WRITE_NOT_ALLOWED); re-point it with \
                 `keyval-ctl --port <this port> follow <new leader host> <port>`",
                self.wal.lineage().current().epoch
            );
        }
        self.save_role();
        Ok(())
    }
}
