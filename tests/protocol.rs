//! The client protocol of `docs/protocol.md` against the real binary, byte
//! for byte: every command and error row, pipelining, half-close, many
//! clients, and the memory bound for clients that do not read.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use common::{wait_until, Client, Node, WAIT};

/// A table of requests and the exact replies, in one session.
fn session(node: &Node, rows: &[(&str, &str)]) {
    let mut c = node.client();
    for (request, reply) in rows {
        assert_eq!(c.call(request), *reply, "request {request:?}");
    }
}

#[test]
fn every_command_row() {
    let node = Node::leader(&[]);
    session(
        &node,
        &[
            ("PUT user:1 Alice Smith", "OK"),
            ("GET user:1", "Alice Smith"),
            ("PUT user:1  two  spaces ", "OK"),
            ("GET user:1", " two  spaces "),
            ("GET nope", "NOT_FOUND"),
            ("DELETE user:1", "OK"),
            ("DELETE user:1", "NOT_FOUND"),
            ("GET user:1", "NOT_FOUND"),
            ("PING", "PONG"),
            ("ping", "PONG"),
            ("put k v", "OK"),
            ("Get k", "v"),
            ("PUT K V2", "OK"),
            ("GET k", "v"),
            ("GET K", "V2"),
        ],
    );
}

#[test]
fn malformed_requests_get_invalid_command_and_keep_the_connection() {
    let node = Node::leader(&[]);
    let long_key = "k".repeat(1025);
    let put_long = format!("PUT {long_key} v");
    session(
        &node,
        &[
            ("FROB", "INVALID_COMMAND"),
            ("", "INVALID_COMMAND"),
            ("PUT", "INVALID_COMMAND"),
            ("PUT k", "INVALID_COMMAND"),
            ("PUT k ", "INVALID_COMMAND"),
            ("GET", "INVALID_COMMAND"),
            ("GET a b", "INVALID_COMMAND"),
            ("GET a\tb", "INVALID_COMMAND"),
            ("DELETE", "INVALID_COMMAND"),
            ("PING extra", "INVALID_COMMAND"),
            (&put_long, "INVALID_COMMAND"),
            ("HELLO CLIENT", "INVALID_COMMAND"),
            ("PROMOTE", "INVALID_COMMAND"),
            ("PING", "PONG"),
        ],
    );
}

#[test]
fn carriage_returns_are_ignored() {
    let node = Node::leader(&[]);
    let mut c = Client::connect(node.addr);
    c.send_raw(b"HELLO CLIENT\r\nPUT a 1\r\nGET a\r\n");
    assert_eq!(c.line(), "HELLO SERVER");
    assert_eq!(c.line(), "OK");
    assert_eq!(c.line(), "1");
}

#[test]
fn keys_lists_matches_in_byte_order() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    for k in ["user:2", "user:10", "admin", "user:1"] {
        assert_eq!(c.call(&format!("PUT {k} x")), "OK");
    }
    c.send("KEYS user:");
    assert_eq!(c.list(), ["user:1", "user:10", "user:2"]);
    c.send("KEYS");
    assert_eq!(c.list(), ["admin", "user:1", "user:10", "user:2"]);
    c.send("KEYS zzz");
    assert!(c.list().is_empty());
}

#[test]
fn info_has_the_spec_fields() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    assert_eq!(c.call("PUT a 1"), "OK");
    assert_eq!(c.call("PUT b 2"), "OK");
    let info = c.info();
    let field = |name: &str| {
        info.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("role"), Some("leader"));
    assert_eq!(field("id"), Some("1"));
    assert_eq!(field("seq"), Some("2"));
    assert_eq!(field("keys"), Some("2"));
    assert_eq!(field("followers"), Some("0"));
    assert_eq!(field("history").map(str::len), Some(32));
    assert!(field("log_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|b| b > 48));
}

/// `run_id` is drawn once per process: every `INFO` of one process shows
/// the same, and the next process on the same data dir (after a clean
/// stop or a kill -9) a new one.
#[test]
fn run_id_is_one_per_process_start() {
    let mut node = Node::leader(&[]);
    let run_id = |node: &Node| {
        let id = node.info_field("run_id");
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "run_id {id:?}"
        );
        id
    };
    let first = run_id(&node);
    let mut c = node.client();
    assert_eq!(c.call("PUT a 1"), "OK");
    assert_eq!(c.info_field("run_id"), first, "the same connection");
    assert_eq!(run_id(&node), first, "another connection");

    node.signal("TERM");
    assert!(node.wait_exit().success());
    node.restart();
    let second = run_id(&node);
    assert_ne!(second, first, "a restart on the same data dir");
    assert_eq!(node.client().call("GET a"), "1", "the same data dir");
    assert_eq!(run_id(&node), second);

    node.kill9();
    node.restart();
    let third = run_id(&node);
    assert_ne!(third, first);
    assert_ne!(third, second, "a start after kill -9");
}

