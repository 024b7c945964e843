//! Real Redis tools against the real binary (`docs/redis.md`): redis-cli
//! (replies as it prints them, RESP3 with `-3`, `--scan`, a password),
//! redis-py (binary values, pipelines, `MSET`/`MGET`, `scan_iter`, `INFO`
//! parsed, errors raised as `ResponseError`, `ReadOnlyError` on a
//! follower), redis-benchmark, prometheus-redis-exporter scraping a
//! leader and a follower, and twemproxy sharding keys over two leaders
//! with the example `conf/twemproxy.yml`.
//!
//! `scripts/test-deps.sh` installs the tools (`make test` runs it). A
//! missing tool fails its test with a message naming the script: nothing
//! here skips.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{free_port, leader_on, start_follower, wait_followers, wait_synced};
use common::redis::{cmd, eventually, python_script, redis_cli, run, run_ok, tool, Resp, Value};
use common::{keyval_bin, Node, WAIT};
use keyval_testkit::{ChildGuard, Output};

/// Sets each key to its value through one pipelined connection.
fn set_all(addr: SocketAddr, pairs: &[(String, String)]) {
    let mut c = Resp::connect(addr);
    for chunk in pairs.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in chunk {
            args.push(k.as_bytes());
            args.push(v.as_bytes());
        }
        assert_eq!(c.call_bytes(&args), Value::ok());
    }
}

/// `redis-cli` whose exit status does not matter (it exits 0 after most
/// error replies, but that is its business): its stdout.
fn cli_any(port: u16, args: &[&str]) -> String {
    run(Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args))
    .stdout
}

// ---------------------------------------------------------------------------
// redis-cli

