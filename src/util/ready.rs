//! Readiness: "the initial sync is done". Each long-running role registers a component before
//! it starts and marks it done when its first full sync has been applied; the process is ready
//! once every registered component is done and registration is closed. systemd's `READY=1`,
//! `/readyz` and the ready-duration metric all read this one signal.
//!
//! Use: `let p = ready.register(ready::MASTER)` before the role starts, `p.done()` after its
//! first sync, `ready.seal()` once every role has registered; `ready.wait().await` /
//! `ready.is_ready()` / `ready.pending()` / `ready.phases()` to observe.
//!
//! A synced component that is not leading (a warm standby master, once leader election exists)
//! is put in [`Phase::Standby`] with [`Readiness::set_phase`]: that counts as ready, so a load
//! balancer or a rollout keeps it. A role whose task failed marks the process
//! [`Readiness::failed`], which `/healthz` reports until the process exits.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

/// The component names, as they appear in logs and in the `/readyz` body.
pub const MASTER: &str = "master";
pub const PODS: &str = "pods";
pub const POLICIES: &str = "network policies";
pub const SERVICES: &str = "services";
pub const NODE: &str = "node";

/// Where one component stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Registered, initial sync not done yet.
    Starting,
    /// Initial sync done; serving.
    Ready,
    /// Synced but not leading: counts as ready.
    Standby,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Standby => "standby",
        }
    }

    fn synced(self) -> bool {
        matches!(self, Phase::Ready | Phase::Standby)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    components: BTreeMap<&'static str, Phase>,
    /// No more components will register.
    sealed: bool,
    /// A role's task ended with an error; the process is going down.
    failed: bool,
}

impl State {
    fn ready(&self) -> bool {
        self.sealed && self.components.values().all(|p| p.synced())
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
        // Logged before the state changes: the READY=1 notifier reacts to the change at once,
        // and the log must already say which component completed when READY=1 is sent.
        tracing::info!(component = name, "initial sync complete");
        self.tx
            .send_if_modified(|s| match s.components.get_mut(name) {
                Some(p) if *p == Phase::Starting => {
                    *p = Phase::Ready;
                    true
                }
                _ => false,
            });
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
            s.components.entry(name).or_insert(Phase::Starting);
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
            .filter(|(_, p)| !p.synced())
            .map(|(name, _)| *name)
            .collect()
    }

    /// Every registered component and its phase, by name.
    pub fn phases(&self) -> Vec<(&'static str, Phase)> {
        let s = self.tx.borrow();
        s.components.iter().map(|(n, p)| (*n, *p)).collect()
    }

    /// Moves a registered component to `phase` (leader election: `Standby` when it loses the
    /// lease, `Ready` when it takes it). An unregistered name is ignored: only a role this
    /// process runs has a say in its readiness.
    pub fn set_phase(&self, name: &'static str, phase: Phase) {
        self.tx
            .send_if_modified(|s| match s.components.get_mut(name) {
                Some(p) if *p != phase => {
                    *p = phase;
                    true
                }
                _ => false,
            });
    }

    /// A role's task failed and the process is about to exit.
    pub fn failed(&self) {
        self.tx
            .send_if_modified(|s| !std::mem::replace(&mut s.failed, true));
    }

    /// No role has failed.
    pub fn is_alive(&self) -> bool {
        !self.tx.borrow().failed
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

    #[test]
    fn a_standby_counts_as_ready_and_unknown_names_change_nothing() {
        use Phase::*;
        // (phase set on "master" after "node" is done, ready)
        let cases = [(Starting, false), (Ready, true), (Standby, true)];
        for (phase, want) in cases {
            let r = Readiness::new();
            let _m = r.register(MASTER);
            r.register(NODE).done();
            r.seal();
            r.set_phase(MASTER, phase);
            r.set_phase("not registered", Starting);
            assert_eq!(r.is_ready(), want, "{phase:?}");
            assert_eq!(r.phases(), [(MASTER, phase), (NODE, Ready)]);
        }
        // done() after a standby does not undo it.
        let r = Readiness::new();
        let p = r.register(MASTER);
        r.set_phase(MASTER, Standby);
        p.done();
        assert_eq!(r.phases(), [(MASTER, Standby)]);
    }

    #[test]
    fn failed_is_not_alive() {
        let r = Readiness::new();
        assert!(r.is_alive());
        r.clone().failed();
        assert!(!r.is_alive());
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
