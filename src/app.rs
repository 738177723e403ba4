//! Wiring: turn a parsed configuration into running roles.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exec::BoxFuture;
use crate::exec::{Exec, RealExec};
use crate::master::election::{Elector, GatedNb};
use crate::master::{self, Master};
use crate::ovn::{self, Nb, NbTxn};
use crate::util::ready::{self, Readiness};
use tokio_util::sync::CancellationToken;

/// What the roles are built from: configuration, the exec seam, the NB database, the
/// Kubernetes client and its shared watches. Each role gets the part it needs as a struct of
/// its own (`node::Agent`, `controller::NetController`), so roles do not depend on this module.
#[derive(Clone)]
struct Deps {
    cfg: Arc<Config>,
    exec: Arc<dyn Exec>,
    nb: Arc<dyn Nb>,
    client: kube::Client,
    /// The process's watches, one per kind, shared by every role.
    informers: crate::kube::Informers,
}

impl Deps {
    fn node_agent(&self) -> crate::node::Agent {
        crate::node::Agent {
            cfg: self.cfg.clone(),
            exec: self.exec.clone(),
            nb: self.nb.clone(),
            client: self.client.clone(),
            informers: self.informers.clone(),
        }
    }

    fn net_controller(&self) -> crate::controller::NetController {
        crate::controller::NetController {
            nb: self.nb.clone(),
            client: self.client.clone(),
            informers: self.informers.clone(),
        }
    }
}

