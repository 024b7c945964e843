//! Wire formats of the two servers the bench can drive: request encoding and
//! incremental reply parsing for the keyval line protocol and for Redis RESP.
//!
//! Parsing never consumes a partial reply: [`parse_reply`] looks at the bytes
//! received so far and either returns one complete reply plus the number of
//! bytes it spans, or `Ok(None)` when more bytes are needed (a line or bulk
//! string split across reads). Malformed input is a [`WireError`], never a
//! panic.

use std::fmt;

/// Longest reply line or bulk string accepted before the stream is declared
/// malformed (guards against unbounded buffering on a desynchronised stream).
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// Nesting limit for RESP arrays (the bench never expects arrays at all).
const MAX_ARRAY_DEPTH: usize = 8;

/// Which protocol to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The keyval line protocol (`HELLO CLIENT`, `PUT k v`, `GET k`).
    Keyval,
    /// Redis RESP (`SET`, `GET`).
    Resp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Keyval => "keyval",
            Protocol::Resp => "resp",
        })
    }
}

/// A request kind issued by the load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read one key.
    Get,
    /// Write one key.
    Put,
}

/// A reply as framed on the wire, borrowing from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum RawReply<'a> {
    /// One keyval line, without its `\n` (and without a trailing `\r`).
    Line(&'a [u8]),
    /// RESP simple string (`+OK`).
    Simple(&'a [u8]),
    /// RESP error (`-ERR ...`).
    Error(&'a [u8]),
    /// RESP integer (`:5`).
    Integer(i64),
    /// RESP bulk string; `None` is the null bulk string `$-1`.
    Bulk(Option<&'a [u8]>),
    /// RESP array with its element count (`None` for `*-1`); the elements
    /// are consumed along with it but not returned.
    Array(Option<usize>),
}

/// What a reply means for the request it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A PUT was acknowledged.
    Stored,
    /// A GET returned a value of this many bytes.
    Found(usize),
    /// A GET found no value.
    NotFound,
    /// The server answered with an error (or with a reply that does not fit
    /// the request).
    Error,
}

/// A byte stream that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The greeting a keyval client must send first.
pub const KEYVAL_HELLO: &[u8] = b"HELLO CLIENT\n";
/// The greeting line a keyval server answers with (without `\n`).
pub const KEYVAL_HELLO_REPLY: &[u8] = b"HELLO SERVER";

/// Appends the encoding of one request to `out`. `value` is ignored for
/// [`Op::Get`]. Keyval keys and values must not contain spaces or newlines;
/// the bench only generates such keys and values.
pub fn encode_request(proto: Protocol, op: Op, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    match (proto, op) {
        (Protocol::Keyval, Op::Put) => {
            out.extend_from_slice(b"PUT ");
            out.extend_from_slice(key);
            out.push(b' ');
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        (Protocol::Keyval, Op::Get) => {
            out.extend_from_slice(b"GET ");
            out.extend_from_slice(key);
            out.push(b'\n');
        }
        (Protocol::Resp, Op::Put) => encode_resp_command(&[b"SET", key, value], out),
        (Protocol::Resp, Op::Get) => encode_resp_command(&[b"GET", key], out),
    }
}

/// Appends a RESP array of bulk strings (a Redis command) to `out`.
pub fn encode_resp_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.push(b'*');
    push_decimal(args.len(), out);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(arg.len(), out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the decimal digits of `n` without allocating.
fn push_decimal(mut n: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes the bench key for index `idx` (`key:000000123`, nine digits, more
/// if the index needs them) into `out`, replacing its contents.
pub fn format_key(idx: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"key:");
    let mut digits = [b'0'; 20];
    let mut n = idx;
    let mut i = digits.len();
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(digits.len() - 9);
    out.extend_from_slice(&digits[start..]);
}

/// Parses one complete reply from the start of `buf`.
///
/// Returns the reply and the number of bytes it occupies, `Ok(None)` when
/// `buf` holds only a prefix of a reply, or an error when the bytes cannot
/// be a reply of `proto`.
pub fn parse_reply(
    proto: Protocol,
    buf: &[u8],
) -> Result<Option<(RawReply<'_>, usize)>, WireError> {
    match proto {
        Protocol::Keyval => parse_keyval_line(buf),
        Protocol::Resp => parse_resp(buf, 0),
    }
}

/// Parses one `\n`-terminated keyval line.
fn parse_keyval_line(buf: &[u8]) -> Result<Option<(RawReply<'_>, usize)>, WireError> {
    match memchr(b'\n', buf) {
        Some(pos) => {
            let line = &buf[..pos];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((RawReply::Line(line), pos + 1)))
        }
        None if buf.len() > MAX_REPLY_BYTES => Err(WireError(format!(
            "reply line longer than {MAX_REPLY_BYTES} bytes"
        ))),
        None => Ok(None),
    }
}

/// Position of the first `needle` in `hay`.
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Splits a `\r\n`-terminated header line off `buf`: returns its body
/// (after the type byte) and the total length including `\r\n`.
fn resp_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    match memchr(b'\n', buf) {
        Some(pos) => {
            if pos == 0 || buf[pos - 1] != b'\r' {
                return Err(WireError("RESP line not terminated by CRLF".into()));
            }
            Ok(Some((&buf[1..pos - 1], pos + 1)))
        }
        None if buf.len() > MAX_REPLY_BYTES => Err(WireError(format!(
            "RESP line longer than {MAX_REPLY_BYTES} bytes"
        ))),
        None => Ok(None),
    }
}

/// Parses a signed decimal integer as used in RESP headers.
fn parse_int(body: &[u8]) -> Result<i64, WireError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            WireError(format!(
                "bad RESP integer {:?}",
                String::from_utf8_lossy(body)
            ))
        })
}

