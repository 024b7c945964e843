//! The benchmark suite: runs the standard cases against fresh keyval
//! leaders (and, when `redis-server` is available, the same cases against
//! fresh Redis instances) in rounds, the side that goes first alternating,
//! prints a comparison table of medians and per-round ratios, and runs
//! the extra cases: GET latency during compaction, restart time of a
//! 1M-key log, and resident memory for 1M keys. Then the same comparison
//! with Redis's own load generator, `redis-benchmark` (see
//! [`redis_benchmark`]). The replication cases (leader alone vs. with
//! followers, lag, snapshot, catch-up) live in [`replication`] and run
//! last.
//!
//! Servers live in [`Server`] values whose [`crate::process::Process`]
//! kills the child on drop, so every exit path (including `?`) reaps them.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use keyval_testkit::LineClient;

use crate::client::{self, info_u64, Redis};
use crate::load::{self, Driver, Limit, LoadConfig, LoadReport, Workload};
use crate::process::{self, RedisPersistence, Server};
use crate::wire::Protocol;

mod redis_benchmark;
mod replication;

/// Connections used by every suite case.
const CONNECTIONS: usize = 50;
/// Key space of the standard cases.
const KEYS: u64 = 100_000;
/// Value size of every case.
const VALUE_SIZE: usize = 100;
/// Key count of the extra cases.
const BIG_KEYS: u64 = 1_000_000;
/// How long a fresh server may take to start serving.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long a restart on a 1M-key log may take.
const RESTART_WAIT: Duration = Duration::from_secs(300);
/// How long a server may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(60);
/// Longest GET load while waiting for a compaction to finish.
const COMPACTION_WAIT: Duration = Duration::from_secs(300);
/// Pipeline depth used for bulk loading in the extra cases.
const LOAD_PIPELINE: usize = 16;
/// Writes a stopped follower misses in the catch-up case.
const CATCH_UP_WRITES: u64 = 100_000;
/// `--quick` shrinks the snapshot and catch-up cases by this factor.
const QUICK_SHRINK: u64 = 10;

/// A part of the suite that `--only` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The standard cases, against Redis too when it is available.
    Standard,
    /// The 1M-key cases: compaction, restart, memory.
    Extras,
    /// SET and GET by `redis-benchmark`, against keyval and Redis.
    RedisBenchmark,
    /// Leader alone vs. with followers, lag, snapshot, catch-up.
    Replication,
}

/// Options of `keyval-bench suite`.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Path of the keyval server binary.
    pub keyval_bin: PathBuf,
    /// `auto`, a command name on PATH, or a path to `redis-server`.
    pub redis_bin: String,
    /// Skip the extra (slow) cases and shrink the replication ones.
    pub quick: bool,
    /// Length of each measured case.
    pub case_duration: Duration,
    /// Rounds of the standard, redis-benchmark and replication comparisons
    /// (at least 1).
    pub rounds: usize,
    /// Run only this part (every part, in order, when `None`).
    pub only: Option<Part>,
}

impl SuiteOptions {
    fn runs(&self, part: Part) -> bool {
        self.only.is_none_or(|only| only == part)
    }
}

/// How a case's server must persist writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Every acknowledged write is fsynced (keyval `--fsync always`, Redis
    /// `appendfsync always`).
    Fsync,
    /// Writes are not fsynced (keyval `--fsync no`, Redis without AOF).
    NoFsync,
    /// Read-only case: keyval uses its durable leader, Redis a fresh
    /// instance without persistence.
    ReadOnly,
}

/// One standard case.
struct Case {
    name: &'static str,
    workload: Workload,
    pipeline: usize,
    durability: Durability,
    /// Every key must exist before the case (preloaded once per server).
    needs_preload: bool,
}

/// The standard cases, in table order.
const CASES: [Case; 6] = [
    Case {
        name: "PUT fsync=always p1",
        workload: Workload::Put,
        pipeline: 1,
        durability: Durability::Fsync,
        needs_preload: false,
    },
    Case {
        name: "PUT fsync=always p16",
        workload: Workload::Put,
        pipeline: 16,
        durability: Durability::Fsync,
        needs_preload: false,
    },
    Case {
        name: "GET p1",
        workload: Workload::Get,
        pipeline: 1,
        durability: Durability::ReadOnly,
        needs_preload: true,
    },
    Case {
        name: "GET p16",
        workload: Workload::Get,
        pipeline: 16,
        durability: Durability::ReadOnly,
        needs_preload: true,
    },
    Case {
        name: "PUT fsync=no p16",
        workload: Workload::Put,
        pipeline: 16,
        durability: Durability::NoFsync,
        needs_preload: false,
    },
    Case {
        name: "mixed 50/50 p16",
        workload: Workload::Mixed,
        pipeline: 16,
        durability: Durability::Fsync,
        needs_preload: true,
    },
];

