//! The replication cases of the suite:
//! - what two followers cost the leader's durable PUT throughput, async and
//!   with `--sync-followers 1`, against the same load on a leader alone,
//!   over several interleaved rounds (medians and per-round ranges);
//! - how far the followers lag behind under that load, from the leader's
//!   `INFO` sampled every few milliseconds (see [`crate::lag`]);
//! - what the read rules of `--sync-followers 1` (a read waits for its
//!   key's newest write to pass the output rule, and is answered only
//!   under the followers' read lease) cost GET-only and read-mostly loads,
//!   against the same loads on the leader alone, in the same rounds;
//! - how long an empty follower takes to receive a snapshot of a 1M-key
//!   leader, against copying the leader's log over loopback TCP with fsync
//!   (see [`crate::filecopy`]);
//! - how fast a stopped follower catches up on 100k writes it missed.
//!
//! Every node runs on port 0 in its own temp dir with a secret made for
//! this run; the [`Server`] guards stop them on every exit path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{
    failed_if, latencies, SetOnDrop, CONNECTIONS, KEYS, LOAD_PIPELINE, RESTART_WAIT, START_WAIT,
};
use super::{failures, median, summarize_rounds, STOP_WAIT, VALUE_SIZE};
use keyval_testkit::LineClient;

use crate::client::{self, info_u64};
use crate::filecopy::{self, CopyReport};
use crate::lag::{self, LagStats};
use crate::load::{self, Driver, Limit, LoadConfig, LoadReport, Workload};
use crate::process::{self, KeyvalSpec, Role, Server};
use crate::wire::Protocol;

/// Follower ids of the throughput cases (the snapshot case uses the first).
const FOLLOWERS: [u32; 2] = [2, 3];
/// Pipeline depths of the throughput cases.
const PIPELINES: [usize; 2] = [1, 16];
/// How long followers may take to connect and catch up before a case.
const SYNC_WAIT: Duration = Duration::from_secs(60);
/// How long an empty follower may take to receive the snapshot: generous,
/// because a 1M-key log is ~140 MB on a shared, busy machine.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(600);
/// How long a restarted follower may take to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(300);
/// Interval of the lag sampler. Fine enough to see spikes of a few
/// milliseconds, coarse enough that `INFO` costs the leader little.
const LAG_EVERY: Duration = Duration::from_millis(5);
/// Sampling may outlast the case by the load driver's drain and stall
/// allowances before it is cut off.
const LAG_MARGIN: Duration = Duration::from_secs(60);
/// Interval of the bounded waits.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Throughput with two async followers over alone, at least.
const ASYNC_TARGET: f64 = 0.8;
/// Throughput with `--sync-followers 1` over alone, at least.
const SYNC_TARGET: f64 = 0.5;
/// Snapshot time over copy time, at most.
const SNAPSHOT_TARGET: f64 = 2.0;
/// Log message of a leader that lets a follower catch up (followed by
/// `from seq`; prefixed by `follower <id>`), shown for where the catch-up
/// began, which no `INFO` field says. Whether it was a catch-up or a
/// snapshot comes from the follower's `INFO` counters.
const LEADER_CATCH_UP_LOG: &str = "catching up from seq";

/// Options of the replication part.
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    /// Path of the keyval binary.
    pub keyval_bin: PathBuf,
    /// Length of each throughput case.
    pub case_duration: Duration,
    /// Rounds of the throughput comparison (at least 1).
    pub rounds: usize,
    /// Keys on the leader before the snapshot case (1M normally).
    pub snapshot_keys: u64,
    /// Writes a stopped follower misses before the catch-up case.
    pub catch_up_writes: u64,
}

/// Runs every replication case and prints the tables.
///
/// # Errors
/// After printing everything it could, if any case failed.
pub fn run(opts: &ReplicationOptions) -> io::Result<()> {
    let mut rng = fastrand::Rng::new();
    let secret = String::from_utf8_lossy(&load::random_value(&mut rng, 32)).into_owned();
    println!(
        "# replication: PUT, then GET and read-mostly, --fsync always, {CONNECTIONS} connections, \
         {KEYS} keys (preloaded), {VALUE_SIZE}-byte values, {} rounds of {:.1} s per case; \
         followers {FOLLOWERS:?} on loopback",
        opts.rounds,
        opts.case_duration.as_secs_f64()
    );
    let (rows, reads) = throughput_cases(opts, &secret);
    println!();
    print!("{}", throughput_table(&rows, opts.case_duration));
    println!();
    print!("{}", lag_table(&rows));
    println!();
    print!("{}", reads_table(&reads, opts.case_duration));
    let mut failed = rows
        .iter()
        .any(|r| r.alone.iter().chain(&r.replicated).any(Result::is_err))
        || reads
            .iter()
            .any(|r| r.alone.iter().chain(&r.sync).any(Result::is_err));
    println!();
    if let Err(e) = snapshot_and_catch_up(opts, &secret) {
        println!("snapshot / catch-up cases failed: {e}");
        failed = true;
    }
    failed_if(failed, "some replication cases failed")
}

/// How a throughput row's leader replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replication {
    /// Two followers, `OK` after the leader's own fsync.
    Async,
    /// Two followers, `OK` after one of them has the write durably.
    SyncOne,
}

impl Replication {
    fn name(self) -> &'static str {
        match self {
            Replication::Async => "2 async followers",
            Replication::SyncOne => "2, --sync-followers 1",
        }
    }

    fn leader_flags(self) -> &'static [&'static str] {
        match self {
            Replication::Async => &[],
            Replication::SyncOne => &["--sync-followers", "1"],
        }
    }

    fn target(self) -> f64 {
        match self {
            Replication::Async => ASYNC_TARGET,
            Replication::SyncOne => SYNC_TARGET,
        }
    }
}

/// The leaders of the throughput cases, in the order a round measures
/// them at each pipeline depth: [`ALONE`] first, then each replication mode.
const SETUPS: [Option<Replication>; 3] =
    [None, Some(Replication::Async), Some(Replication::SyncOne)];
/// Index of the leader alone (no followers) in [`SETUPS`].
const ALONE: usize = 0;
/// Index of the leader with `--sync-followers 1` in [`SETUPS`]: the other
/// side of the read comparison.
const SYNC: usize = 2;
const _: () = assert!(matches!(SETUPS[SYNC], Some(Replication::SyncOne)));
/// Workloads of the read comparison, each at every depth of [`PIPELINES`].
const READ_WORKLOADS: [Workload; 2] = [Workload::Get, Workload::ReadMostly];

