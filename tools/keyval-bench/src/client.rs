//! Control connections of the suite, not load: a keyval node's `INFO` over
//! the kit's [`LineClient`], and a small blocking RESP client for Redis's
//! `PING` and `DBSIZE`. Every socket operation has a timeout, so no call
//! can hang.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keyval_testkit::LineClient;

use crate::wire::{self, Protocol, RawReply};

/// Per-operation socket timeout for control connections.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A keyval control connection, past its `HELLO`.
///
/// # Errors
/// When the node cannot be reached or answers the handshake otherwise.
pub fn keyval(addr: SocketAddr) -> io::Result<LineClient> {
    LineClient::connect_client(addr, IO_TIMEOUT)
}

/// Sends keyval `INFO` and returns its fields by name.
///
/// # Errors
/// As [`LineClient::info`].
pub fn info(client: &mut LineClient) -> io::Result<HashMap<String, String>> {
    Ok(client
        .info()?
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_string()))
        .collect())
}

/// Reads a numeric field of a keyval `INFO` reply.
///
/// # Errors
/// `InvalidData` when the field is absent or not a number.
pub fn info_u64(info: &HashMap<String, String>, field: &str) -> io::Result<u64> {
    info.get(field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| invalid(format!("INFO has no numeric field {field:?}")))
}

/// A blocking Redis connection that reads whole replies with
/// [`wire::parse_reply`].
pub struct Redis {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Redis {
    /// Connects, with timeouts.
    ///
    /// # Errors
    /// When Redis cannot be reached in time.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Redis {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends `command` and maps its reply with `f`.
    fn request<T>(
        &mut self,
        command: &[&[u8]],
        f: impl FnOnce(RawReply<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut req = Vec::new();
        wire::encode_resp_command(command, &mut req);
        self.stream.write_all(&req)?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((reply, used)) = wire::parse_reply(Protocol::Resp, &self.buf)? {
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

    /// Sends `PING` and checks for `+PONG`.
    ///
    /// # Errors
    /// On a failed exchange or another reply.
    pub fn ping(&mut self) -> io::Result<()> {
        self.request(&[b"PING"], |r| match r {
            RawReply::Simple(s) if s == b"PONG" => Ok(()),
            other => Err(invalid(format!("unexpected PING reply {other:?}"))),
        })
    }

    /// Sends `DBSIZE` and returns the key count.
    ///
    /// # Errors
    /// On a failed exchange or another reply.
    pub fn dbsize(&mut self) -> io::Result<i64> {
        self.request(&[b"DBSIZE"], |r| match r {
            RawReply::Integer(n) => Ok(n),
            other => Err(invalid(format!("unexpected DBSIZE reply {other:?}"))),
        })
    }
}

/// An `InvalidData` error with `msg`.
fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
