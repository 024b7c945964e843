//! The Redis face (`docs/redis.md`) against the real binary, over plain
//! sockets: every reply byte for byte in RESP2 and RESP3, protocol errors
//! that close the connection (an oversized bulk refused on its header),
//! inline commands and empty lines, pipelining, binary values and what the
//! line protocol makes of them, the password gate, `--max-clients`, `INFO`,
//! `SCAN` under writes, a follower (reads, `-READONLY`, `ROLE`, `INFO
//! replication`, `WAIT`), and `MSET` all or nothing across `kill -9`, a
//! torn log tail and replication.
//!
//! The replies that Redis also has were taken from Redis 7.0 itself
//! (error texts, nil shapes, `HELLO` and `INFO` layouts); keyval's own
//! (`-ERR invalid key`, `-ERR expiry is not supported`, the `HELLO` map's
//! `server keyval`) from `docs/redis.md`. The Redis tools (redis-cli,
//! redis-py, redis-benchmark, the exporter, twemproxy) are in
//! `tests/redis_tools.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{free_port, leader_on, start_follower, wait_followers, wait_synced};
use common::redis::{cmd, encode, eventually, info_field, info_fields, show, Resp, Value};
use common::{keyval_bin, wait_until, Node};
use sha2::{Digest, Sha256};

/// Sends each command and checks its reply byte for byte, in order.
fn exchange(c: &mut Resp, table: &[(&[&str], &[u8])]) {
    for (args, want) in table {
        c.send_raw(&cmd(args));
        c.expect_reply(want, &args.join(" "));
    }
}

/// Checks the reply is a protocol error (its text after the prefix is
/// keyval's) and the connection closes after it.
fn expect_protocol_error(c: &mut Resp, what: &str) {
    match c.reply() {
        Value::Error(text) => assert!(text.starts_with("ERR Protocol error: "), "{text}"),
        other => panic!("{what}: {other:?}"),
    }
    c.expect_closed(what);
}

/// A bulk string's bytes on the wire.
fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// `CLIENT ID` of a connection, which `HELLO` shows too.
fn client_id(c: &mut Resp) -> i64 {
    c.call(&["CLIENT", "ID"]).int()
}

/// `HELLO`'s map as keyval writes it, for a client of id `id`.
fn hello_reply(proto: u8, id: i64, role: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match proto {
        3 => out.extend_from_slice(b"%7\r\n"),
        _ => out.extend_from_slice(b"*14\r\n"),
    }
    for (k, v) in [("server", "keyval"), ("version", "7.0.0")] {
        out.extend(bulk(k.as_bytes()));
        out.extend(bulk(v.as_bytes()));
    }
    out.extend(bulk(b"proto"));
    out.extend_from_slice(format!(":{proto}\r\n").as_bytes());
    out.extend(bulk(b"id"));
    out.extend_from_slice(format!(":{id}\r\n").as_bytes());
    for (k, v) in [("mode", "standalone"), ("role", role)] {
        out.extend(bulk(k.as_bytes()));
        out.extend(bulk(v.as_bytes()));
    }
    out.extend(bulk(b"modules"));
    out.extend_from_slice(b"*0\r\n");
    out
}

/// `INFO <section>` as (field, value) pairs.
fn info(c: &mut Resp, section: &str) -> Vec<(String, String)> {
    let reply = c.call(&["INFO", section]);
    info_fields(reply.bytes())
}

// ---------------------------------------------------------------------------
// Replies

#[test]
fn resp2_replies_are_redis_replies_byte_for_byte() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    exchange(
        &mut c,
        &[
            (&["PING"], b"+PONG\r\n"),
            (&["ping", "hi there"], b"$8\r\nhi there\r\n"),
            (&["ECHO", "hello"], b"$5\r\nhello\r\n"),
            (&["GET", "k"], b"$-1\r\n"),
            (&["SET", "k", "v"], b"+OK\r\n"),
            (&["get", "k"], b"$1\r\nv\r\n"),
            // NX and XX kept from happening: nil, nothing written.
            (&["SET", "k", "w", "NX"], b"$-1\r\n"),
            (&["SET", "nope", "w", "XX"], b"$-1\r\n"),
            (&["GET", "k"], b"$1\r\nv\r\n"),
            (&["EXISTS", "nope"], b":0\r\n"),
            // GET: the old value, or nil.
            (&["SET", "k", "w", "XX", "GET"], b"$1\r\nv\r\n"),
            (&["SET", "k", "x", "NX", "GET"], b"$1\r\nw\r\n"),
            (&["SET", "nope", "w", "XX", "GET"], b"$-1\r\n"),
            (&["SET", "new", "1", "GET"], b"$-1\r\n"),
            (&["GET", "new"], b"$1\r\n1\r\n"),
            (&["set", "k", "v", "nx", "xx"], b"-ERR syntax error\r\n"),
            (&["SET", "k", "v", "BOGUS"], b"-ERR syntax error\r\n"),
            (&["MSET", "a", "1", "b", "2"], b"+OK\r\n"),
            (
                &["MGET", "a", "b", "zz"],
                b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
            ),
            // EXISTS counts a key named twice twice; DEL deletes it once.
            (&["EXISTS", "a", "a", "zz"], b":2\r\n"),
            (&["DEL", "a", "a", "zz"], b":1\r\n"),
            (&["DEL", "a"], b":0\r\n"),
            (&["DBSIZE"], b":3\r\n"),
            // Byte order (docs/redis.md), and Redis's globs.
            (&["KEYS", "*"], b"*3\r\n$1\r\nb\r\n$1\r\nk\r\n$3\r\nnew\r\n"),
            (&["KEYS", "?"], b"*2\r\n$1\r\nb\r\n$1\r\nk\r\n"),
            (&["KEYS", "[a-c]"], b"*1\r\n$1\r\nb\r\n"),
            (&["KEYS", "[^b]*"], b"*2\r\n$1\r\nk\r\n$3\r\nnew\r\n"),
            (&["KEYS", "n?w"], b"*1\r\n$3\r\nnew\r\n"),
            (&["KEYS", "zz*"], b"*0\r\n"),
            (&["SELECT", "0"], b"+OK\r\n"),
            (&["SELECT", "1"], b"-ERR DB index is out of range\r\n"),
            (&["CLIENT", "GETNAME"], b"$-1\r\n"),
            (&["CLIENT", "SETNAME", "me"], b"+OK\r\n"),
            (&["client", "getname"], b"$2\r\nme\r\n"),
            (&["CLIENT", "SETINFO", "LIB-NAME", "tests"], b"+OK\r\n"),
            (
                &["CLIENT", "FOO"],
                b"-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n",
            ),
            (
                &["client", "setname"],
                b"-ERR wrong number of arguments for 'client|setname' command\r\n",
            ),
            (&["COMMAND"], b"*0\r\n"),
            (&["COMMAND", "COUNT"], b":0\r\n"),
            (&["COMMAND", "DOCS", "get"], b"*0\r\n"),
            (&["COMMAND", "INFO", "get"], b"*0\r\n"),
            (&["WAIT", "0", "-1"], b"-ERR timeout is negative\r\n"),
            (
                &["WAIT", "x", "1"],
                b"-ERR value is not an integer or out of range\r\n",
            ),
            (&["SCAN", "x"], b"-ERR invalid cursor\r\n"),
            (&["SCAN", "0", "MATCH"], b"-ERR syntax error\r\n"),
            (
                &["foo", "x", "y"],
                b"-ERR unknown command 'foo', with args beginning with: 'x' 'y' \r\n",
            ),
            (
                &["FOO"],
                b"-ERR unknown command 'FOO', with args beginning with: \r\n",
            ),
            (
                &["GET"],
                b"-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["get", "a", "b"],
                b"-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["MSET", "a", "1", "b"],
                b"-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["ECHO"],
                b"-ERR wrong number of arguments for 'echo' command\r\n",
            ),
            (
                &["DEL"],
                b"-ERR wrong number of arguments for 'del' command\r\n",
            ),
            (
                &["KEYS"],
                b"-ERR wrong number of arguments for 'keys' command\r\n",
            ),
            (&["INFO", "nosuch"], b"$0\r\n\r\n"),
        ],
    );
    // Expiry is refused, whichever option asks for it, and nothing is
    // written.
    for option in [
        &["EX", "10"][..],
        &["PX", "10"],
        &["EXAT", "99999999999"],
        &["PXAT", "99999999999"],
        &["KEEPTTL"],
        &["NX", "EX", "10"],
    ] {
        let args = [&["SET", "ttl", "v"][..], option].concat();
        c.send_raw(&cmd(&args));
        c.expect_reply(b"-ERR expiry is not supported\r\n", &args.join(" "));
    }
    c.expect(&cmd(&["EXISTS", "ttl"]), b":0\r\n");
    // CLIENT ID: unique per connection, growing.
    let first = client_id(&mut c);
    let mut other = Resp::connect(node.addr);
    assert!(client_id(&mut other) > first);
    // After an error the connection goes on.
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
    // QUIT: +OK, then the node closes the connection.
    c.expect(&cmd(&["QUIT"]), b"+OK\r\n");
    c.expect_closed("after QUIT");
}

