//! Replication lag as the leader reports it: a sampler that polls the
//! leader's `INFO` on its own thread while a load runs, and the arithmetic
//! that turns those samples into lag in writes and in time.
//!
//! One `INFO` reply is a consistent picture of the leader (its single loop
//! answers it between two events), so each sample pairs the leader's `seq`
//! with every follower's `acked` at the same instant:
//!
//! ```text
//! seq 812345
//! follower_2 addr=127.0.0.1:41234 acked=812301 lag=44
//! follower_3 addr=127.0.0.1:41240 acked=812345 lag=0
//! ```
//!
//! A sample's lag is that of its most-behind follower. The lag in time is
//! how long ago the oldest write that follower lacks was written on the
//! leader, found by interpolating the leader's `seq` between samples, so it
//! is only as fine as the sampling interval.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use keyval_testkit::LineClient;

use crate::client::{self, info_u64};
use crate::histogram::{self, Histogram};

/// The leader's state at one instant, as far as lag is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the `INFO` reply arrived, from the start of sampling.
    pub at: Duration,
    /// The leader's `seq`: its last written sequence number.
    pub seq: u64,
    /// The smallest `acked` over the expected followers, or `None` when one
    /// of them was not listed (not connected at that instant).
    pub acked: Option<u64>,
}

/// Lag figures over a run of samples.
#[derive(Clone, Debug)]
pub struct LagStats {
    /// Samples taken.
    pub samples: u64,
    /// Samples in which an expected follower was not connected (not part
    /// of the histograms).
    pub missing: u64,
    /// Writes the most-behind follower lacked, one value per sample.
    pub writes: Histogram,
    /// Nanoseconds since the leader wrote the oldest write that the
    /// most-behind follower lacked (0 when it lacked none).
    pub time: Histogram,
}

impl LagStats {
    /// Pools `other`'s samples with these, as one run of both.
    pub fn merge(&mut self, other: &LagStats) {
        self.samples += other.samples;
        self.missing += other.missing;
        histogram::merge(&mut self.writes, &other.writes);
        histogram::merge(&mut self.time, &other.time);
    }
}

/// Reads `acked=<seq>` out of a `follower_<id>` value
/// (`addr=<ip:port> acked=<seq> lag=<n>`).
pub fn parse_acked(value: &str) -> Option<u64> {
    value
        .split_whitespace()
        .find_map(|field| field.strip_prefix("acked="))
        .and_then(|n| n.parse().ok())
}

/// Builds a sample from a leader's `INFO` fields.
///
/// # Errors
/// `InvalidData` when `seq` or a listed follower's `acked` is malformed.
pub fn sample_from_info(
    info: &HashMap<String, String>,
    followers: &[u32],
    at: Duration,
) -> io::Result<Sample> {
    let seq = info_u64(info, "seq")?;
    let mut acked = Some(u64::MAX);
    for id in followers {
        let Some(value) = info.get(&format!("follower_{id}")) else {
            acked = None;
            continue;
        };
        let n = parse_acked(value).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("INFO line follower_{id} has no acked=<seq>: {value:?}"),
            )
        })?;
        acked = acked.map(|a| a.min(n));
    }
    Ok(Sample { at, seq, acked })
}

/// Polls `client`'s `INFO` every `every` until `quit` is set or `limit`
/// has passed, and returns the samples in order.
///
/// # Errors
/// The first failed or malformed `INFO`.
pub fn sample_until(
    mut client: LineClient,
    followers: &[u32],
    every: Duration,
    quit: &AtomicBool,
    limit: Duration,
) -> io::Result<Vec<Sample>> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = start;
    while !quit.load(Ordering::Relaxed) && start.elapsed() < limit {
        let info = client::info(&mut client).map_err(|e| {
            io::Error::new(e.kind(), format!("leader INFO while sampling lag: {e}"))
        })?;
        samples.push(sample_from_info(&info, followers, start.elapsed())?);
        next += every;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            // INFO took longer than the interval: sample again at once.
            next = now;
        }
    }
    Ok(samples)
}

/// When the leader's `seq` first reached `target`, interpolated between
/// the two samples around that moment; the first sample's time if it had
/// already been reached then, `None` if it never was.
fn reached_at(samples: &[Sample], target: u64) -> Option<Duration> {
    let i = samples.partition_point(|s| s.seq < target);
    let after = samples.get(i)?;
    let Some(before) = i.checked_sub(1).map(|b| samples[b]) else {
        return Some(after.at);
    };
    // before.seq < target <= after.seq, so the span is not empty.
    let frac = (target - before.seq) as f64 / (after.seq - before.seq) as f64;
    Some(before.at + (after.at - before.at).mul_f64(frac))
}

