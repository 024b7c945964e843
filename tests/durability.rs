//! Durability of the real binary (`docs/durability.md`): what a
//! client was told `OK` survives `kill -9`; a torn or garbage tail of
//! `leader.log` is cut back with a warning, `INFO torn_tails_cut` counts
//! it, and the log keeps working;
//! damage before the tail stops the node with an error naming the file and
//! offset; compaction under concurrent writes loses nothing; `everysec` and
//! `no` still persist; and a real disk error (`EFBIG` from `ulimit -f`)
//! turns the node fail-stop without losing or inventing data. A log of
//! format version 1 is upgraded in place; an unknown version is refused.
//!
//! The on-disk layout these tests poke at is in `src/wal/record.rs`: a
//! 48-byte header, then records of 19 + key + value bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{keyval_bin, wait_until, Client, Node};
use keyval::record::{Header, Op, Record};

/// Size of the log file header.
const HEADER_LEN: u64 = 48;

/// A fork record: a leader begins a new history each time it starts.
const FORK_LEN: u64 = 8 + 11 + 16 + 8;

/// Bytes a record of this key and value takes in the log.
fn record_len(key: &str, value: &str) -> u64 {
    19 + key.len() as u64 + value.len() as u64
}

fn log_path(node: &Node) -> PathBuf {
    node.data_dir.join("leader.log")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat log").len()
}

fn info_u64(node: &Node, field: &str) -> u64 {
    let value = node.info_field(field);
    value
        .parse()
        .unwrap_or_else(|_| panic!("INFO {field} is not a number: {value:?}"))
}

/// The first log line of the node's current process containing every
/// needle.
fn find_line(node: &Node, needles: &[&str]) -> Option<String> {
    node.log_text()
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
}

/// Whether `text` says `offset <n>` with nothing more to the number.
fn names_offset(text: &str, n: u64) -> bool {
    let needle = format!("offset {n}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// SHA-256 over `<key>\n<value>\n` in key order, as `DIGEST` answers.
fn model_digest(data: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (k, v) in data {
        hash.update(k.as_bytes());
        hash.update(b"\n");
        hash.update(v.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// A small deterministic generator for garbage bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The ten records every tail test starts from: `k00`..`k09`.
fn base_pairs() -> Vec<(String, String)> {
    (0..10)
        .map(|i| (format!("k{i:02}"), format!("value {i:02} with spaces")))
        .collect()
}

fn put_all(c: &mut Client, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        assert_eq!(c.call(&format!("PUT {k} {v}")), "OK", "PUT {k}");
    }
}

fn assert_all_present(node: &Node, pairs: &[(String, String)]) {
    let mut c = node.client();
    for (k, v) in pairs {
        assert_eq!(c.call(&format!("GET {k}")), *v, "GET {k}");
    }
}

// ---------------------------------------------------------------------------
// kill -9 after acknowledged writes
// ---------------------------------------------------------------------------

/// What one writer thread was told, and the write it had in flight when
/// the server died.
struct Writer {
    /// Last acknowledged state of every key it wrote (`None`: deleted).
    acked: BTreeMap<String, Option<String>>,
    /// Acknowledged writes that logged a record.
    records: usize,
    /// Key and new state of the request without a reply, if any.
    in_flight: Option<(String, Option<String>)>,
}

/// Writes new keys, overwrites and deletes on its own key space until the
/// connection dies (or `cap` requests), recording every `OK`.
fn write_until_killed(
    addr: std::net::SocketAddr,
    t: usize,
    cap: usize,
    acked: &[AtomicUsize],
) -> Writer {
    let mut c = Client::connect(addr);
    assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
    let mut w = Writer {
        acked: BTreeMap::new(),
        records: 0,
        in_flight: None,
    };
    for i in 0..cap {
        let present = w
            .acked
            .iter()
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone());
        let (request, key, state) = match (i % 5, present) {
            (4, Some(key)) => (format!("DELETE {key}"), key, None),
            (1 | 3, _) => {
                let key = format!("t{t}:{}", i / 3);
                let value = format!("over {t} {i}");
                (format!("PUT {key} {value}"), key, Some(value))
            }
            _ => {
                let key = format!("t{t}:{i}");
                let value = format!("v{t}.{i} {}", "x".repeat(i % 50));
                (format!("PUT {key} {value}"), key, Some(value))
            }
        };
        match c.try_call(&request) {
            Some(reply) => {
                assert_eq!(reply, "OK", "reply to {request:?}");
                w.acked.insert(key, state);
                w.records += 1;
                acked[t].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                w.in_flight = Some((key, state));
                return w;
            }
        }
    }
    w
}

#[test]
fn acknowledged_writes_from_several_clients_survive_kill9() {
    const THREADS: usize = 4;
    const KILL_AFTER: usize = 600;
    let mut node = Node::leader(&[]);
    let addr = node.addr;
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..THREADS).map(|_| AtomicUsize::new(0)).collect());
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let acked = Arc::clone(&acked);
            thread::spawn(move || write_until_killed(addr, t, 20_000, &acked))
        })
        .collect();
    // Kill while every writer is still going: each has a write in flight.
    wait_until("acknowledged writes from every client", || {
        let counts: Vec<usize> = acked.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        counts.iter().all(|&n| n >= KILL_AFTER / THREADS / 2)
            && counts.iter().sum::<usize>() >= KILL_AFTER
    });
    node.kill9();
    let writers: Vec<Writer> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();
    assert!(
        writers.iter().all(|w| w.in_flight.is_some()),
        "every writer should have been cut off mid-stream"
    );

    node.restart();
    let mut c = node.client();
    let mut may_exist = BTreeSet::new();
    for w in &writers {
        let (flight_key, flight_state) = w.in_flight.clone().expect("in flight");
        for (key, state) in &w.acked {
            let got = c.call(&format!("GET {key}"));
            let expect = state.clone().unwrap_or_else(|| "NOT_FOUND".into());
            if *key == flight_key {
                let alt = flight_state.clone().unwrap_or_else(|| "NOT_FOUND".into());
                assert!(
                    got == expect || got == alt,
                    "{key}: {got:?} is neither the acknowledged {expect:?} nor the in-flight {alt:?}"
                );
            } else {
                assert_eq!(got, expect, "{key} lost its acknowledged state");
            }
            if state.is_some() {
                may_exist.insert(key.clone());
            }
        }
        may_exist.insert(flight_key);
    }
    c.send("KEYS");
    for key in c.list() {
        assert!(may_exist.contains(&key), "{key} was never written");
    }
    // Every acknowledged write is one record; at most the in-flight ones
    // may have made it too.
    let records: usize = writers.iter().map(|w| w.records).sum();
    let seq: usize = c.info_field("seq").parse().expect("seq");
    assert!(
        (records..=records + THREADS).contains(&seq),
        "seq {seq} after {records} acknowledged writes"
    );
}

