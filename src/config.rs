//! Node configuration: the command line and `KEYVAL_*` environment
//! (`docs/protocol.md`), checked into a [`Config`].
//!
//! Every flag has an environment twin (`--max-clients` is
//! `KEYVAL_MAX_CLIENTS`), so a systemd `EnvironmentFile` can carry a whole
//! configuration. Problems are a [`ConfigError`], whose text is one line;
//! `main` prints it and exits 2.
//!
//! The shared secret and the client password are never printed: `Config`'s
//! `Debug` shows them redacted.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};

use crate::access::Password;
use crate::wal::FsyncPolicy;

/// The role a node starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Leader,
    Follower,
}

/// `--fsync` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    Always,
    Everysec,
    No,
}

/// `yes` or `no` (`--protected-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    Yes,
    No,
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What `keyval --help` adds after the flags: the state file that wins
/// over the role flags (see `server::role`).
const AFTER_HELP: &str = "\
Role changes survive restarts: a promotion, FOLLOW or FENCE (keyval-ctl promote,
follow, fence), or news of a higher epoch, writes node_<id>.state in the data
directory. At start that file wins over --role, --leader_host and --leader_port,
with a warning naming it, so a restart with the old flags never brings back a
stale leader. Change the role with keyval-ctl; to return to the flags, stop the
node and remove the file.

Every flag can also be set by its environment variable, shown with it. The
shared secret comes from KEYVAL_SECRET or --secret-file, the client password
from KEYVAL_PASSWORD or --password-file.";

/// The command line, as clap parses it.
#[derive(Debug, Parser)]
#[command(
    name = "keyval",
    version,
    about = "A replicated key-value server",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Node role, unless the data directory's node_<id>.state (written by
    /// promotions, FOLLOW and FENCE) says otherwise: that file wins.
    #[arg(long, env = "KEYVAL_ROLE", value_enum)]
    pub role: Role,
    /// Node id: 1 for a leader, an integer >= 2 for a follower.
    #[arg(long, env = "KEYVAL_ID")]
    pub id: Option<u32>,
    /// TCP port for clients and followers (0 picks a free one).
    #[arg(long, env = "KEYVAL_PORT", default_value_t = 5000)]
    pub port: u16,
    /// Address to listen on for clients and followers.
    #[arg(long, env = "KEYVAL_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Where a follower finds its leader (host name or IP address); the
    /// leader in node_<id>.state wins over it.
    #[arg(
        long = "leader_host",
        alias = "leader-host",
        env = "KEYVAL_LEADER_HOST"
    )]
    pub leader_host: Option<String>,
    /// The leader's client port; the leader in node_<id>.state wins over
    /// it.
    #[arg(
        long = "leader_port",
        alias = "leader-port",
        env = "KEYVAL_LEADER_PORT"
    )]
    pub leader_port: Option<u16>,
    /// Directory of the log and of node_<id>.state.
    #[arg(long, env = "KEYVAL_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// When the log is fsynced: before every write's reply (always), once a
    /// second (everysec), or when the kernel likes (no).
    #[arg(long, env = "KEYVAL_FSYNC", value_enum, default_value = "always")]
    pub fsync: FsyncArg,
    /// Answer a write only once this many followers have it durably
    /// [default: what the leader announced, else 0].
    #[arg(long, env = "KEYVAL_SYNC_FOLLOWERS")]
    pub sync_followers: Option<usize>,
    /// How long a write waits for follower acks, 0 = forever [default: what
    /// the leader announced, else 5000].
    #[arg(long, env = "KEYVAL_SYNC_TIMEOUT_MS")]
    pub sync_timeout_ms: Option<u64>,
    /// Most followers connected at once; more are refused.
    #[arg(long, env = "KEYVAL_MAX_FOLLOWERS", default_value_t = 10)]
    pub max_followers: usize,
    /// Most client connections at once; more are refused.
    #[arg(long, env = "KEYVAL_MAX_CLIENTS", default_value_t = 10000)]
    pub max_clients: usize,
    /// How long a new connection may take to finish its handshake.
    #[arg(long, env = "KEYVAL_HANDSHAKE_TIMEOUT_MS", default_value_t = 10000)]
    pub handshake_timeout_ms: u64,
    /// Longest request line, in bytes.
    #[arg(long, env = "KEYVAL_MAX_LINE_BYTES", default_value_t = 1_048_576)]
    pub max_line_bytes: usize,
    /// Longest value on the Redis face, in bytes; a Redis request is at
    /// most this plus --max-line-bytes long.
    #[arg(long, env = "KEYVAL_MAX_VALUE_BYTES", default_value_t = 16_777_216)]
    pub max_value_bytes: usize,
    /// Unread replies one client may hold, queued query replies included.
    #[arg(long, env = "KEYVAL_MAX_OUTPUT_BYTES", default_value_t = 67_108_864)]
    pub max_output_bytes: usize,
    /// Unread replies all clients together may hold before the biggest
    /// holders stop being served.
    #[arg(
        long,
        env = "KEYVAL_MAX_OUTPUT_TOTAL_BYTES",
        default_value_t = 268_435_456
    )]
    pub max_output_total_bytes: usize,
    /// Compact the log once it is at least this many bytes and
    /// --compact-ratio times the live data.
    #[arg(long, env = "KEYVAL_COMPACT_MIN_BYTES", default_value_t = 67_108_864)]
    pub compact_min_bytes: u64,
    /// Compact the log once it is at least this many times the size of the
    /// live data and --compact-min-bytes long.
    #[arg(long, env = "KEYVAL_COMPACT_RATIO", default_value_t = 2.0)]
    pub compact_ratio: f64,
    /// Read the shared secret from this file instead of `KEYVAL_SECRET`.
    #[arg(long, env = "KEYVAL_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Read the client password from this file instead of `KEYVAL_PASSWORD`.
    #[arg(long, env = "KEYVAL_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// With no password, refuse clients that are not on loopback.
    #[arg(long, env = "KEYVAL_PROTECTED_MODE", value_enum, default_value = "yes")]
    pub protected_mode: YesNo,
    /// Log level (logs go to stderr).
    #[arg(long, env = "KEYVAL_LOG_LEVEL", value_enum, default_value = "info")]
    pub log_level: LogLevel,
}

