//! The load driver: one thread, one `mio::Poll`, many non-blocking
//! connections, each keeping up to `pipeline` requests in flight.
//!
//! Every connection keeps a FIFO of (send time, op) for its outstanding
//! requests; replies arrive in order, so each parsed reply pops the front
//! and its latency is the time of the read that completed it minus the send
//! time. [`Driver`] owns the connections so that a preload phase and the
//! measured phase (or several phases, as the suite needs) reuse them.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::histogram::{self, Histogram};
use crate::wire::{self, Op, Outcome, Protocol};

/// How long connecting plus the keyval handshake may take per connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the issuing window closes, how long to wait for outstanding replies
/// before counting them as errors.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A phase fails if no reply at all arrives for this long while requests are
/// outstanding.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one `poll` call, so deadlines and stop flags are noticed.
const POLL_SLICE: Duration = Duration::from_millis(20);
/// Initial receive buffer per connection (grows if a reply is larger).
const READ_BUF: usize = 64 * 1024;

/// What mix of requests to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Only PUTs of random keys.
    Put,
    /// Only GETs of random keys.
    Get,
    /// 50 % GET, 50 % PUT, random keys.
    Mixed,
    /// 90 % GET, 10 % PUT, random keys: a read-mostly load.
    ReadMostly,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::ReadMostly => "read-mostly",
        })
    }
}

/// When the measured phase stops issuing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Issue requests for this long, then wait for the outstanding replies.
    Duration(Duration),
    /// Issue exactly this many requests in total, then wait for all replies.
    Requests(u64),
}

/// Everything one `run` needs.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Protocol to speak.
    pub protocol: Protocol,
    /// Number of TCP connections.
    pub connections: usize,
    /// Requests kept in flight per connection.
    pub pipeline: usize,
    /// Request mix.
    pub workload: Workload,
    /// Size of the key space (`key:000000000` .. `key:<keys-1>`).
    pub keys: u64,
    /// Length of every value written, in bytes.
    pub value_size: usize,
    /// When to stop the measured phase.
    pub limit: Limit,
    /// PUT every key once (unmeasured) before the measured phase.
    pub preload: bool,
}

/// Result of one measured phase.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests answered successfully (stored, found or not found).
    pub ok: u64,
    /// GETs answered with "not found" (included in `ok`).
    pub not_found: u64,
    /// Error replies plus requests left unanswered at the end.
    pub errors: u64,
    /// Requests still unanswered when the drain timeout expired (included
    /// in `errors`).
    pub unanswered: u64,
    /// From the start of the phase to the last reply.
    pub elapsed: Duration,
    /// Latency of every answered request, in nanoseconds.
    pub latency: Histogram,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency quantile `q` (0..=1).
    pub fn latency_at(&self, q: f64) -> Duration {
        histogram::quantile_duration(&self.latency, q)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.0} ops/s, p50 {}, p99 {}, p999 {}, errors {} ({} ok in {:.2} s, {} not found, \
             mean {}",
            self.ops_per_sec(),
            fmt_latency(self.latency_at(0.5)),
            fmt_latency(self.latency_at(0.99)),
            fmt_latency(self.latency_at(0.999)),
            self.errors,
            self.ok,
            self.elapsed.as_secs_f64(),
            self.not_found,
            fmt_latency(Duration::from_nanos(self.latency.mean() as u64)),
        )?;
        if self.unanswered > 0 {
            write!(f, ", {} unanswered", self.unanswered)?;
        }
        f.write_str(")")
    }
}

/// Formats a latency as microseconds below 10 ms and as milliseconds above.
pub fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10_000.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// Connects, optionally preloads, runs the measured phase and returns its
/// report.
pub fn run(cfg: &LoadConfig) -> io::Result<LoadReport> {
    run_until(cfg, &AtomicBool::new(false))
}

/// Like [`run`], but the measured phase also ends as soon as `stop` becomes
/// true (used by the suite to end a load when an event is observed).
pub fn run_until(cfg: &LoadConfig, stop: &AtomicBool) -> io::Result<LoadReport> {
    validate(cfg)?;
    let mut driver = Driver::connect(cfg.addr, cfg.protocol, cfg.connections)?;
    let value = random_value(&mut fastrand::Rng::new(), cfg.value_size);
    if cfg.preload {
        log::info!("preloading {} keys", cfg.keys);
        let report = driver.preload(cfg.keys, &value, cfg.pipeline.max(16))?;
        log::info!("preload: {report}");
    }
    driver.measure(
        cfg.workload,
        cfg.keys,
        &value,
        cfg.pipeline,
        cfg.limit,
        stop,
    )
}

