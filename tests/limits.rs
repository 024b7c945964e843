//! Slow and silent clients against the real binary (`docs/limits.md`): clients
//! that pipeline `KEYS` or large `GET`s and never read cost the node no
//! more than `--max-output-bytes` each and `--max-output-total-bytes` in
//! all (Redis clients as much as line-protocol ones), a fresh client is
//! still served meanwhile, and one connection's flood of `DIGEST`s does
//! not hold up another's.
//!
//! The limits are passed through their environment twins, so the same
//! test runs against a build without them (which ignores the variables).
//! Memory is the node's resident size from `/proc/<pid>/status`, polled
//! until it settles.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{keyval_bin, wait_until, Client, Node, WAIT};

const MIB: u64 = 1 << 20;

/// The tests measure memory and latency: they run one at a time, not
/// against each other's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A leader with `--fsync no` (the tests load a lot) and `env` set.
fn leader(dir: &Path, env: &[(&str, String)]) -> Node {
    let mut command = Command::new(keyval_bin());
    for (name, value) in env {
        command.env(name, value);
    }
    Node::spawn(dir, &["--role", "leader", "--fsync", "no"], command)
        .unwrap_or_else(|(status, log)| panic!("keyval exited with {status}; log:\n{log}"))
}

/// A leader held to `conn_max` unread output bytes per client and
/// `total_max` in all.
fn budgeted_leader(dir: &Path, conn_max: u64, total_max: u64) -> Node {
    leader(
        dir,
        &[
            ("KEYVAL_MAX_OUTPUT_BYTES", conn_max.to_string()),
            ("KEYVAL_MAX_OUTPUT_TOTAL_BYTES", total_max.to_string()),
        ],
    )
}

/// PUTs `key(i)` = `value` for every i in `0..n`, pipelined: a thread
/// writes while this one reads the `OK`s.
fn load(node: &Node, n: usize, key: impl Fn(usize) -> String, value: &str) {
    let mut c = node.client();
    let mut out = c.stream.try_clone().expect("clone");
    let lines: Vec<u8> = (0..n)
        .flat_map(|i| format!("PUT {} {value}\n", key(i)).into_bytes())
        .collect();
    let writer = thread::spawn(move || out.write_all(&lines).expect("send"));
    for i in 0..n {
        assert_eq!(c.line(), "OK", "PUT {i}");
    }
    writer.join().expect("writer");
}

/// Polls the node's RSS until `quiet` holds and the RSS has not moved by
/// more than 1 MiB for a second; returns the largest RSS seen, in bytes.
fn settled_peak(node: &Node, mut quiet: impl FnMut() -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut peak = 0;
    let mut steady_since = (Instant::now(), node.rss_kib());
    loop {
        let rss = node.rss_kib();
        peak = peak.max(rss);
        if rss.abs_diff(steady_since.1) > 1024 {
            steady_since = (Instant::now(), rss);
        } else if steady_since.0.elapsed() >= Duration::from_secs(1) && quiet() {
            return peak * 1024;
        }
        assert!(Instant::now() < deadline, "the node's memory never settled");
        thread::sleep(Duration::from_millis(50));
    }
}

/// An `INFO` field as a number.
fn info_num(node: &Node, field: &str) -> u64 {
    node.info_field(field).parse().expect("number")
}

/// 200-byte keys, in order of `i`.
fn long_key(i: usize) -> String {
    format!("{}{i:08}", "x".repeat(192))
}

#[test]
fn clients_pipelining_keys_without_reading_hold_only_their_limits() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn_max, total_max) = (16 * MIB, 32 * MIB);
    let node = budgeted_leader(dir.path(), conn_max, total_max);
    // A `KEYS` reply of about 10 MB.
    let keys = 50_000;
    load(&node, keys, long_key, "v");
    let before = settled_peak(&node, || true);
    let clients = 12;
    let mut silent: Vec<Client> = (0..clients).map(|_| node.client()).collect();
    for c in &mut silent {
        c.send_raw("KEYS\n".repeat(64).as_bytes());
    }
    let peak = settled_peak(&node, || info_num(&node, "queries") == 0);
    let grown = peak.saturating_sub(before);
    eprintln!(
        "RSS {} MiB before, {} MiB at peak with {clients} silent clients",
        before / MIB,
        peak / MIB
    );
    // Each query reserves its reply before it is queued, so a client that
    // does not read holds one reply, not four (or, past the budget, the
    // connections holding the most stop being served). Without the
    // reservations each client held up to four whole replies (~40 MB).
    let reply = (keys * (long_key(0).len() + 1)) as u64;
    assert!(
        grown < total_max + clients as u64 * reply + 48 * MIB,
        "RSS grew by {} MiB with {clients} clients not reading KEYS",
        grown / MIB
    );
    // A fresh client is served meanwhile, queries included.
    let mut fresh = node.client();
    assert_eq!(fresh.call("PING"), "PONG");
    assert_eq!(fresh.call(&format!("GET {}", long_key(7))), "v");
    assert_eq!(fresh.call("PUT fresh 1"), "OK");
    fresh.send("KEYS fresh");
    assert_eq!(fresh.list(), vec!["fresh".to_string()]);
    // The silent clients leave: their output is given back to the budget.
    drop(silent);
    wait_until("the silent clients' output to be let go", || {
        info_num(&node, "output_bytes") == 0
    });
}

