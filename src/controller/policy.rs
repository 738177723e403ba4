//! The NetworkPolicy controller: watches namespaces, pods, network policies and nodes, learns
//! from the pod controller which pods have a logical port, and keeps the NB port groups,
//! address sets and ACLs of `policy_plan` in step.
//!
//! Reconcile, don't patch: an event marks the units it can affect (a policy, the default-deny
//! groups of a namespace, the node-management set) dirty; the loop recomputes each dirty unit
//! from the cached objects, diffs it against the NB mirror and runs all differences as ONE
//! transaction (events that arrive together are coalesced into the same transaction). A failed
//! transaction re-reads NB, then retries each unit alone with backoff, so one bad unit cannot
//! hold back the others. One task owns all state: no locks, no deadlock on delete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pods::PortEvent;
use super::pods_plan::{EXT_POD_KEY, PortRow, pod_node, pod_ns};
use super::policy_model::{Compiled, compile};
use super::policy_plan::{
    Ids, Objects, PodView, Unit, World, deny_objects, diff_ops, mgmt_objects, nb_queries, parse_nb,
    policy_objects, whole_unit_batches,
};
use crate::kube::annotations::{HOST_SUBNET, parse_host_subnet};
use crate::kube::shared::listed;
use crate::kube::{Change, Watch, events, key};
use crate::ovn::signals::next_change;
use crate::ovn::{Nb, NbOp, NbTxn, Proto};
use crate::util::retry::{self, Outage, Retries};
use tokio_util::sync::CancellationToken;

/// Commands per transaction at start-up (a unit's commands are never split).
const MAX_POLICY_TXN_OPS: usize = 4000;

/// A unit to change: its commands and what NB holds for it after them.
type UnitWork = (Unit, Vec<NbOp>, Objects);
/// A burst of events ends after this long without one...
const BURST_QUIET: Duration = Duration::from_millis(3);
/// ...or after this long in any case, so a steady stream still gets served.
const BURST_MAX: Duration = Duration::from_millis(100);

/// A node's management port address: `.2` of its subnet.
fn mgmt_ip(node: &Node) -> Option<Ipv4Addr> {
    let net = parse_host_subnet(node.annotations().get(HOST_SUBNET)?).ok()?;
    Some(Ipv4Addr::from(u32::from(net.network()).checked_add(2)?))
}

fn container_ports(pod: &Pod) -> Vec<(String, Proto, u16)> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let (Some(name), Ok(num)) = (&p.name, u16::try_from(p.container_port)) else {
                continue;
            };
            let proto = match p.protocol.as_deref() {
                None => Proto::Tcp,
                Some(s) => match Proto::parse_any_case(s) {
                    Some(pr) => pr,
                    None => continue,
                },
            };
            out.push((name.clone(), proto, num));
        }
    }
    out
}

/// The view of a pod the policies can use; `None` until it has a port (host-network and
/// unscheduled pods never get one).
fn pod_view(pod: &Pod, plugged: Option<&(String, Ipv4Addr)>) -> Option<PodView> {
    pod_node(pod)?;
    let (port, ip) = plugged?;
    Some(PodView {
        ns: pod_ns(pod),
        name: pod.name_any(),
        labels: pod.labels().clone(),
        named: container_ports(pod),
        port: port.clone(),
        ip: *ip,
    })
}

/// Everything the controller knows, owned by its single task.
struct State {
    nb: Arc<dyn Nb>,
    events: events::Events,
    pods: HashMap<String, Arc<Pod>>,
    /// Pods with a logical port: key → (port, ip).
    plugged: HashMap<String, (String, Ipv4Addr)>,
    policies: BTreeMap<String, Compiled>,
    nodes: BTreeMap<String, Ipv4Addr>,
    world: World,
    /// What NB holds of our objects, by unit.
    mirror: BTreeMap<Unit, Objects>,
    dirty: BTreeSet<Unit>,
    /// Units whose last transaction failed: when to retry and attempts so far.
    retry: Retries<Unit>,
    /// The NB as every unit sees it: an outage is logged once, not per unit and attempt.
    outage: Outage,
}

