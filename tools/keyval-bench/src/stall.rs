//! `keyval-bench stall`: how long one heavy read (`DIGEST`, `KEYS`) holds up
//! the other clients of a server.
//!
//! One connection sends a `PING` every `--ping-every-ms` (one at a time:
//! the next waits for the reply), and records each round trip. Paced, it
//! is an ordinary other client rather than a second load on the CPU. Meanwhile a second connection sends the heavy request a
//! number of times, one at a time, and records how long each reply takes.
//! If the server computes the reply on its event loop, the pinger's worst
//! round trip is about as long as the heavy request; if it computes it off
//! the loop, the pinger keeps getting answers within a fraction of a
//! millisecond.
//!
//! Blocking sockets with timeouts, so no call can hang.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::LineClient;

use crate::histogram::{self, Histogram};
use crate::load::fmt_latency;

/// How long any one reply may take before the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What to measure.
pub struct StallConfig {
    pub addr: SocketAddr,
    /// The heavy request line, e.g. `DIGEST` or `KEYS user:`.
    pub request: String,
    /// How many times to send it, one after the other.
    pub times: usize,
    /// Time from one PING to the next (unless the reply takes longer).
    pub ping_every: Duration,
}

/// What was measured.
pub struct StallReport {
    /// Round trip of each heavy request.
    pub requests: Vec<Duration>,
    /// Reply size of the last heavy request, in bytes.
    pub reply_bytes: usize,
    /// Round trips of the pings sent while the heavy requests ran.
    pub pings: Histogram,
}

impl std::fmt::Display for StallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.requests.iter().map(|d| fmt_latency(*d)).collect();
        write!(
            f,
            "request {} ({} reply bytes); meanwhile {} PINGs, p50 {}, p99 {}, max {}",
            list.join(" / "),
            self.reply_bytes,
            self.pings.len(),
            fmt_latency(histogram::quantile_duration(&self.pings, 0.5)),
            fmt_latency(histogram::quantile_duration(&self.pings, 0.99)),
            fmt_latency(Duration::from_nanos(self.pings.max())),
        )
    }
}

/// Reads the reply to `request`: a counted list for `KEYS`, else one
/// line. Returns its size in bytes.
fn read_reply(client: &mut LineClient, request: &str) -> io::Result<usize> {
    let first = client.line_bytes()?;
    let mut bytes = first.len() + 1;
    let is_keys = request
        .split_whitespace()
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("KEYS"));
    if is_keys {
        let count: usize = std::str::from_utf8(&first)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                invalid(format!(
                    "bad KEYS count line {:?}",
                    String::from_utf8_lossy(&first)
                ))
            })?;
        for _ in 0..count {
            bytes += client.line_bytes()?.len() + 1;
        }
    }
    Ok(bytes)
}

/// Runs the measurement.
///
/// # Errors
/// Connection failures, timeouts and malformed replies.
pub fn run(cfg: &StallConfig) -> io::Result<StallReport> {
    let mut heavy = LineClient::connect_client(cfg.addr, REPLY_TIMEOUT)?;
    let mut pinger = LineClient::connect_client(cfg.addr, REPLY_TIMEOUT)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_pings = Arc::clone(&stop);
    let every = cfg.ping_every;
    let pings = thread::spawn(move || -> io::Result<Histogram> {
        let mut hist = histogram::new();
        while !stop_pings.load(Ordering::Relaxed) {
            let start = Instant::now();
            pinger.send("PING")?;
            let reply = pinger.line_bytes()?;
            if reply != b"PONG" {
                return Err(invalid(format!(
                    "expected PONG, got {:?}",
                    String::from_utf8_lossy(&reply)
                )));
            }
            let took = start.elapsed();
            histogram::record_duration(&mut hist, took);
            if let Some(rest) = every.checked_sub(took) {
                thread::sleep(rest);
            }
        }
        Ok(hist)
    });
    let mut requests = Vec::with_capacity(cfg.times);
    let mut reply_bytes = 0;
    let result = (|| -> io::Result<()> {
        for _ in 0..cfg.times {
            let start = Instant::now();
            heavy.send(&cfg.request)?;
            reply_bytes = read_reply(&mut heavy, &cfg.request)?;
            requests.push(start.elapsed());
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let pings = pings
        .join()
        .map_err(|_| io::Error::other("the pinger thread panicked"))??;
    result?;
    Ok(StallReport {
        requests,
        reply_bytes,
        pings,
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
