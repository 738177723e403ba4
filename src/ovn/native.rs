//! The northbound database over a persistent OVSDB connection ([`NativeNb`]).
//!
//! `ovn-nbctl` downloads every table a command touches on each invocation, so its cost grows
//! with the database (measured: 341 ms per command at 20k ports). This backend keeps one
//! connection open and turns a [`NbTxn`] into ONE OVSDB `transact` whose cost does not depend
//! on the size of the database, for the op shapes the hot paths use:
//!
//! - `LspAdd` (with the `LspSetAddresses`/`Db(Set)` on that port that follow, merged into the
//!   inserted row): `wait` that the switch exists once and that no port has the name, `insert`,
//!   `mutate` the switch's `ports`;
//! - `LspSetAddresses` / `Db(Set)` on an existing named row: `wait` that exactly one row has
//!   the name, then `update` (whole column) or `mutate` (map key: delete, then insert);
//! - `LspDel`: a `select` resolves the port's uuid first, then `wait` (still that uuid, or
//!   still absent), `mutate` the owning switch's `ports`, `delete`;
//! - `Db(Set)` / `Db(Remove --if-exists)` of map keys on a `Load_Balancer` given by full uuid
//!   (the service controller's VIPs): `wait` that the row exists (for `set`), `mutate`.
//!
//! Everything else — other commands, `--may-exist` on a port that exists, a missing switch,
//! a duplicate address, any transaction the server rejects — runs through the exec backend
//! instead, so semantics (and error messages) stay `ovn-nbctl`'s: every native transaction is
//! guarded by `wait` ops so that it either does exactly what `ovn-nbctl` would do, or aborts
//! without effect and is handed over. Queries are `select`s converted to the rows that
//! `--format=json` yields.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::ctl::{Nb, NbOp, NbTxn};
use super::jsonrpc::{Client, Event, Remote};
use super::ovsdb::{ColVal, DbOp, Query, Row, Val, parse_tables};
use super::signals::NbSignalSender;
use crate::exec::BoxFuture;

pub const DB: &str = "OVN_Northbound";
const LS: &str = "Logical_Switch";
const LSP: &str = "Logical_Switch_Port";
const LB: &str = "Load_Balancer";
const NB_GLOBAL: &str = "NB_Global";
/// Tables whose records `ovn-nbctl` finds by their `name` column (and we with a `where`).
const NAMED_TABLES: &[&str] = &[
    LS,
    LSP,
    "Logical_Router",
    "Logical_Router_Port",
    "Port_Group",
    "Address_Set",
];

/// Why a transaction or query has no native form (it then runs through the exec backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// How many transactions and queries took which path (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NbStats {
    pub native: u64,
    pub fallback: u64,
}

/// [`Nb`] over a persistent OVSDB connection, handing what it cannot translate to `fallback`.
pub struct NativeNb {
    client: Client,
    replica: Arc<RwLock<Replica>>,
    fallback: Arc<dyn Nb>,
    native: AtomicU64,
    fell_back: AtomicU64,
    signals: Arc<NbSignalSender>,
}

impl NativeNb {
    /// Start the connection task (needs a tokio runtime); it connects in the background, so
    /// this works while the NB is still down.
    pub fn start(remote: Remote, fallback: Arc<dyn Nb>, timeout: Duration) -> NativeNb {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = Client::start_with_events(remote, timeout, Some(tx));
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
            native: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
            signals,
        }
    }

    pub fn remote(&self) -> &Remote {
        self.client.remote()
    }

    /// The local replica (for the duplicate-IP check) has the server's current contents.
    pub fn replica_synced(&self) -> bool {
        self.replica.read().map(|r| r.synced).unwrap_or(false)
    }

    pub fn stats(&self) -> NbStats {
        NbStats {
            native: self.native.load(Ordering::Relaxed),
            fallback: self.fell_back.load(Ordering::Relaxed),
        }
    }

    /// One `transact` request; `Ok(Err(why))` when the server rejected it (nothing applied),
    /// `Err` when the connection failed.
    async fn run_ops(
        &self,
        ops: Vec<Value>,
        what: &[String],
    ) -> Result<Result<Vec<Value>, String>> {
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let res = self.client.call("transact", Value::Array(params)).await?;
        let results = res
            .as_array()
            .with_context(|| format!("OVSDB transact reply is not an array: {res}"))?;
        for (i, r) in results.iter().enumerate() {
            if let Some(err) = r.get("error").filter(|e| !e.is_null()) {
                let details = r.get("details").and_then(Value::as_str).unwrap_or("");
                // Past the last op: a commit-time error (constraints, references).
                let op = what.get(i).map(String::as_str).unwrap_or("commit");
                return Ok(Err(format!("{op}: {err} {details}").trim_end().to_string()));
            }
        }
        Ok(Ok(results.clone()))
    }

    async fn fall_back(&self, txn: &NbTxn, why: &str) -> Result<String> {
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            reason = why,
            commands = txn.len(),
            "NB transaction through ovn-nbctl"
        );
        self.fallback
            .transact(txn)
            .await
            .with_context(|| format!("(the native OVSDB attempt was not applied: {why})"))
            .map(|()| String::new())
    }

    async fn transact_native(&self, txn: &NbTxn) -> Result<String> {
        if txn.is_empty() {
            return Ok(String::new());
        }
        txn.validate()?;
        if let Err(Unsupported(why)) = check_shapes(txn) {
            return self.fall_back(txn, &why).await;
        }
        // Ports to delete: their uuids first (one round trip for all of them).
        let names = ports_to_resolve(txn);
        let mut resolved = HashMap::new();
        if !names.is_empty() {
            let ops: Vec<Value> = names
                .iter()
                .map(|n| select(LSP, json!([["name", "==", n]]), &["_uuid"]))
                .collect();
            let what: Vec<String> = names.iter().map(|n| format!("select port {n}")).collect();
            match self.run_ops(ops, &what).await? {
                Ok(results) => {
                    for (n, r) in names.iter().zip(&results) {
                        resolved.insert(n.clone(), uuids_of(r)?);
                    }
                }
                Err(why) => return self.fall_back(txn, &why).await,
            }
        }
        let plan = {
            // Not held across an await: translation is synchronous.
            let replica = self.replica.read().unwrap_or_else(|e| e.into_inner());
            translate(txn, &resolved, Some(&*replica).filter(|r| r.synced))
        };
        let plan = match plan {
            Ok(p) => p,
            Err(Unsupported(why)) => return self.fall_back(txn, &why).await,
        };
        match self
            .run_ops(plan.ops, &plan.what)
            .await
            .with_context(|| format!("NB transaction of {} commands", txn.len()))?
        {
            Ok(_) => {
                self.native.fetch_add(1, Ordering::Relaxed);
                Ok(String::new())
            }
            // Aborted as a whole (a `wait` precondition or a constraint): nbctl decides.
            Err(why) => self.fall_back(txn, &why).await,
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
            Err(Unsupported(why)) => return self.query_fallback(queries, &why).await,
        };
        let what: Vec<String> = queries
            .iter()
            .map(|q| format!("select {}", q.table))
            .collect();
        let results = match self.run_ops(ops, &what).await.context("NB query")? {
            Ok(r) => r,
            Err(why) => return self.query_fallback(queries, &why).await,
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
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.transact_native(txn).await.map(drop) })
    }
    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        Box::pin(self.query_native(queries))
    }
    fn signals(&self) -> super::signals::NbSignals {
        self.signals.subscribe()
    }
}

