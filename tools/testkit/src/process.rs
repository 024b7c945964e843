//! Child processes: [`ChildGuard`] kills and reaps its child when dropped,
//! signals it and waits for it with bounds; [`run_bounded`] runs a command
//! to its end within a time limit; and what `/proc` and the kernel tell
//! about processes and ports ([`rss_bytes`], [`free_port`]).

use std::io::{self, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How often a wait for a child polls it.
const POLL: Duration = Duration::from_millis(10);

/// Owns a child process; dropping it kills (SIGKILL) and reaps the child.
///
/// Once the child is reaped (killed, or seen to have exited) the guard is
/// empty: [`ChildGuard::is_running`] is false and [`ChildGuard::pid`] is
/// `None`. [`ChildGuard::default`] is an empty guard, for a process not
/// started yet.
#[derive(Debug, Default)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards a child that is already running.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    /// Spawns `cmd` (its stdio as the caller set it up) and guards it.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(cmd: &mut Command) -> io::Result<ChildGuard> {
        cmd.spawn().map(ChildGuard::new)
    }

    /// The child's process id, until it is reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child has not been reaped yet (it may have exited
    /// since the last look: see [`ChildGuard::try_exit`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The child, until it is reaped: for taking its pipes.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// If the child has exited, reaps it and returns how it ended; `None`
    /// while it runs (or once it has been reaped).
    ///
    /// # Errors
    /// When its status cannot be read.
    pub fn try_exit(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = &mut self.child else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits up to `timeout` for the child to exit and reaps it; `None`
    /// if it is still running then (or had been reaped already).
    ///
    /// # Errors
    /// When its status cannot be read.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
        Ok(None)
    }

    /// Sends the signal `name` as kill(1) spells it (`TERM`, `INT`,
    /// `STOP`, `CONT`, `KILL`).
    ///
    /// # Errors
    /// When the child has been reaped, or `kill` cannot run or fails.
    pub fn signal(&self, name: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("the process is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -{name} {pid} failed ({status})"
            )))
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the child to exit, then
    /// SIGKILLs it. True if it exited without the SIGKILL (or had exited
    /// already).
    ///
    /// # Errors
    /// When its status cannot be read (it is killed all the same).
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<bool> {
        if !self.is_running() || self.try_exit()?.is_some() {
            return Ok(true);
        }
        // A SIGTERM that cannot be sent leaves the SIGKILL below.
        let _ = self.signal("TERM");
        let result = self.wait_exit(timeout);
        let graceful = matches!(result, Ok(Some(_)));
        self.kill();
        result.map(|_| graceful)
    }

    /// SIGKILLs and reaps the child (nothing once it has been reaped).
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

/// How a [`run_bounded`] command ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None` when it overran and was killed.
    pub status: Option<ExitStatus>,
    /// What it wrote to stdout (lossily UTF-8).
    pub stdout: String,
    /// What it wrote to stderr (lossily UTF-8).
    pub stderr: String,
}

/// Runs `cmd` with stdin closed and its stdout and stderr read (by threads,
/// so a chatty child cannot fill a pipe and stall), killing it if it has
/// not exited within `timeout`.
///
/// # Errors
/// When it cannot be started or its status cannot be read.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(cmd)?;
    let child = guard
        .child_mut()
        .ok_or_else(|| io::Error::other("no child"))?;
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = guard.wait_exit(timeout)?;
    // Killed (if still running), so the pipes are at their end.
    guard.kill();
    let text = |reader: Option<thread::JoinHandle<String>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Finished {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
    })
}

/// Reads `reader` to its end on a thread of its own.
fn read_all(mut reader: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0,
/// read, released), for a process that must listen on a known port.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of process `pid` in bytes, from the `VmRSS` line of
/// `/proc/<pid>/status`.
///
/// # Errors
/// When the file cannot be read (no such process) or has no such line.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sleeper() -> ChildGuard {
        ChildGuard::spawn(Command::new("sleep").arg("30")).expect("spawn sleep")
    }

    #[test]
    fn dropping_the_guard_kills_and_reaps() {
        let guard = sleeper();
        let pid = guard.pid().expect("pid");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        // Reaped, so the pid no longer names our sleeping child.
        let still_sleeping = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| c.starts_with("sleep"))
            .unwrap_or(false);
        assert!(!still_sleeping);
    }

    #[test]
    fn terminate_uses_sigterm_and_empties_the_guard() {
        let mut guard = sleeper();
        assert!(guard.terminate(Duration::from_secs(5)).expect("terminate"));
        assert!(!guard.is_running());
        assert_eq!(guard.pid(), None);
        assert!(guard.signal("TERM").is_err());
        assert!(guard.terminate(Duration::ZERO).expect("again"));
    }

    #[test]
    fn try_exit_reports_an_exit_once() {
        let mut guard = ChildGuard::spawn(&mut Command::new("true")).expect("spawn true");
        let status = guard.wait_exit(Duration::from_secs(5)).expect("wait");
        assert!(status.is_some_and(|s| s.success()));
        assert_eq!(guard.try_exit().expect("try_exit"), None);
        assert!(!guard.is_running());
    }

    #[test]
    fn a_paused_child_still_dies_with_its_guard() {
        let mut guard = sleeper();
        guard.signal("STOP").expect("stop");
        assert_eq!(
            guard.wait_exit(Duration::from_millis(50)).expect("wait"),
            None
        );
        guard.kill();
        assert!(!guard.is_running());
    }

    #[test]
    fn run_bounded_collects_output_and_kills_overruns() {
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .expect("run sh");
        assert_eq!(done.status.and_then(|s| s.code()), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");

        let overran = run_bounded(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(200),
        )
        .expect("run sh");
        assert!(overran.status.is_none());
        assert_eq!(overran.stdout, "started\n");
    }

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(std::process::id()).expect("rss");
        assert!(rss > 1024 * 1024, "rss {rss}");
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().expect("port");
        TcpListener::bind(("127.0.0.1", port)).expect("bind the free port");
    }
}
