//! Operating the real binary (`docs/protocol.md`): graceful stop on SIGTERM
//! and SIGINT (in-flight pipelined replies delivered, exit 0), the systemd
//! `NOTIFY_SOCKET` handshake, bad flags (exit 2, one line), a follower
//! without a secret, configuration through `KEYVAL_*` environment variables
//! only, and the lock that keeps a second process off a data directory.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{keyval_bin, run_to_exit, wait_until, Client, Node, SECRET, WAIT};

/// The send queue and receive queue (unacknowledged and unread bytes) of
/// the IPv4 loopback TCP socket from `local` to `remote`, per
/// `/proc/net/tcp`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{:04X}", local.port());
    let remote = format!("0100007F:{:04X}", remote.port());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

/// Waits until everything `client` sent has been read by the server.
fn wait_until_server_read_all(node: &Node, client: &Client) {
    let mine = client.stream.local_addr().expect("local addr");
    wait_until("the server to read the whole batch", || {
        let sent = tcp_queues(mine, node.addr).map(|(tx, _)| tx);
        let unread = tcp_queues(node.addr, mine).map(|(_, rx)| rx);
        sent == Some(0) && unread == Some(0)
    });
}

/// Asserts that the node no longer accepts connections: a connect is
/// refused, or closed at once without a reply (not left hanging).
fn assert_not_accepting(node: &Node) {
    let Ok(mut stream) = TcpStream::connect(node.addr) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let _ = stream.write_all(b"HELLO CLIENT\n");
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("a connection made after SIGTERM hangs: {e}"),
    }
    assert!(
        reply.is_empty(),
        "a connection was served after SIGTERM: {:?}",
        String::from_utf8_lossy(&reply)
    );
}

/// Appends a `PUT key value` record with sequence number `seq` to a log
/// (layout in `src/wal/record.rs`).
fn append_put_record(log: &Path, seq: u64, key: &str, value: &str) {
    let mut body = seq.to_le_bytes().to_vec();
    body.push(1);
    body.extend_from_slice(&u16::try_from(key.len()).expect("key").to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value.as_bytes());
    let mut record = u32::try_from(body.len())
        .expect("body")
        .to_le_bytes()
        .to_vec();
    record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    record.extend_from_slice(&body);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("open log");
    file.write_all(&record).expect("append record");
}

#[test]
fn sigterm_answers_a_pipelined_batch_it_has_read_then_exits_0() {
    // The batch ends with a GET of 8 MB: more than the socket buffers take
    // while the client does not read, so part of the replies is still in
    // the server when the signal comes. (The GET is last, so the server
    // has executed the whole batch by then; the next test covers requests
    // held back by output backpressure.) The value goes straight into the
    // log, which is quicker than a PUT this big.
    let mut node = Node::leader(&[]);
    node.kill9();
    let big = "B".repeat(8 << 20);
    append_put_record(&node.data_dir.join("leader.log"), 1, "big", &big);
    node.restart();
    let mut c = node.client();
    let mut idle = node.client();
    assert_eq!(idle.call("PING"), "PONG");

    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!("PUT p{i} pipelined {i}\n"));
    }
    batch.push_str("PING\nGET big\n");
    c.send_raw(batch.as_bytes());
    wait_until_server_read_all(&node, &c);
    node.signal("TERM");
    let signalled = Instant::now();

    // The idle client is closed at once; nobody new gets in.
    assert!(idle.is_closed(), "the idle client was not closed");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "closing an idle client took {:?}",
        signalled.elapsed()
    );
    assert_not_accepting(&node);
    // The batch client gets every reply, in order, then the end.
    for i in 0..50 {
        assert_eq!(c.try_line().as_deref(), Some("OK"), "reply to PUT p{i}");
    }
    assert_eq!(c.try_line().as_deref(), Some("PONG"));
    let got = c.try_line();
    assert!(
        got.as_deref() == Some(big.as_str()),
        "GET big: {:?} bytes",
        got.map(|g| g.len())
    );
    assert!(c.is_closed(), "the connection stayed open after shutdown");
    let status = node.wait_exit();
    assert!(status.success(), "exit status {status}");

    // What was answered OK is on disk.
    node.restart();
    let mut c = node.client();
    for i in 0..50 {
        assert_eq!(c.call(&format!("GET p{i}")), format!("pipelined {i}"));
    }
    assert_eq!(c.info_field("seq"), "51");
}

