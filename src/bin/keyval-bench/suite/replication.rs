//! The replication cases of the suite:
//! - what two followers cost the leader's durable PUT throughput, async and
//!   with `--sync-followers 1`, against the same load on a leader alone;
//! - how far the followers lag behind under that load, from the leader's
//!   `INFO` sampled every few milliseconds (see [`crate::lag`]);
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
use super::{STOP_WAIT, VALUE_SIZE};
use crate::client::{info_u64, Client};
use crate::filecopy::{self, CopyReport};
use crate::lag::{self, LagStats};
use crate::load::{self, Driver, Limit, LoadConfig, LoadReport, Workload};
use crate::process::{self, KeyvalSpec, Role, Server};
use crate::rng::Rng;
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
/// Log message of a follower that is told to catch up
/// (`src/server/replica.rs`).
const FOLLOWER_CATCH_UP_LOG: &str = "leader accepted; catching up";
/// Log message of a follower that is sent a snapshot.
const FOLLOWER_SNAPSHOT_LOG: &str = "leader accepted; receiving a snapshot";
/// Log message of a leader that lets a follower catch up (followed by
/// `from seq`; prefixed by `follower <id>`).
const LEADER_CATCH_UP_LOG: &str = "catching up from seq";

/// Options of the replication part.
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    /// Path of the keyval binary.
    pub keyval_bin: PathBuf,
    /// Length of each throughput case.
    pub case_duration: Duration,
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
    let secret = String::from_utf8_lossy(&Rng::from_os().alphanumeric(32)).into_owned();
    println!(
        "# replication: PUT, --fsync always, {CONNECTIONS} connections, {KEYS} keys, \
         {VALUE_SIZE}-byte values, {:.1} s per case; followers {FOLLOWERS:?} on loopback",
        opts.case_duration.as_secs_f64()
    );
    let rows = throughput_cases(opts, &secret);
    println!();
    print!("{}", throughput_table(&rows, opts.case_duration));
    println!();
    print!("{}", lag_table(&rows));
    let mut failed = rows
        .iter()
        .any(|r| r.alone.is_err() || r.replicated.is_err());
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

/// One measured load, and the lag sampled during it when followers were
/// connected.
struct Measured {
    report: LoadReport,
    lag: Option<LagStats>,
}

/// Outcome of one load.
type Outcome = Result<Measured, String>;

/// One row of the throughput table: a leader alone against a replicating
/// leader at the same pipeline depth.
struct Row {
    replication: Replication,
    pipeline: usize,
    alone: Outcome,
    replicated: Outcome,
}

/// Runs the throughput cases: one leader measured alone and then with two
/// async followers, and a second leader with `--sync-followers 1` and two
/// followers. Both modes are compared with the same alone figures.
fn throughput_cases(opts: &ReplicationOptions, secret: &str) -> Vec<Row> {
    let mut alone: Vec<Outcome> = Vec::new();
    let mut with_async: Vec<Outcome> = Vec::new();
    let mut with_sync: Vec<Outcome> = Vec::new();

    let first = (|| -> io::Result<()> {
        let mut cluster = Cluster::start(&opts.keyval_bin, secret, &[])?;
        cluster.measure_each("leader alone", opts.case_duration, &mut alone)?;
        cluster.add_followers(&FOLLOWERS)?;
        let name = Replication::Async.name();
        cluster.measure_each(name, opts.case_duration, &mut with_async)
    })();
    if let Err(e) = first {
        println!("leader alone / async followers: FAILED: {e}");
        fail_unrun(&mut alone, &e);
        fail_unrun(&mut with_async, &e);
    }

    let second = (|| -> io::Result<()> {
        let flags = Replication::SyncOne.leader_flags();
        let mut cluster = Cluster::start(&opts.keyval_bin, secret, flags)?;
        cluster.add_followers(&FOLLOWERS)?;
        let name = Replication::SyncOne.name();
        cluster.measure_each(name, opts.case_duration, &mut with_sync)
    })();
    if let Err(e) = second {
        println!("--sync-followers 1: FAILED: {e}");
        fail_unrun(&mut with_sync, &e);
    }

    let mut rows = Vec::new();
    for (replication, outcomes) in [
        (Replication::Async, with_async),
        (Replication::SyncOne, with_sync),
    ] {
        let cases = PIPELINES.iter().zip(&alone).zip(outcomes);
        for ((&pipeline, alone), replicated) in cases {
            let alone = match alone {
                Ok(m) => Ok(Measured {
                    report: m.report.clone(),
                    lag: None,
                }),
                Err(e) => Err(e.clone()),
            };
            rows.push(Row {
                replication,
                pipeline,
                alone,
                replicated,
            });
        }
    }
    rows
}

