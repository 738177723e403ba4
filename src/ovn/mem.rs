//! An in-memory northbound database for root-free unit tests of the controllers (test builds
//! only). It records every transaction, applies the operations it models to an in-memory copy
//! of the tables (all or nothing, as a real transaction), answers queries from that copy, and
//! can be told to fail the next transactions. An operation it does not model fails the
//! transaction with an error naming it, so a test never passes on an operation it ignored.
//!
//! What the real database (or `ovn-nbctl` before it) refuses and the controllers rely on is
//! refused here too: a port on a missing switch or router, a port name held on another switch
//! or router, a router port re-added with another MAC or network, a second row with a name
//! that the schema indexes (switch and router ports, port groups, address sets). Rows of the
//! tables that the schema does not make roots (ports, routes, NAT, ACLs) live only while some
//! row refers to them, as OVSDB's garbage collection keeps them, so deleting a switch or a
//! router deletes its ports and routes with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::{Result, anyhow, bail};

use super::ctl::{Nb, NbOp, NbTxn};
use super::error::{NbError, TxnFailure};
use super::ovsdb::{ColVal, Datum, DbOp, Query, Row, Val};
use super::schema::{col, nb};
use crate::exec::BoxFuture;

/// Rows of each table, by UUID.
type Tables = BTreeMap<String, BTreeMap<String, Row>>;
/// `--id=@name` references of one transaction: name to UUID.
type Refs = BTreeMap<String, String>;

/// One recorded transaction and whether it was applied.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub ops: Vec<NbOp>,
    pub applied: bool,
}

#[derive(Default)]
struct State {
    tables: Tables,
    log: Vec<Recorded>,
    fail_next: usize,
    next_uuid: u64,
}

#[derive(Default)]
pub struct MemNb {
    state: Mutex<State>,
}

impl MemNb {
    pub fn new() -> MemNb {
        MemNb::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fail the next `n` transactions (recorded, not applied).
    pub fn fail_next(&self, n: usize) {
        self.state().fail_next = n;
    }

    /// Every transaction so far, failed ones included.
    pub fn log(&self) -> Vec<Recorded> {
        self.state().log.clone()
    }

    /// The rows of `table`, in UUID order.
    pub fn rows(&self, table: &str) -> Vec<Row> {
        let s = self.state();
        s.tables
            .get(table)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The row of `table` called `name`.
    pub fn row(&self, table: &str, name: &str) -> Option<Row> {
        self.rows(table)
            .into_iter()
            .find(|r| r.str(col::NAME) == name)
    }

    /// Apply `txn` as a transaction would (for seeding a test's starting database).
    pub fn seed(&self, ops: impl IntoIterator<Item = NbOp>) -> Result<()> {
        let mut s = self.state();
        let mut tables = s.tables.clone();
        let mut refs = Refs::new();
        for op in ops {
            apply(&mut tables, &mut s.next_uuid, &mut refs, &op)?;
        }
        commit(&mut tables)?;
        s.tables = tables;
        Ok(())
    }
}

impl Nb for MemNb {
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
        Box::pin(async move {
            let mut s = self.state();
            let mut rec = Recorded {
                ops: txn.ops.clone(),
                applied: false,
            };
            if s.fail_next > 0 {
                s.fail_next -= 1;
                s.log.push(rec);
                return Err(NbError::unavailable(anyhow!(
                    "in-memory NB: transaction failed as the test asked"
                )));
            }
            let mut tables = s.tables.clone();
            let (mut next, mut refs) = (s.next_uuid, Refs::new());
            let res = txn
                .ops
                .iter()
                .try_for_each(|op| apply(&mut tables, &mut next, &mut refs, op))
                .and_then(|()| commit(&mut tables));
            if res.is_ok() {
                (s.tables, s.next_uuid, rec.applied) = (tables, next, true);
            }
            s.log.push(rec);
            // What a real database refuses is a conflict with what it holds; what this one
            // does not model says so itself.
            res.map_err(|e| {
                let kind = NbError::kind_of(&e).unwrap_or(TxnFailure::Conflict);
                NbError::new(kind, e)
            })
        })
    }

    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        Box::pin(async move {
            let s = self.state();
            Ok(queries.iter().map(|q| select(&s.tables, q)).collect())
        })
    }
}

