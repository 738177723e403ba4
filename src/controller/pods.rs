//! The pod controller: one logical switch port per served pod, its address decided here (not
//! by northd), written in the same NB transaction as the port, then the `ovn` annotation.
//!
//! Tasks:
//! - the dispatcher (this module's `run`) owns the informers, does the start-up sync and routes
//!   pod events to the worker of the pod's node; pods of a node whose subnet is not known yet
//!   are parked until it is;
//! - one worker per node owns that node's allocator (single writer) and its pods' state, so
//!   events of one pod are handled in order and nodes proceed in parallel;
//! - one NB batcher coalesces the requests of all workers into one `ovn-nbctl` transaction
//!   while the previous one runs: with the exec backend an invocation costs about as much as
//!   loading the NB database, so fewer, larger transactions are what scales.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use super::ipam::Ipam;
use super::pods_plan::{
    Blocked, Claim, Entry, PortRow, PortState, after_new_database, claim, delete_ops,
    pod_annotation, pod_node, pod_ns, port_ops, rebuild, stale_ports,
};
use crate::kube::annotations::{HOST_SUBNET, POD_NETWORK, PodNetwork, parse_host_subnet};
use crate::kube::{Change, events, key};
use crate::ovn::names::{pod_port, pod_port_of_key};
use crate::ovn::schema::{col, nb};
use crate::ovn::signals::{NbEpoch, NbSignals, next_change};
use crate::ovn::{ColVal, Nb, NbOp, NbTxn, Query};
use crate::util::retry::{self, Outage, Policy, Retries};
use tokio_util::sync::CancellationToken;

/// Commands per coalesced NB transaction (about 3 per pod).
const MAX_PORT_TXN_OPS: usize = 3000;
/// Pods one worker handles per round.
const MAX_ROUND: usize = 1000;
/// Concurrent annotation patches, all workers together.
const PATCH_SLOTS: usize = 32;
/// After this many failed attempts a pod's transaction runs alone, so one bad pod cannot keep
/// failing the batches of the others.
const ALONE_AFTER: u32 = 2;

/// How often a worker looks again for its node switch (the master creates it): 200 ms
/// doubling to 1.6 s.
const SWITCH_POLL: Policy = Policy::new(Duration::from_millis(200), Duration::from_millis(1600));

/// One request to the NB batcher: commands that must run in one transaction.
struct NbReq {
    ops: Vec<NbOp>,
    /// Run in a transaction of its own.
    alone: bool,
    done: oneshot::Sender<Result<(), String>>,
}

/// Coalesce queued requests into one transaction at a time; every request learns the result.
async fn nb_batcher(nb: Arc<dyn Nb>, mut rx: mpsc::UnboundedReceiver<NbReq>) {
    let mut pending: VecDeque<NbReq> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => pending.push_back(r),
                None => return,
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.push_back(r);
        }
        let mut batch = Vec::new();
        let mut n = 0;
        while let Some(r) = pending.front() {
            if !batch.is_empty() && (r.alone || n + r.ops.len() > MAX_PORT_TXN_OPS) {
                break;
            }
            let alone = r.alone;
            n += r.ops.len();
            batch.extend(pending.pop_front());
            if alone {
                break;
            }
        }
        let mut txn = NbTxn::new();
        for r in &batch {
            txn.extend(r.ops.iter().cloned());
        }
        let started = std::time::Instant::now();
        let res = nb
            .transact(&txn)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        tracing::debug!(requests = batch.len(), commands = n, elapsed = ?started.elapsed(), ok = res.is_ok(), "NB transaction");
        for r in batch {
            let _ = r.done.send(res.clone());
        }
    }
}

/// Which pods have a logical port, for the policy controller: a port group may only name
/// ports that exist, and only this controller knows when they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// The pod's port exists with this address (`pod` is `<ns>/<name>`).
    Up {
        pod: String,
        port: String,
        ip: std::net::Ipv4Addr,
    },
    /// The pod's port was deleted.
    Down { pod: String, port: String },
}

/// What every worker shares.
struct Shared {
    nb: Arc<dyn Nb>,
    nb_tx: mpsc::UnboundedSender<NbReq>,
    client: kube::Client,
    events: events::Events,
    patch_slots: Semaphore,
    port_events: Option<mpsc::UnboundedSender<PortEvent>>,
    /// The NB as all workers see it: an outage is logged once, not per pod and attempt (the
    /// API server's is `kube::outage`, shared with the rest of the process).
    nb_outage: std::sync::Mutex<Outage>,
}

/// Reports `objects` failures to `outage` (which logs the start of an outage once); the
/// caller logs each object at DEBUG.
fn note_failure(outage: &std::sync::Mutex<Outage>, objects: usize, error: &str) {
    if let Ok(mut o) = outage.lock() {
        o.failed(objects, error);
    }
}