#[test]
fn redis_cli_prints_keyvals_replies_as_redis_ones() {
    let node = Node::leader(&[]);
    let p = node.addr.port();
    let cli = |args: &[&str]| redis_cli(p, args);
    assert_eq!(cli(&["--no-raw", "PING"]), "PONG\n");
    assert_eq!(cli(&["--no-raw", "ECHO", "hi"]), "\"hi\"\n");
    assert_eq!(cli(&["--no-raw", "SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["--no-raw", "GET", "greeting"]), "\"hello world\"\n");
    assert_eq!(cli(&["--raw", "GET", "greeting"]), "hello world\n");
    // A missing key: (nil) for a person, an empty line raw.
    assert_eq!(cli(&["--no-raw", "GET", "nope"]), "(nil)\n");
    assert_eq!(cli(&["--raw", "GET", "nope"]), "\n");
    assert_eq!(cli(&["--no-raw", "MSET", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(
        cli(&["--no-raw", "MGET", "a", "b", "nope"]),
        "1) \"1\"\n2) \"2\"\n3) (nil)\n"
    );
    assert_eq!(cli(&["--raw", "MGET", "a", "nope"]), "1\n\n");
    assert_eq!(
        cli(&["--no-raw", "EXISTS", "a", "b", "nope"]),
        "(integer) 2\n"
    );
    assert_eq!(cli(&["--no-raw", "DEL", "a", "nope"]), "(integer) 1\n");
    assert_eq!(cli(&["--no-raw", "SET", "n", "1", "NX"]), "OK\n");
    assert_eq!(cli(&["--no-raw", "SET", "n", "2", "NX"]), "(nil)\n");
    assert_eq!(cli(&["--no-raw", "SET", "n", "3", "GET"]), "\"1\"\n");
    assert_eq!(
        cli(&["--no-raw", "KEYS", "*"]),
        "1) \"b\"\n2) \"greeting\"\n3) \"n\"\n"
    );
    assert_eq!(cli(&["--no-raw", "DBSIZE"]), "(integer) 3\n");

    // A binary value, written over a plain socket: escaped, or raw.
    let mut c = Resp::connect(node.addr);
    assert_eq!(
        c.call_bytes(&[b"SET", b"bin", b"a\r\nb\x00\xff\x01"]),
        Value::ok()
    );
    assert_eq!(
        cli(&["--no-raw", "GET", "bin"]),
        "\"a\\r\\nb\\x00\\xff\\x01\"\n"
    );
    assert_eq!(cli(&["--raw", "GET", "bin"]), "a\r\nb\0\u{fffd}\u{1}\n");

    assert_eq!(
        cli(&["--no-raw", "CONFIG", "GET", "save"]),
        "1) \"save\"\n2) \"\"\n"
    );
    // INFO is printed as its text.
    assert_eq!(
        cli(&["--no-raw", "INFO", "keyspace"]),
        "# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n"
    );
    let role = cli(&["--no-raw", "ROLE"]);
    assert!(
        role.starts_with("1) \"master\"\n2) (integer) ") && role.ends_with("3) (empty array)\n"),
        "{role:?}"
    );
    // Errors as Redis's.
    for (args, want) in [
        (
            &["FOO", "x"][..],
            "ERR unknown command 'FOO', with args beginning with: 'x' ",
        ),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (
            &["SET", "k", "v", "EX", "10"],
            "ERR expiry is not supported",
        ),
        (&["SELECT", "1"], "ERR DB index is out of range"),
        (&["SET", "bad key", "v"], "ERR invalid key"),
    ] {
        let args = [&["--no-raw"][..], args].concat();
        assert_eq!(cli_any(p, &args), format!("(error) {want}\n"), "{args:?}");
    }

    // RESP3 (`-3` sends HELLO 3 first): the HELLO map and RESP3's nulls.
    let hello = cli(&["-3", "--no-raw", "HELLO", "3"]);
    let lines: Vec<&str> = hello.lines().collect();
    assert_eq!(lines.len(), 7, "{hello}");
    assert_eq!(lines[0], "1# \"server\" => \"keyval\"");
    assert_eq!(lines[1], "2# \"version\" => \"7.0.0\"");
    assert_eq!(lines[2], "3# \"proto\" => (integer) 3");
    assert!(lines[3].starts_with("4# \"id\" => (integer) "), "{hello}");
    assert_eq!(lines[4], "5# \"mode\" => \"standalone\"");
    assert_eq!(lines[5], "6# \"role\" => \"master\"");
    assert_eq!(lines[6], "7# \"modules\" => (empty array)");
    assert_eq!(cli(&["-3", "--no-raw", "GET", "nope"]), "(nil)\n");
    assert_eq!(
        cli(&["-3", "--no-raw", "MGET", "b", "nope"]),
        "1) \"2\"\n2) (nil)\n"
    );
    assert_eq!(
        cli(&["-3", "--no-raw", "CONFIG", "GET", "save"]),
        "1# \"save\" => \"\"\n"
    );
    assert_eq!(
        cli(&["-3", "--no-raw", "INFO", "keyspace"]),
        "# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n"
    );

    // KEYVAL.DIGEST is the line protocol's DIGEST.
    let digest = cli(&["--raw", "KEYVAL.DIGEST"]);
    assert_eq!(digest, format!("{}\n", node.client().call("DIGEST")));
    assert_eq!(cli(&["--no-raw", "QUIT"]), "OK\n");
}

#[test]
fn redis_cli_scan_returns_every_key() {
    let node = Node::leader(&[]);
    let p = node.addr.port();
    let pairs: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("user:{i}"), format!("u{i}")))
        .chain((0..1000).map(|i| (format!("item:{i}"), format!("i{i}"))))
        .collect();
    set_all(node.addr, &pairs);
    let all: BTreeSet<String> = pairs.iter().map(|(k, _)| k.clone()).collect();

    let out = redis_cli(p, &["--scan"]);
    let lines: Vec<&str> = out.lines().collect();
    let got: BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(got.len(), all.len(), "redis-cli --scan");
    assert_eq!(got, all, "redis-cli --scan");
    assert!(lines.len() >= all.len());

    for pattern in ["user:1*", "item:?", "item:[12]0", "*:99*"] {
        let out = redis_cli(p, &["--scan", "--pattern", pattern]);
        let got: BTreeSet<String> = out.lines().map(str::to_string).collect();
        let want: BTreeSet<String> = {
            // The same pattern through KEYS, which is checked byte for
            // byte in tests/redis.rs.
            let keys = redis_cli(p, &["--raw", "KEYS", pattern]);
            keys.lines().map(str::to_string).collect()
        };
        assert!(!want.is_empty(), "{pattern}");
        assert_eq!(got, want, "redis-cli --scan --pattern {pattern}");
    }
    // And a hand count for one of them.
    let out = redis_cli(p, &["--scan", "--pattern", "user:1*"]);
    assert_eq!(out.lines().collect::<BTreeSet<_>>().len(), 1111);
}

/// The password the gated node runs with.
const PASSWORD: &str = "tools-password-2187";

#[test]
fn redis_cli_and_redis_py_give_the_password() {
    let mut command = Command::new(keyval_bin());
    command.env("KEYVAL_PASSWORD", PASSWORD);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::spawn(dir.path(), &["--role", "leader"], command)
        .unwrap_or_else(|(status, log)| panic!("exited with {status}; log:\n{log}"));
    let p = node.addr.port();
    assert_eq!(
        cli_any(p, &["--no-raw", "PING"]),
        "(error) NOAUTH Authentication required.\n"
    );
    let auth = ["-a", PASSWORD, "--no-auth-warning", "--no-raw"];
    assert_eq!(
        redis_cli(p, &[&auth[..], &["SET", "k", "v"]].concat()),
        "OK\n"
    );
    assert_eq!(
        redis_cli(p, &[&auth[..], &["-3", "GET", "k"]].concat()),
        "\"v\"\n"
    );
    let user = ["--user", "default", "--pass", PASSWORD, "--no-auth-warning"];
    assert_eq!(redis_cli(p, &[&user[..], &["GET", "k"]].concat()), "v\n");
    let wrong = run(Command::new(tool("redis-cli")).args([
        "-p",
        &p.to_string(),
        "-a",
        "wrong-guess",
        "--no-auth-warning",
        "PING",
    ]));
    assert!(
        wrong
            .stderr
            .contains("WRONGPASS invalid username-password pair or user is disabled."),
        "{wrong:?}"
    );

    let out = python_script(
        r#"
import sys, redis
port, password = int(sys.argv[1]), sys.argv[2]
assert redis.Redis(host="127.0.0.1", port=port, password=password).get("k") == b"v"
try:
    redis.Redis(host="127.0.0.1", port=port).get("k")
    raise AssertionError("no error without the password")
except redis.exceptions.AuthenticationError as e:
    assert str(e) == "Authentication required.", str(e)
try:
    redis.Redis(host="127.0.0.1", port=port, password="wrong-guess").ping()
    raise AssertionError("no error with a wrong password")
except redis.exceptions.ResponseError as e:
    assert str(e) == "WRONGPASS invalid username-password pair or user is disabled.", str(e)
print("ok")
"#,
        &[&p.to_string(), PASSWORD],
    );
    assert_eq!(out, "ok\n");
    let log = node.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the log");
}

// ---------------------------------------------------------------------------
// redis-py

const PY_DATA: &str = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=20)
assert r.ping() is True

# Binary-safe values, both ways.
values = {
    b"crlf": b"a\r\nb",
    b"nul": b"\x00",
    b"nuls": b"\x00\x00a\x00",
    b"high": b"\xff\xfe\x80",
    b"empty": b"",
    b"every": bytes(range(256)),
    b"mib": bytes(range(256)) * 4096,
}
for k, v in values.items():
    assert r.set(k, v) is True, k
for k, v in values.items():
    got = r.get(k)
    assert got == v, (k, len(v), None if got is None else len(got))
assert r.get(b"missing") is None
assert r.exists(*values) == len(values)

# A pipeline (without MULTI): every reply, in order.
p = r.pipeline(transaction=False)
for i in range(500):
    p.set(f"p:{i}", f"v{i}")
    p.get(f"p:{i}")
    p.echo(f"e{i}")
out = p.execute()
want = []
for i in range(500):
    want += [True, f"v{i}".encode(), f"e{i}".encode()]
bad = [(i, a, b) for i, (a, b) in enumerate(zip(out, want)) if a != b]
assert len(out) == len(want) and not bad, bad[:5]

# MSET and MGET.
pairs = {f"m:{i}": f"{i}" * 3 for i in range(100)}
assert r.mset(pairs) is True
got = r.mget(list(pairs) + ["m:missing"])
assert got == [v.encode() for v in pairs.values()] + [None], got[:5]
assert r.delete("m:0", "m:1", "m:missing") == 2

# SET's options.
assert r.set("nx", "1", nx=True) is True
assert r.set("nx", "2", nx=True) is None
assert r.set("xx-missing", "1", xx=True) is None
assert r.set("nx", "3", get=True) == b"1"
assert r.get("nx") == b"3"

# scan_iter finds every key; KEYS agrees.
keys = {f"scan:{i}".encode() for i in range(2000)}
p = r.pipeline(transaction=False)
for k in keys:
    p.set(k, b"v")
p.execute()
seen = set(r.scan_iter(match="scan:*", count=100))
assert seen == keys, (len(seen), len(keys))
assert set(r.keys("scan:1*")) == {k for k in keys if k.startswith(b"scan:1")}

# INFO as redis-py parses it.
n = r.dbsize()
info = r.info()
assert info["redis_version"] == "7.0.0", info["redis_version"]
assert info["role"] == "master", info["role"]
assert info["aof_enabled"] == 1
assert info["db0"] == {"keys": n, "expires": 0, "avg_ttl": 0}, info["db0"]
assert r.info("keyspace") == {"db0": {"keys": n, "expires": 0, "avg_ttl": 0}}

# The connection's own commands.
assert r.echo("hi") == b"hi"
assert r.client_setname("py") is True
assert r.client_getname() in ("py", b"py")
assert isinstance(r.client_id(), int)
assert r.config_get("appendonly") == {"appendonly": "yes"}, r.config_get("appendonly")
assert r.wait(0, 0) == 0
print("ok")
"#;

const PY_ERRORS: &str = r#"
import sys, redis
from redis.exceptions import ResponseError
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=20)

def error(f, *args, **kw):
    try:
        f(*args, **kw)
    except ResponseError as e:
        return str(e)
    raise AssertionError(f"no error from {f.__name__}{args}{kw}")

cases = [
    (error(r.execute_command, "FOO", "x"), "unknown command 'FOO', with args beginning with: 'x' "),
    (error(r.execute_command, "GET"), "wrong number of arguments for 'get' command"),
    (error(r.set, "k", "v", ex=10), "expiry is not supported"),
    (error(r.set, "k", "v", px=10), "expiry is not supported"),
    (error(r.set, "k", "v", keepttl=True), "expiry is not supported"),
    (error(r.execute_command, "SET", "bad key", "v"), "invalid key"),
    (error(r.execute_command, "SELECT", 1), "DB index is out of range"),
    (error(r.execute_command, "WAIT", 0, -1), "timeout is negative"),
    (error(r.lpush, "list", "x"), "unknown command 'LPUSH', with args beginning with: 'list' 'x' "),
    (error(r.execute_command, "HELLO", 4), "NOPROTO unsupported protocol version"),
]
for got, want in cases:
    assert got == want, (got, want)
# CONFIG SET is an error too; nothing of the above was written, and the
# connection goes on.
error(r.config_set, "save", "")
assert r.exists("k", "list") == 0
assert r.ping() is True
print("ok")
"#;

#[test]
fn redis_py_round_trips_binary_values_pipelines_and_scans() {
    let node = Node::leader(&[]);
    let port = node.addr.port().to_string();
    assert_eq!(python_script(PY_DATA, &[&port]), "ok\n");
    // What redis-py wrote, the line protocol's DIGEST covers byte for
    // byte, as KEYVAL.DIGEST does.
    let mut c = Resp::connect(node.addr);
    let digest = c.call(&["KEYVAL.DIGEST"]);
    assert_eq!(digest.text(), node.client().call("DIGEST"));
}

#[test]
fn redis_py_raises_response_errors_with_redis_texts() {
    let node = Node::leader(&[]);
    let port = node.addr.port().to_string();
    assert_eq!(python_script(PY_ERRORS, &[&port]), "ok\n");
}

#[test]
fn clients_on_a_follower_read_and_get_readonly() {
    let leader = leader_on(free_port(), &[]);
    let follower = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    let (lp, fp) = (leader.addr.port(), follower.addr.port());
    assert_eq!(redis_cli(lp, &["--no-raw", "SET", "k", "v"]), "OK\n");
    wait_synced(&leader, &[&follower]);
    assert_eq!(redis_cli(fp, &["--no-raw", "GET", "k"]), "\"v\"\n");
    assert_eq!(
        cli_any(fp, &["--no-raw", "SET", "k", "x"]),
        "(error) READONLY You can't write against a read only replica.\n"
    );
    let role = redis_cli(fp, &["--no-raw", "ROLE"]);
    assert!(
        role.starts_with(&format!(
            "1) \"slave\"\n2) \"127.0.0.1\"\n3) (integer) {lp}\n4) \"connected\"\n"
        )),
        "{role:?}"
    );
    let out = python_script(
        r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=20)
assert r.get("k") == b"v"
for write in (lambda: r.set("k", "x"), lambda: r.mset({"a": 1}), lambda: r.delete("k")):
    try:
        write()
        raise AssertionError("a write on a follower was not refused")
    except redis.exceptions.ReadOnlyError as e:
        assert str(e) == "You can't write against a read only replica.", str(e)
assert r.get("k") == b"v"
assert r.info("replication")["role"] == "slave"
assert r.info("replication")["master_link_status"] == "up"
print("ok")
"#,
        &[&fp.to_string()],
    );
    assert_eq!(out, "ok\n");
}