impl State {
    fn new(nb: Arc<dyn Nb>, client: &kube::Client) -> Self {
        State {
            nb,
            events: events::Events::new(client.clone(), events::NET_CONTROLLER),
            pods: HashMap::new(),
            plugged: HashMap::new(),
            policies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            world: World::default(),
            mirror: BTreeMap::new(),
            dirty: BTreeSet::new(),
            retry: Retries::with_policy(retry::PER_OBJECT),
            outage: Outage::new("network policy objects in the NB database"),
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Namespace(ch) => self.on_namespace(ch),
            Input::Pod(ch) => self.on_pod(ch),
            Input::Policy(ch) => self.on_policy(ch),
            Input::Node(ch) => self.on_node(ch),
        }
    }

    /// Start from what NB holds: our objects, and the pod ports already there (they count
    /// as plugged). Waits for the NB; false when `cancel` ended the wait.
    async fn read_initial_nb(&mut self, cancel: &CancellationToken) -> Result<bool> {
        let mut reading = retry::Retrying::new("reading policy objects from NB", retry::DEPENDENCY);
        let (mirror, ports) = loop {
            match self.read_nb().await {
                Ok(r) => break r,
                Err(e) => {
                    if let Err(e) = reading.failed(e, cancel).await {
                        return if retry::is_config_error(&e) {
                            Err(e)
                        } else {
                            Ok(false)
                        };
                    }
                }
            }
        };
        reading.succeeded();
        self.mirror = mirror;
        for p in ports {
            let Some(pod) = p.external_ids.get(EXT_POD_KEY).cloned() else {
                continue;
            };
            if let Some((_, ip)) = p.static_address() {
                self.plugged.entry(pod).or_insert((p.name.clone(), ip));
            }
        }
        Ok(true)
    }

    /// Every unit NB has or we want, reconciled: stale ones go, valid ones are kept.
    async fn initial_sync(&mut self) {
        let stale: Vec<Unit> = self
            .mirror
            .keys()
            .filter(|u| self.desired(u).is_empty())
            .cloned()
            .collect();
        self.dirty = self.all_units();
        let started = std::time::Instant::now();
        let changed = self.reconcile().await;
        tracing::info!(
            policies = self.policies.len(),
            stale_removed = stale.len(),
            units_changed = changed,
            acls = self.mirror.values().map(Objects::acl_count).sum::<usize>(),
            elapsed = ?started.elapsed(),
            "initial policy sync done"
        );
        for u in &stale {
            tracing::info!("removed the stale objects of the {u}");
        }
    }

    fn policy_unit(c: &Compiled) -> Unit {
        Unit::Policy(c.ns.clone(), c.name.clone())
    }

    /// Pods of `ns` changed (labels, address, ports, membership).
    fn pods_changed(&mut self, ns: &str) {
        let labels = self.world.namespaces.get(ns);
        let mut units = Vec::new();
        for c in self.policies.values() {
            if World::touches(c, ns, labels) {
                units.push(Self::policy_unit(c));
            }
        }
        units.push(Unit::Deny(ns.to_string()));
        self.dirty.extend(units);
    }

    /// Recompute the view of one pod; mark dirty when it changed.
    fn refresh_pod(&mut self, k: &str) {
        let new = self
            .pods
            .get(k)
            .and_then(|p| pod_view(p, self.plugged.get(k)));
        let (ns, name) = match (&new, self.pods.get(k)) {
            (Some(v), _) => (v.ns.clone(), v.name.clone()),
            (None, Some(p)) => (pod_ns(p), p.name_any()),
            (None, None) => match k.split_once('/') {
                Some((a, b)) => (a.to_string(), b.to_string()),
                None => return,
            },
        };
        let slot = self.world.pods.entry(ns.clone()).or_default();
        let old = match &new {
            Some(v) => slot.insert(name, v.clone()),
            None => slot.remove(&name),
        };
        if slot.is_empty() {
            self.world.pods.remove(&ns);
        }
        if old != new {
            self.pods_changed(&ns);
        }
    }

