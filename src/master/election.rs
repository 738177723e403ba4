//! Leader election of the master roles (`-init-master`, `-net-controller`) on a
//! `coordination.k8s.io/v1` Lease, so that two master replicas never both write the NB.
//!
//! Deciding is [`decide`] (observed Lease + now + who we are -> what to do) and the Lease
//! bodies ([`acquired`], [`renewed`], [`released`]); [`Elector`] is the thin loop that reads
//! and writes the Lease with optimistic concurrency (a replace carries the resourceVersion that
//! was read; a 409 means another replica wrote first). [`Leadership`] is the gate every NB
//! transaction of the master roles passes ([`GatedNb`]): it refuses when we are not leading or
//! when the last successful renewal is older than the renew deadline. Because the renew
//! deadline is shorter than the lease duration, a leader that cannot renew stops writing
//! before any standby may take over.
//!
//! Expiry is judged on the Lease's `renewTime` against this host's clock, so the masters'
//! clocks must agree to well within `lease duration - renew deadline` (NTP does this).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::instance::{self, Instance};
use crate::config::{Config, MasterHaConfig};
use crate::exec::BoxFuture;
use crate::ovn::{Nb, NbError, NbTxn, Query, Row};
use crate::util::ready::{self, Phase, Readiness};
use tokio_util::sync::CancellationToken;

/// The Lease of a process that runs `-init-master` (with or without `-net-controller`).
pub const MASTER_LEASE: &str = "ovn-kubernetes-master";
/// The Lease of a process that runs `-net-controller` alone: it is a different writer from a
/// separate `-init-master` process, so the two do not compete for one Lease.
pub const NET_CONTROLLER_LEASE: &str = "ovn-kubernetes-net-controller";

/// The readiness components of the master roles (the ones a standby reports as standby).
pub const COMPONENTS: [&str; 4] = [ready::MASTER, ready::SERVICES, ready::PODS, ready::POLICIES];

/// The Lease this process competes for.
pub fn lease_name(cfg: &Config) -> String {
    match &cfg.master_ha.lease_name {
        Some(n) => n.clone(),
        None if cfg.init_master.is_some() => MASTER_LEASE.into(),
        None => NET_CONTROLLER_LEASE.into(),
    }
}

/// This process as a Lease holder (see [`instance`](super::instance)): the `-init-master` node
/// name (else the host name), the boot, the PID and the host, so that a restarted process can
/// tell its dead predecessor's Lease apart from a live replica's.
pub fn identity(cfg: &Config) -> Instance {
    instance::this_process(cfg.init_master.as_deref())
}

/// The fields of a Lease the decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    pub renew_time: Option<SystemTime>,
    pub lease_duration: Option<Duration>,
}

impl Observed {
    pub fn of(lease: &Lease) -> Observed {
        let spec = lease.spec.clone().unwrap_or_default();
        Observed {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| SystemTime::from(t.0)),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }

    /// Nobody holds it: no holder, or the holder's last renewal is a lease duration old.
    fn free(&self, now: SystemTime) -> bool {
        match (&self.holder, self.renew_time, self.lease_duration) {
            (None, _, _) => true,
            (Some(_), Some(renewed), Some(d)) => renewed + d <= now,
            // A holder without a renewal time or duration never proved it is alive.
            (Some(_), _, _) => true,
        }
    }
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take it (create it when absent): it is absent, free, expired or already ours.
    Acquire,
    /// We hold it: write a new renewTime.
    Renew,
    /// Someone else holds a valid Lease: stay standby.
    Wait { holder: String },
    /// We were leading and someone else holds it now.
    Lost { holder: String },
}