// ---------------------------------------------------------------------------
// Damaged tails
// ---------------------------------------------------------------------------

const LAST_KEY: &str = "last";
const LAST_VALUE: &str = "the record at the tail";

/// Starts a leader, writes the base records and the `last` one, kills it.
/// Returns the node (stopped) and the log length.
fn stopped_node_with_tail() -> (Node, u64) {
    let mut node = Node::leader(&[]);
    let mut c = node.client();
    put_all(&mut c, &base_pairs());
    assert_eq!(c.call(&format!("PUT {LAST_KEY} {LAST_VALUE}")), "OK");
    drop(c);
    node.kill9();
    let len = file_len(&log_path(&node));
    let expected = HEADER_LEN
        + base_pairs()
            .iter()
            .map(|(k, v)| record_len(k, v))
            .sum::<u64>()
        + record_len(LAST_KEY, LAST_VALUE);
    assert_eq!(len, expected, "log size after 11 writes");
    (node, len)
}

/// After a restart that had to cut the tail: INFO counts the cut, a
/// warning names the file and the offset cut at, the log is `keep_len`
/// long plus the fork record of the restart, new writes work and survive
/// another restart without any further cut.
fn assert_cut_and_log_keeps_working(node: &mut Node, keep_len: u64, seq: u64, what: &str) {
    assert_eq!(
        info_u64(node, "torn_tails_cut"),
        1,
        "{what}: torn_tails_cut"
    );
    let line = find_line(node, &["leader.log", "cut"])
        .unwrap_or_else(|| panic!("{what}: no log line about the cut:\n{}", node.log_text()));
    assert!(
        line.contains("WARN") && names_offset(&line, keep_len),
        "{what}: the cut is not a warning naming offset {keep_len}: {line}"
    );
    let after_start = keep_len + FORK_LEN;
    assert_eq!(
        file_len(&log_path(node)),
        after_start,
        "{what}: file length"
    );
    assert_eq!(
        info_u64(node, "log_bytes"),
        after_start,
        "{what}: log_bytes"
    );
    assert_eq!(info_u64(node, "seq"), seq, "{what}: seq");
    assert_eq!(node.info_field("writes"), "ok", "{what}");

    let mut c = node.client();
    assert_eq!(c.call("PUT after the cut"), "OK", "{what}");
    drop(c);
    node.kill9();
    node.restart();
    assert_eq!(
        info_u64(node, "torn_tails_cut"),
        0,
        "{what}: a clean log was cut again:\n{}",
        node.log_text()
    );
    assert_eq!(
        info_u64(node, "seq"),
        seq + 1,
        "{what}: seq after the new write"
    );
    assert_all_present(node, &base_pairs());
    assert_eq!(node.client().call("GET after"), "the cut", "{what}");
}

