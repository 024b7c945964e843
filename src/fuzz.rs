//! Fuzz loops for every decoder that reads bytes from outside: the client
//! request parser ([`crate::protocol`]), the log record and header decoder
//! ([`crate::wal::record`]), the replication frame decoder
//! ([`crate::replication::wire`]) and the session record opener
//! ([`crate::replication::session`]). Compiled only for tests.
//!
//! Each target feeds random valid encodings (log records include batches
//! and empty values), mutations of them, and plain random bytes, and
//! asserts that nothing panics and that the results are sane: a valid
//! encoding decodes whole and re-encodes to the same bytes
//! (decode(encode(x)) == x), anything accepted re-encodes to exactly the
//! bytes it used, and a decoder never claims more bytes than it was given.
//! `make test` runs each for a few seconds; `make fuzz` for `FUZZ_SECONDS`
//! (default 60). A failure prints `FUZZ_SEED` and the input in hex; turn
//! it into a regression test in the module it broke.

use crate::protocol::{
    check_key, next_line, parse_hello, parse_request, AdminRequest, Hello, Line, Request,
    MAX_KEY_BYTES,
};
use crate::replication::auth::Prover;
use crate::replication::session::{Opener, Session};
use crate::replication::wire::{Frame, Mode, Plan, FRAME_HEADER_LEN};
use crate::testutil::{fuzz, Fuzz};
use crate::wal::lineage::Segment;
use crate::wal::record::{
    BatchEntries, Decoded, Header, Op, Record, HEADER_LEN, RECORD_PREFIX_LEN,
};
use crate::wal::snapshot::Announced;

/// Bytes that matter to the line protocol, for insertions.
const LINE_ALPHABET: &[u8] = b" \r\n\t\x00\x7f|:0123456789PUTGETDELEKYSHOCLIFNkv";

/// A random key: 1 to 1024 bytes, none of them whitespace or control.
fn key(f: &mut Fuzz) -> Vec<u8> {
    let len = if f.below(20) == 0 {
        1 + f.below(MAX_KEY_BYTES)
    } else {
        1 + f.below(12)
    };
    (0..len)
        .map(|_| 0x21 + f.below(0x7f - 0x21) as u8)
        .collect()
}

/// A random request value: not empty, no `\n`, no `\r` at the end.
fn value(f: &mut Fuzz) -> Vec<u8> {
    let mut v: Vec<u8> = (0..1 + f.below(40))
        .map(|_| loop {
            let b = f.next() as u8;
            if b != b'\n' {
                break b;
            }
        })
        .collect();
    if v.last() == Some(&b'\r') {
        v.pop();
        v.push(b'x');
    }
    v
}

/// The canonical line of a request (upper-case command words).
fn format_request(req: &Request<'_>) -> Vec<u8> {
    let parts: Vec<&[u8]> = match req {
        Request::Put { key, value } => vec![b"PUT", key, value],
        Request::Get { key } => vec![b"GET", key],
        Request::Delete { key } => vec![b"DELETE", key],
        Request::Keys { prefix: [] } => vec![b"KEYS"],
        Request::Keys { prefix } => vec![b"KEYS", prefix],
        Request::Close => vec![b"CLOSE"],
        Request::Ping => vec![b"PING"],
        Request::Info => vec![b"INFO"],
        Request::Digest => vec![b"DIGEST"],
        Request::Auth { password } => vec![b"AUTH", password.0],
        Request::Admin(AdminRequest::Promote) => vec![b"PROMOTE"],
        Request::Admin(AdminRequest::Compact) => vec![b"COMPACT"],
        Request::Admin(AdminRequest::Fence) => vec![b"FENCE"],
        Request::Admin(AdminRequest::Follow { host, port }) => {
            return [b"FOLLOW ", *host, b" ", port.to_string().as_bytes()].concat();
        }
    };
    parts.join(&b' ')
}

/// The canonical line of a handshake.
fn format_hello(hello: &Hello<'_>) -> Vec<u8> {
    match hello {
        Hello::Client => b"HELLO CLIENT".to_vec(),
        Hello::Follower { id, nonce } => [b"HELLO FOLLOWER|", *id, b":", nonce].concat(),
        Hello::Admin { nonce } => [b"HELLO ADMIN|", *nonce].concat(),
    }
}