/// Lag in writes and in time over `samples` (in the order taken; the
/// leader's `seq` never decreases).
pub fn summarize(samples: &[Sample]) -> LagStats {
    let mut stats = LagStats {
        samples: samples.len() as u64,
        missing: 0,
        writes: histogram::new(),
        time: histogram::new(),
    };
    for s in samples {
        let Some(acked) = s.acked else {
            stats.missing += 1;
            continue;
        };
        let behind = s.seq.saturating_sub(acked);
        histogram::record(&mut stats.writes, behind);
        let since = if behind == 0 {
            Duration::ZERO
        } else {
            // The oldest missing write is acked + 1.
            reached_at(samples, acked + 1).map_or(Duration::ZERO, |t| s.at.saturating_sub(t))
        };
        histogram::record_duration(&mut stats.time, since);
    }
    stats
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(at: u64, seq: u64, acked: u64) -> Sample {
        Sample {
            at: ms(at),
            seq,
            acked: Some(acked),
        }
    }

    #[test]
    fn parses_follower_lines() {
        assert_eq!(parse_acked("addr=127.0.0.1:5001 acked=42 lag=3"), Some(42));
        assert_eq!(parse_acked("acked=0"), Some(0));
        assert_eq!(parse_acked("addr=1.2.3.4:5 lag=3"), None);
        assert_eq!(parse_acked("acked=x lag=1"), None);
        assert_eq!(parse_acked(""), None);
    }

    #[test]
    fn takes_the_most_behind_follower() {
        let i = info(&[
            ("seq", "100"),
            ("follower_2", "addr=127.0.0.1:1 acked=90 lag=10"),
            ("follower_3", "addr=127.0.0.1:2 acked=97 lag=3"),
        ]);
        let s = sample_from_info(&i, &[2, 3], ms(5)).unwrap();
        assert_eq!(s, sample(5, 100, 90));
        let s = sample_from_info(&i, &[2, 3, 4], ms(5)).unwrap();
        assert_eq!(s.acked, None);
    }

    #[test]
    fn rejects_malformed_info() {
        let bad_seq = info(&[("seq", "lots")]);
        assert!(sample_from_info(&bad_seq, &[], ms(0)).is_err());
        let bad_line = info(&[("seq", "1"), ("follower_2", "addr=x")]);
        assert!(sample_from_info(&bad_line, &[2], ms(0)).is_err());
    }

    #[test]
    fn interpolates_when_a_seq_was_reached() {
        let s = [sample(0, 100, 100), sample(10, 200, 100)];
        assert_eq!(reached_at(&s, 100), Some(ms(0)));
        assert_eq!(reached_at(&s, 150), Some(ms(5)));
        assert_eq!(reached_at(&s, 200), Some(ms(10)));
        assert_eq!(reached_at(&s, 201), None);
        assert_eq!(reached_at(&s, 50), Some(ms(0)));
        assert_eq!(reached_at(&[], 1), None);
    }

    #[test]
    fn lag_in_writes_and_time() {
        let s = [
            sample(0, 100, 100),  // in sync
            sample(10, 200, 150), // lacks 151.., written at ~5 ms
            sample(20, 300, 300), // in sync again
            sample(30, 400, 201), // lacks 202.., written at ~10.2 ms
            Sample {
                at: ms(40),
                seq: 400,
                acked: None,
            },
        ];
        let st = summarize(&s);
        assert_eq!(st.samples, 5);
        assert_eq!(st.missing, 1);
        assert_eq!(st.writes.len(), 4);
        assert_eq!(st.writes.max(), 199);
        assert_eq!(st.writes.min(), 0);
        // 0, 10 - 5.1 ms, 0 and 30 - 10.2 ms (within 0.1 %).
        let max = st.time.max() as f64;
        assert!((max - 19.8e6).abs() <= 0.001 * 19.8e6, "{max}");
        let p75 = st.time.value_at_quantile(0.75) as f64;
        assert!((p75 - 4.9e6).abs() < 0.01 * 4.9e6, "{p75}");
        assert_eq!(st.time.value_at_quantile(0.5), 0);
    }

    #[test]
    fn pooled_runs_add_up() {
        let mut a = summarize(&[sample(0, 100, 100), sample(10, 200, 150)]);
        let b = summarize(&[
            sample(0, 10, 5),
            Sample {
                at: ms(5),
                seq: 10,
                acked: None,
            },
        ]);
        a.merge(&b);
        assert_eq!(a.samples, 4);
        assert_eq!(a.missing, 1);
        assert_eq!(a.writes.len(), 3);
        assert_eq!(a.writes.max(), 50);
        assert_eq!(a.writes.min(), 0);
        assert_eq!(a.time.len(), 3);
    }
}