/// The uuids in one `select` result.
fn uuids_of(r: &Value) -> Result<Vec<String>> {
    let rows = r
        .get("rows")
        .and_then(Value::as_array)
        .with_context(|| format!("select result without rows: {r}"))?;
    rows.iter()
        .map(|row| {
            row.get("_uuid")
                .and_then(|u| u.get(1))
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("row without _uuid: {row}"))
        })
        .collect()
}

/// A value in OVSDB wire syntax. `Ref` (an `ovn-nbctl --id=@name`) has no meaning here.
pub fn val_json(v: &Val) -> Result<Value, Unsupported> {
    Ok(match v {
        Val::Str(s) => json!(s),
        Val::Int(i) => json!(i),
        Val::Bool(b) => json!(b),
        Val::Uuid(u) => json!(["uuid", u]),
        Val::Ref(r) => return unsupported(format!("reference @{r}")),
        Val::Set(items) => json!([
            "set",
            items.iter().map(val_json).collect::<Result<Vec<_>, _>>()?
        ]),
        Val::Map(pairs) => json!([
            "map",
            pairs
                .iter()
                .map(|(k, v)| Ok(json!([val_json(k)?, val_json(v)?])))
                .collect::<Result<Vec<_>, Unsupported>>()?
        ]),
    })
}

/// `ovn-nbctl` resolves a record argument as a uuid (or a uuid prefix) before a name; names
/// that could be read that way are left to it.
fn plain_name(n: &str) -> Result<(), Unsupported> {
    if n.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return unsupported(format!("record {n:?} could be a uuid"));
    }
    Ok(())
}

