//! A RESP command's arguments as a typed [`Command`]: the command set of
//! `docs/redis.md`, with Redis 7's error texts for what is wrong.
//!
//! Pure. Arguments borrow from the connection's read buffer; nothing is
//! copied.

use std::fmt;

use super::encode::Proto;
use super::parse::integer;
use crate::access;
use crate::protocol::{check_key, Redacted};

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
    /// `WAIT numreplicas timeout` (a negative count reads as 0: Redis
    /// answers it at once, as it does 0).
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
/// connection stays open. `Display` gives the text after `-`, byte for
/// byte what Redis 7 answers (7.2 for `CLIENT SETINFO`, which 7.0 lacks),
/// except that bytes of the client's that are not UTF-8 show as U+FFFD.
/// Text taken from the arguments stops at a NUL byte, as C's `%s` does,
/// and has `\r` and `\n` turned into spaces, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// `ERR unknown command '<name>', with args beginning with: '<arg>' ...`
    /// `name` is at most 128 bytes of the command's name; `args` is the
    /// list as Redis prints it: each argument as `'<arg>' `, each cut to
    /// what is left of a 128-byte budget, and no argument begun once the
    /// list reaches 128 bytes.
    Unknown { name: String, args: String },
    /// `ERR unknown subcommand '<sub>'. Try <CMD> HELP.` (`sub` at most
    /// 128 bytes, `command` in upper case).
    UnknownSubcommand { command: String, sub: String },
    /// `ERR wrong number of arguments for '<name>' command` (lower case;
    /// `client|setname` for a subcommand).
    Arity(String),
    /// `ERR syntax error`.
    Syntax,
    /// `ERR value is not an integer or out of range`.
    NotInteger,
    /// `ERR value is out of range, value must between <min> and <max>`
    /// (sic): an integer outside what the command takes (`SELECT`'s index
    /// is a C `int`).
    OutOfRange { min: i64, max: i64 },
    /// `ERR timeout is not an integer or out of range` (`WAIT`).
    TimeoutNotInteger,
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
    /// `ERR Syntax error in HELLO option '<option>'`.
    HelloOption(String),
    /// `ERR Client names cannot contain spaces, newlines or special
    /// characters.` (`CLIENT SETNAME`, `HELLO ... SETNAME`: a name's bytes
    /// must be `!` to `~`).
    ClientName,
    /// `ERR Unrecognized option '<option>'` (`CLIENT SETINFO` of anything
    /// but `LIB-NAME` or `LIB-VER`).
    UnrecognizedOption(String),
    /// `ERR <attribute> cannot contain spaces, newlines or special
    /// characters.` (`CLIENT SETINFO`'s value; the attribute as given).
    ClientAttr(String),
    /// `ERR CONFIG SET is not supported: keyval is configured by its flags`.
    ConfigSet,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown { name, args } => write!(
                f,
                "ERR unknown command '{name}', with args beginning with: {args}"
            ),
            CommandError::UnknownSubcommand { command, sub } => {
                write!(f, "ERR unknown subcommand '{sub}'. Try {command} HELP.")
            }
            CommandError::Arity(name) => {
                write!(f, "ERR wrong number of arguments for '{name}' command")
            }
            CommandError::Syntax => f.write_str("ERR syntax error"),
            CommandError::NotInteger => f.write_str("ERR value is not an integer or out of range"),
            CommandError::OutOfRange { min, max } => write!(
                f,
                "ERR value is out of range, value must between {min} and {max}"
            ),
            CommandError::TimeoutNotInteger => {
                f.write_str("ERR timeout is not an integer or out of range")
            }
            CommandError::NegativeTimeout => f.write_str("ERR timeout is negative"),
            CommandError::InvalidCursor => f.write_str("ERR invalid cursor"),
            CommandError::InvalidKey => f.write_str("ERR invalid key"),
            CommandError::Expiry => f.write_str("ERR expiry is not supported"),
            CommandError::DbIndex => f.write_str("ERR DB index is out of range"),
            CommandError::NoProto => f.write_str("NOPROTO unsupported protocol version"),
            CommandError::ProtoNotInteger => {
                f.write_str("ERR Protocol version is not an integer or out of range")
            }
            CommandError::HelloOption(option) => {
                write!(f, "ERR Syntax error in HELLO option '{option}'")
            }
            CommandError::ClientName => f.write_str(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            CommandError::UnrecognizedOption(option) => {
                write!(f, "ERR Unrecognized option '{option}'")
            }
            CommandError::ClientAttr(attribute) => write!(
                f,
                "ERR {attribute} cannot contain spaces, newlines or special characters."
            ),
            CommandError::ConfigSet => {
                f.write_str("ERR CONFIG SET is not supported: keyval is configured by its flags")
            }
        }
    }
}

impl std::error::Error for CommandError {}

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

