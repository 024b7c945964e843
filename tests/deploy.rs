//! Deployment as an operator meets it: the disk-melt runbook's return step
//! (the old leader, id 1, comes back on its own disk and follows the
//! promoted node), `keyval-ctl follow` reporting how the link turned out
//! (up, or refused with the node's reason and a non-zero exit), a follower
//! pointed at its own address, and `make install` into a staging directory.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cluster::{
    digest, free_port, leader_on, put_many, start_follower, wait_followers, wait_synced,
};
use common::{ctl, run_to_exit, wait_until, Node};

/// `keyval-ctl`'s stdout and stderr, for messages and checks.
fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts `keyval-ctl` succeeded; returns its stdout.
fn ok(output: Output) -> String {
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "keyval-ctl failed ({}):\n{stdout}{stderr}",
        output.status
    );
    stdout
}

#[test]
fn the_runbook_return_step_brings_the_old_leader_back_as_a_follower() {
    let leader_port = free_port();
    let mut leader = leader_on(leader_port, &["--sync-followers", "1"]);
    let (p2, p3) = (free_port().to_string(), free_port().to_string());
    let f2 = start_follower(leader_port, 2, &["--port", &p2, "--sync-followers", "1"]);
    let f3 = start_follower(leader_port, 3, &["--port", &p3, "--sync-followers", "1"]);
    wait_followers(&leader, 2);
    put_many(&leader, "k", 0..200, "before");
    wait_synced(&leader, &[&f2, &f3]);

    // The leader dies; its disk survives. The operator fails over.
    leader.kill9();
    let nodes = [leader_port, f2.addr.port(), f3.addr.port()]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = ok(ctl(f2.addr.port(), &["failover", "--nodes", &nodes]));
    let new_port = f2.addr.port();
    let printed = format!("--port {leader_port} follow 127.0.0.1 {new_port}");
    assert!(out.contains(&printed), "prints the return step: {out}");
    wait_followers(&f2, 1);
    put_many(&f2, "after", 0..50, "failover");

    // The return step: the old leader (id 1) restarts where it was, then
    // is told to follow, as printed.
    leader.restart();
    assert_eq!(leader.info_field("id"), "1");
    let out = ok(ctl(
        leader_port,
        &["follow", "127.0.0.1", &new_port.to_string()],
    ));
    assert!(out.contains("leader_link up"), "{out}");
    wait_synced(&f2, &[&leader, &f3]);
    assert_eq!(leader.info_field("role"), "follower");
    assert_eq!(leader.info_field("leader_link"), "up");
    assert_eq!(digest(&leader), digest(&f2));
    assert_eq!(digest(&f3), digest(&f2));
    wait_until("the new leader to list follower 1", || {
        f2.info()
            .iter()
            .any(|(field, value)| field == "follower_1" && value.contains("lag=0"))
    });
}

#[test]
fn keyval_ctl_follow_reports_a_refusal_and_why() {
    // Two leaders: both have id 1, so one cannot follow the other.
    let a = Node::leader(&[]);
    let b = Node::leader(&[]);
    let a_port = a.addr.port().to_string();
    let output = ctl(b.addr.port(), &["follow", "127.0.0.1", &a_port]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("DUPLICATE_ID"), "{stderr}");
    assert!(stderr.contains("own id"), "{stderr}");
    // The node shows it, and both logs say why.
    assert_eq!(b.info_field("leader_link"), "refused");
    assert!(
        b.info_field("leader_link_error").contains("DUPLICATE_ID"),
        "{:?}",
        b.info()
    );
    a.wait_log("follower refused: follower id 1 is this leader's own id");
    b.wait_log("the leader refused the handshake: DUPLICATE_ID");

    // Re-pointed at a node that is not a leader: refused, and why.
    let f = start_follower(a.addr.port(), 2, &[]);
    wait_followers(&a, 1);
    let f_port = f.addr.port().to_string();
    let output = ctl(b.addr.port(), &["follow", "127.0.0.1", &f_port]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("not a leader"), "{stderr}");

    // Told to follow itself: the node refuses the command.
    let b_port = b.addr.port().to_string();
    let output = ctl(b.addr.port(), &["follow", "localhost", &b_port]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("INVALID_LEADER"), "{stderr}");
    assert!(stderr.contains("is this node itself"), "{stderr}");
}

