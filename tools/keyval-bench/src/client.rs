//! Small blocking clients used by the suite for control traffic (not load):
//! the keyval handshake, `INFO` polling, and Redis `PING`/`INFO memory`.
//! Every socket operation has a timeout, so no call can hang.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{self, Protocol, RawReply};

/// Per-operation socket timeout for control connections.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking connection that reads whole replies using [`wire::parse_reply`].
pub struct Client {
    stream: TcpStream,
    protocol: Protocol,
    buf: Vec<u8>,
}

impl Client {
    /// Connects (with timeouts) and, for keyval, completes the handshake.
    pub fn connect(addr: SocketAddr, protocol: Protocol) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            protocol,
            buf: Vec::new(),
        };
        if protocol == Protocol::Keyval {
            client.stream.write_all(wire::KEYVAL_HELLO)?;
            let line = client.read_line()?;
            if line != wire::KEYVAL_HELLO_REPLY {
                return Err(invalid(format!(
                    "expected HELLO SERVER, got {:?}",
                    String::from_utf8_lossy(&line)
                )));
            }
        }
        Ok(client)
    }

    /// Reads one keyval reply line.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        self.read_reply(|r| match r {
            RawReply::Line(l) => Ok(l.to_vec()),
            other => Err(invalid(format!("unexpected reply {other:?}"))),
        })
    }

    /// Reads until one complete reply is buffered, maps it with `f`, and
    /// consumes it.
    fn read_reply<T>(&mut self, f: impl FnOnce(RawReply<'_>) -> io::Result<T>) -> io::Result<T> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((reply, used)) = wire::parse_reply(self.protocol, &self.buf)? {
                let out = f(reply);
                self.buf.drain(..used);
                return out;
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends keyval `INFO` and returns its fields.
    pub fn keyval_info(&mut self) -> io::Result<HashMap<String, String>> {
        self.stream.write_all(b"INFO\n")?;
        let count_line = self.read_line()?;
        let count: usize = std::str::from_utf8(&count_line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&n| n <= 10_000)
            .ok_or_else(|| {
                invalid(format!(
                    "bad INFO count line {:?}",
                    String::from_utf8_lossy(&count_line)
                ))
            })?;
        let mut fields = HashMap::with_capacity(count);
        for _ in 0..count {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line);
            let (k, v) = text.split_once(' ').unwrap_or((text.as_ref(), ""));
            fields.insert(k.to_string(), v.trim().to_string());
        }
        Ok(fields)
    }

    /// Sends a Redis `PING` and checks for `+PONG`.
    pub fn redis_ping(&mut self) -> io::Result<()> {
        let mut req = Vec::new();
        wire::encode_resp_command(&[b"PING"], &mut req);
        self.stream.write_all(&req)?;
        self.read_reply(|r| match r {
            RawReply::Simple(s) if s == b"PONG" => Ok(()),
            other => Err(invalid(format!("unexpected PING reply {other:?}"))),
        })
    }

    /// Sends a Redis `DBSIZE` and returns the key count.
    pub fn redis_dbsize(&mut self) -> io::Result<i64> {
        let mut req = Vec::new();
        wire::encode_resp_command(&[b"DBSIZE"], &mut req);
        self.stream.write_all(&req)?;
        self.read_reply(|r| match r {
            RawReply::Integer(n) => Ok(n),
            other => Err(invalid(format!("unexpected DBSIZE reply {other:?}"))),
        })
    }
}

/// Reads a numeric field of a keyval `INFO` reply.
pub fn info_u64(info: &HashMap<String, String>, field: &str) -> io::Result<u64> {
    info.get(field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid(format!("INFO has no numeric field {field:?}")))
}

/// An `InvalidData` error with `msg`.
fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