/// The commands keyval knows, as Redis names them in errors, with Redis's
/// arity: `n` takes exactly `n` arguments, `-n` at least `n` (the name
/// counts).
const COMMANDS: &[(&str, i32)] = &[
    ("get", 2),
    ("set", -3),
    ("mget", -2),
    ("del", -2),
    ("exists", -2),
    ("mset", -3),
    ("keys", 2),
    ("scan", -2),
    ("dbsize", 1),
    ("wait", 3),
    ("role", 1),
    ("info", -1),
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("hello", -1),
    ("auth", -2),
    ("select", 2),
    ("config", -2),
    ("command", -1),
    ("client", -2),
    ("keyval.digest", 1),
];

/// The subcommands of the container commands (`CLIENT`, `CONFIG`,
/// `COMMAND`), with their arity counted from the command's name.
const SUBCOMMANDS: &[(&str, &str, i32)] = &[
    ("client", "setname", 3),
    ("client", "getname", 2),
    ("client", "setinfo", 4),
    ("client", "id", 2),
    ("config", "get", -3),
    ("config", "set", -4),
    ("command", "count", 2),
    ("command", "docs", -2),
    ("command", "info", -2),
    ("command", "list", -2),
];

/// How much of a name or an argument Redis shows in an unknown-command or
/// unknown-subcommand error.
const SHOWN_BYTES: usize = 128;

/// Reads a command from its arguments (`args[0]` is the name, any case).
///
/// The checks run in Redis's order: the name (and a container command's
/// subcommand), then the number of arguments, then the arguments one by
/// one from the left, so the first error Redis would give is the one
/// given. Checks of keyval's own (keys per `docs/protocol.md`) come after
/// Redis's. Two deviations, both because the check is the server's:
/// Redis authenticates `HELLO ... AUTH` before it looks at a later
/// `SETNAME`, and answers `-NOAUTH` to an unauthenticated client before
/// it reads the arguments of any command but `AUTH`, `HELLO` and `QUIT`.
///
/// # Errors
/// A [`CommandError`] to answer; the connection stays open.
pub fn parse_command<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let Some(&name) = args.first() else {
        return Err(unknown(args));
    };
    let Some(&(command, arity)) = COMMANDS
        .iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))
    else {
        return Err(unknown(args));
    };
    let mut full = command.to_string();
    let mut arity = arity;
    if let Some(&sub) = args.get(1).filter(|_| is_container(command)) {
        let Some(&(_, subcommand, sub_arity)) = SUBCOMMANDS
            .iter()
            .find(|(of, known, _)| *of == command && sub.eq_ignore_ascii_case(known.as_bytes()))
        else {
            return Err(CommandError::UnknownSubcommand {
                command: command.to_ascii_uppercase(),
                sub: shown(sub, SHOWN_BYTES),
            });
        };
        full = format!("{command}|{subcommand}");
        arity = sub_arity;
    }
    let count = args.len();
    let arity_ok = match usize::try_from(arity) {
        Ok(exact) => count == exact,
        Err(_) => count >= arity.unsigned_abs() as usize,
    };
    if !arity_ok {
        return Err(CommandError::Arity(full));
    }
    match full.as_str() {
        "get" => Ok(Command::Get(key(args[1])?)),
        "set" => set(args),
        "mget" => Ok(Command::MGet(keys(&args[1..])?)),
        "del" => Ok(Command::Del(keys(&args[1..])?)),
        "exists" => Ok(Command::Exists(keys(&args[1..])?)),
        "mset" => {
            if count.is_multiple_of(2) {
                return Err(CommandError::Arity(full));
            }
            for pair in args[1..].chunks(2) {
                key(pair[0])?;
            }
            Ok(Command::MSet(&args[1..]))
        }
        "keys" => Ok(Command::Keys(args[1])),
        "scan" => scan(args),
        "dbsize" => Ok(Command::DbSize),
        "wait" => {
            let replicas = integer(args[1]).ok_or(CommandError::NotInteger)?;
            let timeout = integer(args[2]).ok_or(CommandError::TimeoutNotInteger)?;
            let timeout_ms = u64::try_from(timeout).map_err(|_| CommandError::NegativeTimeout)?;
            // Redis answers at once when as many replicas as asked have
            // acknowledged, which for a negative count is always: as 0.
            let replicas = u64::try_from(replicas).unwrap_or(0);
            Ok(Command::Wait {
                replicas,
                timeout_ms,
            })
        }
        "role" => Ok(Command::Role),
        "info" => Ok(Command::Info(&args[1..])),
        "ping" if count > 2 => Err(CommandError::Arity(full)),
        "ping" => Ok(Command::Ping(args.get(1).copied())),
        "echo" => Ok(Command::Echo(args[1])),
        "quit" => Ok(Command::Quit),
        "hello" => hello(args),
        "auth" => match args {
            [_, password] => Ok(Command::Auth {
                user: None,
                password: Redacted(password),
            }),
            [_, user, password] => Ok(Command::Auth {
                user: Some(user),
                password: Redacted(password),
            }),
            _ => Err(CommandError::Syntax),
        },
        "select" => {
            let index = integer(args[1]).ok_or(CommandError::NotInteger)?;
            if i32::try_from(index).is_err() {
                return Err(CommandError::OutOfRange {
                    min: i32::MIN.into(),
                    max: i32::MAX.into(),
                });
            }
            match index {
                0 => Ok(Command::Select),
                _ => Err(CommandError::DbIndex),
            }
        }
        "config|get" => Ok(Command::ConfigGet(&args[2..])),
        "config|set" => Err(CommandError::ConfigSet),
        "command" | "command|info" | "command|list" => Ok(Command::CommandInfo(CommandInfo::List)),
        "command|docs" => Ok(Command::CommandInfo(CommandInfo::Docs)),
        "command|count" => Ok(Command::CommandInfo(CommandInfo::Count)),
        "client|setname" => {
            client_name(args[2])?;
            Ok(Command::Client(Client::SetName(args[2])))
        }
        "client|getname" => Ok(Command::Client(Client::GetName)),
        "client|id" => Ok(Command::Client(Client::Id)),
        "client|setinfo" => {
            let attribute = args[2];
            let name = c_str(attribute);
            if !name.eq_ignore_ascii_case(b"lib-name") && !name.eq_ignore_ascii_case(b"lib-ver") {
                return Err(CommandError::UnrecognizedOption(shown(
                    attribute,
                    usize::MAX,
                )));
            }
            if !args[3].iter().all(|b| (b'!'..=b'~').contains(b)) {
                return Err(CommandError::ClientAttr(shown(attribute, usize::MAX)));
            }
            Ok(Command::Client(Client::SetInfo))
        }
        "keyval.digest" => Ok(Command::Digest),
        // `client` and `config` alone fail their arity above; a command
        // in the table is handled by one of the arms.
        _ => Err(unknown(args)),
    }
}