/// Parses one RESP value (recursing into arrays up to a depth limit).
fn parse_resp(buf: &[u8], depth: usize) -> Result<Option<(RawReply<'_>, usize)>, WireError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((body, header_len)) = resp_line(buf)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((RawReply::Simple(body), header_len))),
        b'-' => Ok(Some((RawReply::Error(body), header_len))),
        b':' => Ok(Some((RawReply::Integer(parse_int(body)?), header_len))),
        b'$' => {
            let len = parse_int(body)?;
            if len == -1 {
                return Ok(Some((RawReply::Bulk(None), header_len)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= MAX_REPLY_BYTES)
                .ok_or_else(|| WireError(format!("bad bulk string length {len}")))?;
            let total = header_len + len + 2;
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[header_len + len..total] != b"\r\n" {
                return Err(WireError("bulk string not terminated by CRLF".into()));
            }
            Ok(Some((
                RawReply::Bulk(Some(&buf[header_len..header_len + len])),
                total,
            )))
        }
        b'*' => {
            let n = parse_int(body)?;
            if n == -1 {
                return Ok(Some((RawReply::Array(None), header_len)));
            }
            if depth >= MAX_ARRAY_DEPTH {
                return Err(WireError("RESP arrays nested too deeply".into()));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_REPLY_BYTES)
                .ok_or_else(|| WireError(format!("bad array length {n}")))?;
            let mut pos = header_len;
            for _ in 0..n {
                match parse_resp(&buf[pos..], depth + 1)? {
                    Some((_, used)) => pos += used,
                    None => return Ok(None),
                }
            }
            Ok(Some((RawReply::Array(Some(n)), pos)))
        }
        other => Err(WireError(format!(
            "unexpected RESP type byte 0x{other:02x}"
        ))),
    }
}

/// Interprets `reply` as the answer to a request of kind `op`.
pub fn classify(op: Op, reply: &RawReply<'_>) -> Outcome {
    match (op, reply) {
        (Op::Put, RawReply::Line(l)) => {
            if *l == b"OK" {
                Outcome::Stored
            } else {
                Outcome::Error
            }
        }
        (Op::Get, RawReply::Line(l)) => {
            if *l == b"NOT_FOUND" {
                Outcome::NotFound
            } else if is_keyval_error(l) {
                Outcome::Error
            } else {
                Outcome::Found(l.len())
            }
        }
        (Op::Put, RawReply::Simple(s)) if *s == b"OK" => Outcome::Stored,
        (Op::Get, RawReply::Bulk(Some(v))) => Outcome::Found(v.len()),
        (Op::Get, RawReply::Bulk(None)) => Outcome::NotFound,
        _ => Outcome::Error,
    }
}

/// True for the error lines a keyval server may send instead of a value.
fn is_keyval_error(line: &[u8]) -> bool {
    const ERRORS: [&[u8]; 3] = [b"ERROR", b"REPLICATION_TIMEOUT", b"WRITE_NOT_ALLOWED"];
    ERRORS.iter().any(|e| {
        line.strip_prefix(*e)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b' ')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(proto: Protocol, op: Op, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(proto, op, key, value, &mut out);
        out
    }

    #[test]
    fn encodes_keyval_requests() {
        assert_eq!(
            encode(Protocol::Keyval, Op::Put, b"k1", b"v1"),
            b"PUT k1 v1\n"
        );
        assert_eq!(encode(Protocol::Keyval, Op::Get, b"k1", b"v1"), b"GET k1\n");
    }

    #[test]
    fn encodes_resp_requests() {
        assert_eq!(
            encode(Protocol::Resp, Op::Put, b"key", b"hello world"),
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$11\r\nhello world\r\n".to_vec()
        );
        assert_eq!(
            encode(Protocol::Resp, Op::Get, b"key", b""),
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n".to_vec()
        );
    }

    #[test]
    fn formats_keys_with_nine_digits() {
        let mut k = Vec::new();
        format_key(123, &mut k);
        assert_eq!(k, b"key:000000123");
        format_key(0, &mut k);
        assert_eq!(k, b"key:000000000");
        format_key(999_999_999, &mut k);
        assert_eq!(k, b"key:999999999");
        format_key(1_234_567_890, &mut k);
        assert_eq!(k, b"key:1234567890");
    }

    #[test]
    fn parses_keyval_lines_incrementally() {
        let stream = b"OK\nvalue-1\nNOT_FOUND\r\n";
        assert_eq!(parse_reply(Protocol::Keyval, b"O"), Ok(None));
        assert_eq!(parse_reply(Protocol::Keyval, b""), Ok(None));
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((r, used)) = parse_reply(Protocol::Keyval, &stream[pos..]).unwrap() {
            got.push(match r {
                RawReply::Line(l) => l.to_vec(),
                other => panic!("unexpected {other:?}"),
            });
            pos += used;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(
            got,
            vec![b"OK".to_vec(), b"value-1".to_vec(), b"NOT_FOUND".to_vec()]
        );
    }

    #[test]
    fn classifies_keyval_replies() {
        let line = |s: &'static [u8]| RawReply::Line(s);
        assert_eq!(classify(Op::Put, &line(b"OK")), Outcome::Stored);
        assert_eq!(classify(Op::Put, &line(b"ERROR")), Outcome::Error);
        assert_eq!(
            classify(Op::Put, &line(b"REPLICATION_TIMEOUT")),
            Outcome::Error
        );
        assert_eq!(
            classify(Op::Put, &line(b"WRITE_NOT_ALLOWED")),
            Outcome::Error
        );
        assert_eq!(classify(Op::Get, &line(b"NOT_FOUND")), Outcome::NotFound);
        assert_eq!(classify(Op::Get, &line(b"abc")), Outcome::Found(3));
        assert_eq!(classify(Op::Get, &line(b"ERROR")), Outcome::Error);
        assert_eq!(classify(Op::Get, &line(b"ERROR bad key")), Outcome::Error);
        assert_eq!(classify(Op::Get, &line(b"ERRORS")), Outcome::Found(6));
        assert_eq!(
            classify(Op::Get, &line(b"WRITE_NOT_ALLOWED")),
            Outcome::Error
        );
    }

    #[test]
    fn parses_every_resp_split_point() {
        let stream: &[u8] = b"+OK\r\n$5\r\nhello\r\n$-1\r\n-ERR wrong type\r\n:42\r\n$0\r\n\r\n*2\r\n$1\r\na\r\n:1\r\n+OK\r\n";
        let expected = vec![
            "Simple(OK)",
            "Bulk(hello)",
            "Bulk(null)",
            "Error(ERR wrong type)",
            "Integer(42)",
            "Bulk()",
            "Array(2)",
            "Simple(OK)",
        ];
        let describe = |r: &RawReply<'_>| match r {
            RawReply::Simple(s) => format!("Simple({})", String::from_utf8_lossy(s)),
            RawReply::Error(s) => format!("Error({})", String::from_utf8_lossy(s)),
            RawReply::Integer(i) => format!("Integer({i})"),
            RawReply::Bulk(Some(b)) => format!("Bulk({})", String::from_utf8_lossy(b)),
            RawReply::Bulk(None) => "Bulk(null)".to_string(),
            RawReply::Array(n) => format!("Array({})", n.unwrap_or(0)),
            RawReply::Line(_) => "Line".to_string(),
        };
        // Feed the stream in two chunks split at every position: the parser
        // must never return a reply until it is complete, and must produce
        // the same sequence regardless of the split.
        for split in 0..=stream.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buf.extend_from_slice(chunk);
                let mut pos = 0;
                while let Some((r, used)) = parse_reply(Protocol::Resp, &buf[pos..]).unwrap() {
                    got.push(describe(&r));
                    pos += used;
                }
                buf.drain(..pos);
            }
            assert!(buf.is_empty(), "leftover at split {split}");
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn bulk_string_may_contain_crlf() {
        let buf = b"$4\r\n\r\n\r\n\r\n";
        let (r, used) = parse_reply(Protocol::Resp, buf).unwrap().unwrap();
        assert_eq!(r, RawReply::Bulk(Some(b"\r\n\r\n")));
        assert_eq!(used, buf.len());
    }

    #[test]
    fn rejects_malformed_resp() {
        assert!(parse_reply(Protocol::Resp, b"?what\r\n").is_err());
        assert!(parse_reply(Protocol::Resp, b"$abc\r\n").is_err());
        assert!(parse_reply(Protocol::Resp, b"$-2\r\n").is_err());
        assert!(parse_reply(Protocol::Resp, b"$3\r\nabcXY").is_err());
        assert!(parse_reply(Protocol::Resp, b"+OK\n").is_err());
        assert_eq!(parse_reply(Protocol::Resp, b"$3\r\nab"), Ok(None));
    }

    #[test]
    fn classifies_resp_replies() {
        assert_eq!(classify(Op::Put, &RawReply::Simple(b"OK")), Outcome::Stored);
        assert_eq!(
            classify(Op::Put, &RawReply::Error(b"ERR oom")),
            Outcome::Error
        );
        assert_eq!(
            classify(Op::Get, &RawReply::Bulk(Some(b"xyz"))),
            Outcome::Found(3)
        );
        assert_eq!(classify(Op::Get, &RawReply::Bulk(None)), Outcome::NotFound);
        assert_eq!(
            classify(Op::Get, &RawReply::Error(b"WRONGTYPE")),
            Outcome::Error
        );
        assert_eq!(classify(Op::Get, &RawReply::Simple(b"OK")), Outcome::Error);
    }
}
