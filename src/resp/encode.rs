//! RESP replies, as Redis 7 writes them: RESP2 by default, RESP3 after
//! `HELLO 3`. Only the shapes keyval answers with are here.
//!
//! ```text
//! simple   +OK\r\n                error    -ERR ...\r\n
//! integer  :3\r\n                 bulk     $5\r\nhello\r\n
//! null     $-1\r\n (RESP2)        _\r\n (RESP3)
//! array    *2\r\n...              map      *4\r\n... (RESP2)  %2\r\n... (RESP3)
//! verbatim $n (RESP2)  =n\r\ntxt:... (RESP3)
//! ```

/// The protocol version a connection speaks (`HELLO 2|3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    /// The number `HELLO` shows as `proto`.
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";

/// A simple string: `+<text>\r\n`. `text` must hold no `\r` or `\n`.
pub fn simple(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'+');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// An error: `-<text>\r\n`, where `text` starts with the error code
/// (`ERR`, `READONLY`, `NOAUTH`, ...). `\r` and `\n` in it become spaces,
/// so a reason taken from elsewhere cannot break the framing.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// An integer: `:<n>\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string: `$<len>\r\n<bytes>\r\n`; any bytes.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string, or null for `None`.
pub fn bulk_or_null(out: &mut Vec<u8>, proto: Proto, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => bulk(out, bytes),
        None => null(out, proto),
    }
}

/// The null reply: `$-1\r\n` in RESP2 (a null bulk string, which is what
/// Redis 7 answers a missing key with), `_\r\n` in RESP3.
pub fn null(out: &mut Vec<u8>, proto: Proto) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// The header of an array of `len` elements: `*<len>\r\n`.
pub fn array(out: &mut Vec<u8>, len: usize) {
    aggregate(out, b'*', len);
}

/// The header of a map of `len` pairs: `%<len>\r\n` in RESP3, an array of
/// `2 * len` elements in RESP2.
pub fn map(out: &mut Vec<u8>, proto: Proto, len: usize) {
    match proto {
        Proto::Resp2 => aggregate(out, b'*', 2 * len),
        Proto::Resp3 => aggregate(out, b'%', len),
    }
}

/// Text for a human (`INFO`): a verbatim string `=<len>\r\ntxt:<text>\r\n`
/// in RESP3, a bulk string in RESP2.
pub fn verbatim(out: &mut Vec<u8>, proto: Proto, text: &[u8]) {
    match proto {
        Proto::Resp2 => bulk(out, text),
        Proto::Resp3 => {
            out.push(b'=');
            push_decimal(out, text.len() as i64 + 4);
            out.extend_from_slice(b"\r\ntxt:");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn aggregate(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    push_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write` appends to an empty buffer.
    fn bytes(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out);
        out
    }

    #[test]
    fn proto_numbers_and_default() {
        assert_eq!(Proto::default(), Proto::Resp2);
        assert_eq!(Proto::Resp2.number(), 2);
        assert_eq!(Proto::Resp3.number(), 3);
    }

    #[test]
    fn simple_strings_and_errors() {
        assert_eq!(OK, b"+OK\r\n");
        assert_eq!(bytes(|o| simple(o, b"OK")), b"+OK\r\n");
        assert_eq!(bytes(|o| simple(o, b"PONG")), b"+PONG\r\n");
        assert_eq!(bytes(|o| simple(o, b"")), b"+\r\n");
        assert_eq!(
            bytes(|o| error(o, "ERR unknown command 'x'")),
            b"-ERR unknown command 'x'\r\n"
        );
        // A reason with line breaks cannot break the framing.
        assert_eq!(bytes(|o| error(o, "ERR a\r\nb\nc\r")), b"-ERR a  b c \r\n");
    }

    #[test]
    fn integers() {
        assert_eq!(bytes(|o| integer(o, 0)), b":0\r\n");
        assert_eq!(bytes(|o| integer(o, 7)), b":7\r\n");
        assert_eq!(bytes(|o| integer(o, 1234567890)), b":1234567890\r\n");
        assert_eq!(bytes(|o| integer(o, -1)), b":-1\r\n");
        assert_eq!(bytes(|o| integer(o, -90)), b":-90\r\n");
        assert_eq!(bytes(|o| integer(o, i64::MAX)), b":9223372036854775807\r\n");
        assert_eq!(
            bytes(|o| integer(o, i64::MIN)),
            b":-9223372036854775808\r\n"
        );
    }

    #[test]
    fn bulk_strings_and_null() {
        assert_eq!(bytes(|o| bulk(o, b"hello")), b"$5\r\nhello\r\n");
        assert_eq!(bytes(|o| bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(bytes(|o| bulk(o, b"a\r\n\0b")), b"$5\r\na\r\n\0b\r\n");
        let big = vec![b'x'; 12345];
        let out = bytes(|o| bulk(o, &big));
        assert_eq!(&out[..8], b"$12345\r\n");
        assert_eq!(out.len(), 8 + 12345 + 2);
        assert_eq!(bytes(|o| null(o, Proto::Resp2)), b"$-1\r\n");
        assert_eq!(bytes(|o| null(o, Proto::Resp3)), b"_\r\n");
        assert_eq!(
            bytes(|o| bulk_or_null(o, Proto::Resp2, Some(b"v"))),
            b"$1\r\nv\r\n"
        );
        assert_eq!(
            bytes(|o| bulk_or_null(o, Proto::Resp3, Some(b"v"))),
            b"$1\r\nv\r\n"
        );
        assert_eq!(bytes(|o| bulk_or_null(o, Proto::Resp2, None)), b"$-1\r\n");
        assert_eq!(bytes(|o| bulk_or_null(o, Proto::Resp3, None)), b"_\r\n");
    }

    #[test]
    fn aggregates() {
        assert_eq!(bytes(|o| array(o, 0)), b"*0\r\n");
        assert_eq!(bytes(|o| array(o, 3)), b"*3\r\n");
        assert_eq!(bytes(|o| map(o, Proto::Resp2, 2)), b"*4\r\n");
        assert_eq!(bytes(|o| map(o, Proto::Resp3, 2)), b"%2\r\n");
        assert_eq!(bytes(|o| map(o, Proto::Resp3, 0)), b"%0\r\n");
        // A whole reply: HELLO's first pair.
        let reply = bytes(|o| {
            map(o, Proto::Resp3, 1);
            bulk(o, b"server");
            bulk(o, b"redis");
        });
        assert_eq!(reply, b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n");
    }

    #[test]
    fn verbatim_text() {
        assert_eq!(
            bytes(|o| verbatim(o, Proto::Resp2, b"# Server\r\n")),
            b"$10\r\n# Server\r\n\r\n"
        );
        assert_eq!(
            bytes(|o| verbatim(o, Proto::Resp3, b"# Server\r\n")),
            b"=14\r\ntxt:# Server\r\n\r\n"
        );
        assert_eq!(bytes(|o| verbatim(o, Proto::Resp3, b"")), b"=4\r\ntxt:\r\n");
    }
}
