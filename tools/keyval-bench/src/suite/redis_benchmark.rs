//! The suite's `redis-benchmark` part: keyval's Redis face and Redis
//! itself measured by Redis's own load generator rather than by ours.
//!
//! In every round, each side in turn (keyval first in odd rounds, Redis
//! first in even ones) gets a fresh durable server in a temp dir on a
//! loopback port: a keyval leader with `--fsync always`, or Redis with
//! `appendonly yes`, `appendfsync always` and `save ""`. Against it,
//! `redis-benchmark -t set,get -c 50 -d 100 -r 100000 --csv` runs once at
//! `-P 1` and once at `-P 16`, and its CSV gives requests per second and
//! p50/p99 latency per command. The table gives, per command and depth,
//! the medians of both sides, the median and range of the per-round
//! ratios (keyval over Redis), whether the median meets its target, and
//! the latencies of the round with the median ratio.
//!
//! The part is skipped, with a line that says why and how to get what is
//! missing, when there is no `redis-server` (as the standard comparison
//! is) or no `redis-benchmark`.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::{ChildGuard, Output};

use super::{failed_if, failures, round_order, summarize_rounds, Durability, Target};
use super::{CONNECTIONS, KEYS, VALUE_SIZE};
use crate::process::{self, Server};

/// One `redis-benchmark` run per round and side at each of these depths.
#[derive(Clone, Copy, Debug)]
struct Depth {
    /// `-P`: requests in flight per connection.
    pipeline: usize,
    /// `-n`: requests of each command.
    requests: u64,
    /// The median keyval/Redis ratio this depth should reach, at least.
    target: f64,
}

/// The depths, in the order each side runs them on its server. The
/// request counts make each command take one to a few seconds on the
/// machine of docs/benchmarks.md: from about 1.3 s (keyval's GETs at
/// `-P 16`) to 6 s (Redis's SETs at `-P 16`).
const DEPTHS: [Depth; 2] = [
    Depth {
        pipeline: 1,
        requests: 200_000,
        target: 1.0,
    },
    Depth {
        pipeline: 16,
        requests: 2_000_000,
        target: 1.5,
    },
];

/// The commands of every run, as `-t` names them and the CSV spells them.
const TESTS: [&str; 2] = ["SET", "GET"];

/// `-r`: keys are `key:<12 digits>` drawn from this many, so writes and
/// reads spread over a key space like the standard cases' (a GET then
/// finds about 86 % of the keys after the first run's 200k SETs, all of
/// them after the second's 2M).
const RANDOM_KEYS: u64 = KEYS;

/// The longest a run may take before it is killed: `redis-benchmark`
/// waits forever for a server that stopped answering.
const RUN_WAIT: Duration = Duration::from_secs(300);

/// How often a run's server is checked while `redis-benchmark` runs.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Lines of `redis-benchmark`'s stderr quoted when a run fails.
const STDERR_LINES: usize = 5;

/// What `redis-benchmark` prints to stderr when a connection is refused.
const CANNOT_CONNECT: &str = "Could not connect";

/// One command's figures from a `redis-benchmark --csv` run.
#[derive(Clone, Debug, PartialEq)]
struct CsvRow {
    /// The command, as the `test` column names it (`SET`, `GET`).
    test: String,
    /// Requests per second.
    rps: f64,
    /// Mean latency, ms.
    avg_ms: f64,
    /// Latency percentiles, ms.
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    /// Extremes of the latency, ms.
    min_ms: f64,
    max_ms: f64,
}

/// A run's rows, or why it gave none.
type RunOutcome = Result<Vec<CsvRow>, String>;

/// The columns a row is read from, by their header names.
const COLUMNS: [&str; 8] = [
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
];

