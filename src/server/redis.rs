//! The Redis face's commands (`docs/redis.md`): what each does to the
//! node, and its reply in RESP2 or RESP3.
//!
//! Parsing is [`crate::resp`]'s; what a write or a read waits for is the
//! line protocol's ([`super::node`]): a `SET` is answered once durable
//! (and on N followers with `--sync-followers N`), a `GET` once what it
//! shows is. Only the spelling of replies differs.
//!
//! ```text
//! SET k v        -> Node::write       -> held until durable -> +OK
//! MSET k v k v   -> Node::write_batch -> one log record     -> +OK
//! GET k          -> read barrier      -> $1\r\nv\r\n (or nil)
//! WAIT 1 100     -> held until 1 follower acked this connection's last write
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, Instant};

use log::debug;

use super::conn::{Conn, Peer};
use super::held::WriteReply;
use super::node::Node;
use crate::access::{self, AuthOutcome, Verdict};
use crate::config::Role;
use crate::query::Query;
use crate::reads::ReadMode;
use crate::resp::command::{
    self, Client, Command, CommandError, CommandInfo, Condition, Hello, Scan, Set,
};
use crate::resp::encode::{self, Proto, OK};
use crate::resp::glob;
use crate::resp::Resume;
use crate::wal::record::Op;
use crate::wal::FsyncPolicy;

/// The Redis version keyval answers as (`INFO redis_version`, `HELLO`):
/// the one whose commands and replies it follows. Clients that pick
/// features by version see one they know.
pub const REDIS_VERSION: &str = "7.0.0";

const NOAUTH: &str = "NOAUTH Authentication required.";
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already authenticated, \
otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
select the RESP protocol version at the same time";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the \
default user. Are you sure your configuration is correct?";
const READONLY: &str = "READONLY You can't write against a read only replica.";
const WAIT_ON_REPLICA: &str = "ERR WAIT cannot be used with replica instances";

/// The state of a Redis client's connection.
#[derive(Debug, Default)]
pub struct RedisClient {
    /// RESP2 until `HELLO 3`.
    pub proto: Proto,
    /// `CLIENT SETNAME`.
    pub name: Option<Box<[u8]>>,
    /// `CLIENT ID`: unique among this process's connections.
    pub id: u64,
    /// The seq of this connection's last write: what `WAIT` counts
    /// followers for.
    pub last_write: u64,
    /// The argument ranges of the command being read, kept while it is
    /// incomplete (with `resume`, so it is not read again from its start).
    pub args: Vec<Range<usize>>,
    /// Where parsing of an incomplete command stopped.
    pub resume: Resume,
    /// Its first command came whole and it was let in: until then it is
    /// still in its handshake (`--handshake-timeout-ms`).
    pub welcomed: bool,
}

impl Node {
    /// A Redis client's first command is whole: it is welcomed as a
    /// client, unless protected mode turns it away (`-DENIED`, then
    /// close).
    pub fn redis_welcome(&mut self, conn: &mut Conn) {
        let password_set = self.config.password.is_some();
        if access::protected_refuses(self.config.protected_mode, password_set, conn.peer.ip()) {
            debug!("{}: Redis client refused: protected mode", conn.peer);
            let line = crate::protocol::DENIED_LINE;
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            conn.reply_with(|out| encode::error(out, &text));
            conn.closing = true;
            return;
        }
        self.next_client_id += 1;
        if let Peer::Redis(client) = &mut conn.kind {
            client.id = self.next_client_id;
            client.welcomed = true;
        }
        conn.read_mode = ReadMode::at_hello(self.is_writable_leader());
    }