// ---------------------------------------------------------------------------
// redis-benchmark

#[test]
fn redis_benchmark_runs_set_and_get_without_errors() {
    let node = Node::leader(&[]);
    let port = node.addr.port().to_string();
    for pipeline in ["1", "16"] {
        let done = run(Command::new(tool("redis-benchmark")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "10",
            "-P",
            pipeline,
            "-q",
        ]));
        let all = format!("{}{}", done.stdout, done.stderr);
        assert!(
            done.status.is_some_and(|s| s.success()),
            "-P {pipeline}: {:?}\n{all}",
            done.status
        );
        for needle in ["ERR", "rror", "WARNING"] {
            assert!(
                !all.contains(needle),
                "-P {pipeline}: {needle:?} in:\n{all}"
            );
        }
        for test in ["SET: ", "GET: "] {
            assert!(
                all.contains(test) && all.contains("requests per second"),
                "-P {pipeline}: no {test:?} result in:\n{all}"
            );
        }
    }
    // Its key holds a value of its 3 bytes.
    let mut c = Resp::connect(node.addr);
    let value = c.call(&["GET", "key:__rand_int__"]);
    assert_eq!(value.bytes().len(), 3, "{value:?}");
}

// ---------------------------------------------------------------------------
// prometheus-redis-exporter

