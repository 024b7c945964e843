//! The nemesis: at random times it injects one fault, holds it for a random
//! while, and undoes it, until the run's deadline.
//!
//! Each kind of fault is a [`Fault`] variant with a weight in
//! [`Fault::ALL`] and an arm in [`Nemesis::apply`]; adding a kind (for
//! example killing the leader for good and running a failover) is adding
//! those two. Everything a fault does is written to the timeline with the
//! time, so a failure report can show what happened around it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, LEADER_ID};
use crate::history::{Clock, Op};
use crate::proxy::LinkMode;
use crate::rng::Rng;
use crate::workload::Workload;

/// Client id of the nemesis's own writes (the compaction bursts).
pub const BURST_CLIENT: u16 = u16::MAX;
/// Followers the nemesis may add on top of the initial ones.
const MAX_EXTRA_FOLLOWERS: usize = 2;
/// Longest bytes cut off a log tail.
const MAX_TEAR_BYTES: u64 = 64;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 the leader, restart it after a moment.
    KillLeader,
    /// kill -9 a follower, restart it after a moment.
    KillFollower,
    /// kill -9 a follower, cut a few bytes off its log, restart it.
    TornFollower,
    /// SIGSTOP a node, SIGCONT it later.
    Pause,
    /// Close a follower's link and refuse it for a while.
    CutLink,
    /// Freeze a follower's link: open, but no byte moves.
    StallLink,
    /// Delay every chunk on a follower's link.
    SlowLink,
    /// A burst of large overwrites, so the logs compact.
    Compact,
    /// Start one more follower.
    AddFollower,
}

impl Fault {
    /// Every kind with its relative weight.
    pub const ALL: [(Fault, u64); 9] = [
        (Fault::KillLeader, 3),
        (Fault::KillFollower, 3),
        (Fault::TornFollower, 3),
        (Fault::Pause, 4),
        (Fault::CutLink, 3),
        (Fault::StallLink, 3),
        (Fault::SlowLink, 2),
        (Fault::Compact, 3),
        (Fault::AddFollower, 1),
    ];

    /// A weighted random kind.
    fn pick(rng: &mut Rng) -> Fault {
        let total: u64 = Fault::ALL.iter().map(|(_, w)| w).sum();
        let mut roll = rng.below(total);
        for (fault, weight) in Fault::ALL {
            if roll < weight {
                return fault;
            }
            roll -= weight;
        }
        Fault::Pause
    }

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::TornFollower => "torn-follower",
            Fault::Pause => "pause",
            Fault::CutLink => "cut-link",
            Fault::StallLink => "stall-link",
            Fault::SlowLink => "slow-link",
            Fault::Compact => "compact-burst",
            Fault::AddFollower => "add-follower",
        }
    }
}

/// What the nemesis did.
#[derive(Debug, Default)]
pub struct Report {
    /// Faults injected, by kind.
    pub counts: BTreeMap<Fault, u64>,
    /// The writes of the compaction bursts.
    pub ops: Vec<Op>,
    /// One line per action, with its time.
    pub timeline: Vec<String>,
    /// Set when a fault could not be applied or undone (a node that did
    /// not come back, say); the run then fails.
    pub error: Option<String>,
}

/// The fault injector of one run.
pub struct Nemesis {
    rng: Rng,
    cluster: Arc<Mutex<Cluster>>,
    workload: Workload,
    clock: Clock,
    initial_nodes: usize,
    burst_n: u32,
    report: Report,
    /// Set by SIGINT/SIGTERM: stop at once (after undoing the fault).
    interrupted: Arc<AtomicBool>,
}

impl Nemesis {
    pub fn new(
        rng: Rng,
        cluster: Arc<Mutex<Cluster>>,
        workload: Workload,
        interrupted: Arc<AtomicBool>,
    ) -> Nemesis {
        let initial_nodes = lock(&cluster).nodes.len();
        Nemesis {
            rng,
            clock: workload.clock,
            cluster,
            workload,
            initial_nodes,
            burst_n: 0,
            report: Report::default(),
            interrupted,
        }
    }

    /// Injects faults until `deadline`, then returns what it did. The
    /// fault in progress at the deadline is still undone.
    pub fn run(mut self, deadline: Instant) -> Report {
        loop {
            let quiet = self.millis(300, 2500);
            if Instant::now() + quiet >= deadline || !self.nap(quiet) {
                break;
            }
            let fault = Fault::pick(&mut self.rng);
            match self.apply(fault) {
                Ok(true) => *self.report.counts.entry(fault).or_default() += 1,
                Ok(false) => {}
                Err(e) => {
                    self.note(format!("{} failed: {e}", fault.name()));
                    self.report.error = Some(format!("{} failed: {e}", fault.name()));
                    break;
                }
            }
        }
        self.report
    }