    /// Runs one command (`args[0]` is its name) from the Redis client on
    /// connection `key`.
    pub fn redis_command(&mut self, conn: &mut Conn, key: usize, args: &[&[u8]]) {
        let password_set = self.config.password.is_some();
        let command = match command::parse_command(args) {
            Ok(command) => command,
            // Like Redis: an unknown command or a wrong count is said
            // first; past that, a client behind the gate learns nothing
            // about its arguments.
            Err(e)
                if password_set
                    && !conn.authenticated
                    && !matches!(e, CommandError::Unknown { .. } | CommandError::Arity(_))
                    && !opens_gate(args) =>
            {
                return reply_error(conn, NOAUTH)
            }
            Err(e) => return reply_error(conn, &e.to_string()),
        };
        let kind = match &command {
            // HELLO opens the gate only when it carries AUTH.
            Command::Hello(Hello { auth: None, .. }) => access::Kind::Gated,
            command => command.access_kind(),
        };
        if access::gate(password_set, conn.authenticated, kind) == Verdict::NoAuth {
            let text = match command {
                Command::Hello(_) => NOAUTH_HELLO,
                _ => NOAUTH,
            };
            return reply_error(conn, text);
        }
        if command.is_write() && !self.is_writable_leader() {
            return reply_error(conn, READONLY);
        }
        if command.reads_data() && !conn.read_mode.serves(self.is_writable_leader()) {
            let text = match self.known_leader() {
                Some((host, port)) => format!("NOT_LEADER {host}:{port}"),
                None => "NOT_LEADER".to_string(),
            };
            return reply_error(conn, &text);
        }
        let proto = match &conn.kind {
            Peer::Redis(client) => client.proto,
            _ => Proto::Resp2,
        };
        match command {
            Command::Ping(None) => conn.reply_with(|out| encode::simple(out, b"PONG")),
            Command::Ping(Some(message)) | Command::Echo(message) => {
                conn.reply_with(|out| encode::bulk(out, message))
            }
            Command::Quit => {
                conn.reply_with(|out| out.extend_from_slice(OK));
                conn.closing = true;
            }
            Command::Hello(hello) => self.hello(conn, hello),
            Command::Auth { user, password } => {
                if let Err(text) = self.authenticate(conn, user, password.0) {
                    return reply_error(conn, text);
                }
                conn.reply_with(|out| out.extend_from_slice(OK));
            }
            Command::Select => conn.reply_with(|out| out.extend_from_slice(OK)),
            Command::Client(client) => client_command(conn, proto, client),
            Command::CommandInfo(info) => conn.reply_with(|out| match info {
                CommandInfo::Count => encode::integer(out, 0),
                CommandInfo::Docs => encode::map(out, proto, 0),
                CommandInfo::List => encode::array(out, 0),
            }),
            Command::ConfigGet(patterns) => {
                let pairs = self.config_get(patterns);
                conn.reply_with(|out| {
                    encode::map(out, proto, pairs.len());
                    for (name, value) in &pairs {
                        encode::bulk(out, name.as_bytes());
                        encode::bulk(out, value.as_bytes());
                    }
                });
            }
            Command::Set(set) => self.set(conn, proto, set),
            Command::Get(key) => {
                let seen = self.read_barrier(Some(key));
                let value = self.store.get(key);
                conn.reply_seen(seen, |out| encode::bulk_or_null(out, proto, value));
            }
            Command::MGet(keys) => {
                let seen = self.read_barrier_of(keys);
                let store = &self.store;
                conn.reply_seen(seen, |out| {
                    encode::array(out, keys.len());
                    for key in keys {
                        encode::bulk_or_null(out, proto, store.get(key));
                    }
                });
            }
            Command::Exists(keys) => {
                let seen = self.read_barrier_of(keys);
                let n = keys.iter().filter(|k| self.store.get(k).is_some()).count();
                conn.reply_seen(seen, |out| encode::integer(out, n as i64));
            }
            Command::Del(keys) => self.del(conn, keys),
            Command::MSet(pairs) => {
                let entries: Vec<_> = pairs
                    .chunks_exact(2)
                    .map(|pair| (Op::Put, pair[0], pair[1]))
                    .collect();
                self.write_batch(conn, &entries, WriteReply::Fixed(OK));
            }
            Command::Keys(pattern) => self.query(
                conn,
                key,
                Query::RedisKeys {
                    pattern: pattern.into(),
                },
            ),
            Command::Scan(scan) => self.scan(conn, scan),
            Command::DbSize => {
                let seen = self.read_barrier_all();
                let n = self.store.len();
                conn.reply_seen(seen, |out| encode::integer(out, n as i64));
            }
            Command::Wait {
                replicas,
                timeout_ms,
            } => self.wait(conn, replicas, timeout_ms),
            Command::Role => {
                let reply = self.role_reply();
                conn.reply_seen(self.durable_barrier(), |out| out.extend_from_slice(&reply));
            }
            Command::Info(sections) => {
                let text = self.redis_info(sections);
                conn.reply_seen(self.durable_barrier(), |out| {
                    encode::verbatim(out, proto, text.as_bytes())
                });
            }
            Command::Digest => self.query(conn, key, Query::RedisDigest),
        }
    }

