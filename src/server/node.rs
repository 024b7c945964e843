//! The node's state and what requests do to it: the store, the log, the
//! role, compaction and the fsync timer.
//!
//! The loop hands each request line here with the connection it came on;
//! replies are queued on that connection. Replies to writes are held until
//! the write is durable (the sync thread reports through the loop's waker,
//! and [`Node::commit`] takes the report in). So are replies to reads made
//! while some write is not yet durable, since they may show it: no client
//! sees a value that a disk error could still take back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::Waker;

use super::conn::{Conn, Peer};
use super::replica::{LinkInfo, Replication};
use crate::config::{Config, Role};
use crate::error::Error;
use crate::protocol::{self, parse_hello, parse_request, Hello, Reply, Request};
use crate::replication::HEARTBEAT_INTERVAL;
use crate::store::Store;
use crate::wal::compact::Compaction;
use crate::wal::record::Op;
use crate::wal::{FsyncPolicy, Wal};

/// Wait before retrying a compaction that failed.
const COMPACTION_RETRY: Duration = Duration::from_secs(30);

/// Period of the `--fsync everysec` flush.
const EVERYSEC: Duration = Duration::from_secs(1);

/// Everything a request can act on.
pub struct Node {
    pub config: Config,
    pub store: Store,
    pub wal: Wal,
    /// Wakes the loop when a compaction or a log sync finishes.
    waker: Arc<Waker>,
    /// The compaction in progress, if any.
    compaction: Option<Compaction>,
    /// Finished compactions since start (INFO `compactions`).
    compactions: u64,
    /// No new compaction before this (after a failure).
    compaction_not_before: Option<Instant>,
    /// Next `--fsync everysec` flush.
    next_fsync: Option<Instant>,
    /// Followers (on a leader) or the link to the leader (on a follower).
    pub repl: Replication,
}

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
        let path = config.log_path();
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
        if config.role == Role::Leader && config.secret.is_none() {
            warn!(
                "no shared secret (KEYVAL_SECRET or --secret-file): every follower will be refused"
            );
        }
        let next_fsync = (config.fsync == FsyncPolicy::EverySec).then(|| Instant::now() + EVERYSEC);
        Ok(Node {
            config,
            store: opened.store,
            wal: opened.wal,
            waker,
            compaction: None,
            compactions: 0,
            compaction_not_before: None,
            next_fsync,
            repl: Replication {
                next_tick: Some(Instant::now() + HEARTBEAT_INTERVAL),
                link: LinkInfo {
                    reconnect_at: Some(Instant::now()),
                    ..LinkInfo::default()
                },
                ..Replication::default()
            },
        })
    }

    /// `leader` or `follower`.
    pub fn role_name(&self) -> &'static str {
        match self.config.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }

    /// Executes one request line from `conn` (connection `key`).
    pub fn execute_line(&mut self, conn: &mut Conn, key: usize, line: &[u8]) {
        match conn.kind {
            Peer::AwaitHello => self.hello(conn, line),
            Peer::Client => match parse_request(line) {
                Ok(request) => self.execute(conn, request),
                Err(_) => conn.reply(Reply::InvalidCommand),
            },
            Peer::FollowerAuth { .. } => self.follower_auth(conn, key, line),
            Peer::Leader(_) => self.link_line(conn, line),
            // Frames, not lines, flow on these.
            Peer::Follower(_) => {}
        }
    }

    fn hello(&mut self, conn: &mut Conn, line: &[u8]) {
        match parse_hello(line) {
            Some(Hello::Client) => {
                conn.kind = Peer::Client;
                conn.reply(Reply::HelloServer);
            }
            Some(Hello::Follower { id, nonce }) => self.follower_hello(conn, id, nonce),
            Some(Hello::Admin { .. }) | None => {
                info!("{}: invalid handshake", conn.peer);
                conn.reply(Reply::InvalidHandshake);
                conn.closing = true;
            }
        }
    }

    fn execute(&mut self, conn: &mut Conn, request: Request<'_>) {
        if request.is_write() && self.config.role != Role::Leader {
            conn.reply(Reply::WriteNotAllowed);
            return;
        }
        match request {
            Request::Put { key, value } => self.write(conn, Op::Put, key, value),
            Request::Delete { key } => {
                if self.store.get(key).is_some() {
                    self.write(conn, Op::Delete, key, b"");
                } else {
                    let seen = self.read_barrier();
                    conn.reply_seen(seen, |out| {
                        out.extend_from_slice(Reply::NotFound.as_bytes())
                    });
                }
            }
            Request::Get { key } => {
                let seen = self.read_barrier();
                match self.store.get(key) {
                    Some(value) => conn.reply_seen(seen, |out| protocol::encode_value(out, value)),
                    None => conn.reply_seen(seen, |out| {
                        out.extend_from_slice(Reply::NotFound.as_bytes())
                    }),
                }
            }
            Request::Keys { prefix } => {
                let keys = self.store.keys_with_prefix(prefix);
                conn.reply_seen(self.read_barrier(), |out| {
                    protocol::encode_list(out, keys.into_iter())
                });
            }
            Request::Info => {
                let lines = self.info_lines();
                conn.reply_seen(self.read_barrier(), |out| {
                    protocol::encode_list(out, lines.iter().map(String::as_bytes))
                });
            }
            Request::Digest => {
                let digest = self.store.digest();
                conn.reply_seen(self.read_barrier(), |out| {
                    protocol::encode_value(out, digest.as_bytes())
                });
            }
            Request::Ping => conn.reply(Reply::Pong),
            Request::Close => {
                conn.reply(Reply::Bye);
                conn.closing = true;
            }
            // Admin commands need the admin handshake.
            Request::Admin(_) => conn.reply(Reply::InvalidCommand),
        }
    }

    /// Logs and applies a write; its reply waits for the commit.
    fn write(&mut self, conn: &mut Conn, op: Op, key: &[u8], value: &[u8]) {
        match self.wal.append(&mut self.store, op, key, value) {
            Ok(seq) => {
                let wait = self.config.sync_followers > 0 && self.config.sync_timeout_ms > 0;
                let deadline = wait
                    .then(|| Instant::now() + Duration::from_millis(self.config.sync_timeout_ms));
                conn.hold(seq, deadline);
            }
            Err(_) => conn.reply(Reply::Error),
        }
    }

    /// What a read now may show beyond the ack point: `Some(seq)` when
    /// writes up to `seq` are applied but not yet durable (the read's reply
    /// then waits for them), `None` when everything it sees is durable.
    fn read_barrier(&self) -> Option<u64> {
        let last = self.wal.last_seq();
        (last > self.wal.ack_seq()).then_some(last)
    }

    /// The turn's group commit: writes the turn's records and hands their
    /// fsync to the sync thread; takes in the syncs that finished.
    ///
    /// # Returns
    /// The local ack point: the seq through which writes are durable here
    /// (under `--fsync always`). Writes from [`Wal::lost_from`] on, if the
    /// log failed, must be answered `ERROR`.
    pub fn commit(&mut self) -> u64 {
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

    /// Between-turn work: the everysec fsync and compaction.
    pub fn maintain(&mut self, now: Instant) {
        if self.next_fsync.is_some_and(|at| now >= at) {
            self.next_fsync = Some(now + EVERYSEC);
            // The sync thread's report (or failure) arrives through the
            // waker and is taken in by the next commit.
            self.wal.sync_soon();
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
        } else if self.compaction_not_before.is_none_or(|at| now >= at)
            && !self.wal.has_failed()
            && self.wal.needs_compaction(
                &self.store,
                self.config.compact_min_bytes,
                self.config.compact_ratio,
            )
        {
            self.start_compaction();
        }
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
            .filter(|_| self.config.role == Role::Follower);
        [
            self.next_fsync,
            self.compaction_not_before
                .filter(|_| self.compaction.is_none()),
            self.repl.next_tick,
            reconnect,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The `INFO` fields.
    fn info_lines(&self) -> Vec<String> {
        let header = self.wal.header();
        let mut lines = vec![
            format!("role {}", self.role_name()),
            format!("id {}", self.config.id),
            format!("seq {}", self.wal.last_seq()),
            format!("history {}", hex::encode(header.history)),
            format!("epoch {}", header.epoch),
            format!("keys {}", self.store.len()),
            format!("log_bytes {}", self.wal.len_bytes()),
            format!("durable_seq {}", self.wal.durable_seq()),
            format!(
                "writes {}",
                if self.wal.has_failed() {
                    "failed"
                } else {
                    "ok"
                }
            ),
            format!("compacting {}", u8::from(self.compaction.is_some())),
            format!("compactions {}", self.compactions),
        ];
        self.replication_info(&mut lines);
        lines
    }

    /// Final fsync on a graceful stop.
    ///
    /// # Errors
    /// The fsync error.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        self.wal.sync().map_err(Error::from)
    }
}
