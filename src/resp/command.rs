//! A RESP command's arguments as a typed [`Command`]: the command set of
//! `docs/redis.md`, with Redis 7's error texts for what is wrong.
//!
//! Pure. Arguments borrow from the connection's read buffer; nothing is
//! copied.

use std::fmt;

use super::encode::Proto;
use crate::access;
use crate::protocol::Redacted;

/// One command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `PING [message]`.
    Ping(Option<&'a [u8]>),
    /// `ECHO message`.
    Echo(&'a [u8]),
    /// `QUIT`: `+OK`, then close.
    Quit,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello(Hello<'a>),
    /// `AUTH [user] password`.
    Auth {
        user: Option<&'a [u8]>,
        password: Redacted<'a>,
    },
    /// `SELECT 0` (other indexes are an error).
    Select,
    /// `CLIENT SETNAME|GETNAME|SETINFO|ID`.
    Client(Client<'a>),
    /// `COMMAND`, `COMMAND COUNT|DOCS|INFO|LIST`: answered empty.
    CommandInfo(CommandInfo),
    /// `CONFIG GET pattern...`.
    ConfigGet(&'a [&'a [u8]]),
    /// `SET key value [NX|XX] [GET]`.
    Set(Set<'a>),
    /// `GET key`.
    Get(&'a [u8]),
    /// `MGET key...`.
    MGet(&'a [&'a [u8]]),
    /// `DEL key...`.
    Del(&'a [&'a [u8]]),
    /// `EXISTS key...`.
    Exists(&'a [&'a [u8]]),
    /// `MSET key value [key value...]`: the pairs, flattened.
    MSet(&'a [&'a [u8]]),
    /// `KEYS pattern`.
    Keys(&'a [u8]),
    /// `SCAN cursor [MATCH pattern] [COUNT n]`.
    Scan(Scan<'a>),
    /// `DBSIZE`.
    DbSize,
    /// `WAIT numreplicas timeout`.
    Wait { replicas: u64, timeout_ms: u64 },
    /// `ROLE`.
    Role,
    /// `INFO [section...]`.
    Info(&'a [&'a [u8]]),
    /// `KEYVAL.DIGEST`.
    Digest,
}

/// `HELLO`'s arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The version asked for; `None` keeps the connection's.
    pub proto: Option<Proto>,
    /// `AUTH username password`.
    pub auth: Option<(&'a [u8], Redacted<'a>)>,
    /// `SETNAME name`.
    pub setname: Option<&'a [u8]>,
}

/// The `CLIENT` subcommands.
#[derive(Debug, PartialEq, Eq)]
pub enum Client<'a> {
    SetName(&'a [u8]),
    GetName,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`: accepted, `+OK`.
    SetInfo,
    Id,
}

/// What `COMMAND` asked for; all are answered empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandInfo {
    /// `COMMAND`, `COMMAND INFO ...`, `COMMAND DOCS ...`, `COMMAND LIST`:
    /// an empty array (an empty map for `DOCS` in RESP3).
    List,
    /// `COMMAND DOCS ...`.
    Docs,
    /// `COMMAND COUNT`: `:0`.
    Count,
}

/// `SET`'s arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Set<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub condition: Option<Condition>,
    /// `GET`: answer the old value (or nil) instead of `OK`.
    pub get: bool,
}

/// `SET`'s `NX` / `XX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Only if the key does not exist.
    Nx,
    /// Only if it does.
    Xx,
}

/// `SCAN`'s arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan<'a> {
    pub cursor: u64,
    pub pattern: Option<&'a [u8]>,
    /// `COUNT`, 10 when not given; at least 1.
    pub count: usize,
}

/// Why a command cannot run; answered as an error reply, and the
/// connection stays open. `Display` gives the text after `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// `ERR unknown command '<name>', with args beginning with: '<arg>' ...`
    Unknown { name: String, args: String },
    /// `ERR unknown subcommand '<sub>'. Try <CMD> HELP.`
    UnknownSubcommand { command: String, sub: String },
    /// `ERR wrong number of arguments for '<name>' command` (lower case;
    /// `client|setname` for a subcommand).
    Arity(String),
    /// `ERR syntax error`.
    Syntax,
    /// `ERR value is not an integer or out of range`.
    NotInteger,
    /// `ERR timeout is negative`.
    NegativeTimeout,
    /// `ERR invalid cursor`.
    InvalidCursor,
    /// `ERR invalid key`: a key outside the rules of `docs/protocol.md`.
    InvalidKey,
    /// `ERR expiry is not supported` (`EX`, `PX`, `EXAT`, `PXAT`,
    /// `KEEPTTL`).
    Expiry,
    /// `ERR DB index is out of range`.
    DbIndex,
    /// `NOPROTO unsupported protocol version`.
    NoProto,
    /// `ERR Protocol version is not an integer or out of range`.
    ProtoNotInteger,
    /// `ERR CONFIG SET is not supported: keyval is configured by its flags`.
    ConfigSet,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

impl Command<'_> {
    /// Whether it changes data (`SET`, `MSET`, `DEL`): `-READONLY` on a
    /// follower.
    pub fn is_write(&self) -> bool {
        matches!(self, Command::Set(_) | Command::MSet(_) | Command::Del(_))
    }

    /// Whether it shows stored data: on a connection opened to the leader,
    /// such reads stop when this node is no longer the leader.
    pub fn reads_data(&self) -> bool {
        matches!(
            self,
            Command::Get(_)
                | Command::MGet(_)
                | Command::Exists(_)
                | Command::Keys(_)
                | Command::Scan(_)
                | Command::DbSize
                | Command::Digest
        )
    }

    /// How the password gate treats it: `AUTH` and `HELLO` (which may
    /// carry `AUTH`) open it, `QUIT` passes it, everything else waits
    /// behind it (Redis answers even `PING` with `-NOAUTH`).
    pub fn access_kind(&self) -> access::Kind {
        match self {
            Command::Auth { .. } | Command::Hello(_) => access::Kind::Auth,
            Command::Quit => access::Kind::Open,
            _ => access::Kind::Gated,
        }
    }
}

/// Reads a command from its arguments (`args[0]` is the name, any case).
///
/// # Errors
/// A [`CommandError`] to answer; the connection stays open.
pub fn parse_command<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let _ = args;
    todo!()
}
