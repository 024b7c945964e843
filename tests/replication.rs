//! Replication (`docs/replication.md`) between real processes on loopback:
//! writes reach followers, late and restarted followers get a snapshot or
//! only what they missed, nodes start and restart in any order, a follower
//! never throws away data its leader does not have, the HMAC handshake keeps
//! out wrong secrets and impostors, the follower cap, a crash mid-snapshot,
//! the output rule of `--sync-followers`, and stalled followers.
//!
//! Fake peers (a follower or a leader scripted over a plain `TcpStream`)
//! speak the handshake of `docs/protocol.md` and the frames of
//! `src/replication/wire.rs`, computed here independently of the server's
//! code.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    count_log, counter, digest, free_port, leader_on, put_many, seq, start_follower, stop,
    wait_counter, wait_followers, wait_log_count, wait_synced,
};
use common::{wait_until, Client, Node, SECRET, WAIT};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A file holding `secret`, for `--secret-file` (`Node::spawn` always sets
/// `KEYVAL_SECRET` to [`SECRET`], and the file takes precedence).
fn secret_file(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("other.secret");
    fs::write(&path, format!("{secret}\n")).expect("write secret file");
    path
}

/// Snapshot temp files (`.<log>.*.tmp`) in `dir`.
fn temp_files(dir: &Path) -> Vec<(String, u64)> {
    fs::read_dir(dir)
        .expect("read data dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            (name.starts_with('.') && name.ends_with(".tmp")).then_some((name, len))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Fake peers

/// lower-case hex of HMAC-SHA256(secret, message).
fn hmac_hex(secret: &[u8], message: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("hmac key");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A fresh 32-hex-digit nonce.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        Instant::now()
    );
    hex::encode(Sha256::digest(seed.as_bytes()))[..32].to_string()
}

/// One direction of a session after `HELLO LEADER`: records
/// `[len u32 LE][payload][16-byte tag]`, the tag the first 16 bytes of
/// BLAKE3-keyed(key, payload ‖ counter u64 LE ‖ len u32 LE), the key
/// HMAC-SHA256(secret, "keyval-session|<sender word>|<id>|<fnonce>|<lnonce>").
struct SealHalf {
    key: [u8; 32],
    counter: u64,
}

impl SealHalf {
    fn new(sender: &str, id: &str, fnonce: &str, lnonce: &str) -> SealHalf {
        let key = hex::decode(hmac_hex(
            SECRET.as_bytes(),
            &format!("keyval-session|{sender}|{id}|{fnonce}|{lnonce}"),
        ))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
        SealHalf { key, counter: 0 }
    }

    fn tag(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(payload);
        mac.update(&self.counter.to_le_bytes());
        mac.update(&(payload.len() as u32).to_le_bytes());
        self.counter += 1;
        mac.finalize().as_bytes()[..16].to_vec()
    }

    /// `plain` as one record (the tests send small messages).
    fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = (plain.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(plain);
        let tag = self.tag(plain);
        out.extend_from_slice(&tag);
        out
    }
}

/// One end of a replication connection, scripted by the test.
struct Peer {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// After `HELLO LEADER`: what this end sends, and what it receives.
    send: Option<SealHalf>,
    recv: Option<SealHalf>,
    /// Received records not yet whole, and opened bytes not yet taken.
    wire: Vec<u8>,
    plain: Vec<u8>,
}

impl Peer {
    fn new(stream: TcpStream) -> Peer {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Peer {
            stream,
            reader,
            send: None,
            recv: None,
            wire: Vec::new(),
            plain: Vec::new(),
        }
    }

    fn connect(addr: SocketAddr) -> Peer {
        Peer::new(TcpStream::connect(addr).expect("connect"))
    }

    /// From here on both directions are sealed: `me` and `other` are the
    /// words of this end and the other (`keyval-follower`, `keyval-leader`).
    fn begin_session(&mut self, me: &str, other: &str, id: &str, fnonce: &str, lnonce: &str) {
        self.send = Some(SealHalf::new(me, id, fnonce, lnonce));
        self.recv = Some(SealHalf::new(other, id, fnonce, lnonce));
    }

    fn send_line(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Sends `bytes`, sealed once the session began.
    fn send_bytes(&mut self, bytes: &[u8]) {
        let wire = match &mut self.send {
            Some(half) => half.seal(bytes),
            None => bytes.to_vec(),
        };
        self.stream.write_all(&wire).expect("send");
    }

    fn line(&mut self) -> String {
        let mut buf = String::new();
        let n = self.reader.read_line(&mut buf).expect("read line");
        assert!(n > 0, "connection closed while waiting for a line");
        assert_eq!(buf.pop(), Some('\n'), "line without newline: {buf:?}");
        buf
    }

    /// `[kind u8][len u32 LE][payload]`.
    fn send_frame(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(payload);
        self.send_bytes(&frame);
    }

    /// Reads up to `max` bytes from the socket and opens the records they
    /// complete into `plain` (checking every tag).
    fn pull(&mut self, max: usize) {
        let mut buf = vec![0u8; max];
        let n = self.reader.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed while waiting for bytes");
        let Some(recv) = &mut self.recv else {
            self.plain.extend_from_slice(&buf[..n]);
            return;
        };
        self.wire.extend_from_slice(&buf[..n]);
        while self.wire.len() >= 4 {
            let len = u32::from_le_bytes(self.wire[..4].try_into().expect("4")) as usize;
            if self.wire.len() < 4 + len + 16 {
                break;
            }
            let tag = recv.tag(&self.wire[4..4 + len]);
            assert_eq!(&self.wire[4 + len..4 + len + 16], &tag[..], "record MAC");
            self.plain.extend_from_slice(&self.wire[4..4 + len]);
            self.wire.drain(..4 + len + 16);
        }
    }

    /// The next whole frame in `plain`, if there is one.
    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let head = self.plain.get(..5)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let frame: Vec<u8> = self.plain.get(..5 + len)?.to_vec();
        self.plain.drain(..5 + len);
        Some((frame[0], frame[5..].to_vec()))
    }

    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(frame) = self.take_frame() {
                return frame;
            }
            self.pull(256 << 10);
        }
    }

    /// Whether the other side closes the connection (reading and dropping
    /// whatever comes first), within [`WAIT`].
    fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 64 << 10];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A fake follower after `HELLO FOLLOWER`: the nonces of its handshake.
