//! The API server as the whole process sees it. Every watch, the pod annotations, the
//! leader-election Lease and event recording talk to the one API server; when it goes away
//! they all fail together, each on its own retry schedule. Logging each of them would write
//! one line per watch, object and attempt. They report here instead: the first failure is
//! logged at WARN (with how many objects it affects), the end of the outage at INFO, and
//! each caller logs its own failures at DEBUG.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::util::retry::{Noted, Outage};

/// How long one API write may go unanswered before it counts as a failure (of the API server,
/// hung or unreachable) and is retried: a frozen API server must not hold a worker silently.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Successes this soon after the first failure do not end an outage: they are answers and
/// watch events that were already on their way when the server went (the other watches' buffered
/// events, a request answered just before the cut), not a sign that it is back.
const SETTLE: Duration = Duration::from_secs(1);

/// The process's view of the API server: the outage log and when it began.
struct Api {
    outage: Outage,
    since: Option<Instant>,
}

impl Api {
    fn failed(&mut self, now: Instant, objects: usize, error: &str) -> Noted {
        self.since.get_or_insert(now);
        self.outage.failed(objects, error)
    }

    /// Whether a success at `now` ends the outage (and so logs it).
    fn succeeded(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.saturating_duration_since(since) >= SETTLE => {
                self.since = None;
                self.outage.succeeded();
                true
            }
            _ => false,
        }
    }
}

static API: LazyLock<Mutex<Api>> = LazyLock::new(|| {
    Mutex::new(Api {
        outage: Outage::new("requests to the API server"),
        since: None,
    })
});
/// Whether an outage is being tracked, so that the success path (every watch event) takes
/// no lock while things work.
static DOWN: AtomicBool = AtomicBool::new(false);

/// `objects` objects (cached objects of a watch, pods to annotate) failed with `error`.
/// Logs the start of an outage; the caller logs the failure itself at DEBUG.
pub fn failed(objects: usize, error: &str) -> Noted {
    let mut api = API.lock().unwrap_or_else(|p| p.into_inner());
    let noted = api.failed(Instant::now(), objects, error);
    DOWN.store(true, Ordering::Release);
    noted
}

/// A request or watch worked: logs the end of an outage, once.
pub fn succeeded() {
    if !DOWN.load(Ordering::Acquire) {
        return;
    }
    let mut api = API.lock().unwrap_or_else(|p| p.into_inner());
    if api.succeeded(Instant::now()) {
        DOWN.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_ends_at_the_first_success_once_it_has_settled() {
        let mut api = Api {
            outage: Outage::new("test"),
            since: None,
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Nothing failed: a success changes nothing.
        assert!(!api.succeeded(at(0)));
        assert_eq!(api.failed(at(0), 3, "refused"), Noted::Started);
        assert_eq!(api.failed(at(10), 5, "refused"), Noted::Ongoing);
        // A watch event already on its way when the server went.
        assert!(!api.succeeded(at(20)));
        assert!(api.outage.is_down());
        assert_eq!(api.failed(at(500), 1, "refused"), Noted::Ongoing);
        // The first success after the settling time ends it, once.
        assert!(api.succeeded(at(1_200)));
        assert!(!api.outage.is_down());
        assert!(!api.succeeded(at(1_300)));
        // The next failure is a new outage, logged again.
        assert_eq!(api.failed(at(2_000), 1, "timeout"), Noted::Started);
    }
}