/// Whether Redis looks up a subcommand after the name.
fn is_container(command: &str) -> bool {
    matches!(command, "client" | "config" | "command")
}

/// `SET key value [NX|XX] [GET]`, options in any order and any case.
///
/// The expiry options are read with Redis's grammar (`EX`, `PX`, `EXAT`
/// and `PXAT` take a value, `KEEPTTL` none, and no two of them go
/// together), so that what Redis calls a syntax error is one here too;
/// what Redis would take with an expiry is [`CommandError::Expiry`].
fn set<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let mut condition = None;
    let mut get = false;
    // The expiry option seen, by its name.
    let mut expiry: Option<&str> = None;
    let mut at = 3;
    while let Some(&option) = args.get(at) {
        // Redis compares options as C strings.
        let option = c_str(option);
        let is = |word: &str| option.eq_ignore_ascii_case(word.as_bytes());
        let has_value = at + 1 < args.len();
        let timed = ["EX", "PX", "EXAT", "PXAT"]
            .into_iter()
            .find(|&word| is(word) && has_value && expiry.is_none_or(|e| e == word));
        if is("NX") && condition != Some(Condition::Xx) {
            condition = Some(Condition::Nx);
        } else if is("XX") && condition != Some(Condition::Nx) {
            condition = Some(Condition::Xx);
        } else if is("GET") {
            get = true;
        } else if is("KEEPTTL") && expiry.is_none_or(|e| e == "KEEPTTL") {
            expiry = Some("KEEPTTL");
        } else if let Some(word) = timed {
            expiry = Some(word);
            at += 1;
        } else {
            return Err(CommandError::Syntax);
        }
        at += 1;
    }
    if expiry.is_some() {
        return Err(CommandError::Expiry);
    }
    Ok(Command::Set(Set {
        key: key(args[1])?,
        value: args[2],
        condition,
        get,
    }))
}