#[test]
fn sigterm_answers_a_batch_it_has_read_even_under_output_backpressure() {
    let mut node = Node::leader(&[]);
    let big = "B".repeat(300_000);
    let mut c = node.client();
    assert_eq!(c.call(&format!("PUT big {big}")), "OK");
    // 9 MB of replies: more than the socket buffers and the server's 1 MB
    // output high-water mark, so the server stops executing the batch
    // until the client reads. It has read every byte of it, though.
    let mut batch = String::new();
    for i in 0..30 {
        batch.push_str(&format!("PUT p{i} pipelined {i}\nGET big\n"));
    }
    c.send_raw(batch.as_bytes());
    wait_until_server_read_all(&node, &c);
    node.signal("TERM");
    for i in 0..30 {
        assert_eq!(c.try_line().as_deref(), Some("OK"), "reply to PUT p{i}");
        let got = c.try_line();
        assert!(got.as_deref() == Some(big.as_str()), "reply to GET {i}");
    }
    assert!(c.is_closed());
    assert!(node.wait_exit().success());
    node.restart();
    assert_eq!(node.info_field("seq"), "31");
}

#[test]
fn sigint_stops_gracefully_with_exit_0() {
    let mut node = Node::leader(&[]);
    let mut c = node.client();
    assert_eq!(c.call("PUT before sigint"), "OK");
    node.signal("INT");
    let signalled = Instant::now();
    assert!(c.is_closed(), "the client was not closed");
    let status = node.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "stopping an idle node took {:?}",
        signalled.elapsed()
    );
    node.restart();
    assert_eq!(node.client().call("GET before"), "sigint");
}

/// Receives one datagram within [`WAIT`].
fn recv_text(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a datagram on NOTIFY_SOCKET");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_once_serving_and_stopping_on_sigterm() {
    let temp = tempfile::tempdir().expect("tempdir");
    let sock_path = temp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut command = Command::new(keyval_bin());
    command.env("NOTIFY_SOCKET", &sock_path);
    let data = temp.path().join("data");
    let mut node = Node::spawn(&data, &["--role", "leader"], command)
        .unwrap_or_else(|(status, log)| panic!("start: {status}\n{log}"));

    assert_eq!(recv_text(&sock), "READY=1");
    let mut c = node.client();
    assert_eq!(c.call("PUT k v"), "OK");
    node.signal("TERM");
    assert_eq!(recv_text(&sock), "STOPPING=1");
    assert!(node.wait_exit().success());
}

#[test]
fn notify_socket_may_be_abstract() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "keyval-test-notify-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    let temp = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(keyval_bin());
    command.env("NOTIFY_SOCKET", format!("@{name}"));
    let node = Node::spawn(temp.path(), &["--role", "leader"], command)
        .unwrap_or_else(|(status, log)| panic!("start: {status}\n{log}"));
    assert_eq!(recv_text(&sock), "READY=1");
    assert_eq!(node.client().call("PING"), "PONG");
}

/// Runs `keyval` with `args` on port 0 in `dir`, without the test secret
/// unless `secret` is given; expects exit status 2 and exactly one
/// non-empty stderr line, which it returns.
fn expect_usage_error(dir: &Path, args: &[&str], secret: Option<&str>) -> String {
    let mut command = Command::new(keyval_bin());
    command
        .args(args)
        .args(["--port", "0", "--data-dir"])
        .arg(dir)
        .env_remove("KEYVAL_SECRET")
        .env_remove("KEYVAL_SECRET_FILE")
        .env_remove("NOTIFY_SOCKET");
    if let Some(secret) = secret {
        command.env("KEYVAL_SECRET", secret);
    }
    let (status, stderr) = run_to_exit(&mut command);
    assert_eq!(
        status.code(),
        Some(2),
        "{args:?}: status {status}\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && !lines[0].trim().is_empty() && stderr.ends_with('\n'),
        "{args:?}: not exactly one line on stderr:\n{stderr}"
    );
    assert!(
        fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
        "{args:?}: a refused start left files in the data dir"
    );
    lines[0].to_string()
}