/// Which server a set of cases runs against.
#[derive(Clone, Copy)]
enum Target<'a> {
    Keyval(&'a Path),
    Redis(&'a Path),
}

impl Target<'_> {
    fn name(&self) -> &'static str {
        match self {
            Target::Keyval(_) => "keyval",
            Target::Redis(_) => "redis",
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Target::Keyval(_) => Protocol::Keyval,
            Target::Redis(_) => Protocol::Resp,
        }
    }

    /// The server instance a case of `durability` runs on: keyval serves
    /// the read-only cases from its durable leader.
    fn instance(&self, durability: Durability) -> Durability {
        match (self, durability) {
            (Target::Keyval(_), Durability::ReadOnly) => Durability::Fsync,
            _ => durability,
        }
    }

    /// Starts a fresh server for `instance` in a new temporary directory.
    fn start(&self, instance: Durability) -> io::Result<Server> {
        let dir = TempDir::new()?;
        match self {
            Target::Keyval(bin) => {
                let fsync = if instance == Durability::NoFsync {
                    "no"
                } else {
                    "always"
                };
                process::start_keyval(bin, dir, fsync, &[], START_WAIT)
            }
            Target::Redis(bin) => {
                let p = if instance == Durability::Fsync {
                    RedisPersistence::AofAlways
                } else {
                    RedisPersistence::None
                };
                process::start_redis(bin, dir, p, START_WAIT)
            }
        }
    }
}

/// Outcome of one case against one server.
type CaseResult = Result<LoadReport, String>;

/// Runs the whole suite, printing results to stdout. Fails (after printing
/// everything) if any case failed.
pub fn run(opts: &SuiteOptions) -> io::Result<()> {
    if !opts.keyval_bin.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("keyval binary {} not found", opts.keyval_bin.display()),
        ));
    }
    let mut failed = false;
    let with_redis = [Part::Standard, Part::Extras, Part::RedisBenchmark];
    if with_redis.iter().any(|&p| opts.runs(p)) {
        // Before any case runs: a Redis named but missing fails at once.
        let redis = process::resolve_redis(&opts.redis_bin)
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        println!("{}", redis_line(&opts.redis_bin, redis.as_deref()));
        if opts.runs(Part::Standard) || opts.runs(Part::Extras) {
            failed |= run_standard_and_extras(opts, redis.as_deref()).is_err();
        }
        if opts.runs(Part::RedisBenchmark) {
            if opts.only.is_none() {
                println!();
            }
            failed |= redis_benchmark::run(
                &opts.keyval_bin,
                &opts.redis_bin,
                redis.as_deref(),
                opts.rounds,
            )
            .is_err();
        }
    }
    if opts.runs(Part::Replication) {
        let shrink = if opts.quick { QUICK_SHRINK } else { 1 };
        let repl = replication::ReplicationOptions {
            keyval_bin: opts.keyval_bin.clone(),
            case_duration: opts.case_duration,
            rounds: opts.rounds,
            snapshot_keys: BIG_KEYS / shrink,
            catch_up_writes: CATCH_UP_WRITES / shrink,
        };
        if opts.only.is_none() {
            println!();
        }
        if let Err(e) = replication::run(&repl) {
            println!("{e}");
            failed = true;
        }
    }
    failed_if(failed, "some suite cases failed")
}

/// The standard cases (against Redis too, if found) and the extra cases,
/// as `opts` selects them. Fails (after printing everything) if any failed.
fn run_standard_and_extras(opts: &SuiteOptions, redis: Option<&Path>) -> io::Result<()> {
    let mut failed = false;
    if opts.runs(Part::Standard) {
        println!(
            "# {} connections, {} keys, {}-byte values, {} rounds of {:.1} s per case",
            CONNECTIONS,
            KEYS,
            VALUE_SIZE,
            opts.rounds,
            opts.case_duration.as_secs_f64()
        );
        // kv[round][case], rd[round][case]
        let mut kv: Vec<Vec<CaseResult>> = Vec::new();
        let mut rd: Vec<Vec<CaseResult>> = Vec::new();
        for round in 1..=opts.rounds {
            println!("round {round} of {}", opts.rounds);
            for target in round_order(round, &opts.keyval_bin, redis) {
                let results = run_cases(target, opts.case_duration);
                match target {
                    Target::Keyval(_) => kv.push(results),
                    Target::Redis(_) => rd.push(results),
                }
            }
        }
        println!();
        let rd = redis.is_some().then_some(&rd[..]);
        print!("{}", format_table(&kv, rd, opts.case_duration));
        if redis.is_none() {
            println!("(no Redis: keyval figures only)");
        }
        failed |= kv
            .iter()
            .chain(rd.into_iter().flatten())
            .flatten()
            .any(Result::is_err);
    }

    if opts.runs(Part::Extras) {
        // `--only extras` runs them even with `--quick`.
        if opts.quick && opts.only.is_none() {
            println!("(--quick: extra cases skipped)");
        } else {
            println!();
            if let Err(e) = run_extras(&opts.keyval_bin, redis) {
                println!("extra cases failed: {e}");
                failed = true;
            }
        }
    }
    failed_if(failed, "some suite cases failed")
}