#[test]
fn digest_is_sha256_of_sorted_pairs() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    assert_eq!(
        c.call("DIGEST"),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(c.call("PUT b 2"), "OK");
    assert_eq!(c.call("PUT a 1"), "OK");
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a\n1\nb\n2\n"));
    assert_eq!(c.call("DIGEST"), expected);
}

#[test]
fn close_says_bye_and_closes() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    c.send("CLOSE\nPING");
    assert_eq!(c.line(), "BYE");
    assert!(c.is_closed());
}

#[test]
fn first_line_must_be_hello_client() {
    let node = Node::leader(&[]);
    for first in ["PUT a b", "HELLO SERVER", "hello", "HELLO FOLLOWERS|2:00"] {
        let mut c = Client::connect(node.addr);
        assert_eq!(c.call(first), "INVALID_HANDSHAKE_MESSAGE", "{first:?}");
        assert!(c.is_closed(), "{first:?}");
    }
    let mut c = Client::connect(node.addr);
    assert_eq!(c.call("hello client"), "HELLO SERVER");
}

#[test]
fn too_long_line_is_refused_and_the_connection_kept() {
    let node = Node::leader(&["--max-line-bytes", "64"]);
    let mut c = node.client();
    let long = format!("PUT k {}", "x".repeat(200));
    assert_eq!(c.call(&long), "LINE_TOO_LONG");
    assert_eq!(c.call(&format!("PUT k {}", "y".repeat(58))), "OK");
    assert_eq!(c.call("GET k"), "y".repeat(58));
    // A long line that arrives in pieces, followed by a normal one.
    c.send_raw(format!("PUT k {}", "z".repeat(100)).as_bytes());
    c.send_raw("z".repeat(100).as_bytes());
    c.send_raw(b"\nPING\n");
    assert_eq!(c.line(), "LINE_TOO_LONG");
    assert_eq!(c.line(), "PONG");
    // Exactly at the limit is fine; one more is not.
    assert_eq!(c.call(&format!("PUT k {}", "a".repeat(58))), "OK");
    assert_eq!(
        c.call(&format!("PUT k {}", "a".repeat(59))),
        "LINE_TOO_LONG"
    );
}

#[test]
fn thousands_of_pipelined_requests_in_one_write() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    let n = 5000;
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("PUT key{i} value{i}\nGET key{i}\n"));
    }
    c.send_raw(batch.as_bytes());
    for i in 0..n {
        assert_eq!(c.line(), "OK");
        assert_eq!(c.line(), format!("value{i}"));
    }
    assert_eq!(c.call("PING"), "PONG");
}

#[test]
fn half_closed_socket_still_gets_its_replies() {
    let node = Node::leader(&[]);
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"HELLO CLIENT\nPUT a 1\nGET a\nPING")
        .expect("send");
    s.shutdown(Shutdown::Write).expect("half close");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read to EOF");
    assert_eq!(all, "HELLO SERVER\nOK\n1\nPONG\n");
}

#[test]
fn two_hundred_concurrent_clients() {
    let node = Node::leader(&[]);
    let addr = node.addr;
    let workers: Vec<_> = (0..200)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                assert_eq!(c.call("HELLO CLIENT"), "HELLO SERVER");
                for i in 0..20 {
                    assert_eq!(c.call(&format!("PUT t{t}:{i} v{i}")), "OK");
                }
                for i in 0..20 {
                    assert_eq!(c.call(&format!("GET t{t}:{i}")), format!("v{i}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    assert_eq!(node.info_field("keys"), "4000");
}

#[test]
fn too_many_connections() {
    let node = Node::leader(&["--max-clients", "2"]);
    let _a = node.client();
    let _b = node.client();
    let mut c = Client::connect(node.addr);
    assert_eq!(c.line(), "TOO_MANY_CONNECTIONS");
    assert!(c.is_closed());
    drop(_a);
    // Once one leaves, a new client gets in (the server notices the close).
    wait_until("a slot to free up", || {
        let mut c = Client::connect(node.addr);
        c.send("HELLO CLIENT");
        c.line() == "HELLO SERVER"
    });
}

#[test]
fn a_client_that_does_not_read_cannot_grow_server_memory() {
    let node = Node::leader(&[]);
    let mut c = node.client();
    assert_eq!(c.call(&format!("PUT big {}", "v".repeat(60_000))), "OK");
    let baseline = node.rss_kib();
    // Ask for ~600 MB of replies and never read them.
    let flooder = {
        let mut s = c.stream.try_clone().expect("clone");
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        thread::spawn(move || {
            let req = b"GET big\n".repeat(1000);
            let mut sent = 0usize;
            for _ in 0..10_000 {
                match s.write(&req) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        })
    };
    let sent = flooder.join().expect("flooder");
    // The server stopped reading: far less than everything went through.
    assert!(sent < 10_000 * 8000, "the server read all {sent} bytes");
    let grown = node.rss_kib().saturating_sub(baseline);
    assert!(
        grown < 64 * 1024,
        "server grew by {grown} KiB for one non-reading client"
    );
    // Other clients are still served.
    let mut other = node.client();
    assert_eq!(other.call("PING"), "PONG");
}
