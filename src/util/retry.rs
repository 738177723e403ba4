//! Per-key retry with exponential backoff: a failed object is retried later without blocking
//! the others, and forgotten once it succeeds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Retries {
    pending: BTreeMap<String, (Instant, u32)>,
    base: Duration,
    max: Duration,
}

impl Retries {
    pub fn new(base: Duration, max: Duration) -> Self {
        Retries {
            pending: BTreeMap::new(),
            base,
            max,
        }
    }

    /// Record a failure; returns the attempt number and the delay before the next try.
    pub fn failed(&mut self, key: &str) -> (u32, Duration) {
        let attempts = self.pending.get(key).map(|(_, a)| a + 1).unwrap_or(1);
        let delay = self
            .base
            .saturating_mul(1u32 << (attempts - 1).min(16))
            .min(self.max);
        self.pending
            .insert(key.to_string(), (Instant::now() + delay, attempts));
        (attempts, delay)
    }

    /// Success or deletion: nothing left to retry.
    pub fn forget(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// Keys whose retry time has come.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `key` may run now (not waiting for a later retry).
    pub fn ready(&self, key: &str, now: Instant) -> bool {
        self.pending.get(key).is_none_or(|(at, _)| *at <= now)
    }

    /// The earliest pending retry.
    pub fn next_at(&self) -> Option<Instant> {
        self.pending.values().map(|(at, _)| *at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let mut r = Retries::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| r.failed("a").1.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert!(r.due(Instant::now()).is_empty());
        assert_eq!(r.due(Instant::now() + Duration::from_secs(2)), ["a"]);
        assert!(!r.ready("a", Instant::now()));
        r.forget("a");
        assert!(r.ready("a", Instant::now()));
        assert!(r.next_at().is_none());
    }
}