fn note_success(outage: &std::sync::Mutex<Outage>) {
    if let Ok(mut o) = outage.lock() {
        o.succeeded();
    }
}

impl Shared {
    fn port_event(&self, ev: PortEvent) {
        if let Some(tx) = &self.port_events {
            // The receiver only goes away at shutdown.
            let _ = tx.send(ev);
        }
    }

    async fn transact(&self, ops: Vec<NbOp>, alone: bool) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.nb_tx
            .send(NbReq { ops, alone, done })
            .map_err(|_| "the NB batcher stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the NB batcher stopped".to_string()))
    }
}

enum Msg {
    Apply(Arc<Pod>),
    Delete(Arc<Pod>),
}

/// The outcome of one NB request as every pod of it learns it.
type NbResult = Result<(), String>;

/// One NB request of a round: the commands of `keys`, in a transaction of their own or not.
#[derive(Default)]
struct PortRequest {
    keys: Vec<String>,
    ops: Vec<NbOp>,
    alone: bool,
}

/// What one round decided, before any I/O: the pods sharing the batch, the lone retries, the
/// port deletions and the pods that only need their annotation.
#[derive(Default)]
struct RoundPlan {
    batch: PortRequest,
    lone: Vec<PortRequest>,
    dels: HashSet<String>,
    to_patch: Vec<String>,
}

impl RoundPlan {
    /// `k`'s commands join the batch, or run alone after [`ALONE_AFTER`] failed attempts.
    fn add(&mut self, k: String, ops: Vec<NbOp>, alone: bool) {
        if alone {
            self.lone.push(PortRequest {
                keys: vec![k],
                ops,
                alone: true,
            });
        } else {
            self.batch.keys.push(k);
            self.batch.ops.extend(ops);
        }
    }

    /// The requests (the batch first, if any), the deleting keys, the pods to annotate.
    fn into_parts(self) -> (Vec<PortRequest>, HashSet<String>, Vec<String>) {
        let mut requests = Vec::with_capacity(1 + self.lone.len());
        if !self.batch.keys.is_empty() {
            requests.push(self.batch);
        }
        requests.extend(self.lone);
        (requests, self.dels, self.to_patch)
    }
}

/// The pods of one node.
struct Worker {
    node: String,
    ipam: Ipam,
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Keys whose last attempt failed: when to try again and how many attempts so far.
    retry: Retries,
    /// Blocked pods to look at again when an address is released.
    waiting: HashSet<String>,
    /// The master has created the node switch (ports cannot be added before).
    switch_ready: bool,
    switch_check: (Instant, u32),
    shared: Arc<Shared>,
    /// The NB connection's reconnections and database replacements.
    signals: NbSignals,
    epoch: NbEpoch,
}

fn rv(pod: &Pod) -> Option<u64> {
    pod.metadata.resource_version.as_deref()?.parse().ok()
}

