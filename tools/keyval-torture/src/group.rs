//! The MSET group's clients, speaking RESP ([`crate::resp`]); the rules
//! their history is held to are in [`crate::mset`].
//!
//! The writer sends `MSET g:0 <v> ... g:7 <v>`, one generation per MSET,
//! strictly increasing, to the leader, and one request in four is an
//! `MGET` of the group instead. It finds the leader the way the line
//! clients do ([`crate::workload`]): it asks the node's `INFO` over the
//! line protocol, keeps only a connection to a leader taking writes, and
//! after `-READONLY` (recorded as refused), `-REPLICATION_TIMEOUT`, `-ERR`
//! (both recorded as indeterminate) or a broken or timed-out connection
//! (indeterminate) reconnects to the harness's leader address; an `MGET`
//! answered `-NOT_LEADER <host:port>` moves it where the node said.
//!
//! The reader sends only `MGET`s, straight over RESP, to a node picked at
//! random among the running ones (followers included, where a batch that
//! arrived in parts would show), and moves to another every
//! [`READS_PER_NODE`] reads or when sent away. When its connection breaks
//! (the node was killed, most likely) it waits up to [`REJOIN_WAIT`] for
//! that node to run again and reads it first: what a node replayed from
//! its log shows before it catches up. Its `MGET`s count as on a leader
//! connection when the node was the harness's leader at connection time.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fastrand::Rng;

use crate::cluster::Cluster;
use crate::history::{redirect, Clock};
use crate::mset::{self, History, Mget, Mset, MsetOutcome, GROUP};
use crate::nemesis::lock;
use crate::resp::{Reply, RespClient};
use crate::workload::{self, current, LeaderAddr, RECONNECT_PAUSE, REPLY_TIMEOUT};

/// Reads the reader sends to one node before it picks another.
const READS_PER_NODE: u32 = 20;
/// Pause between the reader's MGETs.
const READER_PACE: Duration = Duration::from_millis(1);
/// How long the reader waits for a node whose connection broke to come
/// back (it was killed, most likely), to read it as soon as it restarts.
const REJOIN_WAIT: Duration = Duration::from_secs(5);
/// Pause between the reader's attempts to connect.
const REJOIN_PAUSE: Duration = Duration::from_millis(2);

/// What the group's client threads share.
#[derive(Clone)]
pub struct Group {
    pub leader: LeaderAddr,
    pub cluster: Arc<Mutex<Cluster>>,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
}

/// A RESP connection, with what the node's `INFO` said when it opened.
struct Conn {
    client: RespClient,
    node: u32,
    via_leader: bool,
}

/// Asks the node at `addr` for its id and role, then opens a RESP
/// connection to it.
fn open(addr: SocketAddr) -> io::Result<Conn> {
    let line = workload::connect(addr)?;
    Ok(Conn {
        client: RespClient::connect(addr, REPLY_TIMEOUT)?,
        node: line.node,
        via_leader: line.via_leader,
    })
}

/// What an MGET came to.
enum Read {
    /// An array (or some other non-error reply, kept as text).
    Got(Mget),
    /// `-NOT_LEADER [<host:port>]`: go where it says.
    Away(Option<SocketAddr>),
    /// Another error, or no reply: reconnect.
    Lost,
}

fn mget(c: &mut Conn, clock: Clock) -> Read {
    let keys: Vec<String> = (0..GROUP).map(mset::key).collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(|k| k.as_bytes()));
    let values = match c.client.call(&args) {
        Ok(Reply::Array(Some(items))) => items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(v) => Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned())),
                other => Err(format!("{other:?}")),
            })
            .collect::<Result<Vec<_>, _>>(),
        Ok(Reply::Error(e)) => {
            return match redirect(&e) {
                Some(hint) => Read::Away(hint),
                None => Read::Lost,
            }
        }
        Ok(other) => Err(format!("{other:?}")),
        Err(_) => return Read::Lost,
    };
    Read::Got(Mget {
        node: c.node,
        via_leader: c.via_leader,
        at: clock.now(),
        values,
    })
}