/// Gives every pipeline depth not measured yet the error that stopped the
/// run.
fn fail_unrun(outcomes: &mut Vec<Outcome>, e: &io::Error) {
    outcomes.resize_with(PIPELINES.len(), || Err(e.to_string()));
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
        self.wait_in_sync()
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

    /// Waits until the leader lists every running follower with
    /// `acked` equal to its own `seq`.
    fn wait_in_sync(&mut self) -> io::Result<()> {
        let ids: Vec<u32> = self.followers.iter().map(|(id, _)| *id).collect();
        let mut probe = InfoProbe::new(self.leader.addr);
        process::wait_for("followers in sync", SYNC_WAIT, POLL_EVERY, || {
            self.check_alive()?;
            let info = match probe.info() {
                Ok(info) => info,
                Err(e) => return Ok(ControlFlow::Continue(format!("leader INFO failed: {e}"))),
            };
            let seq = info_u64(&info, "seq")?;
            let mut state = format!("leader seq {seq}");
            let mut done = true;
            for id in &ids {
                let line = info.get(&format!("follower_{id}"));
                let acked = line.and_then(|v| lag::parse_acked(v));
                done &= acked == Some(seq);
                let _ = write!(
                    state,
                    "; follower_{id} {}",
                    line.map_or("not connected", String::as_str)
                );
            }
            Ok(if done {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(state)
            })
        })
    }

    /// Measures each of [`PIPELINES`] in turn, appending to `outcomes`,
    /// and stops at the first failure.
    fn measure_each(
        &mut self,
        name: &str,
        duration: Duration,
        outcomes: &mut Vec<Outcome>,
    ) -> io::Result<()> {
        for &pipeline in &PIPELINES {
            outcomes.push(Ok(self.measure(name, pipeline, duration)?));
        }
        Ok(())
    }

    /// Drives the standard PUT load at `pipeline` for `duration`, sampling
    /// the followers' lag meanwhile if there are any, and prints the result.
    fn measure(&mut self, name: &str, pipeline: usize, duration: Duration) -> io::Result<Measured> {
        let cfg = LoadConfig {
            addr: self.leader.addr,
            protocol: Protocol::Keyval,
            connections: CONNECTIONS,
            pipeline,
            workload: Workload::Put,
            keys: KEYS,
            value_size: VALUE_SIZE,
            limit: Limit::Duration(duration),
            preload: false,
        };
        log::info!("{name} p{pipeline}: running");
        let ids: Vec<u32> = self.followers.iter().map(|(id, _)| *id).collect();
        let (report, samples) = if ids.is_empty() {
            (load::run(&cfg), None)
        } else {
            let client = Client::connect(self.leader.addr, Protocol::Keyval)?;
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
        let label = format!("{name} p{pipeline}");
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
    client: Option<Client>,
}

impl InfoProbe {
    fn new(addr: SocketAddr) -> Self {
        InfoProbe { addr, client: None }
    }

    fn info(&mut self) -> io::Result<HashMap<String, String>> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => Client::connect(self.addr, Protocol::Keyval)?,
        };
        let info = client.keyval_info()?;
        self.client = Some(client);
        Ok(info)
    }
}

/// `p50 / p99 / max` lag in writes and in milliseconds, plus samples.
fn fmt_lag(lag: &LagStats) -> String {
    let mut out = format!(
        "{} / {} / {} writes, {} ({} samples",
        lag.writes.quantile(0.5),
        lag.writes.quantile(0.99),
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
        ms(lag.time.quantile(0.5)),
        ms(lag.time.quantile(0.99)),
        ms(lag.time.max())
    )
}

