//! The translation of an [`NbTxn`] into one OVSDB `transact`: a dispatcher over the op
//! families (ports, topology, port groups, generic database commands) sharing a [`Ctx`]
//! that collects the operations and remembers what the transaction itself created or
//! deleted. Pure: the replica snapshot answers what `ovn-nbctl` would look up, and every
//! decision taken from it is guarded by a `wait` (or a unique index, or referential
//! integrity) so that a concurrent change aborts the transaction instead of corrupting it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::{Value, json};

use super::super::ctl::{NbOp, NbTxn};
use super::super::ovsdb::{ColVal, Val};
use super::super::schema::{col, nb};
use super::replica::Replica;
use super::{db, groups, ports, topology};

/// Why a transaction has no native form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNative {
    /// A shape the translation does not cover (it then runs through the exec backend).
    Unsupported(String),
    /// `ovn-nbctl` would refuse it, as read from the replica (which may lag a concurrent
    /// change: re-read and retried before the refusal is the answer).
    Refused(String),
}

/// Kept for the shapes that are knowingly left to `ovn-nbctl`.
pub type Unsupported = NotNative;

pub fn unsupported<T>(why: impl Into<String>) -> Result<T, NotNative> {
    Err(NotNative::Unsupported(why.into()))
}

pub fn refused<T>(why: impl Into<String>) -> Result<T, NotNative> {
    Err(NotNative::Refused(why.into()))
}

/// The OVSDB operations of a transaction, and what each stands for (for error messages).
#[derive(Debug)]
pub struct Plan {
    pub ops: Vec<Value>,
    pub what: Vec<String>,
}

/// What this transaction did to a row it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Inserted by this transaction: the index of its `insert` op.
    Created(usize),
    Deleted,
}

/// The translation state of one transaction.
pub struct Ctx<'a> {
    pub replica: &'a Replica,
    pub ops: Vec<Value>,
    pub what: Vec<String>,
    /// (table, name) of rows this transaction created or deleted.
    pub done: HashMap<(&'static str, String), Done>,
    /// `--id=@name` symbols defined so far.
    pub refs: HashSet<String>,
    /// Switches already checked to exist once.
    pub switches_checked: HashSet<String>,
    /// The switch of each port this transaction creates.
    pub switch_of: HashMap<String, String>,
    /// The IPs this transaction gives ports, per switch.
    pub ips_here: HashMap<(String, IpAddr), String>,
    /// Counter for our own `uuid-name`s.
    seq: usize,
}

impl<'a> Ctx<'a> {
    pub fn new(replica: &'a Replica) -> Self {
        Ctx {
            replica,
            ops: Vec::new(),
            what: Vec::new(),
            done: HashMap::new(),
            refs: HashSet::new(),
            switches_checked: HashSet::new(),
            switch_of: HashMap::new(),
            ips_here: HashMap::new(),
            seq: 0,
        }
    }

    /// Append an op; its index.
    pub fn push(&mut self, op: Value, what: impl Into<String>) -> usize {
        self.ops.push(op);
        self.what.push(what.into());
        self.ops.len() - 1
    }

    /// A fresh `uuid-name` for a row we insert; the double underscore keeps it apart from
    /// the callers' `--id` symbols (which [`Ctx::define`] refuses with that prefix).
    pub fn row_id(&mut self, kind: &str) -> String {
        self.seq += 1;
        format!("__{kind}{}", self.seq)
    }

    /// Register a caller's `--id=@name`.
    pub fn define(&mut self, id: &str) -> Result<(), NotNative> {
        let valid = id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !id.starts_with("__");
        if !valid {
            return unsupported(format!("--id=@{id} is not a plain identifier"));
        }
        if !self.refs.insert(id.to_string()) {
            return unsupported(format!("--id=@{id} defined twice"));
        }
        Ok(())
    }

    pub fn state(&self, table: &'static str, name: &str) -> Option<Done> {
        self.done.get(&(table, name.to_string())).copied()
    }

    pub fn mark(&mut self, table: &'static str, name: &str, d: Done) {
        self.done.insert((table, name.to_string()), d);
    }

    /// A value in OVSDB wire syntax, `@name` references resolved to this transaction's rows.
    pub fn val(&self, v: &Val) -> Result<Value, NotNative> {
        val_json(v, &self.refs)
    }