#[test]
fn keys_outside_the_rules_get_invalid_key_and_change_nothing() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let long = vec![b'k'; 1025];
    let bad: [&[u8]; 8] = [
        b"", b"a b", b"a\tb", b"a\r\nb", b"a\x01", b"\x7f", b"\x00", &long,
    ];
    for key in bad {
        let cases: [&[&[u8]]; 6] = [
            &[b"SET", key, b"v"],
            &[b"GET", key],
            &[b"MSET", b"fine", b"1", key, b"2"],
            &[b"MGET", b"fine", key],
            &[b"DEL", key],
            &[b"EXISTS", key],
        ];
        for args in cases {
            let got = c.call_bytes(args);
            assert_eq!(
                got,
                Value::Error("ERR invalid key".into()),
                "{}",
                show(&encode(args))
            );
        }
    }
    // The MSET with one bad key wrote none of its pairs.
    c.expect(&cmd(&["EXISTS", "fine"]), b":0\r\n");
    c.expect(&cmd(&["DBSIZE"]), b":0\r\n");
    // The longest key, and keys of bytes past ASCII, are keys.
    let longest = vec![b'k'; 1024];
    let utf8 = "ключ-🔑".as_bytes();
    let high: &[u8] = b"\x80\xfe\xff";
    for key in [&longest[..], utf8, high] {
        assert_eq!(c.call_bytes(&[b"SET", key, b"v"]), Value::ok());
        assert_eq!(c.call_bytes(&[b"GET", key]), Value::bulk("v"));
    }
    c.expect(&cmd(&["DBSIZE"]), b":3\r\n");
}