#[test]
fn torn_tail_is_cut_back_and_the_log_keeps_working() {
    let last_len = record_len(LAST_KEY, LAST_VALUE);
    // Inside the length, the checksum, the seq, the op, the key and the value.
    for cut in [1, 2, 4, 8, 11, 18, 19, 20, last_len - 1] {
        let what = format!("cut {cut} bytes");
        let (mut node, full) = stopped_node_with_tail();
        let path = log_path(&node);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(full - cut))
            .expect("truncate log");

        node.restart();
        assert_all_present(&node, &base_pairs());
        assert_eq!(
            node.client().call(&format!("GET {LAST_KEY}")),
            "NOT_FOUND",
            "{what}: the torn record came back"
        );
        assert_cut_and_log_keeps_working(&mut node, full - last_len, 10, &what);
    }
}

#[test]
fn garbage_after_the_last_record_is_cut_back() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let random: Vec<u8> = (0..1000).map(|_| rng.next() as u8).collect();
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", random),
        ("zeros", vec![0; 4096]),
        // A length field promising far more than the file holds.
        (
            "a huge length",
            [&[0xf0, 0xff, 0xff, 0x0f][..], &[7; 40]].concat(),
        ),
        // A prefix that could be a record, and a checksum that is wrong.
        (
            "a bad record",
            [&[30, 0, 0, 0, 1, 2, 3, 4][..], &[b'z'; 30]].concat(),
        ),
    ];
    for (what, garbage) in cases {
        let (mut node, full) = stopped_node_with_tail();
        let path = log_path(&node);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&garbage).expect("append garbage");
        drop(f);

        node.restart();
        assert_all_present(&node, &base_pairs());
        assert_eq!(
            node.client().call(&format!("GET {LAST_KEY}")),
            LAST_VALUE,
            "{what}: a whole record before the garbage was lost"
        );
        assert_cut_and_log_keeps_working(&mut node, full, 11, what);
    }
}

#[test]
fn a_damaged_last_record_is_a_torn_tail() {
    let last_len = record_len(LAST_KEY, LAST_VALUE);
    for at in [0, 5, 9, last_len - 1] {
        let what = format!("byte {at} of the last record flipped");
        let (mut node, full) = stopped_node_with_tail();
        let path = log_path(&node);
        let mut bytes = fs::read(&path).expect("read log");
        bytes[(full - last_len + at) as usize] ^= 0x40;
        fs::write(&path, &bytes).expect("write log");

        node.restart();
        assert_all_present(&node, &base_pairs());
        assert_eq!(
            node.client().call(&format!("GET {LAST_KEY}")),
            "NOT_FOUND",
            "{what}"
        );
        assert_cut_and_log_keeps_working(&mut node, full - last_len, 10, &what);
    }
}

#[test]
fn info_counts_a_torn_tail_cut_at_start_and_none_on_a_clean_start() {
    let (mut node, full) = stopped_node_with_tail();
    node.restart();
    assert_eq!(info_u64(&node, "torn_tails_cut"), 0, "a clean start");
    assert_eq!(info_u64(&node, "fsync_failures"), 0, "a clean start");

    node.kill9();
    // Tear the last write (dropping the fork record the start appended).
    let path = log_path(&node);
    let torn = full - 5;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(torn))
        .expect("truncate log");
    node.restart();
    assert_eq!(
        info_u64(&node, "torn_tails_cut"),
        1,
        "a start over a torn tail"
    );
    assert_eq!(
        info_u64(&node, "torn_tails_suspect"),
        0,
        "records past the base seq survived the cut"
    );
    assert_eq!(
        node.client().call(&format!("GET {LAST_KEY}")),
        "NOT_FOUND",
        "the torn record came back"
    );

    node.kill9();
    node.restart();
    assert_eq!(
        info_u64(&node, "torn_tails_cut"),
        0,
        "the next, clean start"
    );
}