/// A complete row uuid (`8-4-4-4-12` hex), as the service controller addresses load
/// balancers; `ovn-nbctl` would resolve it the same way (an exact uuid beats any name).
fn full_uuid(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn by_uuid(u: &str) -> Value {
    json!([["_uuid", "==", ["uuid", u]]])
}

/// The service controller's hot path: VIP map keys set on, or removed from, a load balancer
/// given by uuid.
fn is_lb_vip_op(op: &NbOp) -> bool {
    match op {
        NbOp::Db(DbOp::Set {
            table,
            record,
            if_exists: false,
            ..
        }) => table == LB && full_uuid(record),
        NbOp::Db(DbOp::Remove {
            table,
            record,
            if_exists: true,
            ..
        }) => table == LB && full_uuid(record),
        _ => false,
    }
}

/// Every op must have a native form (checked before any round trip).
fn check_shapes(txn: &NbTxn) -> Result<(), Unsupported> {
    for op in &txn.ops {
        match op {
            NbOp::LspAdd { .. } | NbOp::LspSetAddresses { .. } | NbOp::LspDel { .. } => {}
            op if is_lb_vip_op(op) => {}
            NbOp::Db(DbOp::Set {
                table,
                if_exists: false,
                ..
            }) if NAMED_TABLES.contains(&table.as_str()) => {}
            other => return unsupported(format!("{other:?} has no native form")),
        }
    }
    Ok(())
}

/// Ports deleted by the transaction that it did not create first: their uuids are needed.
pub fn ports_to_resolve(txn: &NbTxn) -> Vec<String> {
    let mut added = HashSet::new();
    let mut out = Vec::new();
    for op in &txn.ops {
        match op {
            NbOp::LspAdd { name, .. } => {
                added.insert(name.as_str());
            }
            NbOp::LspDel { name } if !added.contains(name.as_str()) && !out.contains(name) => {
                out.push(name.clone())
            }
            _ => {}
        }
    }
    out
}

/// The OVSDB operations of a transaction, and what each stands for (for error messages).
#[derive(Debug)]
pub struct Plan {
    pub ops: Vec<Value>,
    pub what: Vec<String>,
}

/// What this transaction does to a logical switch port it names.
enum TxnPort {
    /// Inserted by this transaction: the index of its `insert` op.
    Created(usize),
    Deleted,
}

fn by_name(name: &str) -> Value {
    json!([["name", "==", name]])
}

fn select(table: &str, cond: Value, columns: &[&str]) -> Value {
    json!({"op": "select", "table": table, "where": cond, "columns": columns})
}

/// A `wait` that holds when the rows matching `cond` show exactly `rows` in `columns`.
fn wait(table: &str, cond: Value, columns: &[&str], rows: Value) -> Value {
    json!({"op": "wait", "table": table, "timeout": 0, "where": cond,
           "columns": columns, "until": "==", "rows": rows})
}

fn wait_one(table: &str, name: &str) -> Value {
    wait(table, by_name(name), &["name"], json!([{ "name": name }]))
}

fn wait_none(table: &str, name: &str) -> Value {
    wait(table, by_name(name), &["name"], json!([]))
}

/// `MAC [IP...]` with plain addresses, or a keyword; `Ok(true)` when it carries an IP
/// (`ovn-nbctl` refuses such an IP twice on one switch). Other forms are left to `ovn-nbctl`'s
/// own validation.
fn check_address(a: &str) -> Result<bool, Unsupported> {
    if matches!(a, "unknown" | "router" | "dynamic") {
        return Ok(false);
    }
    let mut parts = a.split(' ');
    let mac = parts.next().unwrap_or_default();
    let mac_ok = mac.len() == 17
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    if !mac_ok {
        return unsupported(format!("address {a:?}"));
    }
    let mut has_ip = false;
    for ip in parts {
        if ip.parse::<IpAddr>().is_err() {
            return unsupported(format!("address {a:?}"));
        }
        has_ip = true;
    }
    Ok(has_ip)
}

/// Apply `col[:key]=value` to a row being inserted (as a later `set` would).
fn merge_into_row(row: &mut Value, c: &ColVal) -> Result<(), Unsupported> {
    let v = val_json(&c.value)?;
    let Some(obj) = row.as_object_mut() else {
        return unsupported("insert row is not an object");
    };
    match &c.key {
        None => {
            obj.insert(c.column.clone(), v);
        }
        Some(k) => {
            let entry = obj
                .entry(c.column.clone())
                .or_insert_with(|| json!(["map", []]));
            let is_map = entry_tag_is_map(entry);
            let Some(pairs) = entry
                .get_mut(1)
                .and_then(Value::as_array_mut)
                .filter(|_| is_map)
            else {
                return unsupported(format!("column {} set whole, then by key", c.column));
            };
            pairs.retain(|p| p.get(0).and_then(Value::as_str) != Some(k.as_str()));
            pairs.push(json!([k, v]));
        }
    }
    Ok(())
}

fn entry_tag_is_map(v: &Value) -> bool {
    v.get(0).and_then(Value::as_str) == Some("map")
}

/// Translate a transaction. `resolved` holds the uuids of the ports named by
/// [`ports_to_resolve`]; `replica` (when in sync) answers `ovn-nbctl`'s duplicate-IP check
/// locally, otherwise a `wait` on the server does. Pure: unit-tested, and compared with
/// `ovn-nbctl` in `tests/nb_native.rs`.
pub fn translate(
    txn: &NbTxn,
    resolved: &HashMap<String, Vec<String>>,
    replica: Option<&Replica>,
) -> Result<Plan, Unsupported> {
    let mut ops: Vec<Value> = Vec::new();
    let mut what: Vec<String> = Vec::new();
    let mut ports: HashMap<&str, TxnPort> = HashMap::new();
    let mut switches_checked: HashSet<&str> = HashSet::new();
    let mut addr_checks: Vec<(&str, &str)> = Vec::new();
    // Switch of each port this transaction creates, and the IPs it gives ports per switch.
    let mut switch_of: HashMap<&str, &str> = HashMap::new();
    let mut ips_here: HashMap<(String, IpAddr), &str> = HashMap::new();
    let mut push = |ops: &mut Vec<Value>, op: Value, w: String| {
        ops.push(op);
        what.push(w);
        ops.len() - 1
    };
    for (n, op) in txn.ops.iter().enumerate() {
        match op {
            NbOp::LspAdd { switch, name } => {
                plain_name(switch)?;
                plain_name(name)?;
                if matches!(ports.get(name.as_str()), Some(TxnPort::Created(_))) {
                    return unsupported(format!("port {name} added twice"));
                }
                if switches_checked.insert(switch) {
                    let w = format!("lsp-add {switch} {name}: switch {switch} exists once");
                    push(&mut ops, wait_one(LS, switch), w);
                }
                // No `wait` for the name: the unique index on Logical_Switch_Port.name makes
                // the commit fail if the port exists (and `--may-exist` is left to ovn-nbctl).
                switch_of.insert(name, switch);
                let id = format!("lsp{n}");
                let i = push(
                    &mut ops,
                    json!({"op": "insert", "table": LSP, "row": {"name": name}, "uuid-name": id}),
                    format!("lsp-add {switch} {name}: insert"),
                );
                ports.insert(name, TxnPort::Created(i));
                push(
                    &mut ops,
                    json!({"op": "mutate", "table": LS, "where": by_name(switch),
                           "mutations": [["ports", "insert", ["set", [["named-uuid", id]]]]]}),
                    format!("lsp-add {switch} {name}: add to the switch"),
                );
            }
            NbOp::LspSetAddresses { name, addresses } => {
                plain_name(name)?;
                let mut ips = Vec::new();
                for a in addresses {
                    if check_address(a)? {
                        addr_checks.push((name, a));
                        ips.extend(ips_of(a));
                    }
                }
                if let Some(r) = replica.filter(|_| !ips.is_empty()) {
                    let sw = match switch_of.get(name.as_str()) {
                        Some(sw) => sw.to_string(),
                        None => match r.switch_of(name) {
                            Some(sw) => sw,
                            None => return unsupported(format!("switch of port {name} unknown")),
                        },
                    };
                    if let Some(other) = r.duplicate(&sw, name, &ips) {
                        return unsupported(format!("an address of {name} is on port {other}"));
                    }
                    for ip in ips {
                        if let Some(other) = ips_here.insert((sw.clone(), ip), name)
                            && other != name
                        {
                            return unsupported(format!("{ip} given to {other} and {name}"));
                        }
                    }
                }
                let v = json!(["set", addresses]);
                match ports.get(name.as_str()) {
                    Some(TxnPort::Created(i)) => ops[*i]["row"]["addresses"] = v,
                    Some(TxnPort::Deleted) => {
                        return unsupported(format!("port {name} changed after its deletion"));
                    }
                    None => {
                        let w = format!("lsp-set-addresses {name}");
                        push(&mut ops, wait_one(LSP, name), format!("{w}: port exists"));
                        push(
                            &mut ops,
                            json!({"op": "update", "table": LSP, "where": by_name(name),
                                   "row": {"addresses": v}}),
                            w,
                        );
                    }
                }
            }
            NbOp::LspDel { name } => {
                plain_name(name)?;
                match ports.get(name.as_str()) {
                    Some(TxnPort::Created(_)) => {
                        return unsupported(format!("port {name} added and deleted"));
                    }
                    // `--if-exists` on a port this transaction already removed.
                    Some(TxnPort::Deleted) => {}
                    None => match resolved.get(name).map(Vec::as_slice) {
                        None => return unsupported(format!("port {name} not looked up")),
                        Some([]) => {
                            let w = format!("lsp-del {name}: still absent");
                            push(&mut ops, wait_none(LSP, name), w);
                        }
                        Some([u]) => {
                            let uuid = json!(["uuid", u]);
                            // By uuid (a direct lookup) and name: the port is still that row.
                            let w = format!("lsp-del {name}: still {u}");
                            let cond = json!([["_uuid", "==", uuid], ["name", "==", name]]);
                            push(
                                &mut ops,
                                wait(LSP, cond, &["name"], json!([{ "name": name }])),
                                w,
                            );
                            push(
                                &mut ops,
                                json!({"op": "mutate", "table": LS,
                                       "where": [["ports", "includes", uuid]],
                                       "mutations": [["ports", "delete", uuid]]}),
                                format!("lsp-del {name}: remove from its switch"),
                            );
                            push(
                                &mut ops,
                                json!({"op": "delete", "table": LSP,
                                       "where": [["_uuid", "==", uuid]]}),
                                format!("lsp-del {name}: delete"),
                            );
                            ports.insert(name, TxnPort::Deleted);
                        }
                        Some(_) => return unsupported(format!("several ports named {name}")),
                    },
                }
            }
            NbOp::Db(DbOp::Set {
                table,
                record,
                columns,
                if_exists: false,
            }) if NAMED_TABLES.contains(&table.as_str()) => {
                plain_name(record)?;
                if columns.iter().any(|c| c.op != "=") {
                    return unsupported("set with an operator other than =");
                }
                let state = (table == LSP).then(|| ports.get(record.as_str())).flatten();
                match state {
                    Some(TxnPort::Created(i)) => {
                        for c in columns {
                            merge_into_row(&mut ops[*i]["row"], c)?;
                        }
                    }
                    Some(TxnPort::Deleted) => {
                        return unsupported(format!("port {record} changed after its deletion"));
                    }
                    None => {
                        let w = format!("set {table} {record}");
                        push(
                            &mut ops,
                            wait_one(table, record),
                            format!("{w}: exists once"),
                        );
                        for c in columns {
                            let v = val_json(&c.value)?;
                            let op = match &c.key {
                                None => json!({"op": "update", "table": table,
                                    "where": by_name(record), "row": {c.column.clone(): v}}),
                                // Map key: drop the old pair, then insert the new one.
                                Some(k) => json!({"op": "mutate", "table": table,
                                    "where": by_name(record), "mutations": [
                                        [c.column, "delete", ["set", [k]]],
                                        [c.column, "insert", ["map", [[k, v]]]]]}),
                            };
                            push(&mut ops, op, format!("{w} {}", c.render()));
                        }
                    }
                }
            }
            NbOp::Db(DbOp::Set {
                table,
                record,
                columns,
                if_exists: false,
            }) if table == LB && full_uuid(record) => {
                if columns.iter().any(|c| c.op != "=") {
                    return unsupported("set with an operator other than =");
                }
                let w = format!("set {table} {record}");
                // `ovn-nbctl set` fails on a missing row: abort, and let it say so.
                push(
                    &mut ops,
                    wait(
                        table,
                        by_uuid(record),
                        &["_uuid"],
                        json!([{"_uuid": ["uuid", record]}]),
                    ),
                    format!("{w}: exists"),
                );
                for c in columns {
                    let v = val_json(&c.value)?;
                    let op = match &c.key {
                        None => json!({"op": "update", "table": table,
                            "where": by_uuid(record), "row": {c.column.clone(): v}}),
                        Some(k) => json!({"op": "mutate", "table": table,
                            "where": by_uuid(record), "mutations": [
                                [c.column, "delete", ["set", [k]]],
                                [c.column, "insert", ["map", [[k, v]]]]]}),
                    };
                    push(&mut ops, op, format!("{w} {}", c.render()));
                }
            }
            // `--if-exists remove`: nothing to check; a missing row matches nothing.
            NbOp::Db(DbOp::Remove {
                table,
                record,
                column,
                values,
                if_exists: true,
            }) if table == LB && full_uuid(record) => {
                let keys = values.iter().map(val_json).collect::<Result<Vec<_>, _>>()?;
                push(
                    &mut ops,
                    json!({"op": "mutate", "table": table, "where": by_uuid(record),
                           "mutations": [[column, "delete", ["set", keys]]]}),
                    format!("remove {table} {record} {column}"),
                );
            }
            other => return unsupported(format!("{other:?} has no native form")),
        }
    }
    // `ovn-nbctl` refuses an IP that another port of the switch has. Without a replica:
    // checked by the server on the final state, for the exact address string (our MACs derive
    // from IPs; a scan of the table, so only a fallback); any hit leaves the verdict to nbctl.
    for (port, addr) in addr_checks.into_iter().filter(|_| replica.is_none()) {
        let cond = json!([["addresses", "includes", addr], ["name", "!=", port]]);
        push(
            &mut ops,
            wait(LSP, cond, &["name"], json!([])),
            format!("lsp-set-addresses {port}: no other port has {addr:?}"),
        );
    }
    Ok(Plan { ops, what })
}

/// A query as a `select`: `col=value` is `==`, `col:key=value` is `includes` of that pair.
pub fn select_for(q: &Query) -> Result<Value, Unsupported> {
    let mut conds = Vec::new();
    for c in &q.conditions {
        if c.op != "=" {
            return unsupported(format!("query condition operator {}", c.op));
        }
        let v = val_json(&c.value)?;
        conds.push(match &c.key {
            None => json!([c.column, "==", v]),
            Some(k) => json!([c.column, "includes", ["map", [[k, v]]]]),
        });
    }
    let mut op = json!({"op": "select", "table": q.table, "where": conds});
    if !q.columns.is_empty() {
        let mut cols = vec!["_uuid".to_string()];
        cols.extend(q.columns.iter().filter(|c| *c != "_uuid").cloned());
        op["columns"] = json!(cols);
    }
    Ok(op)
}

/// A `select` result as the rows `ovn-nbctl --format=json` would print: the wire encoding of
/// values is the one the tool prints, so the table goes through the same parser.
pub fn rows_from_select(q: &Query, result: &Value) -> Result<Vec<Row>> {
    let rows = result
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("select result without rows: {result}"))?;
    let mut headings = vec!["_uuid".to_string()];
    if q.columns.is_empty() {
        // All columns (as `list` prints them), less the internal `_version`.
        let mut cols: Vec<String> = rows
            .first()
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        cols.retain(|c| c != "_uuid" && c != "_version");
        cols.sort();
        headings.extend(cols);
    } else {
        headings.extend(q.columns.iter().filter(|c| *c != "_uuid").cloned());
    }
    let mut data = Vec::with_capacity(rows.len());
    for r in rows {
        let mut cells = Vec::with_capacity(headings.len());
        for h in &headings {
            match r.get(h) {
                Some(v) => cells.push(v.clone()),
                None => bail!("row without column {h}: {r}"),
            }
        }
        data.push(Value::Array(cells));
    }
    let table = json!({"headings": headings, "data": data}).to_string();
    let mut tables = parse_tables(&table)?;
    Ok(tables.pop().unwrap_or_default())
}

