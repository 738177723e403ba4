//! Services and endpoints → OVN load balancers (`-net-controller`; NodePorts with `-nodeport`).
//!
//! One task owns the VIP bookkeeping. Every service or EndpointSlice event recomputes that
//! service's full VIP set (`vips::service_vips`) and applies the difference in one NB
//! transaction. Endpoints come from `discovery.k8s.io/v1` EndpointSlices, or from core/v1
//! Endpoints when the API server does not serve slices (asked once at start). Gateway routers
//! appear when nodes initialise their gateways, so the load balancer targets are re-read
//! periodically and every service is reconciled when they change.

pub mod endpoints;
pub mod validate;
pub mod vips;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::kube::shared::listed;
use crate::kube::{Change, Watch, key};
use crate::ovn::schema::{col, nb};
use crate::ovn::signals::next_change;
use crate::ovn::{Nb, NbTxn, Proto, Query, Row, names};
use crate::util::retry::{self, Outage, Retries, Retrying};
use endpoints::{EpSet, Source};
use tokio_util::sync::CancellationToken;
use vips::{Flavor, Gateway, LbTargets, LbWant, VipMap};

/// Services reconciled together at most (one transaction).
const MAX_BATCH: usize = 500;

/// Node switch → the load balancers attached to it.
pub type SwitchLbs = BTreeMap<String, BTreeSet<String>>;

/// What `read_targets` finds in the NB.
pub struct NbState {
    pub targets: LbTargets,
    /// VIPs on the load balancers this controller programs, as they are now.
    pub actual: VipMap,
    pub switches: SwitchLbs,
    /// Flavored load balancers whose gateway router or node switch no longer exists.
    pub orphans: Vec<String>,
}

/// Read the load balancers this controller programs, the node switches the flavored cluster
/// load balancers belong on and (with `with_vips`) the VIPs they hold now. The periodic rescan
/// leaves the VIPs out: at 1,000 services they are most of the table.
pub async fn read_targets(nb: &dyn Nb, with_vips: bool) -> Result<NbState> {
    let lb_cols: &[&str] = if with_vips {
        &[col::NAME, col::PROTOCOL, col::EXTERNAL_IDS, col::VIPS]
    } else {
        &[col::NAME, col::PROTOCOL, col::EXTERNAL_IDS]
    };
    let t = nb
        .query(&[
            Query::list(nb::LOAD_BALANCER, lb_cols),
            Query::list(
                nb::LOGICAL_ROUTER,
                &[col::NAME, col::EXTERNAL_IDS, col::OPTIONS],
            ),
            Query::list(
                nb::LOGICAL_SWITCH,
                &[col::NAME, col::EXTERNAL_IDS, col::LOAD_BALANCER],
            ),
        ])
        .await
        .context("reading load balancers, gateway routers and node switches")?;
    Ok(nb_state(&t[0], &t[1], &t[2]))
}

/// Load balancer rows sorted by what their `external_ids` say they are for.
#[derive(Default)]
struct LbIndex {
    cluster: BTreeMap<(Proto, Flavor), String>,
    gateway: BTreeMap<(String, Proto, Flavor), String>,
    node: BTreeMap<(String, Proto, Flavor), String>,
}

