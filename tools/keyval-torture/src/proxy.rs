//! A small TCP proxy on loopback that sits between one follower and the
//! leader, so the nemesis can damage that link without touching either
//! process.
//!
//! The follower dials the proxy's fixed port; the proxy dials the leader's
//! current address (which changes when the leader restarts) and copies
//! bytes both ways, two threads per connection. The link has one
//! [`LinkMode`] at a time:
//!
//! - `Pass`: bytes flow.
//! - `Cut`: every open connection is closed and new ones are closed at once.
//! - `Freeze`: connections stay open but no byte moves (TCP backpressure
//!   builds up on both sides), like a stalled route.
//! - `Slow(d)`: every chunk read waits `d` before it is forwarded.
//! - `Tamper`: what a relay without the secret could do, once a connection
//!   is past its handshake lines. Toward the leader, every `ACK` the
//!   follower sends has its epoch raised by one, its tag left as it was
//!   ([`AckForger`]): frames carry no checksum and the epoch is within the
//!   bound on claims, so only the session MAC stands between that forgery
//!   and a leader that fences itself. Toward the follower, one bit of
//!   every chunk is flipped. The nodes must drop every such connection
//!   ([`Proxy::tampered_open`] counts the ones still open), and the checker
//!   must find every value as it was written.
//!
//! Blocking sockets with short timeouts keep it simple: every thread wakes
//! at least every [`TICK`] to look at the mode and the stop flag.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often a blocked proxy thread looks at the mode and the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long dialling the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes copied per read.
const CHUNK: usize = 16 * 1024;
/// Bytes a direction passes untouched in `Tamper` mode: more than the
/// handshake's lines, whose command words are case-insensitive (a flipped
/// case bit there would be accepted, rightly).
const HANDSHAKE_BYTES: u64 = 512;

/// What the link currently does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    Cut,
    Freeze,
    Slow(Duration),
    Tamper,
}

/// State shared by the accept thread and the copy threads.
struct Shared {
    upstream: Mutex<SocketAddr>,
    mode: Mutex<LinkMode>,
    /// Bumped by every cut; a connection dies once it differs from the
    /// value it was opened under.
    cuts: AtomicU64,
    stop: AtomicBool,
    /// Chunks changed in `Tamper` mode (a bit flipped or an `ACK`
    /// forged), over the proxy's life.
    flips: AtomicU64,
    /// Connections that carried a flipped bit and are still open.
    tampered_open: AtomicU64,
}

/// Follows the follower's side of a replication stream well enough to
/// find its `ACK`s: two handshake lines (`HELLO FOLLOWER`, `AUTH`), then
/// session records `[len u32 LE][payload][16-byte tag]`, whose payloads in
/// this direction start with a frame (a flush seals the few frames it has
/// as one record).
#[derive(Debug)]
struct AckForger {
    /// Handshake lines still to pass.
    lines_left: u8,
    /// A record header split between chunks.
    head: Vec<u8>,
    /// Bytes of the current record still to pass.
    skip: usize,
}

impl AckForger {
    fn new() -> AckForger {
        AckForger {
            lines_left: 2,
            head: Vec::new(),
            skip: 0,
        }
    }