/// The suite's first line: which Redis the keyval figures are compared
/// with, or why there is none and how to get one.
fn redis_line(spec: &str, redis: Option<&Path>) -> String {
    match (redis, spec) {
        (Some(bin), _) => format!(
            "# comparing with Redis {} ({})",
            process::redis_version(bin).unwrap_or_else(|| "of unknown version".to_string()),
            bin.display()
        ),
        (None, "none") => "# no Redis comparison: --redis-bin none".to_string(),
        (None, _) => "# no Redis comparison: no redis-server on PATH; install it (Debian, Ubuntu: \
                      apt-get install redis-server) to compare, or pass --redis-bin none"
            .to_string(),
    }
}

/// `Err(msg)` if `failed`: the cases have printed their own errors.
fn failed_if(failed: bool, msg: &str) -> io::Result<()> {
    if failed {
        Err(io::Error::other(msg.to_string()))
    } else {
        Ok(())
    }
}

/// The sides of the standard comparison in the order that round `round`
/// (counted from 1) runs them: keyval first in odd rounds, Redis first in
/// even ones, so that neither side always runs in the same stretch of a
/// changing machine load. Each round's ratios then compare figures taken
/// one side's cases apart (about a minute at 10 s a case), not a whole run
/// apart.
fn round_order<'a>(round: usize, keyval: &'a Path, redis: Option<&'a Path>) -> Vec<Target<'a>> {
    let mut order = vec![Target::Keyval(keyval)];
    if let Some(redis) = redis {
        if round % 2 == 1 {
            order.push(Target::Redis(redis));
        } else {
            order.insert(0, Target::Redis(redis));
        }
    }
    order
}

/// Runs every standard case against `target`, one fresh server per
/// instance kind, and returns the results in [`CASES`] order.
fn run_cases(target: Target<'_>, case_duration: Duration) -> Vec<CaseResult> {
    let mut results: Vec<Option<CaseResult>> = CASES.iter().map(|_| None).collect();
    let mut instances: Vec<Durability> = Vec::new();
    for case in &CASES {
        let inst = target.instance(case.durability);
        if !instances.contains(&inst) {
            instances.push(inst);
        }
    }
    for inst in instances {
        let members: Vec<usize> = (0..CASES.len())
            .filter(|&i| target.instance(CASES[i].durability) == inst)
            .collect();
        let mut server = match target.start(inst) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot start {}: {e}", target.name());
                for i in members {
                    results[i] = Some(Err(format!("server did not start: {e}")));
                }
                continue;
            }
        };
        let mut preloaded = false;
        for i in members {
            let case = &CASES[i];
            let cfg = LoadConfig {
                addr: server.addr,
                protocol: target.protocol(),
                connections: CONNECTIONS,
                pipeline: case.pipeline,
                workload: case.workload,
                keys: KEYS,
                value_size: VALUE_SIZE,
                limit: Limit::Duration(case_duration),
                preload: case.needs_preload && !preloaded,
            };
            log::info!("{} {}: running", target.name(), case.name);
            let result = load::run(&cfg).map_err(|e| match server.child.check_alive() {
                Ok(()) => e.to_string(),
                Err(dead) => format!("{e}; {dead}"),
            });
            match &result {
                Ok(r) => {
                    preloaded |= cfg.preload;
                    println!("{:<7} {:<22} {r}", target.name(), case.name);
                }
                Err(e) => println!("{:<7} {:<22} FAILED: {e}", target.name(), case.name),
            }
            results[i] = Some(result);
        }
        // Dropping the server kills and reaps it before its directory goes.
        drop(server);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not run".to_string())))
        .collect()
}

/// `p50 / p99 / p999` in microseconds.
fn latencies(r: &LoadReport) -> String {
    let us = |q| r.latency_at(q).as_secs_f64() * 1e6;
    format!("{:.0} / {:.0} / {:.0}", us(0.5), us(0.99), us(0.999))
}

/// Ops/s of each round of case `case` (`None` where it failed).
fn ops_by_round(rounds: &[Vec<CaseResult>], case: usize) -> Vec<Option<f64>> {
    rounds
        .iter()
        .map(|r| r[case].as_ref().ok().map(LoadReport::ops_per_sec))
        .collect()
}

/// The results of case `case`, round by round.
fn case_by_round(rounds: &[Vec<CaseResult>], case: usize) -> Vec<CaseResult> {
    rounds.iter().map(|r| r[case].clone()).collect()
}

