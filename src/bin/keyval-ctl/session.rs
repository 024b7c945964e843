//! One authenticated admin connection to a node: the `HELLO ADMIN`
//! challenge (the node proves the secret first, then this tool does), then
//! request lines and their replies. Blocking I/O with timeouts: this is a
//! command-line tool talking to one node at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use keyval::replication::auth::{self, Prover};

/// The id the admin proofs are made under.
const ADMIN_ID: &str = "admin";

/// Longest reply line accepted (a value can be up to the node's line cap).
const MAX_REPLY: u64 = 64 << 20;

/// An open admin session.
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
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
        let writer = stream.try_clone().map_err(io)?;
        let mut session = Session {
            reader: BufReader::new(stream),
            writer,
            addr: addr.to_string(),
        };
        session.handshake(secret)?;
        Ok(session)
    }

    fn handshake(&mut self, secret: &[u8]) -> Result<(), String> {
        let anonce = auth::new_nonce();
        let challenge = self.call(&format!("HELLO ADMIN|{anonce}"))?;
        let mut parts = challenge.splitn(3, ' ');
        let (Some("CHALLENGE"), Some(nnonce), Some(nproof)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{}: refused the admin handshake: {challenge}",
                self.addr
            ));
        };
        if !auth::verify(
            secret,
            Prover::Leader,
            ADMIN_ID,
            &anonce,
            nnonce,
            nproof.as_bytes(),
        ) {
            return Err(format!(
                "{}: the node could not prove the shared secret (wrong KEYVAL_SECRET, or not the \
                 node you meant)",
                self.addr
            ));
        }
        let aproof = auth::proof(secret, Prover::Admin, ADMIN_ID, &anonce, nnonce);
        match self.call(&format!("AUTH {aproof}"))?.as_str() {
            "HELLO SERVER" => Ok(()),
            "INVALID_SECRET_KEY" => Err(format!(
                "{}: the node refused this tool's proof: INVALID_SECRET_KEY",
                self.addr
            )),
            other => Err(format!("{}: unexpected reply to AUTH: {other}", self.addr)),
        }
    }

    /// Sends one request line and reads one reply line.
    ///
    /// # Errors
    /// IO errors and a closed connection, with the node's address.
    pub fn call(&mut self, request: &str) -> Result<String, String> {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| format!("{}: {e}", self.addr))?;
        self.line()
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_REPLY)
            .read_line(&mut line)
            .map_err(|e| format!("{}: {e}", self.addr))?;
        if n == 0 {
            return Err(format!("{}: the node closed the connection", self.addr));
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
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
