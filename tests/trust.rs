//! The trust boundary between nodes, tried as an attacker on the path
//! would: an impostor that relays a follower's or keyval-ctl's handshake to
//! the real node and then speaks for it, and a relay that changes, drops
//! or injects bytes on a live replication link. Each of them gets the
//! link closed (with a log line naming the failed MAC) and never changes
//! data, fences a node or releases a write.
//!
//! The relays here are plain byte pumps on loopback: they know the
//! handshake's lines, not the secret.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::cluster::{
    digest, free_port, leader_on, put_many, start_follower, wait_followers, wait_synced,
};
use common::{wait_until, Node, SECRET, WAIT};

// ---------------------------------------------------------------------------
// A relay on the path

/// What the relay does to the next chunk it passes in one direction.
#[derive(Debug, Clone)]
enum Tamper {
    /// Flips one bit in the middle of the chunk.
    Flip,
    /// Passes nothing of the chunk on.
    Drop,
    /// Sends these bytes ahead of the chunk.
    Inject(Vec<u8>),
}

/// One direction of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Toward {
    /// From the node that listens to the one that dialled the relay.
    Dialler,
    /// From the dialler to the node.
    Node,
}

/// Tampers waiting for the next chunk, and whether any was done.
#[derive(Default)]
struct Plan {
    pending: Vec<(Toward, Tamper)>,
    done: usize,
}