    /// The ops' `uuid-name` of the row inserted at `i`.
    pub fn named_uuid(&self, i: usize) -> Value {
        json!(["named-uuid", self.ops[i]["uuid-name"]])
    }
}

/// A value in OVSDB wire syntax; `Ref`s must name a `--id` defined in `refs`.
pub fn val_json(v: &Val, refs: &HashSet<String>) -> Result<Value, NotNative> {
    Ok(match v {
        Val::Str(s) => json!(s),
        Val::Int(i) => json!(i),
        Val::Bool(b) => json!(b),
        Val::Uuid(u) => json!(["uuid", u]),
        Val::Ref(r) if refs.contains(r) => json!(["named-uuid", r]),
        Val::Ref(r) => return unsupported(format!("reference @{r} to no row of the transaction")),
        Val::Set(items) => json!([
            "set",
            items
                .iter()
                .map(|i| val_json(i, refs))
                .collect::<Result<Vec<_>, _>>()?
        ]),
        Val::Map(pairs) => json!([
            "map",
            pairs
                .iter()
                .map(|(k, v)| Ok(json!([val_json(k, refs)?, val_json(v, refs)?])))
                .collect::<Result<Vec<_>, NotNative>>()?
        ]),
    })
}

/// Tables whose records `ovn-nbctl` finds by their `name` column (and we with a `where`).
pub const NAMED_TABLES: &[&str] = &[
    nb::LOGICAL_SWITCH,
    nb::LOGICAL_SWITCH_PORT,
    nb::LOGICAL_ROUTER,
    nb::LOGICAL_ROUTER_PORT,
    nb::PORT_GROUP,
    nb::ADDRESS_SET,
    nb::LOAD_BALANCER,
];

/// Map-typed columns (an empty value is `["map", []]`, not `["set", []]`) among those the
/// project clears.
pub const MAP_COLUMNS: &[&str] = &[
    col::EXTERNAL_IDS,
    col::OTHER_CONFIG,
    col::OPTIONS,
    col::VIPS,
];

/// The table name as the schema module spells it (ops carry owned strings).
pub fn table_const(table: &str) -> Result<&'static str, NotNative> {
    const ALL: &[&str] = &[
        nb::NB_GLOBAL,
        nb::LOGICAL_SWITCH,
        nb::LOGICAL_SWITCH_PORT,
        nb::LOGICAL_ROUTER,
        nb::LOGICAL_ROUTER_PORT,
        nb::LOGICAL_ROUTER_STATIC_ROUTE,
        nb::NAT,
        nb::LOAD_BALANCER,
        nb::ACL,
        nb::PORT_GROUP,
        nb::ADDRESS_SET,
    ];
    match ALL.iter().find(|t| t.eq_ignore_ascii_case(table)) {
        Some(t) => Ok(t),
        None => unsupported(format!("table {table}")),
    }
}

/// `ovn-nbctl` resolves a record argument as a full uuid first, then by name, then as a
/// uuid prefix; a name that could be read as a uuid or a prefix of one (hex digits, with `-`
/// exactly where a uuid has them) is left to it. Longer hex names (the address sets' `a`
/// followed by a hash) can never be a prefix: a uuid has a `-` after 8 digits.
pub fn plain_name(n: &str) -> Result<(), NotNative> {
    let could_be_uuid = n.len() <= 36
        && n.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if could_be_uuid {
        return unsupported(format!("record {n:?} could be a uuid"));
    }
    Ok(())
}