#[test]
fn config_get_answers_what_the_node_runs_with_and_config_set_is_refused() {
    let node = Node::leader(&[
        "--fsync",
        "everysec",
        "--max-clients",
        "77",
        "--max-value-bytes",
        "65536",
    ]);
    let port = node.addr.port().to_string();
    let mut c = Resp::connect(node.addr);
    let pair = |name: &str, value: &str| [bulk(name.as_bytes()), bulk(value.as_bytes())].concat();
    let map = |pairs: &[(&str, &str)]| {
        let mut out = format!("*{}\r\n", 2 * pairs.len()).into_bytes();
        for (k, v) in pairs {
            out.extend(pair(k, v));
        }
        out
    };
    let all = [
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("databases", "1"),
        ("maxclients", "77"),
        ("maxmemory", "0"),
        ("port", port.as_str()),
        ("proto-max-bulk-len", "65536"),
    ];
    for (name, value) in all {
        c.expect(&cmd(&["CONFIG", "GET", name]), &map(&[(name, value)]));
    }
    c.expect(&cmd(&["CONFIG", "GET", "*"]), &map(&all));
    // Several patterns, globs, any case: in the node's order.
    c.expect(
        &cmd(&["config", "get", "APPENDONLY", "save"]),
        &map(&[("save", ""), ("appendonly", "yes")]),
    );
    c.expect(
        &cmd(&["CONFIG", "GET", "append*"]),
        &map(&[("appendonly", "yes"), ("appendfsync", "everysec")]),
    );
    c.expect(&cmd(&["CONFIG", "GET", "nosuch"]), b"*0\r\n");
    // RESP3: a map.
    c.call(&["HELLO", "3"]);
    c.expect(
        &cmd(&["CONFIG", "GET", "save"]),
        &[&b"%1\r\n"[..], &pair("save", "")].concat(),
    );
    for args in [
        &["CONFIG", "SET", "save", ""][..],
        &["CONFIG", "SET", "appendonly", "no"],
    ] {
        match c.call(args) {
            Value::Error(text) => assert!(text.starts_with("ERR "), "{args:?}: {text}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    // And nothing changed.
    c.expect(
        &cmd(&["CONFIG", "GET", "appendonly"]),
        &[&b"%1\r\n"[..], &pair("appendonly", "yes")].concat(),
    );
}

#[test]
fn hello_3_switches_the_connection_to_resp3() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let id = client_id(&mut c);
    c.expect(&cmd(&["HELLO", "3"]), &hello_reply(3, id, "master"));
    exchange(
        &mut c,
        &[
            // Nulls are `_`.
            (&["GET", "nope"], b"_\r\n"),
            (&["SET", "k", "v"], b"+OK\r\n"),
            (&["MGET", "k", "nope"], b"*2\r\n$1\r\nv\r\n_\r\n"),
            (&["SET", "k", "w", "NX"], b"_\r\n"),
            (&["SET", "nope", "w", "XX", "GET"], b"_\r\n"),
            (&["CLIENT", "GETNAME"], b"_\r\n"),
            // Maps are `%`.
            (&["COMMAND", "DOCS"], b"%0\r\n"),
            // Arrays, integers and errors are as in RESP2.
            (&["COMMAND"], b"*0\r\n"),
            (&["EXISTS", "k"], b":1\r\n"),
            (&["ROLE"], b"*3\r\n$6\r\nmaster\r\n:1\r\n*0\r\n"),
            (
                &["GET"],
                b"-ERR wrong number of arguments for 'get' command\r\n",
            ),
        ],
    );
    // INFO: a verbatim string, `=<len>\r\ntxt:<text>\r\n`.
    let text = b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
    let mut want = format!("={}\r\ntxt:", text.len() + 4).into_bytes();
    want.extend_from_slice(text);
    want.extend_from_slice(b"\r\n");
    c.expect(&cmd(&["INFO", "keyspace"]), &want);
    // HELLO without a version shows the connection's; SETNAME names it.
    c.expect(&cmd(&["HELLO"]), &hello_reply(3, id, "master"));
    c.expect(
        &cmd(&["HELLO", "3", "SETNAME", "tests"]),
        &hello_reply(3, id, "master"),
    );
    c.expect(&cmd(&["CLIENT", "GETNAME"]), b"$5\r\ntests\r\n");
    // Another version: refused, and the connection keeps its own.
    c.expect(
        &cmd(&["HELLO", "4"]),
        b"-NOPROTO unsupported protocol version\r\n",
    );
    c.expect(
        &cmd(&["HELLO", "x"]),
        b"-ERR Protocol version is not an integer or out of range\r\n",
    );
    c.expect(&cmd(&["GET", "nope"]), b"_\r\n");
    // Back to RESP2.
    c.expect(&cmd(&["HELLO", "2"]), &hello_reply(2, id, "master"));
    c.expect(&cmd(&["GET", "nope"]), b"$-1\r\n");
    c.expect(&cmd(&["COMMAND", "DOCS"]), b"*0\r\n");
    // HELLO 2 as the first command: RESP2's map is an array.
    let mut fresh = Resp::connect(node.addr);
    fresh.send_raw(&cmd(&["HELLO", "2"]));
    let reply = fresh.reply();
    let items = reply.items();
    assert_eq!(items.len(), 14, "{reply:?}");
    assert_eq!(items[4], Value::bulk("proto"));
    assert_eq!(items[5], Value::Int(2));
}

// ---------------------------------------------------------------------------
// Framing

#[test]
fn protocol_errors_are_answered_then_the_connection_closes() {
    let node = Node::leader(&[]);
    let cases: &[(&[u8], &[u8])] = &[
        // What came before the error is answered first.
        (
            b"*1\r\n$4\r\nPING\r\n*abc\r\n",
            b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n+PING\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$x\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        // More elements than any command may have (1,048,576).
        (
            b"*1048577\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        // A bulk past --max-value-bytes (16 MiB by default), refused on
        // its header: the data never comes.
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777217\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (request, reply) in cases {
        let mut c = Resp::connect(node.addr);
        c.expect(request, reply);
        c.expect_closed(&show(request));
    }
    // A bulk not followed by \r\n: an error (its text is keyval's).
    let mut c = Resp::connect(node.addr);
    c.send_raw(b"*1\r\n$4\r\nPINGxx\r\n");
    expect_protocol_error(&mut c, "a bulk without its \\r\\n");
    // At the limits themselves the node waits for the rest.
    let at_limits: [&[u8]; 2] = [
        b"*1048576\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n",
    ];
    for header in at_limits {
        let mut c = Resp::connect(node.addr);
        c.send_raw(header);
        c.expect_silence(Duration::from_millis(300), &show(header));
    }
    // The node serves on.
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
}

#[test]
fn max_value_bytes_bounds_values_and_requests() {
    let node = Node::leader(&["--max-value-bytes", "1024", "--max-line-bytes", "4096"]);
    let mut c = Resp::connect(node.addr);
    let biggest = vec![b'v'; 1024];
    assert_eq!(c.call_bytes(&[b"SET", b"k", &biggest]), Value::ok());
    assert_eq!(c.call_bytes(&[b"GET", b"k"]), Value::Bulk(biggest.clone()));
    // One byte more: refused on the header, the connection closed.
    let mut c = Resp::connect(node.addr);
    c.expect(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    );
    c.expect_closed("a 1025-byte bulk with --max-value-bytes 1024");
    // A request of many values, each allowed, past --max-value-bytes plus
    // --max-line-bytes (5,120 bytes) in all.
    let mut c = Resp::connect(node.addr);
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    for key in &keys {
        args.push(key.as_bytes());
        args.push(&biggest);
    }
    c.send_raw(&encode(&args));
    expect_protocol_error(&mut c, "an 8 KiB request");
    // An inline line past --max-line-bytes.
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
    let mut line = b"ECHO ".to_vec();
    line.extend(vec![b'x'; 5000]);
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line);
    expect_protocol_error(&mut c, "a 5,000-byte inline line");
    // Nothing of those was written.
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["DBSIZE"]), b":1\r\n");
    c.expect(&cmd(&["GET", "k"]), &bulk(&biggest));
}

#[test]
fn inline_commands_and_empty_lines_between_commands() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    // The first command makes the connection RESP (its first byte is
    // `*`); after it, lines are inline commands, and empty lines and
    // empty arrays are skipped.
    c.send_raw(
        b"*1\r\n$4\r\nPING\r\n\r\n\r\nPING\r\nSET a b\r\n\nGET a\n*0\r\nEXISTS a nope\r\n\
          DEL\ta\r\nget a\r\n",
    );
    c.expect_reply(
        b"+PONG\r\n+PONG\r\n+OK\r\n$1\r\nb\r\n:1\r\n:1\r\n$-1\r\n",
        "inline commands",
    );
    // Inline and array commands mix.
    c.send_raw(b"ECHO x\r\n*2\r\n$4\r\nECHO\r\n$1\r\ny\r\nECHO z\r\n");
    c.expect_reply(b"$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n", "mixed");
    // An inline command split across writes.
    c.send_raw(b"EC");
    c.expect_silence(Duration::from_millis(100), "half an inline command");
    c.send_raw(b"HO split\r\n");
    c.expect_reply(b"$5\r\nsplit\r\n", "a split inline command");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let n = 1000;
    let mut requests = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        let (k, v) = (format!("p:{i}"), format!("value {i}"));
        requests.extend(cmd(&["SET", &k, &v]));
        want.extend_from_slice(b"+OK\r\n");
        requests.extend(cmd(&["GET", &k]));
        want.extend(bulk(v.as_bytes()));
        requests.extend(cmd(&["ECHO", &i.to_string()]));
        want.extend(bulk(i.to_string().as_bytes()));
        if i % 100 == 0 {
            // A query answered off the loop keeps its place too.
            requests.extend(cmd(&["DBSIZE"]));
            want.extend_from_slice(format!(":{}\r\n", i + 1).as_bytes());
            requests.extend(cmd(&["KEYS", &format!("p:{i}")]));
            want.extend_from_slice(b"*1\r\n");
            want.extend(bulk(k.as_bytes()));
        }
    }
    c.send_raw(&requests);
    c.expect_reply(&want, "1,000 pipelined SET, GET, ECHO");
    // Split at every byte boundary of a small pipeline.
    let requests = [cmd(&["SET", "s", "1"]), cmd(&["GET", "s"]), cmd(&["PING"])].concat();
    for byte in &requests {
        c.send_raw(std::slice::from_ref(byte));
    }
    c.expect_reply(
        b"+OK\r\n$1\r\n1\r\n+PONG\r\n",
        "a pipeline sent a byte at a time",
    );
}

