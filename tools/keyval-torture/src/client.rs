//! A blocking client for keyval's line protocol, used by the workload
//! threads, the monitor and the final reads.
//!
//! Every read and write is bounded by a timeout; every failure is an
//! `io::Error` naming what was asked (replies come off the network, so
//! nothing here unwraps them).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One connection that has done `HELLO CLIENT`.
pub struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects and does the handshake; `timeout` bounds the connect and
    /// every later read and write.
    ///
    /// # Errors
    /// When the node cannot be reached or answers the handshake wrongly.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut client = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let hello = client.call("HELLO CLIENT")?;
        if hello != "HELLO SERVER" {
            return Err(io::Error::other(format!(
                "{addr} answered the handshake with {hello:?}"
            )));
        }
        Ok(client)
    }

    /// Sends raw request bytes (one or more lines, pipelined).
    ///
    /// # Errors
    /// When the write fails or times out.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one reply line without its `\n`.
    ///
    /// # Errors
    /// On timeout, EOF, a line without `\n`, or bytes that are not UTF-8.
    pub fn line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf)?;
        if buf.pop() != Some(b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a whole reply",
            ));
        }
        String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends one request line and reads its one-line reply.
    ///
    /// # Errors
    /// As [`Client::send`] and [`Client::line`].
    pub fn call(&mut self, request: &str) -> io::Result<String> {
        self.send(format!("{request}\n").as_bytes())?;
        self.line()
    }

    /// Sends a request answered by a counted list (`KEYS`, `INFO`).
    ///
    /// # Errors
    /// As [`Client::line`], or a count line that is not a number.
    pub fn list(&mut self, request: &str) -> io::Result<Vec<String>> {
        let count = self.call(request)?;
        let n: usize = count.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{request}: count line {count:?}"),
            )
        })?;
        (0..n).map(|_| self.line()).collect()
    }

    /// Every key and its value (`KEYS`, then `GET` each).
    ///
    /// # Errors
    /// As [`Client::list`].
    pub fn contents(&mut self) -> io::Result<BTreeMap<String, String>> {
        let mut data = BTreeMap::new();
        for key in self.list("KEYS")? {
            let value = self.call(&format!("GET {key}"))?;
            data.insert(key, value);
        }
        Ok(data)
    }

    /// `INFO` as `(field, value)` pairs.
    ///
    /// # Errors
    /// As [`Client::list`].
    pub fn info(&mut self) -> io::Result<Vec<(String, String)>> {
        Ok(self
            .list("INFO")?
            .into_iter()
            .map(|l| match l.split_once(' ') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l, String::new()),
            })
            .collect())
    }
}

/// The value of `field` in INFO pairs.
pub fn field<'a>(info: &'a [(String, String)], field: &str) -> Option<&'a str> {
    info.iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.as_str())
}

/// `lag=<n>` out of a leader's `follower_<id>` INFO value, or `None` if
/// absent or while the follower has acknowledged nothing (it is taking a
/// snapshot, and its lag is the whole history).
pub fn follower_lag(value: &str) -> Option<u64> {
    let number = |name: &str| {
        value
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .and_then(|n| n.parse::<u64>().ok())
    };
    number("acked=").filter(|&acked| acked > 0)?;
    number("lag=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = vec![
            ("role".to_string(), "leader".to_string()),
            (
                "follower_2".to_string(),
                "addr=127.0.0.1:4000 acked=7 lag=3".to_string(),
            ),
        ];
        assert_eq!(field(&info, "role"), Some("leader"));
        assert_eq!(field(&info, "seq"), None);
        assert_eq!(
            follower_lag(field(&info, "follower_2").unwrap_or("")),
            Some(3)
        );
        assert_eq!(follower_lag("addr=x acked=1"), None);
        assert_eq!(follower_lag("addr=x acked=0 lag=9"), None);
    }
}
