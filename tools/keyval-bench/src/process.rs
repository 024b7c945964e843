//! Child-process orchestration for the suite: starting fresh keyval
//! leaders and followers ([`KeyvalSpec`]) and Redis servers in temporary
//! directories, waiting (bounded) until they serve or reach a state
//! ([`wait_for`]), keeping the tail of their output and searching it, and
//! making sure every child is killed and reaped whatever path the suite
//! takes ([`Process`] holds the kit's guard, which kills on drop).

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::{ChildGuard, NotListening, Output};
use tempfile::TempDir;

use crate::client::{self, Redis};

/// Lines of child output kept for error messages.
const TAIL_LINES: usize = 40;
/// Sleep between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long a child that exited may take to close its pipes.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// A child process of the suite: killed and reaped on drop, its stdout
/// and stderr read into the last [`TAIL_LINES`] lines.
pub struct Process {
    name: String,
    guard: ChildGuard,
    output: Output,
}

impl Process {
    /// Spawns `cmd` with stdin closed and its stdout and stderr read in
    /// the background.
    fn spawn(name: &str, mut cmd: Command) -> io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cannot_start =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot start {name}: {e}"));
        let mut guard = ChildGuard::spawn(&mut cmd).map_err(cannot_start)?;
        let output = guard
            .child_mut()
            .map(|child| Output::capture(child, TAIL_LINES))
            .ok_or_else(|| cannot_start(io::Error::other("it was reaped at once")))?;
        log::debug!("started {name} (pid {})", guard.pid().unwrap_or(0));
        Ok(Process {
            name: name.to_string(),
            guard,
            output,
        })
    }

    /// The child's process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.guard.pid().unwrap_or(0)
    }

    /// Fails with the child's last output if it has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        if !self.guard.is_running() {
            return Err(io::Error::other(format!(
                "{} was already stopped",
                self.name
            )));
        }
        match self.guard.try_exit()? {
            None => Ok(()),
            Some(status) => Err(self.exited(status)),
        }
    }

    /// The error for a child that exited on its own, with its last words.
    fn exited(&self, status: std::process::ExitStatus) -> io::Error {
        self.output.wait_closed(LAST_WORDS);
        io::Error::other(format!(
            "{} exited early ({status}); last output:\n{}",
            self.name,
            self.tail_text()
        ))
    }

    /// The last lines the child printed.
    pub fn tail_text(&self) -> String {
        let tail = self.output.text();
        if tail.is_empty() {
            "(no output)".to_string()
        } else {
            tail
        }
    }

    /// The last line the child printed that contains `needle`, if it is
    /// still among the kept tail lines.
    pub fn find_output(&self, needle: &str) -> Option<String> {
        self.output.find_last(needle)
    }

    /// Sends SIGTERM and waits up to `timeout` for the child to exit, then
    /// SIGKILLs it. Returns true if it exited on SIGTERM alone.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<bool> {
        let graceful = self.guard.terminate(timeout)?;
        if !graceful {
            log::warn!("{} ignored SIGTERM for {timeout:?}; killed it", self.name);
        }
        Ok(graceful)
    }

    /// Waits until the child's output names its listening address.
    fn wait_listening(&mut self, wait: Duration) -> io::Result<SocketAddr> {
        keyval_testkit::wait_listening(&mut self.guard, &self.output, wait).map_err(|e| match e {
            NotListening::Exited(status) => self.exited(status),
            NotListening::TimedOut(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not log 'listening on <addr>' within {wait:?}; last output:\n{}",
                    self.name,
                    self.tail_text()
                ),
            ),
            NotListening::Io(e) => e,
        })
    }
}

/// A running server together with its temporary data directory. Field
/// order matters: the child is killed before the directory is removed.
pub struct Server {
    /// The child process.
    pub child: Process,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Its data directory (removed on drop).
    pub dir: TempDir,
}

/// The role a keyval node starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `--role leader`.
    Leader,
    /// `--role follower --id <id>`, dialling the leader at `leader`.
    Follower {
        /// The follower's id (2 or more).
        id: u32,
        /// Where its leader listens.
        leader: SocketAddr,
    },
}

/// Everything needed to start (or restart) a keyval node except its data
/// directory, so a stopped node can be started again on the same one.
#[derive(Clone, Copy, Debug)]
pub struct KeyvalSpec<'a> {
    /// Path of the keyval binary.
    pub bin: &'a Path,
    /// Leader or follower.
    pub role: Role,
    /// The `--fsync` policy.
    pub fsync: &'a str,
    /// More flags, appended last.
    pub extra: &'a [&'a str],
    /// Passed as `KEYVAL_SECRET`: a leader without it refuses followers,
    /// and a follower without it does not start.
    pub secret: Option<&'a str>,
}