/// A complete row uuid (`8-4-4-4-12` hex); `ovn-nbctl` resolves it the same way (an exact
/// uuid beats any name).
pub fn full_uuid(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub fn by_uuid(u: &str) -> Value {
    json!([[col::UUID, "==", ["uuid", u]]])
}

pub fn by_name(name: &str) -> Value {
    json!([[col::NAME, "==", name]])
}

/// The `where` for a record argument: a full uuid, or a name in a named table.
pub fn record_cond(table: &str, record: &str) -> Result<Value, NotNative> {
    if full_uuid(record) {
        return Ok(by_uuid(record));
    }
    if !NAMED_TABLES.contains(&table) {
        return unsupported(format!("{table} record {record:?} by name"));
    }
    plain_name(record)?;
    Ok(by_name(record))
}

/// A `wait` that holds when the rows matching `cond` show exactly `rows` in `columns`.
pub fn wait(table: &str, cond: Value, columns: &[&str], rows: Value) -> Value {
    json!({"op": "wait", "table": table, "timeout": 0, "where": cond,
           "columns": columns, "until": "==", "rows": rows})
}

/// Exactly one row is named `name`.
pub fn wait_one(table: &str, name: &str) -> Value {
    wait(
        table,
        by_name(name),
        &[col::NAME],
        json!([{ col::NAME: name }]),
    )
}

/// No row is named `name`.
pub fn wait_none(table: &str, name: &str) -> Value {
    wait(table, by_name(name), &[col::NAME], json!([]))
}

/// The row with uuid `u` exists (and, with `name`, still has that name).
pub fn wait_uuid(table: &str, u: &str, name: Option<&str>) -> Value {
    match name {
        Some(n) => wait(
            table,
            json!([[col::UUID, "==", ["uuid", u]], [col::NAME, "==", n]]),
            &[col::NAME],
            json!([{ col::NAME: n }]),
        ),
        None => wait(
            table,
            by_uuid(u),
            &[col::UUID],
            json!([{ col::UUID: ["uuid", u] }]),
        ),
    }
}

/// The record exists (once, when named), as `ovn-nbctl` requires of `set`, `add`, ...
pub fn wait_record(table: &str, record: &str) -> Result<Value, NotNative> {
    if full_uuid(record) {
        return Ok(wait_uuid(table, record, None));
    }
    record_cond(table, record)?;
    Ok(wait_one(table, record))
}

pub fn mutate(table: &str, cond: Value, mutations: Value) -> Value {
    json!({"op": "mutate", "table": table, "where": cond, "mutations": mutations})
}

pub fn update(table: &str, cond: Value, row: Value) -> Value {
    json!({"op": "update", "table": table, "where": cond, "row": row})
}

pub fn delete(table: &str, cond: Value) -> Value {
    json!({"op": "delete", "table": table, "where": cond})
}

pub fn insert(table: &str, row: Value, id: &str) -> Value {
    json!({"op": "insert", "table": table, "row": row, "uuid-name": id})
}

/// `col[:key]=value` on an existing row: the whole column, or the key deleted and inserted
/// (a map `insert` keeps an existing key's old value).
pub fn set_column(table: &str, cond: Value, c: &ColVal, v: Value) -> Value {
    match &c.key {
        None => update(table, cond, json!({ c.column.clone(): v })),
        Some(k) => mutate(
            table,
            cond,
            json!([
                [c.column, "delete", ["set", [k]]],
                [c.column, "insert", ["map", [[k, v]]]]
            ]),
        ),
    }
}

/// Apply `col[:key]=value` to a row being inserted (as a later `set` would).
pub fn merge_into_row(row: &mut Value, c: &ColVal, v: Value) -> Result<(), NotNative> {
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
            let is_map = entry.get(0).and_then(Value::as_str) == Some("map");
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

/// Translate a transaction against a replica snapshot (in sync). Unit-tested per family, and
/// compared with `ovn-nbctl` on real databases in `tests/nb_native.rs`.
/// What `--if-exists lsp-del` / `lrp-del` do to a port not touched earlier in the transaction:
/// `uuid` is the port's row in the replica (`None`: it is absent, and must stay so). The port
/// row goes, and so does its uuid in the parent's (switch's or router's) `ports` column.
pub struct PortDelete<'n> {
    pub cmd: &'static str,
    pub port_table: &'static str,
    pub parent_table: &'static str,
    pub parent: &'static str,
    pub name: &'n str,
}

impl PortDelete<'_> {
    pub fn plan(&self, cx: &mut Ctx, uuid: Option<String>) {
        let (cmd, name) = (self.cmd, self.name);
        let Some(u) = uuid else {
            cx.push(
                wait_none(self.port_table, name),
                format!("{cmd} {name}: still absent"),
            );
            cx.mark(self.port_table, name, Done::Deleted);
            return;
        };
        let reference = json!(["uuid", u]);
        cx.push(
            wait_uuid(self.port_table, &u, Some(name)),
            format!("{cmd} {name}: still {u}"),
        );
        cx.push(
            mutate(
                self.parent_table,
                json!([[col::PORTS, "includes", reference]]),
                json!([[col::PORTS, "delete", reference]]),
            ),
            format!("{cmd} {name}: remove from its {}", self.parent),
        );
        cx.push(
            delete(self.port_table, by_uuid(&u)),
            format!("{cmd} {name}: delete"),
        );
        cx.mark(self.port_table, name, Done::Deleted);
    }
}

