//! [`LineClient`]: a blocking client of keyval's line protocol, one
//! request line and one reply line at a time (or pipelined, as the caller
//! likes). The connect and every read and write are bounded by the
//! timeout it was opened with, so no call can hang on a stopped server.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP connection to a keyval node that speaks in lines.
#[derive(Debug)]
pub struct LineClient {
    /// The socket, for what lines do not cover: raw writes, timeouts,
    /// peeking, the local address. Reads should go through the client,
    /// which buffers what it has read.
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    /// Connects to `addr` without a handshake; `timeout` bounds the
    /// connect and every later read and write.
    ///
    /// # Errors
    /// When `addr` cannot be reached in time.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<LineClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(LineClient {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    /// Connects as a client: [`LineClient::connect`], then `HELLO CLIENT`,
    /// which must be answered `HELLO SERVER`.
    ///
    /// # Errors
    /// When `addr` cannot be reached, or answers the handshake otherwise.
    pub fn connect_client(addr: SocketAddr, timeout: Duration) -> io::Result<LineClient> {
        let mut client = LineClient::connect(addr, timeout)?;
        let hello = client.call("HELLO CLIENT")?;
        if hello != "HELLO SERVER" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{addr} answered the handshake with {hello:?}"),
            ));
        }
        Ok(client)
    }

    /// Sends `line` and a newline.
    ///
    /// # Errors
    /// When the write fails or times out.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.send_raw(format!("{line}\n").as_bytes())
    }

    /// Sends `bytes` as they are (any number of lines, pipelined).
    ///
    /// # Errors
    /// When the write fails or times out.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply line, without its `\n`, as bytes.
    ///
    /// # Errors
    /// On timeout, or `UnexpectedEof` when the connection ends before a
    /// whole line.
    pub fn line_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a whole reply line",
            ));
        }
        Ok(line)
    }

    /// Reads one reply line, without its `\n`.
    ///
    /// # Errors
    /// As [`LineClient::line_bytes`], or `InvalidData` when the line is
    /// not UTF-8.
    pub fn line(&mut self) -> io::Result<String> {
        String::from_utf8(self.line_bytes()?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Whether the peer has closed the connection: waits (up to the
    /// timeout) for a byte or the end, and consumes nothing.
    ///
    /// # Errors
    /// On timeout, or when the connection fails.
    pub fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.reader.fill_buf()?.is_empty())
    }

    /// Sends one request line and reads its one-line reply.
    ///
    /// # Errors
    /// As [`LineClient::send`] and [`LineClient::line`].
    pub fn call(&mut self, request: &str) -> io::Result<String> {
        self.send(request)?;
        self.line()
    }

    /// Reads a counted list (the reply of `KEYS` and `INFO`): a line with
    /// the count n, then n lines.
    ///
    /// # Errors
    /// As [`LineClient::line`], or `InvalidData` when the count line is
    /// not a number.
    pub fn read_list(&mut self) -> io::Result<Vec<String>> {
        let count = self.line()?;
        let n: usize = count.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a list's count line is {count:?}"),
            )
        })?;
        (0..n).map(|_| self.line()).collect()
    }

    /// Sends a request answered by a counted list (`KEYS`, `INFO`) and
    /// reads the list.
    ///
    /// # Errors
    /// As [`LineClient::send`] and [`LineClient::read_list`].
    pub fn list(&mut self, request: &str) -> io::Result<Vec<String>> {
        self.send(request)?;
        self.read_list()
    }

    /// `INFO` as `(field, value)` pairs, in the order sent; a line
    /// without a value gives an empty one.
    ///
    /// # Errors
    /// As [`LineClient::list`].
    pub fn info(&mut self) -> io::Result<Vec<(String, String)>> {
        Ok(self
            .list("INFO")?
            .into_iter()
            .map(|line| match line.split_once(' ') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (line, String::new()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A server that answers the handshake, then sends `script` whatever
    /// it is asked, and closes.
    fn server(script: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).expect("hello");
            writer.write_all(b"HELLO SERVER\n").expect("reply");
            line.clear();
            reader.read_line(&mut line).expect("request");
            writer.write_all(script).expect("script");
        });
        addr
    }

    fn client(script: &'static [u8]) -> LineClient {
        LineClient::connect_client(server(script), Duration::from_secs(5)).expect("connect")
    }

    #[test]
    fn reads_info_pairs() {
        let mut c = client(b"3\nrole leader\nfollower_2 addr=x acked=1 lag=0\nodd\n");
        let info = c.info().expect("info");
        assert_eq!(
            info,
            [
                ("role", "leader"),
                ("follower_2", "addr=x acked=1 lag=0"),
                ("odd", "")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_short_list_or_a_bad_count_is_an_error() {
        let err = client(b"3\na\nb\n").list("KEYS").expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = client(b"many\n").list("KEYS").expect_err("count");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn the_end_is_seen_after_the_last_line() {
        let mut c = client(b"BYE\n");
        assert_eq!(c.call("CLOSE").expect("close"), "BYE");
        assert!(c.at_eof().expect("eof"));
        let mut c = client(b"one\ntwo\n");
        c.send("GET k").expect("send");
        assert!(!c.at_eof().expect("not at the end"));
        assert_eq!(c.line().expect("line"), "one");
    }

    #[test]
    fn lines_that_are_not_utf8_are_an_error_but_readable_as_bytes() {
        let mut c = client(b"\xff\n\xfe\n");
        c.send("GET k").expect("send");
        assert_eq!(c.line_bytes().expect("bytes"), b"\xff");
        let err = c.line().expect_err("utf8");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_wrong_handshake_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.write_all(b"INVALID_HANDSHAKE_MESSAGE\n");
        });
        let err = LineClient::connect_client(addr, Duration::from_secs(5)).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn reads_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut c = LineClient::connect(addr, Duration::from_millis(100)).expect("connect");
        let err = c.line().expect_err("timeout");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        drop(listener);
    }
}