/// `len` random ASCII letters and digits: a value (or a secret) safe
/// inside a keyval line.
pub fn random_value(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    std::iter::repeat_with(|| rng.alphanumeric() as u8)
        .take(len)
        .collect()
}

/// Rejects configurations that cannot produce a meaningful run.
fn validate(cfg: &LoadConfig) -> io::Result<()> {
    let bad = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
    if cfg.connections == 0 {
        return bad("--connections must be at least 1");
    }
    if cfg.pipeline == 0 {
        return bad("--pipeline must be at least 1");
    }
    if cfg.keys == 0 {
        return bad("--keys must be at least 1");
    }
    if cfg.value_size == 0 {
        return bad("--value-size must be at least 1");
    }
    Ok(())
}

/// Where the next request comes from.
struct Source {
    kind: SourceKind,
    /// Requests still allowed (`None` = unlimited).
    budget: Option<u64>,
}

enum SourceKind {
    /// Random keys with the workload's op mix.
    Random {
        workload: Workload,
        keys: u64,
        rng: fastrand::Rng,
    },
    /// PUT of every key in `next..end`, in order.
    Sequential { next: u64, end: u64 },
}

impl Source {
    fn random(workload: Workload, keys: u64) -> Self {
        Source {
            kind: SourceKind::Random {
                workload,
                keys,
                rng: fastrand::Rng::new(),
            },
            budget: None,
        }
    }

    fn sequential(start: u64, end: u64) -> Self {
        Source {
            kind: SourceKind::Sequential { next: start, end },
            budget: None,
        }
    }

    /// The next request, or `None` when the source is exhausted.
    fn next(&mut self) -> Option<(Op, u64)> {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return None;
            }
            *b -= 1;
        }
        match &mut self.kind {
            SourceKind::Random {
                workload,
                keys,
                rng,
            } => {
                let key = rng.u64(..*keys);
                let op = match workload {
                    Workload::Put => Op::Put,
                    Workload::Get => Op::Get,
                    Workload::Mixed => {
                        if rng.bool() {
                            Op::Get
                        } else {
                            Op::Put
                        }
                    }
                    Workload::ReadMostly => {
                        if rng.u8(..10) == 0 {
                            Op::Put
                        } else {
                            Op::Get
                        }
                    }
                };
                Some((op, key))
            }
            SourceKind::Sequential { next, end } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                Some((Op::Put, *next - 1))
            }
        }
    }
}

/// One connection's state.
struct Conn {
    stream: TcpStream,
    /// Encoded requests not yet written; `out[out_pos..]` is pending.
    out: Vec<u8>,
    out_pos: usize,
    /// Received bytes; `inbuf[in_start..in_end]` is unparsed.
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Outstanding requests, oldest first.
    inflight: VecDeque<(Instant, Op)>,
}

/// Tallies for one phase.
struct Tally {
    ok: u64,
    not_found: u64,
    errors: u64,
    latency: Histogram,
    last_reply: Instant,
}

/// Owns the poll and the connections of one load run.
pub struct Driver {
    poll: Poll,
    conns: Vec<Conn>,
    protocol: Protocol,
    key_buf: Vec<u8>,
}

impl Driver {
    /// Opens `connections` connections to `addr` (each with the keyval
    /// handshake when speaking keyval) and registers them with a new poll.
    pub fn connect(addr: SocketAddr, protocol: Protocol, connections: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(connections);
        for i in 0..connections {
            let (std_stream, leftover) = connect_one(addr, protocol)?;
            std_stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let mut inbuf = vec![0u8; READ_BUF.max(leftover.len() * 2)];
            inbuf[..leftover.len()].copy_from_slice(&leftover);
            conns.push(Conn {
                stream,
                out: Vec::with_capacity(4096),
                out_pos: 0,
                inbuf,
                in_start: 0,
                in_end: leftover.len(),
                inflight: VecDeque::new(),
            });
        }
        Ok(Driver {
            poll,
            conns,
            protocol,
            key_buf: Vec::with_capacity(32),
        })
    }

