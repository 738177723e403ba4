//! Liveness and readiness of the roles this process runs, for `/healthz` and `/readyz`.
//!
//! Each role is registered when it starts ([`expect`]) and reports when its initial sync is
//! done ([`mark_ready`]). The process is ready when every registered role is. A master that
//! is not leading will later report [`State::Standby`] (a warm standby that has synced): that
//! counts as ready, so a load balancer or rollout keeps it; the leader-election work only has
//! to call [`set_state`] with it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;

/// The roles a process can run, as they appear in `/readyz` and `/healthz`.
pub const MASTER: &str = "master";
pub const PODS: &str = "net-controller/pods";
pub const POLICIES: &str = "net-controller/policies";
pub const SERVICES: &str = "net-controller/services";
pub const NODE: &str = "node";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, initial sync not done yet.
    Starting,
    /// Initial sync done; serving.
    Ready,
    /// Synced but not leading (reserved for leader election).
    Standby,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Standby => "standby",
        }
    }
}

static ROLES: Mutex<BTreeMap<&'static str, State>> = Mutex::new(BTreeMap::new());
/// A role's task ended with an error; the process is about to exit.
static FAILED: AtomicBool = AtomicBool::new(false);

fn roles() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, State>> {
    ROLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// `role` has started; the process is not ready until it is.
pub fn expect(role: &'static str) {
    roles().entry(role).or_insert(State::Starting);
}

/// Registers every role `cfg` starts.
pub fn expect_roles(cfg: &Config) {
    if cfg.init_master.is_some() {
        expect(MASTER);
    }
    if cfg.net_controller {
        [PODS, POLICIES, SERVICES].into_iter().for_each(expect);
    }
    if cfg.init_node.is_some() {
        expect(NODE);
    }
}

/// `role` finished its initial sync.
pub fn mark_ready(role: &'static str) {
    set_state(role, State::Ready);
}

/// A role's task failed and the process is going down: `/healthz` turns 503.
pub fn process_failed() {
    FAILED.store(true, Ordering::SeqCst);
}

pub fn set_state(role: &'static str, state: State) {
    let all_ready = {
        let mut r = roles();
        let before = is_ready(&r);
        r.insert(role, state);
        !before && is_ready(&r)
    };
    if all_ready {
        super::get().all_ready();
        tracing::info!("all roles ready");
    }
}

fn is_ready(roles: &BTreeMap<&'static str, State>) -> bool {
    !roles.is_empty()
        && roles
            .values()
            .all(|s| matches!(s, State::Ready | State::Standby))
}

fn is_alive(failed: bool) -> bool {
    !failed
}

/// The answer to a probe: HTTP status and a body listing every role's state.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub body: String,
}

fn probe(roles: &BTreeMap<&'static str, State>, ok: bool) -> Probe {
    let mut body = String::from(if ok { "ok\n" } else { "not ok\n" });
    for (role, state) in roles {
        body.push_str(&format!("{role}: {}\n", state.name()));
    }
    Probe { ok, body }
}

/// `/readyz`: every role has synced (or is a synced standby).
pub fn readiness() -> Probe {
    let r = roles();
    probe(&r, is_ready(&r))
}

/// `/healthz`: no role has failed (the listener answering shows the runtime is alive).
pub fn liveness() -> Probe {
    let r = roles();
    probe(&r, is_alive(FAILED.load(Ordering::SeqCst)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(states: &[(&'static str, State)]) -> BTreeMap<&'static str, State> {
        states.iter().copied().collect()
    }

    #[test]
    fn readiness_and_liveness_table() {
        use State::*;
        type Case = (&'static [(&'static str, State)], bool);
        let cases: &[Case] = &[
            (&[], false),
            (&[(MASTER, Starting)], false),
            (&[(MASTER, Ready)], true),
            (&[(MASTER, Standby), (NODE, Ready)], true),
            (&[(MASTER, Ready), (PODS, Starting)], false),
        ];
        for (states, ready) in cases {
            assert_eq!(is_ready(&map(states)), *ready, "{states:?}");
        }
        assert!(is_alive(false) && !is_alive(true));
        let p = probe(&map(&[(MASTER, Ready), (NODE, Starting)]), false);
        assert_eq!(p.body, "not ok\nmaster: ready\nnode: starting\n");
    }
}
