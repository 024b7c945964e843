//! Client access control against the real binary (`docs/access.md`): the
//! password from `KEYVAL_PASSWORD` and from `--password-file`, `NOAUTH`
//! before `AUTH`, `WRONGPASS` keeping the connection, the password never
//! reaching the log, followers and `keyval-ctl` unaffected by it, and
//! protected mode.
//!
//! Protected mode needs a client that is not on loopback. The test makes
//! one inside a network namespace of its own (`ip netns`, so it needs
//! root): keyval listens on 0.0.0.0 there, and a client in the same
//! namespace connects to the namespace's private address. Without root
//! that test says why and skips.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::cluster::start_follower;
use common::{ctl, keyval_bin, wait_until, Client, Node, SECRET};
use tempfile::TempDir;

/// The password the tests configure.
const PASSWORD: &str = "correct-horse-battery-staple";

/// A wrong guess, which must not reach the log either.
const WRONG: &str = "wrong-guess-4711";

/// A node and the temp dir it keeps its data in (dropped in that order).
struct Running {
    node: Node,
    _dir: TempDir,
}

/// A leader started by `command` (which runs keyval) with `args`.
fn start_leader(mut command: Command, args: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    command.env_remove("KEYVAL_PASSWORD");
    let args = [&["--role", "leader"], args].concat();
    let node = Node::spawn(dir.path(), &args, command)
        .unwrap_or_else(|(status, log)| panic!("leader exited with {status}; log:\n{log}"));
    Running { node, _dir: dir }
}

/// A leader whose password comes from `KEYVAL_PASSWORD`.
fn leader_with_env_password(password: &str, args: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(keyval_bin());
    command.env("KEYVAL_PASSWORD", password);
    let args = [&["--role", "leader"], args].concat();
    let node = Node::spawn(dir.path(), &args, command)
        .unwrap_or_else(|(status, log)| panic!("leader exited with {status}; log:\n{log}"));
    Running { node, _dir: dir }
}

/// A client that has given the password.
fn authed(node: &Node) -> Client {
    let mut c = node.client();
    assert_eq!(c.call(&format!("AUTH {PASSWORD}")), "OK");
    c
}

/// Asserts that neither the password nor the wrong guess is in the log.
fn assert_log_clean(node: &Node) {
    let log = node.log_text();
    assert!(!log.is_empty(), "no log at all");
    assert!(!log.contains(PASSWORD), "password in the log:\n{log}");
    assert!(!log.contains(WRONG), "wrong guess in the log:\n{log}");
}

/// The gate on a node with a password: everything but `AUTH`, `PING` and
/// `CLOSE` gets `NOAUTH` (and does nothing) until `AUTH` succeeds.
fn check_gate(node: &Node) {
    let mut c = node.client();
    for request in [
        "PUT a 1", "GET a", "DELETE a", "KEYS", "KEYS a", "INFO", "DIGEST",
    ] {
        assert_eq!(c.call(request), "NOAUTH", "{request}");
    }
    assert_eq!(c.call("PING"), "PONG");
    assert_eq!(c.call(&format!("AUTH {WRONG}")), "WRONGPASS");
    // The connection stays, still unauthenticated.
    assert_eq!(c.call("PING"), "PONG");
    assert_eq!(c.call("GET a"), "NOAUTH");
    assert_eq!(c.call("AUTH"), "INVALID_COMMAND");
    assert_eq!(c.call(&format!("AUTH {PASSWORD}")), "OK");
    // The PUT refused above wrote nothing.
    assert_eq!(c.call("GET a"), "NOT_FOUND");
    assert_eq!(c.call("PUT a 1"), "OK");
    assert_eq!(c.call("GET a"), "1");
    c.send("KEYS");
    assert_eq!(c.list(), ["a"]);
    assert_eq!(c.info_field("role"), "leader");
    // A wrong password later does not take the authentication back.
    assert_eq!(c.call(&format!("AUTH {WRONG}")), "WRONGPASS");
    assert_eq!(c.call("GET a"), "1");
    assert_eq!(c.call("CLOSE"), "BYE");
    assert!(c.is_closed());

    // CLOSE needs no password; AUTH pipelined with what follows works.
    let mut c = node.client();
    assert_eq!(c.call("CLOSE"), "BYE");
    assert!(c.is_closed());
    let mut c = node.client();
    c.send_raw(format!("GET a\nAUTH {PASSWORD}\nGET a\n").as_bytes());
    assert_eq!([c.line(), c.line(), c.line()], ["NOAUTH", "OK", "1"]);
    // Each connection proves the password on its own.
    assert_eq!(node.client().call("GET a"), "NOAUTH");
}

#[test]
fn password_from_environment_gates_every_request_until_auth() {
    let leader = leader_with_env_password(PASSWORD, &[]);
    check_gate(&leader.node);
    assert_log_clean(&leader.node);
}

