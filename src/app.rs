//! Wiring: turn a parsed configuration into running roles.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exec::{Exec, RealExec};
use crate::master::{self, Master};
use crate::ovn::{self, Ctl, Nb, NbTxn};
use crate::util::cancel::CancelToken;
use crate::util::ready::{self, Readiness};

/// What every role gets: configuration, the exec seam, the NB database, the Kubernetes client.
#[derive(Clone)]
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub exec: Arc<dyn Exec>,
    /// `ovn-nbctl` honouring `-nb-address` (and its certificates).
    pub nb_ctl: Ctl,
    pub nb: Arc<dyn Nb>,
    pub client: kube::Client,
}

/// Run the roles the flags ask for until `cancel` fires (daemons) or the work is done. Each
/// role registers in `ready` before it starts and reports when its initial sync is done.
pub async fn run(cfg: Config, cancel: CancelToken, ready: Readiness) -> Result<()> {
    let exec: Arc<dyn Exec> = Arc::new(RealExec::new(8));
    let nb_ctl = ovn::db_ctl(exec.clone(), "ovn-nbctl", &cfg.ovn_north.client);
    // A persistent OVSDB connection where the target allows it, ovn-nbctl otherwise.
    let nb: Arc<dyn Nb> = ovn::nb_backend(exec.clone(), &cfg.ovn_north.client);

    if let Some(node) = &cfg.remove_node {
        // One-shot, like the reference: remove the node's OVN objects and exit.
        let snap = master::topology::Snapshot::read(nb.as_ref()).await?;
        let mut txn = NbTxn::new();
        txn.extend(master::topology::node_cleanup_ops(&snap, node));
        nb.transact(&txn)
            .await
            .with_context(|| format!("removing node {node} from OVN"))?;
        tracing::info!(%node, "removed the node's OVN objects");
        return Ok(());
    }

    let client = crate::kube::client::build(&cfg.kubernetes).await?;
    // Up before the roles, so probes answer (not ready yet) during the initial sync.
    if let Some(addr) = cfg.metrics_bind_address {
        tokio::spawn(crate::metrics::serve(addr, ready.clone(), cancel.clone()).await?);
    }
    let ctx = Ctx {
        cfg: Arc::new(cfg),
        exec,
        nb_ctl,
        nb,
        client,
    };
    let mut tasks = tokio::task::JoinSet::new();
    crate::metrics::ready::record_ready_duration(ready.clone());

    // Roles, in the reference's order: master first, then node, then the net-controller.
    if ctx.cfg.init_master.is_some() {
        master::setup_db_servers(&ctx.cfg, ctx.exec.clone(), &cancel).await?;
        let m = Master::new(ctx.nb.clone(), ctx.client.clone(), &ctx.cfg.cluster_subnets)
            .with_ready(ready.register(ready::MASTER));
        let c = cancel.clone();
        crate::metrics::master_started(ctx.nb.clone(), cancel.clone());
        tasks.spawn(async move { m.run(c).await.context("master") });
    }
    if ctx.cfg.net_controller {
        let svc =
            crate::controller::services::ServiceController::new(ctx.nb.clone(), ctx.cfg.nodeport)
                .with_ready(ready.register(ready::SERVICES))
                .with_reserved(
                    crate::controller::services::validate::Reserved::from_config(&ctx.cfg),
                );
        let (client, c) = (ctx.client.clone(), cancel.clone());
        tasks.spawn(async move { svc.run(client, c).await.context("service controller") });
    }
    if let Some(node) = ctx.cfg.init_node.clone() {
        let node_ready = ready.register(ready::NODE);
        crate::metrics::node_starting(&ctx.cfg, cancel.clone());
        crate::node::run(&ctx, &node, cancel.clone())
            .await
            .with_context(|| format!("initialising node {node}"))?;
        node_ready.done();
        // The reference stays alive after node init only with -nodeport or -ha (§1.7).
        if ctx.cfg.nodeport || ctx.cfg.ha {
            let mut c = cancel.clone();
            tasks.spawn(async move {
                c.cancelled().await;
                Ok(())
            });
        }
    }
    if ctx.cfg.net_controller {
        let (c, x) = (cancel.clone(), ctx.clone());
        let r = crate::controller::Ready::register(&ready);
        tasks.spawn(async move {
            crate::controller::run(x, c, r)
                .await
                .context("net-controller")
        });
    }
    // Every role has registered: from here on "all registered components done" means ready.
    ready.seal();

    if tasks.is_empty() {
        return Ok(());
    }
    // Daemon roles run until cancelled; the first one to fail takes the process down.
    while let Some(res) = tasks.join_next().await {
        let res = res.context("task panicked").and_then(|r| r);
        if res.is_err() {
            // /healthz answers 503 for the moment before the process exits.
            ready.failed();
        }
        res?;
    }
    Ok(())
}