pub fn translate(txn: &NbTxn, replica: &Replica) -> Result<Plan, NotNative> {
    let mut cx = Ctx::new(replica);
    for op in &txn.ops {
        one(&mut cx, op)?;
    }
    Ok(Plan {
        ops: cx.ops,
        what: cx.what,
    })
}

fn one(cx: &mut Ctx, op: &NbOp) -> Result<(), NotNative> {
    use NbOp::*;
    match op {
        LspAdd { switch, name } => ports::lsp_add(cx, switch, name),
        LspSetAddresses { name, addresses } => ports::lsp_set_addresses(cx, name, addresses),
        LspDel { name } => ports::lsp_del(cx, name),
        LsAdd { name } => topology::add_named(cx, nb::LOGICAL_SWITCH, name),
        LrAdd { name } => topology::add_named(cx, nb::LOGICAL_ROUTER, name),
        LsDel { name } => topology::del_named(cx, nb::LOGICAL_SWITCH, name),
        LrDel { name } => topology::del_named(cx, nb::LOGICAL_ROUTER, name),
        LrpAdd {
            router,
            name,
            mac,
            networks,
        } => topology::lrp_add(cx, router, name, mac, networks),
        LrpDel { name } => topology::lrp_del(cx, name),
        LsLbAdd { switch, lb } => topology::lb_attach(cx, nb::LOGICAL_SWITCH, switch, lb, true),
        LsLbDel { switch, lb } => topology::lb_attach(cx, nb::LOGICAL_SWITCH, switch, lb, false),
        LrLbAdd { router, lb } => topology::lb_attach(cx, nb::LOGICAL_ROUTER, router, lb, true),
        LbDel { lb } => topology::lb_del(cx, lb),
        PgAdd { name, ports } => groups::pg_add(cx, name, ports),
        PgSetPorts { name, ports } => groups::pg_set_ports(cx, name, ports),
        PgDel { name } => groups::pg_del(cx, name),
        Db(op) => db::db_op(cx, op),
        LrRouteAdd { .. } | LrRouteDel { .. } | LrNatAdd { .. } | LrNatDel { .. } => {
            unsupported(format!(
                "{op:?} has no native form (the project writes routes and NAT with create + add)"
            ))
        }
    }
}

/// A replica built in memory for the family tests: switches `n1` (ports `a` = 10.1.0.5,
/// `b`) and `join`, switch `dup` twice, router `r1` with port `rtos-n1`, port `c` on `join`.
#[cfg(test)]
pub fn test_replica() -> Replica {
    let mut r = Replica::default();
    r.apply(&json!({
        nb::LOGICAL_SWITCH: {
            "s1": {"initial": {"name": "n1", "ports": ["set", [["uuid", "p1"], ["uuid", "p2"]]]}},
            "s2": {"initial": {"name": "join", "ports": ["uuid", "p3"]}},
            "s3": {"initial": {"name": "dup"}},
            "s4": {"initial": {"name": "dup"}}},
        nb::LOGICAL_SWITCH_PORT: {
            "p1": {"initial": {"name": "pa", "addresses": "0a:58:0a:01:00:05 10.1.0.5"}},
            "p2": {"initial": {"name": "pb"}},
            "p3": {"initial": {"name": "pc", "addresses": "router"}}},
        nb::LOGICAL_ROUTER: {"r1": {"initial": {"name": "r1", "ports": ["uuid", "l1"]}}},
        nb::LOGICAL_ROUTER_PORT: {"l1": {"initial": {"name": "rtos-n1",
            "mac": "0a:58:0a:01:00:01", "networks": "10.1.0.1/24"}}},
    }))
    .unwrap_or_else(|e| panic!("test replica: {e:#}"));
    r.synced = true;
    r
}