impl Worker {
    fn enqueue(&mut self, key: &str) {
        if self.queued.insert(key.to_string()) {
            self.queue.push_back(key.to_string());
        }
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Apply(pod) => self.on_apply(pod),
            Msg::Delete(pod) => {
                let k = key(pod.as_ref());
                if let Some(e) = self.entries.get_mut(&k) {
                    e.pod = None;
                    e.blocked = None;
                    self.waiting.remove(&k);
                    self.enqueue(&k);
                }
            }
        }
    }

    fn on_apply(&mut self, pod: Arc<Pod>) {
        let k = key(pod.as_ref());
        let Some(e) = self.entries.get_mut(&k) else {
            self.entries.insert(k.clone(), Entry::new(pod));
            self.enqueue(&k);
            return;
        };
        let ann = pod_annotation(&pod).map(str::to_string);
        let same_pod = e.pod.as_ref().is_some_and(|o| o.uid() == pod.uid());
        let old_ann = e
            .pod
            .as_ref()
            .and_then(|o| pod_annotation(o).map(str::to_string));
        let ours = |net: &PodNetwork, v: &str| {
            PodNetwork::parse_for_node(v, self.ipam.addrs()).as_ref() == Ok(net)
        };
        if !same_pod {
            // Re-created under the same name: keep the address when the new pod does not ask
            // for another one, otherwise remove the old port first.
            let keep = match (&e.net, &ann) {
                (Some(_), None) => true,
                (Some(net), Some(v)) => ours(net, v),
                (None, _) => false,
            };
            if e.net.is_some() && !keep {
                e.redo = true;
            }
            e.annotated = keep && ann.is_some();
            e.patched_rv = None;
            e.blocked = None;
            e.pod = Some(pod);
            self.waiting.remove(&k);
            self.enqueue(&k);
            return;
        }
        let newer_than_patch = match (rv(&pod), e.patched_rv) {
            (Some(a), Some(b)) => a > b,
            (_, None) => true,
            _ => false,
        };
        e.pod = Some(pod);
        if e.blocked.is_some() {
            if ann != old_ann {
                self.enqueue(&k);
            }
            return;
        }
        let Some(net) = e.net.clone() else { return };
        match ann {
            Some(v) if ours(&net, &v) => e.annotated = true,
            // Removed by someone after we wrote it: write it again (the pod keeps its address).
            None if newer_than_patch && e.annotated => {
                e.annotated = false;
                self.enqueue(&k);
            }
            // Edited by someone: the controller owns the annotation, and the CNI would set up
            // whatever it says; write back what the logical port carries.
            Some(v) if newer_than_patch && old_ann.as_deref() != Some(v.as_str()) => {
                tracing::warn!(pod = %k, annotation = %v, ip = %net.ip, mac = %net.mac,
                    "the {POD_NETWORK} annotation of a served pod was changed; restoring it from its logical port (delete and re-create the pod to change its address)");
                e.annotated = false;
                self.enqueue(&k);
            }
            None | Some(_) => {}
        }
    }

    /// One pod's failure (the outage it belongs to was reported by the caller): a DEBUG line
    /// and a retry after the pod's own backoff.
    fn fail(&mut self, k: &str, what: &str, err: &str) {
        let (attempts, delay) = self.retry.failed(k);
        let _g = tracing::info_span!("pod", pod = %k).entered();
        tracing::debug!(node = %self.node, attempt = attempts, retry_in = ?delay, error = %err, "{what} failed; will retry");
        self.enqueue(k);
    }

    fn due(&self, k: &str, now: Instant) -> bool {
        self.retry.ready(k, now.into_std())
    }

    fn next_wakeup(&self) -> Option<Instant> {
        if !self.switch_ready {
            return Some(self.switch_check.0);
        }
        self.queue
            .iter()
            .filter_map(|k| self.retry.retry_at(k.as_str()).map(Instant::from_std))
            .min()
    }

    fn has_ready(&self, now: Instant) -> bool {
        self.switch_ready && self.queue.iter().any(|k| self.due(k, now))
    }

    /// Report (log + Event) why a pod is not served, once per distinct reason.
    fn block(&mut self, k: &str, b: Blocked) {
        let Some(e) = self.entries.get_mut(k) else {
            return;
        };
        let retry = match &b {
            Blocked::BadAnnotation {
                retry_on_release, ..
            } => *retry_on_release,
            Blocked::SubnetFull => true,
        };
        if retry {
            self.waiting.insert(k.to_string());
        }
        if e.blocked.as_ref() == Some(&b) {
            return;
        }
        e.blocked = Some(b.clone());
        let (reason, msg) = match &b {
            Blocked::BadAnnotation { value, why, .. } => (
                "InvalidPodNetworkAnnotation",
                format!(
                    "pod {k}: its {POD_NETWORK} annotation {value:?} cannot be used: {why}; the pod is not \
                     served and the annotation is left unchanged; remove the annotation to have an \
                     address allocated"
                ),
            ),
            Blocked::SubnetFull => (
                "PodSubnetFull",
                format!(
                    "pod {k}: no free address in subnet {} of node {} (all {} pod addresses are in use); \
                     the pod will be served when an address on this node is released",
                    self.ipam.subnet(),
                    self.node,
                    self.ipam.capacity()
                ),
            ),
        };
        {
            let _g = tracing::info_span!("pod", pod = %k).entered();
            tracing::error!(node = %self.node, "{msg}");
        }
        if let Some(pod) = e.pod.clone() {
            let ev = self.shared.events.clone();
            tokio::spawn(async move {
                ev.warn(pod.as_ref(), "AllocatePodAddress", reason, &msg)
                    .await;
            });
        }
    }

    fn release(&mut self, net: &PodNetwork) {
        self.ipam.release(net.ip);
        // Room may have appeared for pods that were waiting.
        let waiting: Vec<String> = self.waiting.drain().collect();
        for w in waiting {
            self.enqueue(&w);
        }
    }

    async fn check_switch(&mut self) {
        let q = [Query::find(
            nb::LOGICAL_SWITCH,
            &[col::NAME],
            vec![ColVal::set(col::NAME, self.node.as_str())],
        )];
        match self.shared.nb.query(&q).await {
            Ok(t) if t.first().is_some_and(|rows| !rows.is_empty()) => {
                note_success(&self.shared.nb_outage);
                self.switch_ready = true;
                tracing::debug!(node = %self.node, "node switch present");
            }
            res => {
                let attempts = self.switch_check.1 + 1;
                if let Err(e) = res {
                    let e = format!("{e:#}");
                    note_failure(&self.shared.nb_outage, 1, &e);
                    tracing::debug!(node = %self.node, error = %e, "cannot read the node switch; will retry");
                } else {
                    note_success(&self.shared.nb_outage);
                }
                let delay = SWITCH_POLL.delay(attempts);
                self.switch_check = (Instant::now() + delay, attempts);
            }
        }
    }

    /// One round: take the due pods, decide, run one NB request (plus lone retries), patch.
    async fn round(&mut self) {
        let mut plan = RoundPlan::default();
        for k in self.take_due(Instant::now()) {
            self.plan_pod(k, &mut plan);
        }
        let (requests, dels, mut to_patch) = plan.into_parts();
        for (keys, res) in self.run_requests(requests).await {
            self.on_port_result(keys, &res, &dels, &mut to_patch);
        }
        let results = self.annotate_all(to_patch).await;
        self.on_annotated(results);
    }

    /// Takes up to [`MAX_ROUND`] keys whose retry time has come off the queue; the others keep
    /// their place.
    fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut keys = Vec::new();
        let mut later = Vec::new();
        while let Some(k) = self.queue.pop_front() {
            if keys.len() >= MAX_ROUND {
                self.queue.push_front(k);
                break;
            }
            if self.due(&k, now) {
                self.queued.remove(&k);
                keys.push(k);
            } else {
                later.push(k);
            }
        }
        for k in later.into_iter().rev() {
            self.queue.push_front(k);
        }
        keys
    }

    /// What one pod needs this round: its old port deleted, an address, its port written, or
    /// only its annotation.
    fn plan_pod(&mut self, k: String, plan: &mut RoundPlan) {
        let alone = self.retry.attempts(&k) >= ALONE_AFTER;
        let Some(e) = self.entries.get(&k) else {
            return;
        };
        let Some(pod) = e.pod.clone().filter(|_| !e.redo) else {
            // Deleted (or re-created with another address): the old port goes first.
            return self.plan_delete(k, alone, plan);
        };
        if !self.ensure_address(&k, &pod) {
            return;
        }
        let Some(e) = self.entries.get(&k) else {
            return;
        };
        let Some(net) = e.net.clone() else { return };
        if e.port != PortState::Synced {
            if let Some(ops) = self.checked_port_ops(&k, &pod, &net) {
                plan.add(k, ops, alone);
            }
        } else if !e.annotated {
            plan.to_patch.push(k);
        }
    }

    /// The port of a deleted (or re-addressed) pod: deleted this round, or already absent.
    fn plan_delete(&mut self, k: String, alone: bool, plan: &mut RoundPlan) {
        let Some(e) = self.entries.get(&k) else {
            return;
        };
        if e.port == PortState::Absent {
            self.finish_delete(&k);
            return;
        }
        let port = match &e.pod {
            Some(p) => pod_port(&pod_ns(p), &p.name_any()),
            None => pod_port_of_key(&k),
        };
        plan.dels.insert(k.clone());
        plan.add(k, delete_ops(&port), alone);
    }

    /// Gives the pod an address (its annotation's, or a free one) unless it holds one; false
    /// when it cannot be served now (reported once by [`Worker::block`]).
    fn ensure_address(&mut self, k: &str, pod: &Pod) -> bool {
        let Some(e) = self.entries.get_mut(k) else {
            return false;
        };
        if e.net.is_some() {
            return true;
        }
        let (net, annotated) = match claim(&mut self.ipam, pod) {
            Claim::Annotated(net) => (net, true),
            Claim::Allocated(net) => (net, false),
            Claim::Rejected {
                value,
                why,
                retry_on_release,
            } => {
                let b = Blocked::BadAnnotation {
                    value,
                    why,
                    retry_on_release,
                };
                self.block(k, b);
                return false;
            }
            Claim::Full => {
                self.block(k, Blocked::SubnetFull);
                return false;
            }
        };
        e.net = Some(net);
        e.annotated = annotated;
        e.blocked = None;
        self.waiting.remove(k);
        true
    }

    /// The commands of the pod's port, unless they do not validate (never poison a batch).
    fn checked_port_ops(&self, k: &str, pod: &Pod, net: &PodNetwork) -> Option<Vec<NbOp>> {
        let ops = port_ops(&self.node, &pod_ns(pod), &pod.name_any(), net);
        let t: NbTxn = ops.iter().cloned().collect();
        let _g = tracing::info_span!("pod", pod = %k).entered();
        if let Err(err) = t.validate() {
            // Cannot happen with names the API server accepted.
            tracing::error!(error = %format!("{err:#}"), "pod {k} cannot get a logical port");
            return None;
        }
        tracing::debug!(node = %self.node, ip = %net.ip, mac = %net.mac, "adding logical port");
        Some(ops)
    }

    /// The round's NB requests, all concurrently: the batch and each lone retry.
    async fn run_requests(&self, requests: Vec<PortRequest>) -> Vec<(Vec<String>, NbResult)> {
        let shared = self.shared.clone();
        let results = futures::future::join_all(requests.into_iter().map(|r| {
            let shared = shared.clone();
            async move { (r.keys, shared.transact(r.ops, r.alone).await) }
        }))
        .await;
        for (keys, res) in &results {
            match res {
                Ok(()) => note_success(&self.shared.nb_outage),
                Err(err) => note_failure(&self.shared.nb_outage, keys.len(), err),
            }
        }
        results
    }

    /// One NB request's outcome for each of its pods; a pod whose port is now up and whose
    /// annotation is missing joins `to_patch`.
    fn on_port_result(
        &mut self,
        keys: Vec<String>,
        res: &NbResult,
        dels: &HashSet<String>,
        to_patch: &mut Vec<String>,
    ) {
        for k in keys {
            let deleting = dels.contains(&k);
            match res {
                Ok(()) if deleting => {
                    self.retry.forget(&k);
                    if let Some(e) = self.entries.get_mut(&k) {
                        e.port = PortState::Absent;
                    }
                    self.finish_delete(&k);
                }
                Ok(()) => {
                    self.retry.forget(&k);
                    if self.port_up(&k) {
                        to_patch.push(k);
                    }
                }
                Err(err) => {
                    let what = if deleting {
                        format!("deleting the logical port of pod {k}")
                    } else {
                        if let Some(e) = self.entries.get_mut(&k) {
                            // It may or may not have been applied: write it again next time.
                            e.port = PortState::Dirty;
                        }
                        format!("creating the logical port of pod {k}")
                    };
                    self.fail(&k, &what, err);
                }
            }
        }
    }

    /// The pod's port was written: tell the policy controller; true when the annotation is
    /// still to be written.
    fn port_up(&mut self, k: &str) -> bool {
        let Some(e) = self.entries.get_mut(k) else {
            return false;
        };
        e.port = PortState::Synced;
        if let Some(net) = &e.net {
            let _g = tracing::info_span!("pod", pod = %k).entered();
            tracing::info!(node = %self.node, ip = %net.ip, mac = %net.mac, "logical port ready");
            self.shared.port_event(PortEvent::Up {
                pod: k.to_string(),
                port: pod_port_of_key(k),
                ip: net.ip,
            });
        }
        !e.annotated
    }

    /// Annotations, concurrently (bounded across all workers); the API server's outage is
    /// reported as the whole process sees it.
    async fn annotate_all(&self, to_patch: Vec<String>) -> Vec<(String, Result<Option<u64>>)> {
        let jobs: Vec<_> = to_patch
            .into_iter()
            .filter_map(|k| {
                let e = self.entries.get(&k)?;
                Some((k, e.pod.clone()?, e.net.clone()?))
            })
            .collect();
        let shared = self.shared.clone();
        let results: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(k, pod, net)| {
            let shared = shared.clone();
            let span = tracing::info_span!("pod", pod = %k);
            async move {
                let res = annotate(&shared, &pod, &net).await;
                (k, res)
            }
            .instrument(span)
        }))
        .buffer_unordered(PATCH_SLOTS)
        .collect()
        .await;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        if let Some((_, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
            // One WARN per outage.
            crate::kube::outage::failed(failed, &format!("annotating pods: {e:#}"));
        } else if !results.is_empty() {
            crate::kube::outage::succeeded();
        }
        results
    }

    fn on_annotated(&mut self, results: Vec<(String, Result<Option<u64>>)>) {
        for (k, res) in results {
            match res {
                Ok(rv) => {
                    self.retry.forget(&k);
                    if let Some(e) = self.entries.get_mut(&k) {
                        e.annotated = true;
                        e.patched_rv = rv;
                    }
                }
                Err(err) => self.fail(&k, &format!("annotating pod {k}"), &format!("{err:#}")),
            }
        }
    }

    /// The old port is gone: free the address; drop the entry or serve the new incarnation.
    fn finish_delete(&mut self, k: &str) {
        let Some(e) = self.entries.get_mut(k) else {
            return;
        };
        let net = e.net.take();
        e.port = PortState::Absent;
        self.shared.port_event(PortEvent::Down {
            pod: k.to_string(),
            port: pod_port_of_key(k),
        });
        let gone = e.pod.is_none();
        if gone {
            self.entries.remove(k);
            self.retry.forget(k);
            self.waiting.remove(k);
            tracing::info!(pod = %k, node = %self.node, "pod removed");
        } else {
            e.redo = false;
            e.annotated = false;
            self.enqueue(k);
        }
        if let Some(net) = net {
            self.release(&net);
        }
    }

    /// The NB came back, or came back empty. Pending work waited for the NB, not for anything
    /// wrong with the pods: it is due now. A new database also lost every port: they are
    /// written again with their addresses once the master has re-created the node switch.
    fn on_nb_epoch(&mut self, now: NbEpoch) {
        let before = std::mem::replace(&mut self.epoch, now);
        if now.database != before.database {
            let todo = after_new_database(&mut self.entries);
            tracing::info!(node = %self.node, ports = todo.len(), "new NB database: writing the node's pod ports again");
            for k in &todo {
                self.enqueue(k);
            }
            self.switch_ready = false;
        }
        let waiting = self.retry.retry_all_now(std::time::Instant::now());
        self.switch_check = (Instant::now(), 0);
        tracing::debug!(node = %self.node, waiting, "NB back: retrying now");
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, cancel: CancellationToken) {
        loop {
            let now = Instant::now();
            if !self.switch_ready && self.switch_check.0 <= now {
                self.check_switch().await;
            }
            if !self.has_ready(Instant::now()) {
                let wake = self.next_wakeup();
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    m = rx.recv() => match m {
                        Some(m) => self.on_msg(m),
                        None => return,
                    },
                    ep = next_change(&mut self.signals) => self.on_nb_epoch(ep),
                    _ = tokio::time::sleep_until(wake.unwrap_or(now + Duration::from_secs(3600))), if wake.is_some() => {}
                }
            }
            // Everything queued meanwhile goes into this round.
            while let Ok(m) = rx.try_recv() {
                self.on_msg(m);
            }
            if self.has_ready(Instant::now()) {
                self.round().await;
            }
        }
    }
}