/// Where a follower's leader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAddr {
    pub host: String,
    pub port: u16,
}

impl LeaderAddr {
    /// `host` and `port`, an IPv6 host taken out of its brackets
    /// (`[fe80::1]` is dialled as `fe80::1`).
    pub fn new(host: &str, port: u16) -> LeaderAddr {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        LeaderAddr {
            host: bare.to_string(),
            port,
        }
    }

    /// `host:port`, the host possibly a bracketed IPv6 address.
    pub fn parse(text: &str) -> Option<LeaderAddr> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
        (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| LeaderAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    pub id: u32,
    pub bind: IpAddr,
    pub port: u16,
    pub leader: Option<LeaderAddr>,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// `--sync-followers` when given: it wins over the cluster's rule this
    /// node learned (see `Node::policy`).
    pub sync_followers: Option<usize>,
    /// `--sync-timeout-ms` when given.
    pub sync_timeout_ms: Option<u64>,
    pub max_followers: usize,
    pub max_clients: usize,
    /// A connection still in its handshake this long after it was
    /// accepted is closed (`docs/connections.md`).
    pub handshake_timeout_ms: u64,
    pub max_line_bytes: usize,
    pub max_value_bytes: usize,
    pub max_output_bytes: usize,
    pub max_output_total_bytes: usize,
    pub compact_min_bytes: u64,
    pub compact_ratio: f64,
    /// The shared secret, if any. Never logged.
    pub secret: Option<SecretBytes>,
    /// The client password, if any (`--password-file`, `KEYVAL_PASSWORD`).
    /// Never logged.
    pub password: Option<Password>,
    /// `--protected-mode yes`: with no password, clients from other hosts
    /// are refused.
    pub protected_mode: bool,
    pub log_level: LogLevel,
}

/// What is wrong with a configuration: the first problem
/// [`Config::from_cli`] (or [`load_secret`], [`load_password`]) found.
/// Its text is one line naming the flag or variable.
#[derive(Debug)]
pub enum ConfigError {
    /// `--role leader` with an `--id` other than 1.
    LeaderId(u32),
    /// `--role follower` with an `--id` below 2.
    FollowerId(u32),
    /// `--role follower` without `--id`.
    FollowerWithoutId,
    /// A `--leader_host` that is neither an IP address nor a host name.
    LeaderHost(String),
    /// `--leader_host`/`--leader_port` name this node's own listener.
    LeaderIsSelf {
        leader: LeaderAddr,
        /// The address that matched.
        addr: SocketAddr,
        bind: IpAddr,
        port: u16,
    },
    /// Only one of `--leader_host` and `--leader_port`, or port 0.
    LeaderHalf,
    /// `--role follower` without a leader.
    FollowerWithoutLeader,
    /// `--max-line-bytes` out of range.
    MaxLineBytes(usize),
    MaxValueBytes(usize),
    /// `--max-output-bytes` below the smallest.
    MaxOutputBytes(usize),
    /// `--max-output-total-bytes` below `--max-output-bytes`.
    OutputTotalBelowOne {
        total: usize,
        one: usize,
    },
    /// `--compact-ratio` below 1 or not a number.
    CompactRatio(f64),
    /// `--max-clients 0`.
    NoClients,
    /// `--handshake-timeout-ms 0`.
    NoHandshakeTime,
    /// `--sync-followers` above `--max-followers`.
    SyncFollowersAboveMax {
        sync: usize,
        max: usize,
    },
    /// The `--secret-file` could not be read.
    SecretFile {
        path: PathBuf,
        source: io::Error,
    },
    /// The `--password-file` could not be read.
    PasswordFile {
        path: PathBuf,
        source: io::Error,
    },
    /// An empty password, from this `--password-file` (`None`: from
    /// `KEYVAL_PASSWORD`).
    EmptyPassword {
        file: Option<PathBuf>,
    },
    /// `--role follower` without the shared secret.
    FollowerWithoutSecret,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::LeaderId(id) => write!(f, "--id {id}: a leader's id is 1"),
            ConfigError::FollowerId(id) => write!(f, "--id {id}: a follower's id must be >= 2"),
            ConfigError::FollowerWithoutId => write!(f, "--role follower needs --id N (N >= 2)"),
            ConfigError::LeaderHost(host) => write!(
                f,
                "--leader_host {host:?}: not an IP address or a host name"
            ),
            ConfigError::LeaderIsSelf {
                leader,
                addr,
                bind,
                port,
            } => write!(
                f,
                "--leader_host {} --leader_port {}: that is this node's own address \
                 ({addr}: it listens on {bind}:{port}); give the leader's address",
                leader.host, leader.port
            ),
            ConfigError::LeaderHalf => write!(
                f,
                "--leader_host and --leader_port go together (a non-empty host and a port >= 1)"
            ),
            ConfigError::FollowerWithoutLeader => {
                write!(f, "--role follower needs --leader_host and --leader_port")
            }
            ConfigError::MaxValueBytes(n) => write!(
                f,
                "--max-value-bytes {n}: must be between 1 and {MAX_VALUE_LIMIT}"
            ),
            ConfigError::MaxLineBytes(n) => write!(
                f,
                "--max-line-bytes {n}: must be between 16 and {MAX_LINE_LIMIT}"
            ),
            ConfigError::MaxOutputBytes(n) => write!(
                f,
                "--max-output-bytes {n}: must be at least {MIN_OUTPUT_BYTES}"
            ),
            ConfigError::OutputTotalBelowOne { total, one } => write!(
                f,
                "--max-output-total-bytes {total} is less than --max-output-bytes {one}"
            ),
            ConfigError::CompactRatio(ratio) => {
                write!(f, "--compact-ratio {ratio}: must be a number >= 1.0")
            }
            ConfigError::NoClients => write!(f, "--max-clients must be at least 1"),
            ConfigError::NoHandshakeTime => write!(f, "--handshake-timeout-ms must be at least 1"),
            ConfigError::SyncFollowersAboveMax { sync, max } => write!(
                f,
                "--sync-followers {sync} is more than --max-followers {max}: no write could \
                 ever be answered"
            ),
            ConfigError::SecretFile { path, source } => {
                write!(f, "--secret-file {}: {source}", path.display())
            }
            ConfigError::PasswordFile { path, source } => {
                write!(f, "--password-file {}: {source}", path.display())
            }
            ConfigError::EmptyPassword { file } => {
                match file {
                    Some(path) => write!(f, "--password-file {}", path.display())?,
                    None => write!(f, "KEYVAL_PASSWORD")?,
                }
                write!(
                    f,
                    ": the password is empty (unset it to run without a password)"
                )
            }
            ConfigError::FollowerWithoutSecret => write!(
                f,
                "a follower needs the shared secret: set KEYVAL_SECRET or --secret-file"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::SecretFile { source, .. } | ConfigError::PasswordFile { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// The longest line the log format can hold comfortably (a record body is
/// capped at 256 MiB).
const MAX_LINE_LIMIT: usize = 64 << 20;

/// Largest `--max-value-bytes`: with a line's worth of headers, a request
/// still fits one log record (`wal::record::MAX_BODY_LEN`).
const MAX_VALUE_LIMIT: usize = 128 << 20;

/// The smallest `--max-output-bytes`: room for a few ordinary replies.
const MIN_OUTPUT_BYTES: usize = 4096;

impl Config {
    /// Checks the parsed flags and reads the secret and the password.
    /// `env_secret` and `env_password` are the values of `KEYVAL_SECRET`
    /// and `KEYVAL_PASSWORD`, passed in so this stays testable.
    ///
    /// # Errors
    /// The first problem found.
    pub fn from_cli(
        cli: Cli,
        env_secret: Option<String>,
        env_password: Option<String>,
    ) -> Result<Config, ConfigError> {
        let id = match (cli.role, cli.id) {
            (Role::Leader, None | Some(1)) => 1,
            (Role::Leader, Some(id)) => return Err(ConfigError::LeaderId(id)),
            (Role::Follower, Some(id)) if id >= 2 => id,
            (Role::Follower, Some(id)) => return Err(ConfigError::FollowerId(id)),
            (Role::Follower, None) => return Err(ConfigError::FollowerWithoutId),
        };
        let leader = match (cli.leader_host, cli.leader_port) {
            (Some(host), Some(_)) if !crate::protocol::is_host(host.as_bytes()) => {
                return Err(ConfigError::LeaderHost(host))
            }
            (Some(host), Some(port)) if port != 0 => {
                let leader = LeaderAddr::new(&host, port);
                if let Some(addr) = leader_is_self(cli.bind, cli.port, &leader, Lookup::System) {
                    return Err(ConfigError::LeaderIsSelf {
                        leader,
                        addr,
                        bind: cli.bind,
                        port: cli.port,
                    });
                }
                Some(leader)
            }
            (None, None) => None,
            _ => return Err(ConfigError::LeaderHalf),
        };
        if cli.role == Role::Follower && leader.is_none() {
            return Err(ConfigError::FollowerWithoutLeader);
        }
        if cli.max_line_bytes < 16 || cli.max_line_bytes > MAX_LINE_LIMIT {
            return Err(ConfigError::MaxLineBytes(cli.max_line_bytes));
        }
        if cli.max_value_bytes == 0 || cli.max_value_bytes > MAX_VALUE_LIMIT {
            return Err(ConfigError::MaxValueBytes(cli.max_value_bytes));
        }
        if cli.max_output_bytes < MIN_OUTPUT_BYTES {
            return Err(ConfigError::MaxOutputBytes(cli.max_output_bytes));
        }
        if cli.max_output_total_bytes < cli.max_output_bytes {
            return Err(ConfigError::OutputTotalBelowOne {
                total: cli.max_output_total_bytes,
                one: cli.max_output_bytes,
            });
        }
        if !(cli.compact_ratio.is_finite() && cli.compact_ratio >= 1.0) {
            return Err(ConfigError::CompactRatio(cli.compact_ratio));
        }
        if cli.max_clients == 0 {
            return Err(ConfigError::NoClients);
        }
        if cli.handshake_timeout_ms == 0 {
            return Err(ConfigError::NoHandshakeTime);
        }
        if let Some(n) = cli.sync_followers.filter(|&n| n > cli.max_followers) {
            return Err(ConfigError::SyncFollowersAboveMax {
                sync: n,
                max: cli.max_followers,
            });
        }
        let secret = load_secret(cli.secret_file.as_deref(), env_secret)?.map(SecretBytes);
        let password = load_password(cli.password_file.as_deref(), env_password)?;
        if cli.role == Role::Follower && secret.is_none() {
            return Err(ConfigError::FollowerWithoutSecret);
        }
        Ok(Config {
            role: cli.role,
            id,
            bind: cli.bind,
            port: cli.port,
            leader,
            data_dir: cli.data_dir,
            fsync: match cli.fsync {
                FsyncArg::Always => FsyncPolicy::Always,
                FsyncArg::Everysec => FsyncPolicy::EverySec,
                FsyncArg::No => FsyncPolicy::No,
            },
            sync_followers: cli.sync_followers,
            sync_timeout_ms: cli.sync_timeout_ms,
            max_followers: cli.max_followers,
            max_clients: cli.max_clients,
            handshake_timeout_ms: cli.handshake_timeout_ms,
            max_line_bytes: cli.max_line_bytes,
            max_value_bytes: cli.max_value_bytes,
            max_output_bytes: cli.max_output_bytes,
            max_output_total_bytes: cli.max_output_total_bytes,
            compact_min_bytes: cli.compact_min_bytes,
            compact_ratio: cli.compact_ratio,
            secret,
            password,
            protected_mode: cli.protected_mode == YesNo::Yes,
            log_level: cli.log_level,
        })
    }

    /// The log file name for this node's role and id.
    pub fn log_path(&self) -> PathBuf {
        match self.role {
            Role::Leader => self.data_dir.join("leader.log"),
            Role::Follower => self.data_dir.join(format!("follower_{}.log", self.id)),
        }
    }
}

/// The shared secret from `--secret-file` if given, else from
/// `KEYVAL_SECRET` (`env_secret`); `None` when neither gives a non-empty one.
///
/// # Errors
/// An unreadable secret file, named.
pub fn load_secret(
    file: Option<&Path>,
    env_secret: Option<String>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| ConfigError::SecretFile {
                path: path.to_path_buf(),
                source,
            })?;
            Some(trim_secret(text))
        }
        None => env_secret.map(String::into_bytes).map(trim_secret),
    };
    Ok(secret.filter(|s| !s.is_empty()))
}

/// The client password from `--password-file` if given, else from
/// `KEYVAL_PASSWORD` (`env_password`); `None` when neither is set. One
/// trailing newline is dropped, as for the secret.
///
/// # Errors
/// An unreadable password file, or an empty password (which would let in
/// anyone; unset it for no password).
pub fn load_password(
    file: Option<&Path>,
    env_password: Option<String>,
) -> Result<Option<Password>, ConfigError> {
    let password = match (file, env_password) {
        (Some(path), _) => std::fs::read(path).map_err(|source| ConfigError::PasswordFile {
            path: path.to_path_buf(),
            source,
        })?,
        (None, Some(env)) => env.into_bytes(),
        (None, None) => return Ok(None),
    };
    Password::new(&trim_secret(password))
        .map(Some)
        .ok_or_else(|| ConfigError::EmptyPassword {
            file: file.map(Path::to_path_buf),
        })
}

/// Secret bytes whose `Debug` does not show them, so that printing a
/// [`Config`] cannot leak the shared secret. Dereferences to the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl std::ops::Deref for SecretBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a leader address is looked up by [`leader_is_self`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// IP literals and `localhost` only: no call that may block on DNS
    /// (the event loop, answering `FOLLOW`).
    NoDns,
    /// Host names through the system resolver too (at start).
    System,
}