// ---------------------------------------------------------------------------
// Damage before the tail
// ---------------------------------------------------------------------------

#[test]
fn damage_before_the_tail_stops_the_node_naming_file_and_offset() {
    let (node, full) = stopped_node_with_tail();
    let path = log_path(&node);
    let dir = node.data_dir.clone();
    let original = fs::read(&path).expect("read log");
    let pairs = base_pairs();
    // The second record: after the header and the first one.
    let second = HEADER_LEN + record_len(&pairs[0].0, &pairs[0].1);
    let second_len = record_len(&pairs[1].0, &pairs[1].1);
    let cases = [
        ("length", second, 0x40),
        ("length, low bit", second, 0x01),
        ("checksum", second + 5, 0x10),
        ("seq", second + 8, 0x02),
        ("op", second + 16, 0x04),
        ("key", second + 19, 0x20),
        ("value", second + second_len - 1, 0x01),
        ("header", 20, 0x01),
    ];
    for (what, at, mask) in cases {
        let mut bytes = original.clone();
        bytes[at as usize] ^= mask;
        fs::write(&path, &bytes).expect("write damaged log");

        let (status, log) = match Node::try_start_in(&dir, &["--role", "leader"]) {
            Ok(node) => panic!(
                "{what}: started on a damaged log; log:\n{}",
                node.log_text()
            ),
            Err(failure) => failure,
        };
        assert_eq!(status.code(), Some(1), "{what}: exit status {status}");
        let offset = if what == "header" { 0 } else { second };
        assert!(
            log.lines()
                .any(|l| l.contains("leader.log") && names_offset(l, offset)),
            "{what}: no error line naming leader.log and offset {offset}:\n{log}"
        );
        assert_eq!(
            fs::read(&path).expect("read log"),
            bytes,
            "{what}: the refused log was modified"
        );
    }
    // The undamaged file still opens, with everything in it.
    fs::write(&path, &original).expect("restore log");
    let node = Node::start_in(&dir, &["--role", "leader"]);
    assert_all_present(&node, &pairs);
    assert_eq!(info_u64(&node, "log_bytes"), full + FORK_LEN);
    assert_eq!(info_u64(&node, "seq"), 11);
}

/// A bit flip in an early record's length field that makes the length run
/// past the end of the file looks, to a reader that only looks forward,
/// like a record torn by a crash. It is not: hundreds of acknowledged
/// records follow it. The node must refuse to start, name the file and the
/// offset, and leave the file as it was.
#[test]
fn a_length_flipped_past_the_end_is_refused_not_cut() {
    const WRITES: usize = 600;
    let mut node = Node::leader(&[]);
    let pairs = pipelined_puts(&node, "p", WRITES);
    assert_eq!(info_u64(&node, "seq"), WRITES as u64);
    node.signal("TERM");
    let status = node.wait_exit();
    assert!(status.success(), "SIGTERM exit {status}");
    let path = log_path(&node);
    let dir = node.data_dir.clone();
    let original = fs::read(&path).expect("read log");
    let full = original.len() as u64;

    // The third record: after the header and the first two.
    let third = HEADER_LEN
        + pairs[..2]
            .iter()
            .map(|(k, v)| record_len(k, v))
            .sum::<u64>();
    let third_len = record_len(&pairs[2].0, &pairs[2].1);
    // Bit 6 of the length's third byte adds 4 MiB: past the end of the
    // file, but under the largest length a record may have.
    let mut bytes = original.clone();
    let at = third as usize + 2;
    bytes[at] ^= 0x40;
    let mut length = [0u8; 4];
    length.copy_from_slice(&bytes[third as usize..third as usize + 4]);
    let length = u64::from(u32::from_le_bytes(length));
    assert_eq!(length, third_len - 8 + (4 << 20), "the flipped length");
    assert!(
        third + 8 + length > full,
        "the length must run past the end"
    );
    fs::write(&path, &bytes).expect("write damaged log");

    let (status, log) = match Node::try_start_in(&dir, &["--role", "leader"]) {
        Ok(node) => panic!("started on a damaged log; log:\n{}", node.log_text()),
        Err(failure) => failure,
    };
    assert_eq!(status.code(), Some(1), "exit status {status}; log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("leader.log") && names_offset(l, third)),
        "no error line naming leader.log and offset {third}:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("WARN") && l.contains("cut")),
        "the damage was taken for a torn tail:\n{log}"
    );
    assert_eq!(
        fs::read(&path).expect("read log"),
        bytes,
        "the refused log was modified"
    );

    // With the bit restored, every write is there, and nothing was cut.
    fs::write(&path, &original).expect("restore log");
    let node = Node::start_in(&dir, &["--role", "leader"]);
    assert_eq!(info_u64(&node, "seq"), WRITES as u64);
    assert_eq!(info_u64(&node, "torn_tails_cut"), 0);
    assert_all_present(&node, &pairs);
}

