//! Fuzz loops for every decoder that reads bytes from outside: the client
//! request parser ([`crate::protocol`]), the RESP command parser and
//! command reader ([`crate::resp::parse`], [`crate::resp::command`]), the
//! log record and header decoder ([`crate::wal::record`]), the
//! replication frame decoder ([`crate::replication::wire`]) and the
//! session record opener ([`crate::replication::session`]). Compiled only
//! for tests.
//!
//! Each target feeds random valid encodings, mutations of them, and plain
//! random bytes, and asserts that nothing panics and that the results are
//! sane: a valid encoding decodes whole and re-encodes to the same bytes
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
use crate::resp::command::{parse_command, Client, Command, CommandError, CommandInfo, Condition};
use crate::resp::parse::{Limits, Parsed, ProtocolError, Resume};
use crate::resp::{self};
use crate::testutil::{fuzz, xorshift, Fuzz, Input};
use crate::wal::lineage::Segment;
use crate::wal::record::{Decoded, Header, Op, Record, HEADER_LEN, RECORD_PREFIX_LEN};
use crate::wal::snapshot::Announced;
use std::ops::Range;

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

/// A random valid record, encoded.
fn valid_record(f: &mut Fuzz, seq: u64) -> Vec<u8> {
    let key: Vec<u8> = f.bytes(40).into_iter().chain([b'k']).collect();
    let put = f.next() & 3 != 0;
    let value: Vec<u8> = if put {
        f.bytes(60).into_iter().chain([b'v']).collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    Record {
        seq,
        op: if put { Op::Put } else { Op::Delete },
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

/// Bytes that matter to RESP, for insertions.
const RESP_ALPHABET: &[u8] = b"*$\r\n \t-0123456789:+\x00";

/// The RESP encoding of a command's arguments: an array of bulk strings.
fn resp_array<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A random argument: binary bytes, a word, or RESP's own punctuation.
fn resp_arg(f: &mut Fuzz) -> Vec<u8> {
    match f.below(4) {
        0 => f.bytes(40),
        1 => key(f),
        2 => (0..f.below(12)).map(|_| *f.pick(RESP_ALPHABET)).collect(),
        _ => f
            .pick(&[&b"GET"[..], b"SET", b"PING", b"", b"\r\n", b"$3", b"*1"])
            .to_vec(),
    }
}

/// One valid command, or something Redis skips, as a client sends it.
fn valid_resp(f: &mut Fuzz) -> Vec<u8> {
    match f.below(10) {
        0..6 => {
            let args: Vec<Vec<u8>> = (0..1 + f.below(4)).map(|_| resp_arg(f)).collect();
            resp_array(&args)
        }
        6 | 7 => {
            // An inline command: words without blanks, blanks between.
            let mut line = Vec::new();
            for _ in 0..1 + f.below(4) {
                line.extend((0..f.below(3)).map(|_| *f.pick(b" \t")));
                line.extend(key(f));
            }
            line.extend((0..f.below(2)).map(|_| b' '));
            line.extend_from_slice(if f.next() & 1 == 0 { b"\n" } else { b"\r\n" });
            if line[0] == b'*' {
                // That would be an array.
                line[0] = b'x';
            }
            line
        }
        _ => f
            .pick(&[&b"\r\n"[..], b"\n", b" \t\r\n", b"*0\r\n", b"*-1\r\n"])
            .to_vec(),
    }
}

/// Limits for a fuzz input: roomy for a valid one (which must parse
/// whole), otherwise often tight enough to hit, from the input's length.
fn resp_limits(input: &Input) -> Limits {
    let n = input.bytes.len();
    if input.valid || n.is_multiple_of(2) {
        Limits {
            max_bulk: 1 << 20,
            max_inline: 4096,
            max_request: 1 << 22,
        }
    } else {
        Limits {
            max_bulk: n * 7 % 64,
            max_inline: n * 5 % 80,
            max_request: 1 + n * 11 % 200,
        }
    }
}

#[test]
fn resp_parser() {
    fuzz(
        "resp",
        |f| {
            let mut bytes = Vec::new();
            for _ in 0..1 + f.below(3) {
                bytes.extend(valid_resp(f));
            }
            f.vary(bytes, 100, RESP_ALPHABET)
        },
        |input| {
            let limits = resp_limits(input);
            // Chunk boundaries for the resumable parser, from the input.
            let mut cut_state = input.bytes.len() as u64 | 1;
            let mut rest = &input.bytes[..];
            let mut args = Vec::new();
            loop {
                let whole = resp::parse::parse(rest, &limits, &mut args);
                check_resp_resume(rest, &limits, &whole, &args, &mut cut_state);
                match whole {
                    Ok(Parsed::Command { used }) => {
                        assert!(used > 0 && used <= rest.len());
                        assert!(!args.is_empty() && args.iter().all(|r| r.end <= used));
                        let words: Vec<&[u8]> = args.iter().map(|r| &rest[r.clone()]).collect();
                        if rest[0] == b'*' {
                            // Lengths are canonical, so an accepted array is
                            // exactly the encoding of what it gave.
                            assert_eq!(resp_array(&words), rest[..used], "encode(parse(x)) != x");
                        } else {
                            assert_eq!(rest[used - 1], b'\n');
                            for word in &words {
                                assert!(!word.is_empty());
                                assert!(!word.iter().any(|b| b" \t\r\n\x0b\x0c".contains(b)));
                            }
                        }
                        check_resp_prefixes(&rest[..used], &limits);
                        rest = &rest[used..];
                    }
                    Ok(Parsed::Skip { used }) => {
                        assert!(used > 0 && used <= rest.len());
                        check_resp_prefixes(&rest[..used], &limits);
                        rest = &rest[used..];
                    }
                    Ok(Parsed::Incomplete) => {
                        assert!(!input.valid || rest.is_empty(), "a valid command left over");
                        break;
                    }
                    Err(e) => {
                        assert!(!input.valid, "a valid command refused: {e}");
                        assert!(!e.to_string().contains(['\r', '\n']));
                        break;
                    }
                }
            }
        },
    );
}

/// Every strict prefix of a command is incomplete.
fn check_resp_prefixes(command: &[u8], limits: &Limits) {
    let mut args = Vec::new();
    for cut in 0..command.len() {
        let got = resp::parse::parse(&command[..cut], limits, &mut args);
        assert_eq!(got, Ok(Parsed::Incomplete), "prefix of {cut} bytes");
    }
}

/// Fed in random chunks through one [`Resume`], `buf` gives what one call
/// on all of it gave, and so does the first prefix that is not incomplete
/// (what a parse says never changes with more bytes).
fn check_resp_resume(
    buf: &[u8],
    limits: &Limits,
    whole: &Result<Parsed, ProtocolError>,
    whole_args: &[Range<usize>],
    cut_state: &mut u64,
) {
    let mut resume = Resume::default();
    let mut args = Vec::new();
    let mut cut = 0;
    loop {
        cut = (cut + 1 + (xorshift(cut_state) % 8) as usize).min(buf.len());
        let got = resp::parse::parse_resume(&buf[..cut], limits, &mut args, &mut resume);
        if got != Ok(Parsed::Incomplete) || cut == buf.len() {
            assert_eq!(&got, whole, "resumed at {cut} of {}", buf.len());
            if let Ok(Parsed::Command { .. }) = got {
                assert_eq!(args, whole_args);
            }
            break;
        }
    }
}

/// A valid command line for [`parse_command`], command words in random
/// case.
fn valid_command(f: &mut Fuzz) -> Vec<Vec<u8>> {
    let k = key(f);
    let word = |f: &mut Fuzz, w: &str| -> Vec<u8> {
        w.bytes()
            .map(|b| {
                if f.next() & 1 == 0 {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            })
            .collect()
    };
    let name = |f: &mut Fuzz| -> Vec<u8> {
        (0..f.below(10))
            .map(|_| 0x21 + f.below(0x7f - 0x21) as u8)
            .collect()
    };
    let number = |f: &mut Fuzz| (f.next() >> (1 + f.below(63))).to_string().into_bytes();
    let args = match f.below(24) {
        0 => vec![word(f, "GET"), k],
        1 => {
            let mut args = vec![word(f, "SET"), k, f.bytes(20)];
            for _ in 0..f.below(3) {
                let option = *f.pick(&["NX", "GET", "GET"]);
                args.push(word(f, option));
            }
            args
        }
        2..5 => {
            let command = *f.pick(&["MGET", "DEL", "EXISTS"]);
            let mut args = vec![word(f, command), k];
            args.extend((0..f.below(3)).map(|_| key(f)));
            args
        }
        5 => {
            let mut args = vec![word(f, "MSET")];
            for _ in 0..1 + f.below(3) {
                args.push(key(f));
                args.push(f.bytes(10));
            }
            args
        }
        6 => vec![word(f, "KEYS"), f.bytes(10)],
        7 => {
            let mut args = vec![word(f, "SCAN"), number(f)];
            for _ in 0..f.below(3) {
                if f.next() & 1 == 0 {
                    args.extend([word(f, "MATCH"), f.bytes(8)]);
                } else {
                    args.extend([
                        word(f, "COUNT"),
                        (1 + f.below(1000)).to_string().into_bytes(),
                    ]);
                }
            }
            args
        }
        8 => vec![word(f, "WAIT"), number(f), number(f)],
        9 => {
            let command = *f.pick(&["DBSIZE", "ROLE", "KEYVAL.DIGEST", "QUIT", "PING", "INFO"]);
            vec![word(f, command)]
        }
        10 => vec![word(f, "INFO"), f.bytes(8), f.bytes(8)],
        11 => vec![word(f, "PING"), f.bytes(8)],
        12 => vec![word(f, "ECHO"), f.bytes(8)],
        13 => {
            let mut args = vec![word(f, "HELLO")];
            if f.next() & 1 == 0 {
                args.push(f.pick(&[&b"2"[..], b"3"]).to_vec());
                for _ in 0..f.below(3) {
                    if f.next() & 1 == 0 {
                        args.extend([word(f, "AUTH"), f.bytes(8), f.bytes(8)]);
                    } else {
                        args.extend([word(f, "SETNAME"), name(f)]);
                    }
                }
            }
            args
        }
        14 => vec![word(f, "AUTH"), f.bytes(8)],
        15 => vec![word(f, "AUTH"), f.bytes(8), f.bytes(8)],
        16 => vec![word(f, "SELECT"), b"0".to_vec()],
        17 => vec![word(f, "CONFIG"), word(f, "GET"), f.bytes(8)],
        18 => vec![word(f, "COMMAND")],
        19 => {
            let sub = *f.pick(&["COUNT", "DOCS", "INFO", "LIST"]);
            vec![word(f, "COMMAND"), word(f, sub)]
        }
        20 => vec![word(f, "CLIENT"), word(f, "SETNAME"), name(f)],
        21 => {
            let sub = *f.pick(&["GETNAME", "ID"]);
            vec![word(f, "CLIENT"), word(f, sub)]
        }
        22 => {
            let attribute = *f.pick(&["LIB-NAME", "LIB-VER"]);
            vec![
                word(f, "CLIENT"),
                word(f, "SETINFO"),
                word(f, attribute),
                name(f),
            ]
        }
        _ => vec![word(f, "QUIT"), f.bytes(8)],
    };
    args
}

/// Arguments that are close to commands but often wrong.
fn near_command(f: &mut Fuzz) -> Vec<Vec<u8>> {
    const WORDS: &[&[u8]] = &[
        b"GET",
        b"SET",
        b"MSET",
        b"SCAN",
        b"WAIT",
        b"SELECT",
        b"HELLO",
        b"AUTH",
        b"CLIENT",
        b"CONFIG",
        b"COMMAND",
        b"PING",
        b"NX",
        b"XX",
        b"EX",
        b"KEEPTTL",
        b"COUNT",
        b"MATCH",
        b"SETNAME",
        b"SETINFO",
        b"LIB-NAME",
        b"GETNAME",
        b"DOCS",
        b"-1",
        b"0",
        b"2",
        b"3",
        b"99999999999999999999",
        b"",
        b" ",
        b"a b",
        b"\0",
        b"\r\n",
        b"\xff",
    ];
    let mut args: Vec<Vec<u8>> = (0..f.below(6))
        .map(|_| match f.below(4) {
            0 => f.bytes(12),
            1 => key(f),
            _ => f.pick(WORDS).to_vec(),
        })
        .collect();
    if f.below(10) == 0 {
        args.push(vec![b'x'; 100 + f.below(200)]);
    }
    args
}

/// The canonical arguments of a command: parsing them gives it back.
fn format_command(command: &Command<'_>) -> Vec<Vec<u8>> {
    let words = |words: &[&[u8]]| words.iter().map(|w| w.to_vec()).collect::<Vec<_>>();
    let with = |first: &[&[u8]], rest: &[&[u8]]| {
        let mut args = words(first);
        args.extend(words(rest));
        args
    };
    match command {
        Command::Ping(None) => words(&[b"PING"]),
        Command::Ping(Some(message)) => words(&[b"PING", message]),
        Command::Echo(message) => words(&[b"ECHO", message]),
        Command::Quit => words(&[b"QUIT"]),
        Command::Hello(hello) => {
            let mut args = words(&[b"HELLO"]);
            match hello.proto {
                Some(proto) => args.push(proto.number().to_string().into_bytes()),
                None => assert!(hello.auth.is_none() && hello.setname.is_none()),
            }
            if let Some((user, password)) = &hello.auth {
                args.extend(words(&[b"AUTH", user, password.0]));
            }
            if let Some(name) = hello.setname {
                args.extend(words(&[b"SETNAME", name]));
            }
            args
        }
        Command::Auth {
            user: None,
            password,
        } => words(&[b"AUTH", password.0]),
        Command::Auth {
            user: Some(user),
            password,
        } => words(&[b"AUTH", user, password.0]),
        Command::Select => words(&[b"SELECT", b"0"]),
        Command::Client(Client::SetName(name)) => words(&[b"CLIENT", b"SETNAME", name]),
        Command::Client(Client::GetName) => words(&[b"CLIENT", b"GETNAME"]),
        Command::Client(Client::SetInfo) => words(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]),
        Command::Client(Client::Id) => words(&[b"CLIENT", b"ID"]),
        Command::CommandInfo(CommandInfo::List) => words(&[b"COMMAND"]),
        Command::CommandInfo(CommandInfo::Docs) => words(&[b"COMMAND", b"DOCS"]),
        Command::CommandInfo(CommandInfo::Count) => words(&[b"COMMAND", b"COUNT"]),
        Command::ConfigGet(patterns) => with(&[b"CONFIG", b"GET"], patterns),
        Command::Set(set) => {
            let mut args = words(&[b"SET", set.key, set.value]);
            match set.condition {
                Some(Condition::Nx) => args.push(b"NX".to_vec()),
                Some(Condition::Xx) => args.push(b"XX".to_vec()),
                None => {}
            }
            if set.get {
                args.push(b"GET".to_vec());
            }
            args
        }
        Command::Get(key) => words(&[b"GET", key]),
        Command::MGet(keys) => with(&[b"MGET"], keys),
        Command::Del(keys) => with(&[b"DEL"], keys),
        Command::Exists(keys) => with(&[b"EXISTS"], keys),
        Command::MSet(pairs) => with(&[b"MSET"], pairs),
        Command::Keys(pattern) => words(&[b"KEYS", pattern]),
        Command::Scan(scan) => {
            let mut args = words(&[b"SCAN", scan.cursor.to_string().as_bytes()]);
            if let Some(pattern) = scan.pattern {
                args.extend(words(&[b"MATCH", pattern]));
            }
            args.extend(words(&[b"COUNT", scan.count.to_string().as_bytes()]));
            args
        }
        Command::DbSize => words(&[b"DBSIZE"]),
        Command::Wait {
            replicas,
            timeout_ms,
        } => words(&[
            b"WAIT",
            replicas.to_string().as_bytes(),
            timeout_ms.to_string().as_bytes(),
        ]),
        Command::Role => words(&[b"ROLE"]),
        Command::Info(sections) => with(&[b"INFO"], sections),
        Command::Digest => words(&[b"KEYVAL.DIGEST"]),
    }
}

#[test]
fn command_reader() {
    fuzz(
        "command",
        |f| {
            // Arguments travel as a RESP array, so a failure prints as
            // bytes and mutations reach the argument list.
            let near = f.below(3) == 0;
            let args = if near {
                near_command(f)
            } else {
                valid_command(f)
            };
            let mut input = f.vary(resp_array(&args), 60, RESP_ALPHABET);
            input.valid &= !near;
            input
        },
        |input| {
            let limits = resp_limits(input);
            let mut ranges = Vec::new();
            let Ok(Parsed::Command { .. }) = resp::parse::parse(&input.bytes, &limits, &mut ranges)
            else {
                assert!(!input.valid, "a valid command did not parse");
                return;
            };
            let args: Vec<&[u8]> = ranges.iter().map(|r| &input.bytes[r.clone()]).collect();
            match parse_command(&args) {
                Ok(command) => check_command(&command),
                Err(e) => {
                    assert!(!input.valid, "a valid command refused: {e}");
                    let text = e.to_string();
                    assert!(text.starts_with("ERR ") || text.starts_with("NOPROTO "));
                    assert!(!text.contains(['\r', '\n']), "{text:?}");
                    if let CommandError::Unknown { name, args } = &e {
                        // 128 bytes each, a byte shown as at most 3.
                        assert!(name.len() <= 3 * 128 && args.len() <= 3 * (128 + 3));
                    }
                }
            }
        },
    );
}

/// What must hold for a command that parsed: its keys follow the rules,
/// and its canonical arguments parse to the same command.
fn check_command(command: &Command<'_>) {
    let keys: &[&[u8]] = match command {
        Command::Get(key) => &[key],
        Command::Set(set) => &[set.key],
        Command::MGet(keys) | Command::Del(keys) | Command::Exists(keys) => keys,
        Command::MSet(pairs) => {
            assert!(pairs.len().is_multiple_of(2));
            pairs
                .iter()
                .step_by(2)
                .for_each(|key| assert!(check_key(key).is_ok()));
            &[]
        }
        Command::Scan(scan) => {
            assert!(scan.count >= 1);
            &[]
        }
        _ => &[],
    };
    assert!(keys.iter().all(|key| check_key(key).is_ok()));
    let again = format_command(command);
    let again: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
    assert_eq!(parse_command(&again).as_ref(), Ok(command));
}
