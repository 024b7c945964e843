//! One run from start to verdict: start the cluster, run the workload, the
//! monitor and the nemesis until the deadline, stop the workload, heal
//! every fault, wait for the followers to catch up, read every node, run
//! the checker, and print the counters (and, on failure, the evidence).
//!
//! The counts of replication and log events (catch-ups, snapshots,
//! compactions, torn tails, rewinds, fsync failures) come from the nodes'
//! `INFO` counters, summed over every process of every node by the
//! [`tally`]; the final reads add one last sample of every node.
//!
//! In async mode, writes a leader lost for good had acknowledged and its
//! successor lacked are excused before the check; they are listed in
//! `excused.txt` in the run directory and counted in the report.
//!
//! Beside the line clients, the MSET group's RESP clients ([`crate::group`])
//! write and read eight keys together; [`mset::check`] holds what they saw
//! and what every node holds at the end to MSET's atomicity.
//!
//! With `--linearizable-reads` (sync mode) the checker also holds every
//! key's history, reads on leader connections included, to
//! linearizability, within [`SEARCH_TIME`] for all keys.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fastrand::Rng;
use keyval_testkit::LineClient;

use crate::checker::{self, FailoverKind, Leadership, NodeState, Rules, Violation};
use crate::client::{self, field};
use crate::cluster::{read_from, Cluster, Settings, LEADER_ID};
use crate::ctl::Ctl;
use crate::group::Group;
use crate::history::{Clock, Kind, Op, Outcome};
use crate::linear::Limits;
use crate::monitor::{self, Monitor};
use crate::mset;
use crate::nemesis::{self, lock, Fault, Nemesis, Profile};
use crate::tally::{self, Tally};
use crate::workload::{Mix, Workload};

/// How long the followers may take to catch up after healing.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of each request of the final reads.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Followers at the start.
const FOLLOWERS: u32 = 2;
/// Ops of one bad key shown in a failure report.
const HISTORY_LINES: usize = 40;
/// Nemesis timeline lines shown in a failure report.
const TIMELINE_LINES: usize = 60;
/// Log lines of each node shown in a failure report.
const LOG_LINES: usize = 40;
/// How long the linearizability search may take, over all keys; keys
/// left undecided then fail the run.
const SEARCH_TIME: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub bin: PathBuf,
    /// The `keyval-ctl` binary the failovers run.
    pub ctl_bin: PathBuf,
    /// Whether the nemesis runs failovers.
    pub failovers: bool,
    pub seconds: u64,
    pub seed: u64,
    pub clients: u16,
    pub keys: u32,
    /// What the clients send.
    pub mix: Mix,
    /// `--sync-followers`; `None` lets the seed choose 0 or 1.
    pub sync_followers: Option<u32>,
    /// Hold reads on leader connections to linearizability (needs
    /// `--sync-followers` 1: the caller sees to it).
    pub linearizable_reads: bool,
    pub mem_limit_mib: u64,
    /// Concurrent nemesis lanes (faults at once, on different nodes).
    pub lanes: u16,
    /// Keep the run directory even when the run passes.
    pub keep: bool,
    /// Set by SIGINT/SIGTERM: end the run early (and fail it).
    pub interrupted: Arc<AtomicBool>,
}

/// Kills every node when the run ends, whichever way it ends (a panic on
/// this thread included; the other threads hold the cluster too, so its
/// own drop would come too late).
struct ShutdownGuard(Arc<Mutex<Cluster>>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        lock(&self.0).shutdown();
    }
}

