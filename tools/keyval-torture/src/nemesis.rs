//! The nemesis: at random times it injects one fault, holds it for a random
//! while, and undoes it, until the run's deadline.
//!
//! Each kind of fault is a [`Fault`] variant with its weights in
//! [`Fault::weight`] (one per [`Profile`]) and an arm in
//! [`Nemesis::inject`]. Everything a fault does is written to the timeline
//! with the time, so a failure report can show what happened around it.
//!
//! Right before it kills or stops (SIGSTOP) a node, the nemesis reads the
//! node's `INFO` once more for the [`tally`](crate::tally) of event
//! counters, so what the process did since the monitor's last sample is
//! not lost with it (bounded by [`LAST_SAMPLE_TIMEOUT`]; a node that does
//! not answer in time is killed anyway).
//!
//! The three failovers (`lose-leader`, `switchover`, `pause-failover`) act
//! on the whole cluster, as an operator would: they wait until no other
//! fault is in force and hold the others off while they run `keyval-ctl
//! failover` (see `Nemesis::failover`). Then the harness's leader is the
//! promoted node: clients and every proxy point at it, and each other node
//! is told to `FOLLOW` it through its own proxy.
//!
//! The read-heavy profile favours what makes a node answer reads while
//! another leads or while its writes are not yet safe: kill -9 and SIGSTOP
//! of the leader, failovers of every kind, and cut links.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use fastrand::Rng;

use crate::checker::{Failover, FailoverKind};
use crate::cluster::Cluster;
use crate::ctl::Ctl;
use crate::history::{Clock, Op};
use crate::proxy::LinkMode;
use crate::tally;
use crate::workload::Workload;

mod failover;

/// Client id of the first lane's own writes (the compaction bursts); the
/// next lanes count down from it.
pub const BURST_CLIENT: u16 = u16::MAX;
/// Followers the nemesis may add on top of the initial ones.
const MAX_EXTRA_FOLLOWERS: usize = 1;
/// Longest cut off a log tail: a torn last record.
const MAX_TEAR_BYTES: u64 = 64;
/// Longest deep cut (a quarter of the tears): several records lost, which
/// right after a compaction or a snapshot reaches the snapshot part.
const MAX_DEEP_TEAR_BYTES: u64 = 8192;
/// Longest a failover waits for the faults in force to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a `lose-leader` waits for every follower to reach the leader's
/// seq before it kills the leader (see [`Nemesis::lose_leader`]).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the followers of a lost leader take to stop moving.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each request the nemesis itself sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the nemesis polls while it waits.
const POLL: Duration = Duration::from_millis(100);
/// Bound on the connect and each read and write of the `INFO` read right
/// before a node is killed or stopped.
const LAST_SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection that carried flipped bits may stay open: longer
/// than the longest pause (7 s) plus the silence after which a link is
/// dropped (5 s).
const TAMPERED_CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 the leader, restart it after a moment.
    KillLeader,
    /// kill -9 a follower, restart it after a moment.
    KillFollower,
    /// kill -9 a follower, cut a few bytes off its log, restart it behind
    /// a cut link for a moment (it serves what it replayed), heal the link.
    TornFollower,
    /// SIGSTOP a node, SIGCONT it later.
    Pause,
    /// Close a follower's link and refuse it for a while.
    CutLink,
    /// Freeze a follower's link: open, but no byte moves.
    StallLink,
    /// Delay every chunk on a follower's link.
    SlowLink,
    /// Flip bits on a follower's link, both ways: the link must drop,
    /// and no value may change.
    TamperLink,
    /// A burst of large overwrites, so the logs compact.
    Compact,
    /// Start one more follower.
    AddFollower,
    /// kill -9 the leader and delete its data; `keyval-ctl failover`; a
    /// new empty node joins as a follower later.
    LoseLeader,
    /// Planned switchover: `keyval-ctl failover` with the leader alive.
    Switchover,
    /// The leader hangs (SIGSTOP); `keyval-ctl failover` over the
    /// followers; it wakes up believing it still leads, and is re-pointed
    /// only seconds later. Sync mode only: in async mode it would take
    /// writes meanwhile that the re-pointing drops.
    PauseFailover,
}