struct Challenged {
    peer: Peer,
    id: String,
    fnonce: String,
    lnonce: String,
    lproof: String,
}

impl Challenged {
    /// The `fproof` for `secret`.
    fn fproof(&self, secret: &str) -> String {
        let message = format!(
            "keyval-follower|{}|{}|{}",
            self.id, self.fnonce, self.lnonce
        );
        hmac_hex(secret.as_bytes(), &message)
    }

    /// Sends `line` (the `AUTH`) and returns the leader's reply; after
    /// `HELLO LEADER` the peer's session began.
    fn answer(mut self, line: &str) -> (Peer, String) {
        self.peer.send_line(line);
        let reply = self.peer.line();
        if reply == "HELLO LEADER" {
            self.peer.begin_session(
                "keyval-follower",
                "keyval-leader",
                &self.id,
                &self.fnonce,
                &self.lnonce,
            );
        }
        (self.peer, reply)
    }
}

/// Says `HELLO FOLLOWER|<id>:<fnonce>` and checks the leader's challenge
/// proves [`SECRET`].
fn hello_follower(addr: SocketAddr, id: u32) -> Challenged {
    let mut peer = Peer::connect(addr);
    let fnonce = nonce();
    peer.send_line(&format!("HELLO FOLLOWER|{id}:{fnonce}"));
    let challenge = peer.line();
    let parts: Vec<&str> = challenge.split(' ').collect();
    assert!(
        parts.len() == 3 && parts[0] == "CHALLENGE",
        "not a challenge: {challenge:?}"
    );
    let (lnonce, lproof) = (parts[1].to_string(), parts[2].to_string());
    assert!(
        lnonce.len() == 32 && lnonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "lnonce {lnonce:?}"
    );
    let expected = hmac_hex(
        SECRET.as_bytes(),
        &format!("keyval-leader|{id}|{fnonce}|{lnonce}"),
    );
    assert_eq!(lproof, expected, "the leader's proof");
    Challenged {
        peer,
        id: id.to_string(),
        fnonce,
        lnonce,
        lproof,
    }
}

/// A `SYNC` payload for a log of one history: seq, epoch, one segment.
fn sync_payload(history: &[u8], seq: u64, epoch: u64) -> Vec<u8> {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.extend_from_slice(&epoch.to_le_bytes());
    payload.push(0);
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(history);
    payload.extend_from_slice(&epoch.to_le_bytes());
    payload.extend_from_slice(&0u64.to_le_bytes());
    payload
}

/// An `ACK` payload: seq and epoch.
fn ack_payload(seq: u64, epoch: u64) -> Vec<u8> {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.extend_from_slice(&epoch.to_le_bytes());
    payload
}

/// A whole handshake with the right secret; returns the reply to `AUTH`.
fn fake_follower(addr: SocketAddr, id: u32) -> (Peer, String) {
    let challenged = hello_follower(addr, id);
    let auth = format!("AUTH {}", challenged.fproof(SECRET));
    challenged.answer(&auth)
}

/// A fake follower the leader counts as connected: handshake, an empty
/// `SYNC`, the `PLAN`, and an `ACK`.
fn join_fake_follower(addr: SocketAddr, id: u32) -> Peer {
    let (mut peer, reply) = fake_follower(addr, id);
    assert_eq!(reply, "HELLO LEADER", "follower {id}");
    peer.send_frame(b'S', &sync_payload(&[0; 16], 0, 1));
    let (kind, payload) = peer.frame();
    assert_eq!(kind, b'P', "the first frame after SYNC is the plan");
    assert_eq!(payload[0], 2, "an unknown history gets a snapshot");
    assert_eq!(payload.len(), 73);
    assert_ne!(
        payload[47..55],
        [0; 8],
        "a snapshot plan announces its size"
    );
    peer.send_frame(b'A', &ack_payload(0, 1));
    peer
}

// ---------------------------------------------------------------------------
// 1. The basics

#[test]
fn writes_and_deletes_replicate_to_two_followers() {
    let leader = Node::leader(&[]);
    let port = leader.addr.port();
    let f2 = start_follower(port, 2, &[]);
    let f3 = start_follower(port, 3, &[]);
    wait_followers(&leader, 2);

    let mut c = leader.client();
    for i in 0..50 {
        assert_eq!(c.call(&format!("PUT key{i} value {i} with spaces")), "OK");
    }
    for i in 0..10 {
        assert_eq!(c.call(&format!("DELETE key{i}")), "OK");
    }
    assert_eq!(c.call("PUT key10 overwritten"), "OK");
    wait_synced(&leader, &[&f2, &f3]);

    let leader_seq = seq(&leader);
    assert_eq!(leader_seq, 61);
    let history = leader.info_field("history");
    for f in [&f2, &f3] {
        let mut fc = f.client();
        assert_eq!(fc.call("GET key10"), "overwritten");
        assert_eq!(fc.call("GET key0"), "NOT_FOUND");
        assert_eq!(fc.call("GET key20"), "value 20 with spaces");
        fc.send("KEYS key");
        assert_eq!(fc.list().len(), 40);
        // The refusal says where the leader is.
        let refusal = format!("WRITE_NOT_ALLOWED 127.0.0.1:{}", leader.addr.port());
        assert_eq!(fc.call("PUT x y"), refusal);
        assert_eq!(fc.call("DELETE key20"), refusal);
        assert_eq!(fc.call("GET key20"), "value 20 with spaces");
        assert_eq!(fc.call("GET x"), "NOT_FOUND");
        assert_eq!(fc.info_field("role"), "follower");
        assert_eq!(fc.info_field("leader_link"), "up");
        assert_eq!(fc.info_field("history"), history);
        assert_eq!(fc.info_field("keys"), "40");
        wait_until("the follower to see the leader's seq", || {
            f.info_field("leader_seq") == leader_seq.to_string() && f.info_field("lag") == "0"
        });
    }
    // The leader sees both acks catch up, from their addresses.
    wait_until("acks on the leader", || {
        let info = leader.info();
        ["follower_2", "follower_3"].iter().all(|name| {
            info.iter().any(|(k, v)| {
                k == name
                    && v.starts_with("addr=127.0.0.1:")
                    && v.ends_with(&format!(" acked={leader_seq} lag=0"))
            })
        })
    });
    // The stream is live: a later write arrives too.
    assert_eq!(c.call("PUT late yes"), "OK");
    wait_synced(&leader, &[&f2, &f3]);
    assert_eq!(f3.client().call("GET late"), "yes");
}