/// What the rows read say: the targets (the first load balancer of each kind wins), the VIPs
/// they hold, the node switches and the flavored load balancers left without a router or switch.
fn nb_state(lbs: &[Row], routers: &[Row], switches: &[Row]) -> NbState {
    let index = index_lbs(lbs);
    let mut targets = LbTargets {
        cluster: index.cluster,
        gateways: gateways(routers, lbs, &index.gateway),
        nodes: BTreeMap::new(),
    };
    let switches = node_switches(switches);
    for sw in switches.keys() {
        // Node switches are named after their node.
        targets.nodes.entry(sw.clone()).or_default();
    }
    // Flavored load balancers whose router or switch is gone (node deleted) are removed.
    let mut orphans = Vec::new();
    for ((gr, _, _), uuid) in index.gateway {
        if !targets.gateways.iter().any(|g| g.router == gr) {
            orphans.push(uuid);
        }
    }
    for ((n, p, f), uuid) in index.node {
        match targets.nodes.get_mut(&n) {
            Some(m) => {
                m.insert((p, f), uuid);
            }
            None => orphans.push(uuid),
        }
    }
    let owned: BTreeSet<String> = targets.all_uuids().into_iter().collect();
    let mut actual = VipMap::new();
    for lb in lbs.iter().filter(|lb| owned.contains(&lb.uuid)) {
        for (vip, backends) in lb.map(col::VIPS) {
            actual.insert((lb.uuid.clone(), vip), backends);
        }
    }
    NbState {
        targets,
        actual,
        switches,
        orphans,
    }
}

/// The cluster-wide (plain `k8s-cluster-lb-*` marks first), per-gateway-router and per-node
/// load balancers; the first row of each kind wins.
fn index_lbs(lbs: &[Row]) -> LbIndex {
    let mut index = LbIndex::default();
    for lb in lbs {
        for p in Proto::ALL {
            if lb
                .map_get(col::EXTERNAL_IDS, &names::ext_cluster_lb(p))
                .as_deref()
                == Some("yes")
            {
                index
                    .cluster
                    .entry((p, Flavor::PLAIN))
                    .or_insert_with(|| lb.uuid.clone());
            }
        }
        match LbWant::parse(&lb.map(col::EXTERNAL_IDS)) {
            Some(LbWant::Cluster(p, f)) => {
                index
                    .cluster
                    .entry((p, f))
                    .or_insert_with(|| lb.uuid.clone());
            }
            Some(LbWant::Gateway(gr, p, f)) => {
                index
                    .gateway
                    .entry((gr, p, f))
                    .or_insert_with(|| lb.uuid.clone());
            }
            Some(LbWant::Node(n, p, f)) => {
                index
                    .node
                    .entry((n, p, f))
                    .or_insert_with(|| lb.uuid.clone());
            }
            None => {}
        }
    }
    index
}

/// The gateway routers (those with a physical IP), sorted by name, each with its plain load
/// balancers (marked on the load balancer) and its flavored ones.
fn gateways(
    routers: &[Row],
    lbs: &[Row],
    flavored: &BTreeMap<(String, Proto, Flavor), String>,
) -> Vec<Gateway> {
    let mut out = Vec::new();
    for r in routers {
        let name = r.str(col::NAME);
        let Some(ip) = r
            .map_get(col::EXTERNAL_IDS, names::EXT_PHYSICAL_IP)
            .and_then(|ip| ip.parse().ok())
        else {
            continue;
        };
        let mut g = Gateway {
            router: name.clone(),
            node: r.map_get(col::EXTERNAL_IDS, names::EXT_NODE),
            physical_ip: ip,
            lbs: BTreeMap::new(),
        };
        for lb in lbs {
            for p in Proto::ALL {
                let k = names::ext_gateway_lb(p);
                if lb.map_get(col::EXTERNAL_IDS, &k).as_deref() == Some(name.as_str()) {
                    g.lbs
                        .entry((p, Flavor::PLAIN))
                        .or_insert_with(|| lb.uuid.clone());
                }
            }
        }
        for ((gr, p, f), uuid) in flavored {
            if *gr == name {
                g.lbs.insert((*p, *f), uuid.clone());
            }
        }
        out.push(g);
    }
    out.sort_by(|a, b| a.router.cmp(&b.router));
    out
}

/// The node switches (those with a node id) and the load balancers attached to each.
fn node_switches(switches: &[Row]) -> SwitchLbs {
    switches
        .iter()
        .filter(|s| s.map_get(col::EXTERNAL_IDS, names::EXT_NODE).is_some())
        .map(|s| {
            (
                s.str(col::NAME),
                s.set(col::LOAD_BALANCER).into_iter().collect(),
            )
        })
        .collect()
}