/// Name of a throughput setup (`None`: the leader alone).
fn setup_name(setup: Option<Replication>) -> &'static str {
    setup.map_or("leader alone", Replication::name)
}

/// One measured load, and the lag sampled during it when followers were
/// connected.
#[derive(Clone)]
struct Measured {
    report: LoadReport,
    lag: Option<LagStats>,
}

/// Outcome of one load.
type Outcome = Result<Measured, String>;

/// One row of the throughput table: a leader alone against a replicating
/// leader at the same pipeline depth, one outcome of each per round.
struct Row {
    replication: Replication,
    pipeline: usize,
    /// The leader alone, round by round.
    alone: Vec<Outcome>,
    /// The replicating leader, round by round.
    replicated: Vec<Outcome>,
}

/// One row of the reads table: a read load on the leader alone against
/// the same load on the leader with `--sync-followers 1`, one outcome of
/// each per round.
struct ReadRow {
    workload: Workload,
    pipeline: usize,
    /// The leader alone, round by round.
    alone: Vec<Outcome>,
    /// The leader with `--sync-followers 1` and two followers.
    sync: Vec<Outcome>,
}

/// A running cluster of a throughput setup, or why it is not running (it
/// did not start, did not settle, or failed a case): every later case of
/// that setup fails with this message.
type Slot<'a> = Result<Cluster<'a>, String>;

/// Runs the throughput cases: `opts.rounds` rounds, each measuring at
/// every pipeline depth a leader alone, then a leader with two async
/// followers, then a leader with `--sync-followers 1` and two followers;
/// then each read workload at every depth on the leader alone and on the
/// `--sync-followers 1` leader, in the order of [`read_order`]. Each
/// round's replicating figures are later compared with that round's alone
/// figure, so a noisy stretch of time weighs on both sides of a ratio and
/// spoils one round, not the row. Returns the PUT rows and the read rows.
///
/// The three clusters start once and serve every round. Restarting them
/// per round would cost seven process starts and four follower handshakes
/// each time and buy nothing: what a leader carries into a later round is
/// bounded and alike for the three. Each takes the same sequence of PUT
/// loads (the read loads add a tenth as many writes to two of them), the
/// key space is filled before the first round, and compaction keeps every
/// log between about the live data and `--compact-min-bytes` (64 MiB by
/// default), so no round writes to an ever longer file. What would bias a
/// case is work left over from the case before it, on any of the clusters:
/// a compaction still running, async followers still catching up, a
/// deferred follower fsync. All nodes share the machine's cores and disk,
/// so every case first waits until every cluster is idle (`settle`).
fn throughput_cases(opts: &ReplicationOptions, secret: &str) -> (Vec<Row>, Vec<ReadRow>) {
    // outcomes[setup][pipeline][round]
    let mut outcomes: Vec<Vec<Vec<Outcome>>> =
        vec![vec![Vec::new(); PIPELINES.len()]; SETUPS.len()];
    let mut reads: Vec<ReadRow> = READ_WORKLOADS
        .iter()
        .flat_map(|&workload| {
            PIPELINES.iter().map(move |&pipeline| ReadRow {
                workload,
                pipeline,
                alone: Vec::new(),
                sync: Vec::new(),
            })
        })
        .collect();
    let mut clusters: Vec<Slot<'_>> = SETUPS
        .iter()
        .map(|&setup| {
            start_setup(opts, secret, setup).map_err(|e| {
                println!("{}: FAILED: {e}", setup_name(setup));
                format!("did not start: {e}")
            })
        })
        .collect();
    for round in 1..=opts.rounds {
        println!("round {round} of {}", opts.rounds);
        for (p, &pipeline) in PIPELINES.iter().enumerate() {
            for (s, by_pipeline) in outcomes.iter_mut().enumerate() {
                let case = Case {
                    setup: s,
                    workload: Workload::Put,
                    pipeline,
                };
                by_pipeline[p].push(case.run(&mut clusters, opts.case_duration, round));
            }
        }
        for row in &mut reads {
            for s in read_order(round) {
                let case = Case {
                    setup: s,
                    workload: row.workload,
                    pipeline: row.pipeline,
                };
                let outcome = case.run(&mut clusters, opts.case_duration, round);
                match s {
                    ALONE => row.alone.push(outcome),
                    _ => row.sync.push(outcome),
                }
            }
        }
    }
    drop(clusters);

    let alone = std::mem::take(&mut outcomes[ALONE]);
    let mut rows = Vec::new();
    for (&setup, by_pipeline) in SETUPS.iter().zip(outcomes) {
        let Some(replication) = setup else {
            continue;
        };
        for ((&pipeline, alone), replicated) in PIPELINES.iter().zip(&alone).zip(by_pipeline) {
            rows.push(Row {
                replication,
                pipeline,
                alone: alone.clone(),
                replicated,
            });
        }
    }
    (rows, reads)
}

/// The sides of the read comparison (indices into [`SETUPS`]) in the
/// order round `round` (counted from 1) runs them: the leader alone first
/// in odd rounds, the sync leader first in even ones, so that neither side
/// always takes the later stretch of a changing machine load.
fn read_order(round: usize) -> [usize; 2] {
    if round % 2 == 1 {
        [ALONE, SYNC]
    } else {
        [SYNC, ALONE]
    }
}

/// One load on one of the throughput clusters.
struct Case {
    /// Index into [`SETUPS`] (and the clusters).
    setup: usize,
    workload: Workload,
    pipeline: usize,
}

impl Case {
    /// How the case is named in the output: `<setup> p<pipeline>` for the
    /// PUT load, `<setup> <workload> p<pipeline>` for the others.
    fn label(&self) -> String {
        let name = setup_name(SETUPS[self.setup]);
        match self.workload {
            Workload::Put => format!("{name} p{}", self.pipeline),
            w => format!("{name} {w} p{}", self.pipeline),
        }
    }

