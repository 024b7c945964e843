//! The client line protocol (`docs/protocol.md`): framing, request parsing
//! and reply encoding.
//!
//! Pure: this module takes byte slices and returns values or bytes. It never
//! touches a socket, a file or a clock, so every rule can be unit-tested and
//! fuzzed here.
//!
//! ```text
//! HELLO CLIENT            -> HELLO SERVER
//! PUT <key> <value>       -> OK
//! GET <key>               -> <value> | NOT_FOUND
//! DELETE <key>            -> OK | NOT_FOUND
//! KEYS [<prefix>]         -> <n>, then n keys
//! AUTH <password>         -> OK | WRONGPASS | ERROR no password is set
//! ```

use crate::access;

/// Longest key, in bytes (`docs/protocol.md`).
pub const MAX_KEY_BYTES: usize = 1024;

/// Where the next line of a buffer ends, as seen by [`next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line without its `\n` (and without a `\r` before it), and the
    /// number of bytes it used up including the terminator.
    Complete(&'a [u8], usize),
    /// No `\n` yet and the buffer is still within the line limit: read more.
    Incomplete,
    /// No `\n` within `max_line` bytes: the line is too long. The caller
    /// answers `LINE_TOO_LONG` and discards input up to the next `\n`.
    TooLong,
}

/// Splits the first line off `buf`.
///
/// A line is too long when its content (without `\r\n`) is longer than
/// `max_line`; that is decided as soon as `max_line + 2` bytes have arrived
/// without a newline, so a reader never buffers more than that.
pub fn next_line(buf: &[u8], max_line: usize) -> Line<'_> {
    let window = &buf[..buf.len().min(max_line.saturating_add(2))];
    match memchr_newline(window) {
        Some(end) => {
            let mut line = &buf[..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > max_line {
                Line::TooLong
            } else {
                Line::Complete(line, end + 1)
            }
        }
        None if window.len() > max_line.saturating_add(1) => Line::TooLong,
        None => Line::Incomplete,
    }
}

/// Position of the first `\n`.
fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The first line a connection sends, which decides what the peer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// `HELLO CLIENT`.
    Client,
    /// `HELLO FOLLOWER|<id>:<fnonce>` (`docs/protocol.md`); the fields are
    /// checked by the replication layer.
    Follower { id: &'a [u8], nonce: &'a [u8] },
    /// `HELLO ADMIN|<nonce>`: a client that will prove the shared secret.
    Admin { nonce: &'a [u8] },
}

/// Parses a handshake line. `None` means `INVALID_HANDSHAKE_MESSAGE`.
pub fn parse_hello(line: &[u8]) -> Option<Hello<'_>> {
    let rest = strip_word(line, b"HELLO")?;
    if rest.eq_ignore_ascii_case(b"CLIENT") {
        return Some(Hello::Client);
    }
    let (word, arg) = split_once(rest, b'|')?;
    if word.eq_ignore_ascii_case(b"FOLLOWER") {
        let (id, nonce) = split_once(arg, b':')?;
        Some(Hello::Follower { id, nonce })
    } else if word.eq_ignore_ascii_case(b"ADMIN") {
        Some(Hello::Admin { nonce: arg })
    } else {
        None
    }
}

