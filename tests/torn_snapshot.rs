//! Regression tests for faults the torture harness injects: a follower's
//! log torn at its tail must not leave it silently missing data.

mod common;

use std::fs::OpenOptions;

use common::{wait_until, Node};
use keyval::record::{Header, Op, Record};

/// Writes a compacted-looking leader log: a header with base seq 5 and
/// one PUT per key with seqs at most 5, nothing after the base.
fn write_compacted_log(path: &std::path::Path) {
    let mut bytes = Vec::new();
    Header {
        history: [0x42; 16],
        base_seq: 5,
        epoch: 1,
    }
    .encode(&mut bytes);
    for (seq, key, value) in [(1, "a", "one"), (3, "b", "two"), (5, "c", "three")] {
        Record {
            seq,
            op: Op::Put,
            key: key.as_bytes(),
            value: value.as_bytes(),
        }
        .encode(&mut bytes);
    }
    std::fs::write(path, bytes).expect("write leader.log");
}

/// Replay cuts the torn record and finds no record after the base seq.
/// The follower used to claim seq 5 then. The leader sent nothing, and
/// the follower kept serving without key `c`, with `leader_link up` and a
/// DIGEST that never matched the leader's. Now it asks for a snapshot.
#[test]
fn torn_tail_inside_a_snapshot_part_does_not_lose_a_key() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    write_compacted_log(&leader_dir.path().join("leader.log"));
    let leader = Node::start_in(leader_dir.path(), &["--role", "leader"]);
    assert_eq!(leader.info_field("seq"), "5");

    let args = format!(
        "--role follower --id 2 --leader_host 127.0.0.1 --leader_port {}",
        leader.addr.port()
    );
    let follower_args: Vec<&str> = args.split(' ').collect();
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut follower = Node::start_in(follower_dir.path(), &follower_args);
    let digest = leader.client().call("DIGEST");
    wait_until("the follower's snapshot", || {
        follower.client().call("DIGEST") == digest
    });

    // A torn write at the very end of the follower's (snapshot-only) log.
    follower.kill9();
    let log = follower_dir.path().join("follower_2.log");
    let file = OpenOptions::new().write(true).open(&log).expect("open");
    let len = file.metadata().expect("stat").len();
    file.set_len(len - 3).expect("truncate");
    drop(file);
    follower.restart();
    assert_eq!(
        follower.info_field("torn_tails_cut"),
        "1",
        "the tear was cut"
    );
    assert_eq!(
        follower.info_field("torn_tails_suspect"),
        "1",
        "the cut left no record past the base seq"
    );

    wait_until("the follower to hold the leader's data again", || {
        let mut c = follower.client();
        c.info_field("leader_link") == "up" && c.call("DIGEST") == digest
    });
    assert_eq!(follower.client().call("GET c"), "three");
    assert_eq!(
        follower.info_field("torn_tails_suspect"),
        "1",
        "a count of this start, not cleared by the snapshot"
    );
}