/// Ask the API server once whether it serves EndpointSlices. Only a definite "not served"
/// (404) selects core/v1 Endpoints; any other failure is retried, so a briefly unreachable API
/// server does not pin the controller to the deprecated API.
pub async fn discover_source(client: &kube::Client, cancel: &CancellationToken) -> Option<Source> {
    let mut r = Retrying::new(
        "asking the API server whether it serves discovery.k8s.io/v1",
        retry::DEPENDENCY,
    );
    loop {
        match client.list_api_group_resources("discovery.k8s.io/v1").await {
            Ok(list) => {
                let names: Vec<String> = list.resources.into_iter().map(|r| r.name).collect();
                return Some(endpoints::choose_source(Some(&names)));
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                return Some(endpoints::choose_source(None));
            }
            Err(e) => {
                // Only a cancel ends the retry (an API error is never a configuration error).
                r.failed(anyhow::Error::new(e), cancel).await.ok()?;
            }
        }
    }
}

pub struct ServiceController {
    nb: Arc<dyn Nb>,
    nodeport: bool,
    services: HashMap<String, Arc<Service>>,
    /// Each service's endpoints in one shape (from its slices, or its Endpoints object).
    endpoints: HashMap<String, EpSet>,
    /// Slices per service (`ns/service` → slice name → slice), joined by the service-name label.
    slices: HashMap<String, BTreeMap<String, Arc<EndpointSlice>>>,
    /// Which service a slice (`ns/slice`) was counted for, so a relabel or delete finds it.
    slice_owner: HashMap<String, String>,
    targets: LbTargets,
    switches: SwitchLbs,
    /// VIPs each service owns in OVN, as last programmed.
    owned: HashMap<String, VipMap>,
    /// Reverse index: which service holds a VIP.
    vip_owner: HashMap<(String, String), String>,
    warned: HashMap<String, Vec<String>>,
    retry: Retries,
    /// The NB as every service sees it: an outage is logged once, not per service and attempt.
    outage: Outage,
    /// Reported once the initial service/endpoints lists have been programmed.
    ready_signal: Option<crate::util::ready::Pending>,
    /// Networks Service-supplied addresses must stay out of.
    reserved: validate::Reserved,
    /// For Events on Services (set by `run`).
    events: Option<crate::kube::events::Events>,
}

/// A service whose VIPs could not be programmed: 500 ms doubling to 30 s (a reconnection of
/// the NB makes every waiting service due at once).
const RETRY: retry::Policy =
    retry::Policy::new(Duration::from_millis(500), Duration::from_secs(30));

impl ServiceController {
    pub fn new(nb: Arc<dyn Nb>, nodeport: bool) -> Self {
        ServiceController {
            nb,
            nodeport,
            services: HashMap::new(),
            endpoints: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            targets: LbTargets::default(),
            switches: SwitchLbs::new(),
            owned: HashMap::new(),
            vip_owner: HashMap::new(),
            warned: HashMap::new(),
            retry: Retries::with_policy(RETRY),
            outage: Outage::new("service load balancers in the NB database"),
            ready_signal: None,
            reserved: validate::Reserved::default(),
            events: None,
        }
    }

    /// Report the end of the initial service sync on `ready`.
    pub fn with_ready(mut self, ready: crate::util::ready::Pending) -> Self {
        self.ready_signal = Some(ready);
        self
    }

    /// The cluster's networks, which Services may not claim addresses in.
    pub fn with_reserved(mut self, reserved: validate::Reserved) -> Self {
        self.reserved = reserved;
        self
    }

