//! The harness as an operator: it runs the real `keyval-ctl` (the same
//! binary and commands as the runbooks in docs/operations.md) against the nodes, with
//! the run's secret, and reads what it printed.
//!
//! Every call is bounded: a `keyval-ctl` that does not finish within
//! [`CTL_TIMEOUT`] is killed and the call fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use keyval_testkit::run_bounded;

use crate::cluster::Settings;

/// Longest one `keyval-ctl` run may take: its own catch-up limit (30 s)
/// plus its per-node timeouts.
const CTL_TIMEOUT: Duration = Duration::from_secs(90);

/// The `keyval-ctl` binary of the run.
#[derive(Debug, Clone)]
pub struct Ctl {
    pub bin: PathBuf,
}

/// What `keyval-ctl failover` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The promoted node's address.
    pub leader: SocketAddr,
    pub epoch: u64,
    /// Its last seq when promoted.
    pub seq: u64,
}

impl Ctl {
    /// Runs `keyval-ctl <args>`; `Ok` with its stdout when it exits 0.
    ///
    /// # Errors
    /// Its stdout and stderr when it fails, cannot start, or overruns.
    pub fn run(&self, args: &[String]) -> Result<String, String> {
        let done = run_bounded(
            Command::new(&self.bin)
                .args(args)
                .env("KEYVAL_SECRET", Settings::secret())
                .env_remove("KEYVAL_SECRET_FILE"),
            CTL_TIMEOUT,
        )
        .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let (out, err) = (done.stdout, done.stderr);
        let what = format!("keyval-ctl {}", args.join(" "));
        match done.status {
            Some(s) if s.success() => Ok(out),
            Some(s) => Err(format!("{what} failed ({s}):\n{out}{err}")),
            None => Err(format!(
                "{what} did not finish within {CTL_TIMEOUT:?}:\n{out}{err}"
            )),
        }
    }

    /// `keyval-ctl failover --nodes <nodes>`: its output and what it
    /// promoted.
    ///
    /// # Errors
    /// As [`Ctl::run`], or output without a promotion.
    pub fn failover(&self, nodes: &[SocketAddr]) -> Result<(String, Promotion), String> {
        let list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
        let out = self.run(&["failover".into(), "--nodes".into(), list.join(",")])?;
        let promotion = parse_failover(&out)
            .ok_or_else(|| format!("keyval-ctl failover printed no promotion:\n{out}"))?;
        Ok((out, promotion))
    }

    /// `keyval-ctl --port <node> follow --wait-ms 0 127.0.0.1 <leader
    /// port>`: the node takes the command; whether its link comes up is
    /// the checker's to see, since another lane may be cutting, freezing
    /// or pausing it meanwhile.
    ///
    /// # Errors
    /// As [`Ctl::run`].
    pub fn follow(&self, node: SocketAddr, leader: SocketAddr) -> Result<String, String> {
        self.run(&[
            "--host".into(),
            node.ip().to_string(),
            "--port".into(),
            node.port().to_string(),
            "follow".into(),
            "--wait-ms".into(),
            "0".into(),
            leader.ip().to_string(),
            leader.port().to_string(),
        ])
    }
}

/// The promotion out of `keyval-ctl failover`'s output: the line
/// `<addr>: promoted (OK epoch <e> seq <s>)`.
pub fn parse_failover(out: &str) -> Option<Promotion> {
    out.lines().find_map(|line| {
        let (addr, rest) = line.split_once(": promoted (OK epoch ")?;
        let (epoch, rest) = rest.split_once(" seq ")?;
        let seq = rest.strip_suffix(')')?;
        Some(Promotion {
            leader: addr.trim().parse().ok()?,
            epoch: epoch.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_promotion() {
        let out = "127.0.0.1:5000: unreachable (connection refused)\n\
                   127.0.0.1:5001: follower epoch 1 seq 48213 writes ok\n\
                   no reachable leader takes writes: promoting without a final catch-up\n\
                   127.0.0.1:5001: promoted (OK epoch 2 seq 48213)\n\
                   127.0.0.1:5002: now follows 127.0.0.1:5001\n\
                   done: 127.0.0.1:5001 is the leader\n";
        assert_eq!(
            parse_failover(out),
            Some(Promotion {
                leader: "127.0.0.1:5001".parse().expect("addr"),
                epoch: 2,
                seq: 48213
            })
        );
        assert_eq!(
            parse_failover("127.0.0.1:5001: promoted (OK epoch x seq 1)"),
            None
        );
        assert_eq!(parse_failover("nothing"), None);
    }
}
