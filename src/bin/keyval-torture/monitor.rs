//! The monitor: a thread that, while the run lasts, notices nodes that exit
//! on their own, samples every node's resident memory, and reads the
//! leader's `INFO` for the replication lag of each follower.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{follower_lag, Client};
use crate::cluster::Cluster;
use crate::history::Clock;
use crate::nemesis::lock;
use crate::workload::{current, LeaderAddr};

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
}

/// A running monitor thread.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Report>,
}

impl Monitor {
    /// Starts watching `cluster`.
    pub fn start(cluster: Arc<Mutex<Cluster>>, leader: LeaderAddr, clock: Clock) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("monitor".into())
            .spawn(move || watch(&cluster, &leader, clock, &flag))
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

fn watch(cluster: &Mutex<Cluster>, leader: &LeaderAddr, clock: Clock, stop: &AtomicBool) -> Report {
    let mut report = Report::default();
    let mut conn: Option<Client> = None;
    let mut next_progress = Instant::now() + PROGRESS;
    while !stop.load(Ordering::SeqCst) {
        {
            let mut c = lock(cluster);
            for crash in c.crashed() {
                let line = format!("{:.3} s: {crash}", clock.now() as f64 / 1e6);
                log::error!("{line}");
                report.crashes.push(line);
            }
            for node in &c.nodes {
                if let Some(rss) = node.pid().and_then(rss_bytes) {
                    let max = report.max_rss.entry(node.id).or_default();
                    *max = (*max).max(rss);
                }
            }
        }
        if conn.is_none() {
            conn = Client::connect(current(leader), INFO_TIMEOUT).ok();
        }
        if let Some(c) = conn.as_mut() {
            match c.info() {
                Ok(info) => {
                    for (k, v) in &info {
                        if k.starts_with("follower_") {
                            if let Some(lag) = follower_lag(v) {
                                report.max_lag = report.max_lag.max(lag);
                            }
                        }
                    }
                    if Instant::now() >= next_progress {
                        next_progress += PROGRESS;
                        let seq = crate::client::field(&info, "seq").unwrap_or("?");
                        log::info!(
                            "{:.0} s: leader at seq {seq}, max lag so far {}",
                            clock.now() as f64 / 1e6,
                            report.max_lag
                        );
                    }
                }
                Err(_) => conn = None,
            }
        }
        thread::sleep(PERIOD);
    }
    report
}

/// Resident memory of `pid` in bytes, from `/proc/<pid>/statm` (pages).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let rss = rss_bytes(std::process::id()).expect("statm");
        assert!(rss > 100 * 1024, "{rss}");
    }
}
