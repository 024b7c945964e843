//! Child-process orchestration for the suite: starting fresh keyval
//! leaders and followers ([`KeyvalSpec`]) and Redis servers in temporary
//! directories, waiting (bounded) until they serve or reach a state
//! ([`wait_for`]), draining their output and searching its tail, reading
//! their resident memory, and making sure every child is killed and reaped
//! whatever path the suite takes ([`ChildGuard`] kills on drop).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::client::Client;
use crate::wire::Protocol;

/// Lines of child output kept for error messages.
const TAIL_LINES: usize = 40;
/// Sleep between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// The most recent output lines of a child, shared with its drain threads.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// Owns a child process; dropping it kills (SIGKILL) and reaps the child.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    tail: Tail,
    drains: Vec<thread::JoinHandle<()>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr drained by
    /// background threads into a bounded tail. If `addr_tx` is given, the
    /// first output line containing `listening on <addr>` sends that address.
    fn spawn(
        name: &str,
        mut cmd: Command,
        addr_tx: Option<Sender<SocketAddr>>,
    ) -> io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
        let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut drains = Vec::new();
        if let Some(out) = child.stdout.take() {
            drains.push(spawn_drain(out, tail.clone(), addr_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            drains.push(spawn_drain(err, tail.clone(), addr_tx));
        }
        log::debug!("started {name} (pid {})", child.id());
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            tail,
            drains,
        })
    }

    /// The child's process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the child's last output if it has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        let status = match &mut self.child {
            Some(c) => c.try_wait()?,
            None => {
                return Err(io::Error::other(format!(
                    "{} was already stopped",
                    self.name
                )))
            }
        };
        match status {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                // Let the drain threads catch the child's last words.
                let deadline = Instant::now() + Duration::from_millis(500);
                while Instant::now() < deadline && !self.drains.iter().all(|d| d.is_finished()) {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(io::Error::other(format!(
                    "{} exited early ({status}); last output:\n{}",
                    self.name,
                    self.tail_text()
                )))
            }
        }
    }

    /// The last lines the child printed.
    pub fn tail_text(&self) -> String {
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        if tail.is_empty() {
            return "(no output)".to_string();
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    }

    /// The last line the child printed that contains `needle`, if it is
    /// still among the kept tail lines.
    pub fn find_output(&self, needle: &str) -> Option<String> {
        let tail = self.tail.lock().ok()?;
        tail.iter().rev().find(|l| l.contains(needle)).cloned()
    }

    /// Sends SIGTERM (via `kill`) and waits up to `timeout` for the child to
    /// exit, then SIGKILLs it. Returns true if it exited on SIGTERM alone.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<bool> {
        let Some(child) = &mut self.child else {
            return Ok(true);
        };
        if child.try_wait()?.is_some() {
            self.child = None;
            return Ok(true);
        }
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = status {
            log::warn!("cannot run kill: {e}; using SIGKILL");
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(true);
            }
            thread::sleep(Duration::from_millis(10));
        }
        log::warn!("{} ignored SIGTERM for {timeout:?}; killing it", self.name);
        self.kill();
        Ok(false)
    }

    /// SIGKILLs and reaps the child (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` line by line into `tail` until EOF, forwarding the first
/// `listening on <addr>` address to `addr_tx`. The thread ends when the
/// child closes the pipe (at the latest when it is killed).
fn spawn_drain(
    reader: impl Read + Send + 'static,
    tail: Tail,
    mut addr_tx: Option<Sender<SocketAddr>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if addr_tx.is_some() {
                if let Some(addr) = parse_listening(&text) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(text);
            }
        }
    })
}

/// Extracts `<addr>` from a log line containing `listening on <addr>`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    token
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// A running server together with its temporary data directory. Field
/// order matters: the child is killed before the directory is removed.
pub struct Server {
    /// The child process.
    pub child: ChildGuard,
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
        let (tx, rx) = mpsc::channel();
        let mut child = ChildGuard::spawn(&name, cmd, Some(tx))?;
        let addr = wait_for_listening(&mut child, &rx, wait)?;
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

/// Waits until the child's output names its listening address.
pub fn wait_for_listening(
    child: &mut ChildGuard,
    rx: &Receiver<SocketAddr>,
    wait: Duration,
) -> io::Result<SocketAddr> {
    let deadline = Instant::now() + wait;
    loop {
        match rx.recv_timeout(PROBE_INTERVAL) {
            Ok(addr) => return Ok(addr),
            Err(RecvTimeoutError::Timeout) => {}
            // Both drain threads ended: the child closed its output.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(PROBE_INTERVAL),
        }
        child.check_alive()?;
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not log 'listening on <addr>' within {wait:?}; last output:\n{}",
                    child.name,
                    child.tail_text()
                ),
            ));
        }
    }
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
        match Client::connect(server.addr, Protocol::Keyval) {
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
    let port = free_port()?;
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
    let mut child = ChildGuard::spawn("redis-server", cmd, None)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + wait;
    loop {
        let ping = Client::connect(addr, Protocol::Resp).and_then(|mut c| c.redis_ping());
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

/// A currently free TCP port on 127.0.0.1 (bind port 0, read, release).
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Resolves `spec` to an executable: `auto` means `redis-server` on PATH,
/// a name without `/` is looked up on PATH, anything else is a path.
pub fn find_executable(spec: &str) -> Option<PathBuf> {
    let name = if spec == "auto" { "redis-server" } else { spec };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Resident set size of process `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        assert_eq!(
            parse_listening("2024-01-01 [INFO] listening on 127.0.0.1:40123"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_listening("listening on 127.0.0.1:6000, role leader"),
            Some("127.0.0.1:6000".parse().unwrap())
        );
        assert_eq!(parse_listening("starting up"), None);
        assert_eq!(parse_listening("listening on nowhere"), None);
    }

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
    fn finds_output_lines() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo 'two: catching up'; echo three"]);
        let mut guard = ChildGuard::spawn("sh", cmd, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while guard.find_output("three").is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            guard.find_output("catching up").as_deref(),
            Some("two: catching up")
        );
        assert_eq!(guard.find_output("snapshot"), None);
        guard.kill();
    }

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "rss {rss}");
    }

    #[test]
    fn guard_kills_child_on_drop() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let guard = ChildGuard::spawn("sleep", cmd, None).unwrap();
        let pid = guard.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        // Reaped, so the pid no longer names our sleeping child.
        let still_sleeping = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| c.starts_with("sleep"))
            .unwrap_or(false);
        assert!(!still_sleeping);
    }

    #[test]
    fn terminate_uses_sigterm() {
        if Command::new("kill").arg("-l").output().is_err() {
            eprintln!("no `kill` command; skipping");
            return;
        }
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut guard = ChildGuard::spawn("sleep", cmd, None).unwrap();
        assert!(guard.terminate(Duration::from_secs(5)).unwrap());
        assert!(guard.check_alive().is_err());
    }
}