/// A client request after the handshake. Keys and values borrow from the
/// read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `PUT <key> <value>`: the value is the rest of the line.
    Put { key: &'a [u8], value: &'a [u8] },
    /// `GET <key>`.
    Get { key: &'a [u8] },
    /// `DELETE <key>`.
    Delete { key: &'a [u8] },
    /// `CLOSE`: answer `BYE` and close.
    Close,
    /// `PING`: answer `PONG`.
    Ping,
    /// `KEYS [<prefix>]`: the matching keys in byte order.
    Keys { prefix: &'a [u8] },
    /// `INFO`: node facts as `<field> <value>` lines.
    Info,
    /// `DIGEST`: SHA-256 over the whole data set.
    Digest,
    /// `AUTH <password>`: the password is the rest of the line (see
    /// [`crate::access`]).
    Auth { password: Redacted<'a> },
    /// An admin command (only honoured on an authenticated admin connection).
    Admin(AdminRequest<'a>),
}

/// Commands that change what a node is; see `docs/failover.md`. Parsed
/// for every connection, executed only after `HELLO ADMIN`.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRequest<'a> {
    /// `PROMOTE`: a follower becomes a leader of a new history.
    Promote,
    /// `FOLLOW <host> <port>`: become a follower of that node.
    Follow { host: &'a [u8], port: u16 },
    /// `COMPACT`: start a compaction now.
    Compact,
    /// `FENCE`: stop taking writes (planned switchover).
    Fence,
}

impl Request<'_> {
    /// Whether this request changes data (refused on a follower).
    pub fn is_write(&self) -> bool {
        matches!(self, Request::Put { .. } | Request::Delete { .. })
    }

    /// Whether it shows stored data (`GET`, `KEYS`, `DIGEST`): on a
    /// connection opened to the leader, such reads stop when this node is
    /// no longer the leader.
    pub fn reads_data(&self) -> bool {
        matches!(
            self,
            Request::Get { .. } | Request::Keys { .. } | Request::Digest
        )
    }

    /// How the password gate treats it: `AUTH` opens the gate, `PING` and
    /// `CLOSE` pass it, everything else waits behind it.
    pub fn access_kind(&self) -> access::Kind {
        match self {
            Request::Auth { .. } => access::Kind::Auth,
            Request::Ping | Request::Close => access::Kind::Open,
            _ => access::Kind::Gated,
        }
    }
}

/// Bytes that must never be printed (an `AUTH` password): `Debug` shows
/// only that they are there, so a logged request cannot leak them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<'a>(pub &'a [u8]);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a line is not a valid request. Every variant is answered with
/// `INVALID_COMMAND` on the wire; the variants exist for tests and logs.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    /// The first word is not a command.
    UnknownCommand,
    /// A required argument is missing or empty.
    MissingArgument,
    /// More arguments than the command takes.
    TrailingArgument,
    /// The key is too long or has whitespace or control bytes.
    BadKey,
    /// A port that is not a number in 1..=65535.
    BadPort,
    /// A host that is neither an IP address nor a DNS name.
    BadHost,
}

/// Parses one request line (without its terminator).
///
/// # Errors
/// A [`ParseError`] saying what is wrong; the caller answers
/// `INVALID_COMMAND` and keeps the connection.
pub fn parse_request(line: &[u8]) -> Result<Request<'_>, ParseError> {
    let (word, rest) = match split_once(line, b' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (line, None),
    };
    let is = |name: &[u8]| word.eq_ignore_ascii_case(name);
    if is(b"GET") {
        Ok(Request::Get {
            key: only_key(rest)?,
        })
    } else if is(b"PUT") {
        let (key, value) = split_once(rest.ok_or(ParseError::MissingArgument)?, b' ')
            .ok_or(ParseError::MissingArgument)?;
        check_key(key)?;
        if value.is_empty() {
            return Err(ParseError::MissingArgument);
        }
        Ok(Request::Put { key, value })
    } else if is(b"DELETE") {
        Ok(Request::Delete {
            key: only_key(rest)?,
        })
    } else if is(b"KEYS") {
        let prefix = match rest {
            None => &[][..],
            Some(prefix) => {
                check_key(prefix)?;
                prefix
            }
        };
        Ok(Request::Keys { prefix })
    } else if is(b"CLOSE") {
        no_args(rest, Request::Close)
    } else if is(b"PING") {
        no_args(rest, Request::Ping)
    } else if is(b"INFO") {
        no_args(rest, Request::Info)
    } else if is(b"DIGEST") {
        no_args(rest, Request::Digest)
    } else if is(b"AUTH") {
        // The rest of the line, spaces included, like a PUT's value.
        match rest {
            Some(password) if !password.is_empty() => Ok(Request::Auth {
                password: Redacted(password),
            }),
            _ => Err(ParseError::MissingArgument),
        }
    } else if is(b"PROMOTE") {
        no_args(rest, Request::Admin(AdminRequest::Promote))
    } else if is(b"COMPACT") {
        no_args(rest, Request::Admin(AdminRequest::Compact))
    } else if is(b"FENCE") {
        no_args(rest, Request::Admin(AdminRequest::Fence))
    } else if is(b"FOLLOW") {
        let (host, port) = split_once(rest.ok_or(ParseError::MissingArgument)?, b' ')
            .ok_or(ParseError::MissingArgument)?;
        if !is_host(host) {
            return Err(ParseError::BadHost);
        }
        let port = parse_port(port)?;
        Ok(Request::Admin(AdminRequest::Follow { host, port }))
    } else {
        Err(ParseError::UnknownCommand)
    }
}

/// Whether `text` names a host: an IP address (an IPv6 one possibly in
/// brackets), or a DNS name of at most 253 bytes whose dot-separated labels
/// are 1 to 63 letters, digits and hyphens, not starting or ending with a
/// hyphen.
pub fn is_host(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Parses a TCP port, 1..=65535.
fn parse_port(text: &[u8]) -> Result<u16, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<u16>().ok())
        .filter(|&p| p != 0 && !text.starts_with(b"+"))
        .ok_or(ParseError::BadPort)
}