#[test]
fn a_follower_started_late_gets_a_snapshot() {
    let leader = Node::leader(&[]);
    put_many(&leader, "k", 0..100, "v");
    assert_eq!(leader.client().call("DELETE k7"), "OK");
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_synced(&leader, &[&f2]);

    wait_counter(&leader, "snapshots_sent", 1);
    leader.wait_log("follower 2 connected");
    f2.wait_log("leader accepted; receiving a snapshot");
    wait_counter(&f2, "snapshots_received", 1);
    // Only the log says what the snapshot held.
    let installed = f2.wait_log("installed a snapshot: ");
    assert!(
        installed.contains("installed a snapshot: seq 101, 99 keys, "),
        "{installed}"
    );
    assert_eq!(f2.info_field("history"), leader.info_field("history"));
    assert_eq!(f2.client().call("GET k99"), "99-v");
    // After the snapshot the live stream goes on.
    put_many(&leader, "after", 0..10, "w");
    wait_synced(&leader, &[&f2]);
    assert_eq!(f2.client().call("GET after9"), "9-w");
}

/// The follower builds the snapshot on threads and holds back what follows
/// `END` until it is installed; writes made throughout still arrive, in
/// order, and the follower answers clients meanwhile.
#[test]
fn writes_during_a_snapshot_follow_it_in_order() {
    let leader = Node::leader(&[]);
    let value = "v".repeat(200);
    put_many(&leader, "k", 0..20_000, &value);
    // Deletes and overwrites in the log the snapshot sends: the follower's
    // map must apply each key's writes in order.
    let mut c = leader.client();
    for i in (0..2_000).step_by(10) {
        assert_eq!(c.call(&format!("DELETE k{i}")), "OK");
        assert_eq!(c.call(&format!("PUT k{} again", i + 1)), "OK");
    }
    let stop_writing = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop_writing, written) = (Arc::clone(&stop_writing), Arc::clone(&written));
        let addr = leader.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
            let mut i = 0u64;
            while !stop_writing.load(Ordering::Relaxed) || i < 50 {
                assert_eq!(c.call(&format!("PUT live{} {i}", i % 500)), "OK");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    let mut client = f2.client();
    let deadline = Instant::now() + WAIT;
    loop {
        // The follower answers clients while the snapshot arrives.
        assert_eq!(client.call("PING"), "PONG");
        if client.info_field("snapshots_received") != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot installed");
    }
    wait_counter(&f2, "snapshots_received", 1);
    // Only the log says which seq the snapshot ended at.
    let installed = f2.wait_log("installed a snapshot: seq ");
    let more = written.load(Ordering::Relaxed) + 50;
    wait_until("writes after the install", || {
        written.load(Ordering::Relaxed) >= more
    });
    stop_writing.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    wait_synced(&leader, &[&f2]);
    let snapshot_seq: u64 = installed
        .split("installed a snapshot: seq ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {installed:?}"));
    assert!(
        snapshot_seq < seq(&leader),
        "no write followed the snapshot: {installed}"
    );
    assert_eq!(f2.client().call("GET k19999"), format!("19999-{value}"));
    assert_eq!(f2.client().call("GET k10"), "NOT_FOUND");
    assert_eq!(f2.client().call("GET k11"), "again");
    assert_eq!(digest(&f2), digest(&leader));
}

#[test]
fn a_restarted_follower_gets_only_what_it_missed() {
    let leader = Node::leader(&[]);
    let mut f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "a", 0..20, "v");
    wait_synced(&leader, &[&f2]);
    wait_counter(&leader, "snapshots_sent", 1);

    f2.kill9();
    leader.wait_log("follower 2 disconnected");
    put_many(&leader, "b", 0..30, "v");
    assert_eq!(seq(&leader), 50);
    f2.restart();
    wait_synced(&leader, &[&f2]);

    wait_counter(&leader, "catchups_sent", 1);
    wait_counter(&f2, "catchups_received", 1);
    // Only the log says where the catch-up began.
    leader.wait_log("follower 2 catching up from seq 20 to 50");
    f2.wait_log("leader accepted; catching up from seq 20 to 50");
    assert_eq!(
        counter(&leader, "snapshots_sent"),
        1,
        "a second snapshot; log:\n{}",
        leader.log_text()
    );
    assert_eq!(counter(&f2, "snapshots_received"), 0);
    assert_eq!(count_log(&f2, "receiving a snapshot"), 0);
    assert_eq!(f2.client().call("GET b29"), "29-v");
}

#[test]
fn a_follower_behind_the_compacted_log_gets_a_snapshot() {
    let leader = Node::leader(&["--compact-min-bytes", "4096"]);
    let mut f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..5, "v");
    wait_synced(&leader, &[&f2]);
    f2.kill9();
    leader.wait_log("follower 2 disconnected");

    // Overwrite a few keys until the log is compacted past the follower.
    let mut c = leader.client();
    let mut i = 0;
    wait_until("a compaction", || {
        for _ in 0..50 {
            i += 1;
            let put = format!("PUT hot{} {i}-{}", i % 4, "x".repeat(60));
            assert_eq!(c.call(&put), "OK");
        }
        counter(&leader, "compactions") != 0 && leader.info_field("compacting") == "0"
    });
    assert_eq!(c.call("PUT tail end"), "OK");

    f2.restart();
    wait_synced(&leader, &[&f2]);
    wait_counter(&leader, "snapshots_sent", 2);
    wait_counter(&f2, "snapshots_received", 1);
    assert_eq!(f2.client().call("GET k4"), "4-v");
    assert_eq!(f2.client().call("GET tail"), "end");
}

// ---------------------------------------------------------------------------
// 2. Start and restart in any order

