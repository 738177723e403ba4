//! Wiring: turn a parsed configuration into running roles.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exec::{Exec, RealExec};
use crate::master::tokio_util_shim::CancelToken;
use crate::master::{self, Master};
use crate::ovn::{self, Nb, NbTxn, Nbctl};

/// Run the roles the flags ask for until `cancel` fires (daemons) or the work is done.
pub async fn run(cfg: Config, cancel: CancelToken) -> Result<()> {
    let exec: Arc<dyn Exec> = Arc::new(RealExec::new(8));
    let nb_ctl = ovn::db_ctl(exec.clone(), "ovn-nbctl", &cfg.ovn_north.client);
    let nb: Arc<dyn Nb> = Arc::new(Nbctl(nb_ctl.clone()));

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
    let mut tasks = tokio::task::JoinSet::new();

    if cfg.init_master.is_some() {
        let sb_ctl = ovn::db_ctl(exec.clone(), "ovn-sbctl", &cfg.ovn_south.client);
        master::setup_db_servers(&cfg, &nb_ctl, &sb_ctl).await?;
        let m = Master::new(nb.clone(), client.clone(), &cfg.cluster_subnets);
        let c = cancel.clone();
        tasks.spawn(async move { m.run(c).await.context("master") });
    }
    if cfg.net_controller {
        tracing::warn!(
            "-net-controller: pod, service and policy controllers are not part of this build yet"
        );
    }
    if cfg.init_node.is_some() {
        tracing::warn!("-init-node: node initialisation is not part of this build yet");
    }

    if tasks.is_empty() {
        return Ok(());
    }
    // Daemon roles run until cancelled; the first one to fail takes the process down.
    while let Some(res) = tasks.join_next().await {
        res.context("task panicked")??;
    }
    Ok(())
}