// ---------------------------------------------------------------------------
// Values, and the line protocol beside RESP

/// The line protocol's `DIGEST` of `data`, computed here: SHA-256 over
/// `<key>\n<value>\n` for every key in byte order.
fn model_digest(data: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut sha = Sha256::new();
    for (k, v) in data {
        sha.update(k);
        sha.update(b"\n");
        sha.update(v);
        sha.update(b"\n");
    }
    hex::encode(sha.finalize())
}

#[test]
fn binary_values_round_trip_and_the_line_protocol_gets_binary_value() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let mib: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("crlf", b"a\r\nb".to_vec()),
        ("cr", b"a\rb".to_vec()),
        ("lf", b"a\nb".to_vec()),
        ("empty", Vec::new()),
        ("nul", b"\x00".to_vec()),
        ("high", b"\xff\xfe\x80".to_vec()),
        ("every", (0..=255).collect()),
        ("mib", mib),
        ("spaces", b"hello  world ".to_vec()),
        ("plain", b"v1".to_vec()),
    ];
    let mut model = BTreeMap::new();
    for (key, value) in &values {
        assert_eq!(c.call_bytes(&[b"SET", key.as_bytes(), value]), Value::ok());
        model.insert(key.as_bytes().to_vec(), value.clone());
    }
    for (key, value) in &values {
        c.send(&[b"GET", key.as_bytes()]);
        c.expect_reply(&bulk(value), key);
    }
    c.expect(&cmd(&["GET", "empty"]), b"$0\r\n\r\n");
    c.expect(&cmd(&["EXISTS", "empty"]), b":1\r\n");
    c.expect(
        &cmd(&["MGET", "nul", "empty"]),
        b"*2\r\n$1\r\n\x00\r\n$0\r\n\r\n",
    );

    // The line protocol: a value a line cannot carry is BINARY_VALUE;
    // the others come through as they are.
    let mut line = node.client();
    for key in ["crlf", "cr", "lf", "empty", "every", "mib"] {
        assert_eq!(line.call(&format!("GET {key}")), "BINARY_VALUE", "{key}");
    }
    for key in ["nul", "high", "spaces", "plain"] {
        line.send(&format!("GET {key}"));
        let got = line.line_bytes().expect("GET reply");
        assert_eq!(got, model[key.as_bytes()], "line GET {key}");
    }
    // And what the line protocol writes, RESP reads.
    assert_eq!(line.call("PUT from-line a value with spaces"), "OK");
    model.insert(b"from-line".to_vec(), b"a value with spaces".to_vec());
    c.expect(&cmd(&["GET", "from-line"]), &bulk(b"a value with spaces"));
    assert_eq!(line.call("DELETE plain"), "OK");
    model.remove(&b"plain"[..]);
    c.expect(&cmd(&["GET", "plain"]), b"$-1\r\n");
    assert_eq!(line.call("DELETE empty"), "OK");
    model.remove(&b"empty"[..]);
    c.expect(&cmd(&["EXISTS", "empty"]), b":0\r\n");

    // DIGEST and KEYVAL.DIGEST hash the raw bytes, and agree.
    let want = model_digest(&model);
    assert_eq!(line.call("DIGEST"), want, "line DIGEST");
    c.expect(&cmd(&["KEYVAL.DIGEST"]), &bulk(want.as_bytes()));
    c.expect(&cmd(&["keyval.digest"]), &bulk(want.as_bytes()));
    line.send("KEYS");
    let keys = line.list();
    let want_keys: Vec<String> = model
        .keys()
        .map(|k| String::from_utf8(k.clone()).expect("utf8"))
        .collect();
    assert_eq!(keys, want_keys);
}

// ---------------------------------------------------------------------------
// Access

/// The password the gated node runs with.
const PASSWORD: &str = "resp-password-0451";

