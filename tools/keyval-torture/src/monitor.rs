//! The monitor: a thread that, while the run lasts, notices nodes that exit
//! on their own, samples every node's resident memory, and reads every
//! node's `INFO`: the replication lag of each follower from the leader,
//! the highest epoch, each time a node says `role leader` with
//! `writes ok` (the checker's fencing evidence: see `checker::Sample`),
//! and the event counters of each node's process, which go to the run's
//! [`tally`](crate::tally).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::checker::Sample;
use keyval_testkit::LineClient;

use crate::client::{field, follower_lag};
use crate::cluster::Cluster;
use crate::history::Clock;
use crate::nemesis::lock;
use crate::tally;

/// Time between samples.
const PERIOD: Duration = Duration::from_millis(250);
/// Time between progress lines.
const PROGRESS: Duration = Duration::from_secs(30);
/// Bound on one INFO exchange (the leader may be paused).
const INFO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the monitor saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Nodes that exited without the nemesis killing them, with the time.
    pub crashes: Vec<String>,
    /// Highest resident memory seen per node id, in bytes.
    pub max_rss: BTreeMap<u32, u64>,
    /// Highest `lag` the leader reported for any follower.
    pub max_lag: u64,
    /// Highest `epoch` any node reported.
    pub max_epoch: u64,
    /// Every time a node said it is a leader taking writes.
    pub leader_samples: Vec<Sample>,
}

/// A running monitor thread.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Report>,
}

impl Monitor {
    /// Starts watching `cluster`; the counters go to `tally`.
    pub fn start(cluster: Arc<Mutex<Cluster>>, clock: Clock, tally: tally::Shared) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("monitor".into())
            .spawn(move || watch(&cluster, clock, &tally, &flag))
            .expect("spawn the monitor thread");
        Monitor { stop, handle }
    }

    /// Stops the thread and returns what it saw.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_else(|_| Report {
            crashes: vec!["the monitor thread panicked".into()],
            ..Report::default()
        })
    }
}

fn watch(
    cluster: &Mutex<Cluster>,
    clock: Clock,
    tally: &Mutex<tally::Tally>,
    stop: &AtomicBool,
) -> Report {
    let mut report = Report::default();
    // One connection per node address (a restart changes the address).
    let mut conns: BTreeMap<SocketAddr, LineClient> = BTreeMap::new();
    let mut next_progress = Instant::now() + PROGRESS;
    while !stop.load(Ordering::SeqCst) {
        let nodes = {
            let mut c = lock(cluster);
            for crash in c.crashed() {
                let line = format!("{:.3} s: {crash}", clock.now() as f64 / 1e6);
                log::error!("{line}");
                report.crashes.push(line);
            }
            for node in &c.nodes {
                if let Some(rss) = node
                    .pid()
                    .and_then(|pid| keyval_testkit::rss_bytes(pid).ok())
                {
                    let max = report.max_rss.entry(node.id).or_default();
                    *max = (*max).max(rss);
                }
            }
            c.running()
        };
        conns.retain(|addr, _| nodes.iter().any(|(_, a)| a == addr));
        for (id, addr) in nodes {
            sample(&mut report, &mut conns, tally, id, addr, clock);
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS;
            log::info!(
                "{:.0} s: epoch {}, max lag so far {}",
                clock.now() as f64 / 1e6,
                report.max_epoch,
                report.max_lag
            );
        }
        thread::sleep(PERIOD);
    }
    report
}

/// Reads node `id`'s `INFO` once and notes what matters.
fn sample(
    report: &mut Report,
    conns: &mut BTreeMap<SocketAddr, LineClient>,
    tally: &Mutex<tally::Tally>,
    id: u32,
    addr: SocketAddr,
    clock: Clock,
) {
    let conn = match conns.entry(addr) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => match LineClient::connect_client(addr, INFO_TIMEOUT) {
            Ok(c) => e.insert(c),
            Err(_) => return,
        },
    };
    let invoke = clock.now();
    let info = match conn.info() {
        Ok(info) => info,
        Err(_) => {
            conns.remove(&addr);
            return;
        }
    };
    let complete = clock.now();
    tally::lock(tally).note(id, &info);
    let epoch = field(&info, "epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    report.max_epoch = report.max_epoch.max(epoch);
    if field(&info, "role") != Some("leader") {
        return;
    }
    for (k, v) in &info {
        if k.starts_with("follower_") {
            if let Some(lag) = follower_lag(v) {
                report.max_lag = report.max_lag.max(lag);
            }
        }
    }
    if field(&info, "writes") == Some("ok") {
        // The node's own word on who it is, over the harness's.
        let node = field(&info, "id").and_then(|n| n.parse().ok());
        report.leader_samples.push(Sample {
            node: node.unwrap_or(id),
            epoch,
            invoke,
            complete,
        });
    }
}