// ---------------------------------------------------------------------------
// Compaction under load
// ---------------------------------------------------------------------------

/// What a compaction-test writer was last told per key (`None`: deleted),
/// and the records and log bytes its acknowledged writes added.
struct Overwriter {
    last: BTreeMap<String, Option<String>>,
    bytes: u64,
    records: u64,
}

/// Puts and deletes five keys for good, then overwrites (and now and then
/// deletes) ten keys of its own until `stop`.
fn overwrite_until(
    addr: std::net::SocketAddr,
    t: usize,
    stop: &AtomicBool,
    acked: &AtomicUsize,
) -> Overwriter {
    const CAP: usize = 50_000;
    let mut c = Client::connect(addr);
    assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
    let mut w = Overwriter {
        last: BTreeMap::new(),
        bytes: 0,
        records: 0,
    };
    for n in 0..CAP {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (key, value) = match n {
            0..5 => (format!("d{t}:{n}"), Some("doomed".to_string())),
            5..10 => (format!("d{t}:{}", n - 5), None),
            _ if n % 7 == 0 => (format!("c{t}:{}", n % 10), None),
            _ => (
                format!("c{t}:{}", n % 10),
                Some(format!("{t}-{n}-{}", "p".repeat(80 + n % 40))),
            ),
        };
        let present = w.last.get(&key).is_some_and(Option::is_some);
        match &value {
            Some(v) => assert_eq!(c.call(&format!("PUT {key} {v}")), "OK", "PUT {key}"),
            None => {
                let want = if present { "OK" } else { "NOT_FOUND" };
                assert_eq!(c.call(&format!("DELETE {key}")), want, "DELETE {key}");
            }
        }
        if value.is_some() || present {
            w.bytes += record_len(&key, value.as_deref().unwrap_or(""));
            w.records += 1;
        }
        w.last.insert(key, value);
        acked.fetch_add(1, Ordering::Relaxed);
    }
    w
}

#[test]
fn compaction_under_concurrent_writes_keeps_every_last_value_across_kill9() {
    const THREADS: usize = 4;
    let mut node = Node::leader(&["--compact-min-bytes", "16384", "--compact-ratio", "2"]);
    let addr = node.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            thread::spawn(move || overwrite_until(addr, t, &stop, &acked))
        })
        .collect();

    wait_until("a first compaction while clients write", || {
        info_u64(&node, "compactions") >= 1
    });
    let at_first = acked.load(Ordering::Relaxed);
    wait_until("more compactions and writes after the first", || {
        acked.load(Ordering::Relaxed) >= at_first + 400 && info_u64(&node, "compactions") >= 3
    });
    stop.store(true, Ordering::Relaxed);
    let writers: Vec<Overwriter> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();
    let mut states = BTreeMap::new();
    let mut written = HEADER_LEN;
    let mut writes = 0;
    for w in &writers {
        states.extend(w.last.clone());
        written += w.bytes;
        writes += w.records;
    }
    let last: BTreeMap<String, String> = states
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    assert!(
        find_line(&node, &["leader.log", "compacted"]).is_some(),
        "no compaction logged:\n{}",
        node.log_text()
    );
    let mut c = node.client();
    let digest = c.call("DIGEST");
    assert_eq!(digest, model_digest(&last), "DIGEST before the kill");
    assert_eq!(c.info_field("seq"), writes.to_string());
    drop(c);

    node.kill9();
    node.restart();
    let mut c = node.client();
    for (k, v) in &states {
        let want = v.as_deref().unwrap_or("NOT_FOUND");
        assert_eq!(c.call(&format!("GET {k}")), want, "{k} after restart");
    }
    assert_eq!(c.call("DIGEST"), digest, "DIGEST after restart");
    assert_eq!(c.info_field("keys"), last.len().to_string());
    assert_eq!(
        c.info_field("seq"),
        writes.to_string(),
        "seq numbering survives compaction"
    );
    // The kill may have hit a compaction, and the log may have been just
    // past the threshold: once it settles it is below it, far smaller than
    // everything written.
    let mut log_bytes = 0;
    wait_until("the log to settle below --compact-min-bytes", || {
        let info = c.info();
        let field = |name: &str| info.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        log_bytes = field("log_bytes")
            .and_then(|v| v.parse().ok())
            .expect("log_bytes");
        field("compacting").as_deref() == Some("0") && log_bytes < 16384
    });
    assert_eq!(log_bytes, file_len(&log_path(&node)));
    assert!(
        log_bytes < written / 2,
        "log is {log_bytes} bytes after {written} bytes of writes: not compacted"
    );
    assert_eq!(c.call("DIGEST"), digest, "DIGEST after settling");
}