/// Splits one CSV line into fields: a field in double quotes may hold
/// commas, and `""` inside it is one quote.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quote in {line:?}")),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("{c:?} after a quoted field in {line:?}")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Reads the output of `redis-benchmark --csv`: a header line naming the
/// columns (`"test","rps","avg_latency_ms",...`), then one line per
/// command. Columns are found by name, so their order and any extra ones
/// do not matter; lines before the header (a warning) are skipped.
fn parse_csv(text: &str) -> Result<Vec<CsvRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = loop {
        let line = lines
            .next()
            .ok_or_else(|| "no CSV header in redis-benchmark's output".to_string())?;
        let fields = csv_fields(line).unwrap_or_default();
        if fields.iter().any(|f| f == "test") {
            break fields;
        }
    };
    let mut at = [0; COLUMNS.len()];
    for (i, name) in COLUMNS.iter().enumerate() {
        at[i] = header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no {name} column in the CSV header"))?;
    }
    let mut rows = Vec::new();
    for line in lines {
        let fields = csv_fields(line)?;
        if fields.len() != header.len() {
            return Err(format!(
                "{} fields where the header has {}: {line:?}",
                fields.len(),
                header.len()
            ));
        }
        let num = |col: usize| -> Result<f64, String> {
            let field = &fields[at[col]];
            field
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{} is {field:?} in {line:?}", COLUMNS[col]))
        };
        rows.push(CsvRow {
            test: fields[at[0]].clone(),
            rps: num(1)?,
            avg_ms: num(2)?,
            min_ms: num(3)?,
            p50_ms: num(4)?,
            p95_ms: num(5)?,
            p99_ms: num(6)?,
            max_ms: num(7)?,
        });
    }
    if rows.is_empty() {
        return Err("no rows after the CSV header".to_string());
    }
    Ok(rows)
}

/// The row of `test` in a run's outcome, or why there is none.
fn row_of<'a>(outcome: &'a RunOutcome, test: &str) -> Result<&'a CsvRow, String> {
    match outcome {
        Ok(rows) => rows
            .iter()
            .find(|r| r.test == test)
            .ok_or_else(|| format!("no {test} row in redis-benchmark's output")),
        Err(e) => Err(e.clone()),
    }
}

/// The arguments of one run against `port` at `depth`.
fn benchmark_args(port: u16, depth: Depth) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        &TESTS.join(",").to_lowercase(),
        "-c",
        &CONNECTIONS.to_string(),
        "-d",
        &VALUE_SIZE.to_string(),
        "-r",
        &RANDOM_KEYS.to_string(),
        "-n",
        &depth.requests.to_string(),
        "-P",
        &depth.pipeline.to_string(),
        "--csv",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Where `redis-benchmark` is: beside the `redis-server` the suite
/// compares with (a Redis built or unpacked in a directory of its own),
/// else on the search path `path`.
fn find_benchmark(redis_server: &Path, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let beside = redis_server.with_file_name("redis-benchmark");
    if redis_server
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty())
        && beside.is_file()
    {
        return Some(beside);
    }
    process::find_executable("redis-benchmark", path)
}

/// The line that says why the part is skipped and how to get what it
/// lacks, or `None` when it can run.
fn skip_line(redis_spec: &str, redis: Option<&Path>, benchmark: Option<&Path>) -> Option<String> {
    let why = match (redis, benchmark) {
        (Some(_), Some(_)) => return None,
        (None, _) if redis_spec == "none" => {
            "no Redis to compare with: --redis-bin none".to_string()
        }
        (None, _) => "no redis-server on PATH to compare with; install it (Debian, Ubuntu: \
                      apt-get install redis-server), or pass --redis-bin"
            .to_string(),
        (Some(server), None) => format!(
            "no redis-benchmark beside {} or on PATH; install it (Debian, Ubuntu: \
             apt-get install redis-tools)",
            server.display()
        ),
    };
    Some(format!("# redis-benchmark part skipped: {why}"))
}

/// The version `redis-benchmark --version` prints (`redis-benchmark
/// 7.0.15` gives `7.0.15`).
fn benchmark_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
}