#[test]
fn a_follower_pointed_at_itself_exits_2_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    for (bind, host) in [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "localhost")] {
        let args = [
            "--role",
            "follower",
            "--id",
            "2",
            "--port",
            &port,
            "--bind",
            bind,
            "--leader_host",
            host,
            "--leader_port",
            &port,
        ];
        let (status, log) = match Node::try_start_in(dir.path(), &args) {
            Ok(_) => panic!("a follower of {host}:{port} bound to {bind} started"),
            Err(exit) => exit,
        };
        assert_eq!(status.code(), Some(2), "{log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        assert!(log.contains("this node's own address"), "{log}");
    }
}

#[test]
fn make_install_installs_what_make_built_without_building() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = root.join("build");
    if !build.join("keyval").is_file() || !build.join("keyval-ctl").is_file() {
        eprintln!("skipped: build/ has no binaries (run make first)");
        return;
    }
    if Command::new("make").arg("--version").output().is_err() {
        eprintln!("skipped: no make");
        return;
    }
    let dest = tempfile::tempdir().expect("tempdir");
    let destdir = format!("DESTDIR={}", dest.path().display());
    // CARGO=false: a rebuild would fail the run.
    let (status, stderr) = run_to_exit(Command::new("make").current_dir(root).args([
        "-s",
        "install",
        &destdir,
        "PREFIX=/usr",
        "CARGO=false",
    ]));
    assert!(status.success(), "make install: {stderr}");
    let d = dest.path();
    for file in [
        "usr/bin/keyval",
        "usr/bin/keyval-ctl",
        "usr/share/doc/keyval/operations.md",
        "etc/keyval/leader.env.example",
        "etc/keyval/follower.env.example",
        "etc/keyval/password.conf.example",
    ] {
        assert!(d.join(file).is_file(), "{file} not installed");
    }
    for doc in std::fs::read_dir(root.join("docs")).into_iter().flatten() {
        let name = doc.expect("docs entry").file_name();
        assert!(
            d.join("usr/share/doc/keyval").join(&name).is_file(),
            "docs/{name:?} not installed"
        );
    }
    for unit in ["keyval-leader.service", "keyval-follower@.service"] {
        let text = std::fs::read_to_string(d.join("usr/lib/systemd/system").join(unit))
            .expect("read the installed unit");
        assert!(
            text.contains("ExecStart=/usr/bin/keyval "),
            "{unit}:\n{text}"
        );
        let docs = text
            .lines()
            .find(|l| l.starts_with("Documentation="))
            .expect("a Documentation= line");
        assert!(!docs.contains("/usr/local/"), "{docs}");
        assert!(
            docs.contains("/usr/share/doc/keyval/operations.md"),
            "{docs}"
        );
        assert!(
            text.contains("LoadCredential=secret:/etc/keyval/secret"),
            "{unit}:\n{text}"
        );
        assert!(
            text.contains("Environment=KEYVAL_SECRET_FILE=%d/secret"),
            "{unit}:\n{text}"
        );
    }

    // Without the built files it fails and says what to do.
    let empty = tempfile::tempdir().expect("tempdir");
    let (status, stderr) = run_to_exit(Command::new("make").current_dir(root).args([
        "-s",
        "install",
        &destdir,
        &format!("BUILD={}", empty.path().display()),
        "CARGO=false",
    ]));
    assert!(!status.success());
    assert!(stderr.contains("run make first"), "{stderr}");
}
