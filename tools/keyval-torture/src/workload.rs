//! The client side of the scenario: threads that send PUT, DELETE and GET
//! on a small, shared key space to whichever address the leader has now,
//! recording every request as an [`Op`] with its invoke and complete times
//! and outcome; and the pipelined overwrite bursts the nemesis uses to
//! force compactions.
//!
//! A request whose connection breaks is recorded as `Unknown` (it may or
//! may not have happened) and the thread reconnects; reads without a reply
//! are not recorded, since they say nothing.
//!
//! Each connection asks the node for its `INFO` first, so every op names
//! the node that answered it (the checker holds each acknowledged write
//! against the leaderships the failovers made) and whether that node said
//! it was a leader taking writes (reads on such a connection are held to
//! linearizability with `--linearizable-reads`). A client keeps only such
//! a connection: reaching a follower or a fenced leader (the harness's
//! address lags a failover, or a hint was stale), it tries again after a
//! pause, so its reads keep going to the leader. (The compaction bursts
//! keep the connection they get; they only write.) A write answered
//! `WRITE_NOT_ALLOWED <host:port>` (the node is no longer the leader) is
//! recorded as refused, and the client moves to the address the node
//! named; without one, to the address the harness has for the leader. A
//! GET answered `NOT_LEADER [<host:port>]` or `WRITE_NOT_ALLOWED
//! [<host:port>]` moves it the same way. After `REPLICATION_TIMEOUT` (to
//! anything) or `ERROR` to a GET the client reconnects to the harness's
//! leader address, as a client that suspects its node was deposed would.
//!
//! The [`Mix`] says what each client sends. The default is write-heavy;
//! `ReadHeavy` makes half the clients pure readers (they leave their node
//! only when it sends them away or the connection breaks) and the others
//! send one write in five, so about one request in ten is a write, and a
//! deposed leader keeps readers long after its writers left.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use fastrand::Rng;
use keyval_testkit::LineClient;

use crate::client::field;
use crate::history::{key_name, redirect, Clock, Kind, Op, Outcome, ValueId};

/// Longest a request may wait for its reply: longer than the longest
/// SIGSTOP the nemesis holds plus the sync timeout.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts to reach a leader that is down.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// Requests a burst keeps in flight.
const BURST_PIPELINE: usize = 32;
/// Pause between the requests of a pure reader: it still reads a few
/// thousand times a second, without a history that outgrows memory.
const READER_PACE: Duration = Duration::from_micros(100);

/// Where the leader is now; the cluster updates it on every restart.
pub type LeaderAddr = Arc<Mutex<SocketAddr>>;

/// Reads the leader's current address.
pub fn current(leader: &LeaderAddr) -> SocketAddr {
    match leader.lock() {
        Ok(a) => *a,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

/// What the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// PUT 45 %, DELETE 15 %, GET 40 %, on every client.
    Default,
    /// Even-numbered clients only GET; the others PUT 15 %, DELETE 5 %,
    /// GET 80 %.
    ReadHeavy,
}

impl Mix {
    /// Percent of PUT and of DELETE for client `client`.
    pub fn writes(self, client: u16) -> (u32, u32) {
        match self {
            Mix::Default => (45, 15),
            Mix::ReadHeavy if client.is_multiple_of(2) => (0, 0),
            Mix::ReadHeavy => (15, 5),
        }
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Default => "default",
            Mix::ReadHeavy => "read-heavy",
        }
    }
}

/// What the client threads share.
#[derive(Clone)]
pub struct Workload {
    pub leader: LeaderAddr,
    pub keys: u32,
    pub mix: Mix,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
}

/// A client's connection: the node's id, and whether it said it was a
/// leader taking writes when the connection opened.
pub struct Conn {
    pub client: LineClient,
    pub node: u32,
    pub via_leader: bool,
}

impl Workload {
    /// Starts `clients` threads, each with a generator forked from `rng`.
    pub fn spawn(&self, clients: u16, rng: &mut Rng) -> Vec<thread::JoinHandle<Vec<Op>>> {
        (0..clients)
            .map(|client| {
                let me = self.clone();
                let rng = rng.fork();
                thread::Builder::new()
                    .name(format!("client-{client}"))
                    .spawn(move || me.run_client(client, rng))
                    .expect("spawn a client thread")
            })
            .collect()
    }

