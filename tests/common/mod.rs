//! Shared helpers for the integration tests: start the real `keyval`
//! binary on an ephemeral loopback port with a temp data dir, and talk to it
//! over TCP the way `nc` would. The process guard, the reading of its
//! output, the port discovery and the line client are `keyval-testkit`'s,
//! shared with the tools; what is here turns their errors into panics.
//! [`cluster`] adds followers and their waits, [`redis`] a RESP client and
//! the Redis tools the Redis-face tests drive keyval with.
//!
//! Every wait is bounded and polls; nothing sleeps to synchronise. A
//! [`Node`] kills and reaps its process when dropped.

#![allow(dead_code)]

pub mod cluster;
pub mod redis;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::{run_bounded, wait_listening, ChildGuard, LineClient, NotListening};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The secret test clusters share.
pub const SECRET: &str = "test-secret-0123456789";

/// A running `keyval` process. Its fields drop in order: the process is
/// killed before its temp dir goes.
pub struct Node {
    child: ChildGuard,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Every line it wrote to stderr.
    log: keyval_testkit::Output,
    /// Keeps the temp dir alive when the node owns it.
    _temp: Option<tempfile::TempDir>,
    /// The flags it was started with, minus `--port 0` and `--data-dir`.
    args: Vec<String>,
}

/// Where to find the binary under test.
pub fn keyval_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyval")
}

impl Node {
    /// A leader with the given extra flags, in a fresh temp dir.
    pub fn leader(extra: &[&str]) -> Node {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let mut node = Node::start_in(&dir, &[&["--role", "leader"], extra].concat());
        node._temp = Some(temp);
        node
    }

    /// Starts `keyval` with `args` on port 0 with `dir` as data dir and
    /// waits until it is listening.
    pub fn start_in(dir: &Path, args: &[&str]) -> Node {
        Node::try_start_in(dir, args).unwrap_or_else(|(status, log)| {
            panic!("keyval exited with {status} before listening; log:\n{log}")
        })
    }

    /// Like [`Node::start_in`], but returns the exit status and log if the
    /// process exits before it listens.
    pub fn try_start_in(dir: &Path, args: &[&str]) -> Result<Node, (ExitStatus, String)> {
        Node::spawn(dir, args, Command::new(keyval_bin()))
    }

    /// Spawns `command` (which runs keyval) with `args`, port 0 unless given,
    /// and `dir` as data dir, and waits for the "listening on" line.
    pub fn spawn(
        dir: &Path,
        args: &[&str],
        mut command: Command,
    ) -> Result<Node, (ExitStatus, String)> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--port") {
            command.args(["--port", "0"]);
        }
        command
            .args(&args)
            .arg("--data-dir")
            .arg(dir)
            .env("KEYVAL_SECRET", SECRET)
            .env("KEYVAL_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut command).expect("spawn keyval");
        let log =
            keyval_testkit::Output::capture(child.child_mut().expect("just spawned"), usize::MAX);
        match wait_listening(&mut child, &log, WAIT) {
            Ok(addr) => Ok(Node {
                child,
                addr,
                data_dir: dir.to_path_buf(),
                log,
                _temp: None,
                args,
            }),
            Err(NotListening::Exited(status)) => Err((status, log.text())),
            Err(e) => panic!("keyval {e}; log:\n{}", log.text()),
        }
    }

    /// The whole stderr so far.
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// The first log line containing `needle`.
    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.log.find_first(needle)
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.find_log(needle) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.log_text()
            );
            self.log.wait_change(Duration::from_millis(100));
        }
    }

    /// A client that has done `HELLO CLIENT`.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.send("HELLO CLIENT");
        assert_eq!(c.line(), "HELLO SERVER");
        c
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid().expect("running")
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        if let Err(e) = self.child.signal(name) {
            panic!("kill -{name} failed: {e}");
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        self.child.kill();
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        assert!(self.child.is_running(), "running");
        match self.child.wait_exit(WAIT).expect("try_wait") {
            Some(status) => status,
            None => panic!("keyval did not exit; log:\n{}", self.log_text()),
        }
    }

    /// Starts the same node again (same flags, same data dir, new port).
    pub fn restart(&mut self) {
        assert!(!self.child.is_running(), "stop the node first");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let fresh = Node::start_in(&self.data_dir, &args);
        self.child = fresh.child;
        self.addr = fresh.addr;
        self.log = fresh.log;
    }

    /// The node's INFO as (field, value) pairs.
    pub fn info(&self) -> Vec<(String, String)> {
        self.client().info()
    }

    /// One INFO field.
    pub fn info_field(&self, field: &str) -> String {
        self.client().info_field(field)
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        keyval_testkit::rss_bytes(self.pid()).expect("VmRSS") / 1024
    }
}

