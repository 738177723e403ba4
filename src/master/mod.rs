//! `-init-master`: the cluster topology and node subnets.
//!
//! One task owns the allocator and processes node changes in order, so two nodes can never get
//! the same subnet, however events are replayed. At start it waits for the complete node list,
//! rebuilds the allocator from the annotations, removes OVN objects of nodes that no longer
//! exist, and only then allocates.

pub mod election;
pub mod instance;
#[cfg(test)]
mod machine_tests;
pub mod subnets;
pub mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{
    ClusterSubnet, Config, ConfigError, OvnAuth, ServerSetup, ServerSsl, local_db_socket,
};
use crate::exec::Exec;
use crate::kube::annotations::{HOST_SUBNET, NODE_MGMT_PORT_MAC, parse_host_subnet};
use crate::kube::{Change, events};
use crate::ovn::signals::{self, NbEpoch};
use crate::ovn::{Ctl, CtlTarget};
use crate::ovn::{Nb, NbError, NbTxn, TxnFailure};
use crate::util::ready::Pending;
use crate::util::retry::{self, Backoff, Outage, Retries, Retrying, until_ok};
use subnets::SubnetAllocator;
use topology::Snapshot;

pub struct Master {
    nb: Arc<dyn Nb>,
    client: kube::Client,
    events: events::Events,
    alloc: SubnetAllocator,
    /// Subnet held by each node (the allocator's view, by owner).
    owners: HashMap<String, Ipv4Net>,
    nodes: BTreeMap<String, Arc<Node>>,
    /// Nodes that could not get a subnet because the pool is exhausted.
    waiting: BTreeSet<String>,
    /// Nodes refused because their OVN names collide with objects that are not theirs.
    refused: BTreeSet<String>,
    /// Nodes whose objects were checked and written against a fresh read of the database.
    served: BTreeSet<String>,
    /// Nodes whose last attempt failed.
    retry: Retries,
    /// The NB and the API server as every node's sync sees them: an outage is logged once,
    /// not per node and attempt.
    outage: Outage,
    snap: Snapshot,
    snap_dirty: bool,
    /// Reported once the initial node list has been processed.
    ready: Option<Pending>,
    /// Nodes whose management-port MAC annotation was refused (reported once per value).
    bad_mac: BTreeMap<String, String>,
    /// A failed whole-topology rebuild is tried again at this time.
    rebuild_at: Option<Instant>,
    rebuild_backoff: Backoff,
    /// NB transactions written (non-empty), to tell a repair from a check that found nothing.
    writes: u64,
}

/// How often the master re-reads its topology to find objects that went missing without a
/// signal (an `ovn-nbctl` backend cannot tell a replaced database; someone deleted a switch).
/// Reads only: a healthy database gets no transaction.
const AUDIT: Duration = Duration::from_secs(10);

impl Master {
    pub fn new(nb: Arc<dyn Nb>, client: kube::Client, cluster: &[ClusterSubnet]) -> Self {
        Master {
            nb,
            events: events::Events::new(client.clone(), events::MASTER),
            client,
            alloc: SubnetAllocator::new(cluster),
            owners: HashMap::new(),
            nodes: BTreeMap::new(),
            waiting: BTreeSet::new(),
            refused: BTreeSet::new(),
            served: BTreeSet::new(),
            retry: Retries::new(Duration::from_secs(1), Duration::from_secs(30)),
            outage: Outage::new("node sync (NB database, API server)"),
            snap: Snapshot::default(),
            snap_dirty: true,
            ready: None,
            bad_mac: BTreeMap::new(),
            rebuild_at: None,
            rebuild_backoff: Backoff::new(retry::DEPENDENCY),
            writes: 0,
        }
    }

    /// Report the end of the initial node sync on `ready`.
    pub fn with_ready(mut self, ready: Pending) -> Self {
        self.ready = Some(ready);
        self
    }