    /// Waits until every cluster is idle, then measures the case. A
    /// cluster that fails a case is stopped, and its later cases fail.
    fn run(&self, clusters: &mut [Slot<'_>], duration: Duration, round: usize) -> Outcome {
        settle(clusters);
        let label = self.label();
        let slot = &mut clusters[self.setup];
        let outcome = match slot {
            Ok(cluster) => cluster
                .measure(&label, self.workload, self.pipeline, duration)
                .map_err(|e| e.to_string()),
            Err(e) => return Err(format!("not run: {e}")),
        };
        if let Err(e) = &outcome {
            println!("keyval  {label:<28} FAILED: {e}");
            // Dropping the cluster stops its nodes.
            *slot = Err(format!("{label} failed in round {round}"));
        }
        outcome
    }
}

/// Starts the cluster of a throughput setup: a leader, and for a
/// replicating setup two followers in sync with it.
fn start_setup<'a>(
    opts: &'a ReplicationOptions,
    secret: &'a str,
    setup: Option<Replication>,
) -> io::Result<Cluster<'a>> {
    let flags = setup.map_or(&[][..], Replication::leader_flags);
    let mut cluster = Cluster::start(&opts.keyval_bin, secret, flags)?;
    if setup.is_some() {
        cluster.add_followers(&FOLLOWERS)?;
    }
    cluster.preload()?;
    Ok(cluster)
}

/// Waits until every running cluster is idle (see
/// [`Cluster::wait_settled`]). One that does not settle in time is
/// stopped, and its later cases fail.
fn settle(clusters: &mut [Slot<'_>]) {
    for (slot, setup) in clusters.iter_mut().zip(SETUPS) {
        let Ok(cluster) = slot else {
            continue;
        };
        if let Err(e) = cluster.wait_settled() {
            println!("{}: FAILED: {e}", setup_name(setup));
            *slot = Err(format!("did not settle: {e}"));
        }
    }
}

/// A leader and its followers, all started with the same secret.
struct Cluster<'a> {
    bin: &'a Path,
    secret: &'a str,
    /// Declared before the leader so they are stopped first (fields drop
    /// in order) and do not log a lost link for nothing.
    followers: Vec<(u32, Server)>,
    leader: Server,
}

impl<'a> Cluster<'a> {
    /// Starts a leader (`--fsync always` plus `flags`) in a fresh temp dir.
    fn start(bin: &'a Path, secret: &'a str, flags: &[&str]) -> io::Result<Self> {
        let spec = KeyvalSpec {
            bin,
            role: Role::Leader,
            fsync: "always",
            extra: flags,
            secret: Some(secret),
        };
        let leader = spec.start(TempDir::new()?, START_WAIT)?;
        Ok(Cluster {
            bin,
            secret,
            followers: Vec::new(),
            leader,
        })
    }

    /// How follower `id` of this leader is started.
    fn follower_spec(&self, id: u32) -> KeyvalSpec<'a> {
        KeyvalSpec {
            bin: self.bin,
            role: Role::Follower {
                id,
                leader: self.leader.addr,
            },
            fsync: "always",
            extra: &[],
            secret: Some(self.secret),
        }
    }

    /// Starts follower `id` on `dir` (a fresh dir, or the one it had).
    fn start_follower(&mut self, id: u32, dir: TempDir, wait: Duration) -> io::Result<()> {
        let follower = self.follower_spec(id).start(dir, wait)?;
        self.followers.push((id, follower));
        Ok(())
    }

    /// Starts empty followers `ids` and waits until the leader lists each
    /// of them as connected with nothing left to send.
    fn add_followers(&mut self, ids: &[u32]) -> io::Result<()> {
        for &id in ids {
            self.start_follower(id, TempDir::new()?, START_WAIT)?;
        }
        self.wait_settled()
    }

    /// Stops follower `id` with SIGTERM (bounded) and returns its data
    /// directory for a restart.
    fn stop_follower(&mut self, id: u32) -> io::Result<TempDir> {
        let i = self
            .followers
            .iter()
            .position(|(f, _)| *f == id)
            .ok_or_else(|| io::Error::other(format!("follower {id} is not running")))?;
        let (_, Server { mut child, dir, .. }) = self.followers.remove(i);
        if !child.terminate(STOP_WAIT)? {
            log::warn!("follower {id} needed SIGKILL");
        }
        Ok(dir)
    }

    /// Fails with a child's last output if any node has exited.
    fn check_alive(&mut self) -> io::Result<()> {
        self.leader.child.check_alive()?;
        for (_, f) in &mut self.followers {
            f.child.check_alive()?;
        }
        Ok(())
    }

    /// Waits until the cluster is idle: the leader lists every running
    /// follower with `acked` equal to its own `seq`, and no node is
    /// compacting.
    fn wait_settled(&mut self) -> io::Result<()> {
        let ids: Vec<u32> = self.followers.iter().map(|(id, _)| *id).collect();
        let addrs =
            std::iter::once(self.leader.addr).chain(self.followers.iter().map(|(_, f)| f.addr));
        let mut probes: Vec<InfoProbe> = addrs.map(InfoProbe::new).collect();
        process::wait_for("cluster idle", SYNC_WAIT, POLL_EVERY, || {
            self.check_alive()?;
            let mut infos = Vec::with_capacity(probes.len());
            for probe in &mut probes {
                match probe.info() {
                    Ok(info) => infos.push(info),
                    Err(e) => {
                        return Ok(ControlFlow::Continue(format!(
                            "INFO of {} failed: {e}",
                            probe.addr
                        )))
                    }
                }
            }
            Ok(match unsettled(&infos[0], &infos[1..], &ids)? {
                None => ControlFlow::Break(()),
                Some(state) => ControlFlow::Continue(state),
            })
        })
    }

    /// PUTs every key of the load's key space once, so that every GET of
    /// a later load finds a value.
    fn preload(&mut self) -> io::Result<()> {
        let value = load::random_value(&mut fastrand::Rng::new(), VALUE_SIZE);
        let mut writer = Driver::connect(self.leader.addr, Protocol::Keyval, CONNECTIONS)?;
        let r = writer.preload(KEYS, &value, LOAD_PIPELINE)?;
        log::info!("preloaded {KEYS} keys: {r}");
        if r.errors > 0 {
            return Err(io::Error::other(format!(
                "preloading {KEYS} keys failed: {} errors",
                r.errors
            )));
        }
        Ok(())
    }

    /// Drives the standard `workload` (50 connections over the key space)
    /// at `pipeline` for `duration`, sampling the followers' lag meanwhile
    /// if there are any, and prints the result under `label`.
    fn measure(
        &mut self,
        label: &str,
        workload: Workload,
        pipeline: usize,
        duration: Duration,
    ) -> io::Result<Measured> {
        let cfg = LoadConfig {
            addr: self.leader.addr,
            protocol: Protocol::Keyval,
            connections: CONNECTIONS,
            pipeline,
            workload,
            keys: KEYS,
            value_size: VALUE_SIZE,
            limit: Limit::Duration(duration),
            preload: false,
        };
        log::info!("{label}: running");
        let ids: Vec<u32> = self.followers.iter().map(|(id, _)| *id).collect();
        let (report, samples) = if ids.is_empty() {
            (load::run(&cfg), None)
        } else {
            let client = client::keyval(self.leader.addr)?;
            let quit = AtomicBool::new(false);
            thread::scope(|s| {
                let sampler = s.spawn(|| {
                    lag::sample_until(client, &ids, LAG_EVERY, &quit, duration + LAG_MARGIN)
                });
                let report = {
                    let _stop = SetOnDrop(&quit);
                    load::run(&cfg)
                };
                let samples = sampler
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the lag sampler panicked")));
                (report, Some(samples))
            })
        };
        let report = report.map_err(|e| match self.check_alive() {
            Ok(()) => e,
            Err(dead) => io::Error::other(format!("{e}; {dead}")),
        })?;
        self.check_alive()?;
        let lag = samples.transpose()?.map(|s| lag::summarize(&s));
        println!("keyval  {label:<28} {report}");
        if let Some(lag) = &lag {
            println!("keyval  {label:<28} lag {}", fmt_lag(lag));
        }
        Ok(Measured { report, lag })
    }
}