    /// Reads `chunk` through; with `forge`, raises the epoch of every
    /// `ACK` that opens a record lying wholly in the chunk. Returns how
    /// many it forged.
    fn scan(&mut self, chunk: &mut [u8], forge: bool) -> usize {
        let mut at = 0;
        let mut forged = 0;
        while at < chunk.len() {
            if self.lines_left > 0 {
                match chunk[at..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        at += p + 1;
                        self.lines_left -= 1;
                    }
                    None => at = chunk.len(),
                }
                continue;
            }
            if self.skip > 0 {
                let k = self.skip.min(chunk.len() - at);
                at += k;
                self.skip -= k;
                continue;
            }
            let start = at;
            while self.head.len() < 4 && at < chunk.len() {
                self.head.push(chunk[at]);
                at += 1;
            }
            if self.head.len() < 4 {
                break;
            }
            let len = u32::from_le_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
            let whole_here = self.head.len() == at - start;
            self.head.clear();
            self.skip = len as usize + 16;
            let payload = at..at + len as usize;
            // An ACK: kind 'A', length 16, then seq and epoch.
            if forge && whole_here && chunk.len() >= payload.end + 16 && len >= 21 {
                let p = &mut chunk[payload.start..payload.end];
                if p[0] == b'A' && p[1..5] == 16u32.to_le_bytes() {
                    let mut epoch = [0u8; 8];
                    epoch.copy_from_slice(&p[13..21]);
                    let raised = u64::from_le_bytes(epoch).wrapping_add(1);
                    p[13..21].copy_from_slice(&raised.to_le_bytes());
                    forged += 1;
                }
            }
        }
        forged
    }
}

/// One proxied connection, as its two pumps see it.
#[derive(Default)]
struct Link {
    /// A bit was flipped on it.
    tampered: AtomicBool,
    /// One of its pumps ended (and so both do).
    closed: AtomicBool,
}

impl Shared {
    fn mode(&self) -> LinkMode {
        self.mode.lock().map(|m| *m).unwrap_or(LinkMode::Cut)
    }

    fn alive(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::SeqCst) && self.cuts.load(Ordering::SeqCst) == generation
    }
}

/// One proxied link. Dropping it closes the listener and every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            mode: Mutex::new(LinkMode::Pass),
            cuts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            flips: AtomicU64::new(0),
            tampered_open: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &accept_shared))?;
        Ok(Proxy { addr, shared })
    }

    /// Chunks changed in `Tamper` mode so far.
    pub fn flips(&self) -> u64 {
        self.shared.flips.load(Ordering::SeqCst)
    }

    /// Connections that carried a flipped bit and are still open: once a
    /// tampered link has had time to be read, any left is a node that
    /// accepted tampered bytes.
    pub fn tampered_open(&self) -> u64 {
        self.shared.tampered_open.load(Ordering::SeqCst)
    }

    /// Where followers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points new connections at the leader's new address.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            *u = upstream;
        }
    }

    /// Changes what the link does; `Cut` also closes every open connection.
    pub fn set_mode(&self, mode: LinkMode) {
        if let Ok(mut m) = self.shared.mode.lock() {
            *m = mode;
        }
        if mode == LinkMode::Cut {
            self.shared.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let inbound = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(TICK / 5);
                continue;
            }
            Err(e) => {
                log::warn!("proxy accept failed: {e}");
                thread::sleep(TICK);
                continue;
            }
        };
        if shared.mode() == LinkMode::Cut {
            continue; // dropped: the follower sees the link fail at once
        }
        let generation = shared.cuts.load(Ordering::SeqCst);
        let upstream = match shared.upstream.lock() {
            Ok(u) => *u,
            Err(_) => return,
        };
        let outbound = match TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(_) => continue, // the leader is down; the follower retries
        };
        if let Err(e) = start_pumps(inbound, outbound, generation, shared) {
            log::warn!("proxy cannot start a connection: {e}");
        }
    }
}

fn start_pumps(
    inbound: TcpStream,
    outbound: TcpStream,
    generation: u64,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    for s in [&inbound, &outbound] {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(TICK))?;
        s.set_write_timeout(Some(TICK))?;
    }
    let pairs = [
        (inbound.try_clone()?, outbound.try_clone()?),
        (outbound, inbound),
    ];
    let link = Arc::new(Link::default());
    for (i, (src, dst)) in pairs.into_iter().enumerate() {
        let shared = Arc::clone(shared);
        let link = Arc::clone(&link);
        // The follower dials the proxy: the first pair carries what it
        // sends to the leader.
        let mut forger = (i == 0).then(AckForger::new);
        thread::Builder::new()
            .name("proxy-pump".into())
            .spawn(move || {
                pump(&src, &dst, generation, &shared, &link, forger.as_mut());
                let _ = src.shutdown(Shutdown::Both);
                let _ = dst.shutdown(Shutdown::Both);
                if !link.closed.swap(true, Ordering::SeqCst) && link.tampered.load(Ordering::SeqCst)
                {
                    shared.tampered_open.fetch_sub(1, Ordering::SeqCst);
                }
            })?;
    }
    Ok(())
}

