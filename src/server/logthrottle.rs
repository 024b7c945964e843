//! Rate limiting for log lines that an attacker or a misconfiguration can
//! repeat without end: refused connections, handshake timeouts, two
//! followers on one id replacing each other.
//!
//! Per key, a burst of up to [`BURST`] lines gets through, then at most
//! one line per [`PERIOD`] (a token bucket: one token per period, at most
//! [`BURST`] saved up). The lines held back are counted, and the next line
//! that gets through says how many were suppressed. The burst keeps a few
//! distinct events readable (a handful of refusals in a row each show);
//! the rate bounds what a flood of them can write. [`LogThrottle`] is pure (it takes `now`); [`allow`] is the
//! process-wide instance the loop's log sites use, so that no state has to
//! be threaded through the code that owns those sites.
//!
//! ```text
//! warn: 127.0.0.1:40312: refused, 64 connections already
//! warn: 127.0.0.1:40990: refused, 64 connections already (912 similar lines suppressed)
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past a burst, the shortest time between two lines with the same key.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Lines with one key that may follow each other with no wait, after a
/// quiet spell of `BURST` periods.
pub const BURST: u64 = 10;

/// Keys kept before idle ones are forgotten. Keys are a site name plus at
/// most a follower id, so this is only reached if ids churn; a forgotten
/// key loses its count of suppressed lines, nothing else.
const MAX_KEYS: usize = 1024;

/// Per-key state: a token bucket and how many lines were suppressed
/// since the last one that got through.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Lines that may get through now.
    tokens: u64,
    /// Tokens have been added for every whole period up to here.
    refilled: Instant,
    suppressed: u64,
}

/// Decides which of a stream of repetitive log lines get written.
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    burst: u64,
    entries: HashMap<String, Entry>,
}

impl LogThrottle {
    /// A throttle letting `burst` lines per key through at once, then
    /// one every `period`.
    pub fn new(period: Duration, burst: u64) -> LogThrottle {
        LogThrottle {
            period: period.max(Duration::from_nanos(1)),
            burst: burst.max(1),
            entries: HashMap::new(),
        }
    }

    /// Whether a line with `key` may be logged at `now`.
    ///
    /// # Returns
    /// `Some(n)`: log it, and say that `n` similar lines were suppressed
    /// since the last one (0: say nothing). `None`: drop it (it is
    /// counted).
    pub fn check(&mut self, key: &str, now: Instant) -> Option<u64> {
        let (period, burst) = (self.period, self.burst);
        if !self.entries.contains_key(key) {
            if self.entries.len() >= MAX_KEYS {
                // Forget keys whose bucket is full again: they hold no
                // count worth keeping.
                let full = period.saturating_mul(u32::try_from(burst).unwrap_or(u32::MAX));
                self.entries
                    .retain(|_, e| now.saturating_duration_since(e.refilled) < full);
            }
            self.entries.insert(
                key.to_string(),
                Entry {
                    tokens: burst,
                    refilled: now,
                    suppressed: 0,
                },
            );
        }
        let entry = self.entries.get_mut(key)?;
        let elapsed = now.saturating_duration_since(entry.refilled);
        let gained = elapsed.as_nanos() / period.as_nanos();
        if gained > 0 {
            let gained = u64::try_from(gained).unwrap_or(u64::MAX);
            entry.tokens = entry.tokens.saturating_add(gained).min(burst);
            entry.refilled = if entry.tokens == burst {
                now
            } else {
                // `gained` < `burst` here, so this fits.
                entry.refilled + period.saturating_mul(u32::try_from(gained).unwrap_or(u32::MAX))
            };
        }
        if entry.tokens == 0 {
            entry.suppressed += 1;
            return None;
        }
        entry.tokens -= 1;
        Some(std::mem::take(&mut entry.suppressed))
    }
}

/// The process-wide throttle behind [`allow`].
static GLOBAL: Mutex<Option<LogThrottle>> = Mutex::new(None);

/// [`LogThrottle::check`] on the process-wide throttle, now.
pub fn allow(key: &str) -> Option<u64> {
    // A poisoned lock only means a panic elsewhere mid-check; the counts
    // are still usable.
    let mut guard = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(|| LogThrottle::new(PERIOD, BURST))
        .check(key, Instant::now())
}

/// The tail for a line that got through after `suppressed` others:
/// empty, or ` (N similar lines suppressed)`.
pub fn suffix(suppressed: u64) -> String {
    match suppressed {
        0 => String::new(),
        1 => " (1 similar line suppressed)".into(),
        n => format!(" ({n} similar lines suppressed)"),
    }
}

/// Logs at `level` within the throttle's limits for `key` (see the
/// module doc), with the count of suppressed lines appended: `throttled!(warn, "key", "fmt", args...)`.
macro_rules! throttled {
    ($level:ident, $key:expr, $($arg:tt)+) => {
        if let Some(n) = $crate::server::logthrottle::allow($key) {
            log::$level!(
                "{}{}",
                format_args!($($arg)+),
                $crate::server::logthrottle::suffix(n)
            );
        }
    };
}
pub(crate) use throttled;

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_line_per_key_per_period_then_the_count() {
        let mut t = LogThrottle::new(SEC, 1);
        let t0 = Instant::now();
        assert_eq!(t.check("a", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.check("a", t0 + ms(100 * i)), None);
        }
        // Another key is not held back by the first.
        assert_eq!(t.check("b", t0 + ms(500)), Some(0));
        assert_eq!(t.check("a", t0 + ms(999)), None);
        assert_eq!(t.check("a", t0 + SEC), Some(6));
        // The count starts again after a line got through.
        assert_eq!(t.check("a", t0 + ms(1500)), None);
        assert_eq!(t.check("a", t0 + 3 * SEC), Some(1));
        assert_eq!(t.check("a", t0 + 5 * SEC), Some(0));
    }

    #[test]
    fn a_burst_gets_through_then_one_line_per_period() {
        let mut t = LogThrottle::new(SEC, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.check("a", t0 + ms(i)), Some(0), "line {i}");
        }
        assert_eq!(t.check("a", t0 + ms(10)), None);
        assert_eq!(t.check("a", t0 + ms(20)), None);
        // A flood: one line a period, each with the count.
        assert_eq!(t.check("a", t0 + SEC), Some(2));
        assert_eq!(t.check("a", t0 + SEC + ms(1)), None);
        assert_eq!(t.check("a", t0 + 2 * SEC + ms(5)), Some(1));
        // A quiet spell refills the bucket, but no more than the burst.
        let later = t0 + 100 * SEC;
        for i in 0..3 {
            assert_eq!(t.check("a", later + ms(i)), Some(0), "line {i}");
        }
        assert_eq!(t.check("a", later + ms(3)), None);
    }

    #[test]
    fn the_key_table_stays_bounded() {
        let mut t = LogThrottle::new(SEC, 2);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert_eq!(t.check(&format!("k{i}"), t0), Some(0));
        }
        let later = t0 + 3 * SEC;
        assert_eq!(t.check("new", later), Some(0));
        assert!(t.entries.len() <= 2, "{} keys kept", t.entries.len());
    }

    #[test]
    fn suffixes() {
        assert_eq!(suffix(0), "");
        assert_eq!(suffix(1), " (1 similar line suppressed)");
        assert_eq!(suffix(42), " (42 similar lines suppressed)");
    }
}