/// Which faults run, and the weights they are picked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Whether the failover faults run at all (when picked otherwise,
    /// they are skipped).
    pub failovers: bool,
    /// Favour the leader's faults and failovers.
    pub read_heavy: bool,
    /// `--sync-followers` of 1 or more.
    pub sync: bool,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 13] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::TornFollower,
        Fault::Pause,
        Fault::CutLink,
        Fault::StallLink,
        Fault::SlowLink,
        Fault::TamperLink,
        Fault::Compact,
        Fault::AddFollower,
        Fault::LoseLeader,
        Fault::Switchover,
        Fault::PauseFailover,
    ];

    /// Its relative weight under `profile` (0: never picked).
    pub fn weight(self, profile: Profile) -> u64 {
        let (default, read_heavy) = match self {
            Fault::KillLeader => (3, 4),
            Fault::KillFollower => (3, 1),
            Fault::TornFollower => (3, 1),
            Fault::Pause => (4, 4),
            Fault::CutLink => (3, 3),
            Fault::StallLink => (3, 1),
            Fault::SlowLink => (2, 1),
            Fault::TamperLink => (2, 1),
            Fault::Compact => (3, 1),
            Fault::AddFollower => (1, 1),
            Fault::LoseLeader => (1, 3),
            Fault::Switchover => (1, 3),
            Fault::PauseFailover if !profile.sync => (0, 0),
            Fault::PauseFailover => (1, 3),
        };
        if profile.read_heavy {
            read_heavy
        } else {
            default
        }
    }

    /// Whether it is a failover (the cluster to itself while it runs).
    pub fn is_failover(self) -> bool {
        matches!(
            self,
            Fault::LoseLeader | Fault::Switchover | Fault::PauseFailover
        )
    }

    /// A weighted random kind.
    fn pick(rng: &mut Rng, profile: Profile) -> Fault {
        let total: u64 = Fault::ALL.iter().map(|f| f.weight(profile)).sum();
        let mut roll = rng.u64(..total);
        for fault in Fault::ALL {
            let weight = fault.weight(profile);
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
            Fault::TamperLink => "tamper-link",
            Fault::Compact => "compact-burst",
            Fault::AddFollower => "add-follower",
            Fault::LoseLeader => "lose-leader",
            Fault::Switchover => "switchover",
            Fault::PauseFailover => "pause-failover",
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
    /// The failovers, in order.
    pub failovers: Vec<Failover>,
    /// One line per action, with its time.
    pub timeline: Vec<String>,
    /// Set when a fault could not be applied or undone (a node that did
    /// not come back, say); the run then fails.
    pub error: Option<String>,
}

/// State the lanes share.
struct Shared {
    cluster: Arc<Mutex<Cluster>>,
    workload: Workload,
    initial_nodes: usize,
    /// Nodes some lane is hurting now; no other lane touches them.
    busy: Mutex<BTreeSet<u32>>,
    /// Set by SIGINT/SIGTERM, or when a lane fails: stop at once (after
    /// undoing the fault in progress).
    stop: Arc<AtomicBool>,
    gate: Mutex<Gate>,
    ctl: Ctl,
    profile: Profile,
    /// The event counters of the nodes' processes.
    tally: tally::Shared,
}

/// Which faults are in force, so a failover can have the cluster to
/// itself.
#[derive(Debug, Default)]
struct Gate {
    /// Faults in force (a failover counts until its lost node is replaced).
    running: u32,
    /// The lane whose failover waits for `running` to drop to 0 or runs:
    /// no other fault starts.
    exclusive: Option<u16>,
    /// Lost nodes whose replacement has not joined yet (they still count
    /// towards the cluster's size for `add-follower`).
    replacing: usize,
}

/// The fault injector of one run: one or more lanes, each a loop that
/// injects a fault, holds it, undoes it, and rests. With two lanes faults
/// overlap, on different nodes.
pub struct Nemesis {
    rng: Rng,
    lane: u16,
    shared: Arc<Shared>,
    clock: Clock,
    burst_n: u32,
    report: Report,
}

impl Nemesis {
    /// A nemesis for `cluster`; `stop` ends it early (the signal flag).
    /// The last samples of the nodes it kills or stops go to `tally`.
    pub fn new(
        rng: Rng,
        cluster: Arc<Mutex<Cluster>>,
        workload: Workload,
        stop: Arc<AtomicBool>,
        ctl: Ctl,
        profile: Profile,
        tally: tally::Shared,
    ) -> Nemesis {
        let initial_nodes = lock(&cluster).nodes.len();
        Nemesis {
            rng,
            lane: 0,
            clock: workload.clock,
            shared: Arc::new(Shared {
                cluster,
                workload,
                initial_nodes,
                busy: Mutex::new(BTreeSet::new()),
                stop,
                gate: Mutex::new(Gate::default()),
                ctl,
                profile,
                tally,
            }),
            burst_n: 0,
            report: Report::default(),
        }
    }

    /// Injects faults in `lanes` concurrent lanes until `deadline`, then
    /// returns what they did. Faults in progress at the deadline are still
    /// undone.
    pub fn run(mut self, deadline: Instant, lanes: u16) -> Report {
        let others: Vec<_> = (1..lanes)
            .map(|lane| {
                let other = Nemesis {
                    rng: self.rng.fork(),
                    lane,
                    shared: Arc::clone(&self.shared),
                    clock: self.clock,
                    burst_n: 0,
                    report: Report::default(),
                };
                thread::Builder::new()
                    .name(format!("nemesis-{lane}"))
                    .spawn(move || other.run_lane(deadline))
                    .expect("spawn a nemesis lane")
            })
            .collect();
        let mut report = self.run_lane(deadline);
        for lane in others {
            match lane.join() {
                Ok(r) => {
                    for (fault, n) in r.counts {
                        *report.counts.entry(fault).or_default() += n;
                    }
                    report.ops.extend(r.ops);
                    report.failovers.extend(r.failovers);
                    report.timeline.extend(r.timeline);
                    report.error = report.error.or(r.error);
                }
                Err(_) => report.error = Some("a nemesis lane panicked".into()),
            }
        }
        report.timeline.sort();
        report.failovers.sort_by_key(|f| f.start);
        report
    }

    fn run_lane(mut self, deadline: Instant) -> Report {
        loop {
            let quiet = self.millis(300, 2500);
            if Instant::now() + quiet >= deadline || !self.nap(quiet) {
                break;
            }
            let fault = Fault::pick(&mut self.rng, self.shared.profile);
            let outcome = if !fault.is_failover() {
                self.gated(fault)
            } else if self.shared.profile.failovers {
                self.failover(fault)
            } else {
                Ok(false)
            };
            match outcome {
                Ok(true) => *self.report.counts.entry(fault).or_default() += 1,
                Ok(false) => {}
                Err(e) => {
                    self.note(format!("{} failed: {e}", fault.name()));
                    self.report.error = Some(format!("{} failed: {e}", fault.name()));
                    self.shared.stop.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        self.report
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.shared.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a fault unless a failover has the cluster; `Ok(false)` then.
    fn gated(&mut self, fault: Fault) -> Result<bool, String> {
        {
            let mut gate = self.gate();
            if gate.exclusive.is_some() {
                return Ok(false);
            }
            gate.running += 1;
        }
        let result = self.apply(fault);
        self.gate().running -= 1;
        result
    }

    /// Reserves the node a fault targets, applies the fault, holds it,
    /// undoes it. `Ok(false)` when it did not apply (its target is busy in
    /// another lane, or there is no follower left to add).
    fn apply(&mut self, fault: Fault) -> Result<bool, String> {
        let leader = lock(&self.shared.cluster).leader();
        let target = match fault {
            Fault::KillLeader => Some(leader),
            // The leader half of the time (three times in four when read
            // heavy): pausing it stalls everyone.
            Fault::Pause
                if self.rng.u32(..4) < if self.shared.profile.read_heavy { 3 } else { 2 } =>
            {
                Some(leader)
            }
            Fault::Pause
            | Fault::KillFollower
            | Fault::TornFollower
            | Fault::CutLink
            | Fault::StallLink
            | Fault::SlowLink
            | Fault::TamperLink => Some(self.pick_follower()),
            Fault::Compact
            | Fault::AddFollower
            | Fault::LoseLeader
            | Fault::Switchover
            | Fault::PauseFailover => None,
        };
        if let Some(id) = target {
            if !self.busy().insert(id) {
                return Ok(false);
            }
        }
        let result = self.inject(fault, target.unwrap_or(leader));
        if let Some(id) = target {
            self.busy().remove(&id);
        }
        result
    }

    fn inject(&mut self, fault: Fault, id: u32) -> Result<bool, String> {
        match fault {
            Fault::KillLeader | Fault::KillFollower => self.kill_and_restart(id, false),
            Fault::TornFollower => self.kill_and_restart(id, true),
            Fault::Pause => {
                let hold = self.millis(200, 7000);
                self.last_sample(id);
                lock(&self.shared.cluster).node_mut(id)?.set_paused(true)?;
                self.note(format!("SIGSTOP node {id} for {hold:?}"));
                self.nap(hold);
                lock(&self.shared.cluster).node_mut(id)?.set_paused(false)?;
                self.note(format!("SIGCONT node {id}"));
                Ok(true)
            }
            Fault::CutLink => {
                let hold = self.millis(300, 8000);
                self.hurt_link(id, LinkMode::Cut, hold)
            }
            Fault::StallLink => {
                let hold = self.millis(300, 8000);
                self.hurt_link(id, LinkMode::Freeze, hold)
            }
            Fault::SlowLink => {
                let delay = self.millis(5, 150);
                let hold = self.millis(2000, 10000);
                self.hurt_link(id, LinkMode::Slow(delay), hold)
            }
            Fault::TamperLink => {
                let hold = self.millis(300, 3000);
                self.hurt_link(id, LinkMode::Tamper, hold)
            }
            Fault::Compact => {
                let count = self.rng.usize(200..1000);
                self.note(format!("burst of {count} large overwrites"));
                let client = BURST_CLIENT - self.lane;
                let ops =
                    self.shared
                        .workload
                        .burst(client, &mut self.burst_n, count, &mut self.rng);
                self.note(format!("burst done: {} sent", ops.len()));
                self.report.ops.extend(ops);
                Ok(true)
            }
            Fault::AddFollower => {
                let replacing = self.gate().replacing;
                let mut c = lock(&self.shared.cluster);
                if c.nodes.len() + replacing >= self.shared.initial_nodes + MAX_EXTRA_FOLLOWERS {
                    return Ok(false);
                }
                let id = c.add_follower()?;
                drop(c);
                self.note(format!("started extra follower {id}"));
                Ok(true)
            }
            Fault::LoseLeader | Fault::Switchover | Fault::PauseFailover => Ok(false),
        }
    }

    fn busy(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.shared.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kill_and_restart(&mut self, id: u32, tear: bool) -> Result<bool, String> {
        let down = self.millis(0, 2000);
        self.last_sample(id);
        lock(&self.shared.cluster).node_mut(id)?.kill();
        self.note(format!("kill -9 node {id}, down for {down:?}"));
        if tear {
            let max = if self.rng.u32(..4) == 0 {
                MAX_DEEP_TEAR_BYTES
            } else {
                MAX_TEAR_BYTES
            };
            let want = self.rng.u64(1..=max);
            let cut = lock(&self.shared.cluster).node(id)?.tear_tail(want)?;
            self.note(format!("cut {cut} bytes off the log of node {id}"));
        }
        self.nap(down);
        if !tear {
            lock(&self.shared.cluster).restart(id)?;
            self.note(format!("restarted node {id}"));
            return Ok(true);
        }
        // A torn follower restarts behind a cut link for a moment, so what
        // it replayed from its log is what it serves until it catches up.
        let hold = self.millis(100, 1000);
        let set = |c: &Cluster, mode| -> Result<(), String> {
            c.node(id)?.proxy.set_mode(mode);
            Ok(())
        };
        set(&lock(&self.shared.cluster), LinkMode::Cut)?;
        let restarted = lock(&self.shared.cluster).restart(id);
        if restarted.is_ok() {
            self.note(format!(
                "restarted node {id} behind a cut link for {hold:?}"
            ));
            self.nap(hold);
        }
        set(&lock(&self.shared.cluster), LinkMode::Pass)?;
        restarted?;
        self.note(format!("link of node {id}: healed"));
        Ok(true)
    }

    /// Reads node `id`'s `INFO` once more for the tally, right before it
    /// is killed or stopped: what its process did since the monitor's
    /// last sample would die with it. Bounded; a node that is not running
    /// or does not answer is skipped (and the timeline says so).
    fn last_sample(&mut self, id: u32) {
        let addr = lock(&self.shared.cluster)
            .node(id)
            .ok()
            .and_then(|n| n.addr());
        let answered =
            addr.is_some_and(|a| tally::sample(&self.shared.tally, id, a, LAST_SAMPLE_TIMEOUT));
        if !answered {
            self.note(format!(
                "node {id} gave no INFO before the fault: its last counters may be missed"
            ));
        }
    }

    fn hurt_link(&mut self, id: u32, mode: LinkMode, hold: Duration) -> Result<bool, String> {
        let set = |c: &Cluster, mode| -> Result<(), String> {
            c.node(id)?.proxy.set_mode(mode);
            Ok(())
        };
        let flips = |c: &Cluster| c.node(id).map(|n| n.proxy.flips());
        let before = flips(&lock(&self.shared.cluster))?;
        set(&lock(&self.shared.cluster), mode)?;
        self.note(format!("link of node {id}: {mode:?} for {hold:?}"));
        self.nap(hold);
        set(&lock(&self.shared.cluster), LinkMode::Pass)?;
        let flipped = flips(&lock(&self.shared.cluster))? - before;
        self.note(if flipped > 0 {
            format!("link of node {id}: healed ({flipped} chunks tampered with on the way)")
        } else {
            format!("link of node {id}: healed")
        });
        if flipped > 0 {
            self.tampered_links_close(id)?;
        }
        Ok(true)
    }

    /// Every connection that carried a flipped bit must be dropped by the
    /// node that read it (a bad session MAC), within a bound that covers a
    /// paused peer and a silent link.
    fn tampered_links_close(&self, id: u32) -> Result<(), String> {
        let deadline = Instant::now() + TAMPERED_CLOSE_WITHIN;
        loop {
            let open = lock(&self.shared.cluster).node(id)?.proxy.tampered_open();
            if open == 0 || self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{open} connection(s) of node {id} carried tampered bytes and are still open \
                     {TAMPERED_CLOSE_WITHIN:?} later: a node accepted tampered bytes"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sleeps `d`, cut short by an interrupt; false if interrupted.
    fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.shared.stop.load(Ordering::SeqCst) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(100)));
        }
        false
    }

    fn pick_follower(&mut self) -> u32 {
        let ids = lock(&self.shared.cluster).follower_ids();
        ids[self.rng.usize(..ids.len())]
    }

    /// A random duration in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.u64(lo..hi))
    }

    fn note(&mut self, what: String) {
        let line = format!(
            "{:9.3} [lane {}] {what}",
            self.clock.now() as f64 / 1e6,
            self.lane
        );
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

    const DEFAULT: Profile = Profile {
        failovers: true,
        read_heavy: false,
        sync: true,
    };

    #[test]
    fn every_kind_gets_picked() {
        for read_heavy in [false, true] {
            let profile = Profile {
                read_heavy,
                ..DEFAULT
            };
            let mut rng = Rng::with_seed(1);
            let mut seen = BTreeMap::new();
            for _ in 0..10_000 {
                *seen.entry(Fault::pick(&mut rng, profile)).or_insert(0u32) += 1;
            }
            assert_eq!(seen.len(), Fault::ALL.len(), "{seen:?}");
        }
    }

    #[test]
    fn pause_failover_is_sync_only() {
        let profile = Profile {
            read_heavy: true,
            sync: false,
            ..DEFAULT
        };
        let mut rng = Rng::with_seed(1);
        for _ in 0..10_000 {
            assert_ne!(Fault::pick(&mut rng, profile), Fault::PauseFailover);
        }
    }

    #[test]
    fn read_heavy_favours_the_leader() {
        let heavy = Profile {
            read_heavy: true,
            ..DEFAULT
        };
        let leader = |p: Profile| {
            let total: u64 = Fault::ALL.iter().map(|f| f.weight(p)).sum();
            let on_leader: u64 = [
                Fault::KillLeader,
                Fault::Pause,
                Fault::LoseLeader,
                Fault::Switchover,
                Fault::PauseFailover,
            ]
            .iter()
            .map(|f| f.weight(p))
            .sum();
            on_leader as f64 / total as f64
        };
        assert!(leader(heavy) > 0.5, "{}", leader(heavy));
        assert!(leader(DEFAULT) < 0.4, "{}", leader(DEFAULT));
    }

    #[test]
    fn a_seed_picks_the_same_faults_again() {
        let picks = |seed| {
            let mut rng = Rng::with_seed(seed);
            (0..100)
                .map(|_| Fault::pick(&mut rng, DEFAULT))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(42), picks(42));
        assert_ne!(picks(42), picks(43));
    }
}