/// A valid request line, command words in random case, `\n` or `\r\n`.
fn valid_line(f: &mut Fuzz) -> Vec<u8> {
    let k = key(f);
    let mut line = match f.below(13) {
        0..3 => [b"PUT ", &k[..], b" ", &value(f)].concat(),
        3..5 => [b"GET ", &k[..]].concat(),
        5 => [b"DELETE ", &k[..]].concat(),
        6 => [b"KEYS ", &k[..]].concat(),
        7 => f
            .pick(&[&b"KEYS"[..], b"PING", b"INFO", b"DIGEST", b"CLOSE"])
            .to_vec(),
        8 => [
            &b"FOLLOW "[..],
            *f.pick(&[&b"10.0.0.2"[..], b"db-2.example.com", b"::1", b"localhost"]),
            b" ",
            (1 + f.below(65535)).to_string().as_bytes(),
        ]
        .concat(),
        9 => [
            b"HELLO FOLLOWER|",
            &k[..],
            b":",
            hex::encode(f.bytes(8)).as_bytes(),
        ]
        .concat(),
        10 => b"HELLO CLIENT".to_vec(),
        11 => [b"AUTH ", &value(f)[..]].concat(),
        _ => f.pick(&[&b"PROMOTE"[..], b"COMPACT", b"FENCE"]).to_vec(),
    };
    let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    for b in &mut line[..word_end] {
        if f.next() & 1 == 0 {
            b.make_ascii_lowercase();
        }
    }
    line.extend_from_slice(if f.next() & 1 == 0 { b"\n" } else { b"\r\n" });
    line
}

#[test]
fn request_parser() {
    fuzz(
        "protocol",
        |f| {
            let mut bytes = Vec::new();
            for _ in 0..1 + f.below(3) {
                bytes.extend(valid_line(f));
            }
            f.vary(bytes, 80, LINE_ALPHABET)
        },
        |input| {
            let buf = &input.bytes;
            let max = if input.valid {
                4096
            } else {
                1 + (buf.len() * 7) % 64
            };
            let mut rest = &buf[..];
            loop {
                match next_line(rest, max) {
                    Line::Complete(line, used) => {
                        assert!(used <= rest.len() && used > line.len() && line.len() <= max);
                        assert!(!line.contains(&b'\n'));
                        check_line(line, input.valid);
                        rest = &rest[used..];
                    }
                    Line::Incomplete => {
                        assert!(!input.valid || rest.is_empty(), "a valid line left over");
                        assert!(rest.len() <= max + 1);
                        break;
                    }
                    Line::TooLong => {
                        assert!(!input.valid && rest.len() > max);
                        break;
                    }
                }
            }
        },
    );
}

/// What must hold for one line: whatever parses re-formats to a line that
/// parses to the same thing, and a valid line parses.
fn check_line(line: &[u8], valid: bool) {
    let hello = parse_hello(line);
    if let Some(h) = &hello {
        let again = format_hello(h);
        assert_eq!(parse_hello(&again).as_ref(), Some(h));
    }
    match parse_request(line) {
        Ok(req) => {
            match &req {
                Request::Put { key, value } => {
                    assert!(check_key(key).is_ok() && !value.is_empty());
                }
                Request::Get { key } | Request::Delete { key } => assert!(check_key(key).is_ok()),
                Request::Admin(AdminRequest::Follow { host, port }) => {
                    assert!(crate::protocol::is_host(host) && *port != 0);
                }
                _ => {}
            }
            let again = format_request(&req);
            assert_eq!(parse_request(&again).as_ref(), Ok(&req));
        }
        Err(e) => assert!(!valid || hello.is_some(), "valid line refused: {e:?}"),
    }
}

/// A random put or delete: a key of 1 to 41 bytes, and for a put a value
/// of any bytes, empty included.
fn valid_entry(f: &mut Fuzz) -> (Op, Vec<u8>, Vec<u8>) {
    let key: Vec<u8> = f.bytes(40).into_iter().chain([b'k']).collect();
    if f.next() & 3 != 0 {
        (Op::Put, key, f.bytes(60))
    } else {
        (Op::Delete, key, Vec::new())
    }
}