fn no_args<'a>(rest: Option<&[u8]>, request: Request<'a>) -> Result<Request<'a>, ParseError> {
    match rest {
        None => Ok(request),
        Some(_) => Err(ParseError::TrailingArgument),
    }
}

fn only_key(rest: Option<&[u8]>) -> Result<&[u8], ParseError> {
    let key = rest.ok_or(ParseError::MissingArgument)?;
    check_key(key)?;
    Ok(key)
}

/// Checks the key rules of `docs/protocol.md`: 1 to 1024 bytes, no
/// whitespace, no control characters.
///
/// # Errors
/// `MissingArgument` for an empty key, `TrailingArgument` when it contains
/// a space (a second argument), `BadKey` otherwise.
pub fn check_key(key: &[u8]) -> Result<(), ParseError> {
    if key.is_empty() {
        return Err(ParseError::MissingArgument);
    }
    if key.contains(&b' ') {
        return Err(ParseError::TrailingArgument);
    }
    if key.len() > MAX_KEY_BYTES
        || key
            .iter()
            .any(|&b| b.is_ascii_whitespace() || b < 0x20 || b == 0x7f)
    {
        return Err(ParseError::BadKey);
    }
    Ok(())
}

/// Returns what follows `word` and one space, comparing case-insensitively.
fn strip_word<'a>(line: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let (first, rest) = split_once(line, b' ')?;
    first.eq_ignore_ascii_case(word).then_some(rest)
}

fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The fixed reply lines. Each encodes to its text plus `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    HelloServer,
    Ok,
    NotFound,
    Bye,
    Pong,
    InvalidCommand,
    InvalidHandshake,
    LineTooLong,
    TooManyConnections,
    WriteNotAllowed,
    ReplicationTimeout,
    Error,
    /// A password is set and this connection has not given it
    /// (`docs/access.md`).
    NoAuth,
    /// `AUTH` with the wrong password; the connection stays.
    WrongPass,
    /// `AUTH` on a node with no password configured.
    NoPasswordSet,
    /// Protected mode refused a client from another host; then close.
    Denied,
    /// The leader's welcome to a follower that proved the secret: the
    /// last plain line before the session records.
    HelloLeader,
    /// A handshake's proof failed, or the node has no secret.
    InvalidSecretKey,
    /// A follower dialled a node that is not a leader.
    CannotAcceptFollower,
    /// The leader has `--max-followers` followers.
    MaxSizeExceeded,
    /// A read on a connection opened to the leader, after this node
    /// stopped being the leader (see [`encode_not_leader`]).
    NotLeader,
    /// `GET` of a value a line cannot carry (empty, or holding `\r` or
    /// `\n`), written through the Redis face.
    BinaryValue,
}

impl Reply {
    /// The reply as it goes on the wire, with its `\n`.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Reply::HelloServer => b"HELLO SERVER\n",
            Reply::Ok => b"OK\n",
            Reply::NotFound => b"NOT_FOUND\n",
            Reply::Bye => b"BYE\n",
            Reply::Pong => b"PONG\n",
            Reply::InvalidCommand => b"INVALID_COMMAND\n",
            Reply::InvalidHandshake => b"INVALID_HANDSHAKE_MESSAGE\n",
            Reply::LineTooLong => b"LINE_TOO_LONG\n",
            Reply::TooManyConnections => b"TOO_MANY_CONNECTIONS\n",
            Reply::WriteNotAllowed => b"WRITE_NOT_ALLOWED\n",
            Reply::ReplicationTimeout => b"REPLICATION_TIMEOUT\n",
            Reply::Error => b"ERROR\n",
            Reply::NoAuth => b"NOAUTH\n",
            Reply::WrongPass => b"WRONGPASS\n",
            Reply::NoPasswordSet => b"ERROR no password is set\n",
            Reply::Denied => DENIED_LINE,
            Reply::HelloLeader => b"HELLO LEADER\n",
            Reply::InvalidSecretKey => b"INVALID_SECRET_KEY\n",
            Reply::CannotAcceptFollower => b"CANNOT_ACCEPT_FOLLOWER_CONNECTION\n",
            Reply::MaxSizeExceeded => b"MAX_SIZE_EXCEEDED\n",
            Reply::NotLeader => b"NOT_LEADER\n",
            Reply::BinaryValue => b"BINARY_VALUE\n",
        }
    }
}

/// Whether `value` can be a `GET` reply line: not empty, no `\r` or `\n`
/// (a `\r` anywhere could pass for the line end's, so it is refused too).
pub fn line_safe(value: &[u8]) -> bool {
    !value.is_empty() && !value.iter().any(|&b| b == b'\n' || b == b'\r')
}

/// What protected mode answers a client from another host before closing
/// it: what happened and the three ways to fix it.
pub const DENIED_LINE: &[u8] = b"DENIED protected mode: no password is set and this client is \
not on loopback; set a password (--password-file or KEYVAL_PASSWORD), connect from this host, \
or turn protected mode off with --protected-mode no\n";

/// The replies to admin commands (`PROMOTE`, `FOLLOW`, `FENCE`,
/// `COMPACT`); each is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminReply {
    /// Done.
    Ok,
    /// `PROMOTE`: the new history's epoch and the seq it starts after.
    Promoted { epoch: u64, seq: u64 },
    /// `FENCE`: the leader's last seq, which no write will pass.
    Fenced { seq: u64 },
    /// The command needs the other role; this node's role.
    WrongRole(&'static str),
    /// `PROMOTE` with no epoch left above the highest known.
    NoEpochLeft,
    /// `FOLLOW` on a node without the shared secret.
    NoSecret,
    /// `FOLLOW` of this node itself; `listen` is where it listens.
    InvalidLeader { leader: String, listen: String },
    /// `COMPACT` while one runs or after the log failed.
    CompactionNotStarted,
    /// The log failed; the node's log says why.
    Error,
}

impl std::fmt::Display for AdminReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminReply::Ok => write!(f, "OK"),
            AdminReply::Promoted { epoch, seq } => write!(f, "OK epoch {epoch} seq {seq}"),
            AdminReply::Fenced { seq } => write!(f, "OK seq {seq}"),
            AdminReply::WrongRole(role) => write!(f, "WRONG_ROLE {role}"),
            AdminReply::NoEpochLeft => write!(f, "ERROR no epoch above the highest known"),
            AdminReply::NoSecret => write!(f, "ERROR no secret to follow with"),
            AdminReply::InvalidLeader { leader, listen } => write!(
                f,
                "INVALID_LEADER {leader} is this node itself (it listens on {listen})"
            ),
            AdminReply::CompactionNotStarted => write!(
                f,
                "COMPACTION_NOT_STARTED (one is running, or the log failed)"
            ),
            AdminReply::Error => write!(f, "ERROR"),
        }
    }
}

/// Appends `WRITE_NOT_ALLOWED`, with the leader's address when a follower
/// knows it (`WRITE_NOT_ALLOWED <host>:<port>`).
pub fn encode_write_not_allowed(out: &mut Vec<u8>, leader: Option<(&str, u16)>) {
    encode_redirect(out, Reply::WriteNotAllowed, leader);
}

/// Appends `NOT_LEADER`, with the leader's address when this node knows it
/// (`NOT_LEADER <host>:<port>`): the answer to a read on a connection
/// opened to this node as the leader, once it no longer is one.
pub fn encode_not_leader(out: &mut Vec<u8>, leader: Option<(&str, u16)>) {
    encode_redirect(out, Reply::NotLeader, leader);
}

fn encode_redirect(out: &mut Vec<u8>, word: Reply, leader: Option<(&str, u16)>) {
    let line = word.as_bytes();
    match leader {
        Some((host, port)) => {
            out.extend_from_slice(&line[..line.len() - 1]);
            out.extend_from_slice(format!(" {host}:{port}\n").as_bytes());
        }
        None => out.extend_from_slice(line),
    }
}

/// Appends a value reply (`<value>\n`).
pub fn encode_value(out: &mut Vec<u8>, value: &[u8]) {
    out.reserve(value.len() + 1);
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends a counted list (`KEYS`, `INFO`): the count, then one line each.
pub fn encode_list<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.extend_from_slice(items.len().to_string().as_bytes());
    out.push(b'\n');
    for item in items {
        encode_value(out, item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_replies_are_the_documented_lines() {
        let cases = [
            (AdminReply::Ok, "OK"),
            (
                AdminReply::Promoted { epoch: 3, seq: 7 },
                "OK epoch 3 seq 7",
            ),
            (AdminReply::Fenced { seq: 9 }, "OK seq 9"),
            (AdminReply::WrongRole("leader"), "WRONG_ROLE leader"),
            (
                AdminReply::InvalidLeader {
                    leader: "h:1".into(),
                    listen: "0.0.0.0:1".into(),
                },
                "INVALID_LEADER h:1 is this node itself (it listens on 0.0.0.0:1)",
            ),
            (AdminReply::Error, "ERROR"),
        ];
        for (reply, line) in cases {
            assert_eq!(reply.to_string(), line);
        }
        let mut out = Vec::new();
        encode_write_not_allowed(&mut out, Some(("10.0.0.1", 5000)));
        encode_write_not_allowed(&mut out, None);
        encode_not_leader(&mut out, Some(("h", 1)));
        encode_not_leader(&mut out, None);
        assert_eq!(
            out,
            b"WRITE_NOT_ALLOWED 10.0.0.1:5000\nWRITE_NOT_ALLOWED\nNOT_LEADER h:1\nNOT_LEADER\n"
        );
    }

    fn parse(line: &str) -> Result<Request<'_>, ParseError> {
        parse_request(line.as_bytes())
    }

    #[test]
    fn lines_end_at_newline_and_drop_carriage_return() {
        assert_eq!(next_line(b"PING\r\nGET", 100), Line::Complete(b"PING", 6));
        assert_eq!(next_line(b"PING\nX", 100), Line::Complete(b"PING", 5));
        assert_eq!(next_line(b"\n", 100), Line::Complete(b"", 1));
        assert_eq!(next_line(b"PIN", 100), Line::Incomplete);
        assert_eq!(next_line(b"", 100), Line::Incomplete);
    }

    #[test]
    fn line_limit_counts_content_not_terminator() {
        assert_eq!(next_line(b"abcd\r\n", 4), Line::Complete(b"abcd", 6));
        assert_eq!(next_line(b"abcd\n", 4), Line::Complete(b"abcd", 5));
        assert_eq!(next_line(b"abcde\n", 4), Line::TooLong);
        assert_eq!(next_line(b"abcd\r", 4), Line::Incomplete);
        assert_eq!(next_line(b"abcde\r", 4), Line::TooLong);
        assert_eq!(next_line(b"abcdef", 4), Line::TooLong);
        // A `\r` that is not followed by `\n` is content.
        assert_eq!(next_line(b"ab\rc\n", 4), Line::Complete(b"ab\rc", 5));
    }

    #[test]
    fn hello_forms() {
        assert_eq!(parse_hello(b"HELLO CLIENT"), Some(Hello::Client));
        assert_eq!(parse_hello(b"hello client"), Some(Hello::Client));
        assert_eq!(
            parse_hello(b"HELLO FOLLOWER|2:abcd"),
            Some(Hello::Follower {
                id: b"2",
                nonce: b"abcd"
            })
        );
        assert_eq!(
            parse_hello(b"HELLO ADMIN|ab"),
            Some(Hello::Admin { nonce: b"ab" })
        );
        for bad in [
            "HELLO",
            "HELLO SERVER",
            "HELLO CLIENT ",
            "HELLOCLIENT",
            "PUT a b",
            "",
            "HELLO FOLLOWER|2",
            "HELLO  CLIENT",
        ] {
            assert_eq!(parse_hello(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn put_value_is_rest_of_line() {
        assert_eq!(
            parse("PUT k hello world"),
            Ok(Request::Put {
                key: b"k",
                value: b"hello world"
            })
        );
        assert_eq!(
            parse("put k  two spaces"),
            Ok(Request::Put {
                key: b"k",
                value: b" two spaces"
            })
        );
        assert_eq!(
            parse("Put k v"),
            Ok(Request::Put {
                key: b"k",
                value: b"v"
            })
        );
    }

    #[test]
    fn put_errors() {
        assert_eq!(parse("PUT"), Err(ParseError::MissingArgument));
        assert_eq!(parse("PUT k"), Err(ParseError::MissingArgument));
        assert_eq!(parse("PUT k "), Err(ParseError::MissingArgument));
        assert_eq!(parse("PUT  k v"), Err(ParseError::MissingArgument));
        assert_eq!(parse("PUT k\tx v"), Err(ParseError::BadKey));
        let long = format!("PUT {} v", "k".repeat(MAX_KEY_BYTES + 1));
        assert_eq!(parse(&long), Err(ParseError::BadKey));
        let max = format!("PUT {} v", "k".repeat(MAX_KEY_BYTES));
        assert!(parse(&max).is_ok());
    }

    #[test]
    fn get_delete_keys() {
        assert_eq!(parse("GET a"), Ok(Request::Get { key: b"a" }));
        assert_eq!(parse("get a"), Ok(Request::Get { key: b"a" }));
        assert_eq!(parse("GET"), Err(ParseError::MissingArgument));
        assert_eq!(parse("GET "), Err(ParseError::MissingArgument));
        assert_eq!(parse("GET a b"), Err(ParseError::TrailingArgument));
        assert_eq!(parse("GET a\x01"), Err(ParseError::BadKey));
        assert_eq!(parse("DELETE a"), Ok(Request::Delete { key: b"a" }));
        assert_eq!(parse("DELETE"), Err(ParseError::MissingArgument));
        assert_eq!(parse("KEYS"), Ok(Request::Keys { prefix: b"" }));
        assert_eq!(parse("KEYS us"), Ok(Request::Keys { prefix: b"us" }));
        assert_eq!(parse("KEYS a b"), Err(ParseError::TrailingArgument));
        assert_eq!(parse("KEYS "), Err(ParseError::MissingArgument));
    }

    #[test]
    fn bare_commands() {
        assert_eq!(parse("PING"), Ok(Request::Ping));
        assert_eq!(parse("ping"), Ok(Request::Ping));
        assert_eq!(parse("CLOSE"), Ok(Request::Close));
        assert_eq!(parse("INFO"), Ok(Request::Info));
        assert_eq!(parse("DIGEST"), Ok(Request::Digest));
        assert_eq!(parse("PING x"), Err(ParseError::TrailingArgument));
        assert_eq!(parse("CLOSE "), Err(ParseError::TrailingArgument));
        assert_eq!(parse(""), Err(ParseError::UnknownCommand));
        assert_eq!(parse("FROB"), Err(ParseError::UnknownCommand));
        assert_eq!(parse("HELLO CLIENT"), Err(ParseError::UnknownCommand));
    }

    #[test]
    fn admin_commands() {
        assert_eq!(parse("PROMOTE"), Ok(Request::Admin(AdminRequest::Promote)));
        assert_eq!(
            parse("follow 127.0.0.1 5000"),
            Ok(Request::Admin(AdminRequest::Follow {
                host: b"127.0.0.1",
                port: 5000
            }))
        );
        for bad in [
            "FOLLOW -h 5000",
            "FOLLOW h_1 5000",
            "FOLLOW a..b 5000",
            "FOLLOW [10.0.0.1 5000",
            "FOLLOW host;rm 5000",
            "FOLLOW \u{e9}t\u{e9} 5000",
        ] {
            assert_eq!(parse(bad), Err(ParseError::BadHost), "{bad}");
        }
        assert_eq!(
            parse(&format!("FOLLOW {} 1", "a".repeat(64))),
            Err(ParseError::BadHost)
        );
        for good in [
            "db-1.example.com",
            "10.0.0.2",
            "::1",
            "[fe80::1]",
            "localhost.",
        ] {
            assert!(is_host(good.as_bytes()), "{good}");
        }
        assert_eq!(parse("FOLLOW h 0"), Err(ParseError::BadPort));
        assert_eq!(parse("FOLLOW h 70000"), Err(ParseError::BadPort));
        assert_eq!(parse("FOLLOW h +5"), Err(ParseError::BadPort));
        assert_eq!(parse("FOLLOW h"), Err(ParseError::MissingArgument));
    }

    #[test]
    fn is_write_marks_put_and_delete() {
        assert!(parse("PUT a b").is_ok_and(|r| r.is_write()));
        assert!(parse("DELETE a").is_ok_and(|r| r.is_write()));
        assert!(parse("GET a").is_ok_and(|r| !r.is_write()));
    }

    #[test]
    fn auth_takes_the_rest_of_the_line() {
        assert_eq!(
            parse("AUTH hunter2"),
            Ok(Request::Auth {
                password: Redacted(b"hunter2")
            })
        );
        assert_eq!(
            parse("auth two words "),
            Ok(Request::Auth {
                password: Redacted(b"two words ")
            })
        );
        assert_eq!(parse("AUTH"), Err(ParseError::MissingArgument));
        assert_eq!(parse("AUTH "), Err(ParseError::MissingArgument));
        let shown = format!("{:?}", parse("AUTH hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn access_kinds() {
        use crate::access::Kind;
        for (line, kind) in [
            ("AUTH x", Kind::Auth),
            ("PING", Kind::Open),
            ("CLOSE", Kind::Open),
            ("GET a", Kind::Gated),
            ("PUT a b", Kind::Gated),
            ("DELETE a", Kind::Gated),
            ("KEYS", Kind::Gated),
            ("INFO", Kind::Gated),
            ("DIGEST", Kind::Gated),
            ("PROMOTE", Kind::Gated),
        ] {
            assert_eq!(parse(line).map(|r| r.access_kind()), Ok(kind), "{line}");
        }
    }

    #[test]
    fn access_replies_are_single_lines() {
        for reply in [
            Reply::NoAuth,
            Reply::WrongPass,
            Reply::NoPasswordSet,
            Reply::Denied,
        ] {
            let bytes = reply.as_bytes();
            assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(bytes.last(), Some(&b'\n'));
        }
        assert!(Reply::Denied.as_bytes().starts_with(b"DENIED "));
    }

    #[test]
    fn list_encoding() {
        let mut out = Vec::new();
        encode_list(&mut out, [&b"a"[..], b"b"].into_iter());
        assert_eq!(out, b"2\na\nb\n");
        out.clear();
        encode_list(&mut out, std::iter::empty());
        assert_eq!(out, b"0\n");
    }
}
