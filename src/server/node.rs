//! The node's state and what requests do to it: the store, the log, the
//! role, compaction and the fsync timer.
//!
//! The loop hands each request line here with the connection it came on;
//! replies are queued on that connection. Replies to writes are held until
//! the write is durable (the sync thread reports through the loop's waker,
//! and [`Node::commit`] takes the report in). So are replies to reads made
//! while some write is not yet durable, since they may show it: no client
//! sees a value that a disk error could still take back.
//!
//! `DIGEST` and `KEYS` over more than a few thousand keys are computed on a
//! worker thread from the log ([`super::jobs`]); their replies are held
//! until the job's result comes in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::Waker;

use super::conn::{Conn, Peer};
use super::held::{Seen, WriteReply};
use super::jobs::{Answer, Jobs, INLINE_MAX_KEYS};
use super::limits::Budget;
use super::role::{role_word, RoleState};
use crate::access::{self, AuthOutcome, Verdict};
use crate::config::{Config, Role};
use crate::error::Error;
use crate::protocol::{self, Reply, Request};
use crate::query::Query;
use crate::reads::{ReadMode, Unreleased};
use crate::replication::auth;
use crate::replication::epoch::{self, EpochLeap, EpochNews};
use crate::replication::{Replication, SyncPolicy, LEASE, PROBE_INTERVAL};
use crate::store::Store;
use crate::wal::compact::Compaction;
use crate::wal::record::Op;
use crate::wal::{FsyncPolicy, Wal};

/// The line protocol's reply to a write that succeeded.
const OK_LINE: WriteReply = WriteReply::Fixed(b"OK\n");

/// Wait before retrying a compaction that failed.
const COMPACTION_RETRY: Duration = Duration::from_secs(30);

/// Period of the `--fsync everysec` flush.
const EVERYSEC: Duration = Duration::from_secs(1);

/// How long a follower of a leader that waits for no acks lets written
/// records wait for their fsync (see `Wal::defer_syncs`). Measured with two
/// followers on the leader's machine, 50 clients writing one request at a
/// time: fsyncing every batch at once cost the leader about a quarter of
/// its writes per second.
const DEFERRED_SYNC: Duration = Duration::from_millis(10);

/// Everything a request can act on.
pub struct Node {
    pub config: Config,
    pub store: Store,
    pub wal: Wal,
    /// Wakes the loop when a compaction, a log sync or a snapshot being
    /// received needs it.
    pub(super) waker: Arc<Waker>,
    /// The compaction in progress, if any.
    compaction: Option<Compaction>,
    /// `DIGEST` and `KEYS` computed off the loop.
    jobs: Jobs,
    /// The books of unread client output (`--max-output-bytes`,
    /// `--max-output-total-bytes`); the loop keeps them.
    pub budget: Budget,
    /// Drawn once when the node opens, so once per process (INFO
    /// `run_id`): tells one process of this node from the next.
    run_id: String,
    /// Finished compactions since start (INFO `compactions`).
    compactions: u64,
    /// No new compaction before this (after a failure).
    compaction_not_before: Option<Instant>,
    /// Next `--fsync everysec` flush.
    next_fsync: Option<Instant>,
    /// When the records a deferred fsync owes get it.
    deferred_sync_at: Option<Instant>,
    /// A compaction is due but waits for a follower's feed (logged once).
    compaction_held: bool,
    /// Followers (on a leader) or the link to the leader (on a follower).
    pub repl: Replication,
    /// The role now (flags, then the state file, then admin commands).
    pub role: RoleState,
    /// The role changed away from leader this turn: held writes can no
    /// longer be confirmed and are answered `ERROR`.
    pub drop_held: bool,
    /// On a leader with `--sync-followers`: each key's newest write that
    /// has not passed the output rule, which reads of that key must wait
    /// for (see [`crate::reads`]).
    unreleased: Unreleased,
    /// Whether reads waited for acks at the last turn: becoming such a
    /// leader holds the whole log back from reads until followers hold it.
    reads_held: bool,
    /// After a promotion: until then this node keeps the promise its last
    /// `CONFIRM`s made to the old leader ([`LEASE`]): it acknowledges no
    /// write past the seq it was promoted at, and answers no read.
    quiet: Option<(Instant, u64)>,
    /// The port the node listens on (`--port`, or the one picked for
    /// `--port 0`; set once bound): `FOLLOW` refuses this node's own
    /// address.
    pub listen_port: u16,
    /// When the node opened (`INFO uptime_in_seconds`).
    pub(super) started: Instant,
    /// The last Redis client id given (`CLIENT ID`).
    pub(super) next_client_id: u64,
    /// Client connections now, as the loop last counted them (`INFO`).
    pub clients: usize,
    /// When the last `SCAN` came: the store's scan index is dropped after
    /// [`SCAN_INDEX_IDLE`] without one.
    pub(super) last_scan: Option<Instant>,
}

