//! The northbound database over a persistent OVSDB connection ([`NativeNb`]).
//!
//! `ovn-nbctl` downloads every table a command touches on each invocation, so its cost grows
//! with the database (measured: 341 ms per command at 20k ports). This backend keeps one
//! connection open and turns a [`NbTxn`] into ONE OVSDB `transact` whose cost does not depend
//! on the size of the database. Every command the project issues has a native form
//! ([`plan::translate`], split by family: [`ports`], [`topology`], [`groups`], [`db`]):
//! what `ovn-nbctl` looks up first (does the switch exist, which uuid has this port, is the
//! router port already there with these networks) is read from a monitored [`replica`], and
//! each such decision is guarded by an OVSDB `wait` (or a unique index, or referential
//! integrity) so that a concurrent change aborts the transaction as a whole instead of
//! corrupting it. An aborted transaction is translated again from the replica, which by
//! then has the change, a bounded number of times; what `ovn-nbctl` would refuse (a
//! duplicate IP, a missing port, a missing switch) ends as an error naming the command.
//!
//! Only shapes the project does not produce (`lr-route-add`, `lr-nat-add`, names that read
//! as uuid prefixes, odd address forms) run through `ovn-nbctl`
//! ([`NbStats::fallback`] counts them; the equivalence tests assert zero for the project's
//! transactions). Queries are `select`s converted to the rows that `--format=json` yields.

mod db;
mod groups;
pub mod plan;
mod ports;
mod query;
pub mod replica;
mod topology;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use super::cluster::Members;
use super::ctl::{Nb, NbTxn};
use super::error::NbError;
use super::jsonrpc::{Client, Remote};
use super::ovsdb::{Query, Row};
use super::signals::NbSignalSender;
use super::tls::ClientTls;
use crate::exec::BoxFuture;
use crate::util::retry;
use plan::{NotNative, translate};
use query::{rows_from_select, select_for};
use replica::{Replica, keep_replica};

pub use super::schema::nb::DB;
use super::schema::nb::NB_GLOBAL;

/// Translations of one transaction, the first included, before an abort is the answer.
const ATTEMPTS: u32 = 5;

/// How many transactions and queries took which path (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NbStats {
    /// Transactions and queries answered over the connection (applied, or refused as
    /// `ovn-nbctl` would refuse them).
    pub native: u64,
    /// Handed to `ovn-nbctl`.
    pub fallback: u64,
    /// Translations repeated after an abort (a guard that no longer held).
    pub retries: u64,
}

/// A transaction the server did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What the failing op stands for (`commit` for commit-time errors).
    pub op: String,
    pub error: String,
    pub details: String,
}

impl Rejected {
    /// A guard that no longer held: a `wait`, a unique index or a reference.
    fn is_abort(&self) -> bool {
        matches!(
            self.error.as_str(),
            "timed out" | "constraint violation" | "referential integrity violation"
        )
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = format!("{}: {} {}", self.op, self.error, self.details);
        f.write_str(s.trim_end())
    }
}

/// [`Nb`] over a persistent OVSDB connection, handing what it cannot translate to `fallback`.
pub struct NativeNb {
    client: Client,
    replica: Arc<RwLock<Replica>>,
    fallback: Arc<dyn Nb>,
    timeout: Duration,
    native: AtomicU64,
    fell_back: AtomicU64,
    retries: AtomicU64,
    signals: Arc<NbSignalSender>,
}

impl NativeNb {
    /// Start the connection task (needs a tokio runtime); it connects in the background, so
    /// this works while the NB is still down.
    pub fn start(remote: Remote, fallback: Arc<dyn Nb>, timeout: Duration) -> NativeNb {
        NativeNb::start_tls(remote, None, fallback, timeout)
    }

    /// [`NativeNb::start`] with the client certificates an `ssl:` remote needs.
    pub fn start_tls(
        remote: Remote,
        tls: Option<ClientTls>,
        fallback: Arc<dyn Nb>,
        timeout: Duration,
    ) -> NativeNb {
        NativeNb::start_members(Members::single(remote), tls, fallback, timeout)
    }

    /// Like [`NativeNb::start_tls`] for one server or the members of a cluster (only the
    /// leader is used; the connection moves on when the leader changes).
    pub fn start_members(
        members: Members,
        tls: Option<ClientTls>,
        fallback: Arc<dyn Nb>,
        timeout: Duration,
    ) -> NativeNb {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = Client::start_members(members, tls, timeout, Some(tx));
        let replica = Arc::new(RwLock::new(Replica::default()));
        let signals = Arc::new(NbSignalSender::default());
        tokio::spawn(keep_replica(
            client.clone(),
            rx,
            replica.clone(),
            signals.clone(),
        ));
        NativeNb {
            client,
            replica,
            fallback,
            timeout,
            native: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            signals,
        }
    }

    pub fn remote(&self) -> &Remote {
        self.client.remote()
    }

    /// The local replica has the server's current contents.
    pub fn replica_synced(&self) -> bool {
        self.replica.read().map(|r| r.synced).unwrap_or(false)
    }