/// Runs the part and prints its table; a line saying why instead when
/// there is no Redis or no `redis-benchmark`.
///
/// # Errors
/// After printing everything, if any run failed.
pub fn run(
    keyval_bin: &Path,
    redis_spec: &str,
    redis: Option<&Path>,
    rounds: usize,
) -> io::Result<()> {
    let benchmark = redis.and_then(|r| find_benchmark(r, std::env::var_os("PATH")));
    if let Some(line) = skip_line(redis_spec, redis, benchmark.as_deref()) {
        println!("{line}");
        return Ok(());
    }
    let (Some(redis), Some(benchmark)) = (redis, benchmark) else {
        return Ok(());
    };
    println!(
        "# redis-benchmark {} ({}), {rounds} round{} against fresh servers (keyval --fsync \
         always; Redis appendonly yes, appendfsync always, save \"\"): {}",
        benchmark_version(&benchmark).unwrap_or_else(|| "of unknown version".to_string()),
        benchmark.display(),
        if rounds == 1 { "" } else { "s" },
        DEPTHS
            .map(|d| format!("redis-benchmark {}", benchmark_args(0, d).join(" ")))
            .join(", then ")
            .replace(" -p 0 ", " -p <port> "),
    );
    // kv[round][depth], rd[round][depth]
    let mut kv: Vec<Vec<RunOutcome>> = Vec::new();
    let mut rd: Vec<Vec<RunOutcome>> = Vec::new();
    for round in 1..=rounds {
        println!("redis-benchmark round {round} of {rounds}");
        for target in round_order(round, keyval_bin, Some(redis)) {
            let outcomes = run_side(target, &benchmark);
            match target {
                Target::Keyval(_) => kv.push(outcomes),
                Target::Redis(_) => rd.push(outcomes),
            }
        }
    }
    println!();
    print!("{}", format_table(&kv, &rd));
    let failed = kv.iter().chain(&rd).flatten().any(Result::is_err);
    failed_if(failed, "some redis-benchmark runs failed")
}

/// Starts a fresh durable server of `target` and runs every depth
/// against it, printing a line per command; the outcomes in [`DEPTHS`]
/// order.
fn run_side(target: Target<'_>, benchmark: &Path) -> Vec<RunOutcome> {
    let mut server = match target.start(Durability::Fsync) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start {}: {e}", target.name());
            let e = format!("server did not start: {e}");
            return DEPTHS.iter().map(|_| Err(e.clone())).collect();
        }
    };
    let mut outcomes = Vec::new();
    for depth in DEPTHS {
        let args = benchmark_args(server.addr.port(), depth);
        log::info!("{}: redis-benchmark {}", target.name(), args.join(" "));
        let outcome = run_benchmark(benchmark, &args, &mut server);
        for test in TESTS {
            let case = format!("{test} -P {}", depth.pipeline);
            match row_of(&outcome, test) {
                Ok(r) => println!(
                    "{:<7} {case:<9} {:>10.0} rps, latency ms avg {:.3} min {:.3} p50 {:.3} \
                     p95 {:.3} p99 {:.3} max {:.3}",
                    target.name(),
                    r.rps,
                    r.avg_ms,
                    r.min_ms,
                    r.p50_ms,
                    r.p95_ms,
                    r.p99_ms,
                    r.max_ms
                ),
                Err(e) => println!("{:<7} {case:<9} FAILED: {e}", target.name()),
            }
        }
        outcomes.push(outcome);
    }
    // Dropping the server kills and reaps it before its directory goes.
    drop(server);
    outcomes
}

/// Runs `redis-benchmark` with `args` to its end and parses its CSV,
/// killing it if `server` dies meanwhile, if it cannot connect (it then
/// retries forever, spinning a CPU), or if it outlasts [`RUN_WAIT`].
fn run_benchmark(bin: &Path, args: &[String], server: &mut Server) -> RunOutcome {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard =
        ChildGuard::spawn(&mut cmd).map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let Some(child) = guard.child_mut() else {
        return Err("redis-benchmark was reaped at once".to_string());
    };
    let stdout = child.stdout.take().map(read_all);
    // Only stderr is left to capture.
    let stderr = Output::capture(child, STDERR_LINES);
    let deadline = Instant::now() + RUN_WAIT;
    let stopped = loop {
        match guard.wait_exit(CHECK_EVERY) {
            Ok(Some(status)) if status.success() => break None,
            Ok(Some(status)) => break Some(format!("redis-benchmark exited with {status}")),
            Ok(None) => {}
            Err(e) => break Some(format!("cannot wait for redis-benchmark: {e}")),
        }
        if let Err(e) = server.child.check_alive() {
            break Some(format!("the server died under redis-benchmark: {e}"));
        }
        if stderr.find_last(CANNOT_CONNECT).is_some() {
            break Some("redis-benchmark cannot connect".to_string());
        }
        if Instant::now() >= deadline {
            break Some(format!(
                "redis-benchmark did not finish within {RUN_WAIT:?}"
            ));
        }
    };
    // Killed (if still running), so its pipes are at their end.
    guard.kill();
    stderr.wait_closed(Duration::from_secs(1));
    let stdout = stdout.and_then(|r| r.join().ok()).unwrap_or_default();
    match stopped {
        None => parse_csv(&stdout),
        Some(why) => {
            let tail: Vec<String> = stderr
                .lines()
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .collect();
            if tail.is_empty() {
                Err(format!("{why} (no stderr)"))
            } else {
                Err(format!("{why} (stderr: {})", tail.join("; ")))
            }
        }
    }
}

