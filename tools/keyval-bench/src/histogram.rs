//! Latency and lag histograms: `hdrhistogram`'s, with three significant
//! digits (a reported value is within 0.1 % of a recorded one) and
//! auto-resizing (any value a run records fits, without choosing a range
//! up front). Times are recorded in nanoseconds, lag in writes.
//!
//! The few helpers here are what every user of a histogram in the bench
//! needs on top of the crate's API: recording without a `Result` to
//! handle, durations, and pooling.

use std::time::Duration;

/// The histogram of the bench: `u64` counts.
pub type Histogram = hdrhistogram::Histogram<u64>;

/// Significant decimal digits kept of every value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty histogram that grows to fit what it records.
pub fn new() -> Histogram {
    // Only a precision above 5 digits is refused.
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is a valid precision")
}

/// Records `value`. One beyond what a histogram can grow to (about
/// 2^62) is recorded as the largest it holds.
pub fn record(histogram: &mut Histogram, value: u64) {
    if histogram.record(value).is_err() {
        histogram.saturating_record(value);
    }
}

/// Records `d` in nanoseconds.
pub fn record_duration(histogram: &mut Histogram, d: Duration) {
    record(histogram, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// The value at quantile `q` (0.0..=1.0) as a duration, the samples
/// being nanoseconds; zero when empty.
pub fn quantile_duration(histogram: &Histogram, q: f64) -> Duration {
    Duration::from_nanos(histogram.value_at_quantile(q))
}

/// Adds every sample of `other` to `into`, as if each had been recorded
/// there (to pool the samples of several runs).
pub fn merge(into: &mut Histogram, other: &Histogram) {
    // Auto-resizing histograms take any other's values; should one not,
    // its samples go in one by one, the largest saturated.
    if into.add(other).is_err() {
        for v in other.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_reports_zero() {
        let h = new();
        assert_eq!(h.len(), 0);
        assert_eq!(h.value_at_quantile(0.5), 0);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.mean(), 0.0);
    }

    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent() {
        // A spread of values from ~1 µs to ~100 ms (in ns).
        let mut rng = fastrand::Rng::with_seed(9);
        let mut values: Vec<u64> = (0..100_000)
            .map(|_| {
                let exp = rng.u32(10..27);
                (1u64 << exp) + rng.u64(..1u64 << exp)
            })
            .collect();
        let mut h = new();
        for &v in &values {
            record(&mut h, v);
        }
        values.sort_unstable();
        for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1] as f64;
            let got = h.value_at_quantile(q) as f64;
            let err = (got - exact).abs() / exact;
            assert!(err <= 0.001, "q={q} exact={exact} got={got} err={err}");
        }
    }

    #[test]
    fn huge_values_and_durations_fit() {
        let mut h = new();
        record(&mut h, u64::MAX);
        record_duration(&mut h, Duration::from_micros(250));
        assert_eq!(h.len(), 2);
        let p0 = quantile_duration(&h, 0.0).as_nanos() as f64;
        assert!((p0 - 250_000.0).abs() <= 250.0, "{p0}");
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut both) = (new(), new(), new());
        for v in 0..1000u64 {
            let (h, v) = if v % 3 == 0 {
                (&mut a, v * 7)
            } else {
                (&mut b, v * 1_000_000 + 300)
            };
            record(h, v);
            record(&mut both, v);
        }
        merge(&mut a, &b);
        assert_eq!(a.len(), both.len());
        assert_eq!(a.min(), both.min());
        assert_eq!(a.max(), both.max());
        for q in [0.0, 0.25, 0.5, 0.99, 1.0] {
            assert_eq!(a.value_at_quantile(q), both.value_at_quantile(q), "q={q}");
        }
        merge(&mut a, &new());
        assert_eq!(a.len(), both.len());
    }
}