// ---------------------------------------------------------------------------
// --fsync everysec and no
// ---------------------------------------------------------------------------

/// Sends `PUT <prefix><i> ...` for `0..n` as one pipelined batch and checks
/// every reply.
fn pipelined_puts(node: &Node, prefix: &str, n: usize) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{prefix}{i}"), format!("value {i} of {prefix}")))
        .collect();
    let mut batch = String::new();
    for (k, v) in &pairs {
        batch.push_str(&format!("PUT {k} {v}\n"));
    }
    let mut c = node.client();
    c.send_raw(batch.as_bytes());
    for (k, _) in &pairs {
        assert_eq!(c.line(), "OK", "PUT {k}");
    }
    pairs
}

#[test]
fn everysec_and_no_serve_and_persist_across_restarts() {
    for mode in ["everysec", "no"] {
        let mut node = Node::leader(&["--fsync", mode]);
        let first = pipelined_puts(&node, "a", 300);
        assert_eq!(info_u64(&node, "seq"), 300, "{mode}");
        if mode == "everysec" {
            // The timer makes it durable without further traffic.
            let started = Instant::now();
            wait_until("everysec to fsync", || {
                info_u64(&node, "durable_seq") == 300
            });
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "everysec took {:?} to fsync",
                started.elapsed()
            );
        }
        node.signal("TERM");
        let status = node.wait_exit();
        assert!(status.success(), "{mode}: SIGTERM exit {status}");
        node.restart();
        assert_all_present(&node, &first);
        assert_eq!(info_u64(&node, "seq"), 300, "{mode}");
        assert_eq!(info_u64(&node, "durable_seq"), 300, "{mode}");

        // An answered write is at least in the OS: a process crash keeps it.
        let second = pipelined_puts(&node, "b", 200);
        node.kill9();
        node.restart();
        assert_all_present(&node, &first);
        assert_all_present(&node, &second);
        assert_eq!(info_u64(&node, "seq"), 500, "{mode}");
    }
}

// ---------------------------------------------------------------------------
// A real disk error
// ---------------------------------------------------------------------------

/// `keyval` run by `sh` under a file size limit with SIGXFSZ ignored, so a
/// write past the limit fails with `EFBIG`. `ulimit -f` counts 512-byte
/// blocks in dash and POSIX shells (1024 in bash); the test does not depend
/// on which, it writes until the first failure.
fn under_file_size_limit(blocks: u32) -> Command {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!(r#"trap "" XFSZ; ulimit -f {blocks} && exec "$0" "$@""#),
        keyval_bin(),
    ]);
    command
}