    /// `HELLO [proto [AUTH user pass] [SETNAME name]]`.
    fn hello(&mut self, conn: &mut Conn, hello: Hello<'_>) {
        if let Some((user, password)) = hello.auth {
            if let Err(text) = self.authenticate(conn, Some(user), password.0) {
                return reply_error(conn, text);
            }
        }
        let role = match self.role.role {
            Role::Leader => "master",
            Role::Follower => "replica",
        };
        let Peer::Redis(client) = &mut conn.kind else {
            return;
        };
        if let Some(proto) = hello.proto {
            client.proto = proto;
        }
        if let Some(name) = hello.setname {
            client.name = Some(name.into());
        }
        let (proto, id) = (client.proto, client.id);
        conn.reply_with(|out| {
            encode::map(out, proto, 7);
            for (field, value) in [("server", "keyval"), ("version", REDIS_VERSION)] {
                encode::bulk(out, field.as_bytes());
                encode::bulk(out, value.as_bytes());
            }
            encode::bulk(out, b"proto");
            encode::integer(out, proto.number());
            encode::bulk(out, b"id");
            encode::integer(out, id as i64);
            for (field, value) in [("mode", "standalone"), ("role", role)] {
                encode::bulk(out, field.as_bytes());
                encode::bulk(out, value.as_bytes());
            }
            encode::bulk(out, b"modules");
            encode::array(out, 0);
        });
    }