/// GET `path` from `127.0.0.1:port` over HTTP/1.0: the body of a 200
/// answer, `None` when nothing listens yet or the answer is another.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then(|| body.to_string())
}

/// The value of the sample `name` (with its labels, as printed) in a
/// Prometheus text page.
fn sample(page: &str, name: &str) -> Option<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
}

/// The labels of the first sample of metric `name`.
fn labels<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('{')?.split_once('}'))
        .map(|(labels, _)| labels)
}

#[test]
fn prometheus_redis_exporter_reads_keyvals_info() {
    let leader = leader_on(free_port(), &[]);
    let fport = free_port();
    let follower = start_follower(leader.addr.port(), 2, &["--port", &fport.to_string()]);
    wait_followers(&leader, 1);
    let (lp, fp) = (leader.addr.port(), follower.addr.port());
    let pairs: Vec<(String, String)> = (0..5).map(|i| (format!("m:{i}"), "v".into())).collect();
    set_all(leader.addr, &pairs);
    wait_synced(&leader, &[&follower]);
    let seq = common::cluster::seq(&leader);
    // The leader has the follower's ack of it.
    let mut c = Resp::connect(leader.addr);
    eventually("the leader to count the follower's ack", || {
        let info = c.call(&["INFO", "replication"]);
        let text = String::from_utf8_lossy(info.bytes()).into_owned();
        text.contains(&format!(",offset={seq},")).then_some(())
    });

    let eport = free_port();
    let mut exporter = Command::new(tool("prometheus-redis-exporter"));
    exporter
        .arg(format!("--redis.addr=redis://127.0.0.1:{lp}"))
        .arg(format!("--web.listen-address=127.0.0.1:{eport}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut exporter).expect("spawn the exporter");
    let log = Output::capture(guard.child_mut().expect("running"), 200);
    let page = eventually("the exporter to answer", || http_get(eport, "/metrics"));
    let show = |page: &str| format!("{page}\nexporter log:\n{}", log.text());

    assert_eq!(
        sample(&page, "redis_up").as_deref(),
        Some("1"),
        "{}",
        show(&page)
    );
    let clients: u64 = sample(&page, "redis_connected_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no redis_connected_clients: {}", show(&page)));
    assert!(clients >= 1);
    assert_eq!(
        sample(&page, "redis_db_keys{db=\"db0\"}").as_deref(),
        Some("5"),
        "{}",
        show(&page)
    );
    assert_eq!(sample(&page, "redis_aof_enabled").as_deref(), Some("1"));
    assert_eq!(
        sample(&page, "redis_connected_slaves").as_deref(),
        Some("1")
    );
    let info = labels(&page, "redis_instance_info").unwrap_or_else(|| panic!("{}", show(&page)));
    for label in [
        "redis_version=\"7.0.0\"".to_string(),
        "role=\"master\"".to_string(),
        format!("tcp_port=\"{lp}\""),
        format!("process_id=\"{}\"", leader.pid()),
    ] {
        assert!(info.contains(&label), "{label} not in {info}");
    }
    // The follower, from the leader's slave0 line.
    let name =
        format!("redis_connected_slave_offset_bytes{{slave_ip=\"127.0.0.1\",slave_port=\"{fp}\",slave_state=\"online\"}}");
    assert_eq!(
        sample(&page, &name),
        Some(seq.to_string()),
        "{}",
        show(&page)
    );

    // The follower, scraped through the exporter's /scrape.
    let page = http_get(eport, &format!("/scrape?target=redis://127.0.0.1:{fp}"))
        .unwrap_or_else(|| panic!("no /scrape answer; log:\n{}", log.text()));
    assert_eq!(
        sample(&page, "redis_up").as_deref(),
        Some("1"),
        "{}",
        show(&page)
    );
    let link = format!("redis_master_link_up{{master_host=\"127.0.0.1\",master_port=\"{lp}\"}}");
    assert_eq!(
        sample(&page, &link).as_deref(),
        Some("1"),
        "{}",
        show(&page)
    );
    assert_eq!(
        sample(&page, "redis_db_keys{db=\"db0\"}").as_deref(),
        Some("5")
    );
    let info = labels(&page, "redis_instance_info").unwrap_or_else(|| panic!("{}", show(&page)));
    assert!(info.contains("role=\"slave\""), "{info}");
    guard.kill();
}

// ---------------------------------------------------------------------------
// twemproxy

#[test]
fn twemproxy_shards_keys_over_two_leaders_with_the_example_config() {
    let a = Node::leader(&[]);
    let b = Node::leader(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/twemproxy.yml");
    let text = std::fs::read_to_string(&example).expect("read conf/twemproxy.yml");
    let (proxy, stats) = (free_port(), free_port());
    let mut conf = text.clone();
    for (from, to) in [
        ("127.0.0.1:22121", format!("127.0.0.1:{proxy}")),
        (
            "127.0.0.1:6001:1 keyval-a",
            format!("127.0.0.1:{}:1 keyval-a", a.addr.port()),
        ),
        (
            "127.0.0.1:6002:1 keyval-b",
            format!("127.0.0.1:{}:1 keyval-b", b.addr.port()),
        ),
    ] {
        assert!(
            conf.contains(from),
            "conf/twemproxy.yml no longer has {from:?}"
        );
        conf = conf.replace(from, &to);
    }
    for setting in [
        "redis: true",
        "hash: fnv1a_64",
        "distribution: ketama",
        "auto_eject_hosts: false",
    ] {
        assert!(
            text.contains(setting),
            "conf/twemproxy.yml lacks {setting:?}"
        );
    }
    let conf_path = dir.path().join("twemproxy.yml");
    std::fs::write(&conf_path, conf).expect("write the config");
    let nutcracker = tool("nutcracker");
    run_ok(
        Command::new(&nutcracker)
            .arg("-t")
            .arg("-c")
            .arg(&conf_path),
    );

    let log_path = dir.path().join("nutcracker.log");
    let mut command = Command::new(&nutcracker);
    command
        .arg("-c")
        .arg(&conf_path)
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1", "-o"])
        .arg(&log_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(&mut command).expect("spawn nutcracker");
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy));
    let nc_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually("nutcracker to listen", || {
        TcpStream::connect_timeout(&proxy_addr, Duration::from_millis(200)).ok()
    });

    // 200 keys written and read back through the proxy, pipelined.
    let mut c = Resp::connect(proxy_addr);
    let keys: Vec<String> = (0..200).map(|i| format!("tw:{i}")).collect();
    let mut requests = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        requests.extend(cmd(&["SET", key, &format!("v{i}")]));
    }
    c.send_raw(&requests);
    c.expect_reply(&b"+OK\r\n".repeat(keys.len()), "200 SETs through twemproxy");
    let mut requests = Vec::new();
    let mut want = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        requests.extend(cmd(&["GET", key]));
        let v = format!("v{i}");
        want.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
    c.send_raw(&requests);
    c.expect_reply(&want, "200 GETs through twemproxy");
    // MGET and DEL of several keys are split per leader and merged.
    let some: Vec<&str> = keys[..20].iter().map(String::as_str).collect();
    let reply = c.call(&[&["MGET"][..], &some].concat());
    let values: Vec<Value> = (0..20).map(|i| Value::bulk(&format!("v{i}"))).collect();
    assert_eq!(reply, Value::Array(values), "log:\n{}", nc_log());

    // Each leader holds a share; together, every key once.
    let share = |node: &Node| -> BTreeSet<String> {
        let mut c = Resp::connect(node.addr);
        c.call(&["KEYS", "tw:*"])
            .items()
            .iter()
            .map(|k| k.text())
            .collect()
    };
    let (on_a, on_b) = (share(&a), share(&b));
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "{} and {} keys",
        on_a.len(),
        on_b.len()
    );
    assert!(on_a.is_disjoint(&on_b));
    let union: BTreeSet<String> = on_a.union(&on_b).cloned().collect();
    assert_eq!(union, keys.iter().cloned().collect::<BTreeSet<_>>());

    // A hash tag keeps keys together, on one leader.
    assert_eq!(
        c.call(&[
            "MSET",
            "{user:1}:name",
            "ann",
            "{user:1}:mail",
            "ann@example"
        ]),
        Value::ok()
    );
    let tagged = |node: &Node| {
        let mut c = Resp::connect(node.addr);
        c.call(&["KEYS", "{user:1}*"]).items().len()
    };
    let (ta, tb) = (tagged(&a), tagged(&b));
    assert!((ta, tb) == (2, 0) || (ta, tb) == (0, 2), "{ta} and {tb}");
    let deleted = c.call_bytes(&[&b"DEL"[..], b"tw:0", b"tw:1", b"tw:2", b"tw:3"]);
    assert_eq!(deleted, Value::Int(4), "log:\n{}", nc_log());
    guard.kill();
}