fn select(tables: &Tables, q: &Query) -> Vec<Row> {
    let Some(rows) = tables.get(&q.table) else {
        return Vec::new();
    };
    rows.values()
        .filter(|r| q.conditions.iter().all(|c| holds(r, c)))
        .map(|r| Row {
            uuid: r.uuid.clone(),
            columns: r
                .columns
                .iter()
                .filter(|(k, _)| q.columns.is_empty() || q.columns.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect()
}

/// Whether `row` satisfies the condition `c` (`=` on a column or a map key).
fn holds(row: &Row, c: &ColVal) -> bool {
    let want = datum(&c.value, &Refs::new());
    let have = match &c.key {
        Some(k) => row.map(&c.column).get(k).map(|v| Datum::Str(v.clone())),
        None => row.get(&c.column).cloned(),
    };
    match c.op {
        "=" => have.as_ref() == Some(&want),
        "!=" => have.as_ref() != Some(&want),
        _ => false,
    }
}

fn datum(v: &Val, refs: &Refs) -> Datum {
    match v {
        Val::Str(s) => Datum::Str(s.clone()),
        Val::Int(i) => Datum::Int(*i),
        Val::Bool(b) => Datum::Bool(*b),
        Val::Uuid(u) => Datum::Uuid(u.clone()),
        Val::Ref(r) => Datum::Uuid(refs.get(r).cloned().unwrap_or_else(|| r.clone())),
        Val::Set(items) => Datum::Set(items.iter().map(|i| datum(i, refs)).collect()),
        Val::Map(pairs) => Datum::Map(
            pairs
                .iter()
                .map(|(k, v)| (datum(k, refs), datum(v, refs)))
                .collect(),
        ),
    }
}

/// The UUID of the row of `table` whose UUID or name is `record`.
fn find(tables: &Tables, table: &str, record: &str) -> Option<String> {
    let rows = tables.get(table)?;
    if rows.contains_key(record) {
        return Some(record.to_string());
    }
    rows.values()
        .find(|r| r.str(col::NAME) == record)
        .map(|r| r.uuid.clone())
}

fn insert(tables: &mut Tables, next: &mut u64, table: &str, name: &str) -> String {
    *next += 1;
    let uuid = format!("{:08x}-0000-4000-8000-{:012x}", *next, *next);
    let mut columns = BTreeMap::new();
    columns.insert(col::NAME.to_string(), Datum::Str(name.to_string()));
    let row = Row {
        uuid: uuid.clone(),
        columns,
    };
    tables
        .entry(table.into())
        .or_default()
        .insert(uuid.clone(), row);
    uuid
}

fn set_columns(row: &mut Row, columns: &[ColVal], refs: &Refs) {
    for c in columns {
        let v = datum(&c.value, refs);
        match &c.key {
            None => {
                row.columns.insert(c.column.clone(), v);
            }
            Some(k) => {
                let mut m: Vec<(Datum, Datum)> = match row.columns.remove(&c.column) {
                    Some(Datum::Map(m)) => m,
                    _ => Vec::new(),
                };
                m.retain(|(mk, _)| mk.as_str() != Some(k));
                m.push((Datum::Str(k.clone()), v));
                row.columns.insert(c.column.clone(), Datum::Map(m));
            }
        }
    }
}

fn row_mut<'t>(tables: &'t mut Tables, table: &str, uuid: &str) -> Result<&'t mut Row> {
    tables
        .get_mut(table)
        .and_then(|t| t.get_mut(uuid))
        .ok_or_else(|| anyhow!("in-memory NB: no row {uuid} in {table}"))
}

/// Apply one operation; the ones the controllers under test use are modelled.
fn apply(tables: &mut Tables, next: &mut u64, refs: &mut Refs, op: &NbOp) -> Result<()> {
    let named = |tables: &Tables, table: &str, name: &str| {
        find(tables, table, name).ok_or_else(|| anyhow!("in-memory NB: no {table} {name}"))
    };
    match op {
        NbOp::LsAdd { name } => {
            if find(tables, nb::LOGICAL_SWITCH, name).is_none() {
                insert(tables, next, nb::LOGICAL_SWITCH, name);
            }
        }
        NbOp::LsDel { name } => {
            // Its ports go with it at commit (garbage collection).
            if let Some(u) = find(tables, nb::LOGICAL_SWITCH, name) {
                destroy(tables, nb::LOGICAL_SWITCH, &u);
            }
        }
        NbOp::LspAdd { switch, name } => {
            let sw = find(tables, nb::LOGICAL_SWITCH, switch).ok_or_else(|| {
                anyhow!("in-memory NB: lsp-add {name}: no logical switch {switch}")
            })?;
            add_port(
                tables,
                next,
                nb::LOGICAL_SWITCH,
                &sw,
                nb::LOGICAL_SWITCH_PORT,
                name,
            )?;
        }
        NbOp::LspDel { name } => {
            if let Some(u) = find(tables, nb::LOGICAL_SWITCH_PORT, name) {
                destroy(tables, nb::LOGICAL_SWITCH_PORT, &u);
            }
        }
        NbOp::LspSetAddresses { name, addresses } => {
            let u = find(tables, nb::LOGICAL_SWITCH_PORT, name)
                .ok_or_else(|| anyhow!("in-memory NB: lsp-set-addresses: no port {name}"))?;
            let v = Val::str_set(addresses);
            set_columns(
                row_mut(tables, nb::LOGICAL_SWITCH_PORT, &u)?,
                &[ColVal::set(col::ADDRESSES, v)],
                refs,
            );
        }
        NbOp::LrAdd { name } => {
            if find(tables, nb::LOGICAL_ROUTER, name).is_none() {
                insert(tables, next, nb::LOGICAL_ROUTER, name);
            }
        }
        NbOp::LrDel { name } => {
            // Its ports, routes and NAT rules go with it at commit.
            if let Some(u) = find(tables, nb::LOGICAL_ROUTER, name) {
                destroy(tables, nb::LOGICAL_ROUTER, &u);
            }
        }
        NbOp::LrpAdd {
            router,
            name,
            mac,
            networks,
        } => {
            let r = find(tables, nb::LOGICAL_ROUTER, router).ok_or_else(|| {
                anyhow!("in-memory NB: lrp-add {name}: no logical router {router}")
            })?;
            let u = add_port(
                tables,
                next,
                nb::LOGICAL_ROUTER,
                &r,
                nb::LOGICAL_ROUTER_PORT,
                name,
            )?;
            let row = row_mut(tables, nb::LOGICAL_ROUTER_PORT, &u)?;
            if row.columns.contains_key(col::MAC) {
                // `--may-exist` keeps a port only when it is exactly the one asked for.
                if row.str(col::MAC) != *mac || row.set(col::NETWORKS) != *networks {
                    bail!(
                        "in-memory NB: lrp-add {name}: the port exists with another MAC or networks"
                    );
                }
            } else {
                row.columns.insert(col::MAC.into(), Datum::Str(mac.clone()));
                let nets = networks.iter().map(|n| Datum::Str(n.clone())).collect();
                row.columns.insert(col::NETWORKS.into(), Datum::Set(nets));
            }
        }
        NbOp::LrpDel { name } => {
            if let Some(u) = find(tables, nb::LOGICAL_ROUTER_PORT, name) {
                destroy(tables, nb::LOGICAL_ROUTER_PORT, &u);
            }
        }
        NbOp::LsLbAdd { switch, lb } => {
            let lb = named(tables, nb::LOAD_BALANCER, lb)?;
            let u = named(tables, nb::LOGICAL_SWITCH, switch)?;
            add_to_set(
                row_mut(tables, nb::LOGICAL_SWITCH, &u)?,
                col::LOAD_BALANCER,
                [Datum::Uuid(lb)],
            );
        }
        NbOp::LbDel { lb } => {
            if let Some(u) = find(tables, nb::LOAD_BALANCER, lb) {
                destroy(tables, nb::LOAD_BALANCER, &u);
            }
        }
        NbOp::PgAdd { name, ports } => {
            if find(tables, nb::PORT_GROUP, name).is_some() {
                bail!("in-memory NB: pg-add {name}: the port group exists");
            }
            let u = insert(tables, next, nb::PORT_GROUP, name);
            set_pg_ports(tables, &u, ports)?;
        }
        NbOp::PgSetPorts { name, ports } => {
            let u = named(tables, nb::PORT_GROUP, name)?;
            set_pg_ports(tables, &u, ports)?;
        }
        NbOp::PgDel { name } => {
            if let Some(u) = find(tables, nb::PORT_GROUP, name) {
                destroy(tables, nb::PORT_GROUP, &u);
            }
        }
        NbOp::Db(db) => apply_db(tables, next, refs, db)?,
        other => return Err(unmodelled(other).into()),
    }
    Ok(())
}

fn unmodelled(op: &dyn std::fmt::Debug) -> NbError {
    NbError::invalid(anyhow!("in-memory NB does not model {op:?}"))
}

/// The port `name` of the switch or router `parent` (a row of `parent_table`), created if
/// missing; `--may-exist` never moves a port that another switch or router holds. Its UUID.
fn add_port(
    tables: &mut Tables,
    next: &mut u64,
    parent_table: &str,
    parent: &str,
    table: &str,
    name: &str,
) -> Result<String> {
    if let Some(u) = find(tables, table, name) {
        let mine = Datum::Uuid(u.clone());
        let here = tables
            .get(parent_table)
            .and_then(|t| t.get(parent))
            .and_then(|r| r.get(col::PORTS))
            .is_some_and(|d| d.as_set().contains(&&mine));
        if !here {
            bail!("in-memory NB: {table} {name} exists on another {parent_table}");
        }
        return Ok(u);
    }
    let u = insert(tables, next, table, name);
    add_to_set(
        row_mut(tables, parent_table, parent)?,
        col::PORTS,
        [Datum::Uuid(u.clone())],
    );
    Ok(u)
}

/// Tables whose rows the schema does not make roots: a row lives while another refers to it.
const NON_ROOT: [&str; 5] = [
    nb::LOGICAL_SWITCH_PORT,
    nb::LOGICAL_ROUTER_PORT,
    nb::LOGICAL_ROUTER_STATIC_ROUTE,
    nb::NAT,
    nb::ACL,
];

/// Tables with a unique index on `name`.
const UNIQUE_NAME: [&str; 4] = [
    nb::LOGICAL_SWITCH_PORT,
    nb::LOGICAL_ROUTER_PORT,
    nb::PORT_GROUP,
    nb::ADDRESS_SET,
];

/// What the server does when a transaction commits: collect the unreferenced rows of the
/// non-root tables, then check the unique names.
fn commit(tables: &mut Tables) -> Result<()> {
    loop {
        let mut referenced = BTreeSet::new();
        for rows in tables.values() {
            for r in rows.values() {
                r.columns
                    .values()
                    .for_each(|d| uuids_in(d, &mut referenced));
            }
        }
        let mut collected = false;
        for t in NON_ROOT {
            if let Some(rows) = tables.get_mut(t) {
                let before = rows.len();
                rows.retain(|u, _| referenced.contains(u));
                collected |= rows.len() != before;
            }
        }
        if !collected {
            break;
        }
    }
    for t in UNIQUE_NAME {
        let mut seen = BTreeSet::new();
        for r in tables.get(t).into_iter().flat_map(|rows| rows.values()) {
            let n = r.str(col::NAME);
            if !seen.insert(n.clone()) {
                bail!("in-memory NB: constraint violation: two {t} rows named {n:?}");
            }
        }
    }
    Ok(())
}

fn uuids_in(d: &Datum, out: &mut BTreeSet<String>) {
    match d {
        Datum::Uuid(u) => {
            out.insert(u.clone());
        }
        Datum::Set(items) => items.iter().for_each(|i| uuids_in(i, out)),
        Datum::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            uuids_in(k, out);
            uuids_in(v, out);
        }),
        _ => {}
    }
}