#[test]
fn invalid_flag_values_exit_2_with_one_line_naming_the_problem() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let leader_at = ["--leader_host", "127.0.0.1", "--leader_port", "5000"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--role", "follower"], "--id"),
        (
            [&["--role", "follower", "--id", "1"][..], &leader_at].concat(),
            "--id",
        ),
        (vec!["--role", "follower", "--id", "2"], "--leader_host"),
        (vec!["--role", "leader", "--id", "3"], "--id"),
        (
            vec!["--role", "leader", "--max-line-bytes", "1"],
            "--max-line-bytes",
        ),
        (
            vec!["--role", "leader", "--compact-ratio", "0.5"],
            "--compact-ratio",
        ),
        (
            vec!["--role", "leader", "--max-clients", "0"],
            "--max-clients",
        ),
        (
            vec!["--role", "leader", "--sync-followers", "11"],
            "--sync-followers",
        ),
        (
            vec!["--role", "leader", "--leader_host", "h"],
            "--leader_host",
        ),
    ];
    for (args, names) in cases {
        let line = expect_usage_error(&dir, &args, Some(SECRET));
        assert!(
            line.contains(names),
            "{args:?}: {line:?} does not name {names}"
        );
    }
}

#[test]
fn unparseable_flags_exit_2_with_one_line_naming_the_problem() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    for (args, names) in [
        (&["--role", "boss"][..], "boss"),
        (&["--role", "leader", "--port", "abc"], "abc"),
        (&["--role", "leader", "--port", "70000"], "70000"),
        (&["--role", "leader", "--fsync", "sometimes"], "sometimes"),
        (
            &["--role", "leader", "--bind", "localhost:1"],
            "localhost:1",
        ),
        (&["--role", "leader", "--frobnicate"], "--frobnicate"),
    ] {
        let line = expect_usage_error(&dir, args, Some(SECRET));
        assert!(
            line.contains(names),
            "{args:?}: {line:?} does not name {names}"
        );
    }
}

#[test]
fn a_missing_role_exits_2_with_one_line_naming_it() {
    let temp = tempfile::tempdir().expect("tempdir");
    let line = expect_usage_error(&temp.path().join("data"), &[], Some(SECRET));
    assert!(line.contains("--role"), "{line:?} does not name --role");
}