/// How long the store keeps its `SCAN` index after the last `SCAN`.
const SCAN_INDEX_IDLE: Duration = Duration::from_secs(60);

impl Node {
    /// Opens and replays the log named by the config.
    ///
    /// # Errors
    /// Log errors (damage, locks, IO) and an unusable data directory.
    pub fn open(config: Config, waker: Arc<Waker>) -> Result<Node, Error> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
            what: format!("create data dir {}", config.data_dir.display()),
            source: e,
        })?;
        let role = Node::starting_role(&config)?;
        if let Some(learned) = role.policy.filter(|_| role.role == Role::Leader) {
            let flags = (config.sync_followers, config.sync_timeout_ms);
            if flags.0.is_some_and(|n| n != learned.followers)
                || flags.1.is_some_and(|ms| ms != learned.timeout_ms)
            {
                warn!(
                    "--sync-followers/--sync-timeout-ms override the cluster's output rule this \
                     node learned from its leader ({} follower(s), {} ms)",
                    learned.followers, learned.timeout_ms
                );
            }
        }
        let path = config.data_dir.join(&role.log);
        let started = Instant::now();
        let mut opened = Wal::open(&path, config.fsync)?;
        if config.fsync != FsyncPolicy::No {
            let waker = Arc::clone(&waker);
            opened.wal.start_sync_thread(Box::new(move || {
                let _ = waker.wake();
            }))?;
        }
        info!(
            "{}: replayed to seq {} ({} keys, {} bytes) in {:.3}s",
            path.display(),
            opened.wal.last_seq(),
            opened.store.len(),
            opened.wal.len_bytes(),
            started.elapsed().as_secs_f64()
        );
        if role.role == Role::Leader && config.secret.is_none() {
            warn!(
                "no shared secret (KEYVAL_SECRET or --secret-file): every follower will be refused"
            );
        }
        if config.password.is_none() && !access::is_loopback(config.bind) {
            if config.protected_mode {
                warn!(
                    "protected mode: no client password is set, so clients from other hosts are \
                     refused (DENIED); set --password-file or KEYVAL_PASSWORD, or use \
                     --protected-mode no"
                );
            } else {
                warn!("no client password and --protected-mode no: any host can read and write");
            }
        }
        if role.role == Role::Leader && !role.fenced && opened.wal.last_seq() > 0 {
            // Whatever this log lost at the last stop (an unsynced tail, a
            // restore from backup) was never written in the new history,
            // so no follower can mistake it for what comes next.
            let epoch = opened.wal.lineage().current().epoch;
            let segment = opened.wal.fork(&mut opened.store, epoch)?;
            info!(
                "leader started history {} at seq {} (epoch {epoch})",
                hex::encode(segment.history),
                segment.start
            );
        }
        let next_fsync = (config.fsync == FsyncPolicy::EverySec).then(|| Instant::now() + EVERYSEC);
        let job_waker = Arc::clone(&waker);
        let jobs = Jobs::new(Arc::new(move || {
            let _ = job_waker.wake();
        }));
        let budget = Budget::new(config.max_output_bytes, config.max_output_total_bytes);
        Ok(Node {
            config,
            budget,
            store: opened.store,
            wal: opened.wal,
            waker,
            compaction: None,
            jobs,
            run_id: auth::new_nonce(),
            compactions: 0,
            compaction_not_before: None,
            next_fsync,
            deferred_sync_at: None,
            compaction_held: false,
            repl: Replication::new(Instant::now()),
            role,
            drop_held: false,
            unreleased: Unreleased::default(),
            reads_held: false,
            quiet: None,
            listen_port: 0,
            started: Instant::now(),
            next_client_id: 0,
            clients: 0,
            last_scan: None,
        })
    }

    /// The flags' role, unless the data directory's state file (written by
    /// an earlier promotion, re-pointing or fencing) says otherwise.
    fn starting_role(config: &Config) -> Result<RoleState, Error> {
        let flags = RoleState::from_config(config);
        let Some(saved) = RoleState::load(&config.data_dir, config.id)? else {
            return Ok(flags);
        };
        if saved.role != flags.role || saved.leader != flags.leader || saved.fenced {
            let following = saved
                .leader
                .as_ref()
                .map(|l| format!(" of {}:{}", l.host, l.port))
                .unwrap_or_default();
            warn!(
                "{} says this node is a {}{following}{} since a role change; that wins over the \
                 flags (--role {}). Use keyval-ctl to change it.",
                RoleState::path(&config.data_dir, config.id).display(),
                role_word(saved.role),
                if saved.fenced { ", fenced" } else { "" },
                role_word(flags.role),
            );
        }
        Ok(saved)
    }

    /// Whether this node takes writes.
    pub fn is_writable_leader(&self) -> bool {
        self.role.role == Role::Leader && !self.role.fenced
    }

    /// The output rule this node enforces as a leader: its flags where
    /// given, else what its leader last announced (kept in the state file),
    /// else none.
    pub fn policy(&self) -> SyncPolicy {
        let learned = self.role.policy.unwrap_or(SyncPolicy::DEFAULT);
        SyncPolicy {
            followers: self.config.sync_followers.unwrap_or(learned.followers),
            timeout_ms: self.config.sync_timeout_ms.unwrap_or(learned.timeout_ms),
        }
    }

    /// Where [`Node::policy`] comes from, for `INFO`.
    pub fn policy_source(&self) -> &'static str {
        if self.config.sync_followers.is_some() || self.config.sync_timeout_ms.is_some() {
            "flags"
        } else if self.role.policy.is_some() {
            "leader"
        } else {
            "default"
        }
    }

    /// The highest epoch this node knows of.
    pub fn known_epoch(&self) -> u64 {
        self.role.epoch_seen.max(self.wal.lineage().current().epoch)
    }

    /// Persists the role; a failure is logged (the change still holds in
    /// memory, and the operator is told it may not survive a restart).
    pub fn save_role(&self) {
        if let Err(e) = self.role.save(&self.config.data_dir, self.config.id) {
            error!("{e}; the role change holds until this node restarts, but may not after");
        }
    }

    /// `leader` or `follower`.
    pub fn role_name(&self) -> &'static str {
        role_word(self.role.role)
    }

    /// `HELLO CLIENT`: welcome it, unless protected mode turns it away.
    pub fn client_hello(&mut self, conn: &mut Conn) {
        let password_set = self.config.password.is_some();
        if access::protected_refuses(self.config.protected_mode, password_set, conn.peer.ip()) {
            info!(
                "{}: client refused: protected mode (no password set, peer not on loopback)",
                conn.peer
            );
            conn.refuse(Reply::Denied.as_bytes());
            return;
        }
        conn.kind = Peer::Client;
        conn.read_mode = ReadMode::at_hello(self.is_writable_leader());
        conn.reply(Reply::HelloServer);
    }

    /// A client's (or an admin's) request. Admin commands are not run
    /// here: on a client connection they are `INVALID_COMMAND`.
    pub fn execute(&mut self, conn: &mut Conn, key: usize, request: Request<'_>) {
        // An admin proved the shared secret, which is worth the password.
        let proven = conn.authenticated || matches!(conn.kind, Peer::Admin);
        let password_set = self.config.password.is_some();
        if access::gate(password_set, proven, request.access_kind()) == Verdict::NoAuth {
            conn.reply(Reply::NoAuth);
            return;
        }
        if request.is_write() && !self.is_writable_leader() {
            let leader = self.known_leader();
            conn.reply_with(|out| protocol::encode_write_not_allowed(out, leader));
            return;
        }
        if request.reads_data() && !conn.read_mode.serves(self.is_writable_leader()) {
            // Its reads were the leader's: a copy that may be stale would
            // pass for them.
            let leader = self.known_leader();
            conn.reply_with(|out| protocol::encode_not_leader(out, leader));
            return;
        }
        match request {
            Request::Put { key, value } => self.write(conn, Op::Put, key, value, OK_LINE),
            Request::Delete { key } => {
                if self.store.get(key).is_some() {
                    self.write(conn, Op::Delete, key, b"", OK_LINE);
                } else {
                    let seen = self.read_barrier(Some(key));
                    conn.reply_seen(seen, |out| {
                        out.extend_from_slice(Reply::NotFound.as_bytes())
                    });
                }
            }
            Request::Get { key } => {
                let seen = self.read_barrier(Some(key));
                match self.store.get(key) {
                    Some(value) if !protocol::line_safe(value) => conn.reply_seen(seen, |out| {
                        out.extend_from_slice(Reply::BinaryValue.as_bytes())
                    }),
                    Some(value) => conn.reply_seen(seen, |out| protocol::encode_value(out, value)),
                    None => conn.reply_seen(seen, |out| {
                        out.extend_from_slice(Reply::NotFound.as_bytes())
                    }),
                }
            }
            Request::Keys { prefix } => self.query(
                conn,
                key,
                Query::Keys {
                    prefix: prefix.into(),
                },
            ),
            Request::Info => {
                let lines = self.info_lines();
                conn.reply_seen(self.durable_barrier(), |out| {
                    protocol::encode_list(out, lines.iter().map(String::as_bytes))
                });
            }
            Request::Digest => self.query(conn, key, Query::Digest),
            Request::Auth { password } => self.auth(conn, password.0),
            Request::Ping => conn.reply(Reply::Pong),
            Request::Close => {
                conn.reply(Reply::Bye);
                conn.closing = true;
            }
            // Admin commands need the admin handshake.
            Request::Admin(_) => conn.reply(Reply::InvalidCommand),
        }
    }

    /// `AUTH <password>`: a right one opens the gate for this connection;
    /// a wrong one leaves it as it was. The candidate is never logged.
    fn auth(&mut self, conn: &mut Conn, candidate: &[u8]) {
        match access::authenticate(self.config.password.as_ref(), candidate) {
            AuthOutcome::Accepted => {
                conn.authenticated = true;
                debug!("{}: client authenticated", conn.peer);
                conn.reply(Reply::Ok);
            }
            AuthOutcome::WrongPass => {
                debug!("{}: wrong password", conn.peer);
                conn.reply(Reply::WrongPass);
            }
            AuthOutcome::NoPasswordSet => conn.reply(Reply::NoPasswordSet),
        }
    }

    /// `DIGEST` or `KEYS` on connection `key`: from the store at once for a
    /// small data set, else by a job off the loop, over the data as of now.
    ///
    /// A job's reply is reserved against the output limits first, at the
    /// most it can be ([`Query::reply_bound`]). Without room the request is
    /// not taken: `conn.deferred` tells the loop to leave the line unread
    /// until output drains.
    pub(super) fn query(&mut self, conn: &mut Conn, key: usize, query: Query) {
        conn.deferred = None;
        let seen = self.read_barrier_all();
        if self.store.len() <= INLINE_MAX_KEYS {
            let reply = query.answer(&self.store);
            conn.reply_seen(seen, |out| out.extend_from_slice(&reply));
            return;
        }
        let reserve = query.reply_bound(&self.store);
        if !self.budget.admit_query(conn.pending_output(), reserve) {
            conn.deferred = Some(reserve);
            return;
        }
        let hold = self
            .jobs
            .request(query, self.wal.last_seq(), self.wal.resets(), key);
        conn.hold_query(seen, hold, reserve);
    }

    /// After the commit, before a compaction is put in place: takes in
    /// finished query jobs and starts the next ones. Returns the replies to
    /// fill in.
    pub fn query_jobs(&mut self) -> Vec<Answer> {
        self.jobs.turn(&self.wal)
    }

    /// A connection closed: the query jobs it waited for need not run for
    /// it.
    pub fn forget_queries(&mut self, key: usize) {
        self.jobs.forget_conn(key);
    }

    /// Logs and applies a write; its reply `ok` waits for the commit (and
    /// the output rule).
    pub(super) fn write(
        &mut self,
        conn: &mut Conn,
        op: Op,
        key: &[u8],
        value: &[u8],
        ok: WriteReply,
    ) {
        match self.wal.append(&mut self.store, op, key, value) {
            Ok(seq) => {
                self.note_unreleased(std::iter::once(key), seq);
                self.hold_write(conn, seq, ok);
            }
            Err(e) => self.write_failed(conn, &e),
        }
    }

    /// On a sync leader, reads of `keys` wait for write `seq` to pass the
    /// output rule.
    pub(super) fn note_unreleased<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>, seq: u64) {
        if self.reads_wait_for_acks() {
            for key in keys {
                self.unreleased.note(key, seq);
            }
        }
    }

    /// This process's `run_id`.
    pub(super) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether a compaction runs.
    pub(super) fn is_compacting(&self) -> bool {
        self.compaction.is_some()
    }

    /// Holds the reply to write `seq` until it is acknowledged, with the
    /// output rule's deadline.
    pub(super) fn hold_write(&mut self, conn: &mut Conn, seq: u64, ok: WriteReply) {
        let policy = self.policy();
        let wait = policy.followers > 0 && policy.timeout_ms > 0;
        let deadline = wait.then(|| Instant::now() + Duration::from_millis(policy.timeout_ms));
        if let Peer::Redis(client) = &mut conn.kind {
            client.last_write = seq;
        }
        conn.hold(seq, deadline, ok);
    }

    /// A write the log refused: `ERROR` (`-ERR <why>` on the Redis face).
    pub(super) fn write_failed(&self, conn: &mut Conn, why: &dyn std::fmt::Display) {
        if matches!(conn.kind, Peer::Redis(_)) {
            let text = format!("ERR write refused: {why}");
            conn.reply_with(|out| crate::resp::encode::error(out, &text));
        } else {
            conn.reply(Reply::Error);
        }
    }

    /// A node that just became a leader whose reads wait for acks (at
    /// start, or promoted) cannot tell which writes of its log passed the
    /// output rule before: they all wait for its followers to hold them.
    pub fn hold_reads_if_leading(&mut self) {
        let now = self.reads_wait_for_acks();
        if now && !self.reads_held {
            self.unreleased.hold_all_through(self.wal.last_seq());
        }
        self.reads_held = now;
    }

    /// Where a client should go instead of this node: its leader, on a
    /// follower that knows one.
    pub(super) fn known_leader(&self) -> Option<(&str, u16)> {
        match (&self.role.leader, self.role.role) {
            (Some(leader), Role::Follower) => Some((leader.host.as_str(), leader.port)),
            _ => None,
        }
    }

    /// Whether reads wait for the writes they show to pass the output
    /// rule: on a writable leader with `--sync-followers N ≥ 1`.
    pub(super) fn reads_wait_for_acks(&self) -> bool {
        self.is_writable_leader() && self.policy().followers > 0
    }

    /// What a read of `key` (of the whole data set for `None`) must wait
    /// for before it is answered, or `None` if it shows nothing unsafe.
    ///
    /// On a leader with `--sync-followers N`, a read waits for the newest
    /// write it may show to pass the output rule, and like that write's
    /// client it gets `REPLICATION_TIMEOUT` at the write's deadline.
    /// Otherwise it waits for what it may show to be durable here.
    ///
    /// Such a read also needs the leader's read lease: N followers confirmed
    /// lately that they still follow this node, so no other leader can
    /// have acknowledged a write it would miss. Without the lease it waits
    /// for the next probe round's confirmations, sent at once.
    pub(super) fn read_barrier(&mut self, key: Option<&[u8]>) -> Option<Seen> {
        match key {
            Some(key) => self.read_barrier_of(&[key]),
            None => self.read_barrier_all(),
        }
    }

    /// [`Node::read_barrier`] for a read of all of `keys`.
    pub(super) fn read_barrier_of(&mut self, keys: &[&[u8]]) -> Option<Seen> {
        if !self.reads_wait_for_acks() {
            return self.durable_barrier();
        }
        let seq = keys.iter().filter_map(|k| self.unreleased.seq_of(k)).max();
        self.read_barrier_through(seq)
    }

    /// [`Node::read_barrier`] for a read of the whole data set.
    pub(super) fn read_barrier_all(&mut self) -> Option<Seen> {
        if !self.reads_wait_for_acks() {
            return self.durable_barrier();
        }
        self.read_barrier_through(Some(self.wal.last_seq()))
    }

    /// A sync leader's barrier for a read that may show writes through
    /// `seq`.
    fn read_barrier_through(&mut self, seq: Option<u64>) -> Option<Seen> {
        let now = Instant::now();
        let unreleased = seq.filter(|&seq| seq > self.release_point(self.wal.ack_seq()));
        let leased = self.leased(now);
        if unreleased.is_none() && leased {
            return None;
        }
        if !leased {
            self.repl.probe_soon = true;
        }
        let policy = self.policy();
        Some(Seen {
            seq: unreleased.unwrap_or(0),
            acked: true,
            deadline: (policy.timeout_ms > 0)
                .then(|| now + Duration::from_millis(policy.timeout_ms)),
            lease: !leased,
        })
    }

    /// Whether reads may be answered as the leader's at `now`: always when
    /// they need no lease; else when N followers' confirmations hold it
    /// and no promotion's quiet is running.
    pub fn leased(&self, now: Instant) -> bool {
        if !self.reads_wait_for_acks() {
            return true;
        }
        let quiet = self.quiet.is_some_and(|(until, _)| now < until);
        !quiet
            && self
                .repl
                .leader
                .lease_until(self.policy())
                .is_some_and(|until| now < until)
    }

    /// A new probe round for the read lease, if one is due at `now`; the
    /// loop sends it to every follower.
    pub fn probe_round(&mut self, now: Instant) -> Option<u64> {
        if !self.reads_wait_for_acks() {
            self.repl.next_probe = None;
            return None;
        }
        let due = self.repl.next_probe.is_none_or(|at| now >= at);
        if !due && !std::mem::take(&mut self.repl.probe_soon) {
            return None;
        }
        self.repl.probe_soon = false;
        self.repl.next_probe = Some(now + PROBE_INTERVAL);
        Some(self.repl.leader.probe(now))
    }

    /// Keeps, for [`LEASE`] after a promotion, the promise this node's
    /// `CONFIRM`s made to the leader it leaves (with `--sync-followers`).
    pub fn begin_quiet(&mut self, now: Instant) {
        if self.policy().followers > 0 {
            self.quiet = Some((now + LEASE, self.wal.last_seq()));
        }
    }

    /// What a read that may show every applied write must wait for: `Some`
    /// when writes up to the last are applied but not yet durable here.
    pub(super) fn durable_barrier(&self) -> Option<Seen> {
        let last = self.wal.last_seq();
        (last > self.wal.ack_seq()).then(|| Seen::local(last))
    }

    /// Writes through `acked` passed the output rule: reads of their keys
    /// need not wait any more.
    pub fn released(&mut self, acked: u64) {
        self.hold_reads_if_leading();
        // After a disk error the writes past the ack point are gone (their
        // reads are answered `ERROR` by the lost-writes rule), and no new
        // write is taken.
        if self.reads_wait_for_acks() && !self.wal.has_failed() {
            self.unreleased.release_through(acked);
        } else if !self.unreleased.is_empty() {
            self.unreleased.clear();
        }
    }

    /// The turn's group commit: writes the turn's records and hands their
    /// fsync to the sync thread; takes in the syncs that finished.
    ///
    /// # Returns
    /// The local ack point: the seq through which writes are durable here
    /// (under `--fsync always`). Writes from [`Wal::lost_from`] on, if the
    /// log failed, must be answered `ERROR`.
    pub fn commit(&mut self) -> u64 {
        self.wal
            .set_inline_syncs(self.repl.leader.awaited_count() == 0);
        match self.wal.commit(&mut self.store) {
            Ok(seq) => seq,
            Err(e) => {
                error!(
                    "{e}; writes not yet durable were undone and answered ERROR, and this node \
                     takes no more writes (fail-stop) until restarted"
                );
                self.wal.ack_seq()
            }
        }
    }

    /// Between-turn work: the everysec fsync, compaction, and dropping an
    /// idle `SCAN` index.
    pub fn maintain(&mut self, now: Instant) {
        if self
            .last_scan
            .is_some_and(|at| now.duration_since(at) >= SCAN_INDEX_IDLE)
        {
            self.last_scan = None;
            self.store.drop_scan_index();
        }
        if self.next_fsync.is_some_and(|at| now >= at) {
            self.next_fsync = Some(now + EVERYSEC);
            // The sync thread's report (or failure) arrives through the
            // waker and is taken in by the next commit.
            self.wal.sync_soon();
        }
        match self.deferred_sync_at {
            _ if !self.wal.sync_owed() => self.deferred_sync_at = None,
            None => self.deferred_sync_at = Some(now + DEFERRED_SYNC),
            Some(at) if now >= at => {
                self.deferred_sync_at = None;
                self.wal.sync_soon();
            }
            Some(_) => {}
        }
        if let Some(compaction) = &self.compaction {
            match compaction.poll() {
                None => {}
                Some(result) => {
                    self.compaction = None;
                    let result = result.and_then(|done| self.wal.finish_compaction(done));
                    match result {
                        Ok(()) => self.compactions += 1,
                        Err(e) => {
                            warn!("compaction failed, keeping the current log: {e}");
                            self.compaction_not_before = Some(now + COMPACTION_RETRY);
                        }
                    }
                }
            }
        } else if self.may_start_compaction(now)
            && self.wal.needs_compaction(
                &self.store,
                self.config.compact_min_bytes,
                self.config.compact_ratio,
            )
        {
            match self.feed_holding_compaction() {
                Some(id) => {
                    if !self.compaction_held {
                        self.compaction_held = true;
                        info!(
                            "compaction waits: follower {id} still reads the log file the last \
                             compaction replaced"
                        );
                    }
                }
                None => {
                    self.compaction_held = false;
                    self.start_compaction();
                }
            }
        }
    }

    /// Whether nothing stands in the way of a compaction the log's size
    /// calls for.
    fn may_start_compaction(&self, now: Instant) -> bool {
        if self.compaction_not_before.is_some_and(|at| now < at) || self.wal.has_failed() {
            return false;
        }
        // Compacting a follower's suspect log would make the records a torn
        // tail took from its snapshot part look complete; the snapshot it
        // asks for replaces the log anyway.
        !(self.role.role == Role::Follower && self.wal.snapshot_suspect())
    }

    /// The follower a compaction should wait for, if any: one whose feed
    /// still reads the file the last compaction replaced (a snapshot in
    /// progress, or a catch-up far behind). A second compaction before it
    /// moves over would drop it, and a snapshot under a steady write load
    /// could then start over forever. The log grows meanwhile, up to twice
    /// the size that calls for a compaction; past that the compaction
    /// runs, and such a follower reconnects and starts over.
    fn feed_holding_compaction(&self) -> Option<u32> {
        let id = self.repl.leader.behind_file()?;
        let far_too_big = self.wal.needs_compaction(
            &self.store,
            self.config.compact_min_bytes.saturating_mul(2),
            self.config.compact_ratio * 2.0,
        );
        (!far_too_big).then_some(id)
    }

    /// Starts a compaction now unless one is running (`COMPACT`).
    pub fn compact_now(&mut self) -> bool {
        if self.compaction.is_some() || self.wal.has_failed() {
            return false;
        }
        self.start_compaction();
        self.compaction.is_some()
    }

    fn start_compaction(&mut self) {
        info!(
            "{}: compacting ({} bytes for {} live keys)",
            self.wal.path().display(),
            self.wal.len_bytes(),
            self.store.len()
        );
        let waker = Arc::clone(&self.waker);
        match self.wal.start_compaction(Box::new(move || {
            let _ = waker.wake();
        })) {
            Ok(c) => self.compaction = Some(c),
            Err(e) => {
                warn!("cannot start compaction: {e}");
                self.compaction_not_before = Some(Instant::now() + COMPACTION_RETRY);
            }
        }
    }

    /// Forgets a running compaction (the log was replaced under it).
    pub fn cancel_compaction(&mut self) {
        self.compaction = None;
    }

    /// The nearest time the node has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let reconnect = self
            .repl
            .link
            .reconnect_at
            .filter(|_| self.role.role == Role::Follower);
        [
            self.next_fsync,
            self.deferred_sync_at,
            self.compaction_not_before
                .filter(|_| self.compaction.is_none()),
            self.repl.next_tick,
            reconnect,
            self.repl.next_probe.filter(|_| self.reads_wait_for_acks()),
            self.quiet
                .map(|(until, _)| until)
                .filter(|&u| u > Instant::now()),
            self.repl.link.quiet_until(Instant::now()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The `INFO` fields.
    fn info_lines(&self) -> Vec<String> {
        let current = self.wal.lineage().current();
        let mut lines = vec![
            format!("role {}", self.role_name()),
            format!("id {}", self.config.id),
            format!("run_id {}", self.run_id),
            format!("seq {}", self.wal.last_seq()),
            format!("history {}", hex::encode(current.history)),
            format!("epoch {}", current.epoch),
            format!("epoch_seen {}", self.known_epoch()),
            format!("history_start {}", current.start),
            format!("keys {}", self.store.len()),
            format!("log_bytes {}", self.wal.len_bytes()),
            format!("durable_seq {}", self.wal.durable_seq()),
            format!(
                "writes {}",
                if self.wal.has_failed() {
                    "failed"
                } else if self.role.fenced {
                    "fenced"
                } else {
                    "ok"
                }
            ),
            format!("compacting {}", u8::from(self.compaction.is_some())),
            format!("compactions {}", self.compactions),
            format!("torn_tails_cut {}", self.wal.counters().torn_tails_cut),
            format!(
                "torn_tails_suspect {}",
                self.wal.counters().torn_tails_suspect
            ),
            format!("fsync_failures {}", self.wal.counters().fsync_failures),
            format!("queries {}", self.jobs.unfinished()),
            format!("output_bytes {}", self.budget.total()),
            format!("output_paused {}", self.budget.paused),
        ];
        self.repl.counters.info(&mut lines);
        self.replication_info(&mut lines);
        lines
    }

    /// `INFO` lines about replication.
    fn replication_info(&self, lines: &mut Vec<String>) {
        let policy = self.policy();
        lines.push(format!("sync_followers {}", policy.followers));
        lines.push(format!("sync_timeout_ms {}", policy.timeout_ms));
        lines.push(format!("sync_policy {}", self.policy_source()));
        match self.role.role {
            Role::Leader => {
                let lease = match (self.reads_wait_for_acks(), self.leased(Instant::now())) {
                    (false, _) => "off",
                    (true, true) => "held",
                    (true, false) => "expired",
                };
                lines.push(format!("read_lease {lease}"));
                let connected: Vec<_> = self.repl.leader.connected().collect();
                lines.push(format!("followers {}", connected.len()));
                for (id, f) in connected {
                    let lag = self.wal.last_seq().saturating_sub(f.acked);
                    lines.push(format!(
                        "follower_{id} addr={} acked={} lag={lag}",
                        f.addr, f.acked
                    ));
                }
            }
            Role::Follower => {
                let mut link = Vec::new();
                self.repl.link.info(&mut link, self.wal.last_seq());
                // `leader` goes after the link's state, as it always has.
                let at = link
                    .iter()
                    .position(|l| l.starts_with("leader_seq "))
                    .unwrap_or(link.len());
                if let Some(leader) = &self.role.leader {
                    link.insert(at, format!("leader {}:{}", leader.host, leader.port));
                }
                lines.extend(link);
            }
        }
    }

    /// The seq through which held writes may be answered: the local ack
    /// point, and with `--sync-followers N` the N-th highest follower ack.
    pub fn release_point(&self, local: u64) -> u64 {
        let point = self.repl.leader.release_point(local, self.policy());
        match self.quiet {
            Some((until, seq)) if Instant::now() < until => point.min(seq),
            _ => point,
        }
    }

    /// News of `epoch` from the peer `source` names: a leader that hears
    /// of a higher epoch was replaced by a promotion and stops taking
    /// writes.
    ///
    /// # Errors
    /// An epoch implausibly far above any this node knows: a protocol
    /// error, and nothing is learned.
    pub fn learn_epoch(
        &mut self,
        epoch: u64,
        source: &dyn Fn() -> String,
    ) -> Result<(), EpochLeap> {
        let news = epoch::judge(epoch, self.known_epoch(), self.is_writable_leader())?;
        if news == EpochNews::Known {
            return Ok(());
        }
        self.role.epoch_seen = epoch;
        if news == EpochNews::Deposed {
            self.role.fenced = true;
            error!(
                "{} knows epoch {epoch}, above this leader's {}: another node was promoted. \
                 This node takes no more writes (WRITE_NOT_ALLOWED); re-point it with \
                 `keyval-ctl --port <this port> follow <new leader host> <port>`",
                source(),
                self.wal.lineage().current().epoch
            );
        }
        self.save_role();
        Ok(())
    }

    /// Final fsync on a graceful stop.
    ///
    /// # Errors
    /// The fsync error.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        self.wal.sync().map_err(Error::from)
    }
}