/// A random valid record, encoded: a put, a delete, or a batch of 1 to 4
/// of them.
fn valid_record(f: &mut Fuzz, seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if f.below(4) == 0 {
        let entries: Vec<(Op, Vec<u8>, Vec<u8>)> =
            (0..1 + f.below(4)).map(|_| valid_entry(f)).collect();
        let entries: Vec<(Op, &[u8], &[u8])> = entries
            .iter()
            .map(|(op, k, v)| (*op, &k[..], &v[..]))
            .collect();
        Record::encode_batch(&mut out, seq, &entries).expect("a valid batch");
        return out;
    }
    let (op, key, value) = valid_entry(f);
    Record {
        seq,
        op,
        key: &key,
        value: &value,
    }
    .encode(&mut out);
    out
}

#[test]
fn log_record_decoder() {
    fuzz(
        "record",
        |f| {
            let mut bytes = Vec::new();
            let seq = f.next() >> f.below(64);
            if f.below(4) == 0 {
                Header {
                    history: f
                        .next()
                        .to_le_bytes()
                        .repeat(2)
                        .try_into()
                        .unwrap_or([0; 16]),
                    base_seq: seq,
                    epoch: f.next() >> f.below(64),
                }
                .encode(&mut bytes);
            }
            for i in 0..1 + f.below(3) {
                bytes.extend(valid_record(f, seq.wrapping_add(i as u64)));
            }
            f.vary(bytes, 100, &[0, 1, 2, 0xff])
        },
        |input| {
            let mut rest = &input.bytes[..];
            if let Ok(header) = Header::decode(rest) {
                let mut again = Vec::new();
                header.encode(&mut again);
                assert_eq!(again, rest[..HEADER_LEN]);
                rest = &rest[HEADER_LEN..];
            }
            while !rest.is_empty() {
                match Record::decode(rest) {
                    Ok(Decoded::Record(rec, used)) => {
                        assert!(used <= rest.len() && used >= RECORD_PREFIX_LEN);
                        assert_eq!(used, rec.encoded_len());
                        let mut again = Vec::new();
                        rec.encode(&mut again);
                        assert_eq!(again, rest[..used], "decode(encode(x)) != x");
                        check_entries(&rec, &rest[..used]);
                        rest = &rest[used..];
                    }
                    Ok(Decoded::Incomplete { needed }) => {
                        assert!(needed > rest.len(), "Incomplete with enough bytes");
                        assert!(!input.valid, "a valid record is incomplete");
                        break;
                    }
                    Err(e) => {
                        assert!(!input.valid, "a valid record refused: {e}");
                        break;
                    }
                }
            }
        },
    );
}

/// What must hold for an accepted record's entries: a batch's parse, all
/// of them, and encode again to the same record; a plain record is its
/// own one entry.
fn check_entries(rec: &Record<'_>, bytes: &[u8]) {
    let entries: Vec<_> = rec.entries().collect();
    match rec.op {
        Op::Batch => {
            let checked: Result<Vec<_>, _> = BatchEntries::new(rec.value).collect();
            assert_eq!(checked.as_ref(), Ok(&entries), "an entry did not parse");
            assert!(!entries.is_empty(), "a batch without entries");
            let triples: Vec<(Op, &[u8], &[u8])> =
                entries.iter().map(|e| (e.op, e.key, e.value)).collect();
            let mut again = Vec::new();
            Record::encode_batch(&mut again, rec.seq, &triples).expect("re-encode");
            assert_eq!(again, bytes, "the entries re-encode to another batch");
        }
        Op::Put | Op::Delete => assert_eq!(entries.len(), 1),
        Op::Fork => assert!(entries.is_empty()),
    }
    for entry in entries {
        assert!(matches!(entry.op, Op::Put | Op::Delete) && !entry.key.is_empty());
        assert!(entry.op == Op::Put || entry.value.is_empty());
    }
}

