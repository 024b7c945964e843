//! The node's role as it stands after promotions, re-pointing and fencing,
//! and the small file in the data directory that keeps it across restarts.
//!
//! `node_<id>.state` is written (temp file, fsync, rename, directory fsync)
//! whenever an admin command or news of a higher epoch changes the role.
//! At start it wins over `--role` and `--leader_host`/`--leader_port`: a
//! promoted follower restarted by its old unit stays a leader, and a
//! deposed leader restarted by its old unit stays a follower (or fenced),
//! so a restart can never bring back a stale leader. The node says so in
//! one log line when the file overrides its flags.
//!
//! ```text
//! role follower            leader | follower
//! leader 10.0.0.2:5000     whom a follower follows
//! fenced 0                 1: a leader that knows it was replaced takes no writes
//! epoch 3                  the highest epoch this node knows of
//! discard 1                1: the operator allowed dropping writes the leader lacks
//! log leader.log           the log file (it keeps its name through role changes)
//! sync 1 5000              the cluster's output rule as last announced by a
//!                          leader (followers, timeout ms); optional
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Config, LeaderAddr, Role};
use crate::error::Error;
use crate::replication::SyncPolicy;
use crate::wal::compact;

/// The node's current role and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    pub role: Role,
    /// On a follower: its leader.
    pub leader: Option<LeaderAddr>,
    /// On a leader: it learned of a higher epoch, or was told to stop.
    pub fenced: bool,
    /// The highest epoch this node has heard of.
    pub epoch_seen: u64,
    /// `FOLLOW` allowed dropping writes the new leader does not have.
    pub may_discard: bool,
    /// File name of the log in the data directory.
    pub log: String,
    /// The cluster's output rule as a leader last announced it: what this
    /// node enforces once promoted, unless its own flags say otherwise.
    pub policy: Option<SyncPolicy>,
}

/// Why the text of a state file is not a [`RoleState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseStateError {
    /// A line that is not `key value`.
    BadLine(String),
    /// A line with an unknown key or a value its key does not take.
    BadValue(String),
    /// No `role` line.
    NoRole,
    /// No `log` line.
    NoLog,
    /// `role follower` without a `leader` line.
    FollowerWithoutLeader,
}

impl fmt::Display for ParseStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseStateError::BadLine(line) => write!(f, "bad line {line:?}"),
            ParseStateError::BadValue(line) => write!(f, "bad value in line {line:?}"),
            ParseStateError::NoRole => write!(f, "no role line"),
            ParseStateError::NoLog => write!(f, "no log line"),
            ParseStateError::FollowerWithoutLeader => write!(f, "a follower without a leader line"),
        }
    }
}

impl std::error::Error for ParseStateError {}

impl RoleState {
    /// The role the flags ask for, before any state file is read.
    pub fn from_config(config: &Config) -> RoleState {
        let log = config
            .log_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        RoleState {
            role: config.role,
            leader: config.leader.clone(),
            fenced: false,
            epoch_seen: 0,
            may_discard: false,
            log,
            policy: None,
        }
    }

    /// The state file of node `id` in `dir`.
    pub fn path(dir: &Path, id: u32) -> PathBuf {
        dir.join(format!("node_{id}.state"))
    }

    /// The file's text.
    pub fn encode(&self) -> String {
        let mut text = format!("role {}\n", role_word(self.role));
        if let Some(leader) = &self.leader {
            text.push_str(&format!("leader {}:{}\n", leader.host, leader.port));
        }
        text.push_str(&format!(
            "fenced {}\nepoch {}\ndiscard {}\nlog {}\n",
            u8::from(self.fenced),
            self.epoch_seen,
            u8::from(self.may_discard),
            self.log
        ));
        if let Some(p) = self.policy {
            text.push_str(&format!("sync {} {}\n", p.followers, p.timeout_ms));
        }
        text
    }