/// A fake follower that reads its snapshot slowly (a few KiB at a time,
/// acking now and then so the leader neither finds it silent nor stalled)
/// until `drain` is set, then reads fast; returns (still connected) once
/// it has seen `END`.
fn slow_snapshot_reader(mut peer: Peer, drain: Arc<AtomicBool>) -> thread::JoinHandle<Peer> {
    thread::spawn(move || {
        let mut last_ack = Instant::now();
        let deadline = Instant::now() + 4 * WAIT;
        loop {
            assert!(Instant::now() < deadline, "no END within {:?}", 4 * WAIT);
            let fast = drain.load(Ordering::Relaxed);
            peer.pull(if fast { 256 << 10 } else { 8 << 10 });
            while let Some((kind, _)) = peer.take_frame() {
                if kind == b'E' {
                    return peer;
                }
            }
            if last_ack.elapsed() > Duration::from_millis(500) {
                peer.send_frame(b'A', &ack_payload(0, 1));
                last_ack = Instant::now();
            }
            if !fast {
                thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

#[test]
fn a_compaction_waits_for_a_follower_still_reading_the_replaced_log() {
    let leader = Node::leader(&["--compact-min-bytes", "16000000", "--compact-ratio", "1.2"]);
    let value = "x".repeat(1000);
    // A 12 MB log: more than the socket buffers take at once.
    put_many(&leader, "k", 0..12_000, &value);
    let peer = join_fake_follower(leader.addr, 2);
    let drain = Arc::new(AtomicBool::new(false));
    let reader = slow_snapshot_reader(peer, Arc::clone(&drain));
    wait_followers(&leader, 1);
    // Overwrites take the log past 16 MB: the first compaction runs while
    // the snapshot is read from the file it began on.
    put_many(&leader, "k", 0..5_000, &value);
    wait_counter(&leader, "compactions", 1);
    // More overwrites call for a second one, which would leave the
    // snapshot's file behind twice: it waits.
    put_many(&leader, "k", 5_000..10_000, &value);
    leader.wait_log("compaction waits: follower 2 still reads the log file");
    assert_eq!(counter(&leader, "compactions"), 1);
    // Once the follower has read its snapshot the compaction goes ahead,
    // and the follower was never dropped.
    drain.store(true, Ordering::Relaxed);
    let peer = reader.join().expect("the snapshot reached END");
    wait_counter(&leader, "compactions", 2);
    assert!(leader.find_log("compacted twice").is_none());
    assert!(leader.find_log("follower 2 disconnected").is_none());
    drop(peer);
}

#[test]
fn a_restarted_leader_is_found_again_by_its_followers() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let f2 = start_follower(port, 2, &[]);
    let f3 = start_follower(port, 3, &[]);
    wait_followers(&leader, 2);
    put_many(&leader, "before", 0..10, "v");
    wait_synced(&leader, &[&f2, &f3]);

    stop(&mut leader);
    wait_until("the followers to see the leader gone", || {
        f2.info_field("leader_link") == "down" && f3.info_field("leader_link") == "down"
    });
    assert_eq!(f2.client().call("GET before3"), "3-v", "reads go on");
    leader.restart();
    assert_eq!(leader.addr.port(), port);
    wait_followers(&leader, 2);
    wait_counter(&leader, "catchups_sent", 2);
    // Only the log says which follower caught up from where.
    leader.wait_log("follower 2 catching up from seq 10 to 10");
    leader.wait_log("follower 3 catching up from seq 10 to 10");

    put_many(&leader, "after", 0..10, "w");
    wait_synced(&leader, &[&f2, &f3]);
    for f in [&f2, &f3] {
        assert_eq!(f.client().call("GET after9"), "9-w");
        assert_eq!(f.info_field("leader_link"), "up");
    }
}

#[test]
fn followers_started_before_the_leader_find_it() {
    let port = free_port();
    let f2 = start_follower(port, 2, &[]);
    let f3 = start_follower(port, 3, &[]);
    assert_eq!(f2.info_field("leader_link"), "down");
    let leader = leader_on(port, &[]);
    wait_followers(&leader, 2);
    put_many(&leader, "k", 0..20, "v");
    wait_synced(&leader, &[&f2, &f3]);
    assert_eq!(f3.client().call("GET k19"), "19-v");
    assert_eq!(f2.info_field("leader_link"), "up");
}

// ---------------------------------------------------------------------------
// 3. A follower never throws away data its leader does not have

#[test]
fn a_leader_restarted_on_an_empty_disk_is_refused_until_the_follower_is_emptied() {
    let port = free_port();
    let mut old_leader = leader_on(port, &[]);
    let mut f2 = start_follower(port, 2, &[]);
    wait_followers(&old_leader, 1);
    put_many(&old_leader, "old", 0..10, "v");
    wait_synced(&old_leader, &[&f2]);
    let (kept_digest, kept_seq) = (digest(&f2), seq(&f2));
    stop(&mut old_leader);
    drop(old_leader);

    let leader = leader_on(port, &[]);
    assert_eq!(leader.client().call("PUT new 1"), "OK");
    let refusal = f2.wait_log("refusing this leader: ");
    assert!(refusal.contains("unrelated"), "{refusal}");
    assert!(refusal.contains("empty its data directory"), "{refusal}");
    wait_until("leader_link refused", || {
        f2.info_field("leader_link") == "refused"
    });
    // It keeps retrying, and keeps refusing.
    wait_until("a second refusal", || {
        count_log(&f2, "refusing this leader: ") >= 2
    });
    assert_eq!(digest(&f2), kept_digest);
    assert_eq!(seq(&f2), kept_seq);
    let mut fc = f2.client();
    assert_eq!(fc.call("GET old5"), "5-v");
    assert_eq!(fc.call("GET new"), "NOT_FOUND");
    assert_eq!(leader.info_field("followers"), "0");
    assert!(!leader.info().iter().any(|(k, _)| k == "follower_2"));
    drop(fc);

    // The operator empties the follower: it resyncs from the new leader.
    stop(&mut f2);
    for entry in fs::read_dir(f2.dir.path()).expect("read dir").flatten() {
        fs::remove_file(entry.path()).expect("remove");
    }
    f2.restart();
    wait_synced(&leader, &[&f2]);
    wait_followers(&leader, 1);
    assert_eq!(f2.client().call("GET new"), "1");
    assert_eq!(f2.client().call("GET old5"), "NOT_FOUND");
    assert_eq!(f2.info_field("leader_link"), "up");
}

#[test]
fn a_leader_behind_the_follower_in_the_same_history_is_refused() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let f2 = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..10, "v");
    wait_synced(&leader, &[&f2]);
    stop(&mut leader);
    let log = leader.data_dir.join("leader.log");
    let at_seq_10 = fs::read(&log).expect("read leader log");

    leader.restart();
    put_many(&leader, "more", 0..5, "v");
    wait_synced(&leader, &[&f2]);
    let (kept_digest, kept_seq) = (digest(&f2), seq(&f2));
    assert_eq!(kept_seq, 15);

    // The leader loses its last five writes.
    stop(&mut leader);
    fs::write(&log, &at_seq_10).expect("write leader log");
    leader.restart();
    assert_eq!(seq(&leader), 10);
    let refusal = f2.wait_log("refusing this leader: ");
    assert!(
        refusal.contains("holds 5 writes (seq 11..=15) that the leader does not have"),
        "{refusal}"
    );
    wait_until("leader_link refused", || {
        f2.info_field("leader_link") == "refused"
    });
    assert_eq!(digest(&f2), kept_digest);
    assert_eq!(seq(&f2), kept_seq);
    assert_eq!(f2.client().call("GET more4"), "4-v");
    assert_eq!(leader.info_field("followers"), "0");
}

// ---------------------------------------------------------------------------
// 4. Authentication

#[test]
fn a_follower_with_another_secret_is_refused() {
    let leader = Node::leader(&[]);
    assert_eq!(leader.client().call("PUT k v"), "OK");
    let secrets = tempfile::tempdir().expect("tempdir");
    let other = secret_file(secrets.path(), "another-secret");
    let f2 = start_follower(
        leader.addr.port(),
        2,
        &["--secret-file", other.to_str().expect("utf8 path")],
    );
    // The follower checks the leader's proof first, and drops it.
    f2.wait_log("the leader could not prove the shared secret");
    wait_until("a retry", || {
        count_log(&f2, "could not prove the shared secret") >= 2
    });
    assert_eq!(leader.info_field("followers"), "0");
    assert!(leader.find_log("follower 2 authenticated").is_none());
    assert_ne!(f2.info_field("leader_link"), "up");
    assert_eq!(f2.info_field("keys"), "0");
    assert_eq!(f2.client().call("GET k"), "NOT_FOUND");
}

#[test]
fn a_fake_follower_with_a_wrong_proof_gets_invalid_secret_key() {
    let leader = Node::leader(&[]);
    let addr = leader.addr;

    // A proof made with another secret.
    let challenged = hello_follower(addr, 7);
    let auth = format!("AUTH {}", challenged.fproof("wrong-secret"));
    let (mut peer, reply) = challenged.answer(&auth);
    assert_eq!(reply, "INVALID_SECRET_KEY");
    assert!(peer.is_closed());

    // The leader's own proof sent back (a reflection).
    let challenged = hello_follower(addr, 7);
    let auth = format!("AUTH {}", challenged.lproof);
    let (mut peer, reply) = challenged.answer(&auth);
    assert_eq!(reply, "INVALID_SECRET_KEY");
    assert!(peer.is_closed());

    // The right secret but proved for another id.
    let mut challenged = hello_follower(addr, 7);
    challenged.id = "8".into();
    let auth = format!("AUTH {}", challenged.fproof(SECRET));
    let (mut peer, reply) = challenged.answer(&auth);
    assert_eq!(reply, "INVALID_SECRET_KEY");
    assert!(peer.is_closed());

    // Not hex at all.
    let (mut peer, reply) = hello_follower(addr, 7).answer("AUTH not-hex");
    assert_eq!(reply, "INVALID_SECRET_KEY");
    assert!(peer.is_closed());

    // Not an AUTH line.
    let (mut peer, reply) = hello_follower(addr, 7).answer("HELLO LEADER");
    assert_eq!(reply, "INVALID_HANDSHAKE_MESSAGE");
    assert!(peer.is_closed());

    wait_log_count(&leader, "follower 7 refused: INVALID_SECRET_KEY", 4);
    assert_eq!(leader.info_field("followers"), "0");

    // And the right proof is let in.
    let (_peer, reply) = fake_follower(addr, 7);
    assert_eq!(reply, "HELLO LEADER");
}

#[test]
fn malformed_follower_hellos_and_hellos_to_a_follower_are_refused() {
    let leader = Node::leader(&[]);
    let good = nonce();
    for hello in [
        format!("HELLO FOLLOWER|0:{good}"),
        format!("HELLO FOLLOWER|x:{good}"),
        format!("HELLO FOLLOWER|:{good}"),
        "HELLO FOLLOWER|2:0011".to_string(),
        format!("HELLO FOLLOWER|2:{}", "z".repeat(32)),
        format!("HELLO FOLLOWER|2:{good}0"),
    ] {
        let mut peer = Peer::connect(leader.addr);
        peer.send_line(&hello);
        assert_eq!(peer.line(), "INVALID_HANDSHAKE_MESSAGE", "{hello:?}");
        assert!(peer.is_closed(), "{hello:?}");
    }
    // The leader's own id, once the secret is proved: refused, saying why.
    let (mut peer, reply) = fake_follower(leader.addr, 1);
    assert!(reply.starts_with("DUPLICATE_ID "), "{reply}");
    assert!(reply.contains("own id"), "{reply}");
    assert!(peer.is_closed());
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    let mut peer = Peer::connect(f2.addr);
    peer.send_line(&format!("HELLO FOLLOWER|3:{good}"));
    assert_eq!(peer.line(), "CANNOT_ACCEPT_FOLLOWER_CONNECTION");
    assert!(peer.is_closed());
    // The follower itself is still fine.
    wait_followers(&leader, 1);
    assert_eq!(f2.info_field("leader_link"), "up");
}

#[test]
fn an_impostor_leader_with_another_secret_is_refused() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let f2 = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "real", 0..10, "v");
    wait_synced(&leader, &[&f2]);
    let (kept_digest, kept_seq) = (digest(&f2), seq(&f2));
    stop(&mut leader);

    // An impostor with data of its own, then on the leader's port.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = secret_file(dir.path(), "impostor-secret");
    let other = other.to_str().expect("utf8 path");
    let mut impostor = Node::start_in(dir.path(), &["--role", "leader", "--secret-file", other]);
    put_many(&impostor, "fake", 0..20, "x");
    stop(&mut impostor);
    drop(impostor);
    let port_arg = port.to_string();
    let impostor = Node::start_in(
        dir.path(),
        &[
            "--role",
            "leader",
            "--port",
            &port_arg,
            "--secret-file",
            other,
        ],
    );
    assert_eq!(seq(&impostor), 20);

    f2.wait_log("the leader could not prove the shared secret");
    wait_until("a retry", || {
        count_log(&f2, "could not prove the shared secret") >= 2
    });
    assert_eq!(digest(&f2), kept_digest);
    assert_eq!(seq(&f2), kept_seq);
    assert_ne!(f2.info_field("leader_link"), "up");
    assert_eq!(f2.client().call("GET fake1"), "NOT_FOUND");
    assert_eq!(impostor.info_field("followers"), "0");
    assert!(impostor.find_log("follower 2 authenticated").is_none());
    drop(impostor);

    // The real leader comes back and the follower follows it again.
    leader.restart();
    wait_followers(&leader, 1);
    assert_eq!(leader.client().call("PUT back 1"), "OK");
    wait_synced(&leader, &[&f2]);
}

