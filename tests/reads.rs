//! Reads on the leader with `--sync-followers`, through failovers: the two
//! histories that used to break linearizability, replayed against real
//! processes.
//!
//! 1. A read must not show a write before the write passed the output
//!    rule: the leader could die and a follower without it be promoted,
//!    and the value would come back older.
//! 2. A client connected to the old leader must not keep reading it after
//!    a switchover: it is told where the leader is (`NOT_LEADER`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{free_port, leader_on, start_follower, wait_followers, wait_synced};
use common::{ctl, wait_until};

#[test]
fn a_read_does_not_show_a_write_its_followers_do_not_hold() {
    let leader = leader_on(
        free_port(),
        &["--sync-followers", "1", "--sync-timeout-ms", "1500"],
    );
    let f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    let mut writer = leader.client();
    assert_eq!(writer.call("PUT k old"), "OK");
    assert_eq!(writer.call("PUT other acked"), "OK");
    wait_synced(&leader, &[&f2]);

    // With the follower up, a key whose writes all passed the output rule
    // reads at once.
    let mut reader = leader.client();
    let asked = Instant::now();
    assert_eq!(reader.call("GET other"), "acked");
    assert!(asked.elapsed() < Duration::from_millis(1000));

    // The follower goes down; a write reaches only the leader's disk.
    let mut f2 = f2;
    f2.kill9();
    writer.send("PUT k new");
    wait_until("the leader to apply the write", || {
        leader.info_field("seq") == "3"
    });
    // The written key does not show the new value: the read waits for the
    // write's acknowledgement, and times out with it.
    let read = reader.call("GET k");
    assert_eq!(
        read, "REPLICATION_TIMEOUT",
        "a read showed an unacknowledged write"
    );
    assert_eq!(writer.line(), "REPLICATION_TIMEOUT");

    // Why that matters: the leader dies, and the follower, which never got
    // the write, holds the older value; promoted, it leads from there.
    let mut leader = leader;
    leader.kill9();
    f2.restart();
    assert_eq!(f2.client().call("GET k"), "old");
    let promoted = ctl(f2.addr.port(), &["promote"]);
    assert!(promoted.status.success(), "{promoted:?}");
    assert_eq!(f2.info_field("seq"), "2", "the write never reached it");
}

#[test]
fn a_client_of_a_replaced_leader_is_sent_to_the_new_one() {
    let leader = leader_on(free_port(), &["--sync-followers", "1"]);
    let lp = leader.addr.port();
    let (p2, p3) = (free_port(), free_port());
    let f2 = start_follower(lp, 2, &["--port", &p2.to_string()]);
    let f3 = start_follower(lp, 3, &["--port", &p3.to_string()]);
    wait_followers(&leader, 2);
    let mut old_client = leader.client();
    assert_eq!(old_client.call("PUT k v1"), "OK");
    assert_eq!(old_client.call("GET k"), "v1");

    let nodes = format!("127.0.0.1:{lp},127.0.0.1:{p2},127.0.0.1:{p3}");
    let out = ctl(lp, &["failover", "--nodes", &nodes]);
    assert!(out.status.success(), "{out:?}");
    wait_followers(&f2, 2);
    assert_eq!(f2.client().call("PUT k v2"), "OK");

    // The connection opened to the old leader gets no more reads from its
    // copy, which may lag the new leader's acknowledged writes.
    assert_eq!(
        old_client.call("GET k"),
        format!("NOT_LEADER 127.0.0.1:{p2}")
    );
    assert_eq!(
        old_client.call("KEYS"),
        format!("NOT_LEADER 127.0.0.1:{p2}")
    );
    assert_eq!(
        old_client.call("PUT k v3"),
        format!("WRITE_NOT_ALLOWED 127.0.0.1:{p2}")
    );
    assert_eq!(old_client.call("PING"), "PONG", "the connection stays");
    // A client that connects to it now, a follower, reads its copy
    // (eventually consistent, as on any follower).
    wait_synced(&f2, &[&leader, &f3]);
    assert_eq!(leader.client().call("GET k"), "v2");
}

#[test]
fn a_leader_that_was_paused_through_a_failover_answers_no_stale_read() {
    let leader = leader_on(
        free_port(),
        &["--sync-followers", "1", "--sync-timeout-ms", "1500"],
    );
    let lp = leader.addr.port();
    let (p2, p3) = (free_port(), free_port());
    let f2 = start_follower(lp, 2, &["--port", &p2.to_string()]);
    let f3 = start_follower(lp, 3, &["--port", &p3.to_string()]);
    wait_followers(&leader, 2);
    let mut client = leader.client();
    assert_eq!(client.call("PUT k v1"), "OK");
    assert_eq!(client.call("GET k"), "v1");

    // The leader is paused, and not told of the failover that replaces it.
    leader.signal("STOP");
    let nodes = format!("127.0.0.1:{lp},127.0.0.1:{p2},127.0.0.1:{p3}");
    let out = ctl(p2, &["failover", "--nodes", &nodes]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(f2.client().call("PUT k v2"), "OK");

    // Resumed, it still believes it leads. Its followers no longer confirm
    // it, so its read lease is gone: the read is not answered from its
    // stale copy.
    leader.signal("CONT");
    let read = client.call("GET k");
    assert_ne!(read, "v1", "a stale read from a replaced leader");
    assert_eq!(read, "REPLICATION_TIMEOUT");
    assert_eq!(leader.info_field("read_lease"), "expired");
    drop(f3);
}