    /// Applies one fault, holds it, undoes it. `Ok(false)` when it did not
    /// apply (no follower to add, say).
    fn apply(&mut self, fault: Fault) -> Result<bool, String> {
        match fault {
            Fault::KillLeader => self.kill_and_restart(LEADER_ID, false),
            Fault::KillFollower | Fault::TornFollower => {
                let id = self.pick_follower();
                self.kill_and_restart(id, fault == Fault::TornFollower)
            }
            Fault::Pause => {
                // The leader half of the time: pausing it stalls everyone.
                let id = if self.rng.coin() {
                    LEADER_ID
                } else {
                    self.pick_follower()
                };
                let hold = self.millis(200, 7000);
                lock(&self.cluster).node_mut(id)?.set_paused(true)?;
                self.note(format!("SIGSTOP node {id} for {hold:?}"));
                self.nap(hold);
                lock(&self.cluster).node_mut(id)?.set_paused(false)?;
                self.note(format!("SIGCONT node {id}"));
                Ok(true)
            }
            Fault::CutLink => {
                let hold = self.millis(300, 8000);
                self.hurt_link(LinkMode::Cut, hold)
            }
            Fault::StallLink => {
                let hold = self.millis(300, 8000);
                self.hurt_link(LinkMode::Freeze, hold)
            }
            Fault::SlowLink => {
                let delay = self.millis(5, 150);
                let hold = self.millis(2000, 10000);
                self.hurt_link(LinkMode::Slow(delay), hold)
            }
            Fault::Compact => {
                let count = 200 + self.rng.below(800) as usize;
                self.note(format!("burst of {count} large overwrites"));
                let ops =
                    self.workload
                        .burst(BURST_CLIENT, &mut self.burst_n, count, &mut self.rng);
                self.note(format!("burst done: {} sent", ops.len()));
                self.report.ops.extend(ops);
                Ok(true)
            }
            Fault::AddFollower => {
                let mut c = lock(&self.cluster);
                if c.nodes.len() >= self.initial_nodes + MAX_EXTRA_FOLLOWERS {
                    return Ok(false);
                }
                let id = c.add_follower()?;
                drop(c);
                self.note(format!("started extra follower {id}"));
                Ok(true)
            }
        }
    }

    fn kill_and_restart(&mut self, id: u32, tear: bool) -> Result<bool, String> {
        let down = self.millis(0, 2000);
        lock(&self.cluster).node_mut(id)?.kill();
        self.note(format!("kill -9 node {id}, down for {down:?}"));
        if tear {
            let want = 1 + self.rng.below(MAX_TEAR_BYTES);
            let cut = lock(&self.cluster).node(id)?.tear_tail(want)?;
            self.note(format!("cut {cut} bytes off the log of node {id}"));
        }
        self.nap(down);
        lock(&self.cluster).restart(id)?;
        self.note(format!("restarted node {id}"));
        Ok(true)
    }

    fn hurt_link(&mut self, mode: LinkMode, hold: Duration) -> Result<bool, String> {
        let id = self.pick_follower();
        let set = |c: &Cluster, mode| -> Result<(), String> {
            match &c.node(id)?.proxy {
                Some(p) => {
                    p.set_mode(mode);
                    Ok(())
                }
                None => Err(format!("node {id} has no proxy")),
            }
        };
        set(&lock(&self.cluster), mode)?;
        self.note(format!("link of node {id}: {mode:?} for {hold:?}"));
        self.nap(hold);
        set(&lock(&self.cluster), LinkMode::Pass)?;
        self.note(format!("link of node {id}: healed"));
        Ok(true)
    }

    /// Sleeps `d`, cut short by an interrupt; false if interrupted.
    fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.interrupted.load(Ordering::SeqCst) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(100)));
        }
        false
    }

    fn pick_follower(&mut self) -> u32 {
        let ids = lock(&self.cluster).follower_ids();
        ids[self.rng.below(ids.len() as u64) as usize]
    }

    /// A random duration in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below(hi - lo))
    }

    fn note(&mut self, what: String) {
        let line = format!("{:9.3} {what}", self.clock.now() as f64 / 1e6);
        log::debug!("nemesis: {line}");
        self.report.timeline.push(line);
    }
}

/// Locks the cluster, even after another thread panicked holding it (the
/// processes still need stopping).
pub fn lock(cluster: &Mutex<Cluster>) -> MutexGuard<'_, Cluster> {
    cluster.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_gets_picked() {
        let mut rng = Rng::with_seed(1);
        let mut seen = BTreeMap::new();
        for _ in 0..10_000 {
            *seen.entry(Fault::pick(&mut rng)).or_insert(0u32) += 1;
        }
        assert_eq!(seen.len(), Fault::ALL.len(), "{seen:?}");
    }
}
