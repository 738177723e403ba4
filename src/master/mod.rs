//! `-init-master`: the cluster topology and node subnets.
//!
//! One task owns the allocator and processes node changes in order, so two nodes can never get
//! the same subnet, however events are replayed. At start it waits for the complete node list,
//! rebuilds the allocator from the annotations, removes OVN objects of nodes that no longer
//! exist, and only then allocates.

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
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use crate::config::{ClusterSubnet, Config, OvnEndpoint, OvnScheme};
use crate::kube::annotations::{HOST_SUBNET, parse_host_subnet};
use crate::kube::{Change, events, informer};
use crate::ovn::{Nb, NbTxn};
use crate::util::retry::Retries;
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
    /// Nodes whose last attempt failed.
    retry: Retries,
    snap: Snapshot,
    snap_dirty: bool,
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
            retry: Retries::new(Duration::from_secs(1), Duration::from_secs(30)),
            snap: Snapshot::default(),
            snap_dirty: true,
        }
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
            Ok(()) => self.retry.forget(name),
            Err(e) => {
                let (attempt, delay) = self.retry.failed(name);
                tracing::warn!(node = %name, attempt, retry_in = ?delay, error = %format!("{e:#}"), "node sync failed");
            }
        }
    }

    async fn sync_node_inner(&mut self, name: &str) -> Result<()> {
        let Some(node) = self.nodes.get(name).cloned() else {
            return Ok(());
        };
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
        Ok(())
    }

    async fn delete_node(&mut self, node: &Node) {
        let name = node.name_any();
        self.nodes.remove(&name);
        self.retry.forget(&name);
        self.waiting.remove(&name);
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
    pub async fn run(mut self, mut cancel: CancelToken) -> Result<()> {
        self.ensure_cluster().await?;
        tracing::info!("cluster topology ready");
        let api: Api<Node> = Api::all(self.client.clone());
        let mut changes = informer(api, watcher::Config::default()).boxed();
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
                                self.initial_sync().await?;
                                tracing::info!(nodes = self.nodes.len(), "initial node sync done");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Server-side database connections, as the reference does when addresses are given: the NB
/// and SB listen on the given address (not on every address) and use the given certificates.
pub async fn setup_db_servers(
    cfg: &Config,
    nb: &crate::ovn::Ctl,
    sb: &crate::ovn::Ctl,
) -> Result<()> {
    for (db, auth, ctl) in [
        ("NB", &cfg.ovn_north.server, nb),
        ("SB", &cfg.ovn_south.server, sb),
    ] {
        // Listen on the address we were given, not on every address of the host.
        let target = match (&auth.scheme, auth.endpoints.first()) {
            (OvnScheme::Tcp | OvnScheme::Ssl, Some(OvnEndpoint::Inet(sa))) => {
                format!("p{}:{}:{}", auth.scheme, sa.port(), sa.ip())
            }
            _ => continue,
        };
        if let (Some(k), Some(c), Some(ca)) = (&auth.privkey, &auth.cert, &auth.cacert) {
            for (what, p) in [
                ("private key", k),
                ("certificate", c),
                ("CA certificate", ca),
            ] {
                if !p.exists() {
                    anyhow::bail!("{db} server {what} file {} not found", p.display());
                }
            }
            ctl.run_raw(&["del-ssl"])
                .await
                .with_context(|| format!("{db} del-ssl"))?;
            let (k, c, ca) = (
                k.display().to_string(),
                c.display().to_string(),
                ca.display().to_string(),
            );
            ctl.run_raw(&["set-ssl", &k, &c, &ca])
                .await
                .with_context(|| format!("{db} set-ssl"))?;
        }
        ctl.run_raw(&["set-connection", &target])
            .await
            .with_context(|| format!("error setting the {db} API connection {target}"))?;
        tracing::info!(db, %target, "database connection configured");
    }
    Ok(())
}