/// `SCAN cursor [MATCH pattern] [COUNT n]`, options in any order, the
/// last of each winning.
fn scan<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let cursor = cursor(args[1]).ok_or(CommandError::InvalidCursor)?;
    let mut scan = Scan {
        cursor,
        pattern: None,
        count: 10,
    };
    let mut rest = &args[2..];
    while let [option, value, more @ ..] = rest {
        let option = c_str(option);
        if option.eq_ignore_ascii_case(b"COUNT") {
            let count = integer(value).ok_or(CommandError::NotInteger)?;
            scan.count = usize::try_from(count)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or(CommandError::Syntax)?;
        } else if option.eq_ignore_ascii_case(b"MATCH") {
            scan.pattern = Some(value);
        } else {
            return Err(CommandError::Syntax);
        }
        rest = more;
    }
    if !rest.is_empty() {
        return Err(CommandError::Syntax);
    }
    Ok(Command::Scan(scan))
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
fn hello<'a>(args: &'a [&'a [u8]]) -> Result<Command<'a>, CommandError> {
    let mut hello = Hello {
        proto: None,
        auth: None,
        setname: None,
    };
    let Some((&version, mut rest)) = args[1..].split_first() else {
        return Ok(Command::Hello(hello));
    };
    hello.proto = match integer(version).ok_or(CommandError::ProtoNotInteger)? {
        2 => Some(Proto::Resp2),
        3 => Some(Proto::Resp3),
        _ => return Err(CommandError::NoProto),
    };
    while let [option, more @ ..] = rest {
        let option = c_str(option);
        match more {
            [user, password, after @ ..] if option.eq_ignore_ascii_case(b"AUTH") => {
                hello.auth = Some((*user, Redacted(password)));
                rest = after;
            }
            [name, after @ ..] if option.eq_ignore_ascii_case(b"SETNAME") => {
                client_name(name)?;
                hello.setname = Some(name);
                rest = after;
            }
            _ => return Err(CommandError::HelloOption(shown(option, usize::MAX))),
        }
    }
    Ok(Command::Hello(hello))
}

/// A key, checked against keyval's rules.
fn key(key: &[u8]) -> Result<&[u8], CommandError> {
    check_key(key).map_err(|_| CommandError::InvalidKey)?;
    Ok(key)
}

fn keys<'a>(keys: &'a [&'a [u8]]) -> Result<&'a [&'a [u8]], CommandError> {
    for &k in keys {
        key(k)?;
    }
    Ok(keys)
}

/// A client name: empty (no name), or bytes from `!` to `~`.
fn client_name(name: &[u8]) -> Result<(), CommandError> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(CommandError::ClientName)
    }
}

/// A `SCAN` cursor as Redis reads it, with C's `strtoul`: no leading
/// blank, an optional sign (`-n` wraps around, as `strtoul` does),
/// decimal digits up to the end or a NUL byte, within 64 bits; an empty
/// cursor is 0.
fn cursor(text: &[u8]) -> Option<u64> {
    let text = c_str(text);
    if text.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let value = super::parse::digits_value(digits)?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// The bytes C sees of an argument: up to its first NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(bytes)
}

/// An argument as Redis prints it in an error with `%.<max>s`: up to its
/// first NUL and at most `max` bytes, `\r` and `\n` as spaces.
fn shown(bytes: &[u8], max: usize) -> String {
    let bytes = c_str(bytes);
    text(&bytes[..bytes.len().min(max)])
}