    /// A slice changed or went: recompute the endpoints of the services it belonged to and
    /// belongs to now. Returns those service keys.
    fn slice_changed(&mut self, slice: &Arc<EndpointSlice>, deleted: bool) -> Vec<String> {
        let skey = key(slice.as_ref());
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut touched = Vec::new();
        let new_owner = if deleted {
            None
        } else {
            endpoints::slice_service_key(slice)
        };
        if let Some(old) = self.slice_owner.remove(&skey) {
            if Some(&old) != new_owner.as_ref()
                && let Some(m) = self.slices.get_mut(&old)
            {
                m.remove(&name);
                if m.is_empty() {
                    self.slices.remove(&old);
                }
            }
            touched.push(old);
        }
        if let Some(owner) = new_owner {
            self.slices
                .entry(owner.clone())
                .or_default()
                .insert(name, slice.clone());
            self.slice_owner.insert(skey, owner.clone());
            touched.push(owner);
        }
        touched.sort();
        touched.dedup();
        for svc in &touched {
            match self.slices.get(svc) {
                Some(m) => {
                    self.endpoints.insert(
                        svc.clone(),
                        endpoints::from_slices(m.values().map(|s| s.as_ref())),
                    );
                }
                None => {
                    self.endpoints.remove(svc);
                }
            }
        }
        touched
    }

    /// An endpoints event: the services whose endpoints it changed.
    fn endpoints_changed(&mut self, ch: EpChange) -> Vec<String> {
        match ch {
            EpChange::Slice(Change::Apply { new, .. }) => self.slice_changed(&new, false),
            EpChange::Slice(Change::Delete(old)) => self.slice_changed(&old, true),
            EpChange::Endpoints(Change::Apply { new, .. }) => {
                let k = key(new.as_ref());
                self.endpoints
                    .insert(k.clone(), endpoints::from_endpoints(&new));
                vec![k]
            }
            EpChange::Endpoints(Change::Delete(old)) => {
                let k = key(old.as_ref());
                self.endpoints.remove(&k);
                vec![k]
            }
            EpChange::Slice(Change::Synced) | EpChange::Endpoints(Change::Synced) => vec![],
        }
    }

    fn desired(&mut self, key: &str) -> vips::Desired {
        let Some(svc) = self.services.get(key).cloned() else {
            self.warned.remove(key);
            return vips::Desired::default();
        };
        // Hostile or broken input is taken out before planning, and reported on the Service.
        let (screened, svc_rejected) = validate::screen_service(key, &svc, &self.reserved);
        let eps = self
            .endpoints
            .get(key)
            .map(|e| validate::screen_endpoints(key, e));
        let eps_rejected = eps.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
        let mut rejected = svc_rejected.clone();
        rejected.extend(eps_rejected.iter().cloned());
        let d = vips::service_vips(
            key,
            &screened,
            eps.as_ref().map(|(e, _)| e),
            &self.targets,
            self.nodeport,
        );
        let mut all = rejected.clone();
        all.extend(d.warnings.iter().cloned());
        // Say each problem once, not on every event.
        if self.warned.get(key) != Some(&all) {
            let before = self.warned.get(key).cloned().unwrap_or_default();
            for w in &all {
                tracing::warn!(service = %key, "{w}");
            }
            // One Event per source of the input (the Service, its endpoints) listing what is
            // new: the Recorder folds repeats of one action into a series and keeps the first
            // note, so one Event per message would hide all but the first.
            let prefix = format!("service {key}: ");
            for (action, msgs) in [
                ("ScreenService", &svc_rejected),
                ("ScreenEndpoints", &eps_rejected),
            ] {
                let new: Vec<&str> = msgs
                    .iter()
                    .filter(|r| !before.contains(r))
                    .map(|r| r.strip_prefix(&prefix).unwrap_or(r))
                    .collect();
                if !new.is_empty() {
                    self.event(&svc, action, &new.join("; "));
                }
            }
            self.warned.insert(key.to_string(), all);
        }
        d
    }

    /// A Warning Event on `svc` (in the background: the controller does not wait for it).
    fn event(&self, svc: &Arc<Service>, action: &'static str, msg: &str) {
        let Some(events) = self.events.clone() else {
            return;
        };
        let (svc, msg) = (svc.clone(), msg.to_string());
        tokio::spawn(async move {
            events
                .warn(svc.as_ref(), action, "RejectedServiceInput", &msg)
                .await;
        });
    }