    fn on_pod(&mut self, ch: Change<Pod>) {
        match ch {
            Change::Apply { new, .. } => {
                let k = key(new.as_ref());
                self.pods.insert(k.clone(), new);
                self.refresh_pod(&k);
            }
            Change::Delete(old) => {
                let k = key(old.as_ref());
                self.pods.remove(&k);
                self.refresh_pod(&k);
            }
            Change::Synced => {}
        }
    }

    fn on_port(&mut self, ev: PortEvent) {
        let k = match ev {
            PortEvent::Up { pod, port, ip } => {
                self.plugged.insert(pod.clone(), (port, ip));
                pod
            }
            PortEvent::Down { pod, .. } => {
                self.plugged.remove(&pod);
                pod
            }
        };
        self.refresh_pod(&k);
    }

    fn on_namespace(&mut self, ch: Change<Namespace>) {
        let (name, labels) = match ch {
            Change::Apply { new, .. } => (new.name_any(), Some(new.labels().clone())),
            Change::Delete(old) => (old.name_any(), None),
            Change::Synced => return,
        };
        let old = match &labels {
            Some(l) => self.world.namespaces.insert(name.clone(), l.clone()),
            None => self.world.namespaces.remove(&name),
        };
        if old == labels {
            return;
        }
        // Policies whose namespace selectors matched before or match now.
        let mut units = Vec::new();
        for c in self.policies.values() {
            if World::touches(c, &name, old.as_ref()) || World::touches(c, &name, labels.as_ref()) {
                units.push(Self::policy_unit(c));
            }
        }
        self.dirty.extend(units);
    }

    fn on_policy(&mut self, ch: Change<NetworkPolicy>) {
        match ch {
            Change::Apply { old, new } => {
                let c = compile(&new);
                let k = c.key();
                let _g = tracing::info_span!("netpol", policy = %k).entered();
                let spec_changed = old.as_ref().is_none_or(|o| o.spec != new.spec);
                if !c.problems.is_empty() && spec_changed {
                    let msg = format!("network policy {k}: {}", c.problems.join("; "));
                    tracing::error!("{msg}");
                    let ev = self.events.clone();
                    tokio::spawn(async move {
                        ev.warn(new.as_ref(), "CompilePolicy", "InvalidNetworkPolicy", &msg)
                            .await;
                    });
                }
                if spec_changed {
                    tracing::info!(
                        ingress = c.ingress.as_ref().map(Vec::len),
                        egress = c.egress.as_ref().map(Vec::len),
                        "network policy changed"
                    );
                }
                self.dirty.insert(Self::policy_unit(&c));
                self.dirty.insert(Unit::Deny(c.ns.clone()));
                self.policies.insert(k, c);
            }
            Change::Delete(old) => {
                let k = key(old.as_ref());
                let _g = tracing::info_span!("netpol", policy = %k).entered();
                tracing::info!("network policy deleted");
                let ns = old.namespace().unwrap_or_else(|| "default".into());
                self.policies.remove(&k);
                self.dirty.insert(Unit::Policy(ns.clone(), old.name_any()));
                self.dirty.insert(Unit::Deny(ns));
            }
            Change::Synced => {}
        }
    }

    fn on_node(&mut self, ch: Change<Node>) {
        let changed = match ch {
            Change::Apply { new, .. } => match mgmt_ip(&new) {
                Some(ip) => self.nodes.insert(new.name_any(), ip) != Some(ip),
                None => self.nodes.remove(&new.name_any()).is_some(),
            },
            Change::Delete(old) => self.nodes.remove(&old.name_any()).is_some(),
            Change::Synced => false,
        };
        if changed {
            self.dirty.insert(Unit::Mgmt);
        }
    }