#[test]
fn the_password_gates_every_command_but_auth_hello_auth_and_quit() {
    let mut command = std::process::Command::new(keyval_bin());
    command.env("KEYVAL_PASSWORD", PASSWORD);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::spawn(dir.path(), &["--role", "leader"], command)
        .unwrap_or_else(|(status, log)| panic!("exited with {status}; log:\n{log}"));
    let mut c = Resp::connect(node.addr);
    let noauth: &[u8] = b"-NOAUTH Authentication required.\r\n";
    let wrongpass: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    for args in [
        &["PING"][..],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["INFO"],
        &["CLIENT", "ID"],
        &["KEYVAL.DIGEST"],
    ] {
        c.expect(&cmd(args), noauth);
    }
    // As in Redis, a command that is not one, or has the wrong number of
    // arguments, is told so before the password is asked for.
    c.expect(
        &cmd(&["nosuch"]),
        b"-ERR unknown command 'nosuch', with args beginning with: \r\n",
    );
    c.expect(
        &cmd(&["GET"]),
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    // HELLO without AUTH is refused with its own text.
    match c.call(&["HELLO", "3"]) {
        Value::Error(text) => assert!(
            text.starts_with("NOAUTH HELLO must be called with the client already authenticated"),
            "{text}"
        ),
        other => panic!("HELLO 3 before AUTH: {other:?}"),
    }
    c.expect(&cmd(&["AUTH", "wrong-guess"]), wrongpass);
    c.expect(&cmd(&["AUTH", "default", "wrong-guess"]), wrongpass);
    c.expect(&cmd(&["AUTH", "bob", PASSWORD]), wrongpass);
    c.expect(&cmd(&["PING"]), noauth);
    c.expect(&cmd(&["AUTH", PASSWORD]), b"+OK\r\n");
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
    c.expect(&cmd(&["SET", "k", "v"]), b"+OK\r\n");
    // A wrong password later does not take the authentication back.
    c.expect(&cmd(&["AUTH", "wrong-guess"]), wrongpass);
    c.expect(&cmd(&["GET", "k"]), b"$1\r\nv\r\n");

    // AUTH with the user's name; HELLO with AUTH, in one step.
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["AUTH", "default", PASSWORD]), b"+OK\r\n");
    c.expect(&cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    let mut c = Resp::connect(node.addr);
    c.send_raw(&cmd(&["HELLO", "3", "AUTH", "default", PASSWORD]));
    match c.reply() {
        Value::Map(pairs) => {
            assert!(
                pairs.contains(&(Value::bulk("proto"), Value::Int(3))),
                "{pairs:?}"
            );
        }
        other => panic!("HELLO 3 AUTH: {other:?}"),
    }
    c.expect(&cmd(&["GET", "nope"]), b"_\r\n");
    let mut c = Resp::connect(node.addr);
    c.expect(
        &cmd(&["HELLO", "3", "AUTH", "default", "wrong-guess"]),
        wrongpass,
    );
    c.expect(&cmd(&["GET", "k"]), noauth);

    // QUIT needs no password.
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["QUIT"]), b"+OK\r\n");
    c.expect_closed("QUIT before AUTH");

    let log = node.log_text();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    assert!(
        !log.contains("wrong-guess"),
        "a guess is in the log:\n{log}"
    );

    // Without a password, AUTH <password> is an error (as Redis's default
    // user without one), AUTH default <anything> passes, nothing is gated.
    let open = Node::leader(&[]);
    let mut c = Resp::connect(open.addr);
    c.expect(
        &cmd(&["AUTH", "x"]),
        b"-ERR AUTH <password> called without any password configured for the default user. \
          Are you sure your configuration is correct?\r\n",
    );
    c.expect(&cmd(&["AUTH", "default", "x"]), b"+OK\r\n");
    c.expect(&cmd(&["PING"]), b"+PONG\r\n");
}

#[test]
fn past_max_clients_a_redis_client_is_refused_and_closed() {
    let node = Node::leader(&["--max-clients", "2"]);
    let mut a = Resp::connect(node.addr);
    a.expect(&cmd(&["PING"]), b"+PONG\r\n");
    let mut b = Resp::connect(node.addr);
    b.expect(&cmd(&["PING"]), b"+PONG\r\n");
    let mut c = Resp::connect(node.addr);
    c.expect(&cmd(&["PING"]), b"-ERR max number of clients reached\r\n");
    c.expect_closed("the third client");
    // A client leaves; the next one is served.
    a.expect(&cmd(&["QUIT"]), b"+OK\r\n");
    a.expect_closed("QUIT");
    wait_until("a slot to free up", || {
        let mut d = Resp::connect(node.addr);
        d.send_raw(&cmd(&["PING"]));
        d.try_reply()
            .is_ok_and(|r| r == Value::Simple("PONG".into()))
    });
}

#[test]
fn half_a_first_command_is_a_handshake_that_times_out_and_holds_no_client_slot() {
    let node = Node::leader(&["--max-clients", "1", "--handshake-timeout-ms", "300"]);
    let started = Instant::now();
    // The start of a RESP array, then silence: not a client yet.
    let mut silent = Resp::connect(node.addr);
    silent.send_raw(b"*2\r\n$3\r\nGET\r\n");
    // The one client slot is still free.
    let mut client = Resp::connect(node.addr);
    client.expect(&cmd(&["PING"]), b"+PONG\r\n");
    silent.expect_closed("a first command never finished");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
    client.expect(&cmd(&["PING"]), b"+PONG\r\n");
}

#[test]
fn a_sync_leader_holds_redis_reads_like_line_reads_and_a_fenced_one_sends_them_away() {
    // `--sync-followers 1` and no follower: nothing passes the output rule.
    let node = Node::leader(&["--sync-followers", "1", "--sync-timeout-ms", "300"]);
    let mut writer = Resp::connect(node.addr);
    let mut reader = Resp::connect(node.addr);
    let started = Instant::now();
    writer.send_raw(&cmd(&["SET", "k", "v"]));
    // The write is applied here but not acknowledged: a read of it waits,
    // and times out like the write.
    reader.send_raw(&cmd(&["GET", "k"]));
    let timeout = Value::Error(
        "REPLICATION_TIMEOUT the write is durable on this node, but fewer followers than \
         --sync-followers confirmed it in time"
            .into(),
    );
    assert_eq!(writer.reply(), timeout);
    assert_eq!(reader.reply(), timeout);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Fenced, the node no longer leads: a read on a connection opened to
    // it as the leader is sent away, a write is refused.
    let fenced = common::ctl(node.addr.port(), &["fence"]);
    assert!(fenced.status.success(), "fence: {fenced:?}");
    reader.expect(&cmd(&["GET", "k"]), b"-NOT_LEADER\r\n");
    reader.expect(
        &cmd(&["SET", "k", "w"]),
        b"-READONLY You can't write against a read only replica.\r\n",
    );
}

// ---------------------------------------------------------------------------
// INFO and SCAN

#[test]
fn info_has_redis_sections_and_fields() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let mut other = Resp::connect(node.addr);
    other.expect(&cmd(&["PING"]), b"+PONG\r\n");
    c.expect(&cmd(&["MSET", "a", "1", "b", "2", "c", "3"]), b"+OK\r\n");

    let reply = c.call(&["INFO"]);
    let text = String::from_utf8(reply.bytes().to_vec()).expect("utf8");
    // Redis's layout: `# Section` headers, `field:value\r\n` lines, a
    // blank line between sections.
    let headers: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            "# Server",
            "# Clients",
            "# Persistence",
            "# Replication",
            "# Keyspace"
        ],
        "{text}"
    );
    assert!(text.starts_with("# Server\r\n"), "{text}");
    assert_eq!(text.matches("\r\n\r\n# ").count(), 4, "{text}");
    let fields = info_fields(reply.bytes());
    let port = node.addr.port().to_string();
    let pid = node.pid().to_string();
    for (name, want) in [
        ("redis_version", "7.0.0"),
        ("keyval_version", env!("CARGO_PKG_VERSION")),
        ("redis_mode", "standalone"),
        ("process_id", pid.as_str()),
        ("tcp_port", port.as_str()),
        ("connected_clients", "2"),
        ("maxclients", "10000"),
        ("loading", "0"),
        ("aof_enabled", "1"),
        ("aof_last_write_status", "ok"),
        ("role", "master"),
        ("connected_slaves", "0"),
        ("db0", "keys=3,expires=0,avg_ttl=0"),
    ] {
        assert_eq!(info_field(&fields, name), want, "INFO {name}");
    }
    let seq = common::cluster::seq(&node);
    assert_eq!(info_field(&fields, "master_repl_offset"), seq.to_string());
    let uptime: u64 = info_field(&fields, "uptime_in_seconds")
        .parse()
        .expect("uptime");
    assert!(uptime < 600);

    // Sections by name, any case; `all`, `everything` and `default` give
    // every one.
    c.expect(
        &cmd(&["INFO", "keyspace"]),
        &bulk(b"# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n"),
    );
    let two = c.call(&["INFO", "CLIENTS", "persistence"]);
    let two = String::from_utf8(two.bytes().to_vec()).expect("utf8");
    assert!(two.starts_with("# Clients\r\n"), "{two}");
    assert!(two.contains("\r\n\r\n# Persistence\r\n"), "{two}");
    assert!(!two.contains("# Server"), "{two}");
    for all in ["all", "everything", "default"] {
        let got = info_fields(c.call(&["INFO", all]).bytes());
        let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        let want: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, want, "INFO {all}");
    }

    // connected_clients follows the connections.
    drop(other);
    wait_until("connected_clients to drop to 1", || {
        info_field(&info(&mut c, "clients"), "connected_clients") == "1"
    });
}

