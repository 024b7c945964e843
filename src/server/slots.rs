//! Connection slots: who may hold a socket on this node, for how long
//! without finishing a handshake, and what happens when the process runs
//! out of file descriptors. See `docs/connections.md` for the operator's
//! view.
//!
//! At accept time a peer's kind is unknown: a client, a follower and
//! `keyval-ctl` all start by connecting. So:
//!
//! ```text
//! capacity = --max-clients + --max-followers + ADMIN_SLOTS   (accepted sockets)
//! clients  <= --max-clients                  checked at HELLO CLIENT
//! followers<= --max-followers                checked at AUTH (replica.rs)
//! ```
//!
//! - Every accepted socket must finish its handshake (client `HELLO`,
//!   follower or admin `AUTH`) within `--handshake-timeout-ms`, or it is
//!   closed.
//! - A socket accepted while the client slots are taken (by clients, or by
//!   sockets that have not said what they are) sits in the reserve: it has
//!   [`RESERVE_GRACE`] to start a follower or admin handshake, or it gets
//!   `TOO_MANY_CONNECTIONS` and is closed. A `HELLO CLIENT` while
//!   `--max-clients` clients are connected gets the same.
//! - When every slot is taken and some sockets are still in their
//!   handshake, the oldest of those is closed to make room: silent sockets
//!   cannot hold the reserve, and a real follower or `keyval-ctl` (which
//!   finishes its handshake in milliseconds) gets in. Only when every slot
//!   holds a peer that finished its handshake is a new socket refused at
//!   once.
//! - `accept` failing with EMFILE/ENFILE does not kill the listener: a
//!   spare descriptor is given up to accept the pending connection and
//!   refuse it, and failing that the loop retries on a timer.
//!
//! [`SlotTable`] is the pure bookkeeping (it takes `now`); the `impl
//! Server` below applies it to sockets.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::{Interest, Token};

use super::conn::{Conn, Peer};
use super::logthrottle::throttled;
use super::Server;
use crate::config::Config;
use crate::protocol::{parse_hello, Hello, Reply};

/// Admin connections (`keyval-ctl`) that have slots of their own beyond
/// `--max-clients` and `--max-followers`: an operator runs one or two at a
/// time, and 4 leaves room for a script and a human together.
pub const ADMIN_SLOTS: usize = 4;

/// How long a socket accepted into the reserve (all client slots taken)
/// has to say `HELLO FOLLOWER` or `HELLO ADMIN`. A follower or
/// `keyval-ctl` sends it right after connecting; a client that waits this
/// long gets the same `TOO_MANY_CONNECTIONS` it would have got at once.
pub const RESERVE_GRACE: Duration = Duration::from_secs(1);

/// Descriptors the node needs beyond its connections: stdio, the poll,
/// waker and signal pipe, the listener, the spare, the log and snapshot
/// files, and the sync, compaction and query threads' files, with room to
/// spare.
pub const FD_OVERHEAD: u64 = 64;

/// How soon `accept` is tried again after it failed for a reason other
/// than `WouldBlock` (descriptors exhausted and no spare to give up).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What an accepted socket has shown itself to be so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Has not said `HELLO` yet.
    Hello,
    /// Said `HELLO FOLLOWER` or `HELLO ADMIN`, was challenged, owes `AUTH`.
    Auth,
    /// Said `HELLO CLIENT`.
    Client,
    /// An authenticated follower.
    Follower,
    /// An authenticated admin connection.
    Admin,
}

impl Class {
    /// The class of a connection in state `peer`; `None` for the link a
    /// follower dialled to its leader, which takes no slot.
    pub fn of(peer: &Peer) -> Option<Class> {
        match peer {
            Peer::AwaitHello => Some(Class::Hello),
            Peer::Challenged(_) => Some(Class::Auth),
            Peer::Redis(client) if !client.welcomed => Some(Class::Hello),
            Peer::Client | Peer::Redis(_) => Some(Class::Client),
            Peer::Follower(_) => Some(Class::Follower),
            Peer::Admin => Some(Class::Admin),
            Peer::Leader => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether the handshake is still going on.
    pub fn in_handshake(self) -> bool {
        matches!(self, Class::Hello | Class::Auth)
    }
}

/// What to do with a socket just accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// There is a slot.
    Accept,
    /// Close the connection with this key (the oldest still in its
    /// handshake), then accept.
    Evict(usize),
    /// Every slot holds a peer past its handshake: refuse.
    Refuse,
}

/// Why a deadline fired for a connection (see [`SlotTable::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `--handshake-timeout-ms` passed with the handshake unfinished.
    Handshake,
    /// A reserve socket said nothing within [`RESERVE_GRACE`] while the
    /// client slots are still taken.
    Reserve,
}