/// The IPs of a `MAC IP...` address.
fn ips_of(a: &str) -> Vec<IpAddr> {
    a.split(' ')
        .skip(1)
        .filter_map(|ip| ip.split('/').next()?.parse().ok())
        .collect()
}

/// What `ovn-nbctl`'s duplicate-IP check reads, kept current by an OVSDB `monitor`: switch
/// names and ports, port names and addresses (a few hundred bytes per port).
#[derive(Debug, Default)]
pub struct Replica {
    /// The monitor's initial contents have arrived on the current connection.
    pub synced: bool,
    /// uuid → (name, addresses)
    ports: HashMap<String, (String, Vec<String>)>,
    /// uuid → (name, port uuids)
    switches: HashMap<String, (String, Vec<String>)>,
    /// The `_uuid` of the NB_Global row: a database created afresh (wiped, replaced) has a
    /// new one, which is how a reconnect tells a restarted server from a new database.
    nb_global: Option<String>,
}

/// The monitor request for [`Replica`]: `monitor_cond` so that a change to a switch's
/// `ports` arrives as the one uuid added or removed (`update2`), not the whole set.
pub fn replica_monitor() -> Value {
    json!([DB, "replica", {
        LS: [{"columns": ["name", "ports"]}],
        LSP: [{"columns": ["name", "addresses"]}],
        // Only the row's identity matters; northd rewrites its other columns constantly.
        NB_GLOBAL: [{"columns": ["name"], "select": {"initial": true, "insert": true, "delete": true, "modify": false}}],
    }])
}