    /// PUTs every key in `0..keys` once with `value` (unmeasured warm-up;
    /// the report is returned for logging).
    pub fn preload(&mut self, keys: u64, value: &[u8], pipeline: usize) -> io::Result<LoadReport> {
        self.preload_range(0, keys, value, pipeline)
    }

    /// PUTs every key in `start..end` once with `value`.
    pub fn preload_range(
        &mut self,
        start: u64,
        end: u64,
        value: &[u8],
        pipeline: usize,
    ) -> io::Result<LoadReport> {
        let mut source = Source::sequential(start, end);
        let report = self.phase(
            &mut source,
            value,
            pipeline.max(1),
            None,
            &AtomicBool::new(false),
        )?;
        if report.errors > 0 {
            log::warn!("preload saw {} errors", report.errors);
        }
        Ok(report)
    }

    /// Runs a measured phase of random-key `workload` requests over
    /// `0..keys` until `limit` is reached or `stop` becomes true.
    pub fn measure(
        &mut self,
        workload: Workload,
        keys: u64,
        value: &[u8],
        pipeline: usize,
        limit: Limit,
        stop: &AtomicBool,
    ) -> io::Result<LoadReport> {
        let mut source = Source::random(workload, keys.max(1));
        let deadline = match limit {
            Limit::Duration(d) => Some(Instant::now() + d),
            Limit::Requests(n) => {
                source.budget = Some(n);
                None
            }
        };
        self.phase(&mut source, value, pipeline.max(1), deadline, stop)
    }

    /// Runs one phase: keeps every connection topped up to `pipeline`
    /// outstanding requests from `source` until it is exhausted, `deadline`
    /// passes or `stop` is set, then waits (bounded) for outstanding replies.
    fn phase(
        &mut self,
        source: &mut Source,
        value: &[u8],
        pipeline: usize,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> io::Result<LoadReport> {
        let start = Instant::now();
        let mut tally = Tally {
            ok: 0,
            not_found: 0,
            errors: 0,
            latency: histogram::new(),
            last_reply: start,
        };
        let mut issuing = true;
        // When issuing stopped (deadline, stop flag or exhausted source).
        let mut issuing_ended: Option<Instant> = None;
        let mut last_progress = start;
        let mut events = Events::with_capacity(1024);

        for i in 0..self.conns.len() {
            issuing &= self.top_up(i, source, value, pipeline)?;
            self.flush(i)?;
        }

        loop {
            let now = Instant::now();
            if issuing && (deadline.is_some_and(|d| now >= d) || stop.load(Ordering::Relaxed)) {
                issuing = false;
            }
            if !issuing && issuing_ended.is_none() {
                issuing_ended = Some(now);
            }
            let outstanding: usize = self.conns.iter().map(|c| c.inflight.len()).sum();
            if !issuing && outstanding == 0 {
                break;
            }
            if issuing_ended.is_some_and(|t| now >= t + DRAIN_TIMEOUT) {
                log::warn!("{outstanding} requests unanswered after the drain timeout");
                tally.errors += outstanding as u64;
                for c in &mut self.conns {
                    c.inflight.clear();
                }
                let elapsed = phase_elapsed(start, &tally, issuing_ended);
                return Ok(finish(tally, elapsed, outstanding as u64));
            }
            if now.duration_since(last_progress) > STALL_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no reply for {} s with {outstanding} requests outstanding",
                        STALL_TIMEOUT.as_secs()
                    ),
                ));
            }

            let mut timeout = POLL_SLICE;
            if let (true, Some(d)) = (issuing, deadline) {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let got = self.read_replies(i, &mut tally)?;
                    if got > 0 {
                        last_progress = tally.last_reply;
                    }
                }
                if issuing {
                    issuing &= self.top_up(i, source, value, pipeline)?;
                }
                self.flush(i)?;
            }
        }
        let elapsed = phase_elapsed(start, &tally, issuing_ended);
        Ok(finish(tally, elapsed, 0))
    }

    /// Encodes requests from `source` until connection `i` has `pipeline`
    /// outstanding. Returns false once the source is exhausted.
    fn top_up(
        &mut self,
        i: usize,
        source: &mut Source,
        value: &[u8],
        pipeline: usize,
    ) -> io::Result<bool> {
        let conn = &mut self.conns[i];
        if conn.inflight.len() >= pipeline {
            return Ok(true);
        }
        let now = Instant::now();
        while conn.inflight.len() < pipeline {
            let Some((op, key)) = source.next() else {
                return Ok(false);
            };
            wire::format_key(key, &mut self.key_buf);
            wire::encode_request(self.protocol, op, &self.key_buf, value, &mut conn.out);
            conn.inflight.push_back((now, op));
        }
        Ok(true)
    }

    /// Writes as much pending output of connection `i` as the socket takes.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        let conn = &mut self.conns[i];
        while conn.out_pos < conn.out.len() {
            match conn.stream.write(&conn.out[conn.out_pos..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "server stopped accepting data",
                    ))
                }
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
        Ok(())
    }

    /// Reads everything available on connection `i` and accounts for every
    /// complete reply. Returns how many replies were parsed.
    fn read_replies(&mut self, i: usize, tally: &mut Tally) -> io::Result<usize> {
        let protocol = self.protocol;
        let conn = &mut self.conns[i];
        let mut parsed = 0;
        loop {
            if conn.in_end == conn.inbuf.len() {
                // Make room: move unparsed bytes to the front, grow if full.
                conn.inbuf.copy_within(conn.in_start..conn.in_end, 0);
                conn.in_end -= conn.in_start;
                conn.in_start = 0;
                if conn.in_end == conn.inbuf.len() {
                    if conn.inbuf.len() > wire::MAX_REPLY_BYTES + 64 {
                        return Err(wire::WireError("reply too large".into()).into());
                    }
                    let new_len = conn.inbuf.len() * 2;
                    conn.inbuf.resize(new_len, 0);
                }
            }
            match conn.stream.read(&mut conn.inbuf[conn.in_end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "server closed a connection with {} requests outstanding",
                            conn.inflight.len()
                        ),
                    ))
                }
                Ok(n) => conn.in_end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Parse eagerly so the buffer rarely needs to grow.
            parsed += parse_available(protocol, conn, tally)?;
        }
        parsed += parse_available(protocol, conn, tally)?;
        Ok(parsed)
    }
}