/// `INFO` of one node over a control connection that is reopened after
/// any failure: a node busy installing a snapshot may miss the client's
/// timeout, and a late reply must not be read as the next one's.
struct InfoProbe {
    addr: SocketAddr,
    client: Option<LineClient>,
}

impl InfoProbe {
    fn new(addr: SocketAddr) -> Self {
        InfoProbe { addr, client: None }
    }

    fn info(&mut self) -> io::Result<HashMap<String, String>> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => client::keyval(self.addr)?,
        };
        let info = client::info(&mut client)?;
        self.client = Some(client);
        Ok(info)
    }
}

/// What keeps a cluster from being idle, from the `INFO` of its leader and
/// of its followers `ids` (in that order), or `None` when it is idle: the
/// leader lists every follower with `acked` equal to its `seq`, and no node
/// reports `compacting 1`.
///
/// # Errors
/// A leader `INFO` without a numeric `seq`.
fn unsettled(
    leader: &HashMap<String, String>,
    followers: &[HashMap<String, String>],
    ids: &[u32],
) -> io::Result<Option<String>> {
    let seq = info_u64(leader, "seq")?;
    let mut state = format!("leader seq {seq}");
    let mut idle = true;
    for id in ids {
        let line = leader.get(&format!("follower_{id}"));
        idle &= line.and_then(|v| lag::parse_acked(v)) == Some(seq);
        let _ = write!(
            state,
            "; follower_{id} {}",
            line.map_or("not connected", String::as_str)
        );
    }
    let compacting =
        |info: &HashMap<String, String>| info.get("compacting").is_some_and(|v| v != "0");
    if compacting(leader) {
        idle = false;
        state.push_str("; leader compacting");
    }
    for (id, info) in ids.iter().zip(followers) {
        if compacting(info) {
            idle = false;
            let _ = write!(state, "; follower {id} compacting");
        }
    }
    Ok((!idle).then_some(state))
}

/// `p50 / p99 / max` lag in writes and in milliseconds, plus samples.
fn fmt_lag(lag: &LagStats) -> String {
    let mut out = format!(
        "{} / {} / {} writes, {} ({} samples",
        lag.writes.value_at_quantile(0.5),
        lag.writes.value_at_quantile(0.99),
        lag.writes.max(),
        fmt_lag_ms(lag),
        lag.samples
    );
    if lag.missing > 0 {
        let _ = write!(out, ", {} with a follower missing", lag.missing);
    }
    out.push(')');
    out
}

/// `p50 / p99 / max ms` of the lag in time.
fn fmt_lag_ms(lag: &LagStats) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    format!(
        "{:.1} / {:.1} / {:.1} ms",
        ms(lag.time.value_at_quantile(0.5)),
        ms(lag.time.value_at_quantile(0.99)),
        ms(lag.time.max())
    )
}

/// Ops/s of each round (`None` where it failed).
fn ops_by_round(outcomes: &[Outcome]) -> Vec<Option<f64>> {
    outcomes
        .iter()
        .map(|o| o.as_ref().ok().map(|m| m.report.ops_per_sec()))
        .collect()
}

/// Renders the throughput comparison: medians over the rounds, the
/// per-round ratios' median and range, and the latencies of the round
/// with the median ratio.
fn throughput_table(rows: &[Row], case_duration: Duration) -> String {
    let rounds = rows.first().map_or(0, |r| r.replicated.len());
    let mut out = format!(
        "PUT throughput, leader alone vs. replicating (fsync always, {CONNECTIONS} connections, \
         {VALUE_SIZE}-byte values, {rounds} rounds of {:.1} s per case)\n",
        case_duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>4} {:>12} {:>12} {:>6} {:>11} {:>7} {:>6}  {:<22} {:<22} {:>7}",
        "followers",
        "pipe",
        "alone ops/s",
        "repl ops/s",
        "ratio",
        "per round",
        "target",
        "rounds",
        "alone p50/p99/p999 us",
        "repl p50/p99/p999 us",
        "errors"
    );
    let ops = |v: Option<f64>| v.map_or_else(|| "FAILED".to_string(), |v| format!("{v:.0}"));
    let lat = |o: Option<&Outcome>| match o {
        Some(Ok(m)) => latencies(&m.report),
        _ => "-".to_string(),
    };
    let errs = |outcomes: &[Outcome]| {
        let measured = outcomes.iter().flatten();
        match measured.clone().count() {
            0 => "-".to_string(),
            _ => measured.map(|m| m.report.errors).sum::<u64>().to_string(),
        }
    };
    for row in rows {
        let target = row.replication.target();
        let sum = summarize_rounds(&ops_by_round(&row.alone), &ops_by_round(&row.replicated));
        let ratio = sum.ratio.map_or_else(
            || "-".to_string(),
            // A space where `!` would go keeps the digits aligned.
            |r| format!("{r:.2}{}", if r >= target { " " } else { "!" }),
        );
        let range = sum
            .range
            .map_or_else(|| "-".to_string(), |(lo, hi)| format!("{lo:.2}-{hi:.2}"));
        let _ = writeln!(
            out,
            "{:<22} {:>4} {:>12} {:>12} {:>6} {:>11} {:>7} {:>6}  {:<22} {:<22} {:>7}",
            row.replication.name(),
            row.pipeline,
            ops(sum.base),
            ops(sum.compared),
            ratio,
            range,
            format!(">= {target:.1}"),
            format!("{}/{}", sum.rounds, row.replicated.len()),
            lat(sum.median_round.and_then(|i| row.alone.get(i))),
            lat(sum.median_round.and_then(|i| row.replicated.get(i))),
            format!("{}/{}", errs(&row.alone), errs(&row.replicated)),
        );
    }
    out.push_str(
        "(ops/s: medians over the rounds; ratio: median of the per-round ratios, each round's \
         replicated ops/s over that round's alone ops/s;\n per round: lowest-highest of those \
         ratios; rounds: rounds that gave a ratio; latencies: the round with the median ratio; \
         errors: summed over the rounds;\n ! marks a median ratio below its target)\n",
    );
    // The alone outcomes are shared by the rows of a pipeline depth.
    let mut alone_listed: Vec<usize> = Vec::new();
    for row in rows {
        let mut listed = vec![(Replication::name(row.replication), &row.replicated)];
        if !alone_listed.contains(&row.pipeline) {
            alone_listed.push(row.pipeline);
            listed.insert(0, (setup_name(None), &row.alone));
        }
        for (name, outcomes) in listed {
            write_failures(&mut out, &format!("{name} p{}", row.pipeline), outcomes);
        }
    }
    out
}