/// Write the `ovn` annotation; returns the pod's new resourceVersion. A pod deleted meanwhile
/// is not an error (its delete event follows).
async fn annotate(shared: &Shared, pod: &Pod, net: &PodNetwork) -> Result<Option<u64>> {
    let _slot = shared.patch_slots.acquire().await?;
    let (ns, name) = (pod_ns(pod), pod.name_any());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let patch =
        serde_json::json!({"metadata": {"annotations": {POD_NETWORK: net.to_annotation()}}});
    let (pp, merge) = (PatchParams::default(), Patch::Merge(&patch));
    let call = api.patch(&name, &pp, &merge);
    let timeout = crate::kube::outage::CALL_TIMEOUT;
    let Ok(res) = tokio::time::timeout(timeout, call).await else {
        bail!(
            "patching the {POD_NETWORK} annotation of pod {ns}/{name}: the API server did not answer within {timeout:?}"
        );
    };
    match res {
        Ok(p) => {
            tracing::info!(ip = %net.ip, "annotated pod {ns}/{name}");
            crate::metrics::get().pod_annotated(crate::metrics::creation_time(&pod.metadata));
            Ok(rv(&p))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e)
            .with_context(|| format!("patching the {POD_NETWORK} annotation of pod {ns}/{name}")),
    }
}

