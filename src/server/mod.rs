//! The event loop: one thread, one `mio::Poll`, every socket non-blocking.
//!
//! Each turn of the loop:
//!
//! ```text
//! poll (timeout = nearest deadline; the waker when a sync finishes)
//!   accept / read + parse + execute       writes go to the store and the
//!                                         log buffer; their replies are held,
//!                                         and so are reads made meanwhile
//! end of turn
//!   commit: one write, fsync handed to    group commit; the syncs finished
//!           the sync thread (inline for   since the last turn are taken in
//!           a small batch, none in flight)
//!   query jobs: fill in finished DIGEST   and start the next (`jobs`)
//!           and KEYS replies
//!   feed followers what is durable
//!   release held replies whose writes are durable (and replicated)
//!   compaction: start, or put a finished one in place
//!   flush every connection that has output (up to 1 MiB each), fix its
//!   interest
//!   free the slots of closed connections
//! ```
//!
//! Under load the loop does not wait for the fsync: it serves the next
//! turns while the sync thread runs it, and one fsync then covers every
//! batch written meanwhile. A small batch with no sync in flight is fsynced
//! inline, which is cheaper under a light load (see
//! `wal::SYNC_INLINE_BELOW`). No reply that shows a write leaves before the write is
//! durable, so no client ever sees data that is not yet durable. This
//! module owns the sockets; what a request means is in [`node`].

mod admin;
mod conn;
mod dispatch;
mod held;
mod jobs;
mod limits;
mod logthrottle;
mod node;
mod redis;
mod replica;
mod resolve;
mod role;
mod slab;
mod slots;
mod systemd;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::config::Role;
use crate::error::Error;
use crate::protocol::{next_line, Line, Reply};
use crate::replication::HEARTBEAT_INTERVAL;
use conn::{Conn, Peer, ReadStatus};
use held::Progress;
use limits::Budget;
use mio::net::TcpStream;
use node::Node;
use resolve::{Resolution, Resolver};
use slab::Slab;
use slots::Slots;

/// Wakes the loop from the compaction, log sync and query job threads.
const WAKER: Token = Token(usize::MAX);
/// The listening socket.
const LISTENER: Token = Token(usize::MAX - 1);
/// SIGTERM / SIGINT.
const SIGNALS: Token = Token(usize::MAX - 2);

/// Chunks read from one socket before the loop moves on to others (the
/// socket is revisited next turn): one flooding client cannot starve the
/// rest.
const READS_PER_TURN: usize = 16;

/// After a turn that had events, how long the loop polls without
/// sleeping before it blocks.
const SPIN: Duration = Duration::from_micros(50);

/// How often the loop checks on a host name lookup in progress.
const RESOLVE_POLL: Duration = Duration::from_millis(20);

/// How long a graceful shutdown waits for replies to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound node, ready to [`Server::run`].
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    conns: Slab<Conn>,
    node: Node,
    /// Connections to flush at the end of this turn.
    dirty: Vec<usize>,
    /// Connections with replies held for a commit or follower acks.
    waiting: Vec<usize>,
    /// Connections whose input was left unread (backpressure lifted, or
    /// the per-turn read cap hit); served at the start of the next turn.
    resume: Vec<usize>,
    /// Connections whose output stopped at the per-turn write cap
    /// (`conn::WRITE_PER_TURN`); flushed again next turn.
    flush_again: Vec<usize>,
    /// Connections to free at the end of this turn.
    closed: Vec<usize>,
    /// Client connections whose input paused for their output or the
    /// client budget; checked at the end of each turn, as the budget can
    /// drain through other connections.
    paused: Vec<usize>,
    /// Set by SIGTERM/SIGINT: the time by which to be gone.
    shutdown_by: Option<Instant>,
    /// The buffer every socket read goes through.
    scratch: Vec<u8>,
    /// Looks up the leader's host name off the loop.
    resolver: Resolver,
    /// A follower's feed has more to send and room for it: turn again
    /// at once.
    pump_again: bool,
    /// Connection slots, handshake deadlines, and accepting when out of
    /// descriptors (`slots`).
    slots: Slots,
}

