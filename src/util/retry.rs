//! The one retry policy: capped exponential backoff with jitter. Used per key (a failed object
//! is retried later without blocking the others, and forgotten once it succeeds), per
//! connection (the OVSDB client's reconnects) and for start-up dependencies (the NB/SB
//! servers, OVS, the API server), so that a dependency that is restarting is waited for
//! instead of ending the process; only configuration errors end it.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::ConfigError;
use tokio_util::sync::CancellationToken;

/// Capped exponential backoff: attempt 1 waits about `base`, each further attempt twice as
/// long, never more than `max`. The actual delay is jittered into `[d/2, d]` so that many
/// clients that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub base: Duration,
    pub max: Duration,
}

/// Dependencies and connections: 100 ms doubling to 10 s (so 5-10 s between attempts once
/// capped).
pub const DEPENDENCY: Policy = Policy::new(Duration::from_millis(100), Duration::from_secs(10));

/// A persistent database connection (the NB/SB/OVS OVSDB clients): 100 ms doubling to 1 s.
/// Every controller's pending work waits for this one connection, so after a long outage it
/// must come back within about a second of the server, not after a 10 s backoff; one
/// connection attempt per second and process costs a server nothing.
pub const RECONNECT: Policy = Policy::new(Duration::from_millis(100), Duration::from_secs(1));

/// An NB transaction aborted because a guard of its translation no longer held (another
/// client changed what it was decided on): 10 ms doubling to 200 ms, a handful of times,
/// while the local replica catches up with that change.
pub const NB_TXN_ABORT: Policy = Policy::new(Duration::from_millis(10), Duration::from_millis(200));

impl Policy {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Policy { base, max }
    }

    /// The un-jittered delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// The jittered delay after failed attempt `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        jittered(self.ceiling(attempt), random_u64())
    }
}

/// `d` scaled into `[d/2, d]` by `r` (uniform when `r` is).
pub fn jittered(d: Duration, r: u64) -> Duration {
    let half = d / 2;
    let span = d.saturating_sub(half).as_nanos() as u64;
    half + Duration::from_nanos(if span == 0 { 0 } else { r % (span + 1) })
}

/// Randomness good enough for jitter, without a crate: std's per-process random hash keys
/// over a counter and the clock.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Backoff state of one thing being retried (a connection, a start-up step).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// Record a failure; returns the delay before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Success: the next failure starts from the base delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The Kubernetes watches back off with the same policy: kube-runtime asks for the next delay
/// after each watch error and resets after each successful event.
impl Iterator for Backoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(self.failed())
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        Backoff::reset(self)
    }
}

/// Whether an error is a configuration error (retrying cannot help; the process should end).
pub fn is_config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some())
}

/// One thing being retried until it works, for loops that cannot hand [`until_ok`] a closure
/// (e.g. a method on `&mut self`): call [`Retrying::failed`] with each error, then try again.
#[derive(Debug)]
pub struct Retrying {
    what: String,
    backoff: Backoff,
    last_logged: Option<String>,
}

impl Retrying {
    pub fn new(what: impl Into<String>, policy: Policy) -> Self {
        Retrying {
            what: what.into(),
            backoff: Backoff::new(policy),
            last_logged: None,
        }
    }

    /// Success: logs the recovery (if there were failures).
    pub fn succeeded(&mut self) {
        if self.backoff.failures() > 0 {
            tracing::info!(
                what = %self.what,
                attempts = self.backoff.failures() + 1,
                "succeeded after retrying"
            );
        }
        self.backoff.reset();
        self.last_logged = None;
    }