    /// `AUTH [user] password` (also `HELLO ... AUTH`): the only user is
    /// `default`. The candidate is never logged.
    fn authenticate(
        &mut self,
        conn: &mut Conn,
        user: Option<&[u8]>,
        candidate: &[u8],
    ) -> Result<(), &'static str> {
        if user.is_some_and(|u| u != b"default") {
            return Err(WRONGPASS);
        }
        match access::authenticate(self.config.password.as_ref(), candidate) {
            AuthOutcome::Accepted => {
                conn.authenticated = true;
                Ok(())
            }
            AuthOutcome::WrongPass => {
                debug!("{}: wrong password", conn.peer);
                Err(WRONGPASS)
            }
            // Redis's default user without a password takes any password
            // given with its name, and refuses `AUTH <password>` alone.
            AuthOutcome::NoPasswordSet if user.is_some() => Ok(()),
            AuthOutcome::NoPasswordSet => Err(NO_PASSWORD),
        }
    }

    /// `CONFIG GET`: the few parameters clients and tools ask for, as
    /// this node has them.
    fn config_get(&self, patterns: &[&[u8]]) -> Vec<(&'static str, String)> {
        let fsync = match self.config.fsync {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        };
        let params = [
            ("save", String::new()),
            ("appendonly", "yes".to_string()),
            ("appendfsync", fsync.to_string()),
            ("databases", "1".to_string()),
            ("maxclients", self.config.max_clients.to_string()),
            ("maxmemory", "0".to_string()),
            ("port", self.listen_port.to_string()),
            (
                "proto-max-bulk-len",
                self.config.max_value_bytes.to_string(),
            ),
        ];
        params
            .into_iter()
            .filter(|(name, _)| {
                patterns
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
            })
            .collect()
    }

    /// `SET key value [NX|XX] [GET]`.
    fn set(&mut self, conn: &mut Conn, proto: Proto, set: Set<'_>) {
        if set.condition.is_none() && !set.get {
            return self.write(conn, Op::Put, set.key, set.value, WriteReply::Fixed(OK));
        }
        let old = self.store.get(set.key);
        let blocked = match set.condition {
            Some(Condition::Nx) => old.is_some(),
            Some(Condition::Xx) => old.is_none(),
            None => false,
        };
        // With GET the reply is the old value, copied before the write.
        let old = set.get.then(|| old.map(<[u8]>::to_vec));
        if blocked {
            let seen = self.read_barrier(Some(set.key));
            conn.reply_seen(seen, |out| {
                encode::bulk_or_null(out, proto, old.flatten().as_deref())
            });
            return;
        }
        let ok = match old {
            Some(old) => {
                let mut out = Vec::new();
                encode::bulk_or_null(&mut out, proto, old.as_deref());
                WriteReply::Encoded(out)
            }
            None => WriteReply::Fixed(OK),
        };
        self.write(conn, Op::Put, set.key, set.value, ok);
    }

    /// `DEL key...`: one write for every key present, answered with their
    /// number.
    fn del(&mut self, conn: &mut Conn, keys: &[&[u8]]) {
        let mut present: Vec<&[u8]> = keys
            .iter()
            .copied()
            .filter(|k| self.store.get(k).is_some())
            .collect();
        present.sort_unstable();
        present.dedup();
        let n = present.len() as i64;
        if n == 0 {
            let seen = self.read_barrier_of(keys);
            conn.reply_seen(seen, |out| encode::integer(out, 0));
            return;
        }
        let entries: Vec<_> = present.iter().map(|&k| (Op::Delete, k, &b""[..])).collect();
        let mut ok = Vec::new();
        encode::integer(&mut ok, n);
        self.write_batch(conn, &entries, WriteReply::Encoded(ok));
    }

    /// Logs several writes as one, all or nothing; one write as itself.
    fn write_batch(&mut self, conn: &mut Conn, entries: &[(Op, &[u8], &[u8])], ok: WriteReply) {
        if let [(op, key, value)] = entries {
            return self.write(conn, *op, key, value, ok);
        }
        match self.wal.append_batch(&mut self.store, entries) {
            Ok(seq) => {
                self.note_unreleased(entries.iter().map(|(_, key, _)| *key), seq);
                self.hold_write(conn, seq, ok);
            }
            Err(e) => self.write_failed(conn, &e),
        }
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n]` ([`crate::store::Store::scan`]).
    fn scan(&mut self, conn: &mut Conn, scan: Scan<'_>) {
        let seen = self.read_barrier_all();
        self.last_scan = Some(Instant::now());
        self.store.build_scan_index();
        let (next, keys) = self.store.scan(scan.cursor, scan.count);
        let keys: Vec<&[u8]> = keys
            .into_iter()
            .filter(|k| scan.pattern.is_none_or(|p| glob::matches(p, k)))
            .collect();
        conn.reply_seen(seen, |out| {
            encode::array(out, 2);
            encode::bulk(out, next.to_string().as_bytes());
            encode::array(out, keys.len());
            for key in keys {
                encode::bulk(out, key);
            }
        });
    }

    /// `WAIT numreplicas timeout`: held until that many followers
    /// acknowledged this connection's last write, or the timeout.
    fn wait(&mut self, conn: &mut Conn, replicas: u64, timeout_ms: u64) {
        if self.role.role != Role::Leader {
            return reply_error(conn, WAIT_ON_REPLICA);
        }
        let seq = match &conn.kind {
            Peer::Redis(client) => client.last_write,
            _ => 0,
        };
        let need = usize::try_from(replicas).unwrap_or(usize::MAX);
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
        conn.hold_replicas(seq, need, deadline);
    }

    /// `ROLE`, encoded (the same in RESP2 and RESP3).
    fn role_reply(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let seq = self.wal.last_seq() as i64;
        match self.role.role {
            Role::Leader => {
                let followers: Vec<_> = self.repl.leader.connected().collect();
                encode::array(&mut out, 3);
                encode::bulk(&mut out, b"master");
                encode::integer(&mut out, seq);
                encode::array(&mut out, followers.len());
                for (_, f) in followers {
                    encode::array(&mut out, 3);
                    encode::bulk(&mut out, f.addr.ip().to_string().as_bytes());
                    encode::bulk(&mut out, f.listen_port().to_string().as_bytes());
                    encode::bulk(&mut out, f.acked.to_string().as_bytes());
                }
            }
            Role::Follower => {
                let (host, port) = self
                    .role
                    .leader
                    .as_ref()
                    .map_or(("", 0), |l| (l.host.as_str(), l.port));
                let state = if self.repl.link.is_up() {
                    "connected"
                } else {
                    "connect"
                };
                encode::array(&mut out, 5);
                encode::bulk(&mut out, b"slave");
                encode::bulk(&mut out, host.as_bytes());
                encode::integer(&mut out, i64::from(port));
                encode::bulk(&mut out, state.as_bytes());
                encode::integer(&mut out, seq);
            }
        }
        out
    }

    /// `INFO [section...]` as Redis writes it: `# Section` headers, then
    /// `field:value` lines, `\r\n` after each, a blank line between
    /// sections. No section (or `default`, `all`, `everything`) means all.
    fn redis_info(&self, sections: &[&[u8]]) -> String {
        let wanted = |name: &str| {
            sections.is_empty()
                || sections.iter().any(|s| {
                    s.eq_ignore_ascii_case(name.as_bytes())
                        || [&b"all"[..], b"everything", b"default"]
                            .iter()
                            .any(|all| s.eq_ignore_ascii_case(all))
                })
        };
        let mut text = String::new();
        let mut section = |title: &str, fields: Vec<(Cow<'static, str>, String)>| {
            if !wanted(&title.to_ascii_lowercase()) {
                return;
            }
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let _ = write!(text, "# {title}\r\n");
            for (field, value) in fields {
                let _ = write!(text, "{field}:{value}\r\n");
            }
        };
        let uptime = self.started.elapsed().as_secs();
        section(
            "Server",
            named(vec![
                ("redis_version", REDIS_VERSION.to_string()),
                ("keyval_version", env!("CARGO_PKG_VERSION").to_string()),
                ("redis_mode", "standalone".to_string()),
                ("os", std::env::consts::OS.to_string()),
                ("arch_bits", (usize::BITS).to_string()),
                ("process_id", std::process::id().to_string()),
                ("run_id", self.run_id().to_string()),
                ("tcp_port", self.listen_port.to_string()),
                ("uptime_in_seconds", uptime.to_string()),
                ("uptime_in_days", (uptime / 86_400).to_string()),
            ]),
        );
        section(
            "Clients",
            named(vec![
                ("connected_clients", self.clients.to_string()),
                ("maxclients", self.config.max_clients.to_string()),
                ("blocked_clients", "0".to_string()),
            ]),
        );
        let status = if self.wal.has_failed() { "err" } else { "ok" };
        section(
            "Persistence",
            named(vec![
                ("loading", "0".to_string()),
                ("aof_enabled", "1".to_string()),
                (
                    "aof_rewrite_in_progress",
                    u8::from(self.is_compacting()).to_string(),
                ),
                ("aof_last_write_status", status.to_string()),
                ("aof_current_size", self.wal.len_bytes().to_string()),
            ]),
        );
        section("Replication", self.replication_fields());
        section(
            "Keyspace",
            named(vec![(
                "db0",
                format!("keys={},expires=0,avg_ttl=0", self.store.len()),
            )]),
        );
        text
    }

    /// `INFO replication`.
    fn replication_fields(&self) -> Vec<(Cow<'static, str>, String)> {
        let seq = self.wal.last_seq();
        match self.role.role {
            Role::Leader => {
                let followers: Vec<_> = self.repl.leader.connected().collect();
                let mut fields = named(vec![
                    ("role", "master".to_string()),
                    ("connected_slaves", followers.len().to_string()),
                ]);
                for (i, (_, f)) in followers.iter().enumerate() {
                    let value = format!(
                        "ip={},port={},state=online,offset={},lag={}",
                        f.addr.ip(),
                        f.listen_port(),
                        f.acked,
                        seq.saturating_sub(f.acked)
                    );
                    fields.push((format!("slave{i}").into(), value));
                }
                fields.push(("master_repl_offset".into(), seq.to_string()));
                fields
            }
            Role::Follower => {
                let (host, port) = self
                    .role
                    .leader
                    .as_ref()
                    .map_or((String::new(), 0), |l| (l.host.clone(), l.port));
                let link = if self.repl.link.is_up() { "up" } else { "down" };
                named(vec![
                    ("role", "slave".to_string()),
                    ("master_host", host),
                    ("master_port", port.to_string()),
                    ("master_link_status", link.to_string()),
                    ("slave_repl_offset", seq.to_string()),
                    ("master_repl_offset", seq.to_string()),
                    ("connected_slaves", "0".to_string()),
                ])
            }
        }
    }
}