#[test]
fn password_from_file_with_its_newline_trimmed() {
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("password");
    fs::write(&file, format!("{PASSWORD}\n")).expect("write");
    let file = file.to_str().expect("utf8 path");
    // The file wins over the environment, as --secret-file does.
    let mut command = Command::new(keyval_bin());
    command.env("KEYVAL_PASSWORD", "not-this-one");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::spawn(
        dir.path(),
        &["--role", "leader", "--password-file", file],
        command,
    )
    .unwrap_or_else(|(status, log)| panic!("leader exited with {status}; log:\n{log}"));
    check_gate(&node);
    assert_eq!(node.client().call("AUTH not-this-one"), "WRONGPASS");
    assert_log_clean(&node);
}

/// Starts keyval expecting a usage error; returns its one stderr line.
fn expect_usage_error(dir: &Path, args: &[&str], env_password: Option<&str>) -> String {
    let mut command = Command::new(keyval_bin());
    command
        .args(["--role", "leader", "--port", "0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env_remove("KEYVAL_PASSWORD");
    if let Some(password) = env_password {
        command.env("KEYVAL_PASSWORD", password);
    }
    let (status, stderr) = common::run_to_exit(&mut command);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    stderr
}

#[test]
fn empty_or_missing_passwords_are_usage_errors() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let line = expect_usage_error(&dir, &[], Some(""));
    assert!(line.contains("KEYVAL_PASSWORD"), "{line}");
    let empty = temp.path().join("empty");
    fs::write(&empty, "\n").expect("write");
    let line = expect_usage_error(
        &dir,
        &["--password-file", empty.to_str().expect("utf8")],
        None,
    );
    assert!(line.contains("empty"), "{line}");
    let missing = temp.path().join("no-such-file");
    let line = expect_usage_error(
        &dir,
        &["--password-file", missing.to_str().expect("utf8")],
        None,
    );
    assert!(line.contains("no-such-file"), "{line}");
    let line = expect_usage_error(&dir, &["--protected-mode", "maybe"], None);
    assert!(line.contains("--protected-mode"), "{line}");
}

#[test]
fn auth_without_a_password_is_an_error_and_nothing_is_gated() {
    let leader = start_leader(Command::new(keyval_bin()), &[]);
    let mut c = leader.node.client();
    assert_eq!(c.call("PUT a 1"), "OK");
    assert_eq!(c.call("AUTH whatever"), "ERROR no password is set");
    assert_eq!(c.call("GET a"), "1");
}

#[test]
fn followers_and_keyval_ctl_need_no_password() {
    let leader = leader_with_env_password(PASSWORD, &[]);
    let lp = leader.node.addr.port();
    let follower = start_follower(lp, 2, &[]);
    wait_until("the follower to connect", || {
        authed(&leader.node).info_field("followers") == "1"
    });
    let mut c = authed(&leader.node);
    assert_eq!(c.call("PUT replicated yes"), "OK");
    // The follower has no password of its own: its reads are open.
    wait_until("the write to reach the follower", || {
        follower.client().call("GET replicated") == "yes"
    });

    // The admin channel proves the secret, which is worth the password.
    let out = ctl(lp, &["info"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keyval-ctl info: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "followers 1"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "role leader"), "{stdout}");
    let out = ctl(lp, &["compact"]);
    assert!(
        out.status.success(),
        "keyval-ctl compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_log_clean(&leader.node);
}

/// The effective user id, from /proc.
fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `ip <args>`; `Err` with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace this test created, with `lo` up and one interface
/// holding [`Netns::ADDR`]; deleted when dropped, also on a failed test.
struct Netns {
    name: String,
}

impl Netns {
    /// The namespace's private (non-loopback) address.
    const ADDR: &'static str = "10.213.7.1";

    /// Creates one, or says why it cannot.
    fn create() -> Result<Netns, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if euid() != Some(0) {
            return Err("not root: creating a network namespace needs root".into());
        }
        let name = format!(
            "kvaccess-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        // From here on, dropping `ns` deletes the namespace.
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // A dummy interface if the kernel has the module, else a veth pair
        // with both ends inside.
        if ip(&["-n", n, "link", "add", "kv0", "type", "dummy"]).is_err() {
            ip(&[
                "-n", n, "link", "add", "kv0", "type", "veth", "peer", "name", "kv1",
            ])?;
            ip(&["-n", n, "link", "set", "kv1", "up"])?;
        }
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", Netns::ADDR),
            "dev",
            "kv0",
        ])?;
        ip(&["-n", n, "link", "set", "kv0", "up"])?;
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// A keyval leader inside the namespace on 0.0.0.0, with `args`.
    fn leader(&self, args: &[&str], password: Option<&str>) -> Running {
        let mut command = self.command(keyval_bin());
        if let Some(password) = password {
            command.env("KEYVAL_PASSWORD", password);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let args = [&["--role", "leader", "--bind", "0.0.0.0"], args].concat();
        let node = Node::spawn(dir.path(), &args, command)
            .unwrap_or_else(|(status, log)| panic!("leader exited with {status}; log:\n{log}"));
        Running { node, _dir: dir }
    }

    /// A client session from inside the namespace to `host:port`: sends
    /// each request and reads one reply line per request. Returns the
    /// client's own address, the replies, and then `EOF` if the server
    /// closed the connection or `OPEN` if it did not within a second.
    fn session(&self, host: &str, port: u16, requests: &[&str]) -> Vec<String> {
        const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print("FROM " + s.getsockname()[0])
f = s.makefile("rb")
for request in sys.argv[3:]:
    s.sendall(request.encode() + b"\n")
    line = f.readline()
    if not line:
        print("EOF")
        sys.exit(0)
    print(line.decode().rstrip("\n"))
s.settimeout(1.0)
try:
    more = f.readline()
    print("EOF" if not more else "MORE " + more.decode().rstrip("\n"))
except (socket.timeout, TimeoutError):
    print("OPEN")
"#;
        let out = self
            .command("python3")
            .args(["-c", CLIENT, host, &port.to_string()])
            .args(requests)
            .output()
            .expect("run python3 in the namespace");
        assert!(
            out.status.success(),
            "client in the namespace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("could not delete network namespace {}: {e}", self.name);
        }
    }
}

#[test]
fn protected_mode_refuses_remote_clients_without_a_password() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: protected mode needs a non-loopback client: {why}");
            return;
        }
    };
    if ns.command("python3").arg("-V").output().is_err() {
        eprintln!("skipped: no python3 to run the client in the namespace");
        return;
    }
    let from = format!("FROM {}", Netns::ADDR);

    // No password, protected mode on (the default): DENIED, then closed.
    let open = ns.leader(&[], None);
    let port = open.node.addr.port();
    let got = ns.session(Netns::ADDR, port, &["HELLO CLIENT"]);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], from);
    assert!(got[1].starts_with("DENIED "), "{got:?}");
    assert!(got[1].contains("--protected-mode no"), "{got:?}");
    assert_eq!(got[2], "EOF", "{got:?}");
    // The same node serves a client on loopback.
    let got = ns.session("127.0.0.1", port, &["HELLO CLIENT", "PUT a 1", "GET a"]);
    assert_eq!(got, ["FROM 127.0.0.1", "HELLO SERVER", "OK", "1", "OPEN"]);
    // Admin connections and followers from the private address prove the
    // secret instead: protected mode leaves them alone.
    let out = ns
        .command(env!("CARGO_BIN_EXE_keyval-ctl"))
        .env("KEYVAL_SECRET", SECRET)
        .args(["--host", Netns::ADDR, "--port", &port.to_string(), "info"])
        .output()
        .expect("keyval-ctl in the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("role leader"),
        "keyval-ctl: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let port_text = port.to_string();
    let _follower = Node::spawn(
        follower_dir.path(),
        &[
            "--role",
            "follower",
            "--id",
            "2",
            "--leader_host",
            Netns::ADDR,
            "--leader_port",
            &port_text,
        ],
        ns.command(keyval_bin()),
    )
    .unwrap_or_else(|(status, log)| panic!("follower exited with {status}; log:\n{log}"));
    wait_until("the follower, connecting from the private address", || {
        leader_info(&ns, port)
            .iter()
            .any(|l| l.starts_with(&format!("follower_2 addr={}:", Netns::ADDR)))
    });

    // Protected mode off: served.
    let unprotected = ns.leader(&["--protected-mode", "no"], None);
    let got = ns.session(
        Netns::ADDR,
        unprotected.node.addr.port(),
        &["HELLO CLIENT", "PUT a 1", "GET a"],
    );
    assert_eq!(got, [&from, "HELLO SERVER", "OK", "1", "OPEN"]);

    // A password set: served, behind the gate.
    let guarded = ns.leader(&[], Some(PASSWORD));
    let got = ns.session(
        Netns::ADDR,
        guarded.node.addr.port(),
        &[
            "HELLO CLIENT",
            "GET a",
            &format!("AUTH {PASSWORD}"),
            "PUT a 1",
            "GET a",
        ],
    );
    assert_eq!(
        got,
        [&from, "HELLO SERVER", "NOAUTH", "OK", "OK", "1", "OPEN"]
    );
    assert_log_clean(&guarded.node);
}

/// The INFO lines of the node on `port` inside `ns`, through keyval-ctl
/// (empty if it fails).
fn leader_info(ns: &Netns, port: u16) -> Vec<String> {
    let Ok(out) = ns
        .command(env!("CARGO_BIN_EXE_keyval-ctl"))
        .env("KEYVAL_SECRET", SECRET)
        .args(["--port", &port.to_string(), "info"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}