/// Consumes every complete reply in `conn`'s buffer.
fn parse_available(protocol: Protocol, conn: &mut Conn, tally: &mut Tally) -> io::Result<usize> {
    let now = Instant::now();
    let mut parsed = 0;
    while conn.in_start < conn.in_end {
        let Some((reply, used)) =
            wire::parse_reply(protocol, &conn.inbuf[conn.in_start..conn.in_end])?
        else {
            break;
        };
        let Some((sent, op)) = conn.inflight.pop_front() else {
            return Err(
                wire::WireError("reply received with no request outstanding".into()).into(),
            );
        };
        match wire::classify(op, &reply) {
            Outcome::Stored | Outcome::Found(_) => tally.ok += 1,
            Outcome::NotFound => {
                tally.ok += 1;
                tally.not_found += 1;
            }
            Outcome::Error => {
                tally.errors += 1;
                if tally.errors <= 3 {
                    log::warn!("error reply: {reply:?}");
                }
            }
        }
        histogram::record_duration(&mut tally.latency, now.duration_since(sent));
        conn.in_start += used;
        parsed += 1;
    }
    if conn.in_start == conn.in_end {
        conn.in_start = 0;
        conn.in_end = 0;
    }
    if parsed > 0 {
        tally.last_reply = now;
    }
    Ok(parsed)
}

/// Length of a phase: until the last reply, but at least until issuing
/// stopped (so a stalled server does not shrink the window).
fn phase_elapsed(start: Instant, tally: &Tally, issuing_ended: Option<Instant>) -> Duration {
    let end = issuing_ended.map_or(tally.last_reply, |t| t.max(tally.last_reply));
    end.duration_since(start)
}

/// Turns a phase tally into a report.
fn finish(tally: Tally, elapsed: Duration, unanswered: u64) -> LoadReport {
    LoadReport {
        ok: tally.ok,
        not_found: tally.not_found,
        errors: tally.errors,
        unanswered,
        elapsed,
        latency: tally.latency,
    }
}