fn atoms(v: &Value) -> Vec<String> {
    let atom = |a: &Value| match a {
        Value::String(s) => Some(s.clone()),
        // ["uuid", "..."]
        Value::Array(p) => p.get(1).and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    match v {
        Value::Array(p) if p.first().and_then(Value::as_str) == Some("set") => p
            .get(1)
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(atom).collect())
            .unwrap_or_default(),
        other => atom(other).into_iter().collect(),
    }
}

impl Replica {
    /// Apply `<table-updates2>` (the `monitor_cond` reply or an `update2` notification).
    /// `initial`/`insert` carry the row (default-valued columns omitted), `modify` the new
    /// name and the set members to toggle, `delete` nothing.
    pub fn apply(&mut self, updates: &Value) -> Result<()> {
        let obj = updates
            .as_object()
            .with_context(|| format!("monitor updates are not an object: {updates}"))?;
        for (table, rows) in obj {
            if table == NB_GLOBAL {
                self.apply_nb_global(rows);
                continue;
            }
            let map = match table.as_str() {
                LS => &mut self.switches,
                LSP => &mut self.ports,
                _ => continue,
            };
            let col = if table == LS { "ports" } else { "addresses" };
            let rows = rows
                .as_object()
                .with_context(|| format!("monitor rows of {table} are not an object"))?;
            for (uuid, change) in rows {
                let full = change.get("initial").or_else(|| change.get("insert"));
                if let Some(row) = full {
                    let name = row.get("name").and_then(Value::as_str).unwrap_or_default();
                    let vals = row.get(col).map(atoms).unwrap_or_default();
                    map.insert(uuid.clone(), (name.to_string(), vals));
                } else if let Some(diff) = change.get("modify") {
                    let Some((name, vals)) = map.get_mut(uuid) else {
                        bail!("monitor modifies unknown {table} row {uuid}");
                    };
                    if let Some(n) = diff.get("name").and_then(Value::as_str) {
                        *name = n.to_string();
                    }
                    for member in diff.get(col).map(atoms).unwrap_or_default() {
                        match vals.iter().position(|v| *v == member) {
                            Some(i) => {
                                vals.swap_remove(i);
                            }
                            None => vals.push(member),
                        }
                    }
                } else if change.get("delete").is_some() {
                    map.remove(uuid);
                } else {
                    bail!("unknown monitor row update for {table} {uuid}: {change}");
                }
            }
        }
        Ok(())
    }

    fn apply_nb_global(&mut self, rows: &Value) {
        for (uuid, change) in rows.as_object().into_iter().flatten() {
            if change.get("delete").is_some() {
                if self.nb_global.as_deref() == Some(uuid) {
                    self.nb_global = None;
                }
            } else {
                self.nb_global = Some(uuid.clone());
            }
        }
    }