/// Runs the scenario; returns whether every check passed. The report goes
/// to stdout.
pub fn run(opts: &Options) -> bool {
    let mut rng = Rng::with_seed(opts.seed);
    let sync_followers = opts.sync_followers.unwrap_or_else(|| rng.u32(..2));
    let dir = match tempfile::Builder::new().prefix("keyval-torture-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL: cannot create a run directory: {e}");
            return false;
        }
    };
    println!(
        "keyval-torture: seed {} ({} s, --sync-followers {sync_followers}, {} clients, {} keys, \
         {} workload, {} nemesis lanes, failovers {}, reads on the leader {}); rerun with \
         SEED={} make torture",
        opts.seed,
        opts.seconds,
        opts.clients,
        opts.keys,
        opts.mix.name(),
        opts.lanes,
        if opts.failovers { "on" } else { "off" },
        if opts.linearizable_reads && sync_followers > 0 {
            "held to linearizability"
        } else {
            "held to freshness while the sole leader"
        },
        opts.seed
    );
    log::info!("run directory {}", dir.path().display());
    let settings = Settings {
        bin: opts.bin.clone(),
        dir: dir.path().to_path_buf(),
        sync_followers,
        sync_timeout_ms: 2000,
        compact_min_bytes: 4 << 20,
    };
    let mut outcome = RunReport::default();
    let passed = match Cluster::start(settings, FOLLOWERS) {
        Ok(cluster) => {
            let cluster = Arc::new(Mutex::new(cluster));
            let _guard = ShutdownGuard(Arc::clone(&cluster));
            run_with(opts, sync_followers, &mut rng, &cluster, &mut outcome)
        }
        Err(e) => {
            outcome
                .problems
                .push(format!("the cluster did not start: {e}"));
            false
        }
    };
    println!("{}", outcome.counters);
    if passed {
        println!("PASS (seed {})", opts.seed);
    } else {
        println!("{}", outcome.evidence);
        for p in &outcome.problems {
            println!("problem: {p}");
        }
        println!(
            "FAIL (seed {}); rerun with SEED={} make torture",
            opts.seed, opts.seed
        );
    }
    if opts.keep || !passed {
        let kept = dir.keep();
        println!("run directory kept: {}", kept.display());
    }
    passed
}

/// What a run produced for the report.
#[derive(Default)]
struct RunReport {
    counters: String,
    evidence: String,
    problems: Vec<String>,
}

