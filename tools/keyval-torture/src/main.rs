//! `keyval-torture`: a fault-injection harness for keyval. It runs a leader
//! and two followers as real processes on loopback, drives them with client
//! threads while a nemesis kills, pauses, partitions, slows and tears them,
//! runs failovers with `keyval-ctl`, then heals everything and checks that
//! no acknowledged write was lost, at most one node took writes at a time,
//! and every node holds the same data. See docs/testing.md, "Fault injection".
//!
//! This file owns the command line only; `scenario` runs the whole thing,
//! `cluster` and `proxy` own the processes and links, `ctl` the runs of
//! `keyval-ctl`, `workload` the clients, `nemesis` the faults, `monitor`
//! the sampling, `tally` the nodes' event counters, `checker` the
//! verdict, and `linear` the linearizability search it runs with
//! `--linearizable-reads`; `group` runs the MSET group's RESP clients
//! (over `resp`) and `mset` holds their history to MSET's atomicity.

mod checker;
mod client;
mod cluster;
mod ctl;
mod group;
mod history;
mod linear;
mod monitor;
mod mset;
mod nemesis;
mod proxy;
mod resp;
mod scenario;
mod tally;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use simplelog::{ColorChoice, ConfigBuilder, LevelFilter, TermLogger, TerminalMode};

use crate::workload::Mix;

/// Command line of `keyval-torture`.
#[derive(Parser, Debug)]
#[command(
    name = "keyval-torture",
    version,
    about = "Randomized fault injection against a keyval cluster, with a checker"
)]
struct Cli {
    /// How long the nemesis runs, in seconds.
    #[arg(long, env = "TORTURE_SECONDS", default_value_t = 600)]
    seconds: u64,
    /// The seed of the run: the same seed makes the same random choices
    /// (random when absent; always printed).
    #[arg(long, env = "SEED")]
    seed: Option<u64>,
    /// The keyval binary (default: `keyval` next to this binary).
    #[arg(long)]
    keyval_bin: Option<PathBuf>,
    /// The keyval-ctl binary the failovers run (default: next to keyval).
    #[arg(long)]
    keyval_ctl_bin: Option<PathBuf>,
    /// Leave out the failover faults (lose-leader, switchover,
    /// pause-failover).
    #[arg(long)]
    no_failover: bool,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    clients: u16,
    /// Size of the shared key space (at least 1; default 64, or 8 with
    /// --read-heavy).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    keys: Option<u32>,
    /// The leader's --sync-followers (0 or 1; default: chosen by the seed,
    /// or 1 with --linearizable-reads).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1))]
    sync_followers: Option<u32>,
    /// Read-heavy workload: half the clients only read, the others write
    /// one request in five (about 10 % writes overall), on 8 keys unless
    /// --keys; the nemesis favours leader faults and failovers.
    #[arg(long)]
    read_heavy: bool,
    /// Run in sync mode (--sync-followers 1) rather than letting the seed
    /// choose. In sync mode every key's history, reads on connections
    /// opened to a leader included, is always held to linearizability
    /// through failovers.
    #[arg(long)]
    linearizable_reads: bool,
    /// Concurrent nemesis lanes: how many faults may be in force at once
    /// (each on a different node).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=4))]
    lanes: u16,
    /// Fail if any node's resident memory exceeds this many MiB.
    #[arg(long, default_value_t = 256)]
    mem_limit_mib: u64,
    /// Keep the run directory (node logs and data) even on success.
    #[arg(long)]
    keep: bool,
    /// Progress on stderr: error, warn, info, debug (debug shows every fault).
    #[arg(long, default_value = "info", env = "TORTURE_LOG")]
    log_level: LevelFilter,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.linearizable_reads && cli.sync_followers == Some(0) {
        eprintln!(
            "keyval-torture: --linearizable-reads needs sync mode (async failovers may lose \
             acknowledged writes): drop --sync-followers 0"
        );
        return ExitCode::from(2);
    }
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    let _ = TermLogger::init(
        cli.log_level,
        config,
        TerminalMode::Stderr,
        ColorChoice::Never,
    );
    let bin = match cli.keyval_bin {
        Some(bin) => bin,
        None => match std::env::current_exe() {
            Ok(exe) => exe.with_file_name("keyval"),
            Err(e) => {
                eprintln!("keyval-torture: cannot find keyval: {e}; pass --keyval-bin");
                return ExitCode::from(2);
            }
        },
    };
    if !bin.is_file() {
        eprintln!(
            "keyval-torture: {} does not exist; build it (cargo build --release --bins) or pass --keyval-bin",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let ctl_bin = cli
        .keyval_ctl_bin
        .unwrap_or_else(|| bin.with_file_name("keyval-ctl"));
    if !cli.no_failover && !ctl_bin.is_file() {
        eprintln!(
            "keyval-torture: {} does not exist; build it (cargo build --release --bins), pass \
             --keyval-ctl-bin, or run with --no-failover",
            ctl_bin.display()
        );
        return ExitCode::from(2);
    }
    // Ctrl-C or SIGTERM ends the run early; the nodes are still killed.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("keyval-torture: cannot handle signal {signal}: {e}");
        }
    }
    let opts = scenario::Options {
        bin,
        ctl_bin,
        failovers: !cli.no_failover,
        seconds: cli.seconds,
        seed: cli.seed.unwrap_or_else(|| fastrand::u64(..)),
        clients: cli.clients,
        keys: cli.keys.unwrap_or(if cli.read_heavy { 8 } else { 64 }),
        mix: if cli.read_heavy {
            Mix::ReadHeavy
        } else {
            Mix::Default
        },
        sync_followers: cli.sync_followers.or(cli.linearizable_reads.then_some(1)),
        // Applied whenever the run is in sync mode.
        linearizable_reads: true,
        mem_limit_mib: cli.mem_limit_mib,
        lanes: cli.lanes,
        keep: cli.keep,
        interrupted,
    };
    if scenario::run(&opts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_argument_is_described() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        for arg in cmd.get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }
}