impl Server {
    /// Opens the log, replays it, and binds the listening socket.
    ///
    /// # Errors
    /// A damaged log, an unusable data directory, or a port in use.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let slots = Slots::new(&config);
        let poll = Poll::new().map_err(Error::io("create poll"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::io("create waker"))?);
        let mut node = Node::open(config, waker)?;
        let addr = SocketAddr::new(node.config.bind, node.config.port);
        let mut listener = TcpListener::bind(addr).map_err(|e| Error::Io {
            what: format!("bind {addr}"),
            source: e,
        })?;
        let local_addr = listener.local_addr().map_err(Error::io("local address"))?;
        node.listen_port = local_addr.port();
        node.hold_reads_if_leading();
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(Error::io("register listener"))?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT]).map_err(Error::io("install signal handlers"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(Error::io("register signals"))?;
        info!(
            "{} {} listening on {local_addr} (seq {}, {} keys, history {})",
            node.role_name(),
            node.config.id,
            node.wal.last_seq(),
            node.store.len(),
            hex::encode(node.wal.header().history)
        );
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            conns: Slab::default(),
            node,
            dirty: Vec::new(),
            waiting: Vec::new(),
            resume: Vec::new(),
            flush_again: Vec::new(),
            closed: Vec::new(),
            paused: Vec::new(),
            shutdown_by: None,
            scratch: vec![0; conn::READ_CHUNK],
            resolver: Resolver::default(),
            pump_again: false,
            slots,
        })
    }

    /// The address the node listens on (useful with `--port 0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// Only if polling itself fails; socket errors close that socket.
    pub fn run(mut self) -> Result<(), Error> {
        systemd::notify("READY=1");
        let mut events = Events::with_capacity(1024);
        let mut busy_until = Instant::now();
        loop {
            let now = Instant::now();
            let timeout = self.poll_timeout(now);
            let result = if now < busy_until && timeout != Some(Duration::ZERO) {
                self.spin_poll(&mut events, busy_until, timeout)
            } else {
                self.poll.poll(&mut events, timeout)
            };
            if !events.is_empty() {
                busy_until = Instant::now() + SPIN;
            }
            if let Err(e) = result {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Io {
                    what: "poll".into(),
                    source: e,
                });
            }
            for key in std::mem::take(&mut self.resume) {
                self.serve(key, false);
            }
            for key in std::mem::take(&mut self.flush_again) {
                self.mark_dirty(key);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    WAKER => {}
                    Token(key) => self.on_conn_event(key, event),
                }
            }
            let now = Instant::now();
            self.slot_timers(now);
            self.end_turn(now);
            if self
                .shutdown_by
                .is_some_and(|by| self.conns.is_empty() || now >= by)
            {
                return self.finish_shutdown();
            }
        }
    }

    /// Polls without sleeping until `until`, then sleeps as `poll` would.
    fn spin_poll(
        &mut self,
        events: &mut Events,
        until: Instant,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        loop {
            self.poll.poll(events, Some(Duration::ZERO))?;
            if !events.is_empty() || Instant::now() >= until {
                break;
            }
            std::hint::spin_loop();
        }
        if events.is_empty() {
            self.poll.poll(events, timeout)?;
        }
        Ok(())
    }

    /// The poll timeout: zero when work is queued, else until the nearest
    /// deadline, else none.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.resume.is_empty() || !self.flush_again.is_empty() || self.pump_again {
            return Some(Duration::ZERO);
        }
        let local = self.node.wal.ack_seq();
        let held = self
            .waiting
            .iter()
            .filter_map(|&k| self.conns.get(k)?.next_deadline(local))
            .min();
        [
            self.node.next_deadline(),
            held,
            self.shutdown_by,
            self.slots.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_duration_since(now))
    }

    fn on_signal(&mut self) {
        for signal in self.signals.pending() {
            if self.shutdown_by.is_none() {
                info!("signal {signal}: shutting down");
                self.begin_shutdown();
            }
        }
    }

    /// Stop accepting and reading; answer what was asked; then exit.
    fn begin_shutdown(&mut self) {
        systemd::notify("STOPPING=1");
        self.shutdown_by = Some(Instant::now() + SHUTDOWN_GRACE);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                // Answer every whole request already read, then close: as
                // if the peer had ended its input after its last full line.
                let whole = conn
                    .rbuf
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |at| at + 1);
                conn.rbuf.truncate(whole);
                conn.peer_eof = true;
                // The link to the leader carries no requests to answer: it
                // closes once its output (acks) is written. Its binary
                // input would otherwise pass for unanswered lines, and a
                // snapshot being received would hold it paused, either way
                // until the grace period ran out.
                if matches!(conn.kind, Peer::Leader) {
                    conn.closing = true;
                    conn.paused = false;
                }
            }
            self.mark_dirty(key);
        }
    }

    fn finish_shutdown(mut self) -> Result<(), Error> {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, "shutdown");
        }
        self.node.shutdown()?;
        info!("stopped");
        Ok(())
    }

    fn on_conn_event(&mut self, key: usize, event: &Event) {
        let Some(conn) = self.conns.get(key).filter(|c| !c.gone) else {
            // A stale event for a connection closed earlier this turn.
            return;
        };
        if self.node.is_connecting(conn, key) {
            self.finish_connect(key);
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.serve(key, event.is_read_closed() || event.is_error());
        }
        if event.is_writable() {
            self.mark_dirty(key);
        }
    }

    /// Reads and executes what a connection sent, within the per-turn cap.
    /// `hangup` (the peer's FIN came with this event) means reading on past
    /// a short read, to see the EOF no later event will announce.
    fn serve(&mut self, key: usize, hangup: bool) {
        for _ in 0..READS_PER_TURN {
            self.process_input(key);
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                return;
            };
            if conn.paused || conn.closing || conn.peer_eof || self.shutdown_by.is_some() {
                self.mark_dirty(key);
                return;
            }
            match conn.read_some(&mut self.scratch) {
                Ok(ReadStatus::DataDrained) if !hangup => {
                    self.process_input(key);
                    self.mark_dirty(key);
                    return;
                }
                Ok(ReadStatus::Data | ReadStatus::DataDrained) => {}
                Ok(ReadStatus::Drained) => {
                    self.mark_dirty(key);
                    return;
                }
                Ok(ReadStatus::Eof) => {
                    debug!("{}: end of input", conn.peer);
                    self.process_input(key);
                    self.mark_dirty(key);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    error!("{}: {e}; closing the connection", conn.peer);
                    self.close(key, "bad session record");
                    return;
                }
                Err(e) => {
                    debug!("{}: read error: {e}", conn.peer);
                    self.close(key, "read error");
                    return;
                }
            }
        }
        self.process_input(key);
        self.mark_dirty(key);
        self.resume.push(key);
    }

    /// Executes the whole lines in a connection's read buffer, until the
    /// output backs up.
    fn process_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
            return;
        };
        let max_line = self.node.config.max_line_bytes;
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut off = 0;
        // How much of `rbuf[off..]` is known to hold no newline.
        let mut scanned = conn.scanned.min(rbuf.len());
        while !conn.closing && off < rbuf.len() {
            if self.node.is_framed(conn, key) {
                off += self.node.process_frames(conn, key, &rbuf[off..]);
                // A snapshot being received is behind or awaits its
                // install: read no more until `flush` finds it ready.
                if self.node.holds_input(conn, key) {
                    conn.paused = true;
                }
                break;
            }
            if held_back(conn, key, &self.node) {
                conn.paused = true;
                self.paused.push(key);
                break;
            }
            if matches!(conn.kind, Peer::AwaitHello) && rbuf[off] == b'*' {
                // A RESP array first: a Redis client, welcomed (and
                // counted as one) once its first command is whole.
                conn.kind = Peer::Redis(Box::default());
                conn.speak_resp();
            }
            if matches!(conn.kind, Peer::Redis(_)) {
                let step = dispatch::resp(&mut self.node, &self.slots, conn, key, &rbuf[off..]);
                off += step.used;
                scanned = 0;
                book(&mut self.node.budget, conn);
                if step.paused {
                    // As for a line: a query without room for its reply
                    // stays unread until output drains.
                    conn.paused = true;
                    self.paused.push(key);
                }
                if step.stop {
                    break;
                }
                continue;
            }
            let rest = &rbuf[off..];
            if conn.discarding {
                match rest.iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        off += at + 1;
                        conn.discarding = false;
                    }
                    None => off = rbuf.len(),
                }
                scanned = 0;
                continue;
            }
            let (line, used) = match next_line_after(rest, max_line, scanned) {
                Line::Complete(line, used) => (line, used),
                Line::TooLong => {
                    debug!("{}: line longer than {max_line} bytes", conn.peer);
                    conn.reply(Reply::LineTooLong);
                    conn.discarding = true;
                    continue;
                }
                // The peer ended without a final newline: take what it sent
                // as the last line.
                Line::Incomplete if conn.peer_eof => (rest, rest.len()),
                Line::Incomplete => {
                    scanned = rest.len();
                    break;
                }
            };
            if !self.slots.screen(conn, line) {
                dispatch::line(&mut self.node, conn, key, line);
            }
            if conn.deferred.is_some() {
                // A query without room for its reply: the line stays unread
                // until output drains.
                conn.paused = true;
                self.paused.push(key);
                break;
            }
            book(&mut self.node.budget, conn);
            off += used;
            scanned = 0;
            if conn.session_began() {
                // What followed the handshake's last line is records.
                if let Err(e) = conn.open_after_handshake(&mut rbuf, off) {
                    error!("{}: {e}; closing the connection", conn.peer);
                    conn.closing = true;
                }
            }
        }
        rbuf.drain(..off);
        if conn.closing {
            rbuf.clear();
        }
        if rbuf.is_empty() && rbuf.capacity() > 4 * conn::READ_CHUNK {
            // A long line read earlier leaves no large buffer behind.
            rbuf = Vec::new();
        }
        book(&mut self.node.budget, conn);
        conn.scanned = scanned.min(rbuf.len());
        conn.rbuf = rbuf;
        self.slots.observe(key, &conn.kind);
        if conn.has_held() {
            self.waiting.push(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Group commit, reply release, background work, flushes.
    fn end_turn(&mut self, now: Instant) {
        let local = self.node.commit();
        for answer in self.node.query_jobs() {
            let key = answer.conn;
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                continue;
            };
            let (len, max) = (answer.reply.len(), self.node.budget.conn_max());
            // A reply for an earlier connection in the same slot finds no
            // hold with its id.
            if !conn.fill_query(answer.hold, answer.reply) {
                continue;
            }
            if len > max {
                warn!(
                    "{}: closed, a {len}-byte query reply is more than --max-output-bytes {max}",
                    conn.peer
                );
                self.close(key, "output limit");
                continue;
            }
            book(&mut self.node.budget, conn);
            self.waiting.push(key);
        }
        self.replicate();
        self.tick(now);
        for key in std::mem::take(&mut self.node.repl.evict) {
            self.close(key, "evicted");
        }
        let acked = self.node.release_point(local);
        self.node.released(acked);
        // A leader that stepped down can no longer collect follower acks:
        // its writes still waiting for them are answered `ERROR`.
        let stepped_down = std::mem::take(&mut self.node.drop_held).then_some(acked + 1);
        let progress = Progress {
            acked,
            local,
            lost_from: self.node.wal.lost_from().or(stepped_down),
            leased: self.node.leased(now),
            // Only held replies read them (`WAIT`).
            follower_acks: if self.waiting.is_empty() {
                Vec::new()
            } else {
                let leader = &self.node.repl.leader;
                leader.connected().map(|(_, f)| f.acked).collect()
            },
        };
        self.waiting.sort_unstable();
        self.waiting.dedup();
        let mut still_waiting = Vec::new();
        for key in std::mem::take(&mut self.waiting) {
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                continue;
            };
            conn.release(&progress);
            conn.expire(now, &progress);
            book(&mut self.node.budget, conn);
            if conn.has_held() {
                still_waiting.push(key);
            }
            self.mark_dirty(key);
        }
        self.waiting = still_waiting;
        self.node.maintain(now);
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key);
        }
        self.resume_drained();
        self.pump_again = self.node.repl.feeds.keys().any(|&key| {
            self.conns
                .get(key)
                .is_some_and(|c| !c.gone && self.node.wants_pump(c, key))
        });
        for key in self.closed.drain(..) {
            self.conns.remove(key);
        }
    }

    /// The connections that carry replication: followers on a leader, the
    /// link on a follower.
    fn replication_keys(&self) -> Vec<usize> {
        let repl = &self.node.repl;
        repl.leader
            .conns()
            .map(|(key, _)| key)
            .chain(repl.link.key)
            .collect()
    }

    /// Feeds followers what is durable, or acks it to the leader.
    fn replicate(&mut self) {
        for key in self.replication_keys() {
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                continue;
            };
            self.node.after_commit(conn, key);
            self.mark_dirty(key);
        }
    }

    /// Timers: heartbeats and dead links once a second; dialling the leader.
    fn tick(&mut self, now: Instant) {
        if self.node.repl.next_tick.is_some_and(|at| now >= at) {
            self.node.repl.next_tick = Some(now + HEARTBEAT_INTERVAL);
            for key in self.replication_keys() {
                let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                    continue;
                };
                self.node.tick(conn, key, now);
                self.mark_dirty(key);
            }
        }
        if let Some(round) = self.node.probe_round(now) {
            let followers: Vec<usize> = self
                .node
                .repl
                .leader
                .connected()
                .map(|(_, f)| f.key)
                .collect();
            for key in followers {
                let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                    continue;
                };
                self.node.send_probe(conn, round);
                self.mark_dirty(key);
            }
        }
        if self.node.role.role == Role::Follower
            && self.node.repl.link.due(now)
            && self.shutdown_by.is_none()
        {
            self.dial_leader(now);
        }
    }

    /// Starts a non-blocking connect to the leader.
    fn dial_leader(&mut self, now: Instant) {
        let link = &mut self.node.repl.link;
        link.reconnect_at = None;
        let Some(leader) = self.node.role.leader.clone() else {
            return;
        };
        let addr = match self.resolver.resolve(&leader.host, leader.port) {
            Resolution::Ready(addr) => addr,
            Resolution::Pending => return link.dial_failed(now, Some(RESOLVE_POLL)),
            Resolution::Failed(why) => {
                warn!("{}:{}: cannot resolve: {why}", leader.host, leader.port);
                return link.dial_failed(now, None);
            }
        };
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                debug!("{addr}: connect failed: {e}");
                return link.dial_failed(now, None);
            }
        };
        let key = self.conns.vacant_key();
        let mut conn = Conn::new(stream, addr);
        conn.kind = Peer::Leader;
        conn.interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut conn.stream, Token(key), conn.interest)
        {
            warn!("{addr}: cannot register the link: {e}");
            return self.node.repl.link.dial_failed(now, None);
        }
        self.conns.insert(conn);
        self.node.repl.link.dialling(key, now);
        debug!("{addr}: dialling the leader");
    }

    /// A connect in progress finished (mio's steps: writable, then
    /// `take_error`, then `peer_addr`).
    fn finish_connect(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
            return;
        };
        match conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                debug!("{}: connect failed: {e}", conn.peer);
                self.close(key, "connect failed");
                return;
            }
        }
        match conn.stream.peer_addr() {
            Ok(_) => {
                self.node.link_connected(conn);
                self.mark_dirty(key);
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                debug!("{}: connect failed: {e}", conn.peer);
                self.close(key, "connect failed");
            }
        }
    }

    /// Writes a connection's output and settles its interest; closes it
    /// once it is done.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
            return;
        };
        conn.dirty = false;
        match conn.flush() {
            Ok(false) => {}
            Ok(true) => self.flush_again.push(key),
            Err(e) => {
                debug!("{}: write error: {e}", conn.peer);
                self.close(key, "write error");
                return;
            }
        }
        book(&mut self.node.budget, conn);
        if conn.paused && !held_back(conn, key, &self.node) {
            conn.paused = false;
            self.resume.push(key);
        }
        if conn.is_done() {
            self.close(key, "done");
            return;
        }
        let interest = conn.desired_interest();
        if interest != conn.interest {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                warn!("{}: reregister failed: {e}", conn.peer);
                self.close(key, "reregister failed");
                return;
            }
            conn.interest = interest;
        }
    }

    /// Resumes paused client connections that may take requests again: the
    /// budget drains through other connections' flushes, which no event of
    /// their own announces.
    fn resume_drained(&mut self) {
        self.paused.sort_unstable();
        self.paused.dedup();
        let mut still = Vec::new();
        for key in std::mem::take(&mut self.paused) {
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone && c.paused) else {
                continue;
            };
            if held_back(conn, key, &self.node) {
                still.push(key);
            } else {
                conn.paused = false;
                self.resume.push(key);
            }
        }
        self.paused = still;
        self.node.budget.paused = self.paused.len();
    }

    /// Deregisters a connection; its slot is freed at the end of the turn.
    fn close(&mut self, key: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
            return;
        };
        debug!("{}: closed ({why})", conn.peer);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.gone = true;
        self.closed.push(key);
        self.slots.table.closed(key);
        self.node.budget.update(std::mem::take(&mut conn.booked), 0);
        self.node.on_close(conn, key, Instant::now());
        self.node.forget_queries(key);
    }
}