    fn desired(&self, unit: &Unit) -> Objects {
        match unit {
            Unit::Policy(ns, name) => self
                .policies
                .get(&format!("{ns}/{name}"))
                .map(|c| policy_objects(c, &self.world))
                .unwrap_or_default(),
            Unit::Deny(ns) => deny_objects(
                ns,
                self.policies.values().filter(|c| &c.ns == ns),
                &self.world,
            ),
            Unit::Mgmt => mgmt_objects(self.nodes.values().copied()),
        }
    }

    fn remember(&mut self, unit: Unit, want: Objects) {
        if want.is_empty() {
            self.mirror.remove(&unit);
        } else {
            self.mirror.insert(unit, want);
        }
    }

    /// Read our objects (and the pod ports) from NB.
    async fn read_nb(&self) -> Result<(BTreeMap<Unit, Objects>, Vec<PortRow>)> {
        let mut queries = nb_queries();
        queries.push(PortRow::query());
        let t = self.nb.query(&queries).await?;
        if t.len() != 5 {
            bail!("NB returned {} tables for 5 queries", t.len());
        }
        let mirror = parse_nb(&t[0], &t[1], &t[2], &t[3]);
        Ok((mirror, t[4].iter().map(PortRow::from_row).collect()))
    }

    /// After a failure: trust NB again, and forget ports that do not exist (any more).
    async fn resync(&mut self) {
        match self.read_nb().await {
            Ok((mirror, ports)) => {
                self.mirror = mirror;
                let present: BTreeSet<String> = ports.into_iter().map(|p| p.name).collect();
                let gone: Vec<String> = self
                    .plugged
                    .iter()
                    .filter(|(_, (port, _))| !present.contains(port))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.plugged.remove(&k);
                    self.refresh_pod(&k);
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                self.outage.failed(1, &e);
                tracing::debug!(error = %e, "re-reading policy objects from NB failed")
            }
        }
    }

    /// Every unit NB has or we want.
    fn all_units(&self) -> BTreeSet<Unit> {
        let mut all: BTreeSet<Unit> = self.mirror.keys().cloned().collect();
        for c in self.policies.values() {
            all.insert(Self::policy_unit(c));
            all.insert(Unit::Deny(c.ns.clone()));
        }
        all.insert(Unit::Mgmt);
        all
    }

    /// The NB reconnected, or came back as a new database. The units waiting for their retry
    /// waited for the NB: they are due now. What NB holds is read again (a new database holds
    /// none of our objects, and no pod port until the pod controller writes it again and
    /// reports it), and every unit is compared with it.
    async fn on_nb_epoch(&mut self, new_database: bool) {
        let waiting = self.retry.retry_all_now(std::time::Instant::now());
        if new_database {
            tracing::info!(
                units = self.mirror.len(),
                "new NB database: programming every policy again"
            );
            self.mirror.clear();
        }
        self.resync().await;
        self.dirty.extend(self.all_units());
        tracing::debug!(waiting, "NB back: reconciling policy objects now");
    }

    /// Recompute the dirty units that are due and apply the differences. Returns the number
    /// of units changed in NB.
    async fn reconcile(&mut self) -> usize {
        let work = self.due_work(Instant::now());
        if work.is_empty() {
            return 0;
        }
        let changed = work.len();
        // Batches of whole units; normally one transaction.
        let mut failed: Vec<UnitWork> = Vec::new();
        for batch in whole_unit_batches(work, |w| w.1.len(), MAX_POLICY_TXN_OPS) {
            failed.extend(self.apply_batch(batch).await);
        }
        if failed.is_empty() {
            return changed;
        }
        // Re-read NB, then each failed unit alone, recomputed against what NB really holds.
        self.resync().await;
        for (u, _, _) in failed {
            self.apply_alone(u).await;
        }
        changed
    }

