//! The per-team rate limit on instance creates: a token bucket per team.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Creates a team may make in a burst, and how fast the allowance comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    /// One more create every `per`.
    pub per: Duration,
}

impl Default for RateLimit {
    /// 5 at once, then one every 12 s (5 a minute).
    fn default() -> RateLimit {
        RateLimit {
            burst: 5,
            per: Duration::from_secs(12),
        }
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    /// `N/DURATION`, e.g. `5/1m`: N creates per DURATION, in a burst of N.
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let (n, per) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected N/DURATION, e.g. 5/1m"))?;
        let burst: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a number"))?;
        let window = humantime::parse_duration(per.trim()).map_err(|e| format!("{s:?}: {e}"))?;
        if burst == 0 || window.is_zero() {
            return Err(format!("{s:?}: both N and DURATION must be more than 0"));
        }
        Ok(RateLimit {
            burst,
            per: window / burst,
        })
    }
}

/// Buckets by team.
pub(super) struct Limiter {
    rate: RateLimit,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: RateLimit) -> Limiter {
        Limiter {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes one create for `team`, or says how long until one is available.
    pub fn take(&mut self, team: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst);
        let per = self.rate.per.as_secs_f64().max(1e-3);
        let (tokens, at) = self.buckets.entry(team.to_string()).or_insert((burst, now));
        let refilled =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() / per).min(burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            let wait = ((1.0 - refilled) * per).ceil().max(1.0);
            Err(Duration::from_secs_f64(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let rate: RateLimit = "3/3s".parse().unwrap();
        let mut l = Limiter::new(rate);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("a", t0).is_ok());
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        assert!(l.take("b", t0).is_ok(), "teams have their own buckets");
        assert!(l.take("a", t0 + Duration::from_millis(1100)).is_ok());
        assert!("0/1m".parse::<RateLimit>().is_err());
        assert!("5".parse::<RateLimit>().is_err());
    }
}