// ---------------------------------------------------------------------------
// 5. The follower cap

#[test]
fn the_eleventh_follower_gets_max_size_exceeded() {
    let leader = Node::leader(&[]);
    assert_eq!(leader.client().call("PUT k v"), "OK");
    let addr = leader.addr;
    let mut fakes: Vec<(u32, Peer)> = (2..12)
        .map(|id| (id, join_fake_follower(addr, id)))
        .collect();
    wait_followers(&leader, 10);

    let (mut peer, reply) = fake_follower(addr, 12);
    assert_eq!(reply, "MAX_SIZE_EXCEEDED");
    assert!(peer.is_closed());
    leader.wait_log("follower 12 refused: MAX_SIZE_EXCEEDED");

    // An id that is already connected replaces its old connection.
    let replacement = join_fake_follower(addr, 5);
    leader.wait_log("follower 5: reconnected from");
    let at = fakes.iter().position(|(id, _)| *id == 5).expect("id 5");
    let (_, mut old) = fakes.remove(at);
    assert!(old.is_closed(), "the replaced connection is closed");
    fakes.push((5, replacement));
    wait_followers(&leader, 10);

    // One leaves: there is room again.
    fakes.retain(|(id, _)| *id != 3);
    wait_followers(&leader, 9);
    let _twelfth = join_fake_follower(addr, 12);
    wait_followers(&leader, 10);
}