#[test]
fn a_flood_of_digests_on_some_connections_does_not_hold_up_another() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = leader(dir.path(), &[]);
    load(&node, 50_000, |i| format!("k{i:06}"), "some-value");
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..8)
        .map(|f| {
            let mut c = node.client();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                // Each DIGEST follows a write, so no two share a job; four
                // at a time keeps the connection's query queue full.
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut batch = String::new();
                    for _ in 0..4 {
                        batch.push_str(&format!("PUT flood{f} {i}\nDIGEST\n"));
                        i += 1;
                    }
                    if c.stream.write_all(batch.as_bytes()).is_err() {
                        return;
                    }
                    for _ in 0..8 {
                        if c.try_line().is_none() {
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_until("the flood to queue query jobs", || {
        info_num(&node, "queries") >= 8
    });
    // Each probe is a connection of its own asking once, as a client
    // checking the data would: it waits for the running job, not for the
    // dozens the flood queued before it.
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        let mut probe = node.client();
        let asked = Instant::now();
        let digest = probe.call("DIGEST");
        worst = worst.max(asked.elapsed());
        assert_eq!(digest.len(), 64, "{digest}");
    }
    eprintln!("the probe's slowest DIGEST under the flood took {worst:?}");
    stop.store(true, Ordering::SeqCst);
    drop(node);
    for f in flooders {
        f.join().expect("flooder");
    }
    assert!(
        worst < Duration::from_secs(2),
        "a DIGEST waited {worst:?} behind other connections' flood"
    );
}

#[test]
fn many_clients_not_reading_large_gets_stay_within_the_global_budget() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn_max, total_max) = (4 * MIB, 8 * MIB);
    let node = budgeted_leader(dir.path(), conn_max, total_max);
    let value = "v".repeat(1_000_000);
    load(&node, 8, |i| format!("big{i}"), &value);
    let before = settled_peak(&node, || true);
    let clients = 40;
    let mut silent: Vec<Client> = (0..clients).map(|_| node.client()).collect();
    for (n, c) in silent.iter_mut().enumerate() {
        let gets: String = (0..64)
            .map(|i| format!("GET big{}\n", (n + i) % 8))
            .collect();
        c.send_raw(gets.as_bytes());
    }
    let peak = settled_peak(&node, || true);
    let grown = peak.saturating_sub(before);
    let booked = info_num(&node, "output_bytes");
    eprintln!(
        "RSS {} MiB before, {} MiB at peak; {} MiB of unread output booked, {} connections paused",
        before / MIB,
        peak / MIB,
        booked / MIB,
        info_num(&node, "output_paused")
    );
    // Past the budget only connections below their share take requests:
    // each holds at most about one reply more.
    let reply = value.len() as u64 + 1;
    assert!(
        booked <= total_max + clients as u64 * reply,
        "{booked} bytes of unread output"
    );
    assert!(
        grown < total_max + clients as u64 * reply + 32 * MIB,
        "RSS grew by {} MiB with {clients} clients not reading",
        grown / MIB
    );
    // A fresh client is served: a large value too.
    let mut fresh = node.client();
    assert_eq!(fresh.call("PING"), "PONG");
    assert_eq!(fresh.call("GET big3").len(), value.len());
    assert_eq!(fresh.call("PUT k 1"), "OK");
    drop(silent);
    wait_until("the budget to drain", || {
        info_num(&node, "output_bytes") == 0
    });
}

#[test]
fn redis_clients_not_reading_large_gets_stay_within_the_budget_too() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let (conn_max, total_max) = (4 * MIB, 8 * MIB);
    let node = budgeted_leader(dir.path(), conn_max, total_max);
    let value = "v".repeat(1_000_000);
    load(&node, 8, |i| format!("big{i}"), &value);
    let clients = 20;
    let mut silent: Vec<std::net::TcpStream> = (0..clients)
        .map(|_| std::net::TcpStream::connect(node.addr).expect("connect"))
        .collect();
    for (n, c) in silent.iter_mut().enumerate() {
        let gets: Vec<u8> = (0..64)
            .flat_map(|i| {
                let key = format!("big{}", (n + i) % 8);
                format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
            })
            .collect();
        c.write_all(&gets).expect("send");
    }
    settled_peak(&node, || true);
    let booked = info_num(&node, "output_bytes");
    eprintln!(
        "{} MiB of unread output booked for Redis clients",
        booked / MIB
    );
    // A RESP reply of the value is its bulk header, the value and CRLF.
    let reply = value.len() as u64 + 16;
    assert!(
        booked <= total_max + clients as u64 * reply,
        "{booked} bytes of unread output booked for Redis clients"
    );
    // They hold more than the budget's worth, so they are counted in it
    // (and paused by it), not only by their own backlog.
    assert!(
        booked >= total_max,
        "only {booked} bytes booked: Redis clients are not counted"
    );
    let mut fresh = node.client();
    assert_eq!(fresh.call("PING"), "PONG");
    drop(silent);
    wait_until("the budget to drain", || {
        info_num(&node, "output_bytes") == 0
    });
}