/// A relay on its own loopback port in front of `target`: every
/// connection to it is dialled through to `target`, and chunks are copied
/// both ways, except where a [`Tamper`] is planned.
struct Relay {
    port: u16,
    plan: Arc<Mutex<Plan>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        Relay::start_on(0, target)
    }

    /// A relay on `port` (0: any free one).
    fn start_on(port: u16, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the relay");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let plan = Arc::new(Mutex::new(Plan::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (plan2, stop2) = (Arc::clone(&plan), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((dialler, _)) => {
                        let Ok(node) = TcpStream::connect(target) else {
                            continue;
                        };
                        dialler.set_nonblocking(false).expect("blocking");
                        pump(&dialler, &node, Toward::Node, &plan2, &stop2);
                        pump(&node, &dialler, Toward::Dialler, &plan2, &stop2);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay { port, plan, stop }
    }

    /// Plans `tamper` for the next chunk going `toward`, and waits until
    /// it was done.
    fn tamper(&self, toward: Toward, tamper: Tamper) {
        let before = {
            let mut plan = self.plan.lock().expect("plan");
            plan.pending.push((toward, tamper));
            plan.done
        };
        wait_until("the relay to tamper", || {
            self.plan.lock().expect("plan").done > before
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread, applying planned tampers.
fn pump(
    from: &TcpStream,
    to: &TcpStream,
    toward: Toward,
    plan: &Arc<Mutex<Plan>>,
    stop: &Arc<AtomicBool>,
) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    let (plan, stop) = (Arc::clone(plan), Arc::clone(stop));
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut chunk = buf[..n].to_vec();
            let tamper = {
                let mut plan = plan.lock().expect("plan");
                let at = plan.pending.iter().position(|(t, _)| *t == toward);
                at.map(|at| {
                    plan.done += 1;
                    plan.pending.remove(at).1
                })
            };
            match tamper {
                None => {}
                Some(Tamper::Flip) => chunk[n / 2] ^= 0x20,
                Some(Tamper::Drop) => chunk.clear(),
                Some(Tamper::Inject(bytes)) => {
                    chunk.splice(0..0, bytes);
                }
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A frame of the replication stream, unsealed: `[kind][len u32 LE][payload]`.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// `payload` dressed as a session record, `[len u32 LE][payload][tag]`,
/// with a tag made up by someone who does not hold the secret.
fn forged_record(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0x5a; 16]);
    out
}

/// A PUT log record as the log stores it: `[body len u32][crc32 of the
/// body][seq u64][op 1][key len u16][key][value]`.
fn log_record(seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = seq.to_le_bytes().to_vec();
    body.push(1);
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend(body);
    out
}

/// An `ACK` frame: seq and epoch.
fn ack(seq: u64, epoch: u64) -> Vec<u8> {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.extend_from_slice(&epoch.to_le_bytes());
    frame(b'A', &payload)
}

// ---------------------------------------------------------------------------
// 1. An impostor that relays the handshake, then speaks for the leader

/// Reads one line (with its `\n`) from a buffered stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a handshake line");
    line
}

#[test]
fn an_impostor_that_relays_the_handshake_cannot_feed_a_follower() {
    let leader = Node::leader(&[]);
    put_many(&leader, "k", 0..10, "v");
    let impostor = TcpListener::bind("127.0.0.1:0").expect("bind the impostor");
    let port = impostor.local_addr().expect("addr").port();
    let follower = start_follower(port, 2, &[]);

    // The follower dials the impostor, which passes the handshake through
    // to the real leader (so every proof is genuine) and then sends frames
    // of its own: a snapshot plan at epoch 2^62 and a record for k7.
    let (to_follower, _) = impostor.accept().expect("the follower dials");
    to_follower.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut from_follower = BufReader::new(to_follower.try_clone().expect("clone"));
    let to_leader = TcpStream::connect(leader.addr).expect("dial the leader");
    to_leader.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut from_leader = BufReader::new(to_leader.try_clone().expect("clone"));
    let (mut f, mut l) = (&to_follower, &to_leader);
    l.write_all(read_line(&mut from_follower).as_bytes())
        .expect("hello");
    f.write_all(read_line(&mut from_leader).as_bytes())
        .expect("challenge");
    l.write_all(read_line(&mut from_follower).as_bytes())
        .expect("auth");
    let welcome = read_line(&mut from_leader);
    assert_eq!(welcome, "HELLO LEADER\n");
    f.write_all(welcome.as_bytes()).expect("welcome");
    // A plan an empty follower would take (a catch-up from seq 0 at epoch
    // 2, within the bound on claims) and a well-formed log record setting
    // k7 to EVIL, each in a session record whose tag is made up: only the
    // MAC tells them from the leader's.
    let mut plan = vec![1u8];
    plan.extend_from_slice(&[7; 16]);
    plan.extend_from_slice(&2u64.to_le_bytes());
    plan.extend_from_slice(&1u64.to_le_bytes());
    plan.push(1);
    plan.extend_from_slice(&0u64.to_le_bytes());
    plan.extend_from_slice(&[0; 4 + 1 + 8 + 8]);
    plan.extend_from_slice(&0u16.to_le_bytes());
    plan.extend_from_slice(&5000u64.to_le_bytes());
    assert_eq!(plan.len(), 73);
    let mut forged = forged_record(&frame(b'P', &plan));
    forged.extend(forged_record(&frame(b'R', &log_record(1, b"k7", b"EVIL"))));
    f.write_all(&forged).expect("forged frames");

    let line = follower.wait_log("session record 0 fails its MAC");
    assert!(line.contains("closing the connection"), "{line}");
    let mut c = follower.client();
    assert_eq!(c.call("GET k7"), "NOT_FOUND", "nothing forged was applied");
    assert_eq!(
        follower.info_field("epoch"),
        "1",
        "the forged epoch was not learned"
    );
    drop((to_follower, to_leader, from_follower, from_leader));

    // Once its dials reach the real leader, it follows that one.
    drop(impostor);
    let _relay = Relay::start_on(port, leader.addr);
    wait_synced(&leader, &[&follower]);
    assert_eq!(follower.client().call("GET k7"), "7-v");
    assert_eq!(digest(&follower), digest(&leader));
}

// ---------------------------------------------------------------------------
// 2. A relay on a live replication link

/// A leader, a follower that reaches it through a [`Relay`], and the relay.
fn relayed_pair(leader_flags: &[&str]) -> (Node, common::cluster::Follower, Relay) {
    let leader = leader_on(free_port(), leader_flags);
    let relay = Relay::start(leader.addr);
    let follower = start_follower(relay.port, 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..20, "v");
    wait_synced(&leader, &[&follower]);
    (leader, follower, relay)
}

#[test]
fn a_changed_byte_on_the_link_drops_it_and_changes_no_value() {
    let (leader, follower, relay) = relayed_pair(&[]);
    // Flip a bit in the middle of the next records the leader sends: the
    // value would read `vilue...` had it been applied.
    let big = "a".repeat(2000);
    let writer = {
        let addr = leader.addr;
        let big = big.clone();
        thread::spawn(move || {
            let mut c = common::Client::connect(addr);
            assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
            for i in 0..50 {
                assert_eq!(c.call(&format!("PUT big{i} {big}")), "OK");
            }
        })
    };
    relay.tamper(Toward::Dialler, Tamper::Flip);
    writer.join().expect("writer");
    let line = follower.wait_log("fails its MAC");
    assert!(line.contains("closing the connection"), "{line}");
    // The link comes back through the (now honest) relay and catches up.
    wait_synced(&leader, &[&follower]);
    assert_eq!(digest(&follower), digest(&leader));
    let mut c = follower.client();
    for i in 0..50 {
        assert_eq!(c.call(&format!("GET big{i}")), big);
    }
}

#[test]
fn an_injected_ack_with_a_huge_epoch_fences_nothing() {
    let (leader, follower, relay) = relayed_pair(&[]);
    relay.tamper(
        Toward::Node,
        Tamper::Inject(forged_record(&ack(1 << 60, 1 << 60))),
    );
    let line = leader.wait_log("fails its MAC");
    assert!(line.contains("closing the connection"), "{line}");
    let mut c = leader.client();
    assert_eq!(
        c.call("PUT after inject"),
        "OK",
        "the leader still takes writes"
    );
    assert_eq!(leader.info_field("epoch"), "1");
    wait_synced(&leader, &[&follower]);
}

#[test]
fn dropped_records_never_release_a_synchronous_write() {
    let (leader, follower, relay) = relayed_pair(&["--sync-followers", "1"]);
    // Drop what the leader sends next, and forge an ack far ahead in the
    // other direction: the follower notices the gap, the leader the
    // forgery, and no write is answered OK that the follower lacks.
    let writer = {
        let addr = leader.addr;
        thread::spawn(move || {
            let mut c = common::Client::connect(addr);
            assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
            let mut acked = Vec::new();
            for i in 0..200 {
                if c.call(&format!("PUT w{i} x")) == "OK" {
                    acked.push(i);
                }
            }
            acked
        })
    };
    relay.tamper(Toward::Dialler, Tamper::Drop);
    relay.tamper(
        Toward::Node,
        Tamper::Inject(forged_record(&ack(1 << 60, 1))),
    );
    let acked = writer.join().expect("writer");
    assert!(!acked.is_empty(), "writes go on once the link is back");
    wait_synced(&leader, &[&follower]);
    let mut c = follower.client();
    for i in acked {
        assert_eq!(c.call(&format!("GET w{i}")), "x", "acknowledged write {i}");
    }
    assert!(
        leader.find_log("fails its MAC").is_some() || follower.find_log("fails its MAC").is_some()
    );
}

// ---------------------------------------------------------------------------
// 3. keyval-ctl through a relay

/// Runs `keyval-ctl info` through `relay`, with `tampers` planned
/// before it starts.
fn ctl_through(relay: &Relay, tampers: Vec<(Toward, Tamper)>) -> (bool, String) {
    relay.plan.lock().expect("plan").pending.extend(tampers);
    let output = Command::new(env!("CARGO_BIN_EXE_keyval-ctl"))
        .env("KEYVAL_SECRET", SECRET)
        .env_remove("KEYVAL_SECRET_FILE")
        .args([
            "--port",
            &relay.port.to_string(),
            "--timeout-ms",
            "3000",
            "info",
        ])
        .output()
        .expect("run keyval-ctl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_request_injected_into_an_admin_session_is_refused_and_ctl_fails() {
    let leader = Node::leader(&[]);
    let relay = Relay::start(leader.addr);
    let (ok, text) = ctl_through(&relay, Vec::new());
    assert!(ok, "an honest relay passes: {text}");
    // The chunks toward the node are `HELLO ADMIN`, `AUTH`, then the
    // first sealed request: a forged `FENCE` goes in ahead of that.
    let (ok, text) = ctl_through(
        &relay,
        vec![
            (Toward::Node, Tamper::Inject(Vec::new())),
            (Toward::Node, Tamper::Inject(Vec::new())),
            (Toward::Node, Tamper::Inject(forged_record(b"FENCE\n"))),
        ],
    );
    assert!(!ok, "keyval-ctl must fail: {text}");
    let line = leader.wait_log("fails its MAC");
    assert!(line.contains("closing the connection"), "{line}");
    assert!(leader.find_log("fenced by an admin").is_none());
    let mut c = leader.client();
    assert_eq!(c.call("PUT still writable"), "OK");
}

#[test]
fn a_forged_reply_to_keyval_ctl_is_refused() {
    let leader = Node::leader(&[]);
    let relay = Relay::start(leader.addr);
    // Toward keyval-ctl: `CHALLENGE`, `HELLO SERVER`, then the sealed
    // reply, which a forged `INFO` answer saying "follower" precedes.
    let (ok, text) = ctl_through(
        &relay,
        vec![
            (Toward::Dialler, Tamper::Inject(Vec::new())),
            (Toward::Dialler, Tamper::Inject(Vec::new())),
            (
                Toward::Dialler,
                Tamper::Inject(forged_record(b"2\nrole follower\nid 1\n")),
            ),
        ],
    );
    assert!(!ok, "keyval-ctl must fail: {text}");
    assert!(text.contains("fails its MAC"), "{text}");
    assert!(!text.contains("role follower"), "{text}");
}