#[test]
fn max_followers_one_refuses_a_second_real_follower() {
    let leader = Node::leader(&["--max-followers", "1"]);
    let port = leader.addr.port();
    let f2 = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);
    let f3 = start_follower(port, 3, &[]);
    let line = f3.wait_log("the leader refused the handshake");
    assert!(line.contains("MAX_SIZE_EXCEEDED"), "{line}");
    assert_eq!(f3.info_field("leader_link"), "down");
    assert!(f3
        .info_field("leader_link_error")
        .contains("MAX_SIZE_EXCEEDED"));
    assert_eq!(leader.info_field("followers"), "1");
    assert_eq!(leader.client().call("PUT k v"), "OK");
    wait_synced(&leader, &[&f2]);
    assert_eq!(f3.client().call("GET k"), "NOT_FOUND");
}

// ---------------------------------------------------------------------------
// 6. A crash mid-snapshot

#[test]
fn a_follower_killed_mid_snapshot_keeps_its_old_log() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let mut f2 = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..200, "some value");
    wait_synced(&leader, &[&f2]);
    let (kept_digest, kept_seq) = (digest(&f2), seq(&f2));
    let kept_history = f2.info_field("history");
    let log_path = f2.log_path();
    f2.kill9();
    let kept_log = fs::read(&log_path).expect("read follower log");
    stop(&mut leader);
    let leader_log = fs::read(leader.data_dir.join("leader.log")).expect("read leader log");

    // A scripted leader on the same port starts a snapshot and stops
    // half-way.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the leader's port");
    listener.set_nonblocking(true).expect("nonblocking");
    f2.restart();
    let deadline = Instant::now() + WAIT;
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "the follower did not dial");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    let mut peer = Peer::new(stream);
    let hello = peer.line();
    let fnonce = hello
        .strip_prefix("HELLO FOLLOWER|2:")
        .unwrap_or_else(|| panic!("hello {hello:?}"))
        .to_string();
    let lnonce = nonce();
    let lproof = hmac_hex(
        SECRET.as_bytes(),
        &format!("keyval-leader|2|{fnonce}|{lnonce}"),
    );
    peer.send_line(&format!("CHALLENGE {lnonce} {lproof}"));
    let fproof = hmac_hex(
        SECRET.as_bytes(),
        &format!("keyval-follower|2|{fnonce}|{lnonce}"),
    );
    assert_eq!(peer.line(), format!("AUTH {fproof}"));
    peer.send_line("HELLO LEADER");
    peer.begin_session("keyval-leader", "keyval-follower", "2", &fnonce, &lnonce);
    let (kind, sync) = peer.frame();
    assert_eq!(kind, b'S');
    assert_eq!(
        sync.len(),
        21 + 32 + 2,
        "one history in the lineage, then the port"
    );
    assert_eq!(sync[16] & 2, 2, "the port flag");
    assert_eq!(
        hex::encode(&sync[21..37]),
        kept_history,
        "SYNC carries the lineage"
    );
    assert_eq!(
        u64::from_le_bytes(sync[..8].try_into().expect("8")),
        kept_seq
    );
    // PLAN: mode 2 (snapshot), the same history and epoch, the same seq,
    // related through that seq, no forks kept, acks awaited; the log's size
    // and 200 keys.
    let mut plan = vec![2u8];
    plan.extend_from_slice(&sync[21..37]);
    plan.extend_from_slice(&sync[8..16]);
    plan.extend_from_slice(&sync[..8]);
    plan.push(1);
    plan.extend_from_slice(&sync[..8]);
    plan.extend_from_slice(&0u32.to_le_bytes());
    plan.push(1);
    plan.extend_from_slice(&(leader_log.len() as u64).to_le_bytes());
    plan.extend_from_slice(&200u64.to_le_bytes());
    // The cluster's output rule: no follower awaited, 5000 ms.
    plan.extend_from_slice(&0u16.to_le_bytes());
    plan.extend_from_slice(&5000u64.to_le_bytes());
    peer.send_frame(b'P', &plan);
    let half = leader_log.len() / 2;
    peer.send_frame(b'F', &leader_log[..half]);

    f2.wait_log("leader accepted; receiving a snapshot");
    let dir = f2.dir.path().to_path_buf();
    wait_until("the snapshot temp file", || {
        temp_files(&dir).iter().any(|(_, len)| *len == half as u64)
    });
    // Mid-snapshot the follower still serves its old data.
    assert_eq!(f2.client().call("GET k150"), "150-some value");
    assert_eq!(seq(&f2), kept_seq);

    f2.kill9();
    drop(peer);
    drop(listener);
    assert_eq!(
        fs::read(&log_path).expect("read follower log"),
        kept_log,
        "the log changed"
    );
    f2.restart();
    assert_eq!(digest(&f2), kept_digest);
    assert_eq!(seq(&f2), kept_seq);
    assert_eq!(temp_files(&dir), vec![], "a temp file survived the restart");
    assert_eq!(fs::read(&log_path).expect("read follower log"), kept_log);
}