/// The plan's ops as `"op table"` strings, for table-style comparisons.
#[cfg(test)]
pub fn kinds(p: &Plan) -> Vec<String> {
    p.ops
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["op"].as_str().unwrap_or("?"),
                o["table"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A table-test case: what it is, the ops, and the plan's op kinds (`None`: no plan).
#[cfg(test)]
pub type Case = (&'static str, Vec<NbOp>, Option<Vec<&'static str>>);

/// Translate each case against the test replica: a plan of the case's op kinds, or (`None`) a
/// refusal — `any_error` also accepts an unsupported shape.
#[cfg(test)]
pub fn check_cases(cases: Vec<Case>, any_error: bool) {
    let r = test_replica();
    for (what, ops, want) in cases {
        let got = translate(&txn(ops), &r);
        match want {
            Some(k) => assert_eq!(
                kinds(&got.unwrap_or_else(|e| panic!("{what}: {e:?}"))),
                k,
                "{what}"
            ),
            None if any_error => assert!(got.is_err(), "{what}: {got:?}"),
            None => assert!(matches!(got, Err(NotNative::Refused(_))), "{what}: {got:?}"),
        }
    }
}

#[cfg(test)]
pub fn txn(ops: Vec<NbOp>) -> NbTxn {
    let mut t = NbTxn::new();
    t.extend(ops);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_resolve_references_to_rows_of_the_transaction() {
        let refs = HashSet::from(["acl1".to_string()]);
        let cases = [
            (Val::str("x"), Some(json!("x"))),
            (Val::Int(3), Some(json!(3))),
            (Val::Uuid("u".into()), Some(json!(["uuid", "u"]))),
            (Val::Ref("acl1".into()), Some(json!(["named-uuid", "acl1"]))),
            (Val::Ref("acl2".into()), None),
            (
                Val::Set(vec![Val::Ref("acl1".into()), Val::Uuid("u".into())]),
                Some(json!(["set", [["named-uuid", "acl1"], ["uuid", "u"]]])),
            ),
            (
                Val::str_map([("k", "v")]),
                Some(json!(["map", [["k", "v"]]])),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(val_json(&v, &refs).ok(), want, "{v:?}");
        }
    }

    #[test]
    fn ids_must_be_plain_unique_and_not_ours() {
        let r = Replica::default();
        let mut cx = Ctx::new(&r);
        for (id, ok) in [
            ("acl1", true),
            ("acl1", false),
            ("__lsp1", false),
            ("a-b", false),
            ("1a", false),
            ("_x", true),
        ] {
            assert_eq!(cx.define(id).is_ok(), ok, "{id}");
        }
        assert!(cx.row_id("lsp").starts_with("__"));
    }

    #[test]
    fn records_are_uuids_or_names_of_named_tables() {
        let u = "0123abcd-0000-4000-8000-00000000beef";
        let cases = [
            (nb::LOAD_BALANCER, u, Some(by_uuid(u))),
            (nb::ACL, u, Some(by_uuid(u))),
            (nb::LOGICAL_SWITCH, "n1", Some(by_name("n1"))),
            (nb::ACL, "n1", None),
            // Could be a uuid prefix to ovn-nbctl; the longer hex names never are.
            (nb::LOGICAL_SWITCH, "beef", None),
            (nb::LOGICAL_SWITCH, "0123abcd-01", None),
            (
                nb::ADDRESS_SET,
                "a7148608989646301645",
                Some(by_name("a7148608989646301645")),
            ),
            (nb::ADDRESS_SET, "0123abcd-0g", Some(by_name("0123abcd-0g"))),
        ];
        for (t, rec, want) in cases {
            assert_eq!(record_cond(t, rec).ok(), want, "{t} {rec}");
        }
        assert_eq!(table_const("logical_switch"), Ok(nb::LOGICAL_SWITCH));
        assert!(table_const("Bridge").is_err());
    }

    #[test]
    fn routes_and_nat_commands_are_left_to_nbctl() {
        let r = test_replica();
        let t = txn(vec![NbOp::LrNatDel {
            router: "r1".into(),
            kind: None,
            ip: None,
        }]);
        assert!(matches!(translate(&t, &r), Err(NotNative::Unsupported(_))));
    }
}
