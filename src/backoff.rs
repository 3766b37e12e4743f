//! Per-key retry delays: exponential backoff with jitter.
//!
//! Owns only the arithmetic: given how many times in a row a key has failed, how long to wait before
//! trying it again. It keeps no state and reads no clock; the work queue counts failures and turns a
//! delay into a deadline. Defaults follow kube-runtime's watcher backoff, scaled down: 500 ms doubling
//! per consecutive failure, capped at 30 s, ±20 % jitter so that keys failing together (say, when the
//! Docker daemon restarts) do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Backoff configuration. `Default` gives 500 ms × 2ⁿ, capped at 30 s, ±20 % jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// No delay (jitter included) ever exceeds this.
    pub cap: Duration,
    /// Relative jitter: a delay `d` becomes a uniform pick in `d × [1 - jitter, 1 + jitter]`, then
    /// capped. Values outside `0.0..=1.0` are clamped; `0.0` makes delays deterministic.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The un-jittered delay after `failures` consecutive failures: `base × 2^(failures-1)`, capped.
    /// Zero failures means no delay. Saturates instead of overflowing.
    pub fn nominal(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 2u32.saturating_pow(doublings);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay to wait after `failures` consecutive failures, with random jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let unit = rand::rng().random_range(-1.0..=1.0);
        self.delay_with(failures, unit)
    }

    /// Like [`Backoff::delay`] with the random draw supplied: `unit` in `-1.0..=1.0` picks the point
    /// in the jitter window (`-1.0` shortest, `1.0` longest). Deterministic, for tests and callers that
    /// bring their own randomness.
    pub fn delay_with(&self, failures: u32, unit: f64) -> Duration {
        let nominal = self.nominal(failures);
        let factor = 1.0 + self.jitter_fraction() * finite_or_zero(unit).clamp(-1.0, 1.0);
        Duration::try_from_secs_f64(nominal.as_secs_f64() * factor)
            .unwrap_or(nominal)
            .min(self.cap)
    }

    /// `jitter` clamped into `0.0..=1.0`, with NaN read as no jitter.
    fn jitter_fraction(&self) -> f64 {
        finite_or_zero(self.jitter).clamp(0.0, 1.0)
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_500ms_doubling_to_30s_with_20_percent_jitter() {
        let b = Backoff::default();
        assert_eq!((b.base, b.cap, b.jitter), (ms(500), ms(30_000), 0.2));
    }

    #[test]
    fn nominal_doubles_per_failure_and_stops_at_cap() {
        let b = Backoff::default();
        let got: Vec<_> = (0..=8).map(|n| b.nominal(n)).collect();
        let want = [0, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000].map(ms);
        assert_eq!(got, want);
    }

    #[test]
    fn huge_failure_counts_saturate_at_cap() {
        let b = Backoff::default();
        assert_eq!(b.nominal(u32::MAX), b.cap);
        assert!(b.delay(u32::MAX) <= b.cap);
    }

    #[test]
    fn delay_with_spans_the_jitter_window() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(2, -1.0), ms(800));
        assert_eq!(b.delay_with(2, 0.0), ms(1_000));
        assert_eq!(b.delay_with(2, 1.0), ms(1_200));
    }

    #[test]
    fn jitter_never_exceeds_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(20, 1.0), b.cap);
        assert_eq!(b.delay_with(20, -1.0), ms(24_000));
    }

    #[test]
    fn random_delays_stay_inside_the_window() {
        let b = Backoff::default();
        for failures in 1..12 {
            let nominal = b.nominal(failures).as_secs_f64();
            for _ in 0..200 {
                let d = b.delay(failures).as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9,
                    "{failures}: {d} < 0.8 × {nominal}"
                );
                assert!(
                    d <= (nominal * 1.2).min(30.0) + 1e-9,
                    "{failures}: {d} too long"
                );
            }
        }
    }

    #[test]
    fn out_of_range_jitter_and_draws_are_clamped_not_panicking() {
        let wild = Backoff {
            jitter: 7.0,
            ..Backoff::default()
        };
        assert_eq!(wild.delay_with(1, -1.0), Duration::ZERO);
        let nan = Backoff {
            jitter: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(nan.delay_with(1, 1.0), ms(500));
        assert_eq!(Backoff::default().delay_with(1, f64::INFINITY), ms(500));
    }

    #[test]
    fn zero_jitter_is_deterministic() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(3), ms(2_000));
    }
}