/// The dispatcher: informers, start-up sync, routing to node workers.
pub struct PodController {
    nb: Arc<dyn Nb>,
    client: kube::Client,
    port_events: Option<mpsc::UnboundedSender<PortEvent>>,
    /// Reported once the initial pod list has been dispatched and stale ports removed.
    ready: Option<crate::util::ready::Pending>,
}

struct Running {
    shared: Arc<Shared>,
    workers: HashMap<String, (Ipv4Net, mpsc::UnboundedSender<Msg>)>,
    /// Pods of nodes whose subnet is not known yet, by node.
    parked: HashMap<String, HashMap<String, Arc<Pod>>>,
    /// Pod ports read at start for nodes without a worker yet.
    ports: HashMap<String, HashMap<String, PortRow>>,
    /// Switches that existed at start.
    switches: HashSet<String>,
    tasks: tokio::task::JoinSet<()>,
    cancel: CancellationToken,
}

/// The node's subnet; none for a node the master refuses (its switch would be infrastructure,
/// so pods there must not get ports), whatever its annotation says.
fn node_subnet(node: &Node) -> Option<Ipv4Net> {
    if crate::ovn::names::reserved_node_name(&node.name_any()).is_some() {
        return None;
    }
    parse_host_subnet(node.annotations().get(HOST_SUBNET)?).ok()
}