/// Renders the throughput comparison.
fn throughput_table(rows: &[Row], case_duration: Duration) -> String {
    let mut out = format!(
        "PUT throughput, leader alone vs. replicating (fsync always, {CONNECTIONS} connections, \
         {VALUE_SIZE}-byte values, {:.1} s per case)\n",
        case_duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>4} {:>12} {:>12} {:>6} {:>7}  {:<22} {:<22} {:>7}",
        "followers",
        "pipe",
        "alone ops/s",
        "repl ops/s",
        "ratio",
        "target",
        "alone p50/p99/p999 us",
        "repl p50/p99/p999 us",
        "errors"
    );
    let ops = |o: &Outcome| match o {
        Ok(m) => format!("{:.0}", m.report.ops_per_sec()),
        Err(_) => "FAILED".to_string(),
    };
    let lat = |o: &Outcome| match o {
        Ok(m) => latencies(&m.report),
        Err(_) => "-".to_string(),
    };
    let errs = |o: &Outcome| match o {
        Ok(m) => m.report.errors.to_string(),
        Err(_) => "-".to_string(),
    };
    for row in rows {
        let target = row.replication.target();
        let ratio = match (&row.alone, &row.replicated) {
            (Ok(a), Ok(r)) if a.report.ops_per_sec() > 0.0 => {
                let ratio = r.report.ops_per_sec() / a.report.ops_per_sec();
                let met = if ratio >= target { "" } else { "!" };
                format!("{ratio:.2}{met}")
            }
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<22} {:>4} {:>12} {:>12} {:>6} {:>7}  {:<22} {:<22} {:>7}",
            row.replication.name(),
            row.pipeline,
            ops(&row.alone),
            ops(&row.replicated),
            ratio,
            format!(">= {target:.1}"),
            lat(&row.alone),
            lat(&row.replicated),
            format!("{}/{}", errs(&row.alone), errs(&row.replicated)),
        );
    }
    out.push_str("(! marks a ratio below its target)\n");
    for row in rows {
        for (which, o) in [("alone", &row.alone), ("replicated", &row.replicated)] {
            if let Err(e) = o {
                let _ = writeln!(
                    out,
                    "{} p{} {which}: {e}",
                    row.replication.name(),
                    row.pipeline
                );
            }
        }
    }
    out
}