/// Appends a line per distinct error of `outcomes`, with the rounds it
/// ended: `<case>, round(s) <n, ...>: <error>`.
fn write_failures(out: &mut String, case: &str, outcomes: &[Outcome]) {
    for (failed, e) in failures(outcomes) {
        let plural = if failed.len() > 1 { "s" } else { "" };
        let failed: Vec<String> = failed.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "{case}, round{plural} {}: {e}", failed.join(", "));
    }
}

/// Renders the read comparison: per workload and depth, the median ops/s
/// of each side, the median and range of the per-round ratios (sync over
/// alone), and each side's p99 as the median of its rounds' p99s.
fn reads_table(rows: &[ReadRow], case_duration: Duration) -> String {
    let rounds = rows.first().map_or(0, |r| r.sync.len());
    let mut out = format!(
        "Reads, leader alone vs. {} (fsync always, {CONNECTIONS} connections, {KEYS} keys \
         preloaded, {VALUE_SIZE}-byte values, {rounds} rounds of {:.1} s per case)\n",
        Replication::SyncOne.name(),
        case_duration.as_secs_f64()
    );
    let line = |cells: [&str; 10]| {
        format!(
            "{:<12} {:>4} {:>12} {:>12} {:>6} {:>11} {:>6} {:>13} {:>13} {:>9}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9]
        )
    };
    out.push_str(&line([
        "workload",
        "pipe",
        "alone ops/s",
        "sync ops/s",
        "ratio",
        "per round",
        "rounds",
        "alone p99 us",
        "sync p99 us",
        "errors",
    ]));
    let ops = |v: Option<f64>| v.map_or_else(|| "FAILED".to_string(), |v| format!("{v:.0}"));
    let p99 = |outcomes: &[Outcome]| {
        let us: Vec<f64> = outcomes
            .iter()
            .flatten()
            .map(|m| m.report.latency_at(0.99).as_secs_f64() * 1e6)
            .collect();
        median(&us).map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
    };
    let errs = |outcomes: &[Outcome]| {
        let measured = outcomes.iter().flatten();
        match measured.clone().count() {
            0 => "-".to_string(),
            _ => measured.map(|m| m.report.errors).sum::<u64>().to_string(),
        }
    };
    let mut not_found = 0;
    for row in rows {
        let sum = summarize_rounds(&ops_by_round(&row.alone), &ops_by_round(&row.sync));
        let ratio = sum
            .ratio
            .map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let range = sum
            .range
            .map_or_else(|| "-".to_string(), |(lo, hi)| format!("{lo:.2}-{hi:.2}"));
        out.push_str(&line([
            &row.workload.to_string(),
            &row.pipeline.to_string(),
            &ops(sum.base),
            &ops(sum.compared),
            &ratio,
            &range,
            &format!("{}/{}", sum.rounds, row.sync.len()),
            &p99(&row.alone),
            &p99(&row.sync),
            &format!("{}/{}", errs(&row.alone), errs(&row.sync)),
        ]));
        not_found += row
            .alone
            .iter()
            .chain(&row.sync)
            .flatten()
            .map(|m| m.report.not_found)
            .sum::<u64>();
    }
    out.push_str(
        "(ops/s: medians over the rounds; ratio: median of the per-round ratios, each round's \
         sync ops/s over that round's alone ops/s;\n per round: lowest-highest of those ratios; \
         rounds: rounds that gave a ratio; p99: median of the rounds' p99s; errors: summed over \
         the rounds, alone/sync)\n",
    );
    if not_found > 0 {
        let _ = writeln!(
            out,
            "{not_found} GETs found no value: the key space was not fully preloaded"
        );
    }
    for row in rows {
        for (s, outcomes) in [(ALONE, &row.alone), (SYNC, &row.sync)] {
            let case = format!(
                "{} {} p{}",
                setup_name(SETUPS[s]),
                row.workload,
                row.pipeline
            );
            write_failures(&mut out, &case, outcomes);
        }
    }
    out
}

/// Renders the lag of every replicated row, the samples of all its rounds
/// pooled.
fn lag_table(rows: &[Row]) -> String {
    let rounds = rows.first().map_or(0, |r| r.replicated.len());
    let mut out = format!(
        "Replication lag under that load (the most-behind follower in each leader INFO, \
         sampled every {} ms; the samples of all {rounds} rounds pooled)\n",
        LAG_EVERY.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>4} {:>6} {:>8} {:>26} {:>26}",
        "followers", "pipe", "rounds", "samples", "writes p50 / p99 / max", "ms p50 / p99 / max"
    );
    for row in rows {
        let mut pooled: Option<LagStats> = None;
        let mut measured = 0;
        for lag in row
            .replicated
            .iter()
            .flatten()
            .filter_map(|m| m.lag.as_ref())
        {
            measured += 1;
            match &mut pooled {
                Some(p) => p.merge(lag),
                None => pooled = Some(lag.clone()),
            }
        }
        let Some(lag) = pooled else {
            continue;
        };
        let writes = format!(
            "{} / {} / {}",
            lag.writes.value_at_quantile(0.5),
            lag.writes.value_at_quantile(0.99),
            lag.writes.max()
        );
        let _ = writeln!(
            out,
            "{:<22} {:>4} {:>6} {:>8} {:>26} {:>26}",
            row.replication.name(),
            row.pipeline,
            format!("{measured}/{}", row.replicated.len()),
            lag.samples,
            writes,
            fmt_lag_ms(&lag)
        );
        if lag.missing > 0 {
            let _ = writeln!(
                out,
                "  ({} samples had a follower missing from INFO)",
                lag.missing
            );
        }
    }
    out
}