/// One accepted connection's bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Tells this connection from an earlier one in the same slab slot.
    generation: u64,
    class: Class,
}

/// The pure slot bookkeeping: counts by class, and deadlines in accept
/// order.
///
/// Every connection's handshake deadline is its accept instant plus one
/// fixed timeout, so a queue in accept order is also in deadline order:
/// the next deadline is its front, and no scan of all connections is ever
/// needed. Entries of connections that finished their handshake or closed
/// stay queued until they reach the front, where they are found stale (by
/// generation and class) and dropped.
#[derive(Debug)]
pub struct SlotTable {
    max_clients: usize,
    capacity: usize,
    handshake_timeout: Duration,
    grace: Duration,
    /// By connection key.
    entries: Vec<Option<Entry>>,
    /// Connections per [`Class`].
    counts: [usize; 5],
    next_generation: u64,
    /// (deadline, key, generation) for every accepted connection.
    handshakes: VecDeque<(Instant, usize, u64)>,
    /// The same for connections accepted into the reserve.
    reserve: VecDeque<(Instant, usize, u64)>,
}

impl SlotTable {
    /// A table for the given caps; `grace` is capped at the handshake
    /// timeout.
    pub fn new(
        max_clients: usize,
        max_followers: usize,
        handshake_timeout: Duration,
        grace: Duration,
    ) -> SlotTable {
        SlotTable {
            max_clients,
            capacity: max_clients
                .saturating_add(max_followers)
                .saturating_add(ADMIN_SLOTS),
            handshake_timeout,
            grace: grace.min(handshake_timeout),
            entries: Vec::new(),
            counts: [0; 5],
            next_generation: 0,
            handshakes: VecDeque::new(),
            reserve: VecDeque::new(),
        }
    }

    /// Accepted sockets in total.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Accepted sockets of one class.
    pub fn count(&self, class: Class) -> usize {
        self.counts[class.index()]
    }