// ---------------------------------------------------------------------------
// 7. The output rule

#[test]
fn sync_followers_acknowledged_writes_survive_losing_the_leader() {
    let mut leader = Node::leader(&["--sync-followers", "1"]);
    let mut f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let acked = Arc::clone(&acked);
        let addr = leader.addr;
        thread::spawn(move || -> Result<(), String> {
            let mut c = Client::connect(addr);
            assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
            for i in 0..100_000 {
                match c.try_call(&format!("PUT k{i} v{i}")) {
                    Some(reply) if reply == "OK" => acked.lock().expect("lock").push(i),
                    Some(reply) => return Err(format!("PUT k{i}: {reply}")),
                    None => return Ok(()),
                }
            }
            Err("the writer was never cut off".into())
        })
    };
    wait_until("some acknowledged writes", || {
        acked.lock().expect("lock").len() >= 100
    });
    leader.kill9();
    writer.join().expect("writer").expect("writer");
    let acked = acked.lock().expect("lock").clone();

    let check = |f: &Node| {
        let mut c = f.client();
        for i in &acked {
            assert_eq!(c.call(&format!("GET k{i}")), format!("v{i}"), "k{i}");
        }
    };
    check(&f2);
    // Durably: the follower crashing too does not lose them.
    f2.kill9();
    f2.restart();
    check(&f2);
    assert!(seq(&f2) >= acked.len() as u64);
}

#[test]
fn with_sync_followers_one_a_single_follower_is_awaited_and_another_takes_its_place() {
    let leader = Node::leader(&["--sync-followers", "1"]);
    let port = leader.addr.port();
    let mut followers = vec![start_follower(port, 2, &[]), start_follower(port, 3, &[])];
    wait_followers(&leader, 2);
    put_many(&leader, "k", 0..50, "v");
    wait_synced(&leader, &[&followers[0], &followers[1]]);
    // One is told that writes wait for its acks (it fsyncs every batch);
    // the other defers its fsyncs, and its acks still come.
    let awaited: Vec<bool> = followers
        .iter()
        .map(|f| f.info_field("acks_awaited") == "yes")
        .collect();
    assert_eq!(awaited.iter().filter(|&&a| a).count(), 1, "{awaited:?}");
    let at = awaited.iter().position(|&a| a).expect("one is awaited");
    let mut gone = followers.remove(at);
    let stays = &followers[0];
    // The awaited one dies: the other takes its place, and writes are
    // acknowledged again.
    gone.kill9();
    wait_followers(&leader, 1);
    wait_until("the other follower to be awaited", || {
        stays.info_field("acks_awaited") == "yes"
    });
    stays.wait_log("writes now wait for this follower's acks: fsync every batch");
    put_many(&leader, "after", 0..50, "v");
    wait_synced(&leader, &[stays]);
}

#[test]
fn replication_timeout_without_followers_and_the_write_is_durable() {
    let mut leader = Node::leader(&["--sync-followers", "1", "--sync-timeout-ms", "200"]);
    let mut c = leader.client();
    let start = Instant::now();
    assert_eq!(c.call("PUT a 1"), "REPLICATION_TIMEOUT");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // A read does not show a write that did not pass the output rule.
    assert_eq!(c.call("GET a"), "REPLICATION_TIMEOUT");
    drop(c);

    // The write is durable: it survives a restart. Restarted, the leader
    // cannot tell which writes of its log its followers hold, so reads
    // wait for one to hold them all.
    stop(&mut leader);
    leader.restart();
    assert_eq!(leader.info_field("seq"), "1");
    assert_eq!(leader.client().call("GET a"), "REPLICATION_TIMEOUT");

    // It still reaches a follower that comes later, and with one the
    // writes are OK again.
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_synced(&leader, &[&f2]);
    assert_eq!(f2.client().call("GET a"), "1");
    wait_followers(&leader, 1);
    wait_until("the leader to read what its follower holds", || {
        leader.client().call("GET a") == "1"
    });
    // The 200 ms timeout is short for a loaded test machine, so a write may
    // still time out now and then; some write must come back OK.
    let mut c = leader.client();
    wait_until("a write acknowledged with one follower", || {
        let reply = c.call("PUT b 2");
        assert!(
            reply == "OK" || reply == "REPLICATION_TIMEOUT",
            "PUT b: {reply}"
        );
        reply == "OK"
    });
    assert_eq!(f2.client().call("GET b"), "2");
}

// ---------------------------------------------------------------------------
// 8. A follower that stops reading

#[test]
fn a_stalled_follower_is_cut_off_and_catches_up() {
    let leader = Node::leader(&[]);
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "small", 0..10, "v");
    wait_synced(&leader, &[&f2]);

    f2.signal("STOP");
    let big = "x".repeat(4000);
    put_many(&leader, "big", 0..2000, &big);
    wait_until("the leader to cut the follower off", || {
        leader.find_log("follower 2 stopped reading").is_some()
            || leader.find_log("follower 2 silent for").is_some()
    });
    wait_followers(&leader, 0);
    f2.signal("CONT");

    wait_synced(&leader, &[&f2]);
    wait_followers(&leader, 1);
    wait_until("a catch-up", || counter(&leader, "catchups_sent") >= 1);
    wait_counter(&leader, "snapshots_sent", 1);
    assert_eq!(f2.client().call("GET big1999"), format!("1999-{big}"));
}

