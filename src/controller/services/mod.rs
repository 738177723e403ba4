//! Services and endpoints → OVN load balancers (`-net-controller`; NodePorts with `-nodeport`).
//!
//! One task owns the VIP bookkeeping. Every service or endpoints event recomputes that
//! service's full VIP set (`vips::service_vips`) and applies the difference in one NB
//! transaction. Gateway routers appear when nodes initialise their gateways, so the load
//! balancer targets are re-read periodically and every service is reconciled when they change.

pub mod validate;
pub mod vips;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::runtime::watcher;

use crate::kube::{Change, informer, key};
use crate::ovn::{Nb, NbTxn, Query};
use crate::util::cancel::CancelToken;
use crate::util::retry::Retries;
use vips::{Gateway, LbTargets, Proto, VipMap};

/// Read the load balancers this controller programs, and the VIPs they hold now.
pub async fn read_targets(nb: &dyn Nb) -> Result<(LbTargets, VipMap)> {
    let t = nb
        .query(&[
            Query::list(
                "Load_Balancer",
                &["name", "protocol", "external_ids", "vips"],
            ),
            Query::list("Logical_Router", &["name", "external_ids", "options"]),
        ])
        .await
        .context("reading load balancers and gateway routers")?;
    let (lbs, routers) = (&t[0], &t[1]);
    let mut targets = LbTargets::default();
    for lb in lbs {
        for p in Proto::ALL {
            if lb
                .map_get("external_ids", &format!("k8s-cluster-lb-{}", p.lower()))
                .as_deref()
                == Some("yes")
            {
                targets.cluster.entry(p).or_insert_with(|| lb.uuid.clone());
            }
        }
    }
    for r in routers {
        let name = r.str("name");
        let Some(ip) = r
            .map_get("external_ids", "physical_ip")
            .and_then(|ip| ip.parse().ok())
        else {
            continue;
        };
        let mut g = Gateway {
            router: name.clone(),
            physical_ip: ip,
            lbs: BTreeMap::new(),
        };
        for lb in lbs {
            for p in Proto::ALL {
                let k = format!("{}_lb_gateway_router", p.upper());
                if lb.map_get("external_ids", &k).as_deref() == Some(name.as_str()) {
                    g.lbs.entry(p).or_insert_with(|| lb.uuid.clone());
                }
            }
        }
        targets.gateways.push(g);
    }
    targets.gateways.sort_by(|a, b| a.router.cmp(&b.router));
    let owned: std::collections::BTreeSet<String> = targets.all_uuids().into_iter().collect();
    let mut actual = VipMap::new();
    for lb in lbs.iter().filter(|lb| owned.contains(&lb.uuid)) {
        for (vip, backends) in lb.map("vips") {
            actual.insert((lb.uuid.clone(), vip), backends);
        }
    }
    Ok((targets, actual))
}

pub struct ServiceController {
    nb: Arc<dyn Nb>,
    nodeport: bool,
    services: HashMap<String, Arc<Service>>,
    endpoints: HashMap<String, Arc<Endpoints>>,
    targets: LbTargets,
    /// VIPs each service owns in OVN, as last programmed.
    owned: HashMap<String, VipMap>,
    /// Reverse index: which service holds a VIP.
    vip_owner: HashMap<(String, String), String>,
    warned: HashMap<String, Vec<String>>,
    retry: Retries,
    /// Reported once the initial service/endpoints lists have been programmed.
    ready_signal: Option<crate::util::ready::Pending>,
    /// Networks Service-supplied addresses must stay out of.
    reserved: validate::Reserved,
    /// For Events on Services (set by `run`).
    events: Option<crate::kube::events::Events>,
}

