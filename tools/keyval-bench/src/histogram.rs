//! Latency histogram: a log-linear bucket histogram over `u64` values
//! (nanoseconds in practice), written here so the load generator needs no
//! metrics crate.
//!
//! Values below 256 get one bucket each. Above that, every power of two is
//! split into 128 equal buckets, so a bucket is at most 1/128 of its lower
//! bound wide. Quantiles report the bucket midpoint, which keeps the relative
//! error of any reported value below 0.4 %. The whole `u64` range fits in
//! 7424 buckets (about 58 KiB), so recording never allocates or saturates.

use std::time::Duration;

/// Number of low bits of resolution kept for every value (8 bits -> 256
/// exact values, then 128 buckets per power of two).
const PRECISION_BITS: u32 = 8;
/// Values below this are recorded exactly.
const LINEAR_LIMIT: u64 = 1 << PRECISION_BITS;
/// Buckets per power of two above the linear range.
const HALF: u64 = LINEAR_LIMIT / 2;
/// Total number of buckets needed to cover `0..=u64::MAX`.
const BUCKETS: usize = ((64 - PRECISION_BITS as usize) * HALF as usize) + LINEAR_LIMIT as usize;

/// A log-linear histogram of `u64` samples with bounded relative error.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("max", &self.max())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

/// Bucket index of `v`.
fn index_of(v: u64) -> usize {
    if v < LINEAR_LIMIT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb + 1 - PRECISION_BITS;
    // `v >> shift` lies in [HALF, LINEAR_LIMIT).
    (shift as usize) * (HALF as usize) + (v >> shift) as usize
}

/// Inclusive lower bound and width of bucket `idx`.
fn bucket_bounds(idx: usize) -> (u64, u64) {
    let idx = idx as u64;
    if idx < LINEAR_LIMIT {
        return (idx, 1);
    }
    let shift = idx / HALF - 1;
    let mantissa = idx - shift * HALF;
    (mantissa << shift, 1u64 << shift)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, v: u64) {
        self.counts[index_of(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Records a duration as nanoseconds (saturating at `u64::MAX`).
    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample, or 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest sample, or 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Arithmetic mean, or 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest recorded value
    /// such that at least `q` of all samples are at or below it, reported as
    /// its bucket midpoint clamped to the observed min/max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket_bounds(idx);
                let mid = lo.saturating_add((width - 1) / 2);
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// [`Histogram::quantile`] as a [`Duration`], treating samples as ns.
    pub fn quantile_duration(&self, q: f64) -> Duration {
        Duration::from_nanos(self.quantile(q))
    }

    /// Adds every sample of `other`, as if each had been recorded here
    /// (used to pool the samples of several runs).
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.mean(), 0.0);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..LINEAR_LIMIT {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), 0);
        assert_eq!(h.quantile(1.0), LINEAR_LIMIT - 1);
        assert_eq!(h.quantile(0.5), LINEAR_LIMIT / 2 - 1);
    }

    #[test]
    fn index_and_bounds_agree_over_the_whole_range() {
        let mut probes: Vec<u64> = (0..4096).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            probes.extend([p - 1, p, p + 1, p | (p >> 1), p.wrapping_mul(3) / 2]);
        }
        probes.push(u64::MAX);
        for v in probes {
            let idx = index_of(v);
            assert!(idx < BUCKETS, "index {idx} for {v} out of range");
            let (lo, width) = bucket_bounds(idx);
            assert!(lo <= v, "lower bound {lo} above {v}");
            assert!(v - lo < width, "{v} outside bucket [{lo}, +{width})");
            // Width never exceeds 1/128 of the lower bound above the linear range.
            if v >= LINEAR_LIMIT {
                assert!(width <= lo / HALF, "bucket too wide for {v}");
            }
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn indices_are_monotonic_and_contiguous() {
        let mut prev = 0usize;
        for v in 1..200_000u64 {
            let idx = index_of(v);
            assert!(idx == prev || idx == prev + 1, "gap at {v}");
            prev = idx;
        }
    }

    #[test]
    fn quantiles_are_within_one_percent_of_exact() {
        // Deterministic spread of values from ~1 µs to ~100 ms (in ns).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = Vec::new();
        let mut h = Histogram::new();
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let exp = (state % 17) as u32; // 2^10 .. 2^26
            let v = (1u64 << (10 + exp)) + (state >> 40) % (1u64 << (10 + exp));
            values.push(v);
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1] as f64;
            let got = h.quantile(q) as f64;
            let err = (got - exact).abs() / exact;
            assert!(err < 0.01, "q={q} exact={exact} got={got} err={err}");
        }
        assert_eq!(h.min(), values[0]);
        assert_eq!(h.max(), *values.last().unwrap());
    }

    #[test]
    fn bimodal_quantiles() {
        let mut h = Histogram::new();
        for v in 0..1000 {
            h.record(v * 1000);
            h.record(v * 1000 + 500_000_000);
        }
        assert_eq!(h.count(), 2000);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 999_000 + 500_000_000);
        let p25 = h.quantile(0.25) as f64;
        assert!((p25 - 499_000.0).abs() / 499_000.0 < 0.01, "p25 {p25}");
        let p75 = h.quantile(0.75) as f64;
        assert!(
            (p75 - 500_499_000.0).abs() / 500_499_000.0 < 0.01,
            "p75 {p75}"
        );
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut both = Histogram::new();
        for v in 0..1000u64 {
            let (h, v) = if v % 3 == 0 {
                (&mut a, v * 7)
            } else {
                (&mut b, v * 1_000 + 300)
            };
            h.record(v);
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), both.count());
        assert_eq!(a.min(), both.min());
        assert_eq!(a.max(), both.max());
        assert_eq!(a.mean(), both.mean());
        for q in [0.0, 0.25, 0.5, 0.99, 1.0] {
            assert_eq!(a.quantile(q), both.quantile(q), "q={q}");
        }
        // An empty histogram changes nothing, either way round.
        a.merge(&Histogram::new());
        assert_eq!(a.min(), both.min());
        let mut empty = Histogram::new();
        empty.merge(&b);
        assert_eq!(empty.min(), b.min());
        assert_eq!(empty.quantile(0.5), b.quantile(0.5));
    }

    #[test]
    fn durations_are_recorded_in_nanoseconds() {
        let mut h = Histogram::new();
        h.record_duration(Duration::from_micros(250));
        assert_eq!(h.quantile_duration(0.5), Duration::from_micros(250));
        assert_eq!(h.mean(), 250_000.0);
    }
}