/// `gone` says whether a holder is an ended predecessor of this process ([`Instance::predecessor_gone`]):
/// its Lease is taken at once instead of after it expires.
pub fn decide(
    observed: Option<&Observed>,
    now: SystemTime,
    me: &str,
    leading: bool,
    gone: impl Fn(&str) -> bool,
) -> Decision {
    let Some(o) = observed else {
        return Decision::Acquire;
    };
    match &o.holder {
        Some(h) if h == me => {
            if leading {
                Decision::Renew
            } else {
                Decision::Acquire
            }
        }
        Some(h) if leading => Decision::Lost { holder: h.clone() },
        Some(h) if !o.free(now) && !gone(h) => Decision::Wait { holder: h.clone() },
        _ => Decision::Acquire,
    }
}

/// How long a standby sleeps before reading the Lease again: a retry period, or less when the
/// holder's Lease expires sooner, so the takeover comes within a lease duration of the holder's
/// last renewal rather than up to a retry period after it.
pub fn standby_poll(observed: Option<&Observed>, now: SystemTime, retry: Duration) -> Duration {
    // Past the expiry instant, so the next read finds it expired despite rounding.
    const PAST_EXPIRY: Duration = Duration::from_millis(50);
    let expires_in = observed
        .and_then(|o| Some(o.renew_time? + o.lease_duration?))
        .and_then(|t| t.duration_since(now).ok());
    match expires_in {
        Some(d) => retry.min(d + PAST_EXPIRY),
        None => retry,
    }
}

fn micro(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(MicroTime)
}

/// The Lease after we take it: `old` (if any) keeps its metadata (resourceVersion: the replace
/// is conditional on it); a change of holder counts as a transition.
pub fn acquired(
    old: Option<&Lease>,
    name: &str,
    namespace: &str,
    me: &str,
    now: SystemTime,
    duration: Duration,
) -> Lease {
    let old_spec = old.and_then(|l| l.spec.clone()).unwrap_or_default();
    let transitions = old_spec.lease_transitions.unwrap_or(0);
    // As client-go counts: taking over from anyone else, a released Lease included.
    let holder_changed = old.is_some() && old_spec.holder_identity.as_deref() != Some(me);
    Lease {
        metadata: old.map(|l| l.metadata.clone()).unwrap_or(ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: Some(me.into()),
            acquire_time: micro(now),
            renew_time: micro(now),
            lease_duration_seconds: Some(duration.as_secs().min(i32::MAX as u64) as i32),
            lease_transitions: Some(transitions + i32::from(holder_changed)),
            ..old_spec
        }),
    }
}

/// Our Lease with a new renewTime.
pub fn renewed(old: &Lease, now: SystemTime) -> Lease {
    let mut l = old.clone();
    let spec = l.spec.get_or_insert_with(Default::default);
    spec.renew_time = micro(now);
    l
}

/// Our Lease given up on a clean shutdown, so a standby takes over at its next poll rather
/// than after a lease duration (no holder, as client-go's release does).
pub fn released(old: &Lease, now: SystemTime) -> Lease {
    let mut l = old.clone();
    let spec = l.spec.get_or_insert_with(Default::default);
    spec.holder_identity = None;
    spec.renew_time = micro(now);
    spec.lease_duration_seconds = Some(1);
    l
}

/// Why the gate refused an NB transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotLeading,
    Stale { since: Duration, deadline: Duration },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLeading => write!(
                f,
                "not the leading master (this replica does not hold the leader-election Lease), so it must not write the NB"
            ),
            Refusal::Stale { since, deadline } => write!(
                f,
                "the leader-election Lease was last renewed {:.1}s ago, beyond the renew deadline of {}s (-ha-election-renew-deadline); NB writes stop so a standby can take over safely",
                since.as_secs_f64(),
                deadline.as_secs()
            ),
        }
    }
}

/// May a transaction start now? `renewed_at` is when the last successful write of the Lease
/// was *sent* (the Lease is valid for a lease duration from at least then).
pub fn gate(
    leading: bool,
    renewed_at: Option<Instant>,
    now: Instant,
    renew_deadline: Duration,
) -> Result<(), Refusal> {
    match (leading, renewed_at) {
        (true, Some(at)) => {
            let since = now.saturating_duration_since(at);
            if since < renew_deadline {
                Ok(())
            } else {
                Err(Refusal::Stale {
                    since,
                    deadline: renew_deadline,
                })
            }
        }
        _ => Err(Refusal::NotLeading),
    }
}