/// Whether `leader` is this node's own listener on `bind`:`port`, so a
/// follower of it would dial itself forever. Returns the address that
/// matched.
///
/// It is when the port is the same and the leader's host is the bind
/// address, or any address of this machine (a loopback one, `0.0.0.0`,
/// or one a socket can be bound to) while the node listens on every
/// address. A name that does not resolve is not this node.
pub fn leader_is_self(
    bind: IpAddr,
    port: u16,
    leader: &LeaderAddr,
    lookup: Lookup,
) -> Option<SocketAddr> {
    if port == 0 || leader.port != port {
        return None;
    }
    let host = leader.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if host.eq_ignore_ascii_case("localhost") {
        vec![
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), port),
        ]
    } else if lookup == Lookup::System {
        (host, port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    addrs.into_iter().find(|addr| {
        let ip = addr.ip();
        // Connecting to 0.0.0.0 (or ::) reaches the local host; an address
        // a socket can be bound to is one of this machine's.
        ip == bind
            || (bind.is_loopback() && ip.is_unspecified())
            || (bind.is_unspecified()
                && (ip.is_loopback()
                    || ip.is_unspecified()
                    || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()))
    })
}

/// A clap error as the one line `docs/protocol.md` promises: its first
/// paragraph, joined. Taking only the first line would lose what clap lists
/// on the following ones, such as the flag in "the following required
/// arguments were not provided:".
pub fn usage_error_line(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let line = paragraph.join(" ");
    match line.trim_start_matches("error: ") {
        "" => "invalid arguments".into(),
        text => text.to_string(),
    }
}

/// Drops one trailing newline (files written by `echo`), nothing else.
fn trim_secret(mut secret: Vec<u8>) -> Vec<u8> {
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test's flags give: a usage error from clap, or what
    /// [`Config::from_cli`] made of them.
    #[derive(Debug)]
    enum Parsed {
        Usage(clap::Error),
        Checked(ConfigError),
    }

    impl Parsed {
        /// The checked configuration's error; panics on a usage error.
        fn checked(self) -> ConfigError {
            match self {
                Parsed::Checked(e) => e,
                Parsed::Usage(e) => panic!("a usage error: {e}"),
            }
        }
    }

    fn parse(args: &[&str]) -> Result<Config, Parsed> {
        parse_with_password(args, None)
    }

    fn parse_with_password(args: &[&str], env: Option<&str>) -> Result<Config, Parsed> {
        let cli = Cli::try_parse_from(std::iter::once("keyval").chain(args.iter().copied()))
            .map_err(Parsed::Usage)?;
        Config::from_cli(cli, Some("s3cret\n".into()), env.map(String::from))
            .map_err(Parsed::Checked)
    }

    #[test]
    fn password_from_env_or_file() {
        let c = parse_with_password(&["--role", "leader"], None).expect("valid");
        assert_eq!(c.password, None);
        assert!(c.protected_mode);
        let c = parse_with_password(&["--role", "leader"], Some("pw\n")).expect("valid");
        assert!(c.password.as_ref().is_some_and(|p| p.matches(b"pw")));

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "from file\n").expect("write");
        let path = file.to_str().expect("utf8");
        // The file wins over the environment, as for the secret.
        let c = parse_with_password(&["--role", "leader", "--password-file", path], Some("env"))
            .expect("valid");
        assert!(c.password.as_ref().is_some_and(|p| p.matches(b"from file")));

        std::fs::write(&file, "\n").expect("write");
        let err = parse_with_password(&["--role", "leader", "--password-file", path], None)
            .expect_err("empty file")
            .checked();
        assert!(
            matches!(&err, ConfigError::EmptyPassword { file: Some(f) } if *f == file),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "--password-file {path}: the password is empty (unset it to run without a \
                 password)"
            )
        );
        let err = parse_with_password(&["--role", "leader"], Some(""))
            .expect_err("empty env")
            .checked();
        assert_eq!(
            err.to_string(),
            "KEYVAL_PASSWORD: the password is empty (unset it to run without a password)"
        );
        let missing = dir.path().join("no-such-file");
        let err = parse_with_password(
            &[
                "--role",
                "leader",
                "--password-file",
                missing.to_str().expect("utf8"),
            ],
            None,
        )
        .expect_err("missing file")
        .checked();
        assert!(matches!(err, ConfigError::PasswordFile { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-file"), "{err}");
    }

    #[test]
    fn protected_mode_flag() {
        let c = parse(&["--role", "leader", "--protected-mode", "no"]).expect("valid");
        assert!(!c.protected_mode);
        let c = parse(&["--role", "leader", "--protected-mode", "yes"]).expect("valid");
        assert!(c.protected_mode);
        assert!(parse(&["--role", "leader", "--protected-mode", "maybe"]).is_err());
    }

    #[test]
    fn debug_shows_neither_secret_nor_password() {
        let c = parse_with_password(&["--role", "leader"], Some("pa55word-xyz")).expect("valid");
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("pa55word-xyz"), "{shown}");
        // Nor the bytes, as a derived Debug of a Vec<u8> would show them.
        assert!(!shown.contains("115, 51, 99"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn leader_defaults() {
        let c = parse(&["--role", "leader"]).expect("valid");
        assert_eq!(
            (c.id, c.port, c.max_followers, c.max_clients),
            (1, 5000, 10, 10000)
        );
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(
            (c.max_output_bytes, c.max_output_total_bytes),
            (64 << 20, 256 << 20)
        );
        assert_eq!(c.log_path(), PathBuf::from("./leader.log"));
        assert_eq!(c.secret.as_deref(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn follower_flags_in_both_spellings() {
        for (h, p) in [
            ("--leader_host", "--leader_port"),
            ("--leader-host", "--leader-port"),
        ] {
            let c = parse(&["--role", "follower", "--id", "2", h, "127.0.0.1", p, "6000"])
                .expect("valid");
            assert_eq!(
                c.leader,
                Some(LeaderAddr {
                    host: "127.0.0.1".into(),
                    port: 6000
                })
            );
            assert_eq!(c.log_path(), PathBuf::from("./follower_2.log"));
        }
    }

    #[test]
    fn bad_combinations_are_refused() {
        for args in [
            &[
                "--role",
                "follower",
                "--leader_host",
                "h",
                "--leader_port",
                "1",
            ][..],
            &[
                "--role",
                "follower",
                "--id",
                "1",
                "--leader_host",
                "h",
                "--leader_port",
                "1",
            ],
            &["--role", "follower", "--id", "2"],
            &["--role", "leader", "--id", "3"],
            &["--role", "leader", "--max-line-bytes", "1"],
            &["--role", "leader", "--compact-ratio", "0.5"],
            &["--role", "leader", "--max-output-bytes", "100"],
            &["--role", "leader", "--max-output-bytes", "-1"],
            &[
                "--role",
                "leader",
                "--max-output-bytes",
                "2000000",
                "--max-output-total-bytes",
                "1000000",
            ],
            &["--role", "leader", "--sync-followers", "11"],
            &["--role", "leader", "--leader_host", "h"],
            &["--role", "boss"],
            &["--port", "5000"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn the_handshake_timeout_defaults_to_ten_seconds_and_is_not_zero() {
        let c = parse(&["--role", "leader"]).expect("valid");
        assert_eq!(c.handshake_timeout_ms, 10_000);
        let c = parse(&["--role", "leader", "--handshake-timeout-ms", "300"]).expect("valid");
        assert_eq!(c.handshake_timeout_ms, 300);
        let err = parse(&["--role", "leader", "--handshake-timeout-ms", "0"])
            .expect_err("0")
            .checked();
        assert!(matches!(err, ConfigError::NoHandshakeTime), "{err:?}");
        assert!(err.to_string().contains("--handshake-timeout-ms"), "{err}");
    }

    #[test]
    fn a_follower_of_its_own_address_is_refused() {
        for (bind, host) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1", "localhost"),
            ("127.0.0.1", "0.0.0.0"),
            ("0.0.0.0", "127.0.0.1"),
            ("0.0.0.0", "localhost"),
            ("0.0.0.0", "::1"),
        ] {
            let args = [
                "--role",
                "follower",
                "--id",
                "2",
                "--bind",
                bind,
                "--leader_host",
                host,
                "--leader_port",
                "5000",
            ];
            let e = parse(&args).expect_err(host).checked();
            assert!(matches!(e, ConfigError::LeaderIsSelf { .. }), "{e:?}");
            assert!(
                e.to_string().contains("this node's own address"),
                "{bind} {host}: {e}"
            );
        }
        // Another port, or another loopback address than the one bound.
        for (bind, host, port) in [
            ("127.0.0.1", "127.0.0.1", "5001"),
            ("127.0.0.2", "127.0.0.1", "5000"),
        ] {
            let args = [
                "--role",
                "follower",
                "--id",
                "2",
                "--bind",
                bind,
                "--leader_host",
                host,
                "--leader_port",
                port,
            ];
            assert!(parse(&args).is_ok(), "{bind} {host}:{port}");
        }
    }

    #[test]
    fn errors_read_as_before() {
        let missing = || io::Error::from(io::ErrorKind::NotFound);
        let cases = [
            (
                ConfigError::LeaderId(3),
                "--id 3: a leader's id is 1".to_string(),
            ),
            (
                ConfigError::FollowerId(1),
                "--id 1: a follower's id must be >= 2".into(),
            ),
            (
                ConfigError::FollowerWithoutId,
                "--role follower needs --id N (N >= 2)".into(),
            ),
            (
                ConfigError::LeaderHost("a b".into()),
                "--leader_host \"a b\": not an IP address or a host name".into(),
            ),
            (
                ConfigError::LeaderIsSelf {
                    leader: LeaderAddr::new("localhost", 5000),
                    addr: "127.0.0.1:5000".parse().expect("addr"),
                    bind: IpAddr::from([127, 0, 0, 1]),
                    port: 5000,
                },
                "--leader_host localhost --leader_port 5000: that is this node's own address \
                 (127.0.0.1:5000: it listens on 127.0.0.1:5000); give the leader's address"
                    .into(),
            ),
            (
                ConfigError::LeaderHalf,
                "--leader_host and --leader_port go together (a non-empty host and a port >= 1)"
                    .into(),
            ),
            (
                ConfigError::FollowerWithoutLeader,
                "--role follower needs --leader_host and --leader_port".into(),
            ),
            (
                ConfigError::MaxLineBytes(1),
                format!("--max-line-bytes 1: must be between 16 and {MAX_LINE_LIMIT}"),
            ),
            (
                ConfigError::MaxOutputBytes(100),
                "--max-output-bytes 100: must be at least 4096".into(),
            ),
            (
                ConfigError::OutputTotalBelowOne {
                    total: 5000,
                    one: 6000,
                },
                "--max-output-total-bytes 5000 is less than --max-output-bytes 6000".into(),
            ),
            (
                ConfigError::CompactRatio(0.5),
                "--compact-ratio 0.5: must be a number >= 1.0".into(),
            ),
            (
                ConfigError::NoClients,
                "--max-clients must be at least 1".into(),
            ),
            (
                ConfigError::NoHandshakeTime,
                "--handshake-timeout-ms must be at least 1".into(),
            ),
            (
                ConfigError::SyncFollowersAboveMax { sync: 11, max: 10 },
                "--sync-followers 11 is more than --max-followers 10: no write could ever be \
                 answered"
                    .into(),
            ),
            (
                ConfigError::SecretFile {
                    path: "/etc/s".into(),
                    source: missing(),
                },
                format!("--secret-file /etc/s: {}", missing()),
            ),
            (
                ConfigError::PasswordFile {
                    path: "/etc/p".into(),
                    source: missing(),
                },
                format!("--password-file /etc/p: {}", missing()),
            ),
            (
                ConfigError::EmptyPassword {
                    file: Some("/etc/p".into()),
                },
                "--password-file /etc/p: the password is empty (unset it to run without a \
                 password)"
                    .into(),
            ),
            (
                ConfigError::FollowerWithoutSecret,
                "a follower needs the shared secret: set KEYVAL_SECRET or --secret-file".into(),
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text, "{error:?}");
        }
    }

    #[test]
    fn help_says_the_state_file_wins_and_describes_every_flag() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        for arg in command.get_arguments() {
            let about = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                !about.trim().is_empty(),
                "--{} has no description",
                arg.get_id()
            );
        }
        let help = command.render_long_help().to_string();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(
                "writes node_<id>.state in the data directory. At start that file wins over \
                 --role, --leader_host and --leader_port"
            ),
            "{help}"
        );
    }

    fn usage_line(args: &[&str]) -> String {
        match Cli::try_parse_from(std::iter::once("keyval").chain(args.iter().copied())) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => usage_error_line(&e.to_string()),
        }
    }

    #[test]
    fn usage_errors_are_one_line_naming_the_flag() {
        for (args, flag) in [
            (&[][..], "--role"),
            (&["--port", "5000"], "--role"),
            (&["--role", "leader", "--port", "x"], "--port"),
            (&["--role"], "--role"),
            (&["--role", "leader", "--bogus"], "--bogus"),
        ] {
            let line = usage_line(args);
            assert!(!line.contains('\n'), "{args:?}: {line:?}");
            assert!(!line.starts_with("error"), "{args:?}: {line:?}");
            assert!(
                line.contains(flag),
                "{args:?}: {line:?} does not name {flag}"
            );
        }
        assert_eq!(usage_error_line("\n"), "invalid arguments");
    }
}