    /// The NB_Global row's `_uuid`, when the database has one.
    pub fn database_id(&self) -> Option<&str> {
        self.nb_global.as_deref()
    }

    /// A port other than `port` on switch `switch` that has one of `ips` (as nbctl checks).
    pub fn duplicate(&self, switch: &str, port: &str, ips: &[IpAddr]) -> Option<String> {
        self.switches
            .values()
            .filter(|(name, _)| name == switch)
            .flat_map(|(_, ports)| ports)
            .filter_map(|u| self.ports.get(u))
            .filter(|(name, _)| name != port)
            .find(|(_, addrs)| {
                addrs
                    .iter()
                    .flat_map(|a| ips_of(a))
                    .any(|ip| ips.contains(&ip))
            })
            .map(|(name, _)| name.clone())
    }

    /// The switch holding the port named `port`.
    pub fn switch_of(&self, port: &str) -> Option<String> {
        let (uuid, _) = self.ports.iter().find(|(_, (name, _))| name == port)?;
        self.switches
            .values()
            .find(|(_, ports)| ports.contains(uuid))
            .map(|(name, _)| name.clone())
    }
}

/// Keep the replica current: monitor on every (re)connection, then apply the updates in the
/// order the server sent them (the monitor reply precedes them on the connection).
/// The last NB_Global identity seen, across connections.
#[derive(Default)]
struct DatabaseId(Option<String>);

impl DatabaseId {
    /// A different NB_Global than the one seen before means a new database. A database
    /// without one yet (northd creates it) changes nothing: the first one seen is remembered.
    fn observe(&mut self, now: Option<&str>, signals: &NbSignalSender) -> bool {
        let Some(now) = now else { return false };
        let changed = self.0.as_deref().is_some_and(|before| before != now);
        if changed {
            tracing::warn!(
                before = self.0.as_deref().unwrap_or(""),
                now,
                "the NB database was replaced (new NB_Global row); everything is programmed again"
            );
            signals.new_database();
        }
        self.0 = Some(now.to_string());
        changed
    }
}