/// One `SCAN` call: the next cursor and the page.
fn scan_page(c: &mut Resp, cursor: &str, extra: &[&str]) -> (String, Vec<Vec<u8>>) {
    let reply = c.call(&[&["SCAN", cursor][..], extra].concat());
    let items = reply.items();
    assert_eq!(items.len(), 2, "SCAN reply {reply:?}");
    let next = items[0].text();
    let keys = items[1]
        .items()
        .iter()
        .map(|k| k.bytes().to_vec())
        .collect();
    (next, keys)
}

#[test]
fn scan_returns_every_key_present_for_the_whole_iteration() {
    let node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    let stable: BTreeSet<Vec<u8>> = (0..3000)
        .map(|i| format!("s:{i:05}").into_bytes())
        .collect();
    let doomed: Vec<String> = (0..300).map(|i| format!("s:gone:{i}")).collect();
    let keys: Vec<&[u8]> = stable
        .iter()
        .map(Vec::as_slice)
        .chain(doomed.iter().map(|k| k.as_bytes()))
        .collect();
    for chunk in keys.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for key in chunk {
            args.push(key);
            args.push(b"v");
        }
        assert_eq!(c.call_bytes(&args), Value::ok());
    }
    let others: Vec<String> = (0..200).map(|i| format!("other:{i}")).collect();
    for key in &others {
        c.send_raw(&cmd(&["SET", key, "v"]));
        c.expect_reply(b"+OK\r\n", key);
    }

    // A full iteration with MATCH, while keys come and go between pages.
    let mut writer = Resp::connect(node.addr);
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    let mut added = Vec::new();
    loop {
        let (next, page) = scan_page(&mut c, &cursor, &["MATCH", "s:*", "COUNT", "100"]);
        pages += 1;
        assert!(pages < 10_000, "the iteration does not end");
        assert!(
            page.len() <= 1000,
            "a page of {} keys for COUNT 100",
            page.len()
        );
        for key in page {
            assert!(key.starts_with(b"s:"), "{} does not match s:*", show(&key));
            *seen.entry(key).or_default() += 1;
        }
        // Churn: a new matching key, a doomed one deleted, others too.
        let new = format!("s:new:{pages}");
        writer.expect(&cmd(&["SET", &new, "v"]), b"+OK\r\n");
        added.push(new.into_bytes());
        if let Some(gone) = doomed.get(pages) {
            writer.expect(&cmd(&["DEL", gone]), b":1\r\n");
        }
        writer.send_raw(&cmd(&["DEL", &others[pages % others.len()]]));
        assert!(matches!(writer.reply(), Value::Int(0 | 1)));
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let missing: Vec<String> = stable
        .iter()
        .filter(|k| !seen.contains_key(*k))
        .map(|k| show(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} keys present for the whole scan never came back, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(pages > 1, "3,300 keys in one page despite COUNT 100");
    // Nothing that never existed.
    for key in seen.keys() {
        let known = stable.contains(key)
            || doomed.iter().any(|d| d.as_bytes() == key.as_slice())
            || added.contains(key);
        assert!(known, "SCAN returned {}, never written", show(key));
    }

    // Without MATCH, every key; SCAN's keys are EXISTS's.
    let mut all = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page) = scan_page(&mut c, &cursor, &["COUNT", "1000"]);
        all.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let dbsize = c.call(&["DBSIZE"]).int();
    assert_eq!(all.len() as i64, dbsize);
    assert!(stable.iter().all(|k| all.contains(k)));
}

// ---------------------------------------------------------------------------
// Replication

