//! The keyval processes of a run: one leader and its followers, each with
//! its own data directory and log file under the run directory, and each
//! behind its own [`Proxy`] so its link to the leader can be hurt.
//!
//! Which node leads changes with failovers, so every node (the first
//! leader too) gets a proxy, and every proxy points at whichever node leads
//! now. A follower always dials its own proxy: the harness starts it with
//! the proxy's address, and after a failover tells it `FOLLOW` with that
//! address, so a leader that restarts on a new port is still found.
//!
//! The cluster starts, kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and
//! restarts nodes, and notices a node that exited without being told to.
//! Every process it starts it also kills and reaps: on [`Cluster::shutdown`],
//! and on drop (including while a panic unwinds), the kit's [`ChildGuard`]
//! being the one that holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::{parse_listening, ChildGuard};

use crate::proxy::{LinkMode, Proxy};
use crate::workload::LeaderAddr;

/// How long a node may take to log `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The secret every node of a run shares.
const SECRET: &str = "torture-secret-0123456789";
/// Id of the first leader (docs/protocol.md: 1 is the first leader's).
pub const LEADER_ID: u32 = 1;

/// How the nodes are configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// `--sync-followers` of every node (any may come to lead).
    pub sync_followers: u32,
    /// `--sync-timeout-ms` of every node.
    pub sync_timeout_ms: u64,
    /// `--compact-min-bytes` of every node (small, so compaction happens).
    pub compact_min_bytes: u64,
}

impl Settings {
    /// The secret of the run, for `keyval-ctl`.
    pub fn secret() -> &'static str {
        SECRET
    }
}

/// One keyval process (running or not) and what it needs to restart.
pub struct NodeProc {
    pub id: u32,
    pub dir: PathBuf,
    log_path: PathBuf,
    /// Its log file: named after the role it first started with, and kept
    /// through role changes.
    wal: PathBuf,
    args: Vec<String>,
    /// The process while it runs (killed and reaped when the guard drops).
    child: ChildGuard,
    addr: Option<SocketAddr>,
    paused: bool,
    /// Its link to the leader (used while it follows).
    pub proxy: Proxy,
    /// How many times it was started.
    pub starts: u32,
}

impl NodeProc {
    fn new(
        settings: &Settings,
        id: u32,
        role_args: Vec<String>,
        proxy: Proxy,
    ) -> Result<NodeProc, String> {
        let dir = settings.dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut args = role_args;
        // Every node gets the leader's settings: any may be promoted, and
        // a promoted node acknowledges by its own --sync-followers.
        args.extend(
            [
                "--sync-followers",
                &settings.sync_followers.to_string(),
                "--sync-timeout-ms",
                &settings.sync_timeout_ms.to_string(),
                "--port",
                "0",
                "--compact-min-bytes",
                &settings.compact_min_bytes.to_string(),
                "--compact-ratio",
                "2",
                "--log-level",
                "info",
                "--data-dir",
            ]
            .map(String::from),
        );
        args.push(dir.display().to_string());
        let wal = if id == LEADER_ID {
            dir.join("leader.log")
        } else {
            dir.join(format!("follower_{id}.log"))
        };
        Ok(NodeProc {
            id,
            log_path: settings.dir.join(format!("node-{id}.log")),
            dir,
            wal,
            args,
            child: ChildGuard::default(),
            addr: None,
            paused: false,
            proxy,
            starts: 0,
        })
    }

    /// `node <id>`.
    pub fn name(&self) -> String {
        format!("node {}", self.id)
    }

    /// The node's write-ahead log file.
    pub fn wal_path(&self) -> &Path {
        &self.wal
    }