/// Renders the comparison table over the rounds (keyval only when
/// `redis` is `None`): median ops/s, the median and range of the
/// per-round ratios, and the latencies of the round with the median ratio.
fn format_table(
    kv: &[Vec<CaseResult>],
    redis: Option<&[Vec<CaseResult>]>,
    case_duration: Duration,
) -> String {
    let mut out = format!(
        "Standard cases ({CONNECTIONS} connections, {KEYS} keys, {VALUE_SIZE}-byte values, \
         {} rounds of {:.1} s per case)\n",
        kv.len(),
        case_duration.as_secs_f64()
    );
    let ops = |v: Option<f64>| v.map_or_else(|| "FAILED".to_string(), |v| format!("{v:.0}"));
    let lat = |r: Option<&CaseResult>| match r {
        Some(Ok(r)) => latencies(r),
        _ => "-".to_string(),
    };
    let errs = |results: &[CaseResult]| {
        let measured = results.iter().flatten();
        match measured.clone().count() {
            0 => "-".to_string(),
            _ => measured.map(|r| r.errors).sum::<u64>().to_string(),
        }
    };
    let range = |sum: &RoundSummary, digits: usize| {
        sum.range.map_or_else(
            || "-".to_string(),
            |(lo, hi)| format!("{lo:.digits$}-{hi:.digits$}"),
        )
    };
    match redis {
        Some(rd) => {
            let _ = writeln!(
                out,
                "{:<22} {:>12} {:>12} {:>6} {:>11} {:>6}  {:<24} {:<24} {:>7}",
                "case",
                "keyval ops/s",
                "redis ops/s",
                "kv/rd",
                "per round",
                "rounds",
                "keyval p50/p99/p999 us",
                "redis p50/p99/p999 us",
                "errors"
            );
            for (i, case) in CASES.iter().enumerate() {
                let sum = summarize_rounds(&ops_by_round(rd, i), &ops_by_round(kv, i));
                let (kv_case, rd_case) = (case_by_round(kv, i), case_by_round(rd, i));
                let _ = writeln!(
                    out,
                    "{:<22} {:>12} {:>12} {:>6} {:>11} {:>6}  {:<24} {:<24} {:>7}",
                    case.name,
                    ops(sum.compared),
                    ops(sum.base),
                    sum.ratio
                        .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
                    range(&sum, 2),
                    format!("{}/{}", sum.rounds, kv.len()),
                    lat(sum.median_round.and_then(|r| kv_case.get(r))),
                    lat(sum.median_round.and_then(|r| rd_case.get(r))),
                    format!("{}/{}", errs(&kv_case), errs(&rd_case)),
                );
            }
            out.push_str(
                "(ops/s: medians over the rounds; kv/rd: median of the per-round ratios, each \
                 round's keyval ops/s over that round's Redis ops/s;\n per round: lowest-highest \
                 of those ratios; rounds: rounds that gave a ratio; latencies: the round with the \
                 median ratio;\n errors: summed over the rounds, keyval/Redis; keyval ran first \
                 in odd rounds, Redis in even ones)\n",
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{:<22} {:>12} {:>15} {:>6}  {:<24} {:>6}",
                "case", "keyval ops/s", "per round", "rounds", "keyval p50/p99/p999 us", "errors"
            );
            for (i, case) in CASES.iter().enumerate() {
                // Against a baseline of 1 in every round, the ratios are
                // the figures themselves: their median, range and round.
                let ones = vec![Some(1.0); kv.len()];
                let sum = summarize_rounds(&ones, &ops_by_round(kv, i));
                let kv_case = case_by_round(kv, i);
                let _ = writeln!(
                    out,
                    "{:<22} {:>12} {:>15} {:>6}  {:<24} {:>6}",
                    case.name,
                    ops(sum.compared),
                    range(&sum, 0),
                    format!("{}/{}", sum.rounds, kv.len()),
                    lat(sum.median_round.and_then(|r| kv_case.get(r))),
                    errs(&kv_case),
                );
            }
            out.push_str(
                "(ops/s: median over the rounds; per round: lowest-highest ops/s; rounds: rounds \
                 that measured it;\n latencies: the round with the median ops/s; errors: summed \
                 over the rounds)\n",
            );
        }
    }
    for (name, rounds) in [("keyval", Some(kv)), ("redis", redis)] {
        let Some(rounds) = rounds else {
            continue;
        };
        for (i, case) in CASES.iter().enumerate() {
            for (failed, e) in failures(&case_by_round(rounds, i)) {
                let plural = if failed.len() > 1 { "s" } else { "" };
                let failed: Vec<String> = failed.iter().map(usize::to_string).collect();
                let _ = writeln!(
                    out,
                    "{name} {}, round{plural} {}: {e}",
                    case.name,
                    failed.join(", ")
                );
            }
        }
    }
    out
}

/// What the INFO poller saw while a compaction was expected.
#[derive(Default)]
struct CompactionWatch {
    /// Set when `compacting` was seen as 1 (or the compaction finished).
    started: AtomicBool,
    /// Set when `compactions` incremented (or polling failed).
    finished: AtomicBool,
    /// Tells the poller to stop.
    quit: AtomicBool,
    started_at: Mutex<Option<Instant>>,
    finished_at: Mutex<Option<Instant>>,
    error: Mutex<Option<String>>,
}