impl KeyvalSpec<'_> {
    /// Starts `bin --role .. --port 0 --data-dir <dir> --fsync .. <extra..>`
    /// and waits up to `wait` for it to log its listening address.
    pub fn start(&self, dir: TempDir, wait: Duration) -> io::Result<Server> {
        let mut cmd = Command::new(self.bin);
        let name = match self.role {
            Role::Leader => {
                cmd.args(["--role", "leader"]);
                "keyval".to_string()
            }
            Role::Follower { id, leader } => {
                cmd.args(["--role", "follower", "--id", &id.to_string()])
                    .args(["--leader_host", &leader.ip().to_string()])
                    .args(["--leader_port", &leader.port().to_string()]);
                format!("keyval follower {id}")
            }
        };
        cmd.args(["--port", "0", "--fsync", self.fsync])
            .arg("--data-dir")
            .arg(dir.path())
            .args(self.extra);
        if let Some(secret) = self.secret {
            cmd.env("KEYVAL_SECRET", secret);
        }
        let mut child = Process::spawn(&name, cmd)?;
        let addr = child.wait_listening(wait)?;
        log::info!(
            "{name} (pid {}, --fsync {}{}{}) listening on {addr}",
            child.pid(),
            self.fsync,
            if self.extra.is_empty() { "" } else { " " },
            self.extra.join(" ")
        );
        Ok(Server { child, addr, dir })
    }
}

/// Starts `bin --role leader --port 0 --data-dir <dir> --fsync <fsync>
/// <extra..>` and waits up to `wait` for it to log its listening address.
pub fn start_keyval(
    bin: &Path,
    dir: TempDir,
    fsync: &str,
    extra: &[&str],
    wait: Duration,
) -> io::Result<Server> {
    let spec = KeyvalSpec {
        bin,
        role: Role::Leader,
        fsync,
        extra,
        secret: None,
    };
    spec.start(dir, wait)
}

/// Calls `check` every `interval` until it breaks with a value, for at
/// most `wait`. `check` continues with a description of the state it saw,
/// which the timeout error quotes; an error from `check` ends the wait.
pub fn wait_for<T>(
    what: &str,
    wait: Duration,
    interval: Duration,
    mut check: impl FnMut() -> io::Result<ControlFlow<T, String>>,
) -> io::Result<T> {
    let deadline = Instant::now() + wait;
    loop {
        let state = match check()? {
            ControlFlow::Break(done) => return Ok(done),
            ControlFlow::Continue(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what}: not done within {wait:?}; last seen: {state}"),
            ));
        }
        thread::sleep(interval);
    }
}

/// Restarts a keyval leader on an existing data directory (port 0) and
/// returns it with the time from spawn until a `HELLO CLIENT` was answered.
pub fn restart_keyval(
    bin: &Path,
    dir: TempDir,
    fsync: &str,
    extra: &[&str],
    wait: Duration,
) -> io::Result<(Server, Duration)> {
    let t0 = Instant::now();
    let mut server = start_keyval(bin, dir, fsync, extra, wait)?;
    let deadline = t0 + wait;
    loop {
        match client::keyval(server.addr) {
            Ok(_) => return Ok((server, t0.elapsed())),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("restarted keyval never answered HELLO: {e}"),
                ))
            }
            Err(_) => {
                server.child.check_alive()?;
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// How a Redis instance persists writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisPersistence {
    /// AOF with `appendfsync always` (durable PUTs).
    AofAlways,
    /// No AOF, no snapshots (the `--fsync no` counterpart and GET cases).
    None,
}

/// Starts `redis-server` on a free port in `dir` and waits up to `wait`
/// until it answers `PING`.
pub fn start_redis(
    bin: &Path,
    dir: TempDir,
    persistence: RedisPersistence,
    wait: Duration,
) -> io::Result<Server> {
    let port = keyval_testkit::free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--dir")
        .arg(dir.path())
        .arg("--daemonize")
        .arg("no");
    match persistence {
        RedisPersistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        RedisPersistence::None => cmd.args(["--appendonly", "no"]),
    };
    let mut child = Process::spawn("redis-server", cmd)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + wait;
    loop {
        let ping = Redis::connect(addr).and_then(|mut c| c.ping());
        match ping {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server did not answer PING within {wait:?}: {e}; last output:\n{}",
                        child.tail_text()
                    ),
                ))
            }
            Err(_) => {
                child.check_alive()?;
                thread::sleep(PROBE_INTERVAL);
            }
        }
    }
    log::info!(
        "redis-server (pid {}, {persistence:?}) listening on {addr}",
        child.pid()
    );
    Ok(Server { child, addr, dir })
}