    fn run_client(&self, client: u16, mut rng: Rng) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut conn: Option<Conn> = None;
        // Where a node that sent the client away said the leader is.
        let mut hint: Option<SocketAddr> = None;
        let mut n = 0u32;
        let (puts, deletes) = self.mix.writes(client);
        while !self.stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                let addr = hint.take().unwrap_or_else(|| current(&self.leader));
                match connect(addr) {
                    Ok(c) if c.via_leader => conn = Some(c),
                    // Not (yet) a leader taking writes: the harness's
                    // address is about to move, or the hint was stale.
                    Ok(_) | Err(_) => thread::sleep(RECONNECT_PAUSE),
                }
                continue;
            };
            let (node, via_leader) = (c.node, c.via_leader);
            if puts + deletes == 0 {
                thread::sleep(READER_PACE);
            }
            let key = rng.u32(..self.keys);
            let roll = rng.u32(..100);
            let (kind, line) = if roll < puts {
                n += 1;
                let id = ValueId { client, n };
                let value = id.text(&padding(&mut rng, false));
                (Kind::Put(id), format!("PUT {} {value}", key_name(key)))
            } else if roll < puts + deletes {
                (Kind::Delete, format!("DELETE {}", key_name(key)))
            } else {
                (Kind::Get, format!("GET {}", key_name(key)))
            };
            let invoke = self.clock.now();
            let outcome = match c.client.call(&line) {
                Ok(reply) => {
                    if let Some(named) = redirect(&reply) {
                        // Not the leader (any more): go where it says.
                        hint = named;
                        conn = None;
                        thread::sleep(RECONNECT_PAUSE);
                    } else if reply == "REPLICATION_TIMEOUT"
                        || (kind == Kind::Get && reply == "ERROR")
                    {
                        // Perhaps deposed: ask the harness again.
                        conn = None;
                    }
                    Op::classify(kind, &reply)
                }
                Err(_) => {
                    conn = None;
                    Outcome::Unknown
                }
            };
            if kind == Kind::Get && outcome == Outcome::Unknown {
                continue;
            }
            ops.push(Op {
                client,
                key,
                kind,
                node: Some(node),
                via_leader,
                invoke,
                complete: self.clock.now(),
                outcome,
            });
        }
        ops
    }

    /// Sends `count` PUTs with large values on random keys, pipelined, as
    /// client `client` (whose counter is `n`), and returns them as ops. Stops
    /// early, recording the rest of the batch as `Unknown`, if the leader
    /// goes away.
    pub fn burst(&self, client: u16, n: &mut u32, count: usize, rng: &mut Rng) -> Vec<Op> {
        let mut ops = Vec::with_capacity(count);
        let Ok(Conn {
            client: mut conn,
            node,
            via_leader,
        }) = connect(current(&self.leader))
        else {
            return ops;
        };
        while ops.len() < count {
            let batch = BURST_PIPELINE.min(count - ops.len());
            let mut bytes = Vec::new();
            let first = ops.len();
            let invoke = self.clock.now();
            for _ in 0..batch {
                *n += 1;
                let id = ValueId { client, n: *n };
                let key = rng.u32(..self.keys);
                let value = id.text(&padding(rng, true));
                bytes.extend_from_slice(format!("PUT {} {value}\n", key_name(key)).as_bytes());
                ops.push(Op {
                    client,
                    key,
                    kind: Kind::Put(id),
                    node: Some(node),
                    via_leader,
                    invoke,
                    complete: invoke,
                    outcome: Outcome::Unknown,
                });
            }
            let sent = conn.send_raw(&bytes).is_ok();
            for op in &mut ops[first..] {
                let reply = if sent {
                    conn.line()
                } else {
                    Err(std::io::ErrorKind::BrokenPipe.into())
                };
                op.complete = self.clock.now();
                match reply {
                    Ok(reply) => op.outcome = Op::classify(op.kind, &reply),
                    Err(_) => return ops,
                }
            }
        }
        ops
    }
}

/// Connects to `addr` and asks the node for its id and role.
///
/// # Errors
/// When it cannot be reached, or its `INFO` has no numeric `id`.
pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
    let mut client = LineClient::connect_client(addr, REPLY_TIMEOUT)?;
    let info = client.info()?;
    let node = field(&info, "id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{addr}: INFO has no numeric id")))?;
    let via_leader = field(&info, "role") == Some("leader") && field(&info, "writes") == Some("ok");
    Ok(Conn {
        client,
        node,
        via_leader,
    })
}

/// Random value padding: usually short, sometimes (always for bursts) a
/// few KiB so the logs grow and compaction has work.
pub fn padding(rng: &mut Rng, large: bool) -> String {
    let len = if large || rng.u32(..10) == 0 {
        rng.usize(200..2000)
    } else {
        rng.usize(1..49)
    };
    std::iter::repeat_with(|| rng.alphanumeric())
        .take(len)
        .collect()
}