    /// Accepted sockets the node will hold at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn live(&self, key: usize, generation: u64) -> Option<Class> {
        match self.entries.get(key) {
            Some(Some(e)) if e.generation == generation => Some(e.class),
            _ => None,
        }
    }

    /// Decides on a socket just accepted. An [`Admit::Evict`] victim is
    /// taken off the queue; the caller closes it (and so calls
    /// [`SlotTable::closed`]) before [`SlotTable::opened`].
    pub fn admit(&mut self) -> Admit {
        if self.total() < self.capacity {
            return Admit::Accept;
        }
        while let Some(&(_, key, generation)) = self.handshakes.front() {
            self.handshakes.pop_front();
            if self.live(key, generation).is_some_and(Class::in_handshake) {
                return Admit::Evict(key);
            }
        }
        Admit::Refuse
    }

    /// Records a connection accepted at `now` under `key`.
    ///
    /// # Returns
    /// Whether it went into the reserve (the client slots were taken).
    pub fn opened(&mut self, key: usize, now: Instant) -> bool {
        let in_reserve = self.count(Class::Client) + self.count(Class::Hello) >= self.max_clients;
        let generation = self.next_generation;
        self.next_generation += 1;
        if self.entries.len() <= key {
            self.entries.resize(key + 1, None);
        }
        if let Some(old) = self.entries[key].take() {
            // Not closed through `closed`: drop its count all the same.
            self.counts[old.class.index()] -= 1;
        }
        self.entries[key] = Some(Entry {
            generation,
            class: Class::Hello,
        });
        self.counts[Class::Hello.index()] += 1;
        self.handshakes
            .push_back((now + self.handshake_timeout, key, generation));
        if in_reserve {
            self.reserve.push_back((now + self.grace, key, generation));
        }
        in_reserve
    }

    /// Notes that connection `key` is now `class` (no-op when unchanged or
    /// unknown).
    pub fn set_class(&mut self, key: usize, class: Class) {
        if let Some(Some(entry)) = self.entries.get_mut(key) {
            if entry.class != class {
                self.counts[entry.class.index()] -= 1;
                self.counts[class.index()] += 1;
                entry.class = class;
            }
        }
    }

    /// Forgets connection `key`.
    pub fn closed(&mut self, key: usize) {
        if let Some(slot) = self.entries.get_mut(key) {
            if let Some(entry) = slot.take() {
                self.counts[entry.class.index()] -= 1;
            }
        }
    }

    /// Whether a `HELLO CLIENT` must be refused: `--max-clients` clients
    /// are connected.
    pub fn clients_full(&self) -> bool {
        self.count(Class::Client) >= self.max_clients
    }

    /// The earliest deadline queued (possibly a stale one, which costs one
    /// early wakeup).
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.handshakes.front().map(|e| e.0);
        let b = self.reserve.front().map(|e| e.0);
        a.into_iter().chain(b).min()
    }

    /// The connections whose deadline passed by `now`, and why. A reserve
    /// socket that has not said `HELLO` is refused only while the client
    /// slots are still taken by others; otherwise it waits out the
    /// handshake timeout like any other.
    pub fn due(&mut self, now: Instant) -> Vec<(usize, Expiry)> {
        let mut due = Vec::new();
        let mut refused = HashSet::new();
        while let Some(&(at, key, generation)) = self.reserve.front() {
            if at > now {
                break;
            }
            self.reserve.pop_front();
            let others_hello = self.count(Class::Hello).saturating_sub(1);
            if self.live(key, generation) == Some(Class::Hello)
                && self.count(Class::Client) + others_hello >= self.max_clients
            {
                due.push((key, Expiry::Reserve));
                refused.insert(key);
            }
        }
        while let Some(&(at, key, generation)) = self.handshakes.front() {
            if at > now {
                break;
            }
            self.handshakes.pop_front();
            if self.live(key, generation).is_some_and(Class::in_handshake)
                && !refused.contains(&key)
            {
                due.push((key, Expiry::Handshake));
            }
        }
        due
    }
}

/// Slot bookkeeping plus the IO side of accepting: the spare descriptor
/// and the accept retry timer.
#[derive(Debug)]
pub struct Slots {
    pub table: SlotTable,
    /// `/dev/null`, held open so that one descriptor can be freed when
    /// `accept` fails with EMFILE: enough to accept the pending connection,
    /// tell it `TOO_MANY_CONNECTIONS` and close it.
    spare: Option<File>,
    /// When to call `accept` again after it failed and no event may come.
    retry_accept_at: Option<Instant>,
}

impl Slots {
    /// Slots for `config`; raises the open-file limit first.
    pub fn new(config: &Config) -> Slots {
        raise_fd_limit(config);
        Slots {
            table: SlotTable::new(
                config.max_clients,
                config.max_followers,
                Duration::from_millis(config.handshake_timeout_ms),
                RESERVE_GRACE,
            ),
            spare: open_spare(),
            retry_accept_at: None,
        }
    }

    /// The earliest slot deadline or accept retry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.table
            .next_deadline()
            .into_iter()
            .chain(self.retry_accept_at)
            .min()
    }

    /// Notes what connection `key` has become after its latest input.
    pub fn observe(&mut self, key: usize, peer: &Peer) {
        if let Some(class) = Class::of(peer) {
            self.table.set_class(key, class);
        }
    }

    /// Answers a Redis client's first command that would pass
    /// `--max-clients` with Redis's `-ERR max number of clients reached`
    /// (and closes the connection).
    ///
    /// # Returns
    /// Whether it did: the command must then not be executed.
    pub fn refuse_redis(&self, conn: &mut Conn) -> bool {
        if !self.table.clients_full() {
            return false;
        }
        throttled!(
            warn,
            "refused-client",
            "{}: refused, {} clients already (--max-clients)",
            conn.peer,
            self.table.count(Class::Client)
        );
        conn.refuse(b"-ERR max number of clients reached\r\n");
        true
    }

    /// Answers a `HELLO CLIENT` that would pass `--max-clients` with
    /// `TOO_MANY_CONNECTIONS` (and closes the connection).
    ///
    /// # Returns
    /// Whether it did: the line must then not be executed.
    pub fn screen(&self, conn: &mut Conn, line: &[u8]) -> bool {
        if !matches!(conn.kind, Peer::AwaitHello)
            || !matches!(parse_hello(line), Some(Hello::Client))
            || !self.table.clients_full()
        {
            return false;
        }
        throttled!(
            warn,
            "refused-client",
            "{}: refused, {} clients already (--max-clients)",
            conn.peer,
            self.table.count(Class::Client)
        );
        conn.refuse(Reply::TooManyConnections.as_bytes());
        true
    }
}