    /// A failure: returns it at once when it is a configuration error (or when `cancel`
    /// fires during the wait); otherwise logs it (WARN for the first failure and every new
    /// error, DEBUG for repeats), waits the backoff and returns `Ok` to try again.
    pub async fn failed(
        &mut self,
        e: anyhow::Error,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        if is_config_error(&e) {
            return Err(e);
        }
        let delay = self.backoff.failed();
        let msg = format!("{e:#}");
        if self.last_logged.as_deref() != Some(msg.as_str()) {
            tracing::warn!(what = %self.what, error = %msg, retry_in = ?delay, "failed; retrying with backoff");
            self.last_logged = Some(msg);
        } else {
            tracing::debug!(what = %self.what, attempt = self.backoff.failures(), retry_in = ?delay, "still failing");
        }
        let c = cancel.clone();
        tokio::select! {
            _ = c.cancelled() => Err(e.context(format!("{}: cancelled while retrying", self.what))),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Runs `op` until it succeeds, waiting per `policy` between attempts. A configuration error
/// (see [`is_config_error`]) is returned at once, and so is the last error when `cancel`
/// fires. Logs the first failure and every change of the error at WARN (each attempt only at
/// DEBUG), and the recovery at INFO.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    policy: Policy,
    cancel: &CancellationToken,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let mut r = Retrying::new(what, policy);
    loop {
        match op().await {
            Ok(v) => {
                r.succeeded();
                return Ok(v);
            }
            Err(e) => r.failed(e.into(), cancel).await?,
        }
    }
}

/// Per-key retries: a failed key becomes due again after its (jittered) backoff; a success
/// (or the key's deletion) forgets it, so its next failure starts from the base delay.
#[derive(Debug, Clone)]
pub struct Retries<K = String> {
    pending: BTreeMap<K, (Instant, u32)>,
    policy: Policy,
}

/// Per-object retries of the controllers (a pod's port, a service's VIPs, a policy): 250 ms
/// doubling to 10 s.
pub const PER_OBJECT: Policy = Policy::new(Duration::from_millis(250), Duration::from_secs(10));

impl<K: Ord + Clone> Retries<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::with_policy(Policy::new(base, max))
    }

    pub fn with_policy(policy: Policy) -> Self {
        Retries {
            pending: BTreeMap::new(),
            policy,
        }
    }

    /// Record a failure; returns the attempt number and the delay before the next try.
    pub fn failed<Q>(&mut self, key: &Q) -> (u32, Duration)
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let attempts = self.attempts(key) + 1;
        let delay = self.policy.delay(attempts);
        self.pending
            .insert(key.to_owned(), (Instant::now() + delay, attempts));
        (attempts, delay)
    }

    /// Failed attempts of `key` since its last success (0: none pending).
    pub fn attempts<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.pending.get(key).map(|(_, a)| *a).unwrap_or(0)
    }

    /// Success or deletion: nothing left to retry.
    pub fn forget<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.pending.remove(key);
    }

    /// Keys whose retry time has come.
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.pending
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `key` may run now (not waiting for a later retry).
    pub fn ready<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.pending.get(key).is_none_or(|(at, _)| *at <= now)
    }

    /// When `key` is due again, if it is waiting for a retry.
    pub fn retry_at<Q>(&self, key: &Q) -> Option<Instant>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.pending.get(key).map(|(at, _)| *at)
    }

    /// The earliest pending retry.
    pub fn next_at(&self) -> Option<Instant> {
        self.pending.values().map(|(at, _)| *at).min()
    }

    /// The shared dependency is back (the NB reconnected): every key waiting for its retry is
    /// due at once, and its count starts again, because those failures said nothing about the
    /// object itself. Returns how many keys were waiting.
    pub fn retry_all_now(&mut self, now: Instant) -> usize {
        for (at, attempts) in self.pending.values_mut() {
            *at = now;
            *attempts = 0;
        }
        self.pending.len()
    }
}

/// A dependency many objects share (the NB for every pod, service and policy): while it is
/// down each object's retry fails, and logging each of them would flood the log with one
/// line per object per attempt. An `Outage` logs the change of state instead: WARN once when
/// objects start failing (how many, and why), INFO once when they succeed again; the
/// per-object failures in between are the caller's DEBUG lines.
#[derive(Debug)]
pub struct Outage {
    what: String,
    down: Option<Down>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Down {
    since: Instant,
    failures: u64,
}

/// What a failure reported to an [`Outage`] means for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// The first failure since things worked: logged at WARN.
    Started,
    /// The dependency is still down: log the object at DEBUG only.
    Ongoing,
}

