//! Shared helpers for the integration tests: start the real `keyval`
//! binary on an ephemeral loopback port with a temp data dir, and talk to it
//! over TCP the way `nc` would.
//!
//! Every wait is bounded and polls; nothing sleeps to synchronise. A
//! [`Node`] kills and reaps its process when dropped.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The secret test clusters share.
pub const SECRET: &str = "test-secret-0123456789";

/// Lines the node wrote to stderr, shared with the thread draining it.
#[derive(Default)]
struct LogLines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running `keyval` process.
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: Arc<LogLines>,
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
        let mut child = command
            .args(&args)
            .arg("--data-dir")
            .arg(dir)
            .env("KEYVAL_SECRET", SECRET)
            .env("KEYVAL_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyval");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(LogLines::default());
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().expect("log lock").push(line);
                sink.changed.notify_all();
            }
        });
        let mut node = Node {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.to_path_buf(),
            log,
            _temp: None,
            args,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = node.find_log("listening on ") {
                let addr = line
                    .rsplit("listening on ")
                    .next()
                    .and_then(|s| s.split(' ').next())
                    .expect("addr");
                node.addr = addr.parse().expect("listening address");
                return Ok(node);
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // Let the log drain before reporting.
                node.wait_log_quiet();
                let log = node.log_text();
                node.child = None;
                return Err((status, log));
            }
            assert!(
                Instant::now() < deadline,
                "keyval did not start listening; log:\n{}",
                node.log_text()
            );
            node.wait_log_change(Duration::from_millis(50));
        }
    }

    /// The whole stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lines.lock().expect("log lock").join("\n")
    }

    /// The first log line containing `needle`.
    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.log
            .lines
            .lock()
            .expect("log lock")
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
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
            self.wait_log_change(Duration::from_millis(100));
        }
    }

    fn wait_log_change(&self, at_most: Duration) {
        let lines = self.log.lines.lock().expect("log lock");
        let n = lines.len();
        let _ = self
            .log
            .changed
            .wait_timeout_while(lines, at_most, |l| l.len() == n);
    }

    fn wait_log_quiet(&self) {
        for _ in 0..10 {
            self.wait_log_change(Duration::from_millis(20));
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
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keyval did not exit; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the same node again (same flags, same data dir, new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut fresh = Node::start_in(&self.data_dir, &args);
        self.child = fresh.child.take();
        self.addr = fresh.addr;
        self.log = Arc::clone(&fresh.log);
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
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
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

/// A line-protocol client with bounded reads.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects without a handshake.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    /// Sends one line (adds `\n`).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one reply line, without its `\n`.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).expect("read reply");
        assert!(n > 0, "connection closed while waiting for a reply");
        assert_eq!(buf.pop(), Some(b'\n'), "reply without newline: {buf:?}");
        String::from_utf8(buf).expect("utf8 reply")
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
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

impl Client {
    /// Reads one reply line like [`Client::line`], but returns `None` when
    /// the connection ends or fails instead of panicking (for tests that
    /// kill the server under a client).
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(n) if n > 0 && buf.last() == Some(&b'\n') => {
                buf.pop();
                Some(String::from_utf8(buf).expect("utf8 reply"))
            }
            _ => None,
        }
    }

    /// Sends a request and returns its reply, or `None` if the connection
    /// broke on the way.
    pub fn try_call(&mut self, line: &str) -> Option<String> {
        self.stream.write_all(format!("{line}\n").as_bytes()).ok()?;
        self.try_line()
    }
}

/// Runs `command` to completion, bounded by [`WAIT`] (killed past it), with
/// stdin closed; returns its status and its stderr.
pub fn run_to_exit(command: &mut Command) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let drain = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, drain.join().expect("stderr drain"))
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
