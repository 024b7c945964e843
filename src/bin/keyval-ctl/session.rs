//! One authenticated admin connection to a node: the `HELLO ADMIN`
//! challenge (the node proves the secret first, then this tool does), then
//! request lines and their replies, each way in MAC'd session records
//! (`keyval::replication::session`), so a relay can neither forge a reply
//! nor slip in a request. Blocking I/O with timeouts: this is a
//! command-line tool talking to one node at a time.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use keyval::replication::handshake::{DialError, Dialed, Dialer};
use keyval::replication::session;

/// Longest reply line accepted (a value can be up to the node's line cap).
const MAX_REPLY: u64 = 64 << 20;

/// An open admin session.
pub struct Session {
    stream: TcpStream,
    /// Received bytes (opened, once the session began) not yet taken as
    /// lines.
    input: Vec<u8>,
    /// Received records not yet whole.
    wire: Vec<u8>,
    /// The session's keys, from `HELLO SERVER` on.
    sealed: Option<session::Session>,
    /// `host:port`, for messages.
    pub addr: String,
}

/// A node's `INFO` fields, in the order it sent them.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub fields: Vec<(String, String)>,
}

impl Info {
    /// The value of `field`, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_str())
    }

    /// `field` as a number (0 when absent or not a number).
    pub fn num(&self, field: &str) -> u64 {
        self.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl Session {
    /// Connects to `addr` (`host:port`) and passes the admin handshake.
    ///
    /// # Errors
    /// A one-line reason: unreachable, not a keyval node, or a secret that
    /// does not match (either way round).
    pub fn open(addr: &str, secret: &[u8], timeout: Duration) -> Result<Session, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("{addr}: unreachable: {e}"))?;
        let io = |e: std::io::Error| format!("{addr}: {e}");
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut session = Session {
            stream,
            input: Vec::new(),
            wire: Vec::new(),
            sealed: None,
            addr: addr.to_string(),
        };
        session.handshake(secret)?;
        Ok(session)
    }

    fn handshake(&mut self, secret: &[u8]) -> Result<(), String> {
        let mut dialer = Dialer::admin();
        let mut line = self.call(dialer.hello().trim_end())?;
        loop {
            match dialer.on_line(secret, &line) {
                Ok(Dialed::Auth(auth)) => line = self.call(auth.trim_end())?,
                Ok(Dialed::Welcome(session)) => {
                    self.sealed = Some(*session);
                    // Anything after `HELLO SERVER` is records.
                    let early = std::mem::take(&mut self.input);
                    return self.receive(&early);
                }
                Err(DialError::Impostor) => {
                    return Err(format!(
                        "{}: the node could not prove the shared secret (wrong KEYVAL_SECRET, or \
                         not the node you meant)",
                        self.addr
                    ))
                }
                Err(refused) => {
                    return Err(format!(
                        "{}: refused the admin handshake: {refused}",
                        self.addr
                    ))
                }
            }
        }
    }

    /// Sends one request line and reads one reply line.
    ///
    /// # Errors
    /// IO errors and a closed connection, with the node's address.
    pub fn call(&mut self, request: &str) -> Result<String, String> {
        let line = format!("{request}\n");
        let bytes = match &mut self.sealed {
            None => line.into_bytes(),
            Some(sealed) => {
                let mut out = Vec::new();
                sealed
                    .sealer
                    .seal(line.as_bytes(), &mut out)
                    .map_err(|e| format!("{}: {e}", self.addr))?;
                out
            }
        };
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("{}: {e}", self.addr))?;
        self.line()
    }

    fn line(&mut self) -> Result<String, String> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(at) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=at).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\n', '\r']).to_string());
            }
            if self.input.len() as u64 > MAX_REPLY {
                return Err(format!(
                    "{}: a reply line past {MAX_REPLY} bytes",
                    self.addr
                ));
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("{}: {e}", self.addr))?;
            if n == 0 {
                return Err(format!("{}: the node closed the connection", self.addr));
            }
            self.receive(&chunk[..n])?;
        }
    }

    /// Takes in bytes read from the socket: opened first once the session
    /// began.
    fn receive(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(sealed) = &mut self.sealed else {
            self.input.extend_from_slice(bytes);
            return Ok(());
        };
        self.wire.extend_from_slice(bytes);
        let used = sealed
            .opener
            .open(&self.wire, &mut self.input)
            .map_err(|e| {
                format!(
                    "{}: {e}: something on the path tampers with this connection",
                    self.addr
                )
            })?;
        self.wire.drain(..used);
        Ok(())
    }

    /// `INFO`.
    ///
    /// # Errors
    /// IO errors or a malformed answer.
    pub fn info(&mut self) -> Result<Info, String> {
        let count = self.call("INFO")?;
        let n: usize = count
            .parse()
            .map_err(|_| format!("{}: INFO answered {count:?}", self.addr))?;
        let mut info = Info::default();
        for _ in 0..n {
            let line = self.line()?;
            let (field, value) = line.split_once(' ').unwrap_or((&line, ""));
            info.fields.push((field.to_string(), value.to_string()));
        }
        Ok(info)
    }
}