    /// Reads the file's text.
    ///
    /// # Errors
    /// The first bad line, or a line that is missing.
    pub fn parse(text: &str) -> Result<RoleState, ParseStateError> {
        let mut state = RoleState {
            role: Role::Follower,
            leader: None,
            fenced: false,
            epoch_seen: 0,
            may_discard: false,
            log: String::new(),
            policy: None,
        };
        let mut role = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| ParseStateError::BadLine(line.to_string()))?;
            let bad = || ParseStateError::BadValue(line.to_string());
            match key {
                "role" => {
                    role = Some(match value {
                        "leader" => Role::Leader,
                        "follower" => Role::Follower,
                        _ => return Err(bad()),
                    })
                }
                "leader" => state.leader = Some(LeaderAddr::parse(value).ok_or_else(bad)?),
                "fenced" => state.fenced = parse_flag(value).ok_or_else(bad)?,
                "epoch" => state.epoch_seen = value.parse().map_err(|_| bad())?,
                "discard" => state.may_discard = parse_flag(value).ok_or_else(bad)?,
                "log" if is_plain_file_name(value) => state.log = value.to_string(),
                "sync" => {
                    let (n, ms) = value.split_once(' ').ok_or_else(bad)?;
                    state.policy = Some(SyncPolicy {
                        followers: n.parse().map_err(|_| bad())?,
                        timeout_ms: ms.parse().map_err(|_| bad())?,
                    });
                }
                _ => return Err(bad()),
            }
        }
        state.role = role.ok_or(ParseStateError::NoRole)?;
        if state.log.is_empty() {
            return Err(ParseStateError::NoLog);
        }
        if state.role == Role::Follower && state.leader.is_none() {
            return Err(ParseStateError::FollowerWithoutLeader);
        }
        Ok(state)
    }

    /// Reads node `id`'s state file in `dir`, if there is one.
    ///
    /// # Errors
    /// An unreadable or malformed file: the node must not guess its role.
    pub fn load(dir: &Path, id: u32) -> Result<Option<RoleState>, Error> {
        let path = RoleState::path(dir, id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    what: format!("read {}", path.display()),
                    source: e,
                })
            }
        };
        RoleState::parse(&text).map(Some).map_err(|why| Error::Io {
            what: format!(
                "{}: {why} (fix or remove the file to use the flags)",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })
    }

    /// Writes node `id`'s state file in `dir` atomically and durably.
    ///
    /// # Errors
    /// IO errors; the old file, if any, is then left as it was.
    pub fn save(&self, dir: &Path, id: u32) -> Result<(), Error> {
        let path = RoleState::path(dir, id);
        let mut temp = compact::temp_file_for(&path)?;
        temp.write_all(self.encode().as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| Error::Io {
                what: format!("write {}", path.display()),
                source: e,
            })?;
        temp.persist(&path).map_err(|e| Error::Io {
            what: format!("rename onto {}", path.display()),
            source: e.error,
        })?;
        compact::sync_dir(&path)?;
        Ok(())
    }
}

/// `leader` or `follower`.
pub fn role_word(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
    }
}

fn parse_flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> RoleState {
        RoleState {
            role: Role::Follower,
            leader: Some(LeaderAddr {
                host: "10.0.0.2".into(),
                port: 5001,
            }),
            fenced: false,
            epoch_seen: 3,
            may_discard: true,
            log: "leader.log".into(),
            policy: Some(SyncPolicy {
                followers: 1,
                timeout_ms: 250,
            }),
        }
    }

    #[test]
    fn round_trips() {
        let state = follower();
        assert_eq!(RoleState::parse(&state.encode()), Ok(state));
        let leader = RoleState {
            role: Role::Leader,
            leader: None,
            fenced: true,
            policy: None,
            ..follower()
        };
        assert_eq!(RoleState::parse(&leader.encode()), Ok(leader));
        assert!(follower().encode().contains("\nsync 1 250\n"));
    }

    #[test]
    fn bad_files_are_refused() {
        let bad = |line: &str| ParseStateError::BadValue(line.into());
        for (text, error) in [
            ("", ParseStateError::NoRole),
            ("role boss\nlog a.log\n", bad("role boss")),
            (
                "role follower\nlog a.log\n",
                ParseStateError::FollowerWithoutLeader,
            ),
            ("role leader\nlog ../a.log\n", bad("log ../a.log")),
            ("role leader\nlog a.log\nepoch x\n", bad("epoch x")),
            ("role leader\nlog a.log\nsurprise 1\n", bad("surprise 1")),
            ("role leader\nlog a.log\nsync 1\n", bad("sync 1")),
            ("role leader\nlog a.log\nsync x 5\n", bad("sync x 5")),
            ("role leader\n", ParseStateError::NoLog),
            (
                "role leader\nlog a.log\nfenced\n",
                ParseStateError::BadLine("fenced".into()),
            ),
        ] {
            assert_eq!(RoleState::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn parse_errors_read_as_before() {
        let cases = [
            (ParseStateError::BadLine("x".into()), "bad line \"x\""),
            (
                ParseStateError::BadValue("epoch x".into()),
                "bad value in line \"epoch x\"",
            ),
            (ParseStateError::NoRole, "no role line"),
            (ParseStateError::NoLog, "no log line"),
            (
                ParseStateError::FollowerWithoutLeader,
                "a follower without a leader line",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn a_bracketed_host_is_dialled_bare() {
        assert_eq!(LeaderAddr::new("[::1]", 5000).host, "::1");
        assert_eq!(LeaderAddr::new("db1", 5000).host, "db1");
        let state = RoleState {
            leader: Some(LeaderAddr::new("[fe80::1]", 7)),
            ..follower()
        };
        assert_eq!(RoleState::parse(&state.encode()), Ok(state));
    }

    #[test]
    fn addresses_parse_with_and_without_brackets() {
        assert_eq!(
            LeaderAddr::parse("[::1]:5000"),
            Some(LeaderAddr {
                host: "::1".into(),
                port: 5000
            })
        );
        assert_eq!(LeaderAddr::parse("db1:7").map(|a| a.port), Some(7));
        assert_eq!(LeaderAddr::parse("db1"), None);
        assert_eq!(LeaderAddr::parse("db1:0"), None);
        assert_eq!(LeaderAddr::parse(":5000"), None);
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(RoleState::load(dir.path(), 2).expect("load"), None);
        follower().save(dir.path(), 2).expect("save");
        assert_eq!(
            RoleState::load(dir.path(), 2).expect("load"),
            Some(follower())
        );
        std::fs::write(RoleState::path(dir.path(), 2), "role ?\n").expect("write");
        assert!(RoleState::load(dir.path(), 2).is_err());
    }
}