impl Outage {
    pub fn new(what: impl Into<String>) -> Self {
        Outage {
            what: what.into(),
            down: None,
        }
    }

    /// `objects` objects failed together with `error`.
    pub fn failed(&mut self, objects: usize, error: &str) -> Noted {
        let objects = objects as u64;
        match &mut self.down {
            Some(d) => {
                d.failures = d.failures.saturating_add(objects);
                Noted::Ongoing
            }
            None => {
                self.down = Some(Down {
                    since: Instant::now(),
                    failures: objects,
                });
                tracing::warn!(
                    what = %self.what, objects, %error,
                    "failing; retrying each with backoff (per-object lines at debug level, \
                     logged again once it works)"
                );
                Noted::Started
            }
        }
    }

    /// Something worked again: logs the recovery once.
    pub fn succeeded(&mut self) {
        if let Some(d) = self.down.take() {
            tracing::info!(
                what = %self.what, failed_attempts = d.failures, down_for = ?d.since.elapsed(),
                "working again"
            );
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_back_makes_every_waiting_key_due_with_a_fresh_count() {
        let mut r: Retries<String> = Retries::with_policy(PER_OBJECT);
        for _ in 0..5 {
            r.failed("a");
        }
        r.failed("b");
        let now = Instant::now();
        assert!(!r.ready("a", now), "a waits for its backoff");
        assert_eq!(r.retry_all_now(now), 2);
        assert!(r.ready("a", now) && r.ready("b", now));
        assert_eq!(r.attempts("a"), 0);
        // The next failure starts from the base delay again.
        let (attempts, delay) = r.failed("a");
        assert_eq!(attempts, 1);
        assert!(delay <= PER_OBJECT.ceiling(1), "{delay:?}");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = Policy::new(ms(100), ms(1000));
        let got: Vec<u128> = (1..=6).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        // Huge attempt counts neither overflow nor exceed the cap.
        assert_eq!(p.ceiling(u32::MAX), ms(1000));
        assert_eq!(DEPENDENCY.ceiling(1), ms(100));
        assert_eq!(DEPENDENCY.ceiling(30), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for (d, r, want) in [
            (ms(1000), 0, ms(500)),
            (ms(1000), 500_000_000, ms(1000)),
            (ms(1000), 250_000_000, ms(750)),
            (Duration::ZERO, 7, Duration::ZERO),
        ] {
            assert_eq!(jittered(d, r), want, "{d:?} {r}");
        }
        // Real randomness: in range, and not one constant.
        let p = Policy::new(ms(100), ms(1000));
        let samples: Vec<Duration> = (0..200).map(|_| p.delay(4)).collect();
        assert!(samples.iter().all(|d| *d >= ms(400) && *d <= ms(800)));
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first), "no jitter: {first:?}");
    }

    #[test]
    fn backoff_resets_after_success() {
        let mut b = Backoff::new(Policy::new(ms(100), ms(1000)));
        for want in [100, 200, 400, 800, 1000, 1000] {
            let d = b.failed();
            assert!(d >= ms(want / 2) && d <= ms(want), "{d:?} vs {want}");
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.failed() <= ms(100));
        // As kube-runtime's watch backoff: an endless iterator of the same delays.
        let mut it = Backoff::new(Policy::new(ms(100), ms(1000)));
        let d: Vec<Duration> = it.by_ref().take(3).collect();
        assert!(d[2] >= ms(200) && d[2] <= ms(400), "{d:?}");
        kube::runtime::utils::Backoff::reset(&mut it);
        assert_eq!(it.failures(), 0);
    }

    #[test]
    fn retries_per_key_back_off_and_forget() {
        let mut r = Retries::new(ms(100), Duration::from_secs(1));
        let a = "a".to_string();
        let delays: Vec<_> = (0..6).map(|_| r.failed(&a).1).collect();
        for (d, cap) in delays.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!(*d >= ms(cap / 2) && *d <= ms(cap), "{d:?} vs {cap}");
        }
        assert!(r.due(Instant::now()).is_empty());
        assert_eq!(r.due(Instant::now() + Duration::from_secs(2)), ["a"]);
        assert!(!r.ready(&a, Instant::now()));
        assert_eq!(r.attempts(&a), 6);
        r.forget(&a);
        assert!(r.ready(&a, Instant::now()));
        assert!(r.next_at().is_none());
        // After the reset the next failure starts from the base delay again.
        let (attempt, d) = r.failed(&a);
        assert_eq!(attempt, 1);
        assert!(d >= ms(50) && d <= ms(100), "{d:?}");
    }