    pub fn stats(&self) -> NbStats {
        NbStats {
            native: self.native.load(Ordering::Relaxed),
            fallback: self.fell_back.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// Wait (up to the request timeout) for the replica after a (re)connection.
    async fn synced(&self) -> bool {
        let start = Instant::now();
        while !self.replica_synced() {
            if start.elapsed() >= self.timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// One `transact` request; `Ok(Err(..))` when the server rejected it (nothing applied),
    /// `Err` when the connection failed.
    async fn run_ops(
        &self,
        ops: Vec<Value>,
        what: &[String],
    ) -> Result<Result<Vec<Value>, Rejected>> {
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let res = self.client.call("transact", Value::Array(params)).await?;
        let results = res
            .as_array()
            .with_context(|| format!("OVSDB transact reply is not an array: {res}"))?;
        for (i, r) in results.iter().enumerate() {
            if let Some(err) = r.get("error").filter(|e| !e.is_null()) {
                let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or(v.to_string());
                return Ok(Err(Rejected {
                    // Past the last op: a commit-time error (constraints, references).
                    op: what.get(i).cloned().unwrap_or_else(|| "commit".into()),
                    error: text(err),
                    details: r.get("details").map(text).unwrap_or_default(),
                }));
            }
        }
        Ok(Ok(results.clone()))
    }

    async fn fall_back(&self, txn: &NbTxn, why: &str) -> Result<(), NbError> {
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            reason = why,
            commands = txn.len(),
            "NB transaction through ovn-nbctl"
        );
        self.fallback
            .transact(txn)
            .await
            .map_err(|e| e.context(format!("(no native OVSDB form: {why})")))
    }

    /// Translate against the replica and run; on an abort or a refusal, wait a little (the
    /// replica catches up with whatever changed) and translate again.
    async fn transact_native(&self, txn: &NbTxn) -> Result<(), NbError> {
        if txn.is_empty() {
            return Ok(());
        }
        txn.validate().map_err(NbError::invalid)?;
        let what = || format!("NB transaction of {} commands", txn.len());
        // Without the replica nothing can be decided as ovn-nbctl decides it; a connection
        // that is down would fail ovn-nbctl alike, so this is an error to retry, not a fallback.
        if !self.replica_synced() {
            // A connection that is down fails a request at once with its reason (refused, a
            // TLS refusal): report that rather than wait; one that is up is delivering the
            // replica, which is worth a wait.
            self.client
                .call("echo", json!([]))
                .await
                .with_context(what)
                .map_err(NbError::unavailable)?;
        }
        if !self.synced().await {
            return Err(NbError::unavailable(anyhow!(
                "{}: no NB replica from {} within {:?} (connection down?)",
                what(),
                self.remote(),
                self.timeout
            )));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let plan = {
                // Not held across an await: translation is synchronous.
                let replica = self.replica.read().unwrap_or_else(|e| e.into_inner());
                translate(txn, &replica)
            };
            let why = match plan {
                Err(NotNative::Unsupported(why)) => return self.fall_back(txn, &why).await,
                Err(NotNative::Refused(why)) => why,
                Ok(plan) => match self
                    .run_ops(plan.ops, &plan.what)
                    .await
                    .with_context(what)
                    .map_err(NbError::unavailable)?
                {
                    Ok(_) => {
                        self.native.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(r) if r.is_abort() => r.to_string(),
                    // A request the server will not take however often it is asked.
                    Err(r) => return Err(NbError::invalid(anyhow!("{} rejected: {r}", what()))),
                },
            };
            if attempt >= ATTEMPTS {
                self.native.fetch_add(1, Ordering::Relaxed);
                // Aborted by concurrent changes, or refused as ovn-nbctl would refuse it,
                // every time: a conflict with what the database holds.
                return Err(NbError::conflict(anyhow!(
                    "{} not applied after {attempt} attempts: {why}",
                    what()
                )));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = %why, attempt, "NB transaction aborted; translated again");
            tokio::time::sleep(retry::NB_TXN_ABORT.delay(attempt)).await;
        }
    }

    async fn query_native(&self, queries: &[Query]) -> Result<Vec<Vec<Row>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let ops = match queries
            .iter()
            .map(select_for)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(ops) => ops,
            Err(NotNative::Unsupported(why) | NotNative::Refused(why)) => {
                return self.query_fallback(queries, &why).await;
            }
        };
        let what: Vec<String> = queries
            .iter()
            .map(|q| format!("select {}", q.table))
            .collect();
        let results = match self.run_ops(ops, &what).await.context("NB query")? {
            Ok(r) => r,
            Err(why) => return self.query_fallback(queries, &why.to_string()).await,
        };
        self.native.fetch_add(1, Ordering::Relaxed);
        queries
            .iter()
            .zip(&results)
            .map(|(q, r)| rows_from_select(q, r).with_context(|| format!("reading {}", q.table)))
            .collect()
    }

    async fn query_fallback(&self, queries: &[Query], why: &str) -> Result<Vec<Vec<Row>>> {
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason = why, "NB query through ovn-nbctl");
        self.fallback.query(queries).await
    }
}

impl Nb for NativeNb {
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
        Box::pin(self.transact_native(txn))
    }
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        Box::pin(self.query_native(queries))
    }
    fn signals(&self) -> super::signals::NbSignals {
        self.signals.subscribe()
    }
}