/// What `--redis-bin` asked for, resolved to a binary or to no Redis.
///
/// `auto` is `redis-server` on PATH if there is one, and no Redis
/// otherwise; `none` is no Redis; anything else names a binary (a command
/// on PATH, or a path when it has a `/`) that must exist.
///
/// # Errors
/// A named binary that is not found: skipping a comparison the caller
/// asked for by name would pass for a run with it.
pub fn resolve_redis(spec: &str) -> Result<Option<PathBuf>, String> {
    resolve_redis_on(spec, std::env::var_os("PATH"))
}

/// [`resolve_redis`] with the search path given.
fn resolve_redis_on(spec: &str, path: Option<OsString>) -> Result<Option<PathBuf>, String> {
    match spec {
        "none" => Ok(None),
        "auto" => Ok(find_executable("redis-server", path)),
        name => find_executable(name, path).map(Some).ok_or_else(|| {
            format!(
                "--redis-bin {name}: no such file{}; `auto` uses redis-server from PATH if \
                 there is one, `none` skips Redis",
                if name.contains('/') { "" } else { " on PATH" }
            )
        }),
    }
}

/// `name` as an executable file: a path if it has a `/`, else the first
/// match in the directories of `path`.
pub fn find_executable(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&path?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The version a `redis-server --version` prints (`v=7.0.15` gives
/// `7.0.15`), or `None` if it cannot be run or says no version.
pub fn redis_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    parse_redis_version(&String::from_utf8_lossy(&out.stdout))
}

/// The `v=` word of `redis-server --version`'s output.
fn parse_redis_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_polls_until_done_and_times_out_with_the_last_state() {
        let mut calls = 0;
        let n = wait_for("counting", Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            Ok(if calls == 3 {
                ControlFlow::Break(calls)
            } else {
                ControlFlow::Continue(format!("at {calls}"))
            })
        })
        .unwrap();
        assert_eq!(n, 3);

        let err = wait_for::<()>("never", Duration::from_millis(20), PROBE_INTERVAL, || {
            Ok(ControlFlow::Continue("still waiting".to_string()))
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("never"), "{err}");
        assert!(err.to_string().contains("still waiting"), "{err}");
    }

    #[test]
    fn finds_output_lines_and_reports_an_early_exit() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo one; echo 'two: catching up'; echo three >&2; exit 3",
        ]);
        let mut child = Process::spawn("sh", cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // stdout and stderr are read by threads of their own: wait for the
        // last line of each.
        while (child.find_output("three").is_none() || child.find_output("catching up").is_none())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            child.find_output("catching up").as_deref(),
            Some("two: catching up")
        );
        assert_eq!(child.find_output("snapshot"), None);
        let err = loop {
            match child.check_alive() {
                Ok(()) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(()) => panic!("sh did not exit"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.contains("exited early"), "{err}");
        assert!(err.contains("two: catching up"), "{err}");
        let err = child.check_alive().unwrap_err().to_string();
        assert!(err.contains("already stopped"), "{err}");
    }

    #[test]
    fn a_child_that_never_listens_fails_with_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'no such flag' >&2; exit 2"]);
        let mut child = Process::spawn("keyval", cmd).unwrap();
        let err = child.wait_listening(Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("exited early"), "{err}");
        assert!(err.to_string().contains("no such flag"), "{err}");
    }

    #[test]
    fn redis_bin_auto_none_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let with = || Some(OsString::from(dir.path()));
        // No redis-server on the path: auto skips Redis, as none does.
        assert_eq!(resolve_redis_on("auto", with()), Ok(None));
        assert_eq!(resolve_redis_on("none", with()), Ok(None));
        assert_eq!(resolve_redis_on("auto", None), Ok(None));
        // A name or a path that is not there is an error, not a skip.
        let err = resolve_redis_on("redis-server", with()).unwrap_err();
        assert!(err.contains("redis-server: no such file on PATH"), "{err}");
        let missing = dir.path().join("redis-7/redis-server");
        let err = resolve_redis_on(missing.to_str().unwrap(), with()).unwrap_err();
        assert!(err.contains("no such file;"), "{err}");
        assert!(err.contains("`none` skips Redis"), "{err}");

        let bin = dir.path().join("redis-server");
        std::fs::write(&bin, "").unwrap();
        assert_eq!(resolve_redis_on("auto", with()), Ok(Some(bin.clone())));
        assert_eq!(
            resolve_redis_on("redis-server", with()),
            Ok(Some(bin.clone()))
        );
        assert_eq!(
            resolve_redis_on(bin.to_str().unwrap(), None),
            Ok(Some(bin.clone()))
        );
        // `none` is no Redis even when one is installed.
        assert_eq!(resolve_redis_on("none", with()), Ok(None));
    }

    #[test]
    fn reads_the_redis_version() {
        assert_eq!(
            parse_redis_version(
                "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=e08d\n"
            )
            .as_deref(),
            Some("7.0.15")
        );
        assert_eq!(parse_redis_version("redis-server: unknown option"), None);
        assert_eq!(parse_redis_version("v= x"), None);
    }
}