/// Copies `src` to `dst` until either side closes, the link is cut, or the
/// proxy stops.
fn pump(
    mut src: &TcpStream,
    mut dst: &TcpStream,
    generation: u64,
    shared: &Shared,
    link: &Link,
    mut forger: Option<&mut AckForger>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut passed = 0u64;
    while shared.alive(generation) {
        if shared.mode() == LinkMode::Freeze {
            thread::sleep(TICK);
            continue;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return,
        };
        // Looked at after the read, which may have waited through a change.
        let mode = shared.mode();
        let changed = match (mode, forger.as_deref_mut()) {
            (LinkMode::Slow(d), _) => {
                thread::sleep(d);
                false
            }
            (_, Some(forger)) => forger.scan(&mut buf[..n], mode == LinkMode::Tamper) > 0,
            (LinkMode::Tamper, None) if passed >= HANDSHAKE_BYTES => {
                let flips = shared.flips.load(Ordering::SeqCst);
                // A spread of positions and bits, no randomness needed.
                let at = (flips.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7) as usize % n;
                buf[at] ^= 1 << (flips % 8);
                true
            }
            _ => false,
        };
        if changed {
            shared.flips.fetch_add(1, Ordering::SeqCst);
            if !link.tampered.swap(true, Ordering::SeqCst) && !link.closed.load(Ordering::SeqCst) {
                shared.tampered_open.fetch_add(1, Ordering::SeqCst);
            }
        }
        passed += n as u64;
        let mut sent = 0;
        while sent < n {
            if !shared.alive(generation) {
                return;
            }
            if shared.mode() == LinkMode::Freeze {
                thread::sleep(TICK);
                continue;
            }
            match dst.write(&buf[sent..n]) {
                Ok(0) => return,
                Ok(k) => sent += k,
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::time::Instant;

    /// An upstream that echoes every line back.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut w = stream.try_clone().expect("clone");
                    for line in io::BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        if writeln!(w, "{line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn dial(proxy: &Proxy) -> (TcpStream, io::BufReader<TcpStream>) {
        let s = TcpStream::connect(proxy.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let r = io::BufReader::new(s.try_clone().expect("clone"));
        (s, r)
    }

    fn echo(s: &mut TcpStream, r: &mut io::BufReader<TcpStream>, text: &str) -> Option<String> {
        writeln!(s, "{text}").ok()?;
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_string()),
            _ => None,
        }
    }

    #[test]
    fn passes_freezes_slows_and_cuts() {
        let proxy = Proxy::start(echo_server()).expect("proxy");
        let (mut s, mut r) = dial(&proxy);
        assert_eq!(echo(&mut s, &mut r, "a").as_deref(), Some("a"));

        proxy.set_mode(LinkMode::Freeze);
        assert_eq!(echo(&mut s, &mut r, "b"), None, "frozen link delivered");
        proxy.set_mode(LinkMode::Pass);
        let mut line = String::new();
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        r.read_line(&mut line).expect("b after thaw");
        assert_eq!(line.trim_end(), "b");

        proxy.set_mode(LinkMode::Slow(Duration::from_millis(150)));
        let t0 = Instant::now();
        assert_eq!(echo(&mut s, &mut r, "c").as_deref(), Some("c"));
        assert!(t0.elapsed() >= Duration::from_millis(300));

        proxy.set_mode(LinkMode::Cut);
        assert_eq!(echo(&mut s, &mut r, "d"), None, "cut link delivered");
        proxy.set_mode(LinkMode::Pass);
        let (mut s, mut r) = dial(&proxy);
        assert_eq!(echo(&mut s, &mut r, "e").as_deref(), Some("e"));
    }

    #[test]
    fn tamper_changes_what_passes_after_the_handshake_bytes() {
        let proxy = Proxy::start(echo_server()).expect("proxy");
        let (mut s, mut r) = dial(&proxy);
        proxy.set_mode(LinkMode::Tamper);
        // With its newline, exactly the bytes that pass untouched (the
        // echo may come back as two writes, the line and its newline).
        let handshake = "h".repeat(HANDSHAKE_BYTES as usize - 1);
        assert_eq!(
            echo(&mut s, &mut r, &handshake).as_deref(),
            Some(&handshake[..])
        );
        assert_eq!(proxy.tampered_open(), 0);
        let text = "abcdefghijklmnopqrstuvwxyz";
        let back = echo(&mut s, &mut r, text);
        assert_ne!(
            back.as_deref(),
            Some(text),
            "a tampered link delivered intact"
        );
        assert!(proxy.flips() >= 1);
        assert_eq!(proxy.tampered_open(), 1, "the echo server accepts anything");
        drop((s, r));
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.tampered_open() > 0 {
            assert!(
                Instant::now() < deadline,
                "the closed link is still counted"
            );
            thread::sleep(TICK);
        }
    }

    /// A session record around `payload`, with a made-up tag.
    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(payload);
        out.extend_from_slice(&[0xee; 16]);
        out
    }

    fn ack(seq: u64, epoch: u64) -> Vec<u8> {
        let mut out = vec![b'A', 16, 0, 0, 0];
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
        out
    }

    #[test]
    fn the_forger_raises_ack_epochs_past_the_handshake_only() {
        let mut stream = b"HELLO FOLLOWER|2:00ff\nAUTH 1234\n".to_vec();
        let sync = record(&[b'S'; 60]);
        stream.extend_from_slice(&sync);
        stream.extend(record(&ack(7, 3)));
        stream.extend(record(&ack(8, 3)));
        // Whole, in one chunk.
        let mut chunk = stream.clone();
        assert_eq!(AckForger::new().scan(&mut chunk, true), 2);
        let acks_at = stream.len() - 2 * 41;
        assert_eq!(chunk[..acks_at], stream[..acks_at], "only the acks change");
        assert_eq!(&chunk[acks_at + 4..acks_at + 25], &ack(7, 4)[..]);
        assert_eq!(&chunk[acks_at + 45..acks_at + 66], &ack(8, 4)[..]);
        // Cut anywhere, the parse stays in step (a record split between
        // chunks passes untouched).
        for cut in 1..stream.len() {
            let mut forger = AckForger::new();
            let (mut a, mut b) = (stream[..cut].to_vec(), stream[cut..].to_vec());
            let n = forger.scan(&mut a, true) + forger.scan(&mut b, true);
            assert!(n >= 1, "cut at {cut}");
            let mut more = record(&ack(9, 3));
            assert_eq!(
                forger.scan(&mut more, true),
                1,
                "in step after a cut at {cut}"
            );
        }
        // Not in tamper mode: nothing changes.
        let mut chunk = stream.clone();
        assert_eq!(AckForger::new().scan(&mut chunk, false), 0);
        assert_eq!(chunk, stream);
    }

    #[test]
    fn follows_a_new_upstream() {
        let proxy = Proxy::start("127.0.0.1:1".parse().expect("addr")).expect("proxy");
        proxy.set_upstream(echo_server());
        let (mut s, mut r) = dial(&proxy);
        assert_eq!(echo(&mut s, &mut r, "x").as_deref(), Some("x"));
    }
}