/// Whether this process leads, shared by the elector (writer) and the NB gate (reader).
#[derive(Debug)]
pub struct Leadership {
    state: Mutex<(bool, Option<Instant>)>,
    renew_deadline: Duration,
}

impl Leadership {
    pub fn new(renew_deadline: Duration) -> Arc<Leadership> {
        Arc::new(Leadership {
            state: Mutex::new((false, None)),
            renew_deadline,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, Option<Instant>)> {
        // The state is two plain values; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write of the Lease naming us, sent at `at`, succeeded.
    pub fn renewed(&self, at: Instant) {
        *self.lock() = (true, Some(at));
    }

    pub fn check(&self, now: Instant) -> Result<(), Refusal> {
        let (leading, at) = *self.lock();
        gate(leading, at, now, self.renew_deadline)
    }

    pub fn is_leading(&self) -> bool {
        self.lock().0
    }

    /// We no longer lead (released, or lost): every later transaction is refused.
    pub fn stepped_down(&self) {
        *self.lock() = (false, None);
    }
}

/// The master roles' NB: every transaction passes [`Leadership::check`] first; reads are
/// not gated.
pub struct GatedNb {
    pub inner: Arc<dyn Nb>,
    pub lead: Arc<Leadership>,
}

impl Nb for GatedNb {
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
        Box::pin(async move {
            // Not the leader (now): the transaction may be run once the Lease is ours.
            self.lead
                .check(Instant::now())
                .map_err(|r| NbError::unavailable(anyhow!("NB transaction refused: {r}")))?;
            self.inner.transact(txn).await
        })
    }

    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        self.inner.query(queries)
    }

    fn signals(&self) -> crate::ovn::signals::NbSignals {
        self.inner.signals()
    }
}

/// The result of one read-decide-write round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Round {
    Leading,
    /// Another write reached the Lease between our read and our write.
    Conflict,
    Standby {
        holder: String,
        /// When to read the Lease again ([`standby_poll`]).
        poll: Duration,
    },
    Lost {
        holder: String,
    },
}