/// Opens one blocking connection with TCP_NODELAY and, for keyval, performs
/// the `HELLO` handshake. Returns the stream and any bytes read past the
/// greeting (normally none).
fn connect_one(addr: SocketAddr, protocol: Protocol) -> io::Result<(std::net::TcpStream, Vec<u8>)> {
    let stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    if protocol == Protocol::Resp {
        return Ok((stream, Vec::new()));
    }
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let mut s = &stream;
    s.write_all(wire::KEYVAL_HELLO)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some((wire::RawReply::Line(line), used)) = wire::parse_reply(Protocol::Keyval, &buf)?
        {
            if line != wire::KEYVAL_HELLO_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "expected HELLO SERVER, got {:?}",
                        String::from_utf8_lossy(line)
                    ),
                ));
            }
            let leftover = buf[used..].to_vec();
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            return Ok((stream, leftover));
        }
        if Instant::now() >= deadline || buf.len() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HELLO SERVER greeting",
            ));
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection during HELLO",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::thread;

    /// A minimal in-process keyval server that answers every request, in
    /// order, in 7-byte write chunks so replies straddle reads. Closes a
    /// connection after `close_after` requests if given.
    fn fake_keyval(connections: usize, close_after: Option<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
        thread::spawn(move || {
            for _ in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let store = store.clone();
                thread::spawn(move || serve(stream, &store, close_after));
            }
        });
        addr
    }

    fn serve(
        stream: std::net::TcpStream,
        store: &Mutex<HashMap<Vec<u8>, Vec<u8>>>,
        close_after: Option<usize>,
    ) {
        stream.set_nodelay(true).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut out = Vec::new();
        let mut served = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let mut parts = text.splitn(3, |&b| b == b' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(b"HELLO"), Some(b"CLIENT"), None) => out.extend_from_slice(b"HELLO SERVER\n"),
                (Some(b"PUT"), Some(k), Some(v)) => {
                    store.lock().unwrap().insert(k.to_vec(), v.to_vec());
                    out.extend_from_slice(b"OK\n");
                    served += 1;
                }
                (Some(b"GET"), Some(k), None) => {
                    match store.lock().unwrap().get(k) {
                        Some(v) => out.extend_from_slice(v),
                        None => out.extend_from_slice(b"NOT_FOUND"),
                    }
                    out.push(b'\n');
                    served += 1;
                }
                _ => out.extend_from_slice(b"ERROR\n"),
            }
            if close_after.is_some_and(|n| served >= n) {
                return;
            }
            if reader.buffer().is_empty() {
                for chunk in out.chunks(7) {
                    if writer.write_all(chunk).is_err() {
                        return;
                    }
                }
                out.clear();
            }
        }
    }

    fn config(addr: SocketAddr, workload: Workload, limit: Limit, preload: bool) -> LoadConfig {
        LoadConfig {
            addr,
            protocol: Protocol::Keyval,
            connections: 4,
            pipeline: 8,
            workload,
            keys: 500,
            value_size: 20,
            limit,
            preload,
        }
    }

    #[test]
    fn counts_every_request_of_a_fixed_budget() {
        let addr = fake_keyval(4, None);
        let cfg = config(addr, Workload::Mixed, Limit::Requests(5000), true);
        let report = run(&cfg).unwrap();
        assert_eq!(report.ok, 5000);
        assert_eq!(report.errors, 0);
        assert_eq!(report.not_found, 0, "preload must make every GET hit");
        assert_eq!(report.latency.len(), 5000);
        assert!(report.ops_per_sec() > 0.0);
    }

    #[test]
    fn gets_without_preload_miss() {
        let addr = fake_keyval(4, None);
        let cfg = config(addr, Workload::Get, Limit::Requests(1000), false);
        let report = run(&cfg).unwrap();
        assert_eq!(report.ok, 1000);
        assert_eq!(report.not_found, 1000);
    }

    #[test]
    fn duration_limit_stops_issuing() {
        let addr = fake_keyval(4, None);
        let limit = Limit::Duration(Duration::from_millis(300));
        let report = run(&config(addr, Workload::Put, limit, false)).unwrap();
        assert!(report.ok > 0);
        assert_eq!(report.errors, 0);
        assert!(report.elapsed >= Duration::from_millis(300));
        assert!(report.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn server_closing_mid_run_is_an_error() {
        let addr = fake_keyval(4, Some(10));
        let cfg = config(addr, Workload::Put, Limit::Requests(10_000), false);
        let err = run(&cfg).unwrap_err();
        // EOF, or a reset if the close raced with requests still unread.
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_zero_connections() {
        let mut cfg = config(
            "127.0.0.1:1".parse().unwrap(),
            Workload::Put,
            Limit::Requests(1),
            false,
        );
        cfg.connections = 0;
        assert_eq!(run(&cfg).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
