//! `keyval-bench`: a load generator for the keyval server (and, for
//! comparison, Redis), plus a benchmark suite that starts fresh servers and
//! runs a standard set of cases against them.
//!
//! This file owns the command line only; see `load` for the mio driver,
//! `wire` for the protocols, `histogram` for latency recording,
//! `suite`/`process` for orchestrating server processes, and `lag` and
//! `filecopy` for the replication cases' lag sampling and copy baseline,
//! and `stall` for how long a heavy read holds up other clients.

mod client;
mod filecopy;
mod histogram;
mod lag;
mod load;
mod process;
mod stall;
mod suite;
mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

use crate::load::{Limit, LoadConfig, Workload};
use crate::wire::Protocol;

/// The port `run` and `stall` drive unless told otherwise: keyval's usual.
const DEFAULT_PORT: u16 = 5000;

/// Command line of `keyval-bench`.
#[derive(Parser, Debug)]
#[command(
    name = "keyval-bench",
    version,
    about = "Load generator and benchmark suite for keyval"
)]
struct Cli {
    /// Log level for progress messages on stderr (error, warn, info, debug).
    #[arg(long, global = true, default_value = "info", env = "KEYVAL_BENCH_LOG")]
    log_level: LevelFilter,
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Drive one load against a running server and print one result line.
    Run(RunArgs),
    /// Start fresh servers and run the standard benchmark cases.
    Suite(SuiteArgs),
    /// Time a heavy read (DIGEST, KEYS) while another client PINGs.
    Stall(StallArgs),
}

/// Options of `keyval-bench run`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port (`make run` starts a leader on 5000).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Keyval)]
    protocol: Protocol,
    /// Number of connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Request mix.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Measure for this many seconds (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    duration_secs: Option<f64>,
    /// Measure exactly this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// PUT every key once before measuring.
    #[arg(long)]
    preload: bool,
}

/// Options of `keyval-bench stall`.
#[derive(Args, Debug)]
struct StallArgs {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port (`make run` starts a leader on 5000).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// The heavy request line.
    #[arg(long, default_value = "DIGEST")]
    request: String,
    /// How many times to send it, one after the other.
    #[arg(long, default_value_t = 3)]
    times: usize,
    /// Milliseconds from one PING to the next (0: back to back).
    #[arg(long, default_value_t = 1.0)]
    ping_every_ms: f64,
}

/// Options of `keyval-bench suite`.
#[derive(Args, Debug)]
struct SuiteArgs {
    /// Path of the keyval server binary.
    #[arg(long)]
    keyval_bin: PathBuf,
    /// `auto`: redis-server from PATH if there is one, else no comparison
    /// (the first line of output says which); `none`: no Redis; or a
    /// command name or a path, which must exist.
    #[arg(long, default_value = "auto")]
    redis_bin: String,
    /// Skip the slow extra cases (compaction, restart, memory) and run the
    /// replication snapshot and catch-up cases at a tenth of their size.
    #[arg(long)]
    quick: bool,
    /// Seconds per measured case (default 10, or 3 with --quick).
    #[arg(long)]
    case_secs: Option<f64>,
    /// Rounds of each comparison: keyval's standard cases and Redis's in
    /// turn (keyval first in odd rounds), the same by redis-benchmark, the
    /// leader alone and both replicating leaders, the snapshot and a plain
    /// copy; the tables give medians and the range of the per-round ratios
    /// (default 3, or 1 with --quick).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100))]
    rounds: Option<usize>,
    /// Run only this part of the suite.
    #[arg(long, value_enum)]
    only: Option<suite::Part>,
}

/// Converts a seconds argument into a positive [`Duration`].
fn secs(value: f64, flag: &str) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 1e7 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("{flag} must be a positive number of seconds"))
    }
}

/// Resolves `host:port` to the first socket address.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// `keyval-bench run`.
fn cmd_run(args: &RunArgs) -> Result<(), String> {
    let limit = match (args.requests, args.duration_secs) {
        (Some(n), _) => Limit::Requests(n),
        (None, Some(s)) => Limit::Duration(secs(s, "--duration-secs")?),
        (None, None) => Limit::Duration(Duration::from_secs(10)),
    };
    let cfg = LoadConfig {
        addr: resolve(&args.host, args.port)?,
        protocol: args.protocol,
        connections: args.connections,
        pipeline: args.pipeline,
        workload: args.workload,
        keys: args.keys,
        value_size: args.value_size,
        limit,
        preload: args.preload,
    };
    let report = load::run(&cfg).map_err(|e| format!("load against {} failed: {e}", cfg.addr))?;
    println!(
        "{} {} c={} p={}: {report}",
        cfg.protocol, cfg.workload, cfg.connections, cfg.pipeline
    );
    Ok(())
}

/// `keyval-bench stall`.
fn cmd_stall(args: &StallArgs) -> Result<(), String> {
    let cfg = stall::StallConfig {
        addr: resolve(&args.host, args.port)?,
        request: args.request.clone(),
        times: args.times,
        ping_every: if args.ping_every_ms == 0.0 {
            Duration::ZERO
        } else {
            secs(args.ping_every_ms / 1e3, "--ping-every-ms")?
        },
    };
    let report = stall::run(&cfg).map_err(|e| format!("stall against {} failed: {e}", cfg.addr))?;
    println!("{}: {report}", cfg.request);
    Ok(())
}

/// `keyval-bench suite`.
fn cmd_suite(args: &SuiteArgs) -> Result<(), String> {
    let default = if args.quick { 3.0 } else { 10.0 };
    let opts = suite::SuiteOptions {
        keyval_bin: args.keyval_bin.clone(),
        redis_bin: args.redis_bin.clone(),
        quick: args.quick,
        case_duration: secs(args.case_secs.unwrap_or(default), "--case-secs")?,
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }),
        only: args.only,
    };
    suite::run(&opts).map_err(|e| format!("suite: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    // A logger that cannot be installed only costs progress messages.
    let _ = TermLogger::init(
        cli.log_level,
        log_config,
        TerminalMode::Stderr,
        ColorChoice::Never,
    );
    let result = match &cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Suite(args) => cmd_suite(args),
        Command::Stall(args) => cmd_stall(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyval-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Fails for every argument and subcommand under `cmd` that `--help`
    /// would list without a description.
    fn assert_described(cmd: &clap::Command, path: &str) {
        for arg in cmd.get_arguments() {
            assert!(
                arg.get_help().is_some(),
                "{path}: --{} has no help",
                arg.get_id()
            );
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            assert!(sub.get_about().is_some(), "{name} has no help");
            assert_described(sub, &name);
        }
    }

    #[test]
    fn every_argument_is_described() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        assert_described(&cmd, "keyval-bench");
    }

    #[test]
    fn run_and_stall_default_to_port_5000() {
        let Command::Run(run) = Cli::parse_from(["keyval-bench", "run"]).command else {
            panic!("not run");
        };
        assert_eq!(run.port, 5000);
        let Command::Stall(stall) = Cli::parse_from(["keyval-bench", "stall"]).command else {
            panic!("not stall");
        };
        assert_eq!(stall.port, 5000);
    }
}