/// Whether a connection must take no more requests for now: its own
/// backlog ([`Conn::is_backlogged`]), a snapshot being received that is
/// behind, or for a client, its unread output against the limits
/// (`limits`), or a query that waits for room.
fn held_back(conn: &Conn, key: usize, node: &Node) -> bool {
    if conn.is_backlogged() || node.holds_input(conn, key) {
        return true;
    }
    let budget = &node.budget;
    if !limits::counts(&conn.kind) {
        return false;
    }
    let mine = conn.pending_output();
    mine >= budget.pause_at()
        || budget.over_share(mine)
        || conn
            .deferred
            .is_some_and(|reserve| !budget.admit_query(mine, reserve))
}

/// Books a connection's unread output in the client budget.
fn book(budget: &mut Budget, conn: &mut Conn) {
    let now = if limits::counts(&conn.kind) {
        conn.pending_output()
    } else {
        0
    };
    if now != conn.booked {
        budget.update(conn.booked, now);
        conn.booked = now;
    }
}

/// [`next_line`] for a buffer whose first `scanned` bytes are known to hold
/// no newline: while the line is still incomplete only the new bytes are
/// searched, so a line near `--max-line-bytes` sent in small pieces costs
/// linear time, not quadratic.
fn next_line_after(buf: &[u8], max_line: usize, scanned: usize) -> Line<'_> {
    let fresh = buf.get(scanned..).unwrap_or_default();
    let within_limit = buf.len() <= max_line.saturating_add(1);
    if scanned > 0 && within_limit && !fresh.contains(&b'\n') {
        return Line::Incomplete;
    }
    next_line(buf, max_line)
}

/// Logs a fatal error of the node the way an operator needs it.
pub fn report_fatal(err: &Error) {
    error!("{err}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(line: Line<'_>) -> String {
        match line {
            Line::Complete(text, used) => format!("{}/{used}", String::from_utf8_lossy(text)),
            Line::TooLong => "too long".into(),
            Line::Incomplete => "incomplete".into(),
        }
    }

    #[test]
    fn a_known_clean_prefix_gives_the_same_answers_as_a_full_scan() {
        let cases: [&[u8]; 6] = [
            b"",
            b"PUT a",
            b"PUT a 1\n",
            b"PUT a 1\r\nGET a\n",
            b"0123456789abcdefXY",
            b"0123456789abcdef\n",
        ];
        for buf in cases {
            for max_line in [4, 16, 64] {
                let want = describe(next_line(buf, max_line));
                let clean = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
                for scanned in 0..=clean {
                    assert_eq!(
                        describe(next_line_after(buf, max_line, scanned)),
                        want,
                        "{buf:?} max {max_line} scanned {scanned}"
                    );
                }
            }
        }
    }
}