fn run_with(
    opts: &Options,
    sync_followers: u32,
    rng: &mut Rng,
    cluster: &Arc<Mutex<Cluster>>,
    out: &mut RunReport,
) -> bool {
    let clock = Clock::new();
    let leader = lock(cluster).leader_addr();
    let workload = Workload {
        leader: Arc::clone(&leader),
        keys: opts.keys,
        mix: opts.mix,
        clock,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let clients = workload.spawn(opts.clients, rng);
    let group = Group {
        leader: Arc::clone(&leader),
        cluster: Arc::clone(cluster),
        clock,
        stop: Arc::clone(&workload.stop),
    }
    .spawn(rng);
    let tally: tally::Shared = Arc::default();
    let monitor = Monitor::start(Arc::clone(cluster), clock, Arc::clone(&tally));
    let nemesis = Nemesis::new(
        rng.fork(),
        Arc::clone(cluster),
        workload.clone(),
        Arc::clone(&opts.interrupted),
        Ctl {
            bin: opts.ctl_bin.clone(),
        },
        Profile {
            failovers: opts.failovers,
            read_heavy: opts.mix == Mix::ReadHeavy,
            sync: sync_followers > 0,
        },
        Arc::clone(&tally),
    );
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let faults = nemesis.run(deadline, opts.lanes);
    while Instant::now() < deadline && !opts.interrupted.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(100));
    }
    if opts.interrupted.load(Ordering::SeqCst) && faults.error.is_none() {
        out.problems
            .push("interrupted by a signal before the deadline".into());
    }

    workload.stop.store(true, Ordering::SeqCst);
    let mut ops: Vec<Op> = Vec::new();
    for c in clients {
        match c.join() {
            Ok(mut client_ops) => ops.append(&mut client_ops),
            Err(_) => out.problems.push("a client thread panicked".into()),
        }
    }
    ops.extend(faults.ops.iter().cloned());
    let mut group_history = mset::History::default();
    for g in group {
        match g.join() {
            Ok(mut h) => {
                group_history.msets.append(&mut h.msets);
                group_history.mgets.append(&mut h.mgets);
            }
            Err(_) => out.problems.push("an MSET group thread panicked".into()),
        }
    }
    let seen = monitor.finish();
    log::info!("workload stopped after {} ops; healing", ops.len());

    let mut problems = std::mem::take(&mut out.problems);
    problems.extend(seen.crashes.iter().cloned());
    problems.extend(faults.error.iter().cloned());
    let limit = opts.mem_limit_mib << 20;
    for (id, rss) in &seen.max_rss {
        if *rss > limit {
            problems.push(format!(
                "node {id} used {} MiB of memory, over the {} MiB bound",
                rss >> 20,
                opts.mem_limit_mib
            ));
        }
    }
    let mut states = Vec::new();
    let healed = lock(cluster).heal();
    match healed
        .and_then(|()| converge(cluster))
        .and_then(|()| read_all(cluster))
    {
        Ok(s) => states = s,
        Err(e) => problems.push(e),
    }
    final_samples(cluster, &tally);
    let c = lock(cluster);
    for node in c.nodes.iter().chain(&c.retired) {
        let text = read_from(node.log_path(), 0);
        if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
            problems.push(format!("{} panicked: {line}", node.name()));
        }
    }
    drop(c);
    let mut lead = Leadership::new(LEADER_ID);
    lead.failovers = faults.failovers.clone();
    lead.samples = seen.leader_samples.clone();
    let excused = if sync_followers == 0 {
        checker::excuse_lost_writes(&mut ops, &lead)
    } else {
        Vec::new()
    };
    if !excused.is_empty() {
        let path = lock(cluster).dir().join("excused.txt");
        let text: String = excused.iter().map(|&i| format!("{}\n", ops[i])).collect();
        if let Err(e) = std::fs::write(&path, text) {
            problems.push(format!("cannot write {}: {e}", path.display()));
        }
    }
    let rules = Rules {
        linearizable_reads: opts.linearizable_reads && sync_followers > 0,
        limits: Limits {
            deadline: Some(Instant::now() + SEARCH_TIME),
            ..Limits::default()
        },
    };
    let violations = if states.is_empty() {
        Vec::new()
    } else {
        let started = Instant::now();
        let v = checker::check(&ops, opts.keys, &states, &lead, rules);
        log::info!("checked in {:.1} s", started.elapsed().as_secs_f64());
        v
    };
    // The MSET group: the final contents of every node (leader first),
    // and of every node promoted after a loss, as read then.
    let mut finals: Vec<(String, &std::collections::BTreeMap<String, String>)> =
        states.iter().map(|n| (n.name.clone(), &n.data)).collect();
    for f in &faults.failovers {
        if let Some(data) = &f.promoted {
            finals.push((
                format!(
                    "node {} when promoted at {:.3} s",
                    f.new,
                    f.start as f64 / 1e6
                ),
                data,
            ));
        }
    }
    if states.is_empty() {
        finals.clear();
    }
    let (group_summary, group_problems) =
        mset::check(&group_history, &finals, sync_followers > 0, opts.seed);
    problems.extend(group_problems);
    out.counters = counters(
        opts,
        rules,
        &ops,
        &faults,
        &seen,
        &tally::lock(&tally),
        cluster,
    );
    let _ =
        writeln!(
        out.counters,
        "  failovers: lost-leader {}, switchover {}, pause-failover {}; epoch reached {}; writes \
         excused by an async failover loss {}{}",
        faults.failovers.iter().filter(|f| f.kind == FailoverKind::Lost).count(),
        faults.failovers.iter().filter(|f| f.kind == FailoverKind::Planned).count(),
        faults.failovers.iter().filter(|f| f.kind == FailoverKind::Paused).count(),
        faults
            .failovers
            .iter()
            .map(|f| f.epoch)
            .chain([seen.max_epoch])
            .max()
            .unwrap_or(0),
        excused.len(),
        if excused.is_empty() {
            ""
        } else {
            " (listed in excused.txt in the run directory)"
        }
    );
    let _ = writeln!(out.counters, "{}", group_summary.line());
    let passed = problems.is_empty() && violations.is_empty();
    if !passed {
        out.evidence = evidence(&ops, &violations, &faults, cluster);
    }
    out.problems = problems;
    passed
}