    /// Create the flavored load balancers in `wants` (one transaction) and re-read the
    /// targets, so the caller can place VIPs on them.
    async fn create_lbs(&mut self, wants: &BTreeSet<LbWant>) -> Result<()> {
        let wants: Vec<LbWant> = wants.iter().cloned().collect();
        // The node switches as they are now, not as the last rescan saw them: a switch made
        // since then would otherwise miss the new load balancer until the next rescan, and
        // pods on it would reach the VIP unbalanced meanwhile.
        self.switches = read_targets(self.nb.as_ref(), false).await?.switches;
        let switches: Vec<String> = self.switches.keys().cloned().collect();
        let txn: NbTxn = vips::create_lb_ops(&wants, &switches).into_iter().collect();
        self.nb.transact(&txn).await.with_context(|| {
            let names: Vec<String> = wants.iter().map(LbWant::name).collect();
            format!("creating load balancers {}", names.join(", "))
        })?;
        tracing::info!(lbs = ?wants.iter().map(LbWant::name).collect::<Vec<_>>(), "service load balancers created");
        // Take only the new load balancers: other target changes (gateways) are the
        // rescan's to notice, which then reconciles every service.
        let st = read_targets(self.nb.as_ref(), false).await?;
        for (k, uuid) in st.targets.cluster {
            self.targets.cluster.entry(k).or_insert(uuid);
        }
        for (n, lbs) in st.targets.nodes {
            let mine = self.targets.nodes.entry(n).or_default();
            for (k, uuid) in lbs {
                mine.entry(k).or_insert(uuid);
            }
        }
        for g in st.targets.gateways {
            if let Some(mine) = self
                .targets
                .gateways
                .iter_mut()
                .find(|m| m.router == g.router)
            {
                for (k, uuid) in g.lbs {
                    mine.lbs.entry(k).or_insert(uuid);
                }
            }
        }
        Ok(())
    }

    /// Bring several services' VIPs to their desired sets in ONE transaction: a burst of
    /// events (a rollout, a restart of many pods) costs one NB write and one northd
    /// recompute instead of one per service.
    async fn reconcile_keys(&mut self, keys: &[String]) {
        let mut missing = BTreeSet::new();
        for k in keys {
            missing.extend(self.desired(k).missing);
        }
        if !missing.is_empty()
            && let Err(e) = self.create_lbs(&missing).await
        {
            let e = format!("{e:#}");
            self.outage.failed(keys.len(), &e);
            for k in keys {
                let (attempt, delay) = self.retry.failed(k);
                tracing::debug!(service = %k, attempt, retry_in = ?delay, error = %e, "preparing load balancers failed; will retry");
            }
            return;
        }
        let saved = (self.owned.clone(), self.vip_owner.clone());
        let mut ops = Vec::new();
        let mut changed = Vec::new();
        let mut still_missing = BTreeSet::new();
        for key in keys {
            let d = self.desired(key);
            if !d.missing.is_empty() {
                still_missing.insert(key.clone());
                let (attempt, delay) = self.retry.failed(key);
                tracing::warn!(service = %key, attempt, retry_in = ?delay, lbs = ?d.missing.iter().map(LbWant::name).collect::<Vec<_>>(), "load balancers still missing; will retry");
                continue;
            }
            let mut want = d.vips;
            want.retain(|k, _| match self.vip_owner.get(k) {
                Some(other) if other != key => {
                    tracing::warn!(service = %key, vip = %k.1, owner = %other, "VIP already served by another service; skipped");
                    false
                }
                _ => true,
            });
            let have = self.owned.get(key).cloned().unwrap_or_default();
            let diff = vips::diff_ops(&have, &want);
            if !diff.is_empty() {
                changed.push((key.clone(), want.len()));
            }
            ops.extend(diff);
            self.record(key, &have, want);
        }
        if !ops.is_empty() {
            let txn: NbTxn = ops.into_iter().collect();
            if let Err(e) = self.nb.transact(&txn).await {
                // Nothing was applied: forget the bookkeeping of this batch and retry each.
                (self.owned, self.vip_owner) = saved;
                let e = format!("{e:#}");
                self.outage.failed(changed.len(), &e);
                for (k, _) in &changed {
                    let (attempt, delay) = self.retry.failed(k);
                    tracing::debug!(service = %k, attempt, retry_in = ?delay, error = %e, "programming load balancer VIPs failed; will retry");
                }
                return;
            }
            self.outage.succeeded();
            for (k, n) in &changed {
                tracing::info!(service = %k, vips = n, "load balancer VIPs programmed");
            }
        }
        for k in keys.iter().filter(|k| !still_missing.contains(*k)) {
            self.retry.forget(k);
        }
    }

