//! Failover between real processes on loopback, driven through
//! `keyval-ctl` as an operator would: the disk-melt drill, a planned
//! switchover, an old leader cut off by a partition (it cannot acknowledge
//! writes, steps down on news of the higher epoch, and rewinds its
//! divergent tail when it rejoins), role changes surviving restarts with
//! the old flags, and admin commands needing the admin handshake.

mod common;

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{
    count_log, counter, digest, free_port, leader_on, put_many, seq, start_follower, stop,
    wait_counter, wait_followers, wait_log_count, wait_synced, Follower,
};
use common::{ctl, ctl_with_secret, wait_until, Node};

/// Asserts `keyval-ctl` succeeded; returns its stdout.
fn ok(output: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "keyval-ctl failed ({}):\n{stdout}{stderr}",
        output.status
    );
    stdout
}

/// A leader on a fixed port and followers 2 and 3 on fixed ports too, so
/// every node can be restarted where the others look for it.
struct Cluster {
    leader: Node,
    f2: Follower,
    f3: Follower,
}

impl Cluster {
    fn start(leader_flags: &[&str]) -> Cluster {
        let leader = leader_on(free_port(), leader_flags);
        let lp = leader.addr.port();
        let (p2, p3) = (free_port().to_string(), free_port().to_string());
        let f2 = start_follower(lp, 2, &["--port", &p2]);
        let f3 = start_follower(lp, 3, &["--port", &p3]);
        wait_followers(&leader, 2);
        Cluster { leader, f2, f3 }
    }