impl Running {
    fn spawn_worker(&mut self, node: &str, subnet: Ipv4Net, pods: Vec<Arc<Pod>>) {
        let ports = self.ports.remove(node).unwrap_or_default();
        let r = rebuild(subnet, pods, &ports);
        let (tx, rx) = mpsc::unbounded_channel();
        let switch_ready = self.switches.contains(node);
        let mut w = Worker {
            node: node.to_string(),
            ipam: r.ipam,
            entries: r.entries,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            retry: Retries::with_policy(retry::PER_OBJECT),
            waiting: HashSet::new(),
            switch_ready,
            switch_check: (Instant::now(), 0),
            signals: self.shared.nb.signals(),
            epoch: NbEpoch::default(),
            shared: self.shared.clone(),
        };
        w.epoch = *w.signals.borrow();
        for k in &r.todo {
            w.enqueue(k);
        }
        for (k, e) in &w.entries {
            if let (PortState::Synced, Some(net)) = (e.port, &e.net) {
                self.shared.port_event(PortEvent::Up {
                    pod: k.clone(),
                    port: pod_port_of_key(k),
                    ip: net.ip,
                });
            }
        }
        tracing::info!(node, %subnet, pods = w.entries.len(), used = w.ipam.used(), "pod worker started");
        let cancel = self.cancel.clone();
        let span = tracing::info_span!("node", node = %node);
        self.tasks.spawn(w.run(rx, cancel).instrument(span));
        self.workers.insert(node.to_string(), (subnet, tx));
    }