impl Group {
    /// Starts the writer and the reader, each with a generator forked
    /// from `rng`.
    pub fn spawn(&self, rng: &mut Rng) -> Vec<thread::JoinHandle<History>> {
        let writer = {
            let me = self.clone();
            let rng = rng.fork();
            thread::Builder::new()
                .name("mset-writer".into())
                .spawn(move || me.run_writer(rng))
                .expect("spawn the MSET writer")
        };
        let reader = {
            let me = self.clone();
            let rng = rng.fork();
            thread::Builder::new()
                .name("mset-reader".into())
                .spawn(move || me.run_reader(rng))
                .expect("spawn the MGET reader")
        };
        vec![writer, reader]
    }

    fn run_writer(&self, mut rng: Rng) -> History {
        let mut history = History::default();
        let mut conn: Option<Conn> = None;
        let mut hint: Option<SocketAddr> = None;
        let mut gen = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                let addr = hint.take().unwrap_or_else(|| current(&self.leader));
                match open(addr) {
                    Ok(c) if c.via_leader => conn = Some(c),
                    Ok(_) | Err(_) => thread::sleep(RECONNECT_PAUSE),
                }
                continue;
            };
            if rng.u32(..4) == 0 {
                match mget(c, self.clock) {
                    Read::Got(m) => history.mgets.push(m),
                    Read::Away(named) => {
                        hint = named;
                        conn = None;
                        thread::sleep(RECONNECT_PAUSE);
                    }
                    Read::Lost => conn = None,
                }
                continue;
            }
            gen += 1;
            let pairs: Vec<(String, String)> = (0..GROUP)
                .map(|i| {
                    let padding = workload::padding(&mut rng, false);
                    (mset::key(i), mset::value(gen, i, &padding))
                })
                .collect();
            let mut args: Vec<&[u8]> = vec![b"MSET"];
            for (k, v) in &pairs {
                args.push(k.as_bytes());
                args.push(v.as_bytes());
            }
            let node = c.node;
            let outcome = match c.client.call(&args) {
                Ok(Reply::Simple(ok)) if ok == "OK" => MsetOutcome::Acked,
                Ok(Reply::Error(e)) if e.starts_with("READONLY") => {
                    conn = None;
                    thread::sleep(RECONNECT_PAUSE);
                    MsetOutcome::Refused
                }
                Ok(Reply::Error(e))
                    if e.starts_with("REPLICATION_TIMEOUT")
                        || e.starts_with("ERR not acknowledged") =>
                {
                    // Perhaps deposed: ask the harness again.
                    conn = None;
                    MsetOutcome::Indeterminate
                }
                Ok(other) => MsetOutcome::Unexpected(format!("{other:?}")),
                Err(_) => {
                    conn = None;
                    MsetOutcome::Indeterminate
                }
            };
            history.msets.push(Mset { gen, node, outcome });
        }
        history
    }

    fn run_reader(&self, mut rng: Rng) -> History {
        let mut history = History::default();
        // The node whose connection broke, and until when to wait for it.
        let mut back_to: Option<(u32, Instant)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let (running, leader) = {
                let c = lock(&self.cluster);
                (c.running(), c.leader())
            };
            let pick = match back_to {
                Some((id, until)) if Instant::now() < until => {
                    running.iter().find(|(n, _)| *n == id).copied()
                }
                _ => {
                    back_to = None;
                    running.get(rng.usize(..running.len().max(1))).copied()
                }
            };
            let conn = pick.and_then(|(node, addr)| {
                let client = RespClient::connect(addr, REPLY_TIMEOUT).ok()?;
                Some(Conn {
                    client,
                    node,
                    via_leader: node == leader,
                })
            });
            let Some(mut c) = conn else {
                thread::sleep(REJOIN_PAUSE);
                continue;
            };
            back_to = None;
            for _ in 0..READS_PER_NODE {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                match mget(&mut c, self.clock) {
                    Read::Got(m) => history.mgets.push(m),
                    Read::Away(_) => break,
                    Read::Lost => {
                        back_to = Some((c.node, Instant::now() + REJOIN_WAIT));
                        break;
                    }
                }
                thread::sleep(READER_PACE);
            }
        }
        history
    }
}
