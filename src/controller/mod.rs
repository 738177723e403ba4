//! `-net-controller`: the controllers that turn cluster objects into NB state: pods (logical
//! ports, addresses, the `ovn` annotation), network policies (port groups, address sets,
//! ACLs) and services (load-balancer VIPs).

pub mod ipam;
pub mod pods;
pub mod pods_plan;
pub mod policy;
pub mod policy_model;
pub mod policy_plan;
pub mod services;

#[cfg(test)]
pub(crate) mod machine_tests;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::kube::Informers;
use crate::ovn::Nb;
use crate::util::ready::{Pending, Readiness};
use tokio_util::sync::CancellationToken;

/// The net-controller's readiness: one entry per controller, registered before it starts.
pub struct Ready {
    pub pods: Pending,
    pub policies: Pending,
}

impl Ready {
    pub fn register(ready: &Readiness) -> Ready {
        Ready {
            pods: ready.register(crate::util::ready::PODS),
            policies: ready.register(crate::util::ready::POLICIES),
        }
    }
}

/// What the net-controller works with, built by the process wiring (`app.rs`).
pub struct NetController {
    /// The NB database, behind the leader-election gate.
    pub nb: Arc<dyn Nb>,
    pub client: kube::Client,
    pub informers: Informers,
}

/// Run the net-controller until `cancel` fires.
pub async fn run(ctx: NetController, cancel: CancellationToken, ready: Ready) -> Result<()> {
    // The pod controller tells the policy controller which pods have a logical port.
    let (ports_tx, ports_rx) = tokio::sync::mpsc::unbounded_channel();
    let pods = pods::PodController::new(ctx.nb.clone(), ctx.client.clone())
        .with_port_events(ports_tx)
        .with_ready(ready.pods)
        .run(ctx.informers.clone(), cancel.clone());
    let policies = policy::PolicyController::new(ctx.nb.clone(), ctx.client.clone(), ports_rx)
        .with_ready(ready.policies)
        .run(ctx.informers.clone(), cancel);
    tokio::try_join!(async { pods.await.context("pod controller") }, async {
        policies.await.context("policy controller")
    },)?;
    Ok(())
}