/// Polls `cond` until it holds or [`WAIT`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A line-protocol client with bounded reads and writes, which panics
/// where the kit's [`LineClient`] returns an error. Its socket is
/// `stream`, as the kit's.
pub struct Client(LineClient);

impl Deref for Client {
    type Target = LineClient;
    fn deref(&self) -> &LineClient {
        &self.0
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut LineClient {
        &mut self.0
    }
}

impl Client {
    /// Connects without a handshake.
    pub fn connect(addr: SocketAddr) -> Client {
        Client(LineClient::connect(addr, WAIT).expect("connect"))
    }

    /// Sends one line (adds `\n`).
    pub fn send(&mut self, line: &str) {
        self.0.send(line).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.0.send_raw(bytes).expect("send");
    }

    /// Reads one reply line, without its `\n`.
    pub fn line(&mut self) -> String {
        let line = self.0.line_bytes().expect("read reply");
        String::from_utf8(line).expect("utf8 reply")
    }

    /// Sends a request and returns its one-line reply.
    pub fn call(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Reads a counted list (`KEYS`, `INFO`).
    pub fn list(&mut self) -> Vec<String> {
        let n: usize = self.line().parse().expect("count line");
        (0..n).map(|_| self.line()).collect()
    }

    /// `INFO` as pairs.
    pub fn info(&mut self) -> Vec<(String, String)> {
        self.send("INFO");
        self.list()
            .into_iter()
            .map(|l| {
                let (k, v) = l.split_once(' ').expect("field value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// One `INFO` field.
    pub fn info_field(&mut self, field: &str) -> String {
        self.info()
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no INFO field {field}"))
    }

    /// Whether the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        matches!(self.0.at_eof(), Ok(true))
    }

    /// Reads one reply line like [`Client::line`], but returns `None` when
    /// the connection ends or fails instead of panicking (for tests that
    /// kill the server under a client).
    pub fn try_line(&mut self) -> Option<String> {
        let line = self.0.line_bytes().ok()?;
        Some(String::from_utf8(line).expect("utf8 reply"))
    }

    /// Sends a request and returns its reply, or `None` if the connection
    /// broke on the way.
    pub fn try_call(&mut self, line: &str) -> Option<String> {
        self.0.send(line).ok()?;
        self.try_line()
    }
}

/// Runs `command` to completion, bounded by [`WAIT`] (killed past it), with
/// stdin closed; returns its status and its stderr.
pub fn run_to_exit(command: &mut Command) -> (ExitStatus, String) {
    let done = run_bounded(command, WAIT).expect("spawn");
    match done.status {
        Some(status) => (status, done.stderr),
        None => panic!("{command:?} did not exit within {WAIT:?}"),
    }
}

/// Runs `keyval-ctl --port <port> <args>` with the cluster's secret.
pub fn ctl(port: u16, args: &[&str]) -> Output {
    ctl_with_secret(port, args, SECRET)
}

/// Runs `keyval-ctl --port <port> <args>` with `secret`, each of its waits
/// bounded at 3 s.
pub fn ctl_with_secret(port: u16, args: &[&str], secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyval-ctl"))
        .env("KEYVAL_SECRET", secret)
        .env_remove("KEYVAL_SECRET_FILE")
        .args(["--port", &port.to_string(), "--timeout-ms", "3000"])
        .args(args)
        .output()
        .expect("run keyval-ctl")
}
