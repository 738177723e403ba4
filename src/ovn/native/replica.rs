//! The local replica of what the native translation looks up (`ovn-nbctl` reads the same
//! rows before it decides), kept current by an OVSDB `monitor_cond`, and the NB database
//! identity that tells a reconnect to a restarted server from a new database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::super::jsonrpc::{Client, Event};
use super::super::schema::{col, nb};
use super::super::signals::NbSignalSender;
use super::{DB, NB_GLOBAL};

/// The IPs of a `MAC IP...` address.
pub(super) fn ips_of(a: &str) -> Vec<IpAddr> {
    a.split(' ')
        .skip(1)
        .filter_map(|ip| ip.split('/').next()?.parse().ok())
        .collect()
}

/// One monitored row: its name, the one set column the translation reads (a switch's or
/// router's `ports`, a port's `addresses`, a router port's `networks`) and, for router
/// ports, the `mac`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rec {
    pub name: String,
    pub vals: Vec<String>,
    pub scalar: String,
}

/// What `ovn-nbctl` reads before it decides (does the switch, router or port exist, which
/// switch holds a port, which IPs are taken), kept current by an OVSDB `monitor`: names and
/// the one column each decision needs (a few hundred bytes per port).
#[derive(Debug, Default)]
pub struct Replica {
    /// The monitor's initial contents have arrived on the current connection.
    pub synced: bool,
    /// uuid → port (addresses)
    ports: HashMap<String, Rec>,
    /// port name → uuid (port groups name hundreds of ports at a time)
    port_names: HashMap<String, String>,
    /// uuid → switch (port uuids)
    switches: HashMap<String, Rec>,
    /// uuid → router (port uuids)
    routers: HashMap<String, Rec>,
    /// uuid → router port (networks, mac)
    router_ports: HashMap<String, Rec>,
    /// The `_uuid` of the NB_Global row: a database created afresh (wiped, replaced) has a
    /// new one, which is how a reconnect tells a restarted server from a new database.
    nb_global: Option<String>,
}

/// The monitor request for [`Replica`]: `monitor_cond` so that a change to a switch's
/// `ports` arrives as the one uuid added or removed (`update2`), not the whole set.
pub fn replica_monitor() -> Value {
    let cols = |set: &str, scalar: Option<&str>| {
        let mut c = vec![col::NAME, set];
        c.extend(scalar);
        json!([{ "columns": c }])
    };
    let mut tables = serde_json::Map::new();
    for (table, set, scalar) in MONITORED {
        tables.insert(table.to_string(), cols(set, *scalar));
    }
    // Only the row's identity matters; northd rewrites its other columns constantly.
    tables.insert(
        NB_GLOBAL.into(),
        json!([{"columns": [col::NAME], "select": {"initial": true, "insert": true, "delete": true, "modify": false}}]),
    );
    json!([DB, "replica", tables])
}

/// Monitored tables: (table, set column, scalar column).
const MONITORED: &[(&str, &str, Option<&str>)] = &[
    (nb::LOGICAL_SWITCH, col::PORTS, None),
    (nb::LOGICAL_SWITCH_PORT, col::ADDRESSES, None),
    (nb::LOGICAL_ROUTER, col::PORTS, None),
    (nb::LOGICAL_ROUTER_PORT, col::NETWORKS, Some(col::MAC)),
];

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