/// Sets an [`AtomicBool`] when dropped, so a scoped thread is told to stop
/// on every exit path of the scope.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Polls keyval `INFO` every 10 ms until `compactions` exceeds `base`, the
/// watch is told to quit, or `COMPACTION_WAIT` plus a margin passes.
fn poll_compaction(mut client: LineClient, base: u64, watch: &CompactionWatch) {
    let deadline = Instant::now() + COMPACTION_WAIT + Duration::from_secs(600);
    let fail = |msg: String| {
        if let Ok(mut e) = watch.error.lock() {
            *e = Some(msg);
        }
        watch.finished.store(true, Ordering::Relaxed);
    };
    while !watch.quit.load(Ordering::Relaxed) {
        if Instant::now() >= deadline {
            fail("INFO poller gave up".to_string());
            return;
        }
        let info = match client::info(&mut client) {
            Ok(i) => i,
            Err(e) => return fail(format!("INFO failed: {e}")),
        };
        let (compacting, done) = match (
            info_u64(&info, "compacting"),
            info_u64(&info, "compactions"),
        ) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) => return fail(e.to_string()),
        };
        let now = Instant::now();
        if (compacting == 1 || done > base) && !watch.started.swap(true, Ordering::Relaxed) {
            if let Ok(mut s) = watch.started_at.lock() {
                *s = Some(now);
            }
        }
        if done > base {
            if let Ok(mut f) = watch.finished_at.lock() {
                *f = Some(now);
            }
            watch.finished.store(true, Ordering::Relaxed);
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the extra cases (a) GET p99 during compaction, (b) restart of a
/// 1M-key log, (c) resident memory for 1M keys, printing one line each.
fn run_extras(keyval_bin: &Path, redis: Option<&Path>) -> io::Result<()> {
    let mut rng = fastrand::Rng::new();
    let value_a = load::random_value(&mut rng, VALUE_SIZE);
    let value_b = load::random_value(&mut rng, VALUE_SIZE);
    let extra = ["--compact-min-bytes", "1", "--compact-ratio", "2.0"];
    // Same durability as the standard leader.
    let fsync = "always";
    let server = process::start_keyval(keyval_bin, TempDir::new()?, fsync, &extra, START_WAIT)?;
    let addr = server.addr;

    // (c, keyval side) load 1M distinct keys and read VmRSS.
    let mut writer = Driver::connect(addr, Protocol::Keyval, CONNECTIONS)?;
    log::info!("loading {BIG_KEYS} keys into keyval");
    let r = writer.preload(BIG_KEYS, &value_a, LOAD_PIPELINE)?;
    log::info!("keyval load: {r}");
    let kv_rss = keyval_testkit::rss_bytes(server.child.pid())?;

    // (a) overwrite everything so the log passes 2x live data, then GET
    // while compaction runs.
    let mut info_client = client::keyval(addr)?;
    let info0 = client::info(&mut info_client)?;
    let base = info_u64(&info0, "compactions")?;
    log::info!(
        "before overwrite: keys {}, log_bytes {}, compactions {base}",
        info0.get("keys").map_or("?", String::as_str),
        info0.get("log_bytes").map_or("?", String::as_str)
    );
    let mut reader = Driver::connect(addr, Protocol::Keyval, CONNECTIONS)?;
    let watch = CompactionWatch::default();
    let (during, after, overwrite_done) = thread::scope(|s| -> io::Result<_> {
        let _quit = SetOnDrop(&watch.quit);
        let poller = s.spawn(|| poll_compaction(info_client, base, &watch));
        log::info!("overwriting {BIG_KEYS} keys");
        let r = writer.preload(BIG_KEYS, &value_b, LOAD_PIPELINE)?;
        log::info!("overwrite: {r}");
        // The trigger may need slightly more than exactly 2x; keep
        // overwriting in 5 % steps (bounded) until a compaction starts.
        let step = BIG_KEYS / 20;
        let mut extra_rounds = 0;
        while !watch.started.load(Ordering::Relaxed) && extra_rounds < 20 {
            thread::sleep(Duration::from_millis(50));
            if watch.started.load(Ordering::Relaxed) {
                break;
            }
            let start = (extra_rounds * step) % BIG_KEYS;
            writer.preload_range(start, start + step, &value_a, LOAD_PIPELINE)?;
            extra_rounds += 1;
        }
        let overwrite_done = Instant::now();
        if !watch.started.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "no compaction started after overwriting the key space",
            ));
        }
        let during = if watch.finished.load(Ordering::Relaxed) {
            None
        } else {
            log::info!("compaction running; GET load until it finishes");
            Some(reader.measure(
                Workload::Get,
                BIG_KEYS,
                &value_a,
                1,
                Limit::Duration(COMPACTION_WAIT),
                &watch.finished,
            )?)
        };
        watch.quit.store(true, Ordering::Relaxed);
        let _ = poller.join();
        let baseline_len = during
            .as_ref()
            .map_or(Duration::from_secs(3), |d| d.elapsed)
            .clamp(Duration::from_secs(2), Duration::from_secs(10));
        let after = reader.measure(
            Workload::Get,
            BIG_KEYS,
            &value_a,
            1,
            Limit::Duration(baseline_len),
            &AtomicBool::new(false),
        )?;
        Ok((during, after, overwrite_done))
    })?;
    if let Ok(Some(e)) = watch.error.lock().map(|e| e.clone()) {
        return Err(io::Error::other(format!("compaction watch: {e}")));
    }
    let started_at = watch.started_at.lock().ok().and_then(|s| *s);
    let finished_at = watch.finished_at.lock().ok().and_then(|s| *s);
    let compaction_secs = match (started_at, finished_at) {
        (Some(s), Some(f)) => format!("{:.2} s", f.duration_since(s).as_secs_f64()),
        _ => "?".to_string(),
    };
    match &during {
        Some(d) => println!(
            "GET p99 during compaction: {} (p50 {}, p999 {}, {} GETs over {:.2} s, {} errors; \
             compaction took ~{compaction_secs}); after compaction: p99 {}, p50 {}",
            load::fmt_latency(d.latency_at(0.99)),
            load::fmt_latency(d.latency_at(0.5)),
            load::fmt_latency(d.latency_at(0.999)),
            d.ok,
            d.elapsed.as_secs_f64(),
            d.errors,
            load::fmt_latency(after.latency_at(0.99)),
            load::fmt_latency(after.latency_at(0.5)),
        ),
        None => println!(
            "GET p99 during compaction: not measured, the compaction (~{compaction_secs}) \
             finished {:.2} s after the overwrite, before the GET load started; \
             GET p99 after compaction: {}",
            finished_at.map_or(0.0, |f| f
                .saturating_duration_since(overwrite_done)
                .as_secs_f64()),
            load::fmt_latency(after.latency_at(0.99)),
        ),
    }
    drop(writer);
    drop(reader);

    // (b) restart on the same data directory.
    let keys_before =
        client::info(&mut client::keyval(addr)?).and_then(|i| info_u64(&i, "keys"))?;
    let Server { mut child, dir, .. } = server;
    let graceful = child.terminate(STOP_WAIT)?;
    drop(child);
    let (server, restart) = process::restart_keyval(keyval_bin, dir, fsync, &extra, RESTART_WAIT)?;
    let keys_after =
        client::info(&mut client::keyval(server.addr)?).and_then(|i| info_u64(&i, "keys"))?;
    let kv_rss_restarted = keyval_testkit::rss_bytes(server.child.pid())?;
    println!(
        "restart of a {keys_before}-key log: {:.2} s from spawn to HELLO SERVER \
         (stopped by {}, keys after restart {keys_after})",
        restart.as_secs_f64(),
        if graceful {
            "SIGTERM"
        } else {
            "SIGKILL after SIGTERM timed out"
        },
    );
    if keys_after != keys_before {
        log::warn!("key count changed across restart: {keys_before} -> {keys_after}");
    }
    drop(server);

    // (c) Redis side of the memory comparison.
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let redis_rss = match redis {
        Some(bin) => Some(redis_rss_for_big_load(bin, &value_a)?),
        None => None,
    };
    match redis_rss {
        Some(rrss) => println!(
            "resident memory for 1M keys: keyval {:.1} MB, redis {:.1} MB, ratio {:.2} \
             (keyval after restart {:.1} MB)",
            mb(kv_rss),
            mb(rrss),
            kv_rss as f64 / rrss as f64,
            mb(kv_rss_restarted),
        ),
        None => println!(
            "resident memory for 1M keys: keyval {:.1} MB (after restart {:.1} MB); \
             no Redis to compare",
            mb(kv_rss),
            mb(kv_rss_restarted),
        ),
    }
    Ok(())
}