/// A random valid frame, encoded.
fn valid_frame(f: &mut Fuzz) -> Vec<u8> {
    let history: [u8; 16] = f
        .next()
        .to_le_bytes()
        .repeat(2)
        .try_into()
        .unwrap_or([0; 16]);
    let (seq, epoch) = (f.next() >> f.below(64), f.next() >> f.below(64));
    let bytes = f.bytes(100);
    let lineage = (0..1 + f.below(3))
        .map(|i| Segment {
            history: [i as u8; 16],
            epoch,
            start: seq >> (3 - i),
        })
        .collect();
    let mode = if f.next() & 1 == 0 {
        Mode::CatchUp
    } else {
        Mode::Snapshot
    };
    let frame = match f.below(9) {
        0 => Frame::Sync {
            seq,
            epoch,
            want_snapshot: f.next() & 1 == 0,
            lineage,
            port: (f.next() & 1 == 0).then(|| f.next() as u16),
        },
        1 => Frame::Ack { seq, epoch },
        2 => Frame::Plan(Plan {
            mode,
            history,
            epoch,
            seq,
            common: (mode == Mode::CatchUp || f.next() & 1 == 0).then_some(seq >> 1),
            keep_forks: f.below(4) as u32,
            acks_awaited: f.next() & 1 == 0,
            announced: (mode == Mode::Snapshot && f.next() & 1 == 0).then_some(Announced {
                bytes: (seq << 7) | 1,
                keys: seq >> 1,
            }),
            policy: crate::replication::SyncPolicy {
                followers: f.below(11),
                timeout_ms: seq >> 3,
            },
        }),
        3 => Frame::Chunk(&bytes),
        4 => Frame::End { seq },
        5 => Frame::Heartbeat { seq, epoch },
        6 => Frame::Wait {
            awaited: f.next() & 1 == 0,
        },
        _ => Frame::Records(&bytes),
    };
    let mut out = Vec::new();
    frame.encode(&mut out);
    out
}

#[test]
fn replication_frame_decoder() {
    fuzz(
        "wire",
        |f| {
            let mut bytes = Vec::new();
            for _ in 0..1 + f.below(3) {
                bytes.extend(valid_frame(f));
            }
            f.vary(bytes, 100, b"SAPFERH\x00\x01\x02\x08\x10\x21\xff")
        },
        |input| {
            let mut rest = &input.bytes[..];
            while !rest.is_empty() {
                match Frame::decode(rest) {
                    Ok(Some((frame, used))) => {
                        assert!(used <= rest.len() && used >= FRAME_HEADER_LEN);
                        let mut again = Vec::new();
                        frame.encode(&mut again);
                        assert_eq!(again, rest[..used], "decode(encode(x)) != x");
                        rest = &rest[used..];
                    }
                    Ok(None) => {
                        assert!(!input.valid, "a valid frame is incomplete");
                        break;
                    }
                    Err(e) => {
                        assert!(!input.valid, "a valid frame refused: {e}");
                        break;
                    }
                }
            }
        },
    );
}

/// The session both ends of the sealed-stream target use.
fn test_session(me: Prover, peer: Prover) -> Session {
    Session::new(
        b"fuzz-secret",
        me,
        peer,
        "2",
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    )
}

#[test]
fn sealed_stream_opener() {
    fuzz(
        "session",
        |f| {
            // Frames as a leader sends them, each sealed on its own, so
            // every record boundary is a frame boundary.
            let mut leader = test_session(Prover::Leader, Prover::Follower);
            let mut bytes = Vec::new();
            for _ in 0..1 + f.below(4) {
                leader
                    .sealer
                    .seal(&valid_frame(f), &mut bytes)
                    .expect("seal");
            }
            f.vary(bytes, 200, b"\x00\x01\x10\x40\xff")
        },
        |input| {
            let mut follower = test_session(Prover::Follower, Prover::Leader);
            let mut plain = Vec::new();
            let result = follower.opener.open(&input.bytes, &mut plain);
            match result {
                Ok(used) => {
                    assert!(used <= input.bytes.len());
                    assert!(input.bytes.len() - used < Opener::MAX_PENDING);
                    assert!(
                        !input.valid || used == input.bytes.len(),
                        "a valid record left"
                    );
                }
                Err(e) => assert!(!input.valid, "a valid stream refused: {e}"),
            }
            // Whatever opened is whole frames the leader sent: a change to
            // any byte would have failed its record's tag.
            let mut rest = &plain[..];
            while !rest.is_empty() {
                match Frame::decode(rest) {
                    Ok(Some((_, used))) => rest = &rest[used..],
                    other => panic!("opened bytes that are not the frames sent: {other:?}"),
                }
            }
        },
    );
}