async fn keep_replica(
    client: Client,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    replica: Arc<RwLock<Replica>>,
    signals: Arc<NbSignalSender>,
) {
    let write = || replica.write().unwrap_or_else(|e| e.into_inner());
    // A peer that keeps failing fails every monitor: warn once until one works again.
    let mut monitor_failing = false;
    let mut connected_before = false;
    let mut database = DatabaseId::default();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Connected => {
                write().synced = false;
                // The first connection is start-up, not a recovery.
                if std::mem::replace(&mut connected_before, true) {
                    signals.reconnected();
                }
                match client.call("monitor_cond", replica_monitor()).await {
                    Ok(initial) => {
                        monitor_failing = false;
                        let mut fresh = Replica::default();
                        match fresh.apply(&initial) {
                            Ok(()) => {
                                fresh.synced = true;
                                database.observe(fresh.database_id(), &signals);
                                *write() = fresh;
                            }
                            Err(e) => tracing::warn!(error = %format!("{e:#}"), "NB replica"),
                        }
                    }
                    // The next connection tries again; meanwhile the server checks.
                    Err(e) if !monitor_failing => {
                        monitor_failing = true;
                        tracing::warn!(error = %format!("{e:#}"), "NB monitor failed; retried on every reconnection")
                    }
                    Err(e) => tracing::debug!(error = %format!("{e:#}"), "NB monitor failed again"),
                }
            }
            Event::Notification(m) => {
                if m.get("method").and_then(Value::as_str) != Some("update2") {
                    continue;
                }
                let Some(updates) = m.get("params").and_then(|p| p.get(1)) else {
                    continue;
                };
                let mut r = write();
                if let Err(e) = r.apply(updates) {
                    // A replica we cannot trust is not used.
                    r.synced = false;
                    tracing::warn!(error = %format!("{e:#}"), "NB replica update");
                }
                database.observe(r.database_id(), &signals);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_nb_global_row_signals_a_new_database_once() {
        let signals = NbSignalSender::default();
        let mut seen = DatabaseId::default();
        let mut r = Replica::default();
        let initial = |uuid: &str| json!({NB_GLOBAL: {uuid: {"initial": {"name": ""}}}});
        // (update, new database?) in order: start-up, same database again after a reconnect,
        // the row deleted (database being wiped), a new row, northd-less empty database.
        let steps = [
            (initial("u1"), false),
            (initial("u1"), false),
            (json!({NB_GLOBAL: {"u1": {"delete": null}}}), false),
            (json!({NB_GLOBAL: {"u2": {"insert": {"name": ""}}}}), true),
            (json!({}), false),
        ];
        for (i, (update, want)) in steps.iter().enumerate() {
            r.apply(update).unwrap();
            assert_eq!(seen.observe(r.database_id(), &signals), *want, "step {i}");
        }
        assert_eq!(signals.current().database, 1);
        assert_eq!(signals.current().connection, 0);
    }

    fn pod_txn(switch: &str, port: &str, addr: &str) -> Vec<NbOp> {
        vec![
            NbOp::LspAdd {
                switch: switch.into(),
                name: port.into(),
            },
            NbOp::LspSetAddresses {
                name: port.into(),
                addresses: vec![addr.into()],
            },
            NbOp::Db(DbOp::Set {
                table: LSP.into(),
                record: port.into(),
                columns: vec![
                    ColVal::key("external_ids", "pod", "true"),
                    ColVal::key("external_ids", "pod", "yes"),
                    ColVal::set("dynamic_addresses", Val::Set(Vec::new())),
                ],
                if_exists: false,
            }),
        ]
    }

    fn txn(ops: Vec<NbOp>) -> NbTxn {
        let mut t = NbTxn::new();
        t.extend(ops);
        t
    }

    #[test]
    fn port_add_merges_into_one_insert() {
        let t = txn(pod_txn("n1", "default_a", "0a:58:0a:01:00:05 10.1.0.5"));
        let p = translate(&t, &HashMap::new(), None).unwrap();
        let kinds: Vec<&str> = p.ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["wait", "insert", "mutate", "wait"]);
        assert_eq!(p.what.len(), p.ops.len());
        let row = &p.ops[1]["row"];
        assert_eq!(
            row,
            &json!({"name": "default_a", "addresses": ["set", ["0a:58:0a:01:00:05 10.1.0.5"]],
                    "external_ids": ["map", [["pod", "yes"]]], "dynamic_addresses": ["set", []]})
        );
        assert_eq!(
            p.ops[2]["mutations"],
            json!([["ports", "insert", ["set", [["named-uuid", "lsp0"]]]]])
        );
        // The duplicate-address guard excludes the port itself.
        assert_eq!(p.ops[3]["where"][1], json!(["name", "!=", "default_a"]));
        // With a replica the check is local: no scan on the server.
        let r = Replica {
            synced: true,
            ..Default::default()
        };
        let p = translate(&t, &HashMap::new(), Some(&r)).unwrap();
        assert_eq!(p.ops.len(), 3);
    }

    #[test]
    fn existing_rows_are_guarded_updates_and_key_mutations() {
        let t = txn(vec![NbOp::Db(DbOp::Set {
            table: LS.into(),
            record: "n1".into(),
            columns: vec![
                ColVal::key("other_config", "subnet", "10.1.0.0/24"),
                ColVal::set("name", "n1"),
            ],
            if_exists: false,
        })]);
        let p = translate(&t, &HashMap::new(), None).unwrap();
        assert_eq!(p.ops[0], wait_one(LS, "n1"));
        assert_eq!(
            p.ops[1]["mutations"],
            json!([
                ["other_config", "delete", ["set", ["subnet"]]],
                [
                    "other_config",
                    "insert",
                    ["map", [["subnet", "10.1.0.0/24"]]]
                ]
            ])
        );
        assert_eq!(p.ops[2]["row"], json!({"name": "n1"}));
    }

    #[test]
    fn delete_uses_the_resolved_uuid_or_checks_absence() {
        let t = txn(vec![
            NbOp::LspDel { name: "p1".into() },
            NbOp::LspDel { name: "p2".into() },
            NbOp::LspDel { name: "p1".into() },
        ]);
        assert_eq!(ports_to_resolve(&t), ["p1", "p2"]);
        assert!(translate(&t, &HashMap::new(), None).is_err());
        let resolved = HashMap::from([
            ("p1".to_string(), vec!["u-1".to_string()]),
            ("p2".to_string(), vec![]),
        ]);
        let p = translate(&t, &resolved, None).unwrap();
        let kinds: Vec<&str> = p.ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["wait", "mutate", "delete", "wait"]);
        assert_eq!(
            p.ops[1]["where"],
            json!([["ports", "includes", ["uuid", "u-1"]]])
        );
        let two = HashMap::from([("p1".to_string(), vec!["a".into(), "b".into()])]);
        let t1 = txn(vec![NbOp::LspDel { name: "p1".into() }]);
        assert!(translate(&t1, &two, None).is_err());
    }

    #[test]
    fn load_balancer_vips_by_uuid_are_guarded_mutations() {
        let u = "0123abcd-0000-4000-8000-00000000beef";
        let t = txn(vec![
            NbOp::Db(DbOp::Remove {
                table: LB.into(),
                record: u.into(),
                column: "vips".into(),
                values: vec![Val::str("10.96.0.1:80")],
                if_exists: true,
            }),
            NbOp::Db(DbOp::Set {
                table: LB.into(),
                record: u.into(),
                columns: vec![ColVal::key("vips", "10.96.0.2:80", "10.1.0.5:8080")],
                if_exists: false,
            }),
        ]);
        assert!(check_shapes(&t).is_ok());
        let p = translate(&t, &HashMap::new(), None).unwrap();
        assert_eq!(
            p.ops[0],
            json!({"op": "mutate", "table": LB, "where": [["_uuid", "==", ["uuid", u]]],
                   "mutations": [["vips", "delete", ["set", ["10.96.0.1:80"]]]]})
        );
        assert_eq!(p.ops[1]["op"], "wait");
        assert_eq!(p.ops[1]["rows"], json!([{"_uuid": ["uuid", u]}]));
        assert_eq!(
            p.ops[2]["mutations"],
            json!([
                ["vips", "delete", ["set", ["10.96.0.2:80"]]],
                [
                    "vips",
                    "insert",
                    ["map", [["10.96.0.2:80", "10.1.0.5:8080"]]]
                ]
            ])
        );
        // By name, or a uuid prefix: left to ovn-nbctl.
        for rec in ["cluster-lb-tcp", "0123abcd"] {
            let t = txn(vec![NbOp::Db(DbOp::Remove {
                table: LB.into(),
                record: rec.into(),
                column: "vips".into(),
                values: vec![Val::str("x")],
                if_exists: true,
            })]);
            assert!(check_shapes(&t).is_err(), "{rec}");
        }
    }

    #[test]
    fn what_has_no_native_form_is_refused() {
        let cases = vec![
            vec![NbOp::LsAdd { name: "n".into() }],
            vec![NbOp::PgAdd {
                name: "pg".into(),
                ports: vec![],
            }],
            // --if-exists set, unnamed tables, other operators, references.
            vec![NbOp::Db(DbOp::Set {
                table: LSP.into(),
                record: "p".into(),
                columns: vec![ColVal::set("up", true)],
                if_exists: true,
            })],
            vec![NbOp::Db(DbOp::Set {
                table: "ACL".into(),
                record: "p".into(),
                columns: vec![ColVal::set("priority", 1)],
                if_exists: false,
            })],
            vec![NbOp::Db(DbOp::Set {
                table: LSP.into(),
                record: "p".into(),
                columns: vec![ColVal::set("tag", 1).with_op("<")],
                if_exists: false,
            })],
            vec![NbOp::Db(DbOp::Set {
                table: LSP.into(),
                record: "p".into(),
                columns: vec![ColVal::set("options", Val::Ref("x".into()))],
                if_exists: false,
            })],
            // Names ovn-nbctl could read as uuids; odd addresses; add+delete in one go.
            vec![NbOp::LspDel {
                name: "beef".into(),
            }],
            vec![NbOp::LspSetAddresses {
                name: "p".into(),
                addresses: vec!["0a:58:0a:01:00:05 10.1.0.5/24".into()],
            }],
            vec![
                NbOp::LspAdd {
                    switch: "n".into(),
                    name: "p".into(),
                },
                NbOp::LspDel { name: "p".into() },
            ],
        ];
        for ops in cases {
            let t = txn(ops.clone());
            let resolved = HashMap::from([("p".to_string(), vec![])]);
            let res = check_shapes(&t).and_then(|_| translate(&t, &resolved, None));
            assert!(res.is_err(), "{ops:?} accepted");
        }
        assert_eq!(check_address("0a:58:0a:01:00:05"), Ok(false));
        assert_eq!(check_address("unknown"), Ok(false));
        assert_eq!(
            check_address("0a:58:0a:01:00:05 10.1.0.5 fd00::5"),
            Ok(true)
        );
    }

    #[test]
    fn queries_become_selects() {
        let q = Query::find(
            LSP,
            &["name", "external_ids"],
            vec![
                ColVal::key("external_ids", "pod", "true"),
                ColVal::set("name", "x"),
            ],
        );
        assert_eq!(
            select_for(&q).unwrap(),
            json!({"op": "select", "table": LSP, "columns": ["_uuid", "name", "external_ids"],
                   "where": [["external_ids", "includes", ["map", [["pod", "true"]]]],
                             ["name", "==", "x"]]})
        );
        let bad = Query::find(LSP, &[], vec![ColVal::set("tag", 1).with_op("!=")]);
        assert!(select_for(&bad).is_err());
    }

    #[test]
    fn select_rows_read_like_the_json_output() {
        // The same rows as `ovn-nbctl --format=json --columns=... list` prints them.
        let nbctl = r#"{"data":[[["uuid","u-1"],"p1","0a:58:0a:01:00:05 10.1.0.5",["map",[["pod","true"]]],["set",[]]]],"headings":["_uuid","name","addresses","external_ids","dynamic_addresses"]}"#;
        let wire = json!({"rows": [{"_uuid": ["uuid", "u-1"], "_version": ["uuid", "v"],
            "name": "p1", "addresses": "0a:58:0a:01:00:05 10.1.0.5",
            "external_ids": ["map", [["pod", "true"]]], "dynamic_addresses": ["set", []]}]});
        let want = parse_tables(nbctl).unwrap().remove(0);
        let q = Query::list(
            LSP,
            &["name", "addresses", "external_ids", "dynamic_addresses"],
        );
        assert_eq!(rows_from_select(&q, &wire).unwrap(), want);
        assert_eq!(
            rows_from_select(&Query::list(LSP, &[]), &wire).unwrap(),
            want
        );
        assert!(rows_from_select(&q, &json!({"rows": [{"_uuid": ["uuid", "u"]}]})).is_err());
    }
}