/// Loads [`BIG_KEYS`] keys into a fresh Redis without persistence and
/// returns its resident memory in bytes.
fn redis_rss_for_big_load(bin: &Path, value: &[u8]) -> io::Result<u64> {
    let server = process::start_redis(bin, TempDir::new()?, RedisPersistence::None, START_WAIT)?;
    let mut driver = Driver::connect(server.addr, Protocol::Resp, CONNECTIONS)?;
    log::info!("loading {BIG_KEYS} keys into redis");
    let r = driver.preload(BIG_KEYS, value, LOAD_PIPELINE)?;
    log::info!("redis load: {r}");
    let n = Redis::connect(server.addr)?.dbsize()?;
    if n != BIG_KEYS as i64 {
        log::warn!("redis holds {n} keys, expected {BIG_KEYS}");
    }
    keyval_testkit::rss_bytes(server.child.pid())
}

/// The median of `values` (the mean of the middle two when their count is
/// even), or `None` when there are none.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest and largest of `values`, or `None` when there are none.
fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().min_by(f64::total_cmp)?;
    let max = values.iter().copied().max_by(f64::total_cmp)?;
    Some((min, max))
}

/// The position in `values` of their median: the lower of the middle two
/// when their count is even, so that it names a value that was measured.
/// `None` when there are none.
fn median_index(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get(values.len().checked_sub(1)? / 2).copied()
}