/// The snapshot case and then the catch-up case on the same leader.
fn snapshot_and_catch_up(opts: &ReplicationOptions, secret: &str) -> io::Result<()> {
    let id = FOLLOWERS[0];
    let keys = opts.snapshot_keys;
    let mut cluster = Cluster::start(&opts.keyval_bin, secret, &[])?;
    let value = load::random_value(&mut fastrand::Rng::new(), VALUE_SIZE);
    let mut writer = Driver::connect(cluster.leader.addr, Protocol::Keyval, CONNECTIONS)?;
    log::info!("loading {keys} keys into the leader");
    let r = writer.preload(keys, &value, LOAD_PIPELINE)?;
    log::info!("leader load: {r}");
    if r.errors > 0 {
        return Err(io::Error::other(format!(
            "loading the leader failed: {} errors",
            r.errors
        )));
    }
    let mut leader_probe = InfoProbe::new(cluster.leader.addr);
    let seq = info_u64(&leader_probe.info()?, "seq")?;

    // Each round: the baseline (the leader's log over loopback TCP into
    // another temp dir), then an empty follower taking the snapshot. Both
    // are single transfers well under a second, so one noisy moment
    // would decide a single comparison.
    let log_path = cluster.leader.dir.path().join("leader.log");
    let mut rounds = Vec::new();
    let mut was_snapshot = true;
    for round in 1..=opts.rounds {
        let copy_dir = TempDir::new()?;
        log::info!(
            "round {round}: copying {} over loopback TCP",
            log_path.display()
        );
        let copy = filecopy::copy_over_loopback(&log_path, &copy_dir.path().join("leader.log"))?;
        drop(copy_dir);

        log::info!("round {round}: starting empty follower {id}");
        let t0 = Instant::now();
        cluster.start_follower(id, TempDir::new()?, START_WAIT)?;
        let info = wait_caught_up(&mut cluster, id, seq, SNAPSHOT_WAIT)?;
        rounds.push((copy, t0.elapsed()));
        // A new empty follower: a snapshot it installed is the only way it
        // could reach the leader's seq.
        was_snapshot &= counter(&info, "snapshots_received").is_some_and(|n| n > 0);
        if round < opts.rounds {
            // The last round's follower stays for the catch-up case.
            drop(cluster.stop_follower(id)?);
        }
    }
    print!("{}", snapshot_line(keys, seq, &rounds, was_snapshot));

    // Catch-up: stop the follower, write behind its back, restart it.
    let missed = opts.catch_up_writes;
    let dir = cluster.stop_follower(id)?;
    log::info!("follower {id} stopped; writing {missed} keys");
    let r = writer.preload_range(keys, keys + missed, &value, LOAD_PIPELINE)?;
    log::info!("writes while the follower was away: {r}");
    let seq = info_u64(&leader_probe.info()?, "seq")?;
    let t0 = Instant::now();
    cluster.start_follower(id, dir, RESTART_WAIT)?;
    let listening = t0.elapsed();
    let info = wait_caught_up(&mut cluster, id, seq, CATCH_UP_WAIT)?;
    let total = t0.elapsed();
    let kind = catch_up_kind(
        counter(&info, "catchups_received"),
        counter(&info, "snapshots_received"),
    );
    let leader_line = cluster
        .leader
        .child
        .find_output(&format!("follower {id} {LEADER_CATCH_UP_LOG}"));
    let catch_up = total.saturating_sub(listening);
    println!(
        "catch-up of {missed} missed writes: caught up {:.2} s after restart \
         ({:.2} s to replay its {keys}-key log and listen, then {:.2} s, {:.0} writes/s)",
        total.as_secs_f64(),
        listening.as_secs_f64(),
        catch_up.as_secs_f64(),
        missed as f64 / catch_up.as_secs_f64().max(1e-9),
    );
    println!("  it was {kind}");
    if let Some(line) = leader_line {
        println!("  leader logged: {}", log_message(&line));
    }
    Ok(())
}

/// The snapshot lines: over the rounds, each a copy of the log and the
/// time an empty follower took to be in sync, the median times and the
/// median and range of the per-round ratios.
fn snapshot_line(
    keys: u64,
    seq: u64,
    rounds: &[(CopyReport, Duration)],
    was_snapshot: bool,
) -> String {
    let Some((first, _)) = rounds.first() else {
        return "snapshot: no round ran\n".into();
    };
    let mb = first.bytes as f64 / 1e6;
    // Times, copy as the baseline: the same summary as a throughput row.
    let secs = |t: Duration| Some(t.as_secs_f64());
    let copies: Vec<Option<f64>> = rounds.iter().map(|(c, _)| secs(c.elapsed)).collect();
    let snapshots: Vec<Option<f64>> = rounds.iter().map(|(_, s)| secs(*s)).collect();
    let sum = summarize_rounds(&copies, &snapshots);
    let (copy, snapshot) = (
        sum.base.unwrap_or_default(),
        sum.compared.unwrap_or_default(),
    );
    let ratio = sum.ratio.unwrap_or(f64::INFINITY);
    let (low, high) = sum.range.unwrap_or((ratio, ratio));
    let n = rounds.len();
    let mut out = format!(
        "snapshot of {keys} keys ({mb:.1} MB log, seq {seq}): empty follower in sync {snapshot:.2} s \
         after spawn ({:.0} MB/s; median of {n})\n",
        mb / snapshot.max(1e-9),
    );
    let _ = writeln!(
        out,
        "copy of the same log over loopback TCP + fsync: {copy:.2} s ({:.0} MB/s; median of {n}); \
         snapshot / copy = {ratio:.2}, rounds {low:.2}-{high:.2} (target <= {SNAPSHOT_TARGET:.1}){}",
        mb / copy.max(1e-9),
        if ratio <= SNAPSHOT_TARGET {
            ""
        } else {
            " - above target"
        },
    );
    if !was_snapshot {
        let _ = writeln!(
            out,
            "  (a follower's INFO counted no snapshot installed (snapshots_received); \
             unconfirmed snapshot)"
        );
    }
    out
}

