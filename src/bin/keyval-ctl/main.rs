//! `keyval-ctl`: the operator's tool for a keyval cluster, in the manner of
//! `redis-cli` and `pg_ctl`: node facts, promotion, re-pointing, fencing,
//! compaction, and the guided failover. It speaks the authenticated admin
//! channel (`HELLO ADMIN`, see `docs/failover.md`), with the secret from
//! `KEYVAL_SECRET` or `--secret-file`.
//!
//! The node's address, the secret file and the timeout may be given before
//! or after the subcommand (`keyval-ctl info --port 5001` works as
//! `keyval-ctl --port 5001 info` does).
//!
//! This file owns the command line; `session` the admin connection,
//! `failover` the guided failover and the wait for a re-pointed node's
//! link. Exit status: 0 on success, 1 with a one-line reason on stderr
//! otherwise (including a `follow` whose link was refused or did not come
//! up in time), 2 for bad usage.

mod failover;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::session::Session;

/// The help heading of the options every command takes.
const CONNECTION: &str = "Connection options";

/// Command line of `keyval-ctl`.
#[derive(Parser, Debug)]
#[command(
    name = "keyval-ctl",
    version,
    about = "Administer keyval nodes over the authenticated admin channel",
    after_help = "The connection options may come before or after the command:\n  \
                  keyval-ctl info --host 10.0.0.2 --port 5001\n\
                  The shared secret comes from KEYVAL_SECRET or --secret-file.\n\
                  Exit status: 0 on success, 1 with a one-line reason on stderr, 2 for bad usage."
)]
struct Cli {
    /// The node's host name or IP address (failover takes --nodes instead).
    #[arg(long, global = true, help_heading = CONNECTION, default_value = "127.0.0.1")]
    host: String,
    /// The node's client port (failover takes --nodes instead).
    #[arg(long, global = true, help_heading = CONNECTION, default_value_t = 5000)]
    port: u16,
    /// Read the shared secret from this file instead of `KEYVAL_SECRET`.
    #[arg(long, global = true, help_heading = CONNECTION, env = "KEYVAL_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// How long to wait for a node to connect or answer, in milliseconds.
    #[arg(long, global = true, help_heading = CONNECTION, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
enum Command {
    /// Print the node's INFO fields.
    Info,
    /// Make a follower the leader of a new history, one epoch up.
    Promote,
    /// Make the node a follower of LEADER_HOST LEADER_PORT (dropping writes
    /// that leader lacks), then wait for its link to come up and say how
    /// it went.
    Follow {
        /// The new leader's host name or IP address, as the node dials it.
        #[arg(value_name = "LEADER_HOST")]
        leader_host: String,
        /// The new leader's client port.
        #[arg(value_name = "LEADER_PORT")]
        leader_port: u16,
        /// How long to wait for the node's link to the leader to come up
        /// (or be refused), in milliseconds; 0 does not wait.
        #[arg(long, default_value_t = 5000)]
        wait_ms: u64,
    },
    /// Stop a leader taking writes (the first step of a planned switchover).
    Fence,
    /// Start a compaction of the node's log now.
    Compact,
    /// Guided failover: promote the most advanced follower and re-point the rest.
    Failover {
        /// Every node of the cluster, as host:port, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// How long the chosen follower may take to catch up with a
        /// reachable old leader, in seconds.
        #[arg(long, default_value_t = 30)]
        catch_up_secs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyval-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let secret = keyval::config::load_secret(
        cli.secret_file.as_deref(),
        std::env::var("KEYVAL_SECRET").ok(),
    )
    .map_err(|e| e.to_string())?
    .ok_or("no secret: set KEYVAL_SECRET or --secret-file")?;
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let addr = format!("{}:{}", cli.host, cli.port);
    let request = match cli.command {
        Command::Failover {
            nodes,
            catch_up_secs,
        } => return failover::run(&nodes, &secret, timeout, Duration::from_secs(catch_up_secs)),
        Command::Info => {
            let info = Session::open(&addr, &secret, timeout)?.info()?;
            for (field, value) in &info.fields {
                println!("{field} {value}");
            }
            return Ok(());
        }
        Command::Follow {
            leader_host: host,
            leader_port: port,
            wait_ms,
        } => {
            let request = format!("FOLLOW {host} {port}");
            let mut session = Session::open(&addr, &secret, timeout)?;
            let reply = session.call(&request)?;
            if reply != "OK" {
                return Err(format!("{addr}: {request} answered {reply}"));
            }
            if wait_ms == 0 {
                println!("{addr}: {reply} (not waiting for the link)");
                return Ok(());
            }
            let leader = format!("{host}:{port}");
            let wait = Duration::from_millis(wait_ms);
            return match failover::wait_for_link(&mut session, wait)? {
                failover::Link::Up(info) => {
                    println!(
                        "{addr}: {reply}; leader_link up: following {leader} (seq {}, lag {})",
                        info.num("seq"),
                        info.num("lag")
                    );
                    Ok(())
                }
                failover::Link::Refused(why) => Err(format!(
                    "{addr}: {reply}, but the link to {leader} was refused: {why}"
                )),
                failover::Link::Down(Some(why)) => Err(format!(
                    "{addr}: {reply}, but the link to {leader} is still down after {wait:?}: \
                     {why} (the node keeps retrying)"
                )),
                failover::Link::Down(None) => Err(format!(
                    "{addr}: {reply}, but the link to {leader} is still down after {wait:?} \
                     (is that leader running and reachable from this node? keyval-ctl info \
                     shows the link; the node keeps retrying)"
                )),
            };
        }
        Command::Promote => "PROMOTE".to_string(),
        Command::Fence => "FENCE".to_string(),
        Command::Compact => "COMPACT".to_string(),
    };
    let reply = Session::open(&addr, &secret, timeout)?.call(&request)?;
    if reply.starts_with("OK") {
        println!("{addr}: {reply}");
        Ok(())
    } else {
        Err(format!("{addr}: {request} answered {reply}"))
    }
}
