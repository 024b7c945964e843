//! A cluster on loopback for the tests: followers in temp dirs of their
//! own, leaders on fixed ports (so followers find them after a restart),
//! and the waits and bulk writes that replication and failover tests share.
//!
//! Tests learn of replication events (snapshots and catch-ups sent and
//! received, rewinds) and of compactions from the counters in `INFO`
//! ([`counter`], [`wait_counter`]); they read the log only for what a
//! message says, or for a detail no `INFO` field carries (where a
//! catch-up began, what a rewind dropped).

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{wait_until, Node, WAIT};

/// A follower node in a temp dir of its own (the node is dropped, and so
/// killed, before the dir).
pub struct Follower {
    pub node: Node,
    pub dir: TempDir,
}

impl Deref for Follower {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for Follower {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Follower {
    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        let id = self.info_field("id");
        self.dir.path().join(format!("follower_{id}.log"))
    }
}

/// Starts follower `id` of the leader on `leader_port`, with `extra` flags.
pub fn start_follower(leader_port: u16, id: u32, extra: &[&str]) -> Follower {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, port) = (id.to_string(), leader_port.to_string());
    let mut args = vec![
        "--role",
        "follower",
        "--id",
        &id,
        "--leader_host",
        "127.0.0.1",
        "--leader_port",
        &port,
    ];
    args.extend_from_slice(extra);
    let node = Node::start_in(dir.path(), &args);
    Follower { node, dir }
}

/// A port nobody listens on right now, for nodes that must come back on
/// the same port.
pub fn free_port() -> u16 {
    keyval_testkit::free_port().expect("bind an ephemeral port")
}

/// A leader on a fixed port, so followers find it again after a restart.
pub fn leader_on(port: u16, extra: &[&str]) -> Node {
    let port = port.to_string();
    Node::leader(&[&["--port", port.as_str()], extra].concat())
}

/// SIGTERM and wait for a clean exit.
pub fn stop(node: &mut Node) {
    node.signal("TERM");
    let status = node.wait_exit();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.log_text()
    );
}

pub fn digest(node: &Node) -> String {
    node.client().call("DIGEST")
}

pub fn seq(node: &Node) -> u64 {
    node.info_field("seq").parse().expect("INFO seq")
}

/// A counter in the node's INFO (`snapshots_sent`, `catchups_sent`,
/// `snapshots_received`, `catchups_received`, `rewinds`, `compactions`):
/// events since its current process started.
pub fn counter(node: &Node, name: &str) -> u64 {
    let value = node.info_field(name);
    value
        .parse()
        .unwrap_or_else(|_| panic!("INFO {name} is not a number: {value:?}"))
}

/// Waits (bounded) until the node's INFO counter `name` reaches `n`, and
/// checks it did not go past it.
pub fn wait_counter(node: &Node, name: &str, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = counter(node, name);
        if got >= n {
            assert_eq!(got, n, "INFO {name}; log:\n{}", node.log_text());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "INFO {name} is {got}, not {n}, after {WAIT:?}; log:\n{}",
            node.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Log lines of the node's current process containing `needle`.
pub fn count_log(node: &Node, needle: &str) -> usize {
    node.log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until `n` log lines of the node contain `needle` (stderr is read
/// by a thread, so a line may trail the reply it came with), and checks
/// there are no more.
pub fn wait_log_count(node: &Node, needle: &str, n: usize) {
    wait_until(&format!("{n} log lines with {needle:?}"), || {
        count_log(node, needle) >= n
    });
    assert_eq!(count_log(node, needle), n, "log:\n{}", node.log_text());
}

/// Waits until every follower holds exactly the leader's data.
/// The leader's data is read as the leader's: with `--sync-followers` a
/// read there waits for followers (and times out without them), so it is
/// asked again until it answers.
pub fn wait_synced(leader: &Node, followers: &[&Node]) {
    wait_until("the followers to match the leader", || {
        let (want_digest, want_seq) = (digest(leader), seq(leader));
        want_digest.len() == 64
            && followers
                .iter()
                .all(|f| seq(f) == want_seq && digest(f) == want_digest)
    });
}

/// Waits until the leader counts `n` connected followers.
pub fn wait_followers(leader: &Node, n: usize) {
    let want = n.to_string();
    wait_until(&format!("{n} followers on the leader"), || {
        leader.info_field("followers") == want
    });
}

/// PUTs `<prefix><i>` = `<i>-<value>` for every i in `range`, pipelined in
/// batches; every reply must be `OK`.
pub fn put_many(node: &Node, prefix: &str, range: std::ops::Range<usize>, value: &str) {
    let mut c = node.client();
    let ids: Vec<usize> = range.collect();
    for batch in ids.chunks(200) {
        let mut requests = String::new();
        for i in batch {
            requests.push_str(&format!("PUT {prefix}{i} {i}-{value}\n"));
        }
        c.send_raw(requests.as_bytes());
        for i in batch {
            assert_eq!(c.line(), "OK", "PUT {prefix}{i}");
        }
    }
}