/// Waits until every follower has the leader's seq and an `up` link.
fn converge(cluster: &Mutex<Cluster>) -> Result<(), String> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let leader = lock(cluster).leader();
    loop {
        let addrs = node_addrs(cluster)?;
        let mut lagging = Vec::new();
        let mut leader_seq = None;
        for (id, name, addr) in &addrs {
            let info = LineClient::connect_client(*addr, READ_TIMEOUT).and_then(|mut c| c.info());
            let info = match info {
                Ok(i) => i,
                Err(e) => {
                    lagging.push(format!("{name}: INFO failed: {e}"));
                    continue;
                }
            };
            let seq = field(&info, "seq").unwrap_or("?").to_string();
            if *id == leader {
                leader_seq = Some(seq);
            } else {
                let link = field(&info, "leader_link").unwrap_or("?");
                if Some(&seq) != leader_seq.as_ref() || link != "up" {
                    lagging.push(format!("{name}: seq {seq}, leader_link {link}"));
                }
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the followers did not catch up within {CONVERGE_TIMEOUT:?} after healing \
                 (leader seq {}): {}",
                leader_seq.unwrap_or_default(),
                lagging.join("; ")
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `(id, name, address)` of every node, leader first; all must be running.
fn node_addrs(cluster: &Mutex<Cluster>) -> Result<Vec<(u32, String, SocketAddr)>, String> {
    let c = lock(cluster);
    let mut addrs = c
        .nodes
        .iter()
        .map(|n| match n.addr() {
            Some(a) => Ok((n.id, n.name(), a)),
            None => Err(format!("{} is not running after healing", n.name())),
        })
        .collect::<Result<Vec<_>, String>>()?;
    addrs.sort_by_key(|(id, _, _)| *id != c.leader());
    Ok(addrs)
}

/// Reads every key, value and the digest of every node.
fn read_all(cluster: &Mutex<Cluster>) -> Result<Vec<NodeState>, String> {
    let mut states = Vec::new();
    let leader = lock(cluster).leader();
    for (id, name, addr) in node_addrs(cluster)? {
        let read = || -> std::io::Result<NodeState> {
            let mut c = LineClient::connect_client(addr, READ_TIMEOUT)?;
            let data = client::contents(&mut c)?;
            let digest = c.call("DIGEST")?;
            Ok(NodeState {
                name: name.clone(),
                data,
                digest,
                leader: id == leader,
            })
        };
        states.push(read().map_err(|e| format!("{name}: final read failed: {e}"))?);
    }
    Ok(states)
}

/// One last `INFO` of every running node for the tally: the processes
/// healing started, and what the others did since the monitor stopped.
fn final_samples(cluster: &Mutex<Cluster>, tally: &Mutex<Tally>) {
    let running = lock(cluster).running();
    for (id, addr) in running {
        if !tally::sample(tally, id, addr, READ_TIMEOUT) {
            log::warn!("node {id} gave no INFO at the end: its last counters may be missed");
        }
    }
}

/// The tally's line of the report: the events the nodes' `INFO` counters
/// counted, summed over every process sampled.
fn event_counts(tally: &Tally, processes: u32) -> String {
    let n = |name: &str| tally.total(name).map_or("?".to_string(), |v| v.to_string());
    let mut s = format!(
        "  from INFO ({} of {processes} processes; lower bounds when a process died between \
         samples): leaders sent {} catch-ups and {} snapshots, followers accepted {} and \
         installed {}; {} compactions; {} torn tails cut on restart ({} maybe into a snapshot \
         part); {} rewinds; {} fsync failures",
        tally.processes(),
        n("catchups_sent"),
        n("snapshots_sent"),
        n("catchups_received"),
        n("snapshots_received"),
        n("compactions"),
        n("torn_tails_cut"),
        n("torn_tails_suspect"),
        n("rewinds"),
        n("fsync_failures"),
    );
    if tally.without_run_id > 0 {
        let _ = write!(
            s,
            "; {} INFO samples had no run_id and were not counted",
            tally.without_run_id
        );
    }
    s
}

fn counters(
    opts: &Options,
    rules: Rules,
    ops: &[Op],
    faults: &nemesis::Report,
    seen: &monitor::Report,
    tally: &Tally,
    cluster: &Mutex<Cluster>,
) -> String {
    let n = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    let puts = n(&|o| matches!(o.kind, Kind::Put(_)));
    let deletes = n(&|o| o.kind == Kind::Delete);
    let gets = n(&|o| o.kind == Kind::Get);
    let acked = n(&|o| o.is_acked_write());
    let timeouts = n(&|o| o.outcome == Outcome::ReplicationTimeout);
    let unknown = n(&|o| o.outcome == Outcome::Unknown);
    let refused = n(&|o| o.outcome == Outcome::Refused);
    let not_served = n(&|o| matches!(o.outcome, Outcome::NotServed(_)));
    let via_follower = n(&|o| o.kind == Kind::Get && !o.via_leader);
    let mut s = String::new();
    let _ = writeln!(s, "counters (seed {}, {} s):", opts.seed, opts.seconds);
    let _ = writeln!(
        s,
        "  ops {} (put {puts}, delete {deletes}, get {gets}); acknowledged writes {acked}; \
         REPLICATION_TIMEOUT {timeouts}; WRITE_NOT_ALLOWED {refused}; no reply {unknown}",
        ops.len()
    );
    let _ = writeln!(
        s,
        "  GETs without a value (NOT_LEADER, WRITE_NOT_ALLOWED, ERROR, REPLICATION_TIMEOUT) \
         {not_served}; GETs on connections opened to a follower {via_follower}; reads on the \
         leader {}",
        if rules.linearizable_reads {
            "held to linearizability"
        } else {
            "held to freshness while the sole leader"
        }
    );
    let by_kind: Vec<String> = Fault::ALL
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f.name(),
                faults.counts.get(f).copied().unwrap_or(0)
            )
        })
        .collect();
    let total: u64 = faults.counts.values().sum();
    let _ = writeln!(s, "  faults {total}: {}", by_kind.join(", "));
    let processes = {
        let c = lock(cluster);
        c.nodes.iter().chain(&c.retired).map(|n| n.starts).sum()
    };
    let _ = writeln!(s, "{}", event_counts(tally, processes));
    let rss: Vec<String> = seen
        .max_rss
        .iter()
        .map(|(id, b)| format!("node {id} {} MiB", b >> 20))
        .collect();
    let _ = writeln!(
        s,
        "  max replication lag {} writes; max RSS {}; nodes at the end {}",
        seen.max_lag,
        rss.join(", "),
        lock(cluster).nodes.len()
    );
    s
}