/// The Lease loop of one process.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    /// This process as a holder, and its `holderIdentity` string.
    instance: Instance,
    me: String,
    cfg: MasterHaConfig,
    lead: Arc<Leadership>,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(client: kube::Client, cfg: &Config) -> Elector {
        let ha = cfg.master_ha.clone();
        let instance = identity(cfg);
        Elector {
            api: Api::namespaced(client, &ha.lease_namespace),
            name: lease_name(cfg),
            namespace: ha.lease_namespace.clone(),
            me: instance.to_string(),
            instance,
            lead: Leadership::new(ha.renew_deadline),
            cfg: ha,
        }
    }

    pub fn leadership(&self) -> Arc<Leadership> {
        self.lead.clone()
    }

    fn lease_ref(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }

    /// Read the Lease, decide, write. Bounded by the retry period so a hung API call cannot
    /// hold the loop past the renew deadline.
    async fn round(&self) -> Result<Round> {
        let r = tokio::time::timeout(self.cfg.retry_period, self.round_inner())
            .await
            .map_err(|_| anyhow!("the API server did not answer within the retry period"))?;
        if r.is_ok() {
            crate::kube::outage::succeeded();
        }
        r
    }

    async fn round_inner(&self) -> Result<Round> {
        let sent = Instant::now();
        let now = SystemTime::now();
        let current = self.api.get_opt(&self.name).await?;
        let observed = current.as_ref().map(Observed::of);
        let leading = self.lead.is_leading();
        let pp = PostParams::default();
        let gone = |h: &str| self.instance.predecessor_gone(h, instance::ovnkube_running);
        let written = match decide(observed.as_ref(), now, &self.me, leading, gone) {
            Decision::Wait { holder } => {
                let poll = standby_poll(observed.as_ref(), now, self.cfg.retry_period);
                return Ok(Round::Standby { holder, poll });
            }
            Decision::Lost { holder } => return Ok(Round::Lost { holder }),
            Decision::Renew => {
                let Some(cur) = &current else {
                    bail!("the Lease vanished while deciding")
                };
                self.api.replace(&self.name, &pp, &renewed(cur, now)).await
            }
            Decision::Acquire => {
                if let Some(h) = observed.as_ref().and_then(|o| o.holder.as_deref())
                    && h != self.me
                    && !observed.as_ref().is_some_and(|o| o.free(now))
                {
                    tracing::info!(lease = %self.lease_ref(), holder = %h, identity = %self.me, "the Lease's holder is an earlier process of this master that has ended; taking it over without waiting for it to expire");
                }
                let body = acquired(
                    current.as_ref(),
                    &self.name,
                    &self.namespace,
                    &self.me,
                    now,
                    self.cfg.lease_duration,
                );
                match &current {
                    None => match self.api.create(&pp, &body).await {
                        // Someone created it between our read and our create.
                        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Round::Conflict),
                        Err(e @ kube::Error::Api(_)) if is_not_found(&e) => {
                            return Err(e).with_context(|| {
                                format!(
                                    "creating {}: its namespace does not exist; create it or choose another with -ha-election-lease-namespace",
                                    self.lease_ref()
                                )
                            });
                        }
                        other => other,
                    },
                    Some(_) => self.api.replace(&self.name, &pp, &body).await,
                }
            }
        };
        match written {
            Ok(_) => {
                self.lead.renewed(sent);
                Ok(Round::Leading)
            }
            // Another replica wrote between our read and our write: it won this round; the
            // next read shows who holds it.
            Err(e) if is_conflict(&e) => Ok(Round::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until we hold the Lease (at once when it is absent, free, expired, ours or an
    /// ended predecessor's), polling every retry period or at the holder's expiry if sooner; the master components are standby meanwhile. `false` if
    /// cancelled first.
    pub async fn acquire(&self, cancel: &CancellationToken, ready: &Readiness) -> Result<bool> {
        let mut reported: Option<String> = None;
        let cancel = cancel.clone();
        loop {
            let mut next = self.cfg.retry_period;
            match self.round().await {
                Ok(Round::Leading) => {
                    tracing::info!(lease = %self.lease_ref(), identity = %self.me, "acquired the leader-election Lease; starting the master roles");
                    crate::metrics::get().set_leader(true);
                    for c in COMPONENTS {
                        ready.set_phase(c, Phase::Starting);
                    }
                    return Ok(true);
                }
                Ok(Round::Conflict) => {
                    tracing::info!(lease = %self.lease_ref(), "another master wrote the Lease first; re-reading it at the next poll");
                }
                Ok(Round::Standby { holder, poll }) => {
                    if reported.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.lease_ref(), %holder, identity = %self.me, "standby: another master leads; taking over once its Lease expires");
                        reported = Some(holder);
                    }
                    for c in COMPONENTS {
                        ready.set_phase(c, Phase::Standby);
                    }
                    next = poll;
                }
                // Not leading, so a round never reports a lost Lease here.
                Ok(Round::Lost { .. }) => {}
                Err(e) => {
                    let e = format!("{e:#}");
                    crate::kube::outage::failed(
                        1,
                        &format!(
                            "reading or writing the leader-election {} (check the RBAC for coordination.k8s.io leases): {e}",
                            self.lease_ref()
                        ),
                    );
                    tracing::debug!(lease = %self.lease_ref(), error = %e, "reading or writing the leader-election Lease failed; retrying");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Renew every retry period until `cancel` fires. Returns an error (the process exits
    /// non-zero and restarts as a standby) when another replica holds the Lease or when no
    /// renewal succeeded within the renew deadline.
    pub async fn keep(&self, cancel: CancellationToken) -> Result<()> {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            match self.round().await {
                Ok(Round::Leading) => {}
                // The next read shows whether it is still ours (the renew deadline bounds how
                // long we keep writing without a successful renewal).
                Ok(Round::Conflict) => tracing::warn!(
                    lease = %self.lease_ref(),
                    "renewing the leader-election Lease hit a write conflict; re-reading it"
                ),
                Ok(Round::Standby { holder, .. } | Round::Lost { holder }) => {
                    self.step_down();
                    bail!(
                        "lost the leader-election {} to {holder}; exiting so that this replica restarts as a standby",
                        self.lease_ref()
                    );
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    crate::kube::outage::failed(
                        1,
                        &format!("renewing the leader-election {}: {e}", self.lease_ref()),
                    );
                    tracing::debug!(lease = %self.lease_ref(), error = %e, "renewing the leader-election Lease failed; retrying");
                }
            }
            if let Err(r) = self.lead.check(Instant::now()) {
                self.step_down();
                bail!("{r}; exiting so that this replica restarts as a standby");
            }
        }
    }

    fn step_down(&self) {
        self.lead.stepped_down();
        crate::metrics::get().set_leader(false);
    }

    /// Give the Lease up (clean shutdown, after the roles stopped writing) so a standby takes
    /// over at its next poll. Only a Lease that still names us is touched.
    pub async fn release(&self) -> Result<()> {
        if !self.lead.is_leading() {
            return Ok(());
        }
        self.step_down();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .with_context(|| format!("reading {} to release it", self.lease_ref()))?;
        let Some(cur) = current.filter(|l| Observed::of(l).holder.as_deref() == Some(&self.me))
        else {
            return Ok(());
        };
        self.api
            .replace(
                &self.name,
                &PostParams::default(),
                &released(&cur, SystemTime::now()),
            )
            .await
            .with_context(|| format!("releasing {}", self.lease_ref()))?;
        tracing::info!(lease = %self.lease_ref(), "released the leader-election Lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn obs(holder: Option<&str>, renewed: Option<u64>, dur: Option<u64>) -> Observed {
        Observed {
            holder: holder.map(String::from),
            renew_time: renewed.map(at),
            lease_duration: dur.map(Duration::from_secs),
        }
    }

    #[test]
    fn decide_table() {
        use Decision::*;
        let wait = || Wait {
            holder: "b-2".into(),
        };
        let lost = || Lost {
            holder: "b-2".into(),
        };
        // (observed, now, leading, want)
        let cases: Vec<(Option<Observed>, u64, bool, Decision)> = vec![
            // Absent: a lone master takes it at once.
            (None, T0, false, Acquire),
            (None, T0, true, Acquire),
            // Released (no holder).
            (Some(obs(None, Some(T0), Some(1))), T0, false, Acquire),
            // Ours: renew while leading; a fresh process with our identity takes it.
            (
                Some(obs(Some("a-1"), Some(T0), Some(60))),
                T0 + 5,
                true,
                Renew,
            ),
            (
                Some(obs(Some("a-1"), Some(T0), Some(60))),
                T0 + 5,
                false,
                Acquire,
            ),
            // Someone else's, valid: wait; just before expiry still wait.
            (
                Some(obs(Some("b-2"), Some(T0), Some(60))),
                T0 + 5,
                false,
                wait(),
            ),
            (
                Some(obs(Some("b-2"), Some(T0), Some(60))),
                T0 + 59,
                false,
                wait(),
            ),
            // Expired at renewTime + leaseDuration.
            (
                Some(obs(Some("b-2"), Some(T0), Some(60))),
                T0 + 60,
                false,
                Acquire,
            ),
            (
                Some(obs(Some("b-2"), Some(T0), Some(4))),
                T0 + 100,
                false,
                Acquire,
            ),
            // A holder that never wrote a renewal time or duration is not alive.
            (Some(obs(Some("b-2"), None, Some(60))), T0, false, Acquire),
            (Some(obs(Some("b-2"), Some(T0), None)), T0, false, Acquire),
            // We were leading and someone else holds it: lost, even when it looks expired.
            (
                Some(obs(Some("b-2"), Some(T0), Some(60))),
                T0 + 5,
                true,
                lost(),
            ),
            (
                Some(obs(Some("b-2"), Some(T0), Some(60))),
                T0 + 500,
                true,
                lost(),
            ),
        ];
        for (o, now, leading, want) in cases {
            assert_eq!(
                decide(o.as_ref(), at(now), "a-1", leading, |_| false),
                want,
                "{o:?} now={now} leading={leading}"
            );
        }
    }

    #[test]
    fn gate_refuses_when_not_leading_or_after_the_renew_deadline() {
        let t = Instant::now();
        let dl = Duration::from_secs(30);
        let s = Duration::from_secs;
        // (leading, renewed secs before now, ok)
        let cases = [
            (false, None, false),
            (false, Some(0), false),
            (true, None, false),
            (true, Some(0), true),
            (true, Some(29), true),
            (true, Some(30), false),
            (true, Some(31), false),
        ];
        for (leading, ago, ok) in cases {
            let now = t + s(100);
            let renewed = ago.map(|a| now - s(a));
            let got = gate(leading, renewed, now, dl);
            assert_eq!(got.is_ok(), ok, "leading={leading} ago={ago:?}: {got:?}");
        }
        assert!(matches!(
            gate(true, Some(t), t + s(31), dl),
            Err(Refusal::Stale { .. })
        ));
    }

    /// An NB that counts the transactions that reach it.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl Nb for Counting {
        fn transact<'a>(&'a self, _: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
        fn query<'a>(&'a self, _: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
            Box::pin(async { Ok(vec![]) })
        }
    }

    #[tokio::test]
    async fn gated_nb_refuses_a_transaction_after_the_renew_deadline_passed() {
        let inner = Arc::new(Counting(Default::default()));
        let lead = Leadership::new(Duration::from_millis(200));
        let nb = GatedNb {
            inner: inner.clone(),
            lead: lead.clone(),
        };
        let txn = NbTxn::new();
        let e = nb.transact(&txn).await.unwrap_err();
        assert_eq!(e.kind(), crate::ovn::TxnFailure::Unavailable);
        let e = e.to_string();
        assert!(e.contains("not the leading master"), "{e}");
        lead.renewed(Instant::now());
        nb.transact(&txn).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let e = nb.transact(&txn).await.unwrap_err().to_string();
        assert!(e.contains("beyond the renew deadline"), "{e}");
        lead.renewed(Instant::now());
        nb.transact(&txn).await.unwrap();
        lead.stepped_down();
        assert!(nb.transact(&txn).await.is_err());
        // Only the two allowed transactions reached the database.
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn lease_bodies() {
        let now = at(T0);
        let l = acquired(
            None,
            "ovn-kubernetes-master",
            "ovn-kubernetes",
            "a-1",
            now,
            Duration::from_secs(60),
        );
        assert_eq!(l.metadata.name.as_deref(), Some("ovn-kubernetes-master"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("ovn-kubernetes"));
        let spec = l.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a-1"));
        assert_eq!(spec.lease_duration_seconds, Some(60));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, micro(now));
        assert_eq!(Observed::of(&l), obs(Some("a-1"), Some(T0), Some(60)));
        // Taken over by b: one transition, resourceVersion kept for the conditional replace.
        let mut old = l.clone();
        old.metadata.resource_version = Some("7".into());
        let b = acquired(
            Some(&old),
            "x",
            "y",
            "b-2",
            at(T0 + 61),
            Duration::from_secs(60),
        );
        assert_eq!(b.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(b.metadata.name.as_deref(), Some("ovn-kubernetes-master"));
        assert_eq!(b.spec.as_ref().unwrap().lease_transitions, Some(1));
        // Re-taking our own Lease is no transition; taking a released one is (as client-go counts).
        let again = acquired(
            Some(&b),
            "x",
            "y",
            "b-2",
            at(T0 + 62),
            Duration::from_secs(60),
        );
        assert_eq!(again.spec.as_ref().unwrap().lease_transitions, Some(1));
        let rel = released(&b, at(T0 + 70));
        assert_eq!(Observed::of(&rel), obs(None, Some(T0 + 70), Some(1)));
        let c = acquired(
            Some(&rel),
            "x",
            "y",
            "c-3",
            at(T0 + 71),
            Duration::from_secs(60),
        );
        assert_eq!(c.spec.as_ref().unwrap().lease_transitions, Some(2));
        // Renewal moves only renewTime.
        let r = renewed(&b, at(T0 + 80));
        let (rs, bs) = (r.spec.clone().unwrap(), b.spec.clone().unwrap());
        assert_eq!(rs.renew_time, micro(at(T0 + 80)));
        assert_eq!(rs.acquire_time, bs.acquire_time);
        assert_eq!(rs.holder_identity, bs.holder_identity);
    }

    #[test]
    fn an_ended_predecessor_is_taken_over_at_once_a_live_one_is_not() {
        use Decision::*;
        let valid = obs(Some("b-2"), Some(T0), Some(60));
        let gone = |h: &str| h == "b-2";
        assert_eq!(
            decide(Some(&valid), at(T0 + 5), "a-1", false, gone),
            Acquire
        );
        assert_eq!(
            decide(Some(&valid), at(T0 + 5), "a-1", false, |_| false),
            Wait {
                holder: "b-2".into()
            }
        );
        // Leading and someone else holds it: lost, whatever is known of the holder.
        assert_eq!(
            decide(Some(&valid), at(T0 + 5), "a-1", true, gone),
            Lost {
                holder: "b-2".into()
            }
        );
    }

    #[test]
    fn standby_polls_at_the_holders_expiry_when_that_comes_first() {
        let retry = Duration::from_secs(20);
        let ms = Duration::from_millis;
        // (observed, now, want)
        let cases = vec![
            (None, T0, retry),
            (Some(obs(Some("b"), Some(T0), Some(60))), T0, retry),
            (
                Some(obs(Some("b"), Some(T0), Some(60))),
                T0 + 50,
                ms(10_050),
            ),
            (Some(obs(Some("b"), Some(T0), Some(60))), T0 + 60, ms(50)),
            // Already expired (the holder wrote it long ago): poll at the retry period.
            (Some(obs(Some("b"), Some(T0), Some(60))), T0 + 90, retry),
            (Some(obs(Some("b"), None, Some(60))), T0, retry),
            (Some(obs(Some("b"), Some(T0), None)), T0, retry),
        ];
        for (o, now, want) in cases {
            assert_eq!(
                standby_poll(o.as_ref(), at(now), retry),
                want,
                "{o:?} {now}"
            );
        }
    }

    #[test]
    fn lease_name_follows_the_roles_unless_given() {
        let mut cfg = Config {
            init_master: Some("m1".into()),
            ..Config::default()
        };
        assert_eq!(lease_name(&cfg), MASTER_LEASE);
        let me = identity(&cfg);
        assert!(me.to_string().starts_with("m1-"), "{me}");
        assert_eq!(me.pid, std::process::id());
        cfg.init_master = None;
        cfg.net_controller = true;
        assert_eq!(lease_name(&cfg), NET_CONTROLLER_LEASE);
        cfg.master_ha.lease_name = Some("mine".into());
        assert_eq!(lease_name(&cfg), "mine");
    }
}