#[test]
fn a_follower_serves_reads_refuses_writes_and_shows_its_leader() {
    let leader = leader_on(free_port(), &[]);
    let lp = leader.addr.port();
    let fport = free_port();
    let follower = start_follower(lp, 2, &["--port", &fport.to_string()]);
    wait_followers(&leader, 1);

    let mut lc = Resp::connect(leader.addr);
    lc.expect(&cmd(&["SET", "k", "v1"]), b"+OK\r\n");
    lc.expect(&cmd(&["MSET", "a", "1", "b", "\r\n"]), b"+OK\r\n");
    let mut fc = Resp::connect(follower.addr);
    // Eventually the same data.
    eventually("the follower to have the writes", || {
        (fc.call(&["DBSIZE"]) == Value::Int(3)).then_some(())
    });
    fc.expect(&cmd(&["GET", "k"]), b"$2\r\nv1\r\n");
    fc.expect(
        &cmd(&["MGET", "a", "b", "nope"]),
        b"*3\r\n$1\r\n1\r\n$2\r\n\r\n\r\n$-1\r\n",
    );
    fc.expect(&cmd(&["EXISTS", "a", "k"]), b":2\r\n");
    fc.expect(
        &cmd(&["KEYS", "*"]),
        b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nk\r\n",
    );
    let digest = lc.call(&["KEYVAL.DIGEST"]);
    assert_eq!(fc.call(&["KEYVAL.DIGEST"]), digest);

    // Writes are refused, whatever their kind; nothing changes.
    let readonly: &[u8] = b"-READONLY You can't write against a read only replica.\r\n";
    for args in [
        &["SET", "k", "x"][..],
        &["SET", "k", "x", "NX"],
        &["SET", "k", "x", "GET"],
        &["MSET", "k", "x", "z", "y"],
        &["DEL", "k"],
        &["DEL", "nope"],
    ] {
        fc.expect(&cmd(args), readonly);
    }
    fc.expect(&cmd(&["GET", "k"]), b"$2\r\nv1\r\n");
    match fc.call(&["WAIT", "0", "0"]) {
        Value::Error(text) => assert!(
            text.starts_with("ERR WAIT cannot be used with replica instances"),
            "{text}"
        ),
        other => panic!("WAIT on a follower: {other:?}"),
    }
    // HELLO says replica.
    let id = client_id(&mut fc);
    fc.expect(&cmd(&["HELLO", "2"]), &hello_reply(2, id, "replica"));

    // The follower's view of its leader: INFO replication and ROLE.
    let seq = common::cluster::seq(&leader);
    let seq_text = seq.to_string();
    let fields = info(&mut fc, "replication");
    let lp_text = lp.to_string();
    for (name, want) in [
        ("role", "slave"),
        ("master_host", "127.0.0.1"),
        ("master_port", lp_text.as_str()),
        ("master_link_status", "up"),
        ("slave_repl_offset", seq_text.as_str()),
    ] {
        assert_eq!(info_field(&fields, name), want, "follower INFO {name}");
    }
    let mut role = format!("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:{lp}\r\n").into_bytes();
    role.extend_from_slice(format!("$9\r\nconnected\r\n:{seq}\r\n").as_bytes());
    fc.expect(&cmd(&["ROLE"]), &role);

    // The leader's view: the follower by its client port, online, caught
    // up.
    let fport_text = fport.to_string();
    eventually("the leader to see the follower's ack", || {
        let fields = info(&mut lc, "replication");
        (info_field(&fields, "slave0").contains(&format!("offset={seq},"))).then_some(())
    });
    let fields = info(&mut lc, "replication");
    assert_eq!(info_field(&fields, "role"), "master");
    assert_eq!(info_field(&fields, "connected_slaves"), "1");
    assert_eq!(
        info_field(&fields, "slave0"),
        format!("ip=127.0.0.1,port={fport_text},state=online,offset={seq},lag=0")
    );
    assert_eq!(info_field(&fields, "master_repl_offset"), seq.to_string());
    let mut role = format!("*3\r\n$6\r\nmaster\r\n:{seq}\r\n*1\r\n*3\r\n").into_bytes();
    role.extend(bulk(b"127.0.0.1"));
    role.extend(bulk(fport_text.as_bytes()));
    role.extend(bulk(seq.to_string().as_bytes()));
    lc.expect(&cmd(&["ROLE"]), &role);

    // The leader goes away: the follower's link is down, it keeps serving
    // reads.
    let mut leader = leader;
    leader.kill9();
    eventually("the follower to see its link down", || {
        let fields = info(&mut fc, "replication");
        (info_field(&fields, "master_link_status") == "down").then_some(())
    });
    match fc.call(&["ROLE"]) {
        Value::Array(items) => assert_eq!(items[3], Value::bulk("connect"), "{items:?}"),
        other => panic!("ROLE: {other:?}"),
    }
    fc.expect(&cmd(&["GET", "k"]), b"$2\r\nv1\r\n");
}

#[test]
fn wait_counts_the_followers_that_hold_this_connections_last_write() {
    let leader = leader_on(free_port(), &[]);
    let follower = start_follower(leader.addr.port(), 2, &[]);
    wait_followers(&leader, 1);
    let mut c = Resp::connect(leader.addr);
    // No write yet: every connected follower counts.
    c.expect(&cmd(&["WAIT", "1", "0"]), b":1\r\n");
    c.expect(&cmd(&["SET", "k", "v"]), b"+OK\r\n");
    let asked = Instant::now();
    c.expect(&cmd(&["WAIT", "1", "5000"]), b":1\r\n");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    c.expect(&cmd(&["WAIT", "0", "0"]), b":1\r\n");
    // Two asked for, one there: the timeout, then the count.
    let asked = Instant::now();
    c.expect(&cmd(&["WAIT", "2", "300"]), b":1\r\n");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "WAIT 2 300 took {took:?}"
    );
    assert!(took < Duration::from_secs(3), "WAIT 2 300 took {took:?}");
    // Pipelined, WAIT keeps its place among the replies.
    c.send_raw(
        &[
            cmd(&["SET", "k", "w"]),
            cmd(&["WAIT", "1", "5000"]),
            cmd(&["GET", "k"]),
        ]
        .concat(),
    );
    c.expect_reply(b"+OK\r\n:1\r\n$1\r\nw\r\n", "SET, WAIT, GET pipelined");

    // The follower gone, a new write is held by none.
    drop(follower);
    wait_followers(&leader, 0);
    c.expect(&cmd(&["SET", "k", "x"]), b"+OK\r\n");
    let asked = Instant::now();
    c.expect(&cmd(&["WAIT", "1", "200"]), b":0\r\n");
    assert!(asked.elapsed() >= Duration::from_millis(200));
}

// ---------------------------------------------------------------------------
// MSET: all or nothing

/// Keys every `MSET` of the atomicity tests writes.
const GEN_KEYS: usize = 16;

/// Bytes of each value: with [`GEN_KEYS`] keys an `MSET` is 256 KiB, the
/// size of the leader's feed reads, so batches straddle them.
const GEN_VALUE: usize = 16 << 10;

fn gen_key(i: usize) -> String {
    format!("gen:{i:02}")
}

/// The value of generation `gen`: its number, then padding.
fn gen_value(gen: u64) -> Vec<u8> {
    let mut v = format!("{gen:010}:").into_bytes();
    v.resize(GEN_VALUE, b'.');
    v
}

fn mset_gen(gen: u64) -> Vec<u8> {
    let keys: Vec<String> = (0..GEN_KEYS).map(gen_key).collect();
    let value = gen_value(gen);
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for key in &keys {
        args.push(key.as_bytes());
        args.push(&value);
    }
    encode(&args)
}

/// The generation an `MGET` of every key shows: `Ok(None)` when no key
/// is set, `Err` with each key's generation when they differ.
fn generation(reply: &Value) -> Result<Option<u64>, Vec<Option<u64>>> {
    let gens: Vec<Option<u64>> = reply
        .items()
        .iter()
        .map(|v| match v {
            Value::Nil | Value::Null => None,
            v => {
                let bytes = v.bytes();
                assert_eq!(bytes.len(), GEN_VALUE, "a value of {} bytes", bytes.len());
                Some(
                    std::str::from_utf8(&bytes[..10])
                        .expect("digits")
                        .parse()
                        .expect("gen"),
                )
            }
        })
        .collect();
    if gens.iter().all(|g| *g == gens[0]) {
        Ok(gens[0])
    } else {
        Err(gens)
    }
}

fn mget_gen() -> Vec<u8> {
    let keys: Vec<String> = (0..GEN_KEYS).map(gen_key).collect();
    let args: Vec<&str> = std::iter::once("MGET")
        .chain(keys.iter().map(String::as_str))
        .collect();
    cmd(&args)
}

/// The one generation every key holds on `node`; panics on a mix.
fn node_generation(node: &Node) -> Option<u64> {
    let mut c = Resp::connect(node.addr);
    c.send_raw(&mget_gen());
    generation(&c.reply()).unwrap_or_else(|gens| {
        panic!("keys of one MSET or DEL in different states (None: absent): {gens:?}")
    })
}

