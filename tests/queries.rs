//! `DIGEST` and `KEYS` over a data set large enough to be computed off the
//! event loop (more than 4,096 keys), against the real binary: other
//! clients are served while such a query runs, the reply shows exactly the
//! writes before it on its connection, replies keep request order, and the
//! result matches the data, on a leader and on a follower, across
//! compactions and under a flood.
//!
//! No assertion depends on timing: "served while the query runs" is shown
//! by another client's `INFO` reporting the query's job as unfinished.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use common::cluster::{free_port, leader_on, put_many, start_follower, wait_synced};
use common::{wait_until, Client, Node};

/// Keys loaded into each test's node: past the 4,096 answered inline.
const KEYS: usize = 12_000;

/// The data [`put_many`] writes: `<prefix><i>` = `<i>-<value>`.
fn model(prefix: &str, range: std::ops::Range<usize>, value: &str) -> BTreeMap<String, String> {
    range
        .map(|i| (format!("{prefix}{i}"), format!("{i}-{value}")))
        .collect()
}

/// The `DIGEST` of `data` (`docs/protocol.md`).
fn digest_of(data: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update(format!("{k}\n{v}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// The `KEYS <prefix>` list of `data`.
fn keys_of(data: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    data.keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect()
}

/// `INFO queries`: query jobs waiting or running.
fn queries(c: &mut Client) -> u64 {
    c.info_field("queries").parse().expect("INFO queries")
}

/// Whether any reply bytes are waiting on `c`, without blocking.
fn has_reply(c: &mut Client) -> bool {
    c.stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let ready = matches!(c.stream.peek(&mut byte), Ok(n) if n > 0);
    c.stream.set_nonblocking(false).expect("blocking");
    ready
}

#[test]
fn other_clients_are_served_while_a_large_query_runs() {
    let node = Node::leader(&[]);
    put_many(&node, "k", 0..KEYS, "v");
    let data = model("k", 0..KEYS, "v");
    let mut a = node.client();
    let mut b = node.client();
    a.send_raw(b"DIGEST\nKEYS k11\nKEYS\nPING\n");
    // B's INFO is answered while A's queries are not: the loop serves it
    // with a job unfinished. (Until the loop has read A's requests, INFO
    // says 0.)
    let mut seen_running = false;
    wait_until("another client's INFO while the query job runs", || {
        assert!(
            !has_reply(&mut a) || seen_running,
            "the queries were answered before another client's INFO showed their job"
        );
        seen_running = queries(&mut b) > 0;
        seen_running
    });
    assert_eq!(b.call("GET k7"), "7-v");
    assert_eq!(b.call("PING"), "PONG");
    // A's replies, in request order.
    assert_eq!(a.line(), digest_of(&data));
    assert_eq!(a.list(), keys_of(&data, "k11"));
    assert_eq!(a.list().len(), KEYS);
    assert_eq!(a.line(), "PONG");
    wait_until("the jobs to be gone", || queries(&mut b) == 0);
    assert!(node
        .find_log("keys read from the log")
        .is_some_and(|l| l.contains("DIGEST as of seq")));
}

#[test]
fn a_query_shows_exactly_the_writes_before_it_on_its_connection() {
    let node = Node::leader(&[]);
    put_many(&node, "k", 0..KEYS, "v");
    let mut data = model("k", 0..KEYS, "v");
    let mut c = node.client();
    // One write: the replies leave in request order, and each query shows
    // the writes before it and none after.
    c.send_raw(
        b"PUT k0 changed\nDIGEST\nPUT k1 changed\nKEYS k1\nDELETE k10\nDIGEST\nGET k1\nKEYS k10\n",
    );
    assert_eq!(c.line(), "OK");
    data.insert("k0".into(), "changed".into());
    assert_eq!(c.line(), digest_of(&data));
    assert_eq!(c.line(), "OK");
    data.insert("k1".into(), "changed".into());
    let with_k10 = keys_of(&data, "k1");
    assert_eq!(c.list(), with_k10);
    assert_eq!(c.line(), "OK");
    data.remove("k10");
    assert_eq!(c.line(), digest_of(&data));
    assert_eq!(c.line(), "changed");
    assert_eq!(c.list(), keys_of(&data, "k10"));
    assert!(!keys_of(&data, "k10").contains(&"k10".to_string()));
    assert!(with_k10.contains(&"k10".to_string()));
}

#[test]
fn a_follower_answers_with_the_leaders_digest() {
    let port = free_port();
    let leader = leader_on(port, &[]);
    let follower = start_follower(port, 2, &[]);
    put_many(&leader, "k", 0..KEYS, "v");
    put_many(&leader, "k", 0..100, "again");
    let mut data = model("k", 0..KEYS, "v");
    data.extend(model("k", 0..100, "again"));
    // Both digests come from jobs here.
    wait_synced(&leader, &[&follower]);
    let expected = digest_of(&data);
    assert_eq!(leader.client().call("DIGEST"), expected);
    assert_eq!(follower.client().call("DIGEST"), expected);
    let mut c = follower.client();
    c.send("KEYS k99");
    assert_eq!(c.list(), keys_of(&data, "k99"));
}

#[test]
fn queries_between_writes_stay_exact_across_compactions() {
    let node = Node::leader(&["--compact-min-bytes", "65536", "--compact-ratio", "1.5"]);
    put_many(&node, "k", 0..KEYS, "v");
    let mut data = model("k", 0..KEYS, "v");
    let mut c = node.client();
    for round in 0..6 {
        // Overwrites grow the log past the thresholds again and again; a
        // DIGEST pipelined behind each batch shows exactly that batch.
        let value = format!("round{round}");
        let mut requests = String::new();
        for i in (round * 500)..(round * 500 + 2_000) {
            requests.push_str(&format!("PUT k{i} {value}\n"));
            data.insert(format!("k{i}"), value.clone());
        }
        requests.push_str("DIGEST\n");
        c.send_raw(requests.as_bytes());
        for _ in 0..2_000 {
            assert_eq!(c.line(), "OK");
        }
        assert_eq!(c.line(), digest_of(&data), "round {round}");
    }
    wait_until("a compaction", || node.info_field("compactions") != "0");
    assert_eq!(c.call("DIGEST"), digest_of(&data));
}

#[test]
fn a_flood_of_queries_is_answered_and_leaves_nothing_behind() {
    let node = Node::leader(&[]);
    put_many(&node, "k", 0..KEYS, "v");
    let expected = digest_of(&model("k", 0..KEYS, "v"));
    // Clients that pipeline far more queries than a connection may have
    // waiting, and clients that leave without reading.
    let mut readers: Vec<Client> = (0..4).map(|_| node.client()).collect();
    for c in &mut readers {
        c.send_raw("DIGEST\n".repeat(20).as_bytes());
    }
    for _ in 0..4 {
        let mut quitter = node.client();
        quitter.send_raw("DIGEST\nKEYS k1\n".repeat(20).as_bytes());
        drop(quitter);
    }
    for c in &mut readers {
        for _ in 0..20 {
            assert_eq!(c.line(), expected);
        }
    }
    let mut c = node.client();
    wait_until("the jobs to be gone", || queries(&mut c) == 0);
    // The node still serves, and nothing is left on the readers' sockets.
    assert_eq!(c.call("PING"), "PONG");
    for c in &mut readers {
        assert!(!has_reply(c));
        assert_eq!(c.call("PING"), "PONG");
    }
    let mut rest = Vec::new();
    c.send("CLOSE");
    assert_eq!(c.line(), "BYE");
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