    #[test]
    fn retries_keep_each_key_apart() {
        // Any ordered key (e.g. a policy unit), not only strings.
        let mut r: Retries<(u8, &str)> = Retries::with_policy(PER_OBJECT);
        for _ in 0..5 {
            r.failed(&(1, "bad"));
        }
        let (attempt, d) = r.failed(&(2, "other"));
        assert_eq!((attempt, r.attempts(&(1, "bad"))), (1, 5));
        assert!(d >= ms(125) && d <= ms(250), "{d:?}");
        let at = r.retry_at(&(2, "other")).unwrap();
        assert_eq!(r.next_at(), Some(at));
        r.forget(&(1, "bad"));
        assert_eq!(r.attempts(&(1, "bad")), 0);
        assert_eq!(r.attempts(&(2, "other")), 1);
    }

    #[test]
    fn jitter_bounds_hold_for_every_attempt_of_the_shared_policies() {
        for p in [DEPENDENCY, PER_OBJECT] {
            for attempt in 1..=12 {
                let cap = p.ceiling(attempt);
                for _ in 0..50 {
                    let d = p.delay(attempt);
                    assert!(d >= cap / 2 && d <= cap, "{p:?} #{attempt}: {d:?}");
                }
            }
        }
    }

    #[test]
    fn an_outage_is_reported_once_until_it_ends() {
        let mut o = Outage::new("NB");
        assert!(!o.is_down());
        assert_eq!(o.failed(30, "connection refused"), Noted::Started);
        for n in [30, 1, 30] {
            assert_eq!(o.failed(n, "connection refused"), Noted::Ongoing);
        }
        assert_eq!(o.failed(2, "another error"), Noted::Ongoing);
        assert!(o.is_down());
        o.succeeded();
        assert!(!o.is_down());
        o.succeeded();
        assert_eq!(o.failed(1, "refused"), Noted::Started);
    }

    const FAST: Policy = Policy::new(Duration::from_millis(1), Duration::from_millis(4));

    #[tokio::test]
    async fn until_ok_retries_transient_errors_and_stops_on_config_errors() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let v = until_ok("flaky", FAST, &cancel, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    anyhow::bail!("connection refused")
                }
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 4);

        let mut calls = 0;
        let e = until_ok("bad config", FAST, &cancel, || {
            calls += 1;
            async {
                Err::<(), _>(
                    anyhow::Error::new(ConfigError::new("key file missing"))
                        .context("setting up the NB"),
                )
            }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(format!("{e:#}").contains("key file missing"));
    }

    #[tokio::test]
    async fn until_ok_gives_up_when_cancelled() {
        let cancel = CancellationToken::new();
        let src = cancel.clone();
        let task = tokio::spawn(async move {
            until_ok("never", FAST, &cancel, || async {
                Err::<(), _>(anyhow::anyhow!("down"))
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        src.cancel();
        let e = task.await.unwrap().unwrap_err();
        assert!(format!("{e:#}").contains("cancelled"), "{e:#}");
    }
}
