//! Liveness and readiness of the roles this process runs, for `/healthz` and `/readyz`.
//!
//! Each role is registered when it starts ([`expect`]) and reports when its initial sync is
//! done ([`mark_ready`]). The process is ready when every registered role is. A master that
//! is not leading will later report [`State::Standby`] (a warm standby that has synced): that
//! counts as ready, so a load balancer or rollout keeps it; the leader-election work only has
//! to call [`set_state`] with it.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
    /// The role's task ended with an error; the process is about to exit.
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Standby => "standby",
            State::Failed => "failed",
        }
    }
}

static ROLES: Mutex<BTreeMap<&'static str, State>> = Mutex::new(BTreeMap::new());

fn roles() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, State>> {
    ROLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// `role` has started; the process is not ready until it is.
pub fn expect(role: &'static str) {
    roles().entry(role).or_insert(State::Starting);
}

/// `role` finished its initial sync.
pub fn mark_ready(role: &'static str) {
    set_state(role, State::Ready);
}

/// `role` failed (its task ended with an error).
pub fn mark_failed(role: &'static str) {
    set_state(role, State::Failed);
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

fn is_alive(roles: &BTreeMap<&'static str, State>) -> bool {
    !roles.values().any(|s| *s == State::Failed)
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
    probe(&r, is_alive(&r))
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
        type Case = (&'static [(&'static str, State)], bool, bool);
        let cases: &[Case] = &[
            (&[], false, true),
            (&[(MASTER, Starting)], false, true),
            (&[(MASTER, Ready)], true, true),
            (&[(MASTER, Standby), (NODE, Ready)], true, true),
            (&[(MASTER, Ready), (PODS, Starting)], false, true),
            (&[(MASTER, Ready), (NODE, Failed)], false, false),
        ];
        for (states, ready, alive) in cases {
            let m = map(states);
            assert_eq!(is_ready(&m), *ready, "{states:?}");
            assert_eq!(is_alive(&m), *alive, "{states:?}");
        }
        let p = probe(&map(&[(MASTER, Ready), (NODE, Starting)]), false);
        assert_eq!(p.body, "not ok\nmaster: ready\nnode: starting\n");
    }
}
