//! The event counters of the nodes' `INFO` (`snapshots_sent`,
//! `compactions`, `torn_tails_cut` and the rest: docs/protocol.md), summed
//! over a run for the report.
//!
//! A counter counts events since its process started, and `run_id` tells
//! one process of a node from the next. So the tally keeps, per node and
//! per `run_id`, the highest value seen of each counter, and a run's total
//! is the sum over every process of every node. Who samples: the monitor,
//! every node every 250 ms; the nemesis, a node right before it kills or
//! stops it (when it answers in time); the scenario, every node once more
//! at the end. What a process did after its last sample and before it
//! died is still missed (a node that crashes on its own, one that does not
//! answer before its kill, an event between the last sample and the
//! kill), so the totals are lower bounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keyval_testkit::LineClient;

use crate::client::field;

/// The counters the tally keeps, as `INFO` names them.
pub const COUNTERS: [&str; 9] = [
    "snapshots_sent",
    "catchups_sent",
    "snapshots_received",
    "catchups_received",
    "rewinds",
    "compactions",
    "torn_tails_cut",
    "torn_tails_suspect",
    "fsync_failures",
];

/// The tally, shared by the threads that sample.
pub type Shared = Arc<Mutex<Tally>>;

/// The highest value of each counter seen per process.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per `(node id, run_id)`: the highest value seen of each counter
    /// the process reported.
    processes: BTreeMap<(u32, String), BTreeMap<&'static str, u64>>,
    /// Samples without a `run_id` (a keyval too old to have one): their
    /// counters cannot be told apart by process, so they are not counted.
    pub without_run_id: u64,
}

impl Tally {
    /// Notes one `INFO` reply of node `node`. Fields that are absent or
    /// not numbers are left out.
    pub fn note(&mut self, node: u32, info: &[(String, String)]) {
        let Some(run_id) = field(info, "run_id").filter(|r| !r.is_empty()) else {
            self.without_run_id += 1;
            return;
        };
        let seen = self
            .processes
            .entry((node, run_id.to_string()))
            .or_default();
        for name in COUNTERS {
            if let Some(value) = field(info, name).and_then(|v| v.parse::<u64>().ok()) {
                let max = seen.entry(name).or_default();
                *max = (*max).max(value);
            }
        }
    }

    /// The sum of counter `name` over every process, or `None` when no
    /// process reported it.
    pub fn total(&self, name: &str) -> Option<u64> {
        self.processes
            .values()
            .filter_map(|seen| seen.get(name))
            .copied()
            .reduce(|a, b| a.saturating_add(b))
    }

    /// Processes sampled at least once.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }
}

/// Locks the tally, even after a thread panicked holding it (it only
/// holds numbers).
pub fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads node `id`'s `INFO` at `addr` once, the connect and each read and
/// write bounded by `timeout`, and notes its counters. Returns whether it
/// answered.
pub fn sample(tally: &Mutex<Tally>, id: u32, addr: SocketAddr, timeout: Duration) -> bool {
    match LineClient::connect_client(addr, timeout).and_then(|mut c| c.info()) {
        Ok(info) => {
            lock(tally).note(id, &info);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keeps_the_highest_per_process_and_sums_over_processes() {
        let mut t = Tally::default();
        t.note(1, &info(&[("run_id", "a"), ("compactions", "2")]));
        t.note(1, &info(&[("run_id", "a"), ("compactions", "5")]));
        // A late reply of the same process never lowers what was seen.
        t.note(1, &info(&[("run_id", "a"), ("compactions", "4")]));
        // The node's next process starts from 0 again.
        t.note(1, &info(&[("run_id", "b"), ("compactions", "1")]));
        // Another node whose process happens to share nothing with it.
        t.note(2, &info(&[("run_id", "a"), ("compactions", "3")]));
        assert_eq!(t.total("compactions"), Some(5 + 1 + 3));
        assert_eq!(t.processes(), 3);
        assert_eq!(t.total("rewinds"), None, "never reported");
    }

    #[test]
    fn skips_what_is_not_a_number_and_samples_without_a_run_id() {
        let mut t = Tally::default();
        t.note(1, &info(&[("run_id", "a"), ("rewinds", "x")]));
        assert_eq!(t.total("rewinds"), None);
        t.note(1, &info(&[("run_id", "a"), ("rewinds", "-1")]));
        assert_eq!(t.total("rewinds"), None);
        t.note(1, &info(&[("rewinds", "7")]));
        t.note(1, &info(&[("run_id", ""), ("rewinds", "7")]));
        assert_eq!(t.without_run_id, 2);
        assert_eq!(t.total("rewinds"), None);
        assert_eq!(t.processes(), 1);
    }

    #[test]
    fn a_node_that_does_not_answer_is_skipped_in_bounded_time() {
        let t = Mutex::new(Tally::default());
        let timeout = Duration::from_millis(200);
        // Gone: the connection is refused.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        assert!(!sample(&t, 1, gone, timeout));
        // Stopped: the kernel accepts the connection, nobody answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let started = std::time::Instant::now();
        let addr = silent.local_addr().expect("addr");
        assert!(!sample(&t, 1, addr, timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(lock(&t).processes(), 0);
    }
}