    /// Takes the dirty units that are due; those already as wanted are done, the others come
    /// back with their commands and what NB will hold after them.
    fn due_work(&mut self, now: Instant) -> Vec<UnitWork> {
        let due: Vec<Unit> = self
            .dirty
            .iter()
            .filter(|u| self.retry.ready(*u, now.into_std()))
            .cloned()
            .collect();
        let mut ids = Ids::default();
        let mut work = Vec::new();
        for u in due {
            self.dirty.remove(&u);
            let want = self.desired(&u);
            let empty = Objects::default();
            let ops = diff_ops(self.mirror.get(&u).unwrap_or(&empty), &want, &mut ids);
            if ops.is_empty() {
                self.retry.forget(&u);
                self.remember(u, want);
            } else {
                work.push((u, ops, want));
            }
        }
        work
    }

    /// One transaction for a batch of units; on failure the whole batch comes back.
    async fn apply_batch(&mut self, batch: Vec<UnitWork>) -> Vec<UnitWork> {
        let mut txn = NbTxn::new();
        for (_, ops, _) in &batch {
            txn.extend(ops.iter().cloned());
        }
        let started = std::time::Instant::now();
        match self.nb.transact(&txn).await {
            Ok(_) => {
                tracing::debug!(units = batch.len(), commands = txn.len(), elapsed = ?started.elapsed(), "policy NB transaction");
                self.outage.succeeded();
                for (u, _, want) in batch {
                    self.retry.forget(&u);
                    self.remember(u, want);
                }
                Vec::new()
            }
            Err(e) => {
                let err = format!("{e:#}");
                self.outage.failed(batch.len(), &err);
                tracing::debug!(units = batch.len(), error = %err, "policy NB transaction failed; retrying each unit alone");
                batch
            }
        }
    }

    /// One unit, recomputed against the mirror, in a transaction of its own; on failure it is
    /// dirty again and waits for its retry.
    async fn apply_alone(&mut self, u: Unit) {
        let want = self.desired(&u);
        let empty = Objects::default();
        let mut ids = Ids::default();
        let ops = diff_ops(self.mirror.get(&u).unwrap_or(&empty), &want, &mut ids);
        let txn: NbTxn = ops.into_iter().collect();
        match self.nb.transact(&txn).await {
            Ok(_) => {
                self.outage.succeeded();
                self.retry.forget(&u);
                self.remember(u, want);
            }
            Err(e) => {
                let err = format!("{e:#}");
                let (attempts, delay) = self.retry.failed(&u);
                self.outage.failed(1, &err);
                tracing::debug!(attempt = attempts, retry_in = ?delay, error = %err, "programming the {u} failed; will retry");
                self.dirty.insert(u);
            }
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.dirty
            .iter()
            .filter_map(|u| self.retry.retry_at(u).map(Instant::from_std))
            .min()
    }
}

pub struct PolicyController {
    nb: Arc<dyn Nb>,
    client: kube::Client,
    ports: mpsc::UnboundedReceiver<PortEvent>,
    /// Reported once the initial policy sync has been applied.
    ready: Option<crate::util::ready::Pending>,
}

impl PolicyController {
    pub fn new(
        nb: Arc<dyn Nb>,
        client: kube::Client,
        ports: mpsc::UnboundedReceiver<PortEvent>,
    ) -> Self {
        PolicyController {
            nb,
            client,
            ports,
            ready: None,
        }
    }