/// Reads `reader` to its end on a thread of its own.
fn read_all(mut reader: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `met` or `missed` for a median ratio against its target.
fn verdict(ratio: Option<f64>, target: f64) -> &'static str {
    match ratio {
        Some(r) if r >= target => "met",
        Some(_) => "missed",
        None => "-",
    }
}

/// Renders the table: per command and depth, the median rps of each side,
/// the median and range of the per-round ratios, the target and whether
/// the median meets it, and both sides' p50/p99 in the round with the
/// median ratio; then the targets in one line and the failed runs.
fn format_table(kv: &[Vec<RunOutcome>], rd: &[Vec<RunOutcome>]) -> String {
    let rounds = kv.len();
    let mut out = format!(
        "redis-benchmark: SET and GET, {CONNECTIONS} clients, {VALUE_SIZE}-byte values, \
         {RANDOM_KEYS} random keys, keyval --fsync always vs. Redis appendfsync always, \
         {rounds} round{}\n",
        if rounds == 1 { "" } else { "s" }
    );
    let header = [
        "case",
        "requests",
        "keyval rps",
        "redis rps",
        "kv/rd",
        "per round",
        "target",
        "",
        "rounds",
        "keyval p50/p99 ms",
        "redis p50/p99 ms",
    ];
    let line = |cells: [&str; 11]| {
        format!(
            "{:<9} {:>8} {:>11} {:>11} {:>6} {:>11} {:>6} {:<6} {:>6}  {:<17} {:<17}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10]
        )
        .trim_end()
        .to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    let mut met = 0;
    let mut missed: Vec<String> = Vec::new();
    let mut failed_lines = Vec::new();
    for (d, depth) in DEPTHS.iter().enumerate() {
        for test in TESTS {
            let case = format!("{test} -P {}", depth.pipeline);
            let by_round = |side: &[Vec<RunOutcome>]| -> Vec<Result<CsvRow, String>> {
                side.iter()
                    .map(|r| match r.get(d) {
                        Some(o) => row_of(o, test).cloned(),
                        None => Err("not run".to_string()),
                    })
                    .collect()
            };
            let (kv_rows, rd_rows) = (by_round(kv), by_round(rd));
            let rps = |rows: &[Result<CsvRow, String>]| -> Vec<Option<f64>> {
                rows.iter()
                    .map(|r| r.as_ref().ok().map(|r| r.rps))
                    .collect()
            };
            let sum = summarize_rounds(&rps(&rd_rows), &rps(&kv_rows));
            let fig =
                |v: Option<f64>| v.map_or_else(|| "FAILED".to_string(), |v| format!("{v:.0}"));
            let lat = |rows: &[Result<CsvRow, String>]| match sum.median_round.map(|i| &rows[i]) {
                Some(Ok(r)) => format!("{:.3} / {:.3}", r.p50_ms, r.p99_ms),
                _ => "-".to_string(),
            };
            let mark = verdict(sum.ratio, depth.target);
            match sum.ratio {
                Some(r) if r >= depth.target => met += 1,
                Some(r) => missed.push(format!("{case} ({r:.2})")),
                None => missed.push(format!("{case} (no ratio)")),
            }
            let _ = writeln!(
                out,
                "{}",
                line([
                    &case,
                    &depth.requests.to_string(),
                    &fig(sum.compared),
                    &fig(sum.base),
                    &sum.ratio
                        .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
                    &sum.range
                        .map_or_else(|| "-".to_string(), |(lo, hi)| format!("{lo:.2}-{hi:.2}")),
                    &format!(">= {:.1}", depth.target),
                    mark,
                    &format!("{}/{rounds}", sum.rounds),
                    &lat(&kv_rows),
                    &lat(&rd_rows),
                ])
            );
            for (name, rows) in [("keyval", &kv_rows), ("redis", &rd_rows)] {
                for (failed, e) in failures(rows) {
                    let plural = if failed.len() > 1 { "s" } else { "" };
                    let failed: Vec<String> = failed.iter().map(usize::to_string).collect();
                    failed_lines.push(format!(
                        "{name} {case}, round{plural} {}: {e}",
                        failed.join(", ")
                    ));
                }
            }
        }
    }
    out.push_str(
        "(rps: medians over the rounds; kv/rd: median of the per-round ratios, each round's \
         keyval rps over that round's Redis rps;\n per round: lowest-highest of those ratios; \
         rounds: rounds that gave a ratio; latencies: redis-benchmark's, in the round with the \
         median ratio;\n keyval ran first in odd rounds, Redis in even ones)\n",
    );
    let total = DEPTHS.len() * TESTS.len();
    let targets = DEPTHS
        .map(|d| format!(">= {:.1} at -P {}", d.target, d.pipeline))
        .join(", ");
    let _ = write!(out, "targets (kv/rd {targets}): {met} of {total} met");
    if missed.is_empty() {
        out.push('\n');
    } else {
        let _ = writeln!(out, "; missed: {}", missed.join(", "));
    }
    for l in failed_lines {
        let _ = writeln!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What redis-benchmark 7.0.15 printed with `--csv` against Redis.
    const OUTPUT: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\
\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"
\"SET\",\"25050.10\",\"1.953\",\"0.320\",\"0.863\",\"7.663\",\"8.535\",\"16.239\"
\"GET\",\"117096.02\",\"0.286\",\"0.064\",\"0.239\",\"0.399\",\"2.351\",\"7.295\"
";

    fn row(test: &str, rps: f64, p50_ms: f64, p99_ms: f64) -> CsvRow {
        CsvRow {
            test: test.to_string(),
            rps,
            avg_ms: p50_ms,
            min_ms: p50_ms,
            p50_ms,
            p95_ms: p99_ms,
            p99_ms,
            max_ms: p99_ms,
        }
    }

    #[test]
    fn reads_the_csv_of_redis_benchmark() {
        let rows = parse_csv(OUTPUT).unwrap();
        assert_eq!(
            rows,
            vec![
                CsvRow {
                    test: "SET".to_string(),
                    rps: 25050.10,
                    avg_ms: 1.953,
                    min_ms: 0.320,
                    p50_ms: 0.863,
                    p95_ms: 7.663,
                    p99_ms: 8.535,
                    max_ms: 16.239,
                },
                CsvRow {
                    test: "GET".to_string(),
                    rps: 117096.02,
                    avg_ms: 0.286,
                    min_ms: 0.064,
                    p50_ms: 0.239,
                    p95_ms: 0.399,
                    p99_ms: 2.351,
                    max_ms: 7.295,
                },
            ]
        );
        assert_eq!(row_of(&Ok(rows.clone()), "GET").unwrap().rps, 117096.02);
        let err = row_of(&Ok(rows), "INCR").unwrap_err();
        assert_eq!(err, "no INCR row in redis-benchmark's output");
        let err = row_of(&Err("boom".to_string()), "SET").unwrap_err();
        assert_eq!(err, "boom");
    }

    #[test]
    fn columns_are_found_by_name_and_warnings_skipped() {
        let text = "WARNING: Could not fetch server CONFIG\n\
                    \"rps\",\"test\",\"p99_latency_ms\",\"p50_latency_ms\",\"extra\",\
                    \"avg_latency_ms\",\"min_latency_ms\",\"p95_latency_ms\",\"max_latency_ms\"\r\n\
                    \"1000\",\"MSET (10 keys)\",\"9\",\"5\",\"x\",\"5\",\"1\",\"8\",\"10\"\r\n\n";
        let rows = parse_csv(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].test, "MSET (10 keys)");
        assert_eq!(
            (rows[0].rps, rows[0].p50_ms, rows[0].p99_ms),
            (1000.0, 5.0, 9.0)
        );
    }

    #[test]
    fn a_broken_csv_is_an_error() {
        let header = OUTPUT.lines().next().unwrap();
        assert!(parse_csv("").unwrap_err().contains("no CSV header"));
        assert!(parse_csv(header).unwrap_err().contains("no rows"));
        let err = parse_csv("\"test\",\"rps\"\n\"SET\",\"1\"\n").unwrap_err();
        assert!(err.contains("no avg_latency_ms column"), "{err}");
        let short = format!("{header}\n\"SET\",\"1\"\n");
        assert!(parse_csv(&short)
            .unwrap_err()
            .contains("2 fields where the header has 8"));
        let bad = format!("{header}\n\"SET\",\"fast\",\"1\",\"1\",\"1\",\"1\",\"1\",\"1\"\n");
        let err = parse_csv(&bad).unwrap_err();
        assert!(err.contains("rps is \"fast\""), "{err}");
        let open = format!("{header}\n\"SET,\"1\"\n");
        assert!(parse_csv(&open)
            .unwrap_err()
            .contains("after a quoted field"));
    }

    #[test]
    fn csv_fields_unquote() {
        assert_eq!(
            csv_fields("a,\"b,c\",\"d\"\"e\",").unwrap(),
            ["a", "b,c", "d\"e", ""]
        );
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(csv_fields("\"open").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn the_command_is_the_documented_one() {
        let args: Vec<String> = DEPTHS
            .iter()
            .map(|&d| benchmark_args(6400, d).join(" "))
            .collect();
        assert_eq!(
            args,
            [
                "-h 127.0.0.1 -p 6400 -t set,get -c 50 -d 100 -r 100000 -n 200000 -P 1 --csv",
                "-h 127.0.0.1 -p 6400 -t set,get -c 50 -d 100 -r 100000 -n 2000000 -P 16 --csv",
            ]
        );
    }

    #[test]
    fn redis_benchmark_is_found_beside_the_server_or_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, other) = (dir.path().join("bin"), dir.path().join("redis-7"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let path = || Some(bin.clone().into_os_string());
        let server = other.join("redis-server");
        assert_eq!(find_benchmark(&server, path()), None);
        std::fs::write(bin.join("redis-benchmark"), "").unwrap();
        assert_eq!(
            find_benchmark(&server, path()),
            Some(bin.join("redis-benchmark"))
        );
        std::fs::write(other.join("redis-benchmark"), "").unwrap();
        assert_eq!(
            find_benchmark(&server, path()),
            Some(other.join("redis-benchmark"))
        );
    }

    #[test]
    fn a_skipped_part_says_why_and_how_to_get_what_it_lacks() {
        let (server, bench) = (Path::new("/usr/bin/redis-server"), Path::new("/b"));
        assert_eq!(skip_line("auto", Some(server), Some(bench)), None);
        assert_eq!(
            skip_line("none", None, None).unwrap(),
            "# redis-benchmark part skipped: no Redis to compare with: --redis-bin none"
        );
        let line = skip_line("auto", None, None).unwrap();
        assert!(line.contains("no redis-server on PATH"), "{line}");
        assert!(line.contains("apt-get install redis-server"), "{line}");
        let line = skip_line("auto", Some(server), None).unwrap();
        assert!(
            line.contains("no redis-benchmark beside /usr/bin/redis-server or on PATH"),
            "{line}"
        );
        assert!(line.contains("apt-get install redis-tools"), "{line}");
    }

    #[test]
    fn verdicts_compare_the_median_with_the_target() {
        assert_eq!(verdict(Some(1.0), 1.0), "met");
        assert_eq!(verdict(Some(0.99), 1.0), "missed");
        assert_eq!(verdict(Some(1.6), 1.5), "met");
        assert_eq!(verdict(None, 1.5), "-");
    }

    /// One side's run at each depth: SET at `set` rps and GET at `get`
    /// times that, latencies `p50`/`p99` ms.
    fn side(set: [f64; 2], get: f64, p50: f64, p99: f64) -> Vec<RunOutcome> {
        set.iter()
            .map(|&s| Ok(vec![row("SET", s, p50, p99), row("GET", s * get, p50, p99)]))
            .collect()
    }

    #[test]
    fn the_table_gives_medians_ratios_ranges_and_targets() {
        // Round 2 is slow on both sides; its ratios are still the medians.
        let kv = vec![
            side([30_000.0, 300_000.0], 2.0, 0.5, 2.0),
            side([10_000.0, 100_000.0], 2.0, 0.6, 3.0),
            side([24_000.0, 240_000.0], 2.0, 0.7, 4.0),
        ];
        let mut rd = vec![
            side([10_000.0, 200_000.0], 1.0, 1.5, 5.0),
            side([8_000.0, 80_000.0], 1.0, 1.6, 6.0),
            side([16_000.0, 100_000.0], 1.0, 1.7, 7.0),
        ];
        // Redis's GET at -P 16 failed in round 3; its SET row is there.
        rd[2][1] = Ok(vec![row("SET", 100_000.0, 1.7, 7.0)]);
        let table = format_table(&kv, &rd);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("3 rounds"), "{table}");
        let cells = |case: &str| -> Vec<&str> {
            let l = lines.iter().find(|l| l.starts_with(case)).unwrap();
            l.split_whitespace().collect()
        };
        // SET -P 1: ratios 3.0, 1.25, 1.5.
        assert_eq!(
            cells("SET -P 1 ")[3..],
            [
                "200000",
                "24000",
                "10000",
                "1.50",
                "1.25-3.00",
                ">=",
                "1.0",
                "met",
                "3/3",
                "0.700",
                "/",
                "4.000",
                "1.700",
                "/",
                "7.000"
            ],
            "{table}"
        );
        // GET -P 1: twice the SET figures on keyval's side.
        assert_eq!(
            cells("GET -P 1 ")[4..7],
            ["48000", "10000", "3.00"],
            "{table}"
        );
        // SET -P 16: ratios 1.5, 1.25, 2.4; median 1.5 meets 1.5.
        assert_eq!(
            cells("SET -P 16")[3..13],
            [
                "2000000",
                "240000",
                "100000",
                "1.50",
                "1.25-2.40",
                ">=",
                "1.5",
                "met",
                "3/3",
                "0.500"
            ],
            "{table}"
        );
        // GET -P 16: ratios 3.0, 2.5; the median of two is their mean, and
        // the latencies are those of the lower one's round (2).
        assert_eq!(
            cells("GET -P 16")[4..15],
            [
                "480000",
                "140000",
                "2.75",
                "2.50-3.00",
                ">=",
                "1.5",
                "met",
                "2/3",
                "0.600",
                "/",
                "3.000"
            ],
            "{table}"
        );
        assert!(
            table.contains("targets (kv/rd >= 1.0 at -P 1, >= 1.5 at -P 16): 4 of 4 met\n"),
            "{table}"
        );
        assert!(
            table.contains("redis GET -P 16, round 3: no GET row in redis-benchmark's output"),
            "{table}"
        );
    }

    #[test]
    fn missed_targets_and_failed_runs_are_named() {
        let kv = vec![
            side([9_000.0, 120_000.0], 1.0, 1.0, 2.0),
            vec![Err("the server died under redis-benchmark".to_string()); 2],
        ];
        let rd = vec![
            side([10_000.0, 100_000.0], 1.0, 1.0, 2.0),
            side([10_000.0, 100_000.0], 1.0, 1.0, 2.0),
        ];
        let table = format_table(&kv, &rd);
        let set_p1: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("SET -P 1 "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            set_p1[4..11],
            ["9000", "10000", "0.90", "0.90-0.90", ">=", "1.0", "missed"]
        );
        assert!(
            table.contains(
                "0 of 4 met; missed: SET -P 1 (0.90), GET -P 1 (0.90), SET -P 16 (1.20), \
                 GET -P 16 (1.20)\n"
            ),
            "{table}"
        );
        assert!(
            table.contains("keyval SET -P 1, round 2: the server died under redis-benchmark"),
            "{table}"
        );
        // A case no round measured on both sides has no ratio.
        let none = format_table(&kv[1..], &rd[1..]);
        let set_p1: Vec<&str> = none
            .lines()
            .find(|l| l.starts_with("SET -P 1 "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            set_p1[4..11],
            ["FAILED", "10000", "-", "-", ">=", "1.0", "-"]
        );
        assert!(none.contains("missed: SET -P 1 (no ratio)"), "{none}");
    }
}
