//! `-init-master`: the cluster topology and node subnets.
//!
//! One task owns the allocator and processes node changes in order, so two nodes can never get
//! the same subnet, however events are replayed. At start it waits for the complete node list,
//! rebuilds the allocator from the annotations, removes OVN objects of nodes that no longer
//! exist, and only then allocates.

pub mod election;
pub mod subnets;
pub mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::cancel::CancelToken;
use anyhow::{Context, Result};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::Instrument;

use crate::config::{
    ClusterSubnet, Config, ConfigError, OvnAuth, ServerSetup, ServerSsl, local_db_socket,
};
use crate::exec::Exec;
use crate::kube::annotations::{HOST_SUBNET, parse_host_subnet};
use crate::kube::{Change, events};
use crate::ovn::{Ctl, CtlTarget};
use crate::ovn::{Nb, NbTxn};
use crate::util::ready::Pending;
use crate::util::retry::{self, Outage, Retries, Retrying, until_ok};
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
}

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
        }
    }

    /// Report the end of the initial node sync on `ready`.
    pub fn with_ready(mut self, ready: Pending) -> Self {
        self.ready = Some(ready);
        self
    }

    async fn snapshot(&mut self) -> Result<&Snapshot> {
        if self.snap_dirty {
            self.snap = Snapshot::read(self.nb.as_ref())
                .await
                .context("reading the northbound topology")?;
            self.snap_dirty = false;
        }
        Ok(&self.snap)
    }

    async fn transact(&mut self, ops: Vec<crate::ovn::NbOp>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut txn = NbTxn::new();
        txn.extend(ops);
        // Whatever happened, our picture of the database may be stale now.
        self.snap_dirty = true;
        self.nb.transact(&txn).await.map(|_| ())
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
        let ops = topology::node_ops(self.snapshot().await?, name, subnet);
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
        for n in self.retry.due(Instant::now()) {
            self.sync_node(&n).await;
        }
    }

    /// Run until `cancel` fires.
    pub async fn run(
        mut self,
        informers: crate::kube::Informers,
        mut cancel: CancelToken,
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
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick(), if synced => self.retry_due().await,
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
    cancel: &CancelToken,
) -> Result<()> {
    let rundir = std::env::var("OVN_RUNDIR").ok();
    for (server, auth) in [
        (&NB_SERVER, &cfg.ovn_north.server),
        (&SB_SERVER, &cfg.ovn_south.server),
    ] {
        configure_server(exec.clone(), server, auth, rundir.as_deref(), cancel).await?;
    }
    Ok(())
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
    cancel: &CancelToken,
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
    let mut target = CtlTarget::new(server.program);
    target.db_args = vec![format!("--db={local}")];
    let ctl = Ctl::new(exec, target);
    let what = format!("configuring the {db} server's listener {remote} over {local}");
    let changed = until_ok(&what, retry::DEPENDENCY, cancel, || async {
        let current = ctl
            .run_raw(&["get-connection"])
            .await
            .with_context(|| format!("reading the {db} server's connections over {local}"))?;
        if !setup.needs_update(&current) {
            return Ok(false);
        }
        let args = setup.ctl_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl.run_raw(&args).await.with_context(|| {
            format!("error setting the {db} API connection {remote} over {local}")
        })?;
        Ok(true)
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