#[cfg(test)]
mod replica_tests {
    use super::*;

    #[test]
    fn replica_follows_updates_and_finds_duplicates_per_switch() {
        let mut r = Replica::default();
        r.apply(&json!({
            LS: {"s1": {"initial": {"name": "n1", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]]}},
                 "s2": {"initial": {"name": "n2"}}},
            LSP: {"p1": {"initial": {"name": "a", "addresses": "0a:58:0a:01:00:05 10.1.0.5"}},
                  "p2": {"initial": {"name": "b"}}},
            "NB_Global": {"g": {"initial": {}}}
        }))
        .unwrap();
        // A port joins s2: its insert and the one-uuid toggle of the switch's ports.
        r.apply(&json!({
            LSP: {"p3": {"insert": {"name": "c", "addresses": "0a:58:0a:01:00:06 10.1.0.6"}}},
            LS: {"s2": {"modify": {"ports": ["uuid", "p3"]}}}
        }))
        .unwrap();
        let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.5")), Some("a".into()));
        // The port itself and other switches do not count.
        assert_eq!(r.duplicate("n1", "a", &ip("10.1.0.5")), None);
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.6")), None);
        assert_eq!(r.switch_of("c").as_deref(), Some("n2"));
        r.apply(&json!({LSP: {"p1": {"delete": null}},
                         LS: {"s1": {"modify": {"ports": ["uuid", "p1"]}}}}))
            .unwrap();
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.5")), None);
        assert_eq!(r.switches["s1"].1, ["p2"]);
        assert!(r.apply(&json!([])).is_err());
        assert!(r.apply(&json!({LS: {"zz": {"modify": {}}}})).is_err());

        // Used by translate: a duplicate on the switch, or inside the transaction, falls back.
        r.synced = true;
        let add = |sw: &str, port: &str, addr: &str| {
            vec![
                NbOp::LspAdd {
                    switch: sw.into(),
                    name: port.into(),
                },
                NbOp::LspSetAddresses {
                    name: port.into(),
                    addresses: vec![addr.into()],
                },
            ]
        };
        let mut t = NbTxn::new();
        t.extend(add("n2", "pd", "0a:58:0a:01:00:09 10.1.0.6"));
        assert!(translate(&t, &HashMap::new(), Some(&r)).is_err());
        let mut t = NbTxn::new();
        t.extend(add("n1", "pd", "0a:58:0a:01:00:09 10.1.0.9"));
        t.extend(add("n1", "pe", "0a:58:0a:01:00:0a 10.1.0.9"));
        assert!(translate(&t, &HashMap::new(), Some(&r)).is_err());
        let mut t = NbTxn::new();
        t.extend(add("n1", "pd", "0a:58:0a:01:00:09 10.1.0.9"));
        t.extend(add("n2", "pe", "0a:58:0a:01:00:0a 10.1.0.9"));
        translate(&t, &HashMap::new(), Some(&r)).unwrap();
    }
}