/// Renders the lag of every replicated row.
fn lag_table(rows: &[Row]) -> String {
    let mut out = format!(
        "Replication lag under that load (the most-behind follower in each leader INFO, \
         sampled every {} ms)\n",
        LAG_EVERY.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<22} {:>4} {:>8} {:>26} {:>26}",
        "followers", "pipe", "samples", "writes p50 / p99 / max", "ms p50 / p99 / max"
    );
    for row in rows {
        let Ok(Measured { lag: Some(lag), .. }) = &row.replicated else {
            continue;
        };
        let writes = format!(
            "{} / {} / {}",
            lag.writes.quantile(0.5),
            lag.writes.quantile(0.99),
            lag.writes.max()
        );
        let _ = writeln!(
            out,
            "{:<22} {:>4} {:>8} {:>26} {:>26}",
            row.replication.name(),
            row.pipeline,
            lag.samples,
            writes,
            fmt_lag_ms(lag)
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
    let value = Rng::from_os().alphanumeric(VALUE_SIZE);
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

    // Baseline: the leader's log over loopback TCP into another temp dir.
    let log_path = cluster.leader.dir.path().join("leader.log");
    let copy_dir = TempDir::new()?;
    log::info!("copying {} over loopback TCP", log_path.display());
    let copy = filecopy::copy_over_loopback(&log_path, &copy_dir.path().join("leader.log"))?;
    drop(copy_dir);

    log::info!("starting empty follower {id}");
    let t0 = Instant::now();
    cluster.start_follower(id, TempDir::new()?, START_WAIT)?;
    wait_caught_up(&mut cluster, id, seq, SNAPSHOT_WAIT)?;
    let snapshot = t0.elapsed();
    let follower = follower_log(&cluster, id)?;
    let was_snapshot = follower.find_output(FOLLOWER_SNAPSHOT_LOG).is_some();
    print!(
        "{}",
        snapshot_line(keys, seq, &copy, snapshot, was_snapshot)
    );

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
    wait_caught_up(&mut cluster, id, seq, CATCH_UP_WAIT)?;
    let total = t0.elapsed();
    let follower = follower_log(&cluster, id)?;
    let kind = match (
        follower.find_output(FOLLOWER_CATCH_UP_LOG),
        follower.find_output(FOLLOWER_SNAPSHOT_LOG),
    ) {
        (Some(line), None) => format!("a catch-up; follower logged: {}", log_message(&line)),
        (_, Some(line)) => format!("NOT a catch-up: {}", log_message(&line)),
        (None, None) => {
            "unconfirmed: the follower logged neither a catch-up nor a snapshot".to_string()
        }
    };
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

/// The snapshot result line and its comparison with the copy.
fn snapshot_line(
    keys: u64,
    seq: u64,
    copy: &CopyReport,
    snapshot: Duration,
    was_snapshot: bool,
) -> String {
    let mb = copy.bytes as f64 / 1e6;
    let ratio = snapshot.as_secs_f64() / copy.elapsed.as_secs_f64().max(1e-9);
    let mut out = format!(
        "snapshot of {keys} keys ({mb:.1} MB log, seq {seq}): empty follower in sync {:.2} s \
         after spawn ({:.0} MB/s)\n",
        snapshot.as_secs_f64(),
        mb / snapshot.as_secs_f64().max(1e-9),
    );
    let _ = writeln!(
        out,
        "copy of the same log over loopback TCP + fsync: {:.2} s ({:.0} MB/s); \
         snapshot / copy = {ratio:.2} (target <= {SNAPSHOT_TARGET:.1}){}",
        copy.elapsed.as_secs_f64(),
        mb / copy.elapsed.as_secs_f64().max(1e-9),
        if ratio <= SNAPSHOT_TARGET {
            ""
        } else {
            " - above target"
        },
    );
    if !was_snapshot {
        let _ = writeln!(
            out,
            "  (the follower did not log {FOLLOWER_SNAPSHOT_LOG:?}; unconfirmed snapshot)"
        );
    }
    out
}

/// Follower `id`'s child process.
fn follower_log<'c>(cluster: &'c Cluster<'_>, id: u32) -> io::Result<&'c process::ChildGuard> {
    cluster
        .followers
        .iter()
        .find(|(f, _)| *f == id)
        .map(|(_, s)| &s.child)
        .ok_or_else(|| io::Error::other(format!("follower {id} is not running")))
}

/// A log line without its timestamp and level (`... [INFO] message`).
fn log_message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, msg)| msg)
}

/// Waits until follower `id`'s `INFO` shows `seq` equal to `target` and
/// `leader_link up`.
fn wait_caught_up(
    cluster: &mut Cluster<'_>,
    id: u32,
    target: u64,
    wait: Duration,
) -> io::Result<()> {
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
        Ok(if seq == target && link == "up" {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(format!("seq {seq}, leader_link {link}"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_log_prefixes() {
        assert_eq!(
            log_message("12:00:01 [INFO] 127.0.0.1:5000: leader accepted; catching up"),
            "127.0.0.1:5000: leader accepted; catching up"
        );
        assert_eq!(log_message("no prefix"), "no prefix");
    }

    #[test]
    fn snapshot_line_compares_with_the_copy() {
        let copy = CopyReport {
            bytes: 100_000_000,
            elapsed: Duration::from_secs(1),
        };
        let line = snapshot_line(1000, 1000, &copy, Duration::from_millis(1500), true);
        assert!(line.contains("snapshot / copy = 1.50"), "{line}");
        assert!(!line.contains("above target"), "{line}");
        let line = snapshot_line(1000, 1000, &copy, Duration::from_secs(3), false);
        assert!(line.contains("above target"), "{line}");
        assert!(line.contains("unconfirmed"), "{line}");
    }
}