    /// Where its stderr goes (all incarnations, one after the other).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its client address while running.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.filter(|_| self.child.is_running())
    }

    /// Its process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_running()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the process and waits until it logs its listening address.
    fn start(&mut self, bin: &Path) -> Result<SocketAddr, String> {
        if self.child.is_running() {
            return Err(format!("{} is already running", self.name()));
        }
        self.starts += 1;
        let ctx = |e: std::io::Error| format!("{}: {}: {e}", self.name(), self.log_path.display());
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(ctx)?;
        writeln!(
            log,
            "=== torture: start #{} of {} ===",
            self.starts,
            self.name()
        )
        .map_err(ctx)?;
        let from = log.metadata().map_err(ctx)?.len();
        self.child = ChildGuard::spawn(
            Command::new(bin)
                .args(&self.args)
                .env("KEYVAL_SECRET", SECRET)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(ctx)?)
                .stderr(log)
                // Its own process group: a Ctrl-C meant for the harness must
                // not stop the nodes behind its back (the harness kills them).
                .process_group(0),
        )
        .map_err(|e| format!("cannot start {} ({}): {e}", self.name(), bin.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = read_from(&self.log_path, from);
            if let Some(addr) = text.lines().find_map(parse_listening) {
                self.addr = Some(addr);
                return Ok(addr);
            }
            if let Some(why) = self.check_exit() {
                return Err(format!("{why} while starting; its log:\n{text}"));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{} did not log 'listening on' within {START_TIMEOUT:?}; its log:\n{text}",
                    self.name()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs and reaps the process (a stopped one too).
    pub fn kill(&mut self) {
        self.child.kill();
        self.paused = false;
    }

    /// Sends SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn set_paused(&mut self, paused: bool) -> Result<(), String> {
        let signal = if paused { "STOP" } else { "CONT" };
        self.child
            .signal(signal)
            .map_err(|e| format!("{}: {e}", self.name()))?;
        self.paused = paused;
        Ok(())
    }

    /// If the process has exited on its own, reaps it and says how.
    pub fn check_exit(&mut self) -> Option<String> {
        let status = self.child.try_exit().ok()??;
        self.paused = false;
        Some(format!("{} exited on its own ({status})", self.name()))
    }

    /// Cuts `bytes` off the end of its log (never into the header); only
    /// while it is not running. Returns how many bytes went.
    pub fn tear_tail(&self, bytes: u64) -> Result<u64, String> {
        if self.is_running() {
            return Err(format!("{} is running; stop it first", self.name()));
        }
        let path = self.wal_path();
        let ctx = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = OpenOptions::new().write(true).open(path).map_err(ctx)?;
        let len = file.metadata().map_err(ctx)?.len();
        let cut = bytes.min(len.saturating_sub(HEADER_BYTES));
        file.set_len(len - cut).map_err(ctx)?;
        Ok(cut)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = read_from(&self.log_path, 0);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The log file header size (docs/durability.md, "Log format"); a torn tail never
/// reaches into it.
const HEADER_BYTES: u64 = 48;

/// The text of `path` from byte `from` on (empty if unreadable).
pub fn read_from(path: &Path, from: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The leader, its followers, and the address clients should use.
pub struct Cluster {
    settings: Settings,
    pub nodes: Vec<NodeProc>,
    /// Nodes lost for good (killed, data deleted); kept for their logs.
    pub retired: Vec<NodeProc>,
    /// The id of the node that leads now.
    leader: u32,
    leader_addr: LeaderAddr,
}

impl Cluster {
    /// Starts a leader and `followers` followers and waits until each
    /// listens.
    ///
    /// # Errors
    /// A message naming the node that did not start, with its log.
    pub fn start(settings: Settings, followers: u32) -> Result<Cluster, String> {
        let leader_args = ["--role", "leader"].map(String::from).to_vec();
        // Its proxy learns the leader's address once it listens.
        let proxy = new_proxy("127.0.0.1:9".parse().map_err(|e| format!("{e}"))?)?;
        let mut leader = NodeProc::new(&settings, LEADER_ID, leader_args, proxy)?;
        let addr = leader.start(&settings.bin)?;
        leader.proxy.set_upstream(addr);
        let mut cluster = Cluster {
            settings,
            nodes: vec![leader],
            retired: Vec::new(),
            leader: LEADER_ID,
            leader_addr: Arc::new(Mutex::new(addr)),
        };
        for _ in 0..followers {
            cluster.add_follower()?;
        }
        Ok(cluster)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// The handle the workload reads the leader's address from.
    pub fn leader_addr(&self) -> LeaderAddr {
        Arc::clone(&self.leader_addr)
    }

    /// Starts one more follower (the next free id) behind a new proxy.
    ///
    /// # Errors
    /// When it does not start.
    pub fn add_follower(&mut self) -> Result<u32, String> {
        let id = self
            .nodes
            .iter()
            .chain(&self.retired)
            .map(|n| n.id)
            .max()
            .unwrap_or(LEADER_ID)
            + 1;
        let proxy = new_proxy(crate::workload::current(&self.leader_addr))?;
        let args = [
            "--role",
            "follower",
            "--id",
            &id.to_string(),
            "--leader_host",
            "127.0.0.1",
            "--leader_port",
            &proxy.addr().port().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut node = NodeProc::new(&self.settings, id, args, proxy)?;
        node.start(&self.settings.bin)?;
        self.nodes.push(node);
        Ok(id)
    }

    /// Index of the node with `id`.
    fn index(&self, id: u32) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| format!("no node {id}"))
    }

    /// The node with `id`.
    pub fn node(&self, id: u32) -> Result<&NodeProc, String> {
        Ok(&self.nodes[self.index(id)?])
    }

    /// The node with `id`, mutably.
    pub fn node_mut(&mut self, id: u32) -> Result<&mut NodeProc, String> {
        let i = self.index(id)?;
        Ok(&mut self.nodes[i])
    }

    /// Ids of the followers.
    pub fn follower_ids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.id != self.leader)
            .map(|n| n.id)
            .collect()
    }

    /// The id of the node that leads now.
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// Makes `id` the leader the clients and every proxy use.
    ///
    /// # Errors
    /// When it is not running.
    pub fn set_leader(&mut self, id: u32) -> Result<(), String> {
        let node = self.node(id)?;
        let addr = node
            .addr()
            .ok_or_else(|| format!("{} is not running", node.name()))?;
        self.leader = id;
        self.point_at(addr);
        Ok(())
    }

    /// Points the clients and every proxy at the leader's address.
    fn point_at(&self, addr: SocketAddr) {
        if let Ok(mut a) = self.leader_addr.lock() {
            *a = addr;
        }
        for node in &self.nodes {
            node.proxy.set_upstream(addr);
        }
    }

    /// Kills node `id`, deletes its data directory, and moves it to
    /// [`Cluster::retired`]: it is lost for good.
    ///
    /// # Errors
    /// When there is no such node, or its data cannot be deleted.
    pub fn lose(&mut self, id: u32) -> Result<(), String> {
        let i = self.index(id)?;
        let mut node = self.nodes.remove(i);
        node.kill();
        let removed = std::fs::remove_dir_all(&node.dir)
            .map_err(|e| format!("cannot delete {}: {e}", node.dir.display()));
        self.retired.push(node);
        removed
    }

    /// `(id, address)` of every running node.
    pub fn running(&self) -> Vec<(u32, SocketAddr)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id, n.addr()?)))
            .collect()
    }

    /// (Re)starts node `id`; a leader's new address goes to the clients and
    /// to every proxy.
    ///
    /// # Errors
    /// When it does not start.
    pub fn restart(&mut self, id: u32) -> Result<(), String> {
        let bin = self.settings.bin.clone();
        let addr = self.node_mut(id)?.start(&bin)?;
        if id == self.leader {
            self.point_at(addr);
        }
        Ok(())
    }

    /// Undoes every fault: resumes paused nodes, restarts stopped ones,
    /// and lets every link pass.
    ///
    /// # Errors
    /// When a node does not restart.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            if self.nodes[i].is_paused() {
                self.nodes[i].set_paused(false)?;
            }
            self.nodes[i].proxy.set_mode(LinkMode::Pass);
            if !self.nodes[i].is_running() {
                self.restart(id)?;
            }
        }
        Ok(())
    }

    /// Nodes that exited without being told to since the last call (each
    /// is reaped, so it is reported once).
    pub fn crashed(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(NodeProc::check_exit)
            .collect()
    }

    /// Kills and reaps every node.
    pub fn shutdown(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A proxy towards `upstream`.
fn new_proxy(upstream: SocketAddr) -> Result<Proxy, String> {
    Proxy::start(upstream).map_err(|e| format!("cannot start a proxy: {e}"))
}