    fn on_node(&mut self, node: &Node) {
        let name = node.name_any();
        let Some(subnet) = node_subnet(node) else {
            return;
        };
        match self.workers.get(&name) {
            None => {
                let pods = self
                    .parked
                    .remove(&name)
                    .map(|m| m.into_values().collect())
                    .unwrap_or_default();
                self.spawn_worker(&name, subnet, pods);
            }
            Some((held, _)) if *held != subnet => {
                tracing::error!(node = %name, old = %held, new = %subnet,
                    "the node's subnet changed; its pods keep their addresses until the controller restarts");
            }
            Some(_) => {}
        }
    }

    fn on_pod(&mut self, ch: Change<Pod>) {
        let (pod, deleted) = match ch {
            Change::Apply { new, .. } => (new, false),
            Change::Delete(old) => (old, true),
            Change::Synced => return,
        };
        let Some(node) = pod_node(&pod).map(str::to_string) else {
            return;
        };
        if let Some((_, tx)) = self.workers.get(&node) {
            let m = if deleted {
                Msg::Delete(pod)
            } else {
                Msg::Apply(pod)
            };
            if tx.send(m).is_err() {
                tracing::error!(node = %node, "pod worker stopped");
            }
            return;
        }
        let parked = self.parked.entry(node).or_default();
        if deleted {
            parked.remove(&key(pod.as_ref()));
        } else {
            tracing::debug!(pod = %key(pod.as_ref()), "waiting for the node's subnet");
            parked.insert(key(pod.as_ref()), pod);
        }
    }
}

/// The end of a start-up retry: a configuration error is the controller's error; otherwise
/// the retry was cancelled (shutdown), which is a clean stop.
fn stopped(e: anyhow::Error) -> Result<()> {
    if retry::is_config_error(&e) {
        Err(e)
    } else {
        Ok(())
    }
}

impl PodController {
    pub fn new(nb: Arc<dyn Nb>, client: kube::Client) -> Self {
        PodController {
            nb,
            client,
            port_events: None,
            ready: None,
        }
    }

    /// Report the end of the initial pod sync on `ready`.
    pub fn with_ready(mut self, ready: crate::util::ready::Pending) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Report port creations and deletions on `tx` (for the policy controller).
    pub fn with_port_events(mut self, tx: mpsc::UnboundedSender<PortEvent>) -> Self {
        self.port_events = Some(tx);
        self
    }

    /// Run until `cancel` fires.
    pub async fn run(
        mut self,
        informers: crate::kube::Informers,
        cancel: CancellationToken,
    ) -> Result<()> {
        let ready = self.ready.take();
        let mut pod_ch = informers.watch::<Pod>();
        let mut node_ch = informers.watch::<Node>();

        // 1. The complete pod and node lists (cluster-scoped nodes are keyed by name).
        let lists = async { tokio::try_join!(pod_ch.initial_list(), node_ch.initial_list()) };
        let (pods, nodes) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            lists = lists => lists?,
        };

        // 2. What NB holds: every pod port (one query) and the switches.
        let (ports, switches) = match self.read_nb(&cancel).await {
            Ok(read) => read,
            Err(e) => return stopped(e),
        };

        // 3. Remove ports of pods that no longer exist (only ports carrying pod=true).
        let stale = stale_ports(&ports, &expected_ports(&pods));
        if let Err(e) = self.delete_stale(&stale, &cancel).await {
            return stopped(e);
        }
        let stale: HashSet<String> = stale.into_iter().collect();
        let ports_by_node = ports_by_node(ports, &stale);