impl ServiceController {
    pub fn new(nb: Arc<dyn Nb>, nodeport: bool) -> Self {
        ServiceController {
            nb,
            nodeport,
            services: HashMap::new(),
            endpoints: HashMap::new(),
            targets: LbTargets::default(),
            owned: HashMap::new(),
            vip_owner: HashMap::new(),
            warned: HashMap::new(),
            retry: Retries::new(Duration::from_millis(500), Duration::from_secs(30)),
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

    fn desired(&mut self, key: &str) -> VipMap {
        let Some(svc) = self.services.get(key).cloned() else {
            self.warned.remove(key);
            return VipMap::new();
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
        d.vips
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

    /// Bring one service's VIPs to the desired set in one transaction.
    async fn reconcile(&mut self, key: &str) {
        let mut want = self.desired(key);
        want.retain(|k, _| match self.vip_owner.get(k) {
            Some(other) if other != key => {
                tracing::warn!(service = %key, vip = %k.1, owner = %other, "VIP already served by another service; skipped");
                false
            }
            _ => true,
        });
        let have = self.owned.get(key).cloned().unwrap_or_default();
        let ops = vips::diff_ops(&have, &want);
        if !ops.is_empty() {
            let mut txn = NbTxn::new();
            txn.extend(ops);
            if let Err(e) = self.nb.transact(&txn).await {
                let (attempt, delay) = self.retry.failed(key);
                tracing::warn!(service = %key, attempt, retry_in = ?delay, error = %format!("{e:#}"), "programming load balancer VIPs failed; will retry");
                return;
            }
            tracing::info!(service = %key, vips = want.len(), "load balancer VIPs programmed");
        }
        self.retry.forget(key);
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
        let (targets, actual) = read_targets(self.nb.as_ref()).await?;
        self.targets = targets;
        let mut keys: Vec<String> = self.services.keys().cloned().collect();
        keys.sort();
        let mut all = VipMap::new();
        let mut per: HashMap<String, VipMap> = HashMap::new();
        for k in keys {
            let mut want = self.desired(&k);
            want.retain(|v, _| !all.contains_key(v));
            all.extend(want.iter().map(|(a, b)| (a.clone(), b.clone())));
            per.insert(k, want);
        }
        let ops = vips::diff_ops(&actual, &all);
        let removed = actual.keys().filter(|k| !all.contains_key(*k)).count();
        if !ops.is_empty() {
            let mut txn = NbTxn::new();
            txn.extend(ops);
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
        match read_targets(self.nb.as_ref()).await {
            Ok((targets, _)) if targets != self.targets => {
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
                for k in keys {
                    self.reconcile(&k).await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "rescanning load balancers failed")
            }
        }
    }

    async fn retry_due(&mut self) {
        for k in self.retry.due(Instant::now()) {
            self.reconcile(&k).await;
        }
    }

    pub async fn run(mut self, client: kube::Client, mut cancel: CancelToken) -> Result<()> {
        self.events = Some(crate::kube::events::Events::new(
            client.clone(),
            crate::kube::events::NET_CONTROLLER,
        ));
        let mut svcs = informer(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .boxed();
        let mut eps = informer(Api::<Endpoints>::all(client), watcher::Config::default()).boxed();
        let (mut svc_synced, mut eps_synced, mut ready) = (false, false, false);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let key_changed = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                // Also drives the retry of a failed initial sync.
                _ = tick.tick(), if svc_synced && eps_synced => {
                    if ready {
                        self.rescan().await;
                        self.retry_due().await;
                    }
                    None
                }
                ch = svcs.next() => match ch {
                    Some(Change::Apply { new, .. }) => { let k = key(new.as_ref()); self.services.insert(k.clone(), new); Some(k) }
                    Some(Change::Delete(old)) => { let k = key(old.as_ref()); self.services.remove(&k); Some(k) }
                    Some(Change::Synced) => { svc_synced = true; None }
                    None => anyhow::bail!("service watch ended"),
                },
                ch = eps.next() => match ch {
                    Some(Change::Apply { new, .. }) => { let k = key(new.as_ref()); self.endpoints.insert(k.clone(), new); Some(k) }
                    Some(Change::Delete(old)) => { let k = key(old.as_ref()); self.endpoints.remove(&k); Some(k) }
                    Some(Change::Synced) => { eps_synced = true; None }
                    None => anyhow::bail!("endpoints watch ended"),
                },
            };
            if !ready && svc_synced && eps_synced {
                if let Err(e) = self.initial_sync().await {
                    tracing::warn!(error = %format!("{e:#}"), "initial service sync failed; retrying");
                    continue;
                }
                ready = true;
                if let Some(p) = self.ready_signal.take() {
                    p.done();
                }
                continue;
            }
            if ready && let Some(k) = key_changed {
                self.reconcile(&k).await;
            }
        }
    }
}