/// A port group's `ports`: the UUIDs of the named switch ports, which must exist.
fn set_pg_ports(tables: &mut Tables, pg: &str, ports: &[String]) -> Result<()> {
    let uuids = ports
        .iter()
        .map(|p| {
            find(tables, nb::LOGICAL_SWITCH_PORT, p)
                .map(Datum::Uuid)
                .ok_or_else(|| anyhow!("in-memory NB: no logical switch port {p}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let row = row_mut(tables, nb::PORT_GROUP, pg)?;
    row.columns.insert(col::PORTS.into(), Datum::Set(uuids));
    Ok(())
}

/// Delete a row and every reference to it.
fn destroy(tables: &mut Tables, table: &str, uuid: &str) {
    if let Some(rows) = tables.get_mut(table) {
        rows.remove(uuid);
    }
    for rows in tables.values_mut() {
        for r in rows.values_mut() {
            drop_refs(r, uuid);
        }
    }
}

fn add_to_set(row: &mut Row, column: &str, items: impl IntoIterator<Item = Datum>) {
    let mut have = match row.columns.remove(column) {
        Some(Datum::Set(v)) => v,
        Some(one) => vec![one],
        None => Vec::new(),
    };
    for i in items {
        if !have.contains(&i) {
            have.push(i);
        }
    }
    row.columns.insert(column.to_string(), Datum::Set(have));
}

/// Remove set members or map keys equal to `values`.
fn remove_from(row: &mut Row, column: &str, values: &[Datum]) {
    match row.columns.get_mut(column) {
        Some(Datum::Set(v)) => v.retain(|d| !values.contains(d)),
        Some(Datum::Map(m)) => m.retain(|(k, _)| !values.contains(k)),
        Some(one) if values.contains(one) => {
            row.columns.remove(column);
        }
        _ => {}
    }
}

/// A deleted row's UUID leaves every set that referred to it.
fn drop_refs(row: &mut Row, uuid: &str) {
    for v in row.columns.values_mut() {
        if let Datum::Set(items) = v {
            items.retain(|d| *d != Datum::Uuid(uuid.to_string()));
        }
    }
}

fn apply_db(tables: &mut Tables, next: &mut u64, refs: &mut Refs, op: &DbOp) -> Result<()> {
    match op {
        DbOp::Create { table, id, columns } => {
            let u = insert(tables, next, table, "");
            let row = row_mut(tables, table, &u)?;
            row.columns.clear();
            set_columns(row, columns, refs);
            if let Some(id) = id {
                refs.insert(id.clone(), u);
            }
        }
        DbOp::Add {
            table,
            record,
            column,
            values,
        } => {
            let u = find(tables, table, record)
                .ok_or_else(|| anyhow!("in-memory NB: add {table} {record}: no such row"))?;
            let items = values.iter().map(|v| datum(v, refs));
            add_to_set(row_mut(tables, table, &u)?, column, items);
        }
        DbOp::Remove {
            table,
            record,
            column,
            values,
            if_exists,
        } => match find(tables, table, record) {
            Some(u) => {
                let values: Vec<Datum> = values.iter().map(|v| datum(v, refs)).collect();
                remove_from(row_mut(tables, table, &u)?, column, &values);
            }
            None if *if_exists => {}
            None => bail!("in-memory NB: remove {table} {record}: no such row"),
        },
        DbOp::Set {
            table,
            record,
            columns,
            if_exists,
        } => match find(tables, table, record) {
            Some(u) => set_columns(row_mut(tables, table, &u)?, columns, refs),
            None if *if_exists => {}
            None => bail!("in-memory NB: set {table} {record}: no such row"),
        },
        DbOp::Clear {
            table,
            record,
            column,
            if_exists,
        } => match find(tables, table, record) {
            Some(u) => {
                row_mut(tables, table, &u)?.columns.remove(column);
            }
            None if *if_exists => {}
            None => bail!("in-memory NB: clear {table} {record}: no such row"),
        },
        DbOp::Destroy {
            table,
            record,
            if_exists,
        } => match find(tables, table, record) {
            Some(u) => destroy(tables, table, &u),
            None if *if_exists => {}
            None => bail!("in-memory NB: destroy {table} {record}: no such row"),
        },
        other => return Err(unmodelled(other).into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(ops: Vec<NbOp>) -> NbTxn {
        let t: NbTxn = ops.into_iter().collect();
        t
    }

    #[tokio::test]
    async fn applies_whole_transactions_records_them_and_fails_on_request() {
        let db = MemNb::new();
        db.seed([NbOp::LsAdd { name: "n1".into() }]).unwrap();
        let add = txn(vec![
            NbOp::LspAdd {
                switch: "n1".into(),
                name: "p".into(),
            },
            NbOp::Db(DbOp::Set {
                table: nb::LOGICAL_SWITCH_PORT.into(),
                record: "p".into(),
                columns: vec![ColVal::key(col::EXTERNAL_IDS, "pod", "true")],
                if_exists: false,
            }),
        ]);
        db.fail_next(1);
        let e = db.transact(&add).await.unwrap_err();
        assert_eq!(e.kind(), TxnFailure::Unavailable);
        assert!(db.row(nb::LOGICAL_SWITCH_PORT, "p").is_none());
        db.transact(&add).await.unwrap();
        let q = Query::find(
            nb::LOGICAL_SWITCH_PORT,
            &[col::NAME],
            vec![ColVal::key(col::EXTERNAL_IDS, "pod", "true")],
        );
        let got = db.query(&[q]).await.unwrap();
        assert_eq!(got[0].len(), 1);
        assert_eq!(got[0][0].str(col::NAME), "p");
        assert!(got[0][0].get(col::EXTERNAL_IDS).is_none(), "not asked for");
        let applied: Vec<bool> = db.log().iter().map(|r| r.applied).collect();
        assert_eq!(applied, [false, true]);
        // A port on a missing switch fails the whole transaction, as ovn-nbctl does.
        let bad = txn(vec![
            NbOp::LspDel { name: "p".into() },
            NbOp::LspAdd {
                switch: "n2".into(),
                name: "q".into(),
            },
        ]);
        assert!(db.transact(&bad).await.is_err());
        assert!(db.row(nb::LOGICAL_SWITCH_PORT, "p").is_some());
        // What it does not model is an error, never a silent no-op.
        let unmodelled = txn(vec![NbOp::LrLbAdd {
            router: "r".into(),
            lb: "lb".into(),
        }]);
        let e = db.transact(&unmodelled).await.unwrap_err();
        assert_eq!(e.kind(), TxnFailure::Invalid, "{e:#}");
    }

    fn lrp(router: &str, name: &str, mac: &str, net: &str) -> NbOp {
        NbOp::LrpAdd {
            router: router.into(),
            name: name.into(),
            mac: mac.into(),
            networks: vec![net.into()],
        }
    }

    #[tokio::test]
    async fn routers_and_switches_own_their_ports_and_refuse_what_ovn_refuses() {
        let db = MemNb::new();
        let mac = "0a:58:0a:01:00:01";
        db.seed([
            NbOp::LrAdd { name: "r".into() },
            NbOp::LrAdd { name: "r2".into() },
            NbOp::LsAdd { name: "s".into() },
            NbOp::LsAdd { name: "s2".into() },
            lrp("r", "rp", mac, "10.1.0.1/24"),
            NbOp::LspAdd {
                switch: "s".into(),
                name: "sp".into(),
            },
        ])
        .unwrap();
        // Asked again exactly: nothing to do.
        db.transact(&txn(vec![lrp("r", "rp", mac, "10.1.0.1/24")]))
            .await
            .unwrap();
        let refused = [
            // `--may-exist` changes nothing of an existing router port, and moves nothing.
            lrp("r", "rp", mac, "10.1.9.1/24"),
            lrp("r2", "rp", mac, "10.1.0.1/24"),
            NbOp::LspAdd {
                switch: "s2".into(),
                name: "sp".into(),
            },
            // No such router.
            lrp("gone", "x", mac, "10.1.0.1/24"),
            // A second port group of one name.
            NbOp::PgAdd {
                name: "sp".into(),
                ports: vec![],
            },
        ];
        db.seed([NbOp::PgAdd {
            name: "sp".into(),
            ports: vec![],
        }])
        .unwrap();
        for op in refused {
            let e = db.transact(&txn(vec![op.clone()])).await.unwrap_err();
            assert_eq!(e.kind(), TxnFailure::Conflict, "{op:?}: {e:#}");
        }
        // A changed port is deleted and added again in one transaction.
        db.transact(&txn(vec![
            NbOp::LrpDel { name: "rp".into() },
            lrp("r", "rp", mac, "10.1.9.1/24"),
        ]))
        .await
        .unwrap();
        let rp = db.row(nb::LOGICAL_ROUTER_PORT, "rp").unwrap();
        assert_eq!(rp.set(col::NETWORKS), ["10.1.9.1/24"]);
        assert_eq!(
            db.row(nb::LOGICAL_ROUTER, "r").unwrap().set(col::PORTS),
            [rp.uuid]
        );
        // Deleting the router and the switch deletes their ports.
        db.transact(&txn(vec![
            NbOp::LrDel { name: "r".into() },
            NbOp::LsDel { name: "s".into() },
        ]))
        .await
        .unwrap();
        assert!(db.rows(nb::LOGICAL_ROUTER_PORT).is_empty());
        assert!(db.rows(nb::LOGICAL_SWITCH_PORT).is_empty());
        assert!(db.row(nb::LOGICAL_ROUTER, "r2").is_some());
    }
}