fn evidence(
    ops: &[Op],
    violations: &[Violation],
    faults: &nemesis::Report,
    cluster: &Mutex<Cluster>,
) -> String {
    let timeline = &faults.timeline;
    let mut s = String::new();
    let _ = writeln!(s, "{} violations:", violations.len());
    for v in violations.iter().take(20) {
        let _ = writeln!(s, "  {}", v.what);
    }
    let mut shown = BTreeSet::new();
    for v in violations {
        let Some(key) = v.key else { continue };
        if shown.len() == 3 || !shown.insert(key) {
            continue;
        }
        let mut on_key: Vec<&Op> = ops.iter().filter(|o| o.key == key).collect();
        on_key.sort_by_key(|o| o.invoke);
        // The ops around the moment of the violation, most of them before.
        let at = on_key.partition_point(|o| o.invoke <= v.at);
        let end = (at + HISTORY_LINES / 4).min(on_key.len());
        let start = end.saturating_sub(HISTORY_LINES);
        let _ = writeln!(
            s,
            "history of k{key} around {:.3} s (ops {start}..{end} of {}):",
            v.at.min(on_key.last().map_or(0, |o| o.complete)) as f64 / 1e6,
            on_key.len()
        );
        for op in &on_key[start..end] {
            let _ = writeln!(s, "  {op}");
        }
    }
    let _ = writeln!(s, "failovers:");
    for f in &faults.failovers {
        let _ = writeln!(s, "  {f}");
    }
    let _ = writeln!(s, "nemesis timeline (last {TIMELINE_LINES}):");
    for line in &timeline[timeline.len().saturating_sub(TIMELINE_LINES)..] {
        let _ = writeln!(s, "  {line}");
    }
    let c = lock(cluster);
    let _ = writeln!(s, "node {} leads at the end", c.leader());
    for node in c.nodes.iter().chain(&c.retired) {
        let _ = writeln!(
            s,
            "--- {} (last {LOG_LINES} lines of {}):\n{}",
            node.name(),
            node.log_path().display(),
            node.log_tail(LOG_LINES)
        );
    }
    s
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
    fn the_event_line_sums_processes_and_says_what_it_is() {
        let mut t = Tally::default();
        t.note(1, &info(&[("run_id", "a"), ("catchups_sent", "2")]));
        t.note(1, &info(&[("run_id", "b"), ("catchups_sent", "3")]));
        t.note(2, &info(&[("run_id", "c"), ("catchups_received", "4")]));
        let line = event_counts(&t, 4);
        assert!(
            line.contains("from INFO (3 of 4 processes; lower bounds"),
            "{line}"
        );
        assert!(
            line.contains("leaders sent 5 catch-ups and ? snapshots"),
            "{line}"
        );
        assert!(
            line.contains("followers accepted 4 and installed ?"),
            "{line}"
        );
        assert!(!line.contains("run_id"), "{line}");
        t.note(2, &info(&[("catchups_sent", "9")]));
        let line = event_counts(&t, 4);
        assert!(line.contains("leaders sent 5 catch-ups"), "{line}");
        assert!(
            line.ends_with("; 1 INFO samples had no run_id and were not counted"),
            "{line}"
        );
    }
}