        // 4. Rebuild each node's allocator from annotations and ports, then serve everything.
        let served = pods.len();
        let mut run = self.start(ports_by_node, switches, &cancel);
        for (k, p) in pods {
            if let Some(node) = pod_node(&p) {
                run.parked.entry(node.to_string()).or_default().insert(k, p);
            }
        }
        for n in nodes.values() {
            run.on_node(n);
        }
        tracing::info!(
            pods = served,
            nodes = nodes.len(),
            stale_ports = stale.len(),
            "initial pod sync done"
        );
        if let Some(p) = ready {
            p.done();
        }

        // 5. Follow changes.
        run.follow(pod_ch, node_ch).await
    }

    /// Every pod port and the names of the switches, read once (retried while the NB is
    /// unreachable).
    async fn read_nb(&self, cancel: &CancellationToken) -> Result<(Vec<PortRow>, HashSet<String>)> {
        let queries = [
            PortRow::query(),
            Query::list(nb::LOGICAL_SWITCH, &[col::NAME]),
        ];
        let nb = self.nb.clone();
        let tables = retry::until_ok(
            "reading pod ports from NB",
            retry::DEPENDENCY,
            cancel,
            || nb.query(&queries),
        )
        .await?;
        let ports: Vec<PortRow> = tables
            .first()
            .map(|t| t.iter().map(PortRow::from_row).collect())
            .unwrap_or_default();
        let switches: HashSet<String> = tables
            .get(1)
            .map(|t| t.iter().map(|r| r.str(col::NAME)).collect())
            .unwrap_or_default();
        Ok((ports, switches))
    }

    /// Deletes the `stale` ports in one transaction (retried while the NB is unreachable).
    async fn delete_stale(&self, stale: &[String], cancel: &CancellationToken) -> Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        for p in stale {
            tracing::info!(port = %p, "stale logical port found; deleting it");
        }
        let mut txn = NbTxn::new();
        for p in stale {
            txn.extend(delete_ops(p));
        }
        let nb = self.nb.clone();
        retry::until_ok(
            "deleting stale pod ports",
            retry::DEPENDENCY,
            cancel,
            || nb.transact(&txn),
        )
        .await
    }

    /// The dispatcher's state with the NB batcher running and no worker yet.
    fn start(
        &self,
        ports: HashMap<String, HashMap<String, PortRow>>,
        switches: HashSet<String>,
        cancel: &CancellationToken,
    ) -> Running {
        let (nb_tx, nb_rx) = mpsc::unbounded_channel();
        let mut run = Running {
            shared: Arc::new(Shared {
                nb: self.nb.clone(),
                nb_tx,
                client: self.client.clone(),
                events: events::Events::new(self.client.clone(), events::NET_CONTROLLER),
                patch_slots: Semaphore::new(PATCH_SLOTS),
                port_events: self.port_events.clone(),
                nb_outage: std::sync::Mutex::new(Outage::new(
                    "pod logical ports in the NB database",
                )),
            }),
            workers: HashMap::new(),
            parked: HashMap::new(),
            ports,
            switches,
            tasks: tokio::task::JoinSet::new(),
            cancel: cancel.clone(),
        };
        run.tasks.spawn(nb_batcher(self.nb.clone(), nb_rx));
        run
    }
}

/// Port name → node of every served pod.
fn expected_ports(pods: &HashMap<String, Arc<Pod>>) -> HashMap<String, String> {
    pods.values()
        .filter_map(|p| {
            Some((
                pod_port(&pod_ns(p), &p.name_any()),
                pod_node(p)?.to_string(),
            ))
        })
        .collect()
}

/// The ports that stay, by switch and port name.
fn ports_by_node(
    ports: Vec<PortRow>,
    stale: &HashSet<String>,
) -> HashMap<String, HashMap<String, PortRow>> {
    let mut by_node: HashMap<String, HashMap<String, PortRow>> = HashMap::new();
    for p in ports.into_iter().filter(|p| !stale.contains(&p.name)) {
        by_node
            .entry(p.switch.clone())
            .or_default()
            .insert(p.name.clone(), p);
    }
    by_node
}

impl Running {
    /// Follows pod and node changes. Cancellation is looked at first: the workers stop on it
    /// too, and a worker that ended because of it is a shutdown, not a failure.
    async fn follow(
        mut self,
        mut pod_ch: crate::kube::Watch<Pod>,
        mut node_ch: crate::kube::Watch<Node>,
    ) -> Result<()> {
        let cancel = self.cancel.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                ch = pod_ch.next() => match ch {
                    None => bail!("pod watch ended"),
                    Some(ch) => self.on_pod(ch),
                },
                ch = node_ch.next() => match ch {
                    None => bail!("node watch ended"),
                    Some(Change::Apply { new, .. }) => self.on_node(&new),
                    Some(_) => {}
                },
                Some(res) = self.tasks.join_next() => {
                    res.context("pod controller task panicked")?;
                    bail!("a pod controller task stopped");
                }
            }
        }
    }
}