/// Raises the soft open-file limit to the hard one, and warns when even
/// that is below what the connection caps need.
fn raise_fd_limit(config: &Config) {
    let needed = (config.max_clients as u64)
        .saturating_add(config.max_followers as u64)
        .saturating_add(ADMIN_SLOTS as u64)
        .saturating_add(FD_OVERHEAD);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => warn!(
            "the open-file limit is {limit}, below the {needed} that --max-clients {} and \
             --max-followers {} need: connections past it are refused with \
             TOO_MANY_CONNECTIONS (raise it with ulimit -n or LimitNOFILE=)",
            config.max_clients, config.max_followers
        ),
        Ok(limit) => debug!("open-file limit {limit}"),
        Err(e) => warn!("cannot read or raise the open-file limit: {e}"),
    }
}

fn open_spare() -> Option<File> {
    match File::open("/dev/null") {
        Ok(file) => Some(file),
        Err(e) => {
            warn!("cannot open /dev/null as a spare descriptor: {e}");
            None
        }
    }
}

/// EMFILE (this process) or ENFILE (the whole system): out of descriptors.
/// The same numbers on Linux, the BSDs and macOS.
fn out_of_descriptors(e: &io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

/// What [`Server::shed_one`] did.
enum Shed {
    /// Accepted a pending connection and refused it: accept again.
    Refused,
    /// No connection was pending.
    Drained,
    /// No spare descriptor to give up, or accepting failed even so: only
    /// a retry later can take the pending connections.
    NoSpare,
}

impl Server {
    /// Accepts every pending connection, giving each a slot, making room,
    /// or refusing it.
    pub(super) fn accept(&mut self) {
        self.slots.retry_accept_at = None;
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => match self.shed_one() {
                    Shed::Refused => continue,
                    // Linux reports EMFILE before it looks at the queue:
                    // nothing was waiting after all.
                    Shed::Drained => return,
                    Shed::NoSpare => {
                        throttled!(warn, "accept-failed", "accept failed: {e}; retrying");
                        self.slots.retry_accept_at = Some(Instant::now() + ACCEPT_RETRY);
                        return;
                    }
                },
                Err(e) => {
                    // No event may come for connections already queued:
                    // try again on a timer so the listener never dies.
                    throttled!(warn, "accept-failed", "accept failed: {e}; retrying");
                    self.slots.retry_accept_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            match self.slots.table.admit() {
                Admit::Accept => {}
                Admit::Evict(old) => {
                    if let Some(conn) = self.conns.get_mut(old).filter(|c| !c.gone) {
                        throttled!(
                            info,
                            "evicted",
                            "{}: closed to make room: all {} slots taken, it had not finished \
                             its handshake",
                            conn.peer,
                            self.slots.table.capacity()
                        );
                        // Best effort; nothing was sent before a handshake.
                        let _ = conn.stream.write(Reply::TooManyConnections.as_bytes());
                    }
                    self.close(old, "evicted for a new connection");
                }
                Admit::Refuse => {
                    throttled!(
                        warn,
                        "refused-full",
                        "{peer}: refused, all {} slots hold connected peers \
                         (--max-clients, --max-followers)",
                        self.slots.table.total()
                    );
                    let _ = stream.write(Reply::TooManyConnections.as_bytes());
                    continue;
                }
            }
            let _ = stream.set_nodelay(true);
            let key = self.conns.vacant_key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
            {
                warn!("{peer}: cannot register: {e}");
                continue;
            }
            self.conns.insert(Conn::new(stream, peer));
            let in_reserve = self.slots.table.opened(key, Instant::now());
            debug!(
                "{peer}: connected (conn {key}{})",
                if in_reserve { ", reserve slot" } else { "" }
            );
        }
    }

    /// Out of descriptors with a connection pending: gives up the spare
    /// descriptor to accept it, refuses it, and takes the spare back.
    ///
    fn shed_one(&mut self) -> Shed {
        let Some(listener) = &self.listener else {
            return Shed::Drained;
        };
        if self.slots.spare.take().is_none() {
            // Try to get it back for next time.
            self.slots.spare = open_spare();
            return Shed::NoSpare;
        }
        let shed = match listener.accept() {
            Ok((mut stream, peer)) => {
                throttled!(
                    warn,
                    "out-of-fds",
                    "{peer}: refused, out of file descriptors ({} connections; raise the \
                     open-file limit)",
                    self.slots.table.total()
                );
                let _ = stream.write(Reply::TooManyConnections.as_bytes());
                Shed::Refused
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Shed::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Shed::Refused,
            Err(_) => Shed::NoSpare,
        };
        self.slots.spare = open_spare();
        shed
    }

    /// Closes connections past their handshake deadline, refuses reserve
    /// sockets past their grace, and retries a failed `accept`.
    pub(super) fn slot_timers(&mut self, now: Instant) {
        for (key, why) in self.slots.table.due(now) {
            let Some(conn) = self.conns.get_mut(key).filter(|c| !c.gone) else {
                continue;
            };
            match why {
                Expiry::Reserve => {
                    throttled!(
                        info,
                        "refused-reserve",
                        "{}: refused, {} clients and {} sockets in their handshake already \
                         (--max-clients)",
                        conn.peer,
                        self.slots.table.count(Class::Client),
                        self.slots.table.count(Class::Hello)
                    );
                    conn.rbuf.clear();
                    conn.refuse(Reply::TooManyConnections.as_bytes());
                    self.mark_dirty(key);
                }
                Expiry::Handshake => {
                    throttled!(
                        info,
                        "handshake-timeout",
                        "{}: closed, no handshake within {} ms (--handshake-timeout-ms)",
                        conn.peer,
                        self.node.config.handshake_timeout_ms
                    );
                    self.close(key, "handshake timeout");
                }
            }
        }
        if self.slots.retry_accept_at.is_some_and(|at| now >= at) {
            self.accept();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn table(max_clients: usize, max_followers: usize) -> SlotTable {
        SlotTable::new(max_clients, max_followers, 10 * SECOND, SECOND)
    }

    /// Accepts one connection the way the loop does: closes an eviction
    /// victim first. Returns the admission and the key used.
    fn accept(t: &mut SlotTable, key: usize, now: Instant) -> Admit {
        let admit = t.admit();
        match admit {
            Admit::Refuse => {}
            Admit::Evict(old) => {
                t.closed(old);
                t.opened(key, now);
            }
            Admit::Accept => {
                t.opened(key, now);
            }
        }
        admit
    }

    #[test]
    fn capacity_is_clients_plus_followers_plus_admins() {
        let t = table(50, 10);
        assert_eq!(t.capacity(), 50 + 10 + ADMIN_SLOTS);
    }

    #[test]
    fn silent_sockets_cannot_hold_the_reserve() {
        let mut t = table(3, 1);
        let now = Instant::now();
        for key in 0..t.capacity() {
            assert_eq!(accept(&mut t, key, now), Admit::Accept);
        }
        // Full of silent sockets: the next one takes the oldest's slot.
        assert_eq!(accept(&mut t, 100, now), Admit::Evict(0));
        assert_eq!(accept(&mut t, 101, now), Admit::Evict(1));
        assert_eq!(t.total(), t.capacity());
        // The newcomer is a follower and authenticates: it is not evicted.
        t.set_class(100, Class::Follower);
        assert_eq!(accept(&mut t, 102, now), Admit::Evict(2));
        assert_eq!(accept(&mut t, 103, now), Admit::Evict(3));
        assert_eq!(accept(&mut t, 104, now), Admit::Evict(4));
        assert_eq!(accept(&mut t, 105, now), Admit::Evict(5));
        assert_eq!(accept(&mut t, 106, now), Admit::Evict(6));
        assert_eq!(accept(&mut t, 107, now), Admit::Evict(7));
        assert_eq!(accept(&mut t, 108, now), Admit::Evict(101));
        assert_eq!(t.count(Class::Follower), 1);
    }

    #[test]
    fn only_peers_past_their_handshake_make_a_refusal() {
        let mut t = table(2, 1);
        let now = Instant::now();
        let classes = [
            Class::Client,
            Class::Client,
            Class::Follower,
            Class::Admin,
            Class::Admin,
            Class::Admin,
            Class::Admin,
        ];
        for (key, class) in classes.into_iter().enumerate() {
            assert_eq!(accept(&mut t, key, now), Admit::Accept);
            t.set_class(key, class);
        }
        assert_eq!(t.admit(), Admit::Refuse);
        t.closed(0);
        assert_eq!(t.admit(), Admit::Accept);
    }

    #[test]
    fn a_hello_client_is_refused_only_past_max_clients() {
        let mut t = table(2, 1);
        let now = Instant::now();
        for key in 0..4 {
            accept(&mut t, key, now);
        }
        assert!(!t.clients_full());
        t.set_class(0, Class::Client);
        t.set_class(1, Class::Client);
        assert!(t.clients_full());
        t.closed(1);
        assert!(!t.clients_full());
    }

    #[test]
    fn handshake_deadlines_fire_in_order_and_skip_the_finished() {
        let mut t = table(10, 1);
        let t0 = Instant::now();
        for key in 0..3 {
            accept(&mut t, key, t0 + Duration::from_millis(key as u64));
        }
        t.set_class(1, Class::Client);
        assert_eq!(t.next_deadline(), Some(t0 + 10 * SECOND));
        assert!(t.due(t0 + 5 * SECOND).is_empty());
        assert_eq!(
            t.due(t0 + 11 * SECOND),
            vec![(0, Expiry::Handshake), (2, Expiry::Handshake)]
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_slot_reused_by_a_new_connection_keeps_its_own_deadline() {
        let mut t = table(10, 1);
        let t0 = Instant::now();
        accept(&mut t, 0, t0);
        t.closed(0);
        accept(&mut t, 0, t0 + 5 * SECOND);
        // The first connection's deadline finds a different generation.
        assert!(t.due(t0 + 10 * SECOND).is_empty());
        assert_eq!(t.due(t0 + 15 * SECOND), vec![(0, Expiry::Handshake)]);
    }

    #[test]
    fn a_reserve_socket_must_name_itself_within_the_grace() {
        let mut t = table(2, 1);
        let t0 = Instant::now();
        accept(&mut t, 0, t0);
        accept(&mut t, 1, t0);
        t.set_class(0, Class::Client);
        t.set_class(1, Class::Client);
        // Past the client slots: three reserve sockets.
        for key in 2..5 {
            assert_eq!(accept(&mut t, key, t0), Admit::Accept);
        }
        t.set_class(3, Class::Auth); // said HELLO FOLLOWER
        t.closed(1);
        t.set_class(4, Class::Client); // said HELLO CLIENT once a client left
        assert_eq!(t.due(t0 + SECOND), vec![(2, Expiry::Reserve)]);
    }

    #[test]
    fn a_reserve_socket_stays_when_client_slots_free_up() {
        let mut t = table(1, 1);
        let t0 = Instant::now();
        accept(&mut t, 0, t0);
        accept(&mut t, 1, t0);
        t.closed(0);
        assert!(t.due(t0 + SECOND).is_empty());
        assert_eq!(t.due(t0 + 10 * SECOND), vec![(1, Expiry::Handshake)]);
    }

    #[test]
    fn the_grace_never_exceeds_the_handshake_timeout() {
        let mut t = SlotTable::new(1, 1, Duration::from_millis(300), SECOND);
        let t0 = Instant::now();
        accept(&mut t, 0, t0);
        accept(&mut t, 1, t0);
        assert_eq!(
            t.due(t0 + Duration::from_millis(300)),
            vec![(1, Expiry::Reserve), (0, Expiry::Handshake)]
        );
    }
}