/// Bytes as error text: `\r` and `\n` become spaces (Redis's
/// `sdsmapchars`), and what is not UTF-8 becomes U+FFFD.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// Redis's answer to a name it does not know (`commandCheckExistence`).
fn unknown(args: &[&[u8]]) -> CommandError {
    let name = args
        .first()
        .map_or_else(String::new, |n| shown(n, SHOWN_BYTES));
    let mut list = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= SHOWN_BYTES {
            break;
        }
        let room = SHOWN_BYTES - list.len();
        let arg = c_str(arg);
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    CommandError::Unknown {
        name,
        args: text(&list),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a command given as words (for arguments without spaces).
    fn words(line: &str) -> Vec<&[u8]> {
        line.split(' ').map(str::as_bytes).collect()
    }

    fn ok(line: &str) -> Command<'static> {
        let args: &'static [&'static [u8]] = Vec::leak(
            line.split(' ')
                .map(|w| &*Vec::leak(w.as_bytes().to_vec()))
                .collect(),
        );
        match parse_command(args) {
            Ok(command) => command,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    /// The error text (after `-`) for `args`.
    fn error_of(args: &[&[u8]]) -> String {
        match parse_command(args) {
            Err(e) => e.to_string(),
            Ok(command) => panic!("{args:?} parsed: {command:?}"),
        }
    }

    fn error(line: &str) -> String {
        error_of(&words(line))
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(ok("GET a"), Command::Get(b"a"));
        assert_eq!(ok("gEt a"), Command::Get(b"a"));
        assert_eq!(ok("keyval.DIGEST"), Command::Digest);
        assert_eq!(ok("Client GetName"), Command::Client(Client::GetName));
    }

    #[test]
    fn every_command() {
        assert_eq!(ok("PING"), Command::Ping(None));
        assert_eq!(ok("PING hi"), Command::Ping(Some(b"hi")));
        assert_eq!(ok("ECHO hi"), Command::Echo(b"hi"));
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("QUIT now please"), Command::Quit);
        assert_eq!(ok("SELECT 0"), Command::Select);
        assert_eq!(ok("MGET a b"), Command::MGet(&[b"a", b"b"]));
        assert_eq!(ok("DEL a"), Command::Del(&[b"a"]));
        assert_eq!(ok("EXISTS a a"), Command::Exists(&[b"a", b"a"]));
        assert_eq!(ok("MSET a 1 b 2"), Command::MSet(&[b"a", b"1", b"b", b"2"]));
        assert_eq!(ok("KEYS user:*"), Command::Keys(b"user:*"));
        assert_eq!(ok("DBSIZE"), Command::DbSize);
        assert_eq!(ok("ROLE"), Command::Role);
        assert_eq!(ok("INFO"), Command::Info(&[]));
        assert_eq!(
            ok("INFO server replication"),
            Command::Info(&[b"server", b"replication"])
        );
        assert_eq!(ok("KEYVAL.DIGEST"), Command::Digest);
        assert_eq!(
            ok("WAIT 1 100"),
            Command::Wait {
                replicas: 1,
                timeout_ms: 100
            }
        );
        assert_eq!(
            ok("WAIT -3 0"),
            Command::Wait {
                replicas: 0,
                timeout_ms: 0
            }
        );
        assert_eq!(
            ok("CONFIG GET maxmemory"),
            Command::ConfigGet(&[b"maxmemory"])
        );
        assert_eq!(ok("config get a b"), Command::ConfigGet(&[b"a", b"b"]));
        assert_eq!(ok("COMMAND"), Command::CommandInfo(CommandInfo::List));
        assert_eq!(
            ok("COMMAND INFO get"),
            Command::CommandInfo(CommandInfo::List)
        );
        assert_eq!(ok("COMMAND LIST"), Command::CommandInfo(CommandInfo::List));
        assert_eq!(ok("COMMAND DOCS"), Command::CommandInfo(CommandInfo::Docs));
        assert_eq!(
            ok("command docs get"),
            Command::CommandInfo(CommandInfo::Docs)
        );
        assert_eq!(
            ok("COMMAND COUNT"),
            Command::CommandInfo(CommandInfo::Count)
        );
        assert_eq!(ok("CLIENT ID"), Command::Client(Client::Id));
        assert_eq!(
            ok("CLIENT SETNAME web-1"),
            Command::Client(Client::SetName(b"web-1"))
        );
        assert_eq!(
            parse_command(&[b"CLIENT", b"SETNAME", b""]),
            Ok(Command::Client(Client::SetName(b"")))
        );
        assert_eq!(
            ok("CLIENT SETINFO LIB-NAME redis-py"),
            Command::Client(Client::SetInfo)
        );
        assert_eq!(
            ok("client setinfo lib-ver 5.0.1"),
            Command::Client(Client::SetInfo)
        );
    }

    #[test]
    fn set_options() {
        let set = |condition, get| {
            Command::Set(Set {
                key: b"k",
                value: b"v",
                condition,
                get,
            })
        };
        assert_eq!(ok("SET k v"), set(None, false));
        assert_eq!(ok("SET k v nx"), set(Some(Condition::Nx), false));
        assert_eq!(ok("SET k v XX GET"), set(Some(Condition::Xx), true));
        assert_eq!(ok("SET k v get NX nx"), set(Some(Condition::Nx), true));
        assert_eq!(
            parse_command(&[b"SET", b"k", b""]),
            Ok(Command::Set(Set {
                key: b"k",
                value: b"",
                condition: None,
                get: false
            }))
        );
        for line in [
            "SET k v NX XX",
            "SET k v xx nx",
            "SET k v foo",
            "SET k v GET foo",
        ] {
            assert_eq!(error(line), "ERR syntax error", "{line}");
        }
        for line in [
            "SET k v EX 10",
            "SET k v px 10",
            "SET k v EXAT 1",
            "SET k v pxat 1",
            "SET k v KeepTtl",
            "SET k v NX ex 1",
            "SET k v EX 10 EX 20",
            "SET k v KEEPTTL KEEPTTL",
            // Redis would refuse the value; keyval refuses expiry first.
            "SET k v EX abc",
        ] {
            assert_eq!(error(line), "ERR expiry is not supported", "{line}");
        }
        // Redis's grammar of expiry options: what it calls a syntax error.
        for line in [
            "SET k v EX",
            "SET k v EX 10 PX 10",
            "SET k v KEEPTTL EX 10",
            "SET k v EX 10 KEEPTTL",
            "SET k v EX 10 foo",
        ] {
            assert_eq!(error(line), "ERR syntax error", "{line}");
        }
        // Options are C strings to Redis.
        assert_eq!(
            parse_command(&[b"SET", b"k", b"v", b"nx\0z"]),
            Ok(set(Some(Condition::Nx), false))
        );
        // Redis's syntax error first, then keyval's key rule.
        assert_eq!(error("SET k\x01 v foo"), "ERR syntax error");
        assert_eq!(error("SET k\x01 v"), "ERR invalid key");
    }

    #[test]
    fn keys_are_checked() {
        let long = vec![b'k'; 1025];
        let max = vec![b'k'; 1024];
        for bad in [&b""[..], b"a b", b"a\tb", b"a\nb", b"\x7f", &long] {
            for name in [&b"GET"[..], b"DEL", b"EXISTS", b"MGET"] {
                assert_eq!(
                    error_of(&[name, bad]),
                    "ERR invalid key",
                    "{name:?} {bad:?}"
                );
            }
            assert_eq!(error_of(&[b"MGET", b"ok", bad]), "ERR invalid key");
            assert_eq!(error_of(&[b"SET", bad, b"v"]), "ERR invalid key");
            assert_eq!(
                error_of(&[b"MSET", b"a", b"1", bad, b"2"]),
                "ERR invalid key"
            );
        }
        assert_eq!(parse_command(&[b"GET", &max]), Ok(Command::Get(&max)));
        // Values may be anything, patterns too.
        assert!(parse_command(&[b"MSET", b"a", b"x y\n"]).is_ok());
        assert_eq!(parse_command(&[b"KEYS", b""]), Ok(Command::Keys(b"")));
    }

    #[test]
    fn arity_errors_name_the_command_as_redis_does() {
        for (line, name) in [
            ("GET", "get"),
            ("GET a b", "get"),
            ("set k", "set"),
            ("MGET", "mget"),
            ("DEL", "del"),
            ("EXISTS", "exists"),
            ("MSET a", "mset"),
            ("MSET a b c", "mset"),
            ("KEYS", "keys"),
            ("KEYS a b", "keys"),
            ("SCAN", "scan"),
            ("DBSIZE x", "dbsize"),
            ("WAIT 1", "wait"),
            ("WAIT 1 2 3", "wait"),
            ("ROLE x", "role"),
            ("PING a b", "ping"),
            ("ECHO", "echo"),
            ("ECHO a b", "echo"),
            ("AUTH", "auth"),
            ("SELECT", "select"),
            ("SELECT 0 1", "select"),
            ("CONFIG", "config"),
            ("CONFIG GET", "config|get"),
            ("config set a", "config|set"),
            ("CLIENT", "client"),
            ("CLIENT SETNAME", "client|setname"),
            ("client setname a b", "client|setname"),
            ("CLIENT GETNAME x", "client|getname"),
            ("CLIENT ID x", "client|id"),
            ("CLIENT SETINFO lib-name", "client|setinfo"),
            ("COMMAND COUNT x", "command|count"),
            ("KEYVAL.DIGEST x", "keyval.digest"),
        ] {
            assert_eq!(
                error(line),
                format!("ERR wrong number of arguments for '{name}' command"),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_command_text_is_redis_s() {
        assert_eq!(
            error("foo a b"),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            error("FOO"),
            "ERR unknown command 'FOO', with args beginning with: "
        );
        assert_eq!(
            error_of(&[b""]),
            "ERR unknown command '', with args beginning with: "
        );
        assert_eq!(
            error_of(&[]),
            "ERR unknown command '', with args beginning with: "
        );
        // C strings: an argument ends at its first NUL.
        assert_eq!(
            error_of(&[b"foo", b"a\0b", b"c"]),
            "ERR unknown command 'foo', with args beginning with: 'a' 'c' "
        );
        assert_eq!(
            error_of(&[b"f\0oo", b"x"]),
            "ERR unknown command 'f', with args beginning with: 'x' "
        );
        assert_eq!(
            error_of(&[b"foo", b"a\r\nb"]),
            "ERR unknown command 'foo', with args beginning with: 'a  b' "
        );
        // A 128-byte budget for the whole list, as Redis 7.0.15 answers.
        let long = "a".repeat(140);
        assert_eq!(
            error(&format!("foo {long} b c")),
            format!(
                "ERR unknown command 'foo', with args beginning with: '{}' ",
                "a".repeat(128)
            )
        );
        let args = format!("foo {} b {} c", "x".repeat(100), "y".repeat(40));
        assert_eq!(
            error(&args),
            format!(
                "ERR unknown command 'foo', with args beginning with: '{}' 'b' '{}' ",
                "x".repeat(100),
                "y".repeat(128 - 103 - 4)
            )
        );
        let name = "n".repeat(200);
        assert_eq!(
            error(&name),
            format!(
                "ERR unknown command '{}', with args beginning with: ",
                "n".repeat(128)
            )
        );
        // Not UTF-8: shown as U+FFFD.
        assert_eq!(
            error_of(&[b"\xff"]),
            "ERR unknown command '\u{fffd}', with args beginning with: "
        );
    }

    #[test]
    fn unknown_subcommands() {
        assert_eq!(
            error("client foo"),
            "ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
        assert_eq!(
            error("CONFIG foo"),
            "ERR unknown subcommand 'foo'. Try CONFIG HELP."
        );
        assert_eq!(
            error("config RESETSTAT"),
            "ERR unknown subcommand 'RESETSTAT'. Try CONFIG HELP."
        );
        assert_eq!(
            error("command GETKEYS x"),
            "ERR unknown subcommand 'GETKEYS'. Try COMMAND HELP."
        );
        assert_eq!(
            error("Client list"),
            "ERR unknown subcommand 'list'. Try CLIENT HELP."
        );
        let long = "s".repeat(200);
        assert_eq!(
            error(&format!("client {long}")),
            format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                "s".repeat(128)
            )
        );
    }

    #[test]
    fn hello() {
        let hello = |proto, auth, setname| {
            Command::Hello(Hello {
                proto,
                auth,
                setname,
            })
        };
        assert_eq!(ok("HELLO"), hello(None, None, None));
        assert_eq!(ok("HELLO 2"), hello(Some(Proto::Resp2), None, None));
        assert_eq!(ok("hello 3"), hello(Some(Proto::Resp3), None, None));
        assert_eq!(
            ok("HELLO 3 SETNAME app AUTH default secret"),
            hello(
                Some(Proto::Resp3),
                Some((b"default", Redacted(b"secret"))),
                Some(b"app")
            )
        );
        assert_eq!(
            ok("HELLO 2 auth u p setname a setname b"),
            hello(Some(Proto::Resp2), Some((b"u", Redacted(b"p"))), Some(b"b"))
        );
        for line in ["HELLO 1", "HELLO 4", "HELLO -1", "HELLO 0 AUTH"] {
            assert_eq!(
                error(line),
                "NOPROTO unsupported protocol version",
                "{line}"
            );
        }
        for line in [
            "HELLO abc",
            "HELLO 03",
            "HELLO 99999999999999999999",
            "HELLO +3",
        ] {
            assert_eq!(
                error(line),
                "ERR Protocol version is not an integer or out of range",
                "{line}"
            );
        }
        assert_eq!(
            error("HELLO 3 foo"),
            "ERR Syntax error in HELLO option 'foo'"
        );
        assert_eq!(
            error("HELLO 3 auth a"),
            "ERR Syntax error in HELLO option 'auth'"
        );
        assert_eq!(
            error("HELLO 3 setname"),
            "ERR Syntax error in HELLO option 'setname'"
        );
        assert_eq!(
            error_of(&[b"HELLO", b"3", b"SETNAME", b"a b"]),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        // Options are read in order: the first bad one is the one reported.
        assert_eq!(
            error_of(&[b"HELLO", b"3", b"x", b"SETNAME", b"a b"]),
            "ERR Syntax error in HELLO option 'x'"
        );
        let shown = format!("{:?}", ok("HELLO 3 AUTH u hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn auth() {
        assert_eq!(
            ok("AUTH secret"),
            Command::Auth {
                user: None,
                password: Redacted(b"secret")
            }
        );
        assert_eq!(
            ok("AUTH default secret"),
            Command::Auth {
                user: Some(b"default"),
                password: Redacted(b"secret")
            }
        );
        // More than two arguments is Redis's syntax error, not arity.
        assert_eq!(error("AUTH a b c"), "ERR syntax error");
        let shown = format!("{:?}", ok("AUTH hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn select() {
        assert_eq!(error("SELECT 1"), "ERR DB index is out of range");
        assert_eq!(error("SELECT -1"), "ERR DB index is out of range");
        assert_eq!(
            error("SELECT abc"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error("SELECT 01"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error("SELECT 99999999999"),
            "ERR value is out of range, value must between -2147483648 and 2147483647"
        );
        assert_eq!(error("SELECT 2147483647"), "ERR DB index is out of range");
    }

    #[test]
    fn wait() {
        assert_eq!(
            error("WAIT x 0"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error("WAIT 0 -1"), "ERR timeout is negative");
        assert_eq!(
            error("WAIT 0 abc"),
            "ERR timeout is not an integer or out of range"
        );
        assert_eq!(
            error("WAIT 1 99999999999999999999"),
            "ERR timeout is not an integer or out of range"
        );
        assert_eq!(
            error("WAIT x -1"),
            "ERR value is not an integer or out of range"
        );
    }

    #[test]
    fn scan() {
        let scan = |cursor, pattern, count| {
            Command::Scan(Scan {
                cursor,
                pattern,
                count,
            })
        };
        assert_eq!(ok("SCAN 0"), scan(0, None, 10));
        assert_eq!(
            ok("SCAN 17 MATCH user:* COUNT 100"),
            scan(17, Some(&b"user:*"[..]), 100)
        );
        assert_eq!(
            ok("scan 5 count 1 match a match b count 2"),
            scan(5, Some(&b"b"[..]), 2)
        );
        // Cursors as `strtoul` reads them.
        assert_eq!(ok("SCAN 18446744073709551615"), scan(u64::MAX, None, 10));
        assert_eq!(ok("SCAN +5"), scan(5, None, 10));
        assert_eq!(ok("SCAN 007"), scan(7, None, 10));
        assert_eq!(ok("SCAN -1"), scan(u64::MAX, None, 10));
        assert_eq!(parse_command(&[b"SCAN", b""]), Ok(scan(0, None, 10)));
        assert_eq!(parse_command(&[b"SCAN", b"5\0x"]), Ok(scan(5, None, 10)));
        for cursor in [
            &b"abc"[..],
            b" 5",
            b"5 ",
            b"5x",
            b"+",
            b"-",
            b"18446744073709551616",
        ] {
            assert_eq!(
                error_of(&[b"SCAN", cursor]),
                "ERR invalid cursor",
                "{cursor:?}"
            );
        }
        for line in [
            "SCAN 0 COUNT 0",
            "SCAN 0 COUNT -5",
            "SCAN 0 foo",
            "SCAN 0 COUNT",
            "SCAN 0 MATCH",
            "SCAN 0 MATCH a COUNT",
            "SCAN 0 TYPE string",
        ] {
            assert_eq!(error(line), "ERR syntax error", "{line}");
        }
        assert_eq!(
            error("SCAN 0 COUNT x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error("SCAN 0 COUNT 99999999999999999999"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error("SCAN x COUNT 0"), "ERR invalid cursor");
        // Options are C strings to Redis.
        assert_eq!(
            parse_command(&[b"SCAN", b"0", b"count\0x", b"5"]),
            Ok(scan(0, None, 5))
        );
    }

    #[test]
    fn client() {
        for name in [&b"a b"[..], b"a\nb", b"\xc3\xa9", b"a\0"] {
            assert_eq!(
                error_of(&[b"CLIENT", b"SETNAME", name]),
                "ERR Client names cannot contain spaces, newlines or special characters.",
                "{name:?}"
            );
        }
        assert_eq!(
            error("CLIENT SETINFO foo x"),
            "ERR Unrecognized option 'foo'"
        );
        assert_eq!(
            error_of(&[b"CLIENT", b"SETINFO", b"Lib-Name", b"a b"]),
            "ERR Lib-Name cannot contain spaces, newlines or special characters."
        );
    }

    #[test]
    fn config_set_is_refused() {
        assert_eq!(
            error("CONFIG SET maxmemory 1"),
            "ERR CONFIG SET is not supported: keyval is configured by its flags"
        );
    }

    #[test]
    fn every_error_text_byte_for_byte() {
        let cases = [
            (
                CommandError::Unknown {
                    name: "foo".into(),
                    args: "'a' ".into(),
                },
                "ERR unknown command 'foo', with args beginning with: 'a' ",
            ),
            (
                CommandError::UnknownSubcommand {
                    command: "CLIENT".into(),
                    sub: "x".into(),
                },
                "ERR unknown subcommand 'x'. Try CLIENT HELP.",
            ),
            (
                CommandError::Arity("client|setname".into()),
                "ERR wrong number of arguments for 'client|setname' command",
            ),
            (CommandError::Syntax, "ERR syntax error"),
            (
                CommandError::NotInteger,
                "ERR value is not an integer or out of range",
            ),
            (
                CommandError::OutOfRange { min: -2, max: 7 },
                "ERR value is out of range, value must between -2 and 7",
            ),
            (
                CommandError::TimeoutNotInteger,
                "ERR timeout is not an integer or out of range",
            ),
            (CommandError::NegativeTimeout, "ERR timeout is negative"),
            (CommandError::InvalidCursor, "ERR invalid cursor"),
            (CommandError::InvalidKey, "ERR invalid key"),
            (CommandError::Expiry, "ERR expiry is not supported"),
            (CommandError::DbIndex, "ERR DB index is out of range"),
            (
                CommandError::NoProto,
                "NOPROTO unsupported protocol version",
            ),
            (
                CommandError::ProtoNotInteger,
                "ERR Protocol version is not an integer or out of range",
            ),
            (
                CommandError::HelloOption("x".into()),
                "ERR Syntax error in HELLO option 'x'",
            ),
            (
                CommandError::ClientName,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ),
            (
                CommandError::UnrecognizedOption("x".into()),
                "ERR Unrecognized option 'x'",
            ),
            (
                CommandError::ClientAttr("lib-ver".into()),
                "ERR lib-ver cannot contain spaces, newlines or special characters.",
            ),
            (
                CommandError::ConfigSet,
                "ERR CONFIG SET is not supported: keyval is configured by its flags",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn kinds() {
        use crate::access::Kind;
        assert!(ok("SET a b").is_write());
        assert!(ok("MSET a b").is_write());
        assert!(ok("DEL a").is_write());
        assert!(!ok("GET a").is_write());
        for line in [
            "GET a",
            "MGET a",
            "EXISTS a",
            "KEYS *",
            "SCAN 0",
            "DBSIZE",
            "KEYVAL.DIGEST",
        ] {
            assert!(ok(line).reads_data(), "{line}");
        }
        assert!(!ok("PING").reads_data());
        assert_eq!(ok("AUTH x").access_kind(), Kind::Auth);
        assert_eq!(ok("HELLO 3").access_kind(), Kind::Auth);
        assert_eq!(ok("QUIT").access_kind(), Kind::Open);
        assert_eq!(ok("PING").access_kind(), Kind::Gated);
    }
}
