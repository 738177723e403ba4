//! Readiness: "the initial sync is done". Each long-running role registers a component before
//! it starts and marks it done when its first full sync has been applied; the process is ready
//! once every registered component is done and registration is closed. systemd's `READY=1`
//! and an HTTP `/readyz` both read this one signal.
//!
//! Use: `let p = ready.register("master")` before the role starts, `p.done()` after its first
//! sync, `ready.seal()` once every role has registered; `ready.wait().await` /
//! `ready.is_ready()` / `ready.pending()` to observe.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    /// Component name -> done.
    components: BTreeMap<&'static str, bool>,
    /// No more components will register.
    sealed: bool,
}

impl State {
    fn ready(&self) -> bool {
        self.sealed && self.components.values().all(|done| *done)
    }
}

/// The process-wide readiness signal; cheap to clone, all clones share one state.
#[derive(Debug, Clone)]
pub struct Readiness {
    tx: Arc<watch::Sender<State>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// One component's promise to report its initial sync. Dropping it without [`Pending::done`]
/// leaves the process not ready (a role that failed before syncing is not ready).
#[derive(Debug)]
#[must_use = "call done() when the initial sync is complete"]
pub struct Pending {
    name: &'static str,
    tx: Arc<watch::Sender<State>>,
}

impl Pending {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The initial sync of this component is complete.
    pub fn done(self) {
        let name = self.name;
        self.tx
            .send_if_modified(|s| match s.components.get_mut(name) {
                Some(done) if !*done => {
                    *done = true;
                    true
                }
                _ => false,
            });
        tracing::info!(component = name, "initial sync complete");
    }
}

impl Readiness {
    pub fn new() -> Self {
        Readiness {
            tx: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Register a component that must finish its initial sync before the process is ready.
    /// Registering a name twice returns a second promise for the same entry.
    pub fn register(&self, name: &'static str) -> Pending {
        self.tx.send_modify(|s| {
            s.components.entry(name).or_insert(false);
        });
        Pending {
            name,
            tx: self.tx.clone(),
        }
    }

    /// Every component has registered. Until this is called the process is not ready, so a
    /// notifier started early cannot mistake "nothing registered yet" for "all done".
    pub fn seal(&self) {
        self.tx
            .send_if_modified(|s| !std::mem::replace(&mut s.sealed, true));
    }

    pub fn is_ready(&self) -> bool {
        self.tx.borrow().ready()
    }

    /// Components still syncing (for a `/readyz` body or a log line); empty once ready, and
    /// also empty before `seal` when nothing has registered yet.
    pub fn pending(&self) -> Vec<&'static str> {
        self.tx
            .borrow()
            .components
            .iter()
            .filter(|(_, done)| !**done)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Resolves once the process is ready (immediately if it already is).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(State::ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_sealed_and_every_component_done() {
        // (components registered, how many done, sealed) -> ready
        let cases = [
            (0, 0, false, false),
            (0, 0, true, true),
            (2, 0, true, false),
            (2, 1, true, false),
            (2, 2, false, false),
            (2, 2, true, true),
        ];
        let names = ["master", "net-controller"];
        for (n, done, sealed, want) in cases {
            let r = Readiness::new();
            let pending: Vec<Pending> = names[..n].iter().map(|c| r.register(c)).collect();
            for p in pending.into_iter().take(done) {
                p.done();
            }
            if sealed {
                r.seal();
            }
            assert_eq!(
                r.is_ready(),
                want,
                "{n} registered, {done} done, sealed {sealed}"
            );
        }
    }

    #[test]
    fn pending_names_what_is_left_and_a_dropped_promise_stays_pending() {
        let r = Readiness::new();
        let a = r.register("pods");
        let b = r.register("services");
        r.seal();
        assert_eq!(r.pending(), ["pods", "services"]);
        a.done();
        assert_eq!(r.pending(), ["services"]);
        drop(b);
        assert_eq!(r.pending(), ["services"]);
        assert!(!r.is_ready());
    }

    #[tokio::test]
    async fn wait_resolves_when_the_last_component_reports() {
        let r = Readiness::new();
        let p = r.register("node");
        r.seal();
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.done();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wait() resolves after done()")
            .unwrap();
    }
}