/// Run the roles the flags ask for until `cancel` fires (daemons) or the work is done. Each
/// role registers in `ready` before it starts and reports when its initial sync is done.
pub async fn run(cfg: Config, cancel: CancellationToken, ready: Readiness) -> Result<()> {
    let exec: Arc<dyn Exec> = Arc::new(RealExec::new(8));
    // A persistent OVSDB connection where the target allows it, ovn-nbctl otherwise.
    let writes_nb = cfg.init_master.is_some() || cfg.net_controller || cfg.remove_node.is_some();
    let nb: Arc<dyn Nb> = ovn::nb_backend(exec.clone(), &cfg.ovn_north.client, writes_nb)?;

    if let Some(node) = &cfg.remove_node {
        return remove_node(nb.as_ref(), node).await;
    }

    let client = crate::kube::client::build(&cfg.kubernetes).await?;
    // Up before the roles, so probes answer (not ready yet) during the initial sync.
    if let Some(addr) = cfg.metrics_bind_address {
        tokio::spawn(crate::metrics::serve(addr, ready.clone(), cancel.clone()).await?);
    }
    let ctx = Deps {
        cfg: Arc::new(cfg),
        exec,
        nb,
        informers: crate::kube::Informers::new(client.clone()),
        client,
    };
    let mut tasks = tokio::task::JoinSet::new();
    crate::metrics::ready::record_ready_duration(ready.clone());

    if ctx.cfg.init_master.is_some() || ctx.cfg.net_controller {
        spawn_master_roles(&ctx, &cancel, &ready, &mut tasks);
    }
    if let Some(node) = ctx.cfg.init_node.clone() {
        init_node(&ctx, &node, &cancel, &ready, &mut tasks).await?;
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

/// `-remove-node`: one-shot, like the reference: remove the node's OVN objects and exit.
async fn remove_node(nb: &dyn Nb, node: &str) -> Result<()> {
    let snap = master::topology::Snapshot::read(nb).await?;
    let txn: NbTxn = master::topology::node_cleanup_ops(&snap, node)
        .into_iter()
        .collect();
    nb.transact(&txn)
        .await
        .with_context(|| format!("removing node {node} from OVN"))?;
    tracing::info!(%node, "removed the node's OVN objects");
    Ok(())
}

/// The master roles (-init-master, -net-controller) run only while this process holds the
/// leader-election Lease, and write the NB only through its gate. Their readiness components
/// register now (standby until the Lease is ours); they start after the first acquire, next
/// to the node role.
fn spawn_master_roles(
    ctx: &Deps,
    cancel: &CancellationToken,
    ready: &Readiness,
    tasks: &mut tokio::task::JoinSet<Result<()>>,
) {
    let elector = Elector::new(ctx.client.clone(), &ctx.cfg);
    let mctx = Deps {
        nb: Arc::new(GatedNb {
            inner: ctx.nb.clone(),
            lead: elector.leadership(),
        }),
        ..ctx.clone()
    };
    let roles = master_roles(&mctx, ready);
    warm_caches(&mctx);
    let (c, r) = (cancel.clone(), ready.clone());
    tasks.spawn(async move { lead_master_roles(elector, roles, c, r).await });
}

/// `-init-node`: sets the node up. As in the reference, only -nodeport and -ha keep the
/// process alive after node init; otherwise it exits once the other roles are done, so
/// `-init-node` alone is a one-shot whose exit status tells whether the node came up.
async fn init_node(
    ctx: &Deps,
    node: &str,
    cancel: &CancellationToken,
    ready: &Readiness,
    tasks: &mut tokio::task::JoinSet<Result<()>>,
) -> Result<()> {
    let node_ready = ready.register(ready::NODE);
    crate::metrics::node_starting(&ctx.cfg, cancel.clone());
    crate::node::run(&ctx.node_agent(), node, cancel.clone())
        .await
        .with_context(|| format!("initialising node {node}"))?;
    node_ready.done();
    if ctx.cfg.nodeport || ctx.cfg.ha {
        let c = cancel.clone();
        tasks.spawn(async move {
            c.cancelled().await;
            Ok(())
        });
    }
    Ok(())
}

/// A master role, ready to run once this process leads.
type Role = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, Result<()>> + Send>;

/// The master roles this process runs, their readiness components registered (in the
/// reference's order: master, then the net-controller's services, pods and policies).
fn master_roles(ctx: &Deps, ready: &Readiness) -> Vec<Role> {
    let mut roles: Vec<Role> = Vec::new();
    if ctx.cfg.init_master.is_some() {
        let m = Master::new(ctx.nb.clone(), ctx.client.clone(), &ctx.cfg.cluster_subnets)
            .with_ready(ready.register(ready::MASTER));
        let x = ctx.clone();
        roles.push(Box::new(move |c: CancellationToken| {
            Box::pin(async move {
                master::setup_db_servers(&x.cfg, x.exec.clone(), &c).await?;
                crate::metrics::master_started(x.nb.clone(), c.clone());
                m.run(x.informers.clone(), c).await.context("master")
            })
        }));
    }
    if ctx.cfg.net_controller {
        let svc =
            crate::controller::services::ServiceController::new(ctx.nb.clone(), ctx.cfg.nodeport)
                .with_ready(ready.register(ready::SERVICES))
                .with_reserved(
                    crate::controller::services::validate::Reserved::from_config(&ctx.cfg),
                );
        let (client, informers) = (ctx.client.clone(), ctx.informers.clone());
        roles.push(Box::new(move |c: CancellationToken| {
            Box::pin(async move {
                svc.run(client, informers, c)
                    .await
                    .context("service controller")
            })
        }));
        let r = crate::controller::Ready::register(ready);
        let x = ctx.net_controller();
        roles.push(Box::new(move |c: CancellationToken| {
            Box::pin(async move {
                crate::controller::run(x, c, r)
                    .await
                    .context("net-controller")
            })
        }));
    }
    roles
}

/// The watches the master roles follow, opened before the Lease is ours: a standby keeps its
/// caches current, so a takeover starts from a synced cache (and the NB replica, which the
/// native backend keeps from start-up) instead of listing everything first. The endpoints
/// kind is left to the service controller, which picks EndpointSlices or Endpoints by what the
/// API server serves.
fn warm_caches(ctx: &Deps) {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    ctx.informers.prefetch::<Node>();
    if ctx.cfg.net_controller {
        ctx.informers.prefetch::<Pod>();
        ctx.informers.prefetch::<Service>();
        ctx.informers.prefetch::<Namespace>();
        ctx.informers.prefetch::<NetworkPolicy>();
    }
}

/// Standby until the Lease is ours, then the roles and the renewal loop together; the first
/// of them to fail (a lost Lease included) stops the others and takes the process down. On a
/// clean stop the Lease is released once the roles have stopped writing.
async fn lead_master_roles(
    elector: Elector,
    roles: Vec<Role>,
    cancel: CancellationToken,
    ready: Readiness,
) -> Result<()> {
    if !elector.acquire(&cancel, &ready).await? {
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for role in roles {
        tasks.spawn(role(cancel.clone()));
    }
    let elector = Arc::new(elector);
    let keeper = elector.clone();
    let c = cancel.clone();
    // The renewal loop ends the roles' run by failing; the roles end it by cancellation.
    let mut keep = tokio::spawn(async move { keeper.keep(c).await });
    let c = cancel.clone();
    let result = tokio::select! {
        r = join_roles(&mut tasks) => r,
        r = &mut keep => match r.context("leader-election task panicked").and_then(|r| r) {
            Ok(()) => stop_roles(&mut tasks).await,
            Err(e) => Err(e),
        },
        _ = c.cancelled() => stop_roles(&mut tasks).await,
    };
    // Nothing writes after this point: the roles are stopped before the Lease is given up.
    tasks.shutdown().await;
    keep.abort();
    // A lost Lease is not ours to release (`release` checks); a failed role's is, so the
    // standby need not wait out the lease duration.
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %format!("{e:#}"), "could not release the leader-election Lease; a standby takes over once it expires");
    }
    result
}

/// Until every role has ended; the first failure is returned at once.
async fn join_roles(tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    while let Some(res) = tasks.join_next().await {
        res.context("task panicked").and_then(|r| r)?;
    }
    Ok(())
}

/// How long the roles get for their own clean stop before they are aborted and the Lease is
/// released (the process as a whole gets 5 s after SIGTERM).
const ROLE_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// Cancelled: the roles' own clean stop, bounded by [`ROLE_STOP`].
async fn stop_roles(tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    match tokio::time::timeout(ROLE_STOP, join_roles(tasks)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!("master roles still stopping; aborting them");
            Ok(())
        }
    }
}