    /// `--nodes` for `keyval-ctl failover`.
    fn nodes(&self) -> String {
        [&self.leader, &*self.f2, &*self.f3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.addr.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn assert_present(node: &Node, prefix: &str, range: std::ops::Range<usize>, value: &str) {
    let mut c = node.client();
    for i in range {
        assert_eq!(
            c.call(&format!("GET {prefix}{i}")),
            format!("{i}-{value}"),
            "{prefix}{i} on port {}",
            node.addr.port()
        );
    }
}

#[test]
fn the_disk_melt_drill_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(&["--sync-followers", "1"]);
    put_many(&c.leader, "k", 0..300, "acked");
    let old_port = c.leader.addr.port();
    let nodes = c.nodes();

    // The leader's disk melts.
    c.leader.kill9();
    fs::remove_dir_all(&c.leader.data_dir).expect("delete the leader's data");

    let out = ok(ctl(old_port, &["failover", "--nodes", &nodes]));
    assert!(out.contains("unreachable"), "{out}");
    let new_port = c.f2.addr.port();
    assert!(
        out.contains(&format!("127.0.0.1:{new_port}: promoted")),
        "{out}"
    );
    assert!(
        out.contains(&format!("follow 127.0.0.1 {new_port}")),
        "prints how to re-point the lost node: {out}"
    );
    assert_eq!(c.f2.info_field("role"), "leader");
    assert_eq!(c.f2.info_field("epoch"), "2");
    assert_present(&c.f2, "k", 0..300, "acked");
    wait_followers(&c.f2, 1);
    put_many(&c.f2, "after", 0..20, "failover");
    wait_synced(&c.f2, &[&c.f3]);
    assert_present(&c.f3, "k", 0..300, "acked");

    // The old node comes back on an empty disk and is told to follow.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = old_port.to_string();
    let old = Node::start_in(dir.path(), &["--role", "leader", "--port", &port]);
    ok(ctl(
        old_port,
        &["follow", "127.0.0.1", &new_port.to_string()],
    ));
    wait_synced(&c.f2, &[&old, &c.f3]);
    assert_eq!(digest(&old), digest(&c.f2));
    // The old node (id 1) took a snapshot from the new leader.
    wait_counter(&c.f2, "snapshots_sent", 1);
    wait_counter(&old, "snapshots_received", 1);
    assert_eq!(old.info_field("role"), "follower");
}

#[test]
fn a_planned_switchover_loses_nothing_and_needs_no_snapshot() {
    let c = Cluster::start(&[]);
    put_many(&c.leader, "k", 0..500, "v");
    let out = ok(ctl(
        c.leader.addr.port(),
        &["failover", "--nodes", &c.nodes()],
    ));
    assert!(out.contains("fenced"), "{out}");
    let new = &c.f2;
    let np = new.addr.port();
    assert_eq!(new.info_field("role"), "leader");
    assert_eq!(seq(new), 500);
    // The old leader refuses writes and says where the leader is now.
    assert_eq!(
        c.leader.client().call("PUT x 1"),
        format!("WRITE_NOT_ALLOWED 127.0.0.1:{np}")
    );
    wait_followers(new, 2);
    put_many(new, "new", 0..50, "v");
    wait_synced(new, &[&c.leader, &c.f3]);
    assert_present(&c.leader, "k", 0..500, "v");
    assert_eq!(digest(&c.leader), digest(new));
    // Both followers caught up: the old leader (id 1) and follower 3.
    wait_counter(new, "catchups_sent", 2);
    wait_counter(&c.leader, "catchups_received", 1);
    wait_counter(&c.f3, "catchups_received", 1);
    // Only the log says where the old leader's catch-up began.
    new.wait_log("follower 1 catching up from seq 500");
    assert_eq!(counter(new, "snapshots_sent"), 0, "{}", new.log_text());
}

#[test]
fn a_partitioned_old_leader_cannot_ack_steps_down_and_rewinds_when_it_rejoins() {
    // Long enough that a loaded machine still acknowledges the first
    // writes in time.
    let c = Cluster::start(&["--sync-followers", "1", "--sync-timeout-ms", "2000"]);
    put_many(&c.leader, "k", 0..100, "v");
    wait_synced(&c.leader, &[&c.f2, &c.f3]);

    // The leader is cut off (stopped); the operator fails over.
    c.leader.signal("STOP");
    let out = ok(ctl(c.f2.addr.port(), &["failover", "--nodes", &c.nodes()]));
    assert!(out.contains("unreachable"), "{out}");
    c.leader.signal("CONT");
    let np = c.f2.addr.port();
    wait_followers(&c.f2, 1);

    // The old leader still thinks it leads, but cannot acknowledge: its
    // followers are gone.
    wait_followers(&c.leader, 0);
    let mut old = c.leader.client();
    // Pipelined, so the five time out together.
    let stale: String = (0..5)
        .map(|i| format!("PUT stale{i} never-acked\n"))
        .collect();
    old.send_raw(stale.as_bytes());
    for i in 0..5 {
        assert_eq!(old.line(), "REPLICATION_TIMEOUT", "PUT stale{i}");
    }
    put_many(&c.f2, "new", 0..10, "v");

    // A node that knows epoch 2 reaches it: it steps down. The node
    // refuses it (it was replaced), and `follow` reports that.
    let refused = ctl(
        c.f3.addr.port(),
        &["follow", "127.0.0.1", &c.leader.addr.port().to_string()],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was refused"), "{stderr}");
    c.leader.wait_log("knows epoch 2");
    wait_until("the old leader to fence itself", || {
        c.leader.info_field("writes") == "fenced"
    });
    assert_eq!(old.call("PUT late 1"), "WRITE_NOT_ALLOWED");
    wait_until("follower 3 to refuse the deposed leader", || {
        c.f3.info_field("leader_link") == "refused"
    });
    c.f3.wait_log("it was replaced by a promotion");

    // Both rejoin the new leader; the old one drops exactly its tail.
    for node in [&*c.f3, &c.leader] {
        ok(ctl(
            node.addr.port(),
            &["follow", "127.0.0.1", &np.to_string()],
        ));
    }
    wait_synced(&c.f2, &[&c.leader, &c.f3]);
    wait_counter(&c.leader, "rewinds", 1);
    // Only the log says what the rewind dropped.
    let rewound = c.leader.wait_log("rewound the log to seq 100");
    assert!(
        rewound.contains("dropped 5 writes, seq 101..=105"),
        "{rewound}"
    );
    // The client still connected to it as the leader is sent to the new
    // one; a client of the follower it is now reads its copy, without the
    // dropped tail.
    assert_eq!(old.call("GET stale0"), format!("NOT_LEADER 127.0.0.1:{np}"));
    assert_eq!(c.leader.client().call("GET stale0"), "NOT_FOUND");
    assert_present(&c.leader, "new", 0..10, "v");
    assert_eq!(digest(&c.leader), digest(&c.f2));
    assert_eq!(counter(&c.f2, "snapshots_sent"), 0);
}

#[test]
fn role_changes_survive_restarts_with_the_old_flags() {
    let mut c = Cluster::start(&[]);
    put_many(&c.leader, "k", 0..20, "v");
    ok(ctl(
        c.leader.addr.port(),
        &["failover", "--nodes", &c.nodes()],
    ));
    let np = c.f2.addr.port();
    wait_followers(&c.f2, 2);

    // The old leader's unit restarts it as `--role leader`.
    c.leader.kill9();
    c.leader.restart();
    c.leader.wait_log("wins over the flags");
    assert_eq!(c.leader.info_field("role"), "follower");
    assert_eq!(
        c.leader.client().call("PUT x 1"),
        format!("WRITE_NOT_ALLOWED 127.0.0.1:{np}")
    );
    // The promoted node's unit restarts it as `--role follower`.
    c.f2.kill9();
    c.f2.restart();
    assert_eq!(c.f2.info_field("role"), "leader");
    assert_eq!(c.f2.info_field("epoch"), "2");
    put_many(&c.f2, "after", 0..10, "restart");
    wait_synced(&c.f2, &[&c.leader, &c.f3]);
}

#[test]
fn a_fenced_leader_stays_fenced_across_a_restart() {
    let mut leader = Node::leader(&[]);
    ok(ctl(leader.addr.port(), &["fence"]));
    assert_eq!(leader.client().call("PUT a 1"), "WRITE_NOT_ALLOWED");
    leader.kill9();
    leader.restart();
    assert_eq!(leader.info_field("writes"), "fenced");
    assert_eq!(leader.client().call("PUT a 1"), "WRITE_NOT_ALLOWED");
    // Promoting it takes it back, one epoch up.
    let out = ok(ctl(leader.addr.port(), &["promote"]));
    assert!(out.contains("OK epoch 2"), "{out}");
    assert_eq!(leader.client().call("PUT a 1"), "OK");
}

#[test]
fn re_pointing_a_follower_leaves_it_one_steady_link() {
    let leader = Node::leader(&[]);
    let follower = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    let lp = leader.addr.port().to_string();
    ok(ctl(follower.addr.port(), &["follow", "127.0.0.1", &lp]));
    follower.wait_log("now following");
    wait_log_count(&follower, "connected to the leader", 2);
    // The replaced link's close must not drop the new one: the follower
    // would dial again after its backoff (100 ms), and start a chain of
    // links, each replacing the one before. Writes for half a second, one
    // at a time, cover that.
    let mut c = leader.client();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(500) {
        assert_eq!(c.call(&format!("PUT k{n} v")), "OK");
        n += 1;
    }
    wait_synced(&leader, &[&follower]);
    wait_log_count(&follower, "connected to the leader", 2);
    assert_eq!(count_log(&follower, "lost the link"), 0);
    assert_eq!(leader.info_field("followers"), "1");
}

#[test]
fn admin_commands_need_the_admin_handshake() {
    let leader = Node::leader(&[]);
    let mut c = leader.client();
    for command in ["PROMOTE", "FOLLOW 127.0.0.1 1", "FENCE", "COMPACT"] {
        assert_eq!(c.call(command), "INVALID_COMMAND", "{command}");
    }
    assert_eq!(c.call("PUT a 1"), "OK");

    let out = ctl_with_secret(leader.addr.port(), &["fence"], "not-the-secret");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("could not prove the shared secret"),
        "{stderr}"
    );
    assert_eq!(c.call("PUT b 2"), "OK", "still writable");

    // A tool that cannot prove the secret is refused by the node.
    let mut raw = common::Client::connect(leader.addr);
    raw.send("HELLO ADMIN|0123456789abcdef0123456789abcdef");
    assert!(raw.line().starts_with("CHALLENGE "));
    raw.send(&format!("AUTH {}", "0".repeat(64)));
    assert_eq!(raw.line(), "INVALID_SECRET_KEY");

    let out = ctl(free_port(), &["info"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    let out = ok(ctl(leader.addr.port(), &["info"]));
    assert!(out.contains("role leader"), "{out}");
    let out = ctl(leader.addr.port(), &["promote"]);
    assert!(!out.status.success(), "promoting a leader is a wrong role");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WRONG_ROLE leader"));
}

#[test]
fn a_promoted_follower_keeps_the_output_rule_its_leader_announced() {
    // The followers are started with no --sync-followers at all, as a
    // follower unit copied from a template might be.
    let mut leader = leader_on(
        free_port(),
        &["--sync-followers", "1", "--sync-timeout-ms", "300"],
    );
    let mut f2 = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    assert_eq!(leader.client().call("PUT a 1"), "OK");
    wait_until("the follower to learn the rule", || {
        f2.info_field("sync_policy") == "leader"
    });
    assert_eq!(f2.info_field("sync_followers"), "1");
    assert_eq!(f2.info_field("sync_timeout_ms"), "300");
    assert_eq!(leader.info_field("sync_policy"), "flags");
    // It survives a restart of the follower, in its state file.
    stop(&mut f2);
    f2.restart();
    assert_eq!(f2.info_field("sync_followers"), "1");
    leader.kill9();
    ok(ctl(f2.addr.port(), &["promote"]));
    assert_eq!(f2.info_field("role"), "leader");
    // No follower: a write is durable on the new leader but waits for one,
    // exactly as on the old.
    assert_eq!(f2.client().call("PUT b 2"), "REPLICATION_TIMEOUT");
    assert!(f2
        .wait_log("promoted to leader")
        .contains("writes wait for 1 follower(s) (the output rule from its leader)"));
}