/// One row update (`initial`/`insert` carry the row with default-valued columns omitted,
/// `modify` the new scalars and the set members to toggle, `delete` nothing) applied to
/// `map`; the old and new names, for the name index.
fn apply_row(
    map: &mut HashMap<String, Rec>,
    (set_col, scalar_col): (&str, Option<&str>),
    uuid: &str,
    change: &Value,
) -> Result<(Option<String>, Option<String>)> {
    let old = map.get(uuid).map(|r| r.name.clone());
    let full = change.get("initial").or_else(|| change.get("insert"));
    let scalar = |row: &Value| {
        scalar_col
            .and_then(|c| row.get(c))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(row) = full {
        let rec = Rec {
            name: row
                .get(col::NAME)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            vals: row.get(set_col).map(atoms).unwrap_or_default(),
            scalar: scalar(row).unwrap_or_default(),
        };
        let new = Some(rec.name.clone());
        map.insert(uuid.to_string(), rec);
        return Ok((old, new));
    }
    if let Some(diff) = change.get("modify") {
        let Some(rec) = map.get_mut(uuid) else {
            bail!("monitor modifies unknown row {uuid}");
        };
        if let Some(n) = diff.get(col::NAME).and_then(Value::as_str) {
            rec.name = n.to_string();
        }
        if let Some(s) = scalar(diff) {
            rec.scalar = s;
        }
        for member in diff.get(set_col).map(atoms).unwrap_or_default() {
            match rec.vals.iter().position(|v| *v == member) {
                Some(i) => {
                    rec.vals.swap_remove(i);
                }
                None => rec.vals.push(member),
            }
        }
        return Ok((old, Some(rec.name.clone())));
    }
    if change.get("delete").is_some() {
        map.remove(uuid);
        return Ok((old, None));
    }
    bail!("unknown monitor row update for {uuid}: {change}")
}

impl Replica {
    /// Apply `<table-updates2>` (the `monitor_cond` reply or an `update2` notification).
    pub fn apply(&mut self, updates: &Value) -> Result<()> {
        let obj = updates
            .as_object()
            .with_context(|| format!("monitor updates are not an object: {updates}"))?;
        for (table, rows) in obj {
            if table == NB_GLOBAL {
                self.apply_nb_global(rows);
                continue;
            }
            let Some((_, set_col, scalar_col)) = MONITORED.iter().find(|(t, ..)| t == table) else {
                continue;
            };
            let rows = rows
                .as_object()
                .with_context(|| format!("monitor rows of {table} are not an object"))?;
            for (uuid, change) in rows {
                let map = match table.as_str() {
                    nb::LOGICAL_SWITCH => &mut self.switches,
                    nb::LOGICAL_SWITCH_PORT => &mut self.ports,
                    nb::LOGICAL_ROUTER => &mut self.routers,
                    _ => &mut self.router_ports,
                };
                let (old, new) = apply_row(map, (set_col, *scalar_col), uuid, change)
                    .with_context(|| format!("table {table}"))?;
                if table == nb::LOGICAL_SWITCH_PORT && old != new {
                    if let Some(o) = old {
                        self.port_names.remove(&o);
                    }
                    if let Some(n) = new {
                        self.port_names.insert(n, uuid.clone());
                    }
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

    /// A port on switch `switch`, other than `port` and those `skip` accepts (deleted by the
    /// same transaction), that has one of `ips` (as nbctl checks).
    pub fn duplicate(
        &self,
        switch: &str,
        port: &str,
        ips: &[IpAddr],
        skip: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.switches
            .values()
            .filter(|s| s.name == switch)
            .flat_map(|s| &s.vals)
            .filter_map(|u| self.ports.get(u))
            .filter(|p| p.name != port && !skip(&p.name))
            .find(|p| {
                p.vals
                    .iter()
                    .flat_map(|a| ips_of(a))
                    .any(|ip| ips.contains(&ip))
            })
            .map(|p| p.name.clone())
    }

    /// The uuid of the port named `port`.
    pub fn port_uuid(&self, port: &str) -> Option<&str> {
        self.port_names.get(port).map(String::as_str)
    }

    /// The switch holding the port named `port`.
    pub fn switch_of(&self, port: &str) -> Option<String> {
        let uuid = self.port_uuid(port)?;
        self.switches
            .values()
            .find(|s| s.vals.iter().any(|u| u == uuid))
            .map(|s| s.name.clone())
    }

    /// The uuids of the switches (`router = false`) or routers named `name`.
    pub fn named(&self, router: bool, name: &str) -> Vec<&str> {
        let map = if router {
            &self.routers
        } else {
            &self.switches
        };
        map.iter()
            .filter(|(_, r)| r.name == name)
            .map(|(u, _)| u.as_str())
            .collect()
    }

    /// The router port named `name`: its uuid, row and the name of the router holding it.
    pub fn router_port(&self, name: &str) -> Option<(&str, &Rec, Option<&str>)> {
        let (u, rec) = self.router_ports.iter().find(|(_, r)| r.name == name)?;
        let router = self
            .routers
            .values()
            .find(|r| r.vals.iter().any(|p| p == u))
            .map(|r| r.name.as_str());
        Some((u.as_str(), rec, router))
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

/// The monitor methods, newest first: `monitor_cond_since` (ovsdb-server 2.12+) resumes from
/// the last transaction the replica reflects, so a reconnect (a restarted server, a new
/// cluster leader) sends only what changed meanwhile instead of every port again.
const MONITOR_SINCE: &str = "monitor_cond_since";
const MONITOR_COND: &str = "monitor_cond";
/// `monitor_cond_since`'s "no transaction seen yet".
const NO_TXN: &str = "00000000-0000-0000-0000-000000000000";

/// What a monitor reply does to the replica.
#[derive(Debug, PartialEq)]
enum Initial<'a> {
    /// The whole monitored contents: replace the replica.
    Fresh(&'a Value),
    /// Only the changes since the transaction asked for: apply them to the replica.
    Diff(&'a Value),
}

/// Reads the reply to `method`: the updates, what they mean, and the last transaction id
/// they bring the replica to (`None` for `monitor_cond`, which has none). `resumable`: the
/// replica reflects exactly the transaction the request named.
fn read_monitor_reply<'a>(
    method: &str,
    reply: &'a Value,
    resumable: bool,
) -> Result<(Initial<'a>, Option<String>)> {
    if method != MONITOR_SINCE {
        return Ok((Initial::Fresh(reply), None));
    }
    // [found, last-txn-id, table-updates2]
    let (Some(found), Some(txn), Some(updates)) = (
        reply.get(0).and_then(Value::as_bool),
        reply.get(1).and_then(Value::as_str),
        reply.get(2),
    ) else {
        bail!("{MONITOR_SINCE} reply is not [found, last-txn-id, updates]: {reply}");
    };
    let initial = if found && resumable {
        Initial::Diff(updates)
    } else {
        Initial::Fresh(updates)
    };
    Ok((initial, Some(txn.to_string())))
}

/// The replica's monitor request, resuming from `last_txn` with `monitor_cond_since`.
fn replica_monitor_request(since: bool, last_txn: Option<&str>) -> (&'static str, Value) {
    if !since {
        return (MONITOR_COND, replica_monitor());
    }
    let mut params = replica_monitor();
    if let Some(p) = params.as_array_mut() {
        p.push(json!(last_txn.unwrap_or(NO_TXN)));
    }
    (MONITOR_SINCE, params)
}

/// Keeps the replica current across connections: which monitor the server supports and the
/// last transaction the replica reflects.
struct ReplicaKeeper {
    replica: Arc<RwLock<Replica>>,
    signals: Arc<NbSignalSender>,
    database: DatabaseId,
    /// The server answered `monitor_cond_since` (until it says it does not know it).
    since: bool,
    /// The last transaction the replica reflects exactly; `None` after anything went wrong.
    last_txn: Option<String>,
    /// A peer that keeps failing fails every monitor: warn once until one works again.
    monitor_failing: bool,
}

fn write_replica(replica: &RwLock<Replica>) -> std::sync::RwLockWriteGuard<'_, Replica> {
    replica.write().unwrap_or_else(|e| e.into_inner())
}

impl ReplicaKeeper {
    /// A new connection (to the leader, for a cluster): monitor again, resuming if possible.
    async fn connected(&mut self, client: &Client) {
        write_replica(&self.replica).synced = false;
        let (mut method, params) = replica_monitor_request(self.since, self.last_txn.as_deref());
        let mut res = client.call(method, params).await;
        if method == MONITOR_SINCE
            && res
                .as_ref()
                .is_err_and(|e| format!("{e:#}").contains("unknown method"))
        {
            tracing::info!(
                "the NB server has no {MONITOR_SINCE}; every reconnect downloads the replica again"
            );
            self.since = false;
            let (m, p) = replica_monitor_request(false, None);
            method = m;
            res = client.call(method, p).await;
        }
        let reply = match res {
            Ok(r) => r,
            // The next connection tries again; meanwhile the server checks.
            Err(e) if !self.monitor_failing => {
                self.monitor_failing = true;
                tracing::warn!(error = %format!("{e:#}"), "NB monitor failed; retried on every reconnection");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "NB monitor failed again");
                return;
            }
        };
        self.monitor_failing = false;
        let applied = read_monitor_reply(method, &reply, self.last_txn.is_some())
            .and_then(|(initial, txn)| self.apply_initial(initial).map(|()| txn));
        match applied {
            Ok(txn) => self.last_txn = txn,
            Err(e) => {
                self.last_txn = None;
                tracing::warn!(error = %format!("{e:#}"), "NB replica");
            }
        }
    }

    fn apply_initial(&mut self, initial: Initial<'_>) -> Result<()> {
        let mut r = write_replica(&self.replica);
        match initial {
            Initial::Fresh(updates) => {
                let mut fresh = Replica::default();
                fresh.apply(updates)?;
                *r = fresh;
            }
            Initial::Diff(updates) => {
                let rows: usize = updates
                    .as_object()
                    .map(|t| {
                        t.values()
                            .filter_map(Value::as_object)
                            .map(|r| r.len())
                            .sum()
                    })
                    .unwrap_or(0);
                tracing::info!(
                    changed_rows = rows,
                    "NB replica resumed: only the changes since the last transaction were sent"
                );
                r.apply(updates)?;
            }
        }
        r.synced = true;
        self.database.observe(r.database_id(), &self.signals);
        Ok(())
    }

    /// `update2` (`monitor_cond`) or `update3` (`monitor_cond_since`, with its transaction).
    fn notified(&mut self, m: &Value) {
        let params = m.get("params");
        let (updates, txn) = match m.get("method").and_then(Value::as_str) {
            Some("update2") => (params.and_then(|p| p.get(1)), None),
            Some("update3") => (
                params.and_then(|p| p.get(2)),
                params.and_then(|p| p.get(1)).and_then(Value::as_str),
            ),
            _ => return,
        };
        let Some(updates) = updates else { return };
        let mut r = write_replica(&self.replica);
        match r.apply(updates) {
            Ok(()) => {
                if let Some(t) = txn {
                    self.last_txn = Some(t.to_string());
                }
            }
            Err(e) => {
                // A replica we cannot trust is not used, nor resumed from.
                r.synced = false;
                self.last_txn = None;
                tracing::warn!(error = %format!("{e:#}"), "NB replica update");
            }
        }
        self.database.observe(r.database_id(), &self.signals);
    }
}

pub(super) async fn keep_replica(
    client: Client,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    replica: Arc<RwLock<Replica>>,
    signals: Arc<NbSignalSender>,
) {
    let mut keeper = ReplicaKeeper {
        replica,
        signals,
        database: DatabaseId::default(),
        since: true,
        last_txn: None,
        monitor_failing: false,
    };
    let mut connected_before = false;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Connected => {
                // The first connection is start-up, not a recovery.
                if std::mem::replace(&mut connected_before, true) {
                    keeper.signals.reconnected();
                }
                keeper.connected(&client).await;
            }
            Event::Notification(m) => keeper.notified(&m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LS: &str = nb::LOGICAL_SWITCH;
    const LSP: &str = nb::LOGICAL_SWITCH_PORT;
    const LR: &str = nb::LOGICAL_ROUTER;
    const LRP: &str = nb::LOGICAL_ROUTER_PORT;

    #[test]
    fn monitor_replies_resume_only_a_replica_that_is_exact() {
        let u = json!({LSP: {}});
        let since = |found: bool| json!([found, "t9", u]);
        let cases = [
            (
                MONITOR_COND,
                u.clone(),
                true,
                Some((Initial::Fresh(&u), None)),
            ),
            (
                MONITOR_SINCE,
                since(true),
                true,
                Some((Initial::Diff(&u), Some("t9"))),
            ),
            // Not found (history too short, another database): everything again.
            (
                MONITOR_SINCE,
                since(false),
                true,
                Some((Initial::Fresh(&u), Some("t9"))),
            ),
            // Found, but our replica is not the one that transaction left.
            (
                MONITOR_SINCE,
                since(true),
                false,
                Some((Initial::Fresh(&u), Some("t9"))),
            ),
            (MONITOR_SINCE, json!({"x": 1}), true, None),
        ];
        for (i, (method, reply, resumable, want)) in cases.iter().enumerate() {
            let got = read_monitor_reply(method, reply, *resumable).ok();
            let got = got.as_ref().map(|(init, t)| (init, t.as_deref()));
            let want = want.as_ref().map(|(init, t)| (init, *t));
            assert_eq!(got, want, "case {i}");
        }
        let (m, p) = replica_monitor_request(true, None);
        assert_eq!((m, &p[3]), (MONITOR_SINCE, &json!(NO_TXN)));
        let (_, p) = replica_monitor_request(true, Some("t9"));
        assert_eq!(p[3], json!("t9"));
        let (m, p) = replica_monitor_request(false, Some("t9"));
        assert_eq!((m, p), (MONITOR_COND, replica_monitor()));
    }

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
        let none = |_: &str| false;
        assert_eq!(
            r.duplicate("n1", "x", &ip("10.1.0.5"), none),
            Some("a".into())
        );
        // The port itself, ports being deleted and other switches do not count.
        assert_eq!(r.duplicate("n1", "a", &ip("10.1.0.5"), none), None);
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.5"), |p| p == "a"), None);
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.6"), none), None);
        assert_eq!(r.switch_of("c").as_deref(), Some("n2"));
        assert_eq!(r.port_uuid("c"), Some("p3"));
        r.apply(&json!({LSP: {"p1": {"delete": null}},
                         LS: {"s1": {"modify": {"ports": ["uuid", "p1"]}}}}))
            .unwrap();
        assert_eq!(r.duplicate("n1", "x", &ip("10.1.0.5"), none), None);
        assert_eq!(r.port_uuid("a"), None);
        assert_eq!(r.switches["s1"].vals, ["p2"]);
        assert_eq!(r.named(false, "n2"), ["s2"]);
        assert!(r.named(true, "n2").is_empty());
        assert!(r.apply(&json!([])).is_err());
        assert!(r.apply(&json!({LS: {"zz": {"modify": {}}}})).is_err());
    }

    #[test]
    fn routers_and_router_ports_follow_renames_and_scalars() {
        let mut r = Replica::default();
        r.apply(&json!({
            LR: {"r1": {"initial": {"name": "ovn_cluster_router", "ports": ["uuid", "l1"]}}},
            LRP: {"l1": {"initial": {"name": "rtos-n1", "mac": "0a:58:0a:01:00:01",
                                      "networks": "10.1.0.1/24"}}}
        }))
        .unwrap();
        let (u, rec, router) = r.router_port("rtos-n1").unwrap();
        assert_eq!((u, router), ("l1", Some("ovn_cluster_router")));
        assert_eq!(
            (rec.scalar.as_str(), rec.vals.as_slice()),
            ("0a:58:0a:01:00:01", &["10.1.0.1/24".to_string()][..])
        );
        // A modify carries the new scalar and toggles set members.
        r.apply(&json!({LRP: {"l1": {"modify": {"mac": "0a:58:0a:01:00:02",
            "networks": ["set", ["10.1.0.1/24", "fd00::1/64"]]}}}}))
            .unwrap();
        let (_, rec, _) = r.router_port("rtos-n1").unwrap();
        assert_eq!(
            (rec.scalar.as_str(), rec.vals.as_slice()),
            ("0a:58:0a:01:00:02", &["fd00::1/64".to_string()][..])
        );
        // A port renamed keeps the name index right.
        r.apply(&json!({LSP: {"p": {"insert": {"name": "a"}}}}))
            .unwrap();
        r.apply(&json!({LSP: {"p": {"modify": {"name": "b"}}}}))
            .unwrap();
        assert_eq!((r.port_uuid("a"), r.port_uuid("b")), (None, Some("p")));
        r.apply(&json!({LR: {"r1": {"delete": null}}})).unwrap();
        assert_eq!(r.router_port("rtos-n1").unwrap().2, None);
    }
}