#[test]
fn a_follower_without_a_secret_exits_2() {
    let temp = tempfile::tempdir().expect("tempdir");
    let leader = Node::leader(&[]);
    let port = leader.addr.port().to_string();
    let follower = [
        "--role",
        "follower",
        "--id",
        "2",
        "--leader_host",
        "127.0.0.1",
        "--leader_port",
        &port,
    ];
    let dir = temp.path().join("data");
    let line = expect_usage_error(&dir, &follower, None);
    assert!(line.contains("secret"), "{line:?}");
    expect_usage_error(&dir, &follower, Some(""));
    let with_file = |file: &Path| -> Vec<String> {
        let file = file.to_str().expect("utf8 path");
        follower
            .iter()
            .copied()
            .chain(["--secret-file", file])
            .map(String::from)
            .collect()
    };
    let empty = temp.path().join("empty-secret");
    fs::write(&empty, "").expect("write");
    expect_usage_error(&dir, &as_strs(&with_file(&empty)), None);
    let missing = temp.path().join("no-such-file");
    let line = expect_usage_error(&dir, &as_strs(&with_file(&missing)), None);
    assert!(line.contains("no-such-file"), "{line:?}");

    // The same follower with the secret starts: the secret was the problem.
    let secret_file = temp.path().join("secret");
    fs::write(&secret_file, format!("{SECRET}\n")).expect("write");
    let node = Node::try_start_in(&dir, &as_strs(&with_file(&secret_file)))
        .unwrap_or_else(|(status, log)| panic!("follower with a secret: {status}\n{log}"));
    assert_eq!(node.info_field("role"), "follower");
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn configuration_through_environment_variables_only() {
    let temp = tempfile::tempdir().expect("tempdir");
    let data = temp.path().join("from-env");
    // `sh` drops the arguments the helper adds, so keyval gets none.
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"exec "$0""#, keyval_bin()])
        .env("KEYVAL_ROLE", "leader")
        .env("KEYVAL_PORT", "0")
        .env("KEYVAL_BIND", "127.0.0.1")
        .env("KEYVAL_DATA_DIR", &data)
        .env("KEYVAL_MAX_CLIENTS", "1")
        .env("KEYVAL_MAX_LINE_BYTES", "64")
        .env("KEYVAL_FSYNC", "everysec");
    let node = Node::spawn(&data, &[], command)
        .unwrap_or_else(|(status, log)| panic!("start from env: {status}\n{log}"));
    let cmdline = fs::read(format!("/proc/{}/cmdline", node.pid())).expect("cmdline");
    assert_eq!(
        cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).count(),
        1,
        "keyval got arguments: {:?}",
        String::from_utf8_lossy(&cmdline)
    );

    let mut c = node.client();
    assert_eq!(c.info_field("role"), "leader");
    assert_eq!(c.call("PUT k v"), "OK");
    assert!(data.join("leader.log").exists(), "KEYVAL_DATA_DIR ignored");
    assert_eq!(
        c.call(&format!("PUT k {}", "x".repeat(100))),
        "LINE_TOO_LONG",
        "KEYVAL_MAX_LINE_BYTES ignored"
    );
    let mut second = Client::connect(node.addr);
    assert_eq!(second.line(), "TOO_MANY_CONNECTIONS");
    assert!(second.is_closed());
    wait_until("everysec to fsync", || c.info_field("durable_seq") == "1");
    assert_eq!(c.call("PING"), "PONG");
}

#[test]
fn a_flag_overrides_its_environment_variable() {
    let mut command = Command::new(keyval_bin());
    command.env("KEYVAL_MAX_CLIENTS", "1");
    let temp = tempfile::tempdir().expect("tempdir");
    let node = Node::spawn(
        temp.path(),
        &["--role", "leader", "--max-clients", "2"],
        command,
    )
    .unwrap_or_else(|(status, log)| panic!("start: {status}\n{log}"));
    let _first = node.client();
    let mut second = node.client();
    assert_eq!(second.call("PING"), "PONG");
    let mut third = Client::connect(node.addr);
    assert_eq!(third.line(), "TOO_MANY_CONNECTIONS");
}

#[test]
fn a_bad_environment_value_exits_2_with_one_line() {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(keyval_bin());
    command
        .env("KEYVAL_ROLE", "leader")
        .env("KEYVAL_PORT", "0")
        .env("KEYVAL_DATA_DIR", temp.path().join("data"))
        .env("KEYVAL_MAX_LINE_BYTES", "1");
    let (status, stderr) = run_to_exit(&mut command);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("max-line-bytes"), "{stderr}");
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let mut first = Node::leader(&[]);
    let dir = first.data_dir.clone();
    let mut c = first.client();
    assert_eq!(c.call("PUT mine 1"), "OK");
    let log_len = fs::metadata(dir.join("leader.log")).expect("stat").len();

    let (status, log) = match Node::try_start_in(&dir, &["--role", "leader"]) {
        Ok(second) => panic!("a second process started:\n{}", second.log_text()),
        Err(failure) => failure,
    };
    assert!(
        !status.success() && status.code().is_some(),
        "status {status}"
    );
    assert!(
        log.contains("leader.log"),
        "the refusal names no file:\n{log}"
    );

    // The first node is untouched and still serving.
    assert_eq!(c.call("GET mine"), "1");
    assert_eq!(c.call("PUT mine 2"), "OK");
    assert!(fs::metadata(dir.join("leader.log")).expect("stat").len() > log_len);

    // Once it stops, the directory is free again.
    first.signal("TERM");
    assert!(first.wait_exit().success());
    let again = Node::start_in(&dir, &["--role", "leader"]);
    assert_eq!(again.client().call("GET mine"), "2");
}