    /// The NB lost everything: no VIP is owned any more, nothing waits for a retry (the full
    /// sync that follows covers every service).
    fn forget_programmed(&mut self) {
        self.owned.clear();
        self.vip_owner.clear();
        self.retry = Retries::with_policy(RETRY);
        self.targets = LbTargets::default();
    }

    /// Book `want` as what `key` owns now (replacing `have`).
    fn record(&mut self, key: &str, have: &VipMap, want: VipMap) {
        for k in have.keys() {
            if self.vip_owner.get(k).map(String::as_str) == Some(key) {
                self.vip_owner.remove(k);
            }
        }
        for k in want.keys() {
            self.vip_owner.insert(k.clone(), key.to_string());
        }
        if want.is_empty() {
            self.owned.remove(key);
        } else {
            self.owned.insert(key.to_string(), want);
        }
    }

    /// First full pass: remove every VIP no service wants (services deleted while we were
    /// down), program the rest, in one transaction.
    async fn initial_sync(&mut self) -> Result<()> {
        let st = read_targets(self.nb.as_ref(), false).await?;
        self.targets = st.targets;
        self.switches = st.switches;
        let mut keys: Vec<String> = self.services.keys().cloned().collect();
        keys.sort();
        // Load balancers services need that are not there yet: created together, then the
        // VIPs are computed against them.
        let mut missing = BTreeSet::new();
        for k in &keys {
            missing.extend(self.desired(k).missing);
        }
        if !missing.is_empty() {
            self.create_lbs(&missing).await?;
        }
        let actual = read_targets(self.nb.as_ref(), true).await?.actual;
        let attach = vips::attach_ops(&self.targets, &self.switches);
        let mut all = VipMap::new();
        let mut per: HashMap<String, VipMap> = HashMap::new();
        for k in keys {
            let mut want = self.desired(&k).vips;
            want.retain(|v, _| !all.contains_key(v));
            all.extend(want.iter().map(|(a, b)| (a.clone(), b.clone())));
            per.insert(k, want);
        }
        let mut ops = vips::diff_ops(&actual, &all);
        ops.extend(attach);
        let removed = actual.keys().filter(|k| !all.contains_key(*k)).count();
        if !ops.is_empty() {
            let txn: NbTxn = ops.into_iter().collect();
            self.nb
                .transact(&txn)
                .await
                .context("initial load balancer sync")?;
        }
        for (k, want) in per {
            for v in want.keys() {
                self.vip_owner.insert(v.clone(), k.clone());
            }
            if !want.is_empty() {
                self.owned.insert(k, want);
            }
        }
        tracing::info!(
            services = self.services.len(),
            vips = all.len(),
            stale_removed = removed,
            "initial service sync done"
        );
        Ok(())
    }