#[test]
fn a_follower_that_acks_but_stops_reading_is_cut_off_and_resumes_from_its_seq() {
    let leader = Node::leader(&[]);
    put_many(&leader, "k", 0..5, "v");
    let history = hex::decode(leader.info_field("history")).expect("hex history");
    let epoch: u64 = leader.info_field("epoch").parse().expect("epoch");
    let sync = |seq: u64| sync_payload(&history, seq, epoch);

    let (mut peer, reply) = fake_follower(leader.addr, 2);
    assert_eq!(reply, "HELLO LEADER");
    peer.send_frame(b'S', &sync(5));
    let (kind, plan) = peer.frame();
    assert_eq!((kind, plan[0]), (b'P', 1), "a catch-up plan");
    // It keeps acking, so it is not silent, but it never reads again.
    let stop_acking = Arc::new(AtomicBool::new(false));
    let acker = {
        let mut stream = peer.stream.try_clone().expect("clone");
        let mut send = peer.send.take().expect("a session");
        let stop_acking = Arc::clone(&stop_acking);
        thread::spawn(move || {
            let mut ack = vec![b'A', 16, 0, 0, 0];
            ack.extend_from_slice(&ack_payload(5, epoch));
            while !stop_acking.load(Ordering::Relaxed) && stream.write_all(&send.seal(&ack)).is_ok()
            {
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    wait_followers(&leader, 1);
    let big = "y".repeat(4000);
    put_many(&leader, "big", 0..3000, &big);
    let cut = leader.wait_log("follower 2 stopped reading (");
    assert!(cut.contains("bytes waiting"), "{cut}");
    assert!(leader.find_log("follower 2 silent").is_none());
    wait_followers(&leader, 0);
    stop_acking.store(true, Ordering::Relaxed);
    acker.join().expect("acker");
    assert!(peer.is_closed());

    // Back again from seq 5: it gets the records from seq 6 on.
    let (mut peer, reply) = fake_follower(leader.addr, 2);
    assert_eq!(reply, "HELLO LEADER");
    peer.send_frame(b'S', &sync(5));
    let (kind, plan) = peer.frame();
    assert_eq!((kind, plan[0]), (b'P', 1), "a catch-up plan");
    assert_eq!(
        u64::from_le_bytes(plan[25..33].try_into().expect("8")),
        3005
    );
    assert_eq!(plan[33], 1, "related");
    assert_eq!(u64::from_le_bytes(plan[34..42].try_into().expect("8")), 5);
    let records = loop {
        let (kind, payload) = peer.frame();
        if kind == b'R' {
            break payload;
        }
        assert_eq!(kind, b'H', "only heartbeats before records");
    };
    let first_seq = u64::from_le_bytes(records[8..16].try_into().expect("8"));
    assert_eq!(first_seq, 6);
    // Both plans were catch-ups; the second's seqs are checked above.
    wait_counter(&leader, "catchups_sent", 2);
}

#[test]
fn a_silent_leader_is_dropped_and_found_again() {
    let leader = Node::leader(&[]);
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..5, "v");
    wait_synced(&leader, &[&f2]);

    leader.signal("STOP");
    f2.wait_log("leader silent for");
    wait_until("leader_link down", || {
        f2.info_field("leader_link") == "down"
    });
    assert_eq!(f2.client().call("GET k4"), "4-v", "reads go on");
    leader.signal("CONT");
    wait_until("leader_link up", || f2.info_field("leader_link") == "up");
    put_many(&leader, "after", 0..5, "w");
    wait_synced(&leader, &[&f2]);
}

#[test]
fn a_write_held_for_a_follower_is_released_when_one_acks_it() {
    let leader = Node::leader(&["--sync-followers", "1", "--sync-timeout-ms", "0"]);
    let mut c = leader.client();
    c.send("PUT a 1\nGET a\nPING");
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let early = c.stream.peek(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a reply before any follower: {early:?}"
    );
    c.stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    assert_eq!(c.line(), "OK");
    assert_eq!(c.line(), "1");
    assert_eq!(c.line(), "PONG");
    assert_eq!(f2.client().call("GET a"), "1");
}

#[test]
fn a_leader_that_lost_writes_and_moved_past_them_is_refused() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let mut f2 = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);
    put_many(&leader, "k", 0..10, "v");
    wait_synced(&leader, &[&f2]);
    stop(&mut leader);
    let log = leader.data_dir.join("leader.log");
    let backup = fs::read(&log).expect("read leader log");

    // Seq 11..15 reach the follower, then the leader loses them (restored
    // from a backup, or a power loss under --fsync everysec) and takes
    // other writes with seq 11..20 before the follower is back.
    leader.restart();
    put_many(&leader, "lost", 0..5, "v");
    wait_synced(&leader, &[&f2]);
    let (kept_digest, kept_seq) = (digest(&f2), seq(&f2));
    assert_eq!(kept_seq, 15);
    stop(&mut f2);
    stop(&mut leader);
    fs::write(&log, &backup).expect("restore leader log");
    leader.restart();
    put_many(&leader, "new", 0..10, "v");
    assert_eq!(seq(&leader), 20);
    f2.restart();

    wait_until("the follower to refuse or catch up", || {
        f2.info_field("leader_link") == "refused" || seq(&f2) == 20
    });
    let mut fc = f2.client();
    let (link, got_seq, got_digest) = (
        fc.info_field("leader_link"),
        fc.info_field("seq"),
        fc.call("DIGEST"),
    );
    let (new0, lost0) = (fc.call("GET new0"), fc.call("GET lost0"));
    assert!(
        link == "refused" && got_digest == kept_digest && got_seq == kept_seq.to_string(),
        "leader_link {link}, seq {got_seq}, DIGEST {} the leader's, GET new0 {new0:?}, \
         GET lost0 {lost0:?}",
        if got_digest == digest(&leader) {
            "equals"
        } else {
            "differs from"
        },
    );
}