#[test]
fn a_disk_error_makes_the_node_fail_stop_without_losing_or_inventing_data() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut node = Node::spawn(
        temp.path(),
        &["--role", "leader"],
        under_file_size_limit(16),
    )
    .unwrap_or_else(|(status, log)| panic!("start under ulimit: {status}\n{log}"));
    let mut c = node.client();
    let value = |i: usize| format!("value {i} {}", "d".repeat(60));
    let mut failed_at = None;
    for i in 0..2000 {
        match c.call(&format!("PUT k{i} {}", value(i))).as_str() {
            "OK" => {}
            "ERROR" => {
                failed_at = Some(i);
                break;
            }
            other => panic!("PUT k{i}: unexpected reply {other:?}"),
        }
    }
    let failed = failed_at.expect("no write failed under a file size limit");
    assert!(failed > 10, "the limit hit after only {failed} writes");
    node.wait_log("File too large");

    // Fail-stop: every later write fails and changes nothing ...
    assert_eq!(c.call("PUT k0 overwritten"), "ERROR");
    assert_eq!(c.call("PUT brand-new key"), "ERROR");
    assert_eq!(c.call("DELETE k1"), "ERROR");
    // ... reads keep working, and the failed write was not applied.
    assert_eq!(c.call(&format!("GET k{failed}")), "NOT_FOUND");
    assert_eq!(c.call("GET k0"), value(0));
    assert_eq!(c.call("GET k1"), value(1));
    assert_eq!(c.call("GET brand-new"), "NOT_FOUND");
    assert_eq!(c.call("PING"), "PONG");
    let info = c.info();
    let field = |name: &str| {
        info.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no INFO {name}"))
    };
    assert_eq!(field("writes"), "failed");
    // EFBIG fails the write; no fsync failed.
    assert_eq!(field("fsync_failures"), "0");
    assert_eq!(field("seq"), failed.to_string());
    assert_eq!(field("keys"), failed.to_string());
    // A second client is refused writes too.
    assert_eq!(node.client().call("PUT other x"), "ERROR");
    drop(c);

    // Restarted without the limit: exactly the acknowledged writes.
    node.kill9();
    node.restart();
    let mut c = node.client();
    assert_eq!(c.info_field("seq"), failed.to_string());
    assert_eq!(c.info_field("writes"), "ok");
    for i in 0..failed {
        assert_eq!(c.call(&format!("GET k{i}")), value(i), "k{i}");
    }
    assert_eq!(c.call(&format!("GET k{failed}")), "NOT_FOUND");
    assert_eq!(c.call("GET brand-new"), "NOT_FOUND");
    assert_eq!(c.call("PUT k0 after the restart"), "OK");
    assert_eq!(c.call("GET k0"), "after the restart");
}

/// `header` as the 48 header bytes of format version `version`.
fn header_of_version(header: &Header, version: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// A log of format version 1 is served and upgraded to version 2 in
/// place, before the node writes anything (its fork record); one of a
/// version this build does not know stops the node with an error naming
/// the file, the version found and the versions read, and is left as it
/// was.
#[test]
fn a_version_1_log_is_upgraded_and_an_unknown_version_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leader.log");
    let header = Header {
        history: [0x31; 16],
        base_seq: 0,
        epoch: 1,
    };
    let mut v1 = header_of_version(&header, 1);
    for (seq, key, value) in [(1, "a", "one"), (2, "b", "two")] {
        Record {
            seq,
            op: Op::Put,
            key: key.as_bytes(),
            value: value.as_bytes(),
        }
        .encode(&mut v1);
    }
    fs::write(&path, &v1).expect("write log");
    let mut node = Node::start_in(dir.path(), &["--role", "leader"]);
    node.wait_log("log format version 1 upgraded to 2");
    assert_eq!(node.client().call("GET b"), "two");
    node.signal("TERM");
    assert!(node.wait_exit().success());
    let upgraded = fs::read(&path).expect("read log");
    assert_eq!(upgraded[..48], header_of_version(&header, 2)[..]);
    assert_eq!(upgraded[48..v1.len()], v1[48..], "the records as they were");

    let v3 = header_of_version(&header, 3);
    fs::write(&path, &v3).expect("write log");
    let (status, log) = match Node::try_start_in(dir.path(), &["--role", "leader"]) {
        Ok(node) => panic!("started on a version 3 log; log:\n{}", node.log_text()),
        Err(failure) => failure,
    };
    assert_eq!(status.code(), Some(1), "exit status {status}");
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "{}: offset 0: unsupported log format version 3 (this build reads versions 1 to 2",
            path.display()
        ))),
        "no error line naming the file and the versions:\n{log}"
    );
    assert_eq!(
        fs::read(&path).expect("read log"),
        v3,
        "the refused log was modified"
    );
}
