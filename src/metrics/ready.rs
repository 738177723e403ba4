//! `/healthz` and `/readyz` answers, read from the process's one readiness signal
//! ([`crate::util::ready::Readiness`]), and the ready-duration metric set from it.

use crate::util::ready::{Phase, Readiness};

/// The answer to a probe: HTTP status and a body listing every role's phase.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    pub ok: bool,
    pub body: String,
}

fn probe(phases: &[(&'static str, Phase)], ok: bool) -> Probe {
    let mut body = String::from(if ok { "ok\n" } else { "not ok\n" });
    for (role, phase) in phases {
        body.push_str(&format!("{role}: {}\n", phase.name()));
    }
    Probe { ok, body }
}

/// `/readyz`: every role has synced (or is a synced standby).
pub fn readiness(ready: &Readiness) -> Probe {
    probe(&ready.phases(), ready.is_ready())
}

/// `/healthz`: no role has failed (the listener answering shows the runtime is alive).
pub fn liveness(ready: &Readiness) -> Probe {
    probe(&ready.phases(), ready.is_alive())
}

/// Sets `ovnkube_master_ready_duration_seconds` once the process first becomes ready.
pub fn record_ready_duration(ready: Readiness) {
    tokio::spawn(async move {
        ready.wait().await;
        super::get().all_ready();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::ready::{MASTER, NODE};

    #[test]
    fn probes_list_every_role_and_follow_the_shared_readiness() {
        let r = Readiness::new();
        let m = r.register(MASTER);
        let _n = r.register(NODE);
        r.seal();
        let p = readiness(&r);
        assert_eq!(
            (p.ok, p.body.as_str()),
            (false, "not ok\nmaster: starting\nnode: starting\n")
        );
        m.done();
        r.set_phase(NODE, Phase::Standby);
        let p = readiness(&r);
        assert_eq!(
            (p.ok, p.body.as_str()),
            (true, "ok\nmaster: ready\nnode: standby\n")
        );
        assert!(liveness(&r).ok);
        r.failed();
        let p = liveness(&r);
        assert_eq!(
            (p.ok, p.body.as_str()),
            (false, "not ok\nmaster: ready\nnode: standby\n")
        );
    }
}