    async fn snapshot(&mut self) -> Result<&Snapshot> {
        if self.snap_dirty {
            let mgmt: Vec<String> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.annotations().contains_key(NODE_MGMT_PORT_MAC))
                .map(|(name, _)| name.clone())
                .collect();
            self.snap = Snapshot::read_with_mgmt(self.nb.as_ref(), &mgmt)
                .await
                .context("reading the northbound topology")?;
            self.snap_dirty = false;
        }
        Ok(&self.snap)
    }

    async fn transact(&mut self, ops: Vec<crate::ovn::NbOp>) -> Result<(), NbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let txn: NbTxn = ops.into_iter().collect();
        // Whatever happened, our picture of the database may be stale now.
        self.snap_dirty = true;
        self.writes += 1;
        self.nb.transact(&txn).await
    }

    /// Bring the whole topology back to what the master owns, read fresh: the cluster objects,
    /// then every node from the subnet it already holds (its annotation), so no node changes
    /// subnet. Used when the NB turned out to be a new database, and periodically to find
    /// objects that went missing otherwise. Returns the number of transactions written.
    async fn rebuild(&mut self) -> Result<u64> {
        let before = self.writes;
        self.snap_dirty = true;
        self.ensure_cluster().await?;
        // The nodes already served are planned against one read and written in one
        // transaction (a wiped NB needs all of them at once); the others, and all of them
        // if that transaction fails, go through the per-node sync with its checks.
        let snap = self.snapshot().await?.clone();
        let mut ops = Vec::new();
        let mut batched = Vec::new();
        let mut single = Vec::new();
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            match self.batchable(&snap, &n) {
                Some((node, subnet)) => {
                    let mac = self.mgmt_mac(&node, subnet).await;
                    ops.extend(topology::node_ops(&snap, &n, subnet, mac.as_deref()));
                    batched.push(n);
                }
                None => single.push(n),
            }
        }
        match self.transact(ops).await {
            Ok(()) => batched.iter().for_each(|n| self.retry.forget(n)),
            // Nothing can be written now, node by node neither: the rebuild as a whole is
            // retried with its backoff (or at the NB's reconnection).
            Err(e) if e.kind() == TxnFailure::Unavailable => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "the rebuild's transaction failed; syncing node by node");
                single.extend(batched);
            }
        }
        for n in single {
            self.sync_node(&n).await;
        }
        Ok(self.writes - before)
    }

    /// The node and the subnet it holds, when its rebuild needs nothing but NB writes: it
    /// was served, holds its subnet in its annotation, and nothing of someone else's has
    /// taken its names.
    fn batchable(&self, snap: &Snapshot, name: &str) -> Option<(Arc<Node>, Ipv4Net)> {
        let node = self.nodes.get(name)?;
        let subnet = *self.owners.get(name)?;
        let annotated = node.annotations().get(HOST_SUBNET) == Some(&subnet.to_string());
        (self.served.contains(name) && annotated && topology::node_conflicts(snap, name).is_empty())
            .then(|| (node.clone(), subnet))
    }

    /// [`Master::rebuild`], logged; a failure (the NB went away again) is retried with backoff.
    async fn rebuild_logged(&mut self, why: &str) {
        let started = Instant::now();
        match self.rebuild().await {
            Ok(0) => {
                self.rebuild_at = None;
                self.rebuild_backoff.reset();
                tracing::debug!(why, "topology checked: nothing missing");
            }
            Ok(n) => {
                self.rebuild_at = None;
                self.rebuild_backoff.reset();
                tracing::info!(
                    why, transactions = n, nodes = self.nodes.len(), took = ?started.elapsed(),
                    "rebuilt the cluster topology in the NB database"
                );
            }
            Err(e) => {
                let delay = self.rebuild_backoff.failed();
                self.rebuild_at = Some(Instant::now() + delay);
                let e = format!("{e:#}");
                self.outage.failed(self.nodes.len(), &e);
                tracing::debug!(why, retry_in = ?delay, error = %e, "rebuilding the topology failed");
            }
        }
    }

    /// React to the NB connection's signals: a new database is rebuilt at once; a
    /// reconnection checks the topology and retries the pending work now instead of at each
    /// node's backoff.
    async fn on_signal(&mut self, seen: &mut NbEpoch, now: NbEpoch) {
        let was = std::mem::replace(seen, now);
        if now.database != was.database {
            tracing::info!("the NB database was replaced: rebuilding the cluster topology");
            self.rebuild_logged("new NB database").await;
        } else if now.connection != was.connection {
            // The server may hold an empty database whose replacement is only signalled once
            // ovn-northd writes its NB_Global (about a second later): check at once. Reads
            // only when nothing is missing.
            self.rebuild_logged("NB reconnected").await;
            let far = Instant::now() + Duration::from_secs(86_400);
            for n in self.retry.due(far) {
                self.sync_node(&n).await;
            }
        }
    }

    /// Cluster router, join switch, cluster load balancers.
    pub async fn ensure_cluster(&mut self) -> Result<()> {
        let ops = topology::cluster_ops(self.snapshot().await?);
        self.transact(ops)
            .await
            .context("creating the cluster router, join switch and load balancers")
    }

    /// Take the complete node list (the first `Synced`): rebuild the allocator, remove OVN
    /// objects of nodes that are gone, then bring every node up to date.
    async fn initial_sync(&mut self) -> Result<()> {
        let mut ordered: Vec<Arc<Node>> = self.nodes.values().cloned().collect();
        // Oldest first: when two nodes claim one subnet, the older keeps it.
        ordered.sort_by_key(|n| {
            (
                n.metadata.creation_timestamp.clone().map(|t| t.0),
                n.name_any(),
            )
        });
        for n in &ordered {
            // A refused node holds no subnet; it is reported when it is synced below.
            if crate::ovn::names::reserved_node_name(&n.name_any()).is_some() {
                continue;
            }
            // Unusable claims are reported once, when the node is synced below.
            self.claim_annotation(n, false).await;
        }
        tracing::info!(
            nodes = ordered.len(),
            allocated = self.alloc.allocated(),
            capacity = self.alloc.capacity(),
            "rebuilt the subnet allocator from node annotations"
        );
        let gone: Vec<String> = topology::nodes_in_nb(self.snapshot().await?)
            .into_iter()
            .filter(|n| !self.nodes.contains_key(n))
            .collect();
        for n in gone {
            tracing::info!(node = %n, "removing OVN objects of a node that no longer exists");
            let ops = topology::node_cleanup_ops(self.snapshot().await?, &n);
            if let Err(e) = self.transact(ops).await {
                tracing::error!(node = %n, error = %format!("{e:#}"), "cleaning up a deleted node failed");
            }
        }
        let names: Vec<String> = ordered.iter().map(|n| n.name_any()).collect();
        for n in names {
            self.sync_node(&n).await;
        }
        Ok(())
    }

    async fn report_bad_annotation(&self, node: &Node, value: &str, why: &str) {
        let msg = format!(
            "node {} has an unusable {HOST_SUBNET} annotation {value:?}: {why}; a new subnet will be allocated",
            node.name_any()
        );
        tracing::error!(node = %node.name_any(), "{msg}");
        self.events
            .warn(node, "AllocateSubnet", "InvalidHostSubnet", &msg)
            .await;
    }

    /// Take over the subnet the node's annotation names, if it is usable.
    async fn claim_annotation(&mut self, node: &Node, report: bool) -> Option<Ipv4Net> {
        let v = node.annotations().get(HOST_SUBNET)?;
        let claimed = parse_host_subnet(v)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                self.alloc
                    .mark_used(s)
                    .map(|_| s)
                    .map_err(|e| e.to_string())
            });
        match claimed {
            Ok(s) => {
                self.owners.insert(node.name_any(), s);
                Some(s)
            }
            Err(e) => {
                if report {
                    self.report_bad_annotation(node, v, &e).await;
                }
                None
            }
        }
    }

    /// The subnet this node holds, claiming its annotation or allocating a new one.
    async fn claim(&mut self, node: &Node) -> Option<Ipv4Net> {
        let name = node.name_any();
        if let Some(s) = self.owners.get(&name) {
            return Some(*s);
        }
        if let Some(s) = self.claim_annotation(node, true).await {
            return Some(s);
        }
        match self.alloc.allocate() {
            Some(s) => {
                self.waiting.remove(&name);
                self.owners.insert(name, s);
                Some(s)
            }
            None => {
                if self.waiting.insert(name.clone()) {
                    let msg = format!(
                        "no free subnet for node {name}: all {} host subnets of -cluster-subnet are in use; \
                         widen -cluster-subnet or delete nodes",
                        self.alloc.capacity()
                    );
                    tracing::error!(node = %name, "{msg}");
                    self.events
                        .warn(node, "AllocateSubnet", "SubnetExhausted", &msg)
                        .await;
                }
                None
            }
        }
    }

    /// Bring one node to its desired state: subnet held, annotation written, topology in NB.
    async fn sync_node(&mut self, name: &str) {
        let span = tracing::info_span!("node", node = %name);
        let res = self.sync_node_inner(name).instrument(span).await;
        match res {
            Ok(()) => {
                self.outage.succeeded();
                self.retry.forget(name);
            }
            Err(e) => {
                let e = format!("{e:#}");
                let (attempt, delay) = self.retry.failed(name);
                self.outage.failed(1, &e);
                tracing::debug!(node = %name, attempt, retry_in = ?delay, error = %e, "node sync failed");
            }
        }
    }

    /// Report, once per node, why the master will not serve it.
    async fn refuse(&mut self, node: &Node, why: &[String]) {
        if !self.refused.insert(node.name_any()) {
            return;
        }
        let msg = format!(
            "node {} is not given a subnet or OVN objects: {}; rename the node (or remove the \
             conflicting OVN objects) and re-create it",
            node.name_any(),
            why.join("; ")
        );
        tracing::error!(node = %node.name_any(), "{msg}");
        self.events
            .warn(node, "AllocateSubnet", "NodeNameCollision", &msg)
            .await;
    }

    async fn sync_node_inner(&mut self, name: &str) -> Result<()> {
        let Some(node) = self.nodes.get(name).cloned() else {
            return Ok(());
        };
        // The master changes only objects it owns: a node whose names collide with
        // infrastructure or with someone else's objects is refused before anything is written.
        // A node not served yet is judged on a fresh read: others may have created objects
        // since our snapshot (served nodes' updates, e.g. heartbeats, use the cached one).
        if !self.served.contains(name) {
            self.snap_dirty = true;
        }
        let conflicts = topology::node_conflicts(self.snapshot().await?, name);
        if !conflicts.is_empty() {
            self.refuse(&node, &conflicts).await;
            return Ok(());
        }
        self.refused.remove(name);
        let Some(subnet) = self.claim(&node).await else {
            return Ok(());
        };
        let want = subnet.to_string();
        if node.annotations().get(HOST_SUBNET) != Some(&want) {
            let patch = serde_json::json!({"metadata": {"annotations": {HOST_SUBNET: want}}});
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotating node {name} with {HOST_SUBNET}={want}"))?;
            tracing::info!(subnet = %want, "allocated host subnet");
        }
        let mac = self.mgmt_mac(&node, subnet).await;
        let ops = topology::node_ops(self.snapshot().await?, name, subnet, mac.as_deref());
        if !ops.is_empty() {
            self.transact(ops)
                .await
                .with_context(|| format!("creating the logical switch of node {name}"))?;
            tracing::info!(subnet = %want, "node switch ready");
        }
        self.served.insert(name.to_string());
        Ok(())
    }

    async fn delete_node(&mut self, node: &Node) {
        let name = node.name_any();
        self.nodes.remove(&name);
        self.retry.forget(&name);
        self.waiting.remove(&name);
        self.refused.remove(&name);
        self.served.remove(&name);
        self.bad_mac.remove(&name);
        if let Some(s) = self.owners.remove(&name) {
            self.alloc.release(s);
            tracing::info!(node = %name, subnet = %s, "released host subnet");
        }
        // Node processes create gateway objects the master never wrote: read them fresh.
        self.snap_dirty = true;
        let ops = match self.snapshot().await {
            Ok(snap) => topology::node_cleanup_ops(snap, &name),
            Err(e) => {
                tracing::error!(node = %name, error = %format!("{e:#}"), "cannot read NB to clean up node; will retry at next start");
                return;
            }
        };
        if let Err(e) = self.transact(ops).await {
            tracing::error!(node = %name, error = %format!("{e:#}"), "removing the node's OVN objects failed");
        } else {
            tracing::info!(node = %name, "removed the node's OVN objects");
        }
        // Room may have appeared for nodes that were waiting.
        let waiting: Vec<String> = self.waiting.iter().cloned().collect();
        for w in waiting {
            self.sync_node(&w).await;
        }
    }

    async fn retry_due(&mut self) {
        if self.rebuild_at.is_some_and(|at| at <= Instant::now()) {
            self.rebuild_logged("retrying the rebuild").await;
        }
        for n in self.retry.due(Instant::now()) {
            self.sync_node(&n).await;
        }
    }

    /// The management-port MAC to program for `node`: `None` without a usable annotation
    /// (an unusable one is reported once per value, and the port is left as it is).
    async fn mgmt_mac(&mut self, node: &Node, subnet: Ipv4Net) -> Option<String> {
        let name = node.name_any();
        let v = node.annotations().get(NODE_MGMT_PORT_MAC);
        match topology::mgmt_mac(v.map(String::as_str), subnet)? {
            Ok(mac) => {
                self.bad_mac.remove(&name);
                Some(mac)
            }
            Err(why) => {
                let v = v.cloned().unwrap_or_default();
                if self.bad_mac.get(&name) != Some(&v) {
                    let msg = format!(
                        "node {name}: {why}; its management port's logical port is left as it is"
                    );
                    tracing::error!(node = %name, "{msg}");
                    self.events
                        .warn(node, "ManagementPort", "InvalidManagementPortMAC", &msg)
                        .await;
                    self.bad_mac.insert(name, v);
                }
                None
            }
        }
    }

    /// Run until `cancel` fires.
    pub async fn run(
        mut self,
        informers: crate::kube::Informers,
        cancel: CancellationToken,
    ) -> Result<()> {
        // The NB may be (re)starting: wait for it rather than end the process.
        let mut r = Retrying::new("creating the cluster topology", retry::DEPENDENCY);
        while let Err(e) = self.ensure_cluster().await {
            r.failed(e, &cancel).await?;
        }
        r.succeeded();
        tracing::info!("cluster topology ready");
        let mut changes = informers.watch::<Node>();
        let mut synced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut audit = tokio::time::interval_at(tokio::time::Instant::now() + AUDIT, AUDIT);
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sig = self.nb.signals();
        let mut seen = *sig.borrow_and_update();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick(), if synced => self.retry_due().await,
                _ = audit.tick(), if synced => self.rebuild_logged("periodic check").await,
                now = signals::next_change(&mut sig) => {
                    if synced {
                        self.on_signal(&mut seen, now).await;
                    } else {
                        // The initial sync reads the database as it is then.
                        seen = now;
                    }
                }
                ch = changes.next() => {
                    let Some(ch) = ch else { anyhow::bail!("node watch ended") };
                    match ch {
                        Change::Apply { new, .. } => {
                            let name = new.name_any();
                            self.nodes.insert(name.clone(), new);
                            if synced {
                                self.sync_node(&name).await;
                            }
                        }
                        Change::Delete(old) => {
                            if synced {
                                self.delete_node(&old).await;
                            } else {
                                self.nodes.remove(&old.name_any());
                            }
                        }
                        Change::Synced => {
                            if !synced {
                                synced = true;
                                let mut r = Retrying::new("the initial node sync", retry::DEPENDENCY);
                                while let Err(e) = self.initial_sync().await {
                                    r.failed(e, &cancel).await?;
                                }
                                r.succeeded();
                                tracing::info!(nodes = self.nodes.len(), "initial node sync done");
                                if let Some(p) = self.ready.take() {
                                    p.done();
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Server-side database listeners, configured over each database's LOCAL socket (the one the
/// installed `ovn-nbctl`/`ovn-sbctl` use by default: `$OVN_RUNDIR`, else `/var/run/ovn`): a
/// stock central listens on its unix sockets only, so the tcp/ssl address cannot be used to
/// open itself. The client connections to that address come up once this is done (they retry
/// with backoff meanwhile). A cluster address list is left to the operator (see
/// [`ServerSetup::Clustered`]). A server that is not up yet is waited for; missing certificate
/// files are configuration errors.
pub async fn setup_db_servers(
    cfg: &Config,
    exec: Arc<dyn Exec>,
    cancel: &CancellationToken,
) -> Result<()> {
    let rundir = std::env::var("OVN_RUNDIR").ok();
    let servers = [
        (&NB_SERVER, cfg.ovn_north.server.clone()),
        (&SB_SERVER, cfg.ovn_south.server.clone()),
    ];
    for (server, auth) in &servers {
        configure_server(exec.clone(), server, auth, rundir.as_deref(), cancel).await?;
    }
    let keep: Vec<_> = servers
        .into_iter()
        .filter(|(_, a)| matches!(a.server_setup(), ServerSetup::Listen { .. }))
        .collect();
    if !keep.is_empty() {
        tokio::spawn(keep_listeners(exec, keep, rundir, cancel.clone()));
    }
    Ok(())
}

/// How often the master re-checks the servers' listeners it configured.
const LISTENER_CHECK: Duration = Duration::from_secs(5);

/// The listeners live in the databases' own `Connection` tables, so a database replaced by an
/// empty one (a restore) stops listening on them, and every client of that address (this
/// process too, and the nodes) is cut off for good. Re-check them over the local sockets and
/// put them back; a check that finds them in place only reads.
async fn keep_listeners(
    exec: Arc<dyn Exec>,
    servers: Vec<(&'static DbServer, OvnAuth)>,
    rundir: Option<String>,
    cancel: CancellationToken,
) {
    let mut outage = Outage::new("re-checking the database servers' listeners");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LISTENER_CHECK) => {}
            _ = cancel.cancelled() => return,
        }
        for (server, auth) in &servers {
            let setup = auth.server_setup();
            match ensure_listener(exec.clone(), server, &setup, rundir.as_deref()).await {
                Ok(false) => outage.succeeded(),
                Ok(true) => {
                    outage.succeeded();
                    tracing::warn!(
                        db = server.db,
                        "the {} server had lost its listener (a replaced database?): re-opened it",
                        server.db
                    );
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    outage.failed(1, &e);
                    tracing::debug!(db = server.db, error = %e, "re-checking the listener failed");
                }
            }
        }
    }
}

/// One check of `server`'s listener over its local socket, writing it when it is missing or
/// differs. Returns whether it wrote.
async fn ensure_listener(
    exec: Arc<dyn Exec>,
    server: &DbServer,
    setup: &ServerSetup,
    rundir: Option<&str>,
) -> Result<bool> {
    let db = server.db;
    let local = local_db_socket(rundir, server.stem);
    let mut target = CtlTarget::new(server.program);
    target.db_args = vec![format!("--db={local}")];
    let ctl = Ctl::new(exec, target);
    let current = ctl
        .run_raw(&["get-connection"])
        .await
        .with_context(|| format!("reading the {db} server's connections over {local}"))?;
    if !setup.needs_update(&current) {
        return Ok(false);
    }
    let args = setup.ctl_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let remote = match setup {
        ServerSetup::Listen { remote, .. } => remote.as_str(),
        _ => "",
    };
    ctl.run_raw(&args)
        .await
        .with_context(|| format!("error setting the {db} API connection {remote} over {local}"))?;
    Ok(true)
}

/// One central database as its server-side tool sees it.
#[derive(Debug)]
pub struct DbServer {
    pub db: &'static str,
    pub program: &'static str,
    /// Socket (and pid file, DB file) stem under `OVN_RUNDIR`.
    pub stem: &'static str,
}

pub const NB_SERVER: DbServer = DbServer {
    db: "NB",
    program: "ovn-nbctl",
    stem: "ovnnb_db",
};
pub const SB_SERVER: DbServer = DbServer {
    db: "SB",
    program: "ovn-sbctl",
    stem: "ovnsb_db",
};

/// Makes `server` listen on `auth`'s address, over its local socket under `rundir` (`None`:
/// the packages' default). See [`setup_db_servers`].
pub async fn configure_server(
    exec: Arc<dyn Exec>,
    server: &DbServer,
    auth: &OvnAuth,
    rundir: Option<&str>,
    cancel: &CancellationToken,
) -> Result<()> {
    let db = server.db;
    let setup = auth.server_setup();
    let remote = match &setup {
        ServerSetup::Nothing => return Ok(()),
        ServerSetup::Clustered { members } => {
            tracing::info!(
                db,
                members,
                "clustered {db} address list: not configuring the servers' listeners \
                 (the Connection table is shared by all members); configure each member's \
                 listener yourself, see docs/install.md"
            );
            return Ok(());
        }
        ServerSetup::Listen { remote, ssl } => {
            if let Some(ssl) = ssl {
                check_server_certs(db, ssl)?;
            }
            remote.clone()
        }
    };
    let local = local_db_socket(rundir, server.stem);
    let what = format!("configuring the {db} server's listener {remote} over {local}");
    let changed = until_ok(&what, retry::DEPENDENCY, cancel, || {
        ensure_listener(exec.clone(), server, &setup, rundir)
    })
    .await?;
    tracing::info!(db, %remote, %local, changed, "database server listener configured");
    Ok(())
}

fn check_server_certs(db: &str, ssl: &ServerSsl) -> Result<()> {
    for (what, p) in [
        ("private key", &ssl.privkey),
        ("certificate", &ssl.cert),
        ("CA certificate", &ssl.cacert),
    ] {
        if !p.exists() {
            return Err(ConfigError::new(format!(
                "{db} server {what} file {} not found",
                p.display()
            ))
            .into());
        }
    }
    Ok(())
}