/// A comparison over its rounds: a figure against its baseline (a
/// replicating leader against the leader alone, keyval against Redis, a
/// snapshot against a plain copy), both measured in every round.
#[derive(Debug, PartialEq)]
struct RoundSummary {
    /// Median of the baseline over the rounds that measured it.
    base: Option<f64>,
    /// Median of the compared figure over the rounds that measured it.
    compared: Option<f64>,
    /// Median of the per-round ratios, compared over base.
    ratio: Option<f64>,
    /// Smallest and largest per-round ratio.
    range: Option<(f64, f64)>,
    /// Rounds that measured both (and the base above 0), so gave a ratio.
    rounds: usize,
    /// The round (index) whose ratio is the median, see [`median_index`].
    median_round: Option<usize>,
}

/// Summarises a comparison from its per-round figures (`None`: that round
/// failed). Each round's ratio uses that round's own baseline.
fn summarize_rounds(base: &[Option<f64>], compared: &[Option<f64>]) -> RoundSummary {
    let measured = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let (rounds, ratios): (Vec<usize>, Vec<f64>) = base
        .iter()
        .zip(compared)
        .enumerate()
        .filter_map(|(i, pair)| match pair {
            (Some(b), Some(c)) if *b > 0.0 => Some((i, c / b)),
            _ => None,
        })
        .unzip();
    RoundSummary {
        base: median(&measured(base)),
        compared: median(&measured(compared)),
        ratio: median(&ratios),
        range: min_max(&ratios),
        rounds: ratios.len(),
        median_round: median_index(&ratios).map(|i| rounds[i]),
    }
}

