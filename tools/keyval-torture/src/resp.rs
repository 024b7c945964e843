//! A tiny RESP2 client for the MSET group check ([`crate::group`]): a
//! command goes out as an array of bulk strings, one reply comes back as a
//! [`Reply`]. Only what `MSET` and `MGET` need; docs/redis.md has the
//! protocol as keyval speaks it.
//!
//! Replies come off the network, so nothing here unwraps them: a reply
//! that does not parse is an `InvalidData` error.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Deepest nesting of arrays accepted in a reply.
const MAX_DEPTH: usize = 4;
/// Largest bulk string or array accepted in a reply.
const MAX_LEN: usize = 64 << 20;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(String),
    /// `-text`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and the bytes, or nil (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` and the elements, or nil (`*-1`).
    Array(Option<Vec<Reply>>),
}

/// `args` as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one reply.
///
/// # Errors
/// When the read fails or times out, or the bytes are not a RESP2 reply.
pub fn read(r: &mut impl BufRead) -> io::Result<Reply> {
    read_at(r, 0)
}

fn read_at(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(io::ErrorKind::UnexpectedEof.into());
    };
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| bad("an empty reply line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    let len = |text: &str| -> io::Result<Option<usize>> {
        match text.parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_LEN)
                .map(Some)
                .ok_or_else(|| bad(format!("a bad length {n}"))),
            Err(_) => Err(bad(format!("a bad length {text:?}"))),
        }
    };
    match kind {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => Ok(Reply::Error(text)),
        b':' => text
            .parse()
            .map(Reply::Integer)
            .map_err(|_| bad(format!("a bad integer {text:?}"))),
        b'$' => match len(&text)? {
            None => Ok(Reply::Bulk(None)),
            Some(n) => {
                let mut bytes = vec![0; n + 2];
                r.read_exact(&mut bytes)?;
                if !bytes.ends_with(b"\r\n") {
                    return Err(bad("a bulk string without its CRLF"));
                }
                bytes.truncate(n);
                Ok(Reply::Bulk(Some(bytes)))
            }
        },
        b'*' if depth < MAX_DEPTH => match len(&text)? {
            None => Ok(Reply::Array(None)),
            Some(n) => (0..n)
                .map(|_| read_at(r, depth + 1))
                .collect::<io::Result<Vec<_>>>()
                .map(|v| Reply::Array(Some(v))),
        },
        other => Err(bad(format!("an unexpected reply type {:?}", other as char))),
    }
}

/// A blocking RESP connection.
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespClient {
    /// Connects to `addr`; every read and write times out after `timeout`.
    ///
    /// # Errors
    /// When it cannot connect.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<RespClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    /// As the write and [`read`].
    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.writer.write_all(&encode(args))?;
        read(&mut self.reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bulk_arrays() {
        assert_eq!(
            encode(&[b"MGET", b"g:0", b""]),
            b"*3\r\n$4\r\nMGET\r\n$3\r\ng:0\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn reads_every_reply_kind() {
        let bytes =
            b"+OK\r\n-READONLY no\r\n:7\r\n$-1\r\n$4\r\na\r\nb\r\n*2\r\n$1\r\nx\r\n$-1\r\n*-1\r\n";
        let mut r = &bytes[..];
        assert_eq!(read(&mut r).ok(), Some(Reply::Simple("OK".into())));
        assert_eq!(read(&mut r).ok(), Some(Reply::Error("READONLY no".into())));
        assert_eq!(read(&mut r).ok(), Some(Reply::Integer(7)));
        assert_eq!(read(&mut r).ok(), Some(Reply::Bulk(None)));
        assert_eq!(
            read(&mut r).ok(),
            Some(Reply::Bulk(Some(b"a\r\nb".to_vec())))
        );
        assert_eq!(
            read(&mut r).ok(),
            Some(Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Bulk(None)
            ])))
        );
        assert_eq!(read(&mut r).ok(), Some(Reply::Array(None)));
        assert!(read(&mut r).is_err(), "nothing left");
    }

    #[test]
    fn refuses_garbage() {
        for bytes in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$-5\r\n",
            b"$3\r\nabcde",
            b"+OK",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let mut r = bytes;
            assert!(read(&mut r).is_err(), "{bytes:?}");
        }
    }
}