    /// Report the end of the initial policy sync on `ready`.
    pub fn with_ready(mut self, ready: crate::util::ready::Pending) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Run until `cancel` fires.
    pub async fn run(
        mut self,
        informers: crate::kube::Informers,
        cancel: CancellationToken,
    ) -> Result<()> {
        let mut watches = Watches::new(&informers);
        let mut st = State::new(self.nb.clone(), &self.client);

        // 1. Complete lists of everything, so start-up sync never removes a valid object.
        let Some(lists) = listed(&cancel, watches.initial_lists()).await? else {
            return Ok(());
        };
        lists.into_iter().for_each(|i| st.on_input(i));

        // 2. What NB holds; pod ports already there count as plugged (the pod controller
        //    reports new ones), so a restart never drops pods from their groups.
        if !st.read_initial_nb(&cancel).await? {
            return Ok(());
        }
        while let Ok(ev) = self.ports.try_recv() {
            st.on_port(ev);
        }
        let keys: Vec<String> = st.pods.keys().cloned().collect();
        for k in keys {
            st.refresh_pod(&k);
        }

        // 3. Every unit NB has or we want: stale ones go, valid ones are kept as they are.
        st.initial_sync().await;
        if let Some(p) = self.ready.take() {
            p.done();
        }

        // 4. Follow changes. Events that arrive right behind one another (a namespace's
        // policies applied together, a relist) are gathered into one transaction: a burst ends
        // after BURST_QUIET without an event, or after BURST_MAX. Polling the streams once is
        // not enough: the HTTP client hands a watch over one chunk at a time.
        let mut burst_end: Option<Instant> = None;
        let mut signals = st.nb.signals();
        let mut epoch = *signals.borrow();
        loop {
            let wake = st.next_retry();
            let far = Instant::now() + Duration::from_secs(3600);
            let flush = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                input = watches.next() => { st.on_input(input?); false }
                ev = self.ports.recv() => match ev {
                    Some(ev) => { st.on_port(ev); false }
                    // The pod controller stopped; the process is going down.
                    None => return Ok(()),
                },
                now = next_change(&mut signals) => {
                    let before = std::mem::replace(&mut epoch, now);
                    st.on_nb_epoch(now.database != before.database).await;
                    true
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() && burst_end.is_none() => true,
                _ = tokio::time::sleep(BURST_QUIET), if burst_end.is_some() => true,
            };
            if !flush && Instant::now() < *burst_end.get_or_insert(Instant::now() + BURST_MAX) {
                continue;
            }
            burst_end = None;
            st.reconcile().await;
        }
    }
}

/// A change of one of the kinds the policies depend on.
enum Input {
    Namespace(Change<Namespace>),
    Pod(Change<Pod>),
    Policy(Change<NetworkPolicy>),
    Node(Change<Node>),
}

/// The controller's four watches.
struct Watches {
    namespaces: Watch<Namespace>,
    pods: Watch<Pod>,
    policies: Watch<NetworkPolicy>,
    nodes: Watch<Node>,
}

impl Watches {
    fn new(informers: &crate::kube::Informers) -> Self {
        Watches {
            namespaces: informers.watch(),
            pods: informers.watch(),
            policies: informers.watch(),
            nodes: informers.watch(),
        }
    }

    /// The complete lists of all four, as additions.
    async fn initial_lists(&mut self) -> Result<Vec<Input>> {
        let (ns, pods, nps, nodes) = tokio::try_join!(
            self.namespaces.initial_list(),
            self.pods.initial_list(),
            self.policies.initial_list(),
            self.nodes.initial_list(),
        )?;
        let mut all: Vec<Input> = Vec::new();
        all.extend(Change::additions(ns).into_iter().map(Input::Namespace));
        all.extend(Change::additions(pods).into_iter().map(Input::Pod));
        all.extend(Change::additions(nps).into_iter().map(Input::Policy));
        all.extend(Change::additions(nodes).into_iter().map(Input::Node));
        Ok(all)
    }

    /// The next change of any of them; a watch that ended is an error.
    async fn next(&mut self) -> Result<Input> {
        let ended = |kind: &str| anyhow::anyhow!("{kind} watch ended");
        tokio::select! {
            ch = self.namespaces.next() => ch.map(Input::Namespace).ok_or_else(|| ended("namespace")),
            ch = self.pods.next() => ch.map(Input::Pod).ok_or_else(|| ended("pod")),
            ch = self.policies.next() => ch.map(Input::Policy).ok_or_else(|| ended("network policy")),
            ch = self.nodes.next() => ch.map(Input::Node).ok_or_else(|| ended("node")),
        }
    }
}