/// The errors of the rounds that failed, each distinct message once with
/// the rounds (1-based) it ended.
fn failures<T>(outcomes: &[Result<T, String>]) -> Vec<(Vec<usize>, &str)> {
    let mut out: Vec<(Vec<usize>, &str)> = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        let Err(e) = o else {
            continue;
        };
        match out.iter_mut().find(|(_, msg)| *msg == e.as_str()) {
            Some((rounds, _)) => rounds.push(i + 1),
            None => out.push((vec![i + 1], e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0]), Some(2.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn min_max_of_values() {
        assert_eq!(min_max(&[]), None);
        assert_eq!(min_max(&[0.5]), Some((0.5, 0.5)));
        assert_eq!(min_max(&[0.6, 0.44, 0.79]), Some((0.44, 0.79)));
    }

    #[test]
    fn median_index_names_a_measured_value() {
        assert_eq!(median_index(&[]), None);
        assert_eq!(median_index(&[7.0]), Some(0));
        assert_eq!(median_index(&[0.79, 0.44, 0.61]), Some(2));
        // Even count: the lower of the middle two.
        assert_eq!(median_index(&[0.4, 0.9, 0.7, 0.5]), Some(3));
    }

    #[test]
    fn each_round_is_compared_with_its_own_alone_figure() {
        // Round 2 is slow on both sides; its ratio is still 0.5.
        let alone = [Some(100.0), Some(40.0), Some(90.0)];
        let replicated = [Some(80.0), Some(20.0), Some(63.0)];
        let sum = summarize_rounds(&alone, &replicated);
        assert_eq!(sum.base, Some(90.0));
        assert_eq!(sum.compared, Some(63.0));
        assert_eq!(sum.ratio, Some(0.7));
        assert_eq!(sum.range, Some((0.5, 0.8)));
        assert_eq!(sum.rounds, 3);
        assert_eq!(sum.median_round, Some(2));
    }

    #[test]
    fn failed_rounds_give_no_ratio() {
        let alone = [Some(100.0), None, Some(0.0), Some(50.0)];
        let replicated = [Some(60.0), Some(70.0), Some(10.0), None];
        let sum = summarize_rounds(&alone, &replicated);
        assert_eq!(sum.base, Some(50.0));
        assert_eq!(sum.compared, Some(60.0));
        assert_eq!(sum.ratio, Some(0.6));
        assert_eq!(sum.range, Some((0.6, 0.6)));
        assert_eq!(sum.rounds, 1);
        assert_eq!(sum.median_round, Some(0));

        let none = summarize_rounds(&[None, None], &[Some(1.0), None]);
        assert_eq!(none.base, None);
        assert_eq!(none.ratio, None);
        assert_eq!(none.range, None);
        assert_eq!(none.rounds, 0);
        assert_eq!(none.median_round, None);
    }

    #[test]
    fn failures_are_grouped_by_message() {
        let outcomes: Vec<Result<u32, String>> = vec![
            Ok(1),
            Err("boom".to_string()),
            Err("not run".to_string()),
            Err("boom".to_string()),
        ];
        assert_eq!(
            failures(&outcomes),
            vec![(vec![2, 4], "boom"), (vec![3], "not run")]
        );
        assert!(failures::<u32>(&[Ok(1)]).is_empty());
    }

    #[test]
    fn the_first_line_names_the_redis_or_says_why_there_is_none() {
        let line = redis_line("auto", None);
        assert!(line.starts_with("# no Redis comparison: no redis-server on PATH"));
        assert!(line.contains("apt-get install redis-server"), "{line}");
        assert_eq!(
            redis_line("none", None),
            "# no Redis comparison: --redis-bin none"
        );

        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("redis-server");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'Redis server v=7.0.15 sha=0 bits=64'\n",
        )
        .unwrap();
        let mut mode = std::fs::metadata(&bin).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
        std::fs::set_permissions(&bin, mode).unwrap();
        let line = redis_line("auto", Some(&bin));
        assert_eq!(
            line,
            format!("# comparing with Redis 7.0.15 ({})", bin.display())
        );
    }

    /// A case result of `ok` requests in one second, every latency
    /// `latency_us`, with `errors` errors.
    fn report(ok: u64, latency_us: u64, errors: u64) -> CaseResult {
        let mut latency = crate::histogram::new();
        crate::histogram::record(&mut latency, latency_us * 1000);
        Ok(LoadReport {
            ok,
            not_found: 0,
            errors,
            unanswered: 0,
            elapsed: Duration::from_secs(1),
            latency,
        })
    }

    /// One round: case `i` gets `ops[i]` ops/s (every case is given).
    fn round(ops: [u64; CASES.len()], latency_us: u64) -> Vec<CaseResult> {
        ops.iter().map(|&n| report(n, latency_us, 0)).collect()
    }

    #[test]
    fn the_first_side_alternates_from_round_to_round() {
        let (kv, rd) = (Path::new("keyval"), Path::new("redis-server"));
        let names = |round| -> Vec<&str> {
            round_order(round, kv, Some(rd))
                .iter()
                .map(Target::name)
                .collect()
        };
        assert_eq!(names(1), ["keyval", "redis"]);
        assert_eq!(names(2), ["redis", "keyval"]);
        assert_eq!(names(3), ["keyval", "redis"]);
        let alone: Vec<&str> = round_order(2, kv, None).iter().map(Target::name).collect();
        assert_eq!(alone, ["keyval"]);
    }

    #[test]
    fn the_table_gives_medians_and_the_per_round_ratios() {
        // Round 2 is slow on both sides: its ratio (2.0) is still the
        // median, and its latencies are the ones shown.
        let kv = vec![
            round([300, 300, 300, 300, 300, 300], 100),
            round([100, 100, 100, 100, 100, 100], 200),
            round([240, 240, 240, 240, 240, 240], 300),
        ];
        let mut rd = vec![
            round([100, 100, 100, 100, 100, 100], 400),
            round([50, 50, 50, 50, 50, 50], 500),
            round([160, 160, 160, 160, 160, 160], 600),
        ];
        rd[2][5] = Err("redis-server exited early".to_string());
        rd[0][5] = Err("redis-server exited early".to_string());
        let table = format_table(&kv, Some(&rd), Duration::from_secs(10));
        assert!(table.contains("3 rounds of 10.0 s per case"), "{table}");
        let lines: Vec<&str> = table.lines().collect();
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        // PUT fsync=always p1: ratios 3.0, 2.0, 1.5.
        assert_eq!(
            cells[3..9],
            ["240", "100", "2.00", "1.50-3.00", "3/3", "200"],
            "{table}"
        );
        assert!(lines[2].contains("200 / 200 / 200"), "{table}");
        assert!(lines[2].contains("500 / 500 / 500"), "{table}");
        assert!(lines[2].ends_with("0/0"), "{table}");
        // The mixed case: only round 2 gave a ratio.
        let mixed = lines.iter().find(|l| l.starts_with("mixed")).unwrap();
        let cells: Vec<&str> = mixed.split_whitespace().collect();
        assert_eq!(
            cells[3..8],
            ["240", "50", "2.00", "2.00-2.00", "1/3"],
            "{table}"
        );
        assert!(mixed.ends_with("0/0"), "{table}");
        assert!(
            table.contains("redis mixed 50/50 p16, rounds 1, 3: redis-server exited early"),
            "{table}"
        );
        assert!(table.contains("keyval ran first in odd rounds"), "{table}");
    }

    #[test]
    fn without_redis_the_table_gives_the_range_of_keyval_figures() {
        let mut kv = vec![
            round([300, 300, 300, 300, 300, 300], 100),
            round([100, 100, 100, 100, 100, 100], 200),
            round([240, 240, 240, 240, 240, 240], 300),
        ];
        kv[1][0] = report(100, 200, 7);
        let table = format_table(&kv, None, Duration::from_secs(3));
        let lines: Vec<&str> = table.lines().collect();
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells[3..7], ["240", "100-300", "3/3", "300"], "{table}");
        assert!(lines[2].ends_with(" 7"), "{table}");
        assert!(!table.contains("redis"), "{table}");
    }
}