    /// Re-read gateways and cluster LBs; when they changed, reconcile every service.
    async fn rescan(&mut self) {
        let st = match read_targets(self.nb.as_ref(), false).await {
            Ok(st) => st,
            Err(e) => {
                let e = format!("{e:#}");
                self.outage.failed(1, &e);
                tracing::debug!(error = %e, "rescanning load balancers failed");
                return;
            }
        };
        // The NB answers again (a VIP that still fails re-reports itself).
        self.outage.succeeded();
        self.switches = st.switches;
        let mut attach = vips::attach_ops(&st.targets, &self.switches);
        attach.extend(
            st.orphans
                .iter()
                .map(|lb| crate::ovn::NbOp::LbDel { lb: lb.clone() }),
        );
        if !attach.is_empty() {
            let txn: NbTxn = attach.into_iter().collect();
            match self.nb.transact(&txn).await {
                Ok(_) => tracing::info!(
                    ops = txn.len(),
                    "service load balancers attached to node switches / orphans removed"
                ),
                Err(e) => {
                    let e = format!("{e:#}");
                    self.outage.failed(1, &e);
                    tracing::debug!(error = %e, "attaching service load balancers to node switches failed; will retry")
                }
            }
        }
        let targets = st.targets;
        if targets != self.targets {
            {
                tracing::info!(
                    gateways = targets.gateways.len(),
                    "load balancer targets changed; reconciling services"
                );
                // VIPs on load balancers that disappeared vanish with them.
                let live: std::collections::BTreeSet<String> =
                    targets.all_uuids().into_iter().collect();
                for owned in self.owned.values_mut() {
                    owned.retain(|(lb, _), _| live.contains(lb));
                }
                self.vip_owner.retain(|(lb, _), _| live.contains(lb));
                self.targets = targets;
                let mut keys: Vec<String> = self.services.keys().cloned().collect();
                keys.sort();
                for chunk in keys.chunks(MAX_BATCH) {
                    self.reconcile_keys(chunk).await;
                }
            }
        }
    }

    async fn retry_due(&mut self) {
        let due = self.retry.due(Instant::now());
        for chunk in due.chunks(MAX_BATCH) {
            self.reconcile_keys(chunk).await;
        }
    }