/// `INFO` fields with fixed names.
fn named(fields: Vec<(&'static str, String)>) -> Vec<(Cow<'static, str>, String)> {
    fields
        .into_iter()
        .map(|(name, value)| (Cow::Borrowed(name), value))
        .collect()
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID`.
fn client_command(conn: &mut Conn, proto: Proto, command: Client<'_>) {
    let Peer::Redis(client) = &mut conn.kind else {
        return;
    };
    match command {
        Client::SetName(name) => {
            client.name = (!name.is_empty()).then(|| name.into());
            conn.reply_with(|out| out.extend_from_slice(OK));
        }
        Client::GetName => {
            let name = client.name.clone();
            conn.reply_with(|out| encode::bulk_or_null(out, proto, name.as_deref()));
        }
        Client::SetInfo => conn.reply_with(|out| out.extend_from_slice(OK)),
        Client::Id => {
            let id = client.id as i64;
            conn.reply_with(|out| encode::integer(out, id));
        }
    }
}

/// Whether the command named by `args[0]` may run before `AUTH`.
fn opens_gate(args: &[&[u8]]) -> bool {
    args.first().is_some_and(|name| {
        [&b"auth"[..], b"hello", b"quit"]
            .iter()
            .any(|open| name.eq_ignore_ascii_case(open))
    })
}

/// An error reply; the connection stays open.
fn reply_error(conn: &mut Conn, text: &str) {
    conn.reply_with(|out| encode::error(out, text));
}