/// An `INFO` counter, or `None` when absent or not a number.
fn counter(info: &HashMap<String, String>, name: &str) -> Option<u64> {
    info.get(name).and_then(|v| v.parse().ok())
}

/// What the restarted follower's `INFO` counters (catch-ups accepted and
/// snapshots installed since its start) say its return was.
fn catch_up_kind(catchups: Option<u64>, snapshots: Option<u64>) -> String {
    match (catchups, snapshots) {
        (Some(c), Some(0)) if c > 0 => {
            format!("a catch-up (follower INFO: catchups_received {c}, snapshots_received 0)")
        }
        (_, Some(s)) if s > 0 => {
            format!(
                "NOT a catch-up: the follower installed {s} snapshot(s) (INFO snapshots_received)"
            )
        }
        (Some(_), Some(_)) => {
            "unconfirmed: the follower's INFO counted neither a catch-up nor a snapshot".to_string()
        }
        _ => "unconfirmed: the follower's INFO has no catchups_received or snapshots_received"
            .to_string(),
    }
}

/// A log line without its timestamp and level (`... [INFO] message`).
fn log_message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, msg)| msg)
}

/// Waits until follower `id`'s `INFO` shows `seq` equal to `target` and
/// `leader_link up`; returns that `INFO`.
fn wait_caught_up(
    cluster: &mut Cluster<'_>,
    id: u32,
    target: u64,
    wait: Duration,
) -> io::Result<HashMap<String, String>> {
    let addr = cluster
        .followers
        .iter()
        .find(|(f, _)| *f == id)
        .map(|(_, s)| s.addr)
        .ok_or_else(|| io::Error::other(format!("follower {id} is not running")))?;
    let mut probe = InfoProbe::new(addr);
    let what = format!("follower {id} reaching seq {target}");
    process::wait_for(&what, wait, POLL_EVERY, || {
        cluster.check_alive()?;
        let info = match probe.info() {
            Ok(info) => info,
            Err(e) => return Ok(ControlFlow::Continue(format!("follower INFO failed: {e}"))),
        };
        let seq = info_u64(&info, "seq")?;
        let link = info.get("leader_link").map_or("?", String::as_str);
        if seq == target && link == "up" {
            return Ok(ControlFlow::Break(info));
        }
        Ok(ControlFlow::Continue(format!(
            "seq {seq}, leader_link {link}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lines: &[(&str, &str)]) -> HashMap<String, String> {
        lines
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A measured load of `ok` requests in one second, every latency
    /// `latency_us`.
    fn measured(ok: u64, latency_us: u64) -> Outcome {
        let mut latency = crate::histogram::new();
        crate::histogram::record(&mut latency, latency_us * 1000);
        Ok(Measured {
            report: LoadReport {
                ok,
                not_found: 0,
                errors: 1,
                unanswered: 0,
                elapsed: Duration::from_secs(1),
                latency,
            },
            lag: None,
        })
    }

    #[test]
    fn throughput_table_shows_medians_and_the_range() {
        let alone = vec![measured(1000, 100), measured(400, 900), measured(900, 200)];
        let rows = vec![
            Row {
                replication: Replication::Async,
                pipeline: 1,
                alone: alone.clone(),
                // Ratios 0.8, 0.5, 0.7: median 0.7, below 0.8.
                replicated: vec![measured(800, 300), measured(200, 5000), measured(630, 400)],
            },
            Row {
                replication: Replication::SyncOne,
                pipeline: 1,
                alone,
                replicated: vec![
                    measured(600, 300),
                    Err("follower died".to_string()),
                    Err("not run: it failed".to_string()),
                ],
            },
        ];
        let table = throughput_table(&rows, Duration::from_secs(3));
        assert!(table.contains("3 rounds of 3.0 s"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells[3..10],
            ["1", "900", "630", "0.70!", "0.50-0.80", ">=", "0.8"],
            "{table}"
        );
        assert_eq!(cells[10], "3/3", "{table}");
        // Latencies from round 3, the one with the median ratio.
        assert!(lines[2].contains("200 / 200 / 200"), "{table}");
        assert!(lines[2].contains("400 / 400 / 400"), "{table}");
        assert!(lines[2].ends_with("3/3"), "{table}");
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            cells[3..8],
            ["1", "900", "600", "0.60", "0.60-0.60"],
            "{table}"
        );
        assert!(lines[3].contains(" 1/3 "), "{table}");
        assert!(lines[3].ends_with("3/1"), "{table}");
        assert!(table.contains("p1, round 2: follower died"), "{table}");
        assert!(table.contains("p1, round 3: not run: it failed"), "{table}");
        let mut rows = rows;
        rows[1].replicated[2] = Err("follower died".to_string());
        let table = throughput_table(&rows, Duration::from_secs(3));
        assert!(table.contains("p1, rounds 2, 3: follower died"), "{table}");
    }

    #[test]
    fn reads_table_shows_the_ratio_and_median_p99s() {
        let rows = vec![
            ReadRow {
                workload: Workload::Get,
                pipeline: 16,
                alone: vec![measured(1000, 100), measured(400, 900), measured(900, 200)],
                // Ratios 0.8, 0.5, 0.7: median 0.7.
                sync: vec![measured(800, 300), measured(200, 5000), measured(630, 400)],
            },
            ReadRow {
                workload: Workload::ReadMostly,
                pipeline: 1,
                alone: vec![
                    measured(1000, 100),
                    measured(1000, 100),
                    measured(1000, 100),
                ],
                sync: vec![
                    measured(500, 300),
                    Err("follower died".to_string()),
                    Err("not run: it failed".to_string()),
                ],
            },
        ];
        let table = reads_table(&rows, Duration::from_secs(3));
        assert!(table.contains("3 rounds of 3.0 s"), "{table}");
        assert!(table.contains("--sync-followers 1"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        // p99s: the median of each side's rounds, not the median round's.
        assert_eq!(
            cells,
            [
                "get",
                "16",
                "900",
                "630",
                "0.70",
                "0.50-0.80",
                "3/3",
                "200",
                "400",
                "3/3"
            ],
            "{table}"
        );
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "read-mostly",
                "1",
                "1000",
                "500",
                "0.50",
                "0.50-0.50",
                "1/3",
                "100",
                "300",
                "3/1"
            ],
            "{table}"
        );
        assert!(!table.contains("found no value"), "{table}");
        assert!(
            table.contains("2, --sync-followers 1 read-mostly p1, round 2: follower died"),
            "{table}"
        );
        assert!(
            table.contains("2, --sync-followers 1 read-mostly p1, round 3: not run: it failed"),
            "{table}"
        );
        assert!(!table.contains("leader alone get p16, round"), "{table}");

        let mut rows = rows;
        rows[0].alone[1] = Err("gone".to_string());
        if let Ok(m) = &mut rows[0].sync[0] {
            m.report.not_found = 7;
        }
        let table = reads_table(&rows, Duration::from_secs(3));
        assert!(
            table.contains("leader alone get p16, round 2: gone"),
            "{table}"
        );
        assert!(table.contains("7 GETs found no value"), "{table}");
        // Rounds 1 and 3 give ratios 0.8 and 0.7; the median is their mean.
        let cells: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(cells[4..7], ["0.75", "0.70-0.80", "2/3"], "{table}");
        assert!(reads_table(&[], Duration::from_secs(1)).contains("0 rounds"));
    }

    #[test]
    fn reads_alternate_which_side_goes_first() {
        assert_eq!(read_order(1), [ALONE, SYNC]);
        assert_eq!(read_order(2), [SYNC, ALONE]);
        assert_eq!(read_order(3), [ALONE, SYNC]);
    }

    #[test]
    fn a_case_is_named_by_its_setup_workload_and_depth() {
        let case = |setup, workload| Case {
            setup,
            workload,
            pipeline: 16,
        };
        assert_eq!(case(ALONE, Workload::Put).label(), "leader alone p16");
        assert_eq!(
            case(SYNC, Workload::ReadMostly).label(),
            "2, --sync-followers 1 read-mostly p16"
        );
        assert_eq!(case(ALONE, Workload::Get).label(), "leader alone get p16");
    }

    #[test]
    fn lag_is_pooled_over_the_rounds() {
        let lagged = |acked: u64| {
            let mut m = measured(100, 1).unwrap();
            m.lag = Some(lag::summarize(&[lag::Sample {
                at: Duration::ZERO,
                seq: 100,
                acked: Some(acked),
            }]));
            Ok(m)
        };
        let rows = vec![Row {
            replication: Replication::Async,
            pipeline: 16,
            alone: vec![measured(100, 1), measured(100, 1), measured(100, 1)],
            replicated: vec![lagged(90), Err("gone".to_string()), lagged(60)],
        }];
        let table = lag_table(&rows);
        assert!(table.contains("all 3 rounds pooled"), "{table}");
        let row: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(row[4..9], ["2/3", "2", "10", "/", "40"], "{table}");
    }

    #[test]
    fn a_cluster_is_idle_when_every_follower_acked_and_nothing_compacts() {
        let leader = info(&[
            ("seq", "100"),
            ("compacting", "0"),
            ("follower_2", "addr=127.0.0.1:1 acked=100 lag=0"),
            ("follower_3", "addr=127.0.0.1:2 acked=100 lag=0"),
        ]);
        let idle = info(&[("seq", "100"), ("compacting", "0")]);
        let busy = info(&[("seq", "100"), ("compacting", "1")]);
        let ids = [2, 3];
        let followers = [idle.clone(), idle.clone()];
        assert_eq!(unsettled(&leader, &followers, &ids).unwrap(), None);
        // A leader alone.
        assert_eq!(unsettled(&idle, &[], &[]).unwrap(), None);
        assert!(unsettled(&busy, &[], &[]).unwrap().is_some());

        let state = unsettled(&leader, &[idle.clone(), busy], &ids)
            .unwrap()
            .unwrap();
        assert!(state.contains("follower 3 compacting"), "{state}");

        let mut behind = leader.clone();
        behind.insert(
            "follower_3".to_string(),
            "addr=127.0.0.1:2 acked=97 lag=3".to_string(),
        );
        assert!(unsettled(&behind, &followers, &ids).unwrap().is_some());
        behind.remove("follower_3");
        let state = unsettled(&behind, &followers, &ids).unwrap().unwrap();
        assert!(state.contains("follower_3 not connected"), "{state}");

        assert!(unsettled(&info(&[]), &[], &[]).is_err());
    }

    #[test]
    fn strips_log_prefixes() {
        assert_eq!(
            log_message("12:00:01 [INFO] 127.0.0.1:5000: leader accepted; catching up"),
            "127.0.0.1:5000: leader accepted; catching up"
        );
        assert_eq!(log_message("no prefix"), "no prefix");
    }

    #[test]
    fn the_catch_up_kind_comes_from_the_follower_counters() {
        assert!(catch_up_kind(Some(1), Some(0)).starts_with("a catch-up ("));
        assert!(catch_up_kind(Some(1), Some(1)).starts_with("NOT a catch-up"));
        assert!(catch_up_kind(Some(0), Some(2)).contains("installed 2 snapshot(s)"));
        assert!(catch_up_kind(Some(0), Some(0)).starts_with("unconfirmed: "));
        assert!(catch_up_kind(None, Some(0)).contains("has no catchups_received"));
        let info = info(&[("catchups_received", "3"), ("snapshots_received", "x")]);
        assert_eq!(counter(&info, "catchups_received"), Some(3));
        assert_eq!(counter(&info, "snapshots_received"), None);
        assert_eq!(counter(&info, "rewinds"), None);
    }

    #[test]
    fn snapshot_line_compares_with_the_copy() {
        let copy = |ms| CopyReport {
            bytes: 100_000_000,
            elapsed: Duration::from_millis(ms),
        };
        let rounds = [
            (copy(1000), Duration::from_millis(1500)),
            (copy(500), Duration::from_millis(1500)),
            (copy(1000), Duration::from_millis(1200)),
        ];
        let line = snapshot_line(1000, 1000, &rounds, true);
        assert!(line.contains("in sync 1.50 s"), "{line}");
        assert!(
            line.contains("copy of the same log over loopback TCP + fsync: 1.00 s"),
            "{line}"
        );
        assert!(
            line.contains("snapshot / copy = 1.50, rounds 1.20-3.00"),
            "{line}"
        );
        assert!(!line.contains("above target"), "{line}");
        let line = snapshot_line(1000, 1000, &rounds[1..2], false);
        assert!(line.contains("snapshot / copy = 3.00"), "{line}");
        assert!(line.contains("above target"), "{line}");
        assert!(line.contains("unconfirmed"), "{line}");
        assert!(snapshot_line(1000, 1000, &[], true).contains("no round ran"));
    }
}