    pub async fn run(
        mut self,
        client: kube::Client,
        informers: crate::kube::Informers,
        cancel: CancellationToken,
    ) -> Result<()> {
        self.events = Some(crate::kube::events::Events::new(
            client.clone(),
            crate::kube::events::NET_CONTROLLER,
        ));
        let Some(source) = discover_source(&client, &cancel).await else {
            return Ok(());
        };
        tracing::info!(source = ?source, "service endpoints source chosen");
        // List, then follow: the complete lists first, so the initial sync removes only VIPs
        // that no service wants.
        let mut svcs = informers.watch::<Service>();
        let Some((ep_list, mut eps)) = listed(&cancel, list_endpoints(&informers, source)).await?
        else {
            return Ok(());
        };
        let Some(list) = listed(&cancel, svcs.initial_list()).await? else {
            return Ok(());
        };
        Change::additions(list).into_iter().for_each(|ch| {
            self.service_changed(ch);
        });
        ep_list.into_iter().for_each(|ch| {
            self.endpoints_changed(ch);
        });
        let mut ready = false;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut signals = self.nb.signals();
        let mut epoch = *signals.borrow();
        loop {
            let changed: Vec<String> = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                now = next_change(&mut signals) => {
                    let before = std::mem::replace(&mut epoch, now);
                    if ready {
                        ready = self.on_nb_epoch(now.database != before.database).await;
                    }
                    vec![]
                }
                // Also drives the retry of a failed initial sync.
                _ = tick.tick() => {
                    if ready {
                        self.rescan().await;
                        self.retry_due().await;
                    }
                    vec![]
                }
                ch = svcs.next() => match ch {
                    Some(ch) => self.service_changed(ch),
                    None => anyhow::bail!("service watch ended"),
                },
                ch = eps.next() => match ch {
                    Some(ch) => self.endpoints_changed(ch),
                    None => anyhow::bail!("endpoints watch ended"),
                },
            };
            if !ready {
                ready = self.try_initial_sync().await;
            } else if !changed.is_empty() {
                let keys = self.gather(changed, &mut svcs, &mut eps)?;
                self.reconcile_keys(&keys).await;
            }
        }
    }

    /// A service changed: the keys to reconcile.
    fn service_changed(&mut self, ch: Change<Service>) -> Vec<String> {
        match ch {
            Change::Apply { new, .. } => {
                let k = key(new.as_ref());
                self.services.insert(k.clone(), new);
                vec![k]
            }
            Change::Delete(old) => {
                let k = key(old.as_ref());
                self.services.remove(&k);
                vec![k]
            }
            Change::Synced => vec![],
        }
    }

    /// The NB reconnected (`new_database`: as a new database). Returns whether the
    /// controller is still synced: after a new database everything booked as programmed is
    /// gone, so it syncs from scratch as at start-up (the master re-creates the cluster load
    /// balancers).
    async fn on_nb_epoch(&mut self, new_database: bool) -> bool {
        if new_database {
            tracing::info!(
                services = self.services.len(),
                "new NB database: programming every service again"
            );
            self.forget_programmed();
            return false;
        }
        let waiting = self.retry.retry_all_now(Instant::now());
        tracing::debug!(waiting, "NB back: retrying services now");
        self.rescan().await;
        self.retry_due().await;
        true
    }

    /// [`ServiceController::initial_sync`]; a failure is logged and retried by the caller
    /// (at the next tick or event). Returns whether it worked.
    async fn try_initial_sync(&mut self) -> bool {
        if let Err(e) = self.initial_sync().await {
            let e = format!("{e:#}");
            self.outage.failed(self.services.len(), &e);
            tracing::debug!(error = %e, "initial service sync failed; retrying");
            return false;
        }
        self.outage.succeeded();
        if let Some(p) = self.ready_signal.take() {
            p.done();
        }
        true
    }

    /// The keys of `changed` plus whatever else is already waiting in the streams, so that a
    /// burst is one transaction (at most [`MAX_BATCH`] services).
    fn gather(
        &mut self,
        changed: Vec<String>,
        svcs: &mut Watch<Service>,
        eps: &mut EpStream,
    ) -> Result<Vec<String>> {
        let mut keys: BTreeSet<String> = changed.into_iter().collect();
        while keys.len() < MAX_BATCH {
            let (s, e) = (svcs.next().now_or_never(), eps.next().now_or_never());
            if s.is_none() && e.is_none() {
                break;
            }
            match s {
                Some(Some(ch)) => keys.extend(self.service_changed(ch)),
                Some(None) => anyhow::bail!("service watch ended"),
                None => {}
            }
            match e {
                Some(Some(ch)) => keys.extend(self.endpoints_changed(ch)),
                Some(None) => anyhow::bail!("endpoints watch ended"),
                None => {}
            }
        }
        Ok(keys.into_iter().collect())
    }
}

/// The endpoints watch, whichever API it follows.
type EpStream = futures::stream::BoxStream<'static, EpChange>;

/// The complete list of `source`'s objects, as additions, and the stream of what follows.
async fn list_endpoints(
    informers: &crate::kube::Informers,
    source: Source,
) -> Result<(Vec<EpChange>, EpStream)> {
    Ok(match source {
        Source::Slices => {
            let mut w = informers.watch::<EndpointSlice>();
            let list = Change::additions(w.initial_list().await?);
            let list = list.into_iter().map(EpChange::Slice).collect();
            (list, w.map(EpChange::Slice).boxed())
        }
        Source::Endpoints => {
            let mut w = informers.watch::<Endpoints>();
            let list = Change::additions(w.initial_list().await?);
            let list = list.into_iter().map(EpChange::Endpoints).collect();
            (list, w.map(EpChange::Endpoints).boxed())
        }
    })
}

/// An event from whichever endpoints API is watched.
enum EpChange {
    Slice(Change<EndpointSlice>),
    Endpoints(Change<Endpoints>),
}