#[test]
fn mset_is_all_or_nothing_across_kill_9_and_on_a_follower() {
    let port = free_port();
    let mut leader = leader_on(port, &[]);
    let follower = start_follower(port, 2, &[]);
    wait_followers(&leader, 1);

    // A writer pipelines MSETs of ever higher generations and notes the
    // last one acknowledged.
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (acked, sent) = (acked.clone(), sent.clone());
        let mut c = Resp::connect(leader.addr);
        thread::spawn(move || {
            const DEPTH: u64 = 4;
            let mut next = 1;
            loop {
                while next <= acked.load(Ordering::SeqCst) + DEPTH {
                    if c.try_send_raw(&mset_gen(next)).is_err() {
                        return;
                    }
                    sent.store(next, Ordering::SeqCst);
                    next += 1;
                }
                match c.try_reply() {
                    Ok(Value::Simple(ok)) if ok == "OK" => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(other) => panic!("MSET answered {other:?}"),
                    Err(_) => return,
                }
            }
        })
    };
    // A reader on the follower checks every MGET it makes shows one
    // generation.
    let stop = Arc::new(AtomicBool::new(false));
    let mixes = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (stop, mixes) = (stop.clone(), mixes.clone());
        let mut c = Resp::connect(follower.addr);
        thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                c.send_raw(&mget_gen());
                if let Err(gens) = generation(&c.reply()) {
                    mixes.lock().expect("lock").push(gens);
                }
                reads += 1;
            }
            reads
        })
    };

    wait_until("40 acknowledged MSETs", || {
        acked.load(Ordering::SeqCst) >= 40
    });
    leader.kill9();
    writer.join().expect("writer");
    let (last_acked, last_sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    leader.restart();
    let gen = node_generation(&leader).expect("no generation after restart");
    assert!(
        gen >= last_acked,
        "generation {gen} after kill -9, but {last_acked} was acknowledged"
    );
    assert!(gen <= last_sent, "generation {gen} was never sent");

    wait_synced(&leader, &[&follower]);
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader");
    assert_eq!(node_generation(&follower), Some(gen));
    let mixes = mixes.lock().expect("lock");
    assert!(
        mixes.is_empty(),
        "{} of {reads} MGETs on the follower saw a mixed MSET, e.g. {:?}",
        mixes.len(),
        mixes[0]
    );
    assert!(reads > 10, "only {reads} reads on the follower");
}

/// A failover keeps every acknowledged MSET, whole, and the promoted
/// follower takes MSETs. (Which bytes reach a follower before its leader
/// dies is timing; that a batch is one record, applied whole or not at
/// all, is pinned by the torn-tail test below and the log's unit tests.)
#[test]
fn an_acknowledged_mset_survives_a_failover_whole() {
    let port = free_port();
    let mut leader = leader_on(port, &["--sync-followers", "1"]);
    // Promoted, it leads alone: it must not wait for followers of its own.
    let follower = start_follower(port, 2, &["--sync-followers", "0"]);
    wait_followers(&leader, 1);
    // A writer keeps MSETs streaming to the follower; with
    // `--sync-followers 1` an acknowledged one is on the follower.
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let acked = acked.clone();
        let mut c = Resp::connect(leader.addr);
        thread::spawn(move || {
            const DEPTH: u64 = 4;
            let mut next = 1;
            loop {
                while next <= acked.load(Ordering::SeqCst) + DEPTH {
                    if c.try_send_raw(&mset_gen(next)).is_err() {
                        return;
                    }
                    next += 1;
                }
                match c.try_reply() {
                    Ok(Value::Simple(ok)) if ok == "OK" => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(other) => panic!("MSET answered {other:?}"),
                    Err(_) => return,
                }
            }
        })
    };
    wait_until("40 acknowledged MSETs", || {
        acked.load(Ordering::SeqCst) >= 40
    });
    leader.kill9();
    writer.join().expect("writer");
    let last_acked = acked.load(Ordering::SeqCst);
    let promoted = common::ctl(follower.addr.port(), &["promote"]);
    assert!(promoted.status.success(), "promote: {promoted:?}");
    wait_until("the follower to lead", || {
        follower.info_field("role") == "leader"
    });
    let gen = node_generation(&follower).expect("a mixed MSET on the new leader");
    assert!(
        gen >= last_acked,
        "generation {gen} on the new leader, {last_acked} acknowledged"
    );
    // It takes MSETs as a leader.
    let mut c = Resp::connect(follower.addr);
    c.send_raw(&mset_gen(gen + 1));
    c.expect_reply(b"+OK\r\n", "MSET on the new leader");
    assert_eq!(node_generation(&follower), Some(gen + 1));
}

#[test]
fn a_torn_mset_or_del_at_the_log_tail_is_dropped_whole() {
    let mut node = Node::leader(&[]);
    let mut c = Resp::connect(node.addr);
    for gen in [1, 2] {
        c.send_raw(&mset_gen(gen));
        c.expect_reply(b"+OK\r\n", &format!("MSET generation {gen}"));
    }
    assert_eq!(node_generation(&node), Some(2));
    node.kill9();
    // Cut the log in the middle of the last MSET, as a crash during its
    // write would (before it was acknowledged).
    cut_log(&node, (GEN_KEYS * GEN_VALUE / 2) as u64);
    node.restart();
    assert_eq!(node.info_field("torn_tails_cut"), "1", "no tail was cut");
    assert_eq!(
        node_generation(&node),
        Some(1),
        "the torn MSET left part of itself"
    );

    // The same for a DEL of several keys: its record is cut 10 bytes
    // short (its keys alone take 96), and every key stays.
    let mut c = Resp::connect(node.addr);
    let keys: Vec<String> = (0..GEN_KEYS).map(gen_key).collect();
    let args: Vec<&str> = std::iter::once("DEL")
        .chain(keys.iter().map(String::as_str))
        .collect();
    c.expect(&cmd(&args), format!(":{GEN_KEYS}\r\n").as_bytes());
    c.expect(&cmd(&["DBSIZE"]), b":0\r\n");
    node.kill9();
    cut_log(&node, 10);
    node.restart();
    assert_eq!(node.info_field("torn_tails_cut"), "1", "no tail was cut");
    assert_eq!(
        node_generation(&node),
        Some(1),
        "the torn DEL deleted part of its keys"
    );
}

/// Cuts `bytes` off the end of a stopped node's log.
fn cut_log(node: &Node, bytes: u64) {
    let log = node.data_dir.join("leader.log");
    let file = OpenOptions::new().write(true).open(&log).expect("open log");
    let len = file.metadata().expect("metadata").len();
    file.set_len(len - bytes).expect("cut the log");
}
