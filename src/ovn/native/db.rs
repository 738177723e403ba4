//! The generic database commands: `[--id=@x] create`, `[--if-exists] set`, `add`,
//! `[--if-exists] remove`, `[--if-exists] clear`, `[--if-exists] destroy`, `wait-until`.
//!
//! A record is a full uuid or, in a table `ovn-nbctl` names rows in, a name; without
//! `--if-exists` it must exist (once, by name), which a `wait` checks on the server, so a
//! missing record aborts the transaction as `ovn-nbctl` fails it. `@name` references become
//! OVSDB named uuids of the rows created earlier in the same transaction.

use serde_json::{Value, json};

use super::super::ovsdb::{ColVal, DbOp, Val};
use super::super::schema::{col, nb};
use super::plan::{
    Ctx, Done, MAP_COLUMNS, NAMED_TABLES, NotNative, delete, full_uuid, insert, merge_into_row,
    mutate, record_cond, set_column, table_const, unsupported, update, wait_record,
};

pub fn db_op(cx: &mut Ctx, op: &DbOp) -> Result<(), NotNative> {
    match op {
        DbOp::Create { table, id, columns } => create(cx, table, id.as_deref(), columns),
        DbOp::Set {
            table,
            record,
            columns,
            if_exists,
        } => set(cx, table, record, columns, *if_exists),
        DbOp::Add {
            table,
            record,
            column,
            values,
        } => add_remove(cx, table, record, column, values, "insert", false),
        DbOp::Remove {
            table,
            record,
            column,
            values,
            if_exists,
        } => add_remove(cx, table, record, column, values, "delete", *if_exists),
        DbOp::Clear {
            table,
            record,
            column,
            if_exists,
        } => clear(cx, table, record, column, *if_exists),
        DbOp::Destroy {
            table,
            record,
            if_exists,
        } => destroy(cx, table, record, *if_exists),
        DbOp::WaitUntil {
            table,
            record,
            conditions,
        } => wait_until(cx, table, record, conditions),
    }
}

fn only_assignments(columns: &[ColVal]) -> Result<(), NotNative> {
    match columns.iter().find(|c| c.op != "=") {
        Some(c) => unsupported(format!("{} with the operator {}", c.column, c.op)),
        None => Ok(()),
    }
}

/// The record exists, unless `--if-exists`; a row this transaction deleted is an error.
fn check_record(
    cx: &mut Ctx,
    t: &'static str,
    record: &str,
    if_exists: bool,
    w: &str,
) -> Result<Value, NotNative> {
    let cond = record_cond(t, record)?;
    if cx.state(t, record) == Some(Done::Deleted) {
        return unsupported(format!("{w}: the record was deleted by the same batch"));
    }
    if !if_exists {
        cx.push(wait_record(t, record)?, format!("{w}: the record exists"));
    }
    Ok(cond)
}

fn create(
    cx: &mut Ctx,
    table: &str,
    id: Option<&str>,
    columns: &[ColVal],
) -> Result<(), NotNative> {
    let t = table_const(table)?;
    only_assignments(columns)?;
    let mut row = json!({});
    for c in columns {
        let v = cx.val(&c.value)?;
        merge_into_row(&mut row, c, v)?;
    }
    let name = row
        .get(col::NAME)
        .and_then(Value::as_str)
        .map(str::to_string);
    let uuid_name = match id {
        Some(id) => {
            cx.define(id)?;
            id.to_string()
        }
        None => cx.row_id("row"),
    };
    let i = cx.push(insert(t, row, &uuid_name), format!("create {t}"));
    if let Some(n) = name.filter(|_| NAMED_TABLES.contains(&t)) {
        cx.mark(t, &n, Done::Created(i));
    }
    Ok(())
}

fn set(
    cx: &mut Ctx,
    table: &str,
    record: &str,
    columns: &[ColVal],
    if_exists: bool,
) -> Result<(), NotNative> {
    let t = table_const(table)?;
    only_assignments(columns)?;
    let w = format!("set {t} {record}");
    // A port this transaction inserts gets the values in its row.
    if t == nb::LOGICAL_SWITCH_PORT
        && let Some(Done::Created(i)) = cx.state(t, record)
    {
        for c in columns {
            let v = cx.val(&c.value)?;
            merge_into_row(&mut cx.ops[i]["row"], c, v)?;
        }
        return Ok(());
    }
    let cond = check_record(cx, t, record, if_exists, &w)?;
    for c in columns {
        let v = cx.val(&c.value)?;
        cx.push(
            set_column(t, cond.clone(), c, v),
            format!("{w} {}", c.render()),
        );
    }
    Ok(())
}

/// The values of `add`/`remove` as one OVSDB set or map (a set of keys removes map keys).
fn collection(cx: &Ctx, values: &[Val]) -> Result<Value, NotNative> {
    let (mut atoms, mut pairs) = (Vec::new(), Vec::new());
    for v in values {
        match v {
            Val::Set(items) => {
                for i in items {
                    atoms.push(cx.val(i)?);
                }
            }
            Val::Map(kv) => {
                for (k, v) in kv {
                    pairs.push(json!([cx.val(k)?, cx.val(v)?]));
                }
            }
            atom => atoms.push(cx.val(atom)?),
        }
    }
    match (atoms.is_empty(), pairs.is_empty()) {
        (_, true) => Ok(json!(["set", atoms])),
        (true, false) => Ok(json!(["map", pairs])),
        (false, false) => unsupported("add/remove of both atoms and pairs"),
    }
}

fn add_remove(
    cx: &mut Ctx,
    table: &str,
    record: &str,
    column: &str,
    values: &[Val],
    how: &str,
    if_exists: bool,
) -> Result<(), NotNative> {
    let t = table_const(table)?;
    let verb = if how == "insert" { "add" } else { "remove" };
    let w = format!("{verb} {t} {record} {column}");
    let cond = check_record(cx, t, record, if_exists, &w)?;
    let value = collection(cx, values)?;
    cx.push(mutate(t, cond, json!([[column, how, value]])), w);
    Ok(())
}

fn clear(
    cx: &mut Ctx,
    table: &str,
    record: &str,
    column: &str,
    if_exists: bool,
) -> Result<(), NotNative> {
    let t = table_const(table)?;
    let w = format!("clear {t} {record} {column}");
    let cond = check_record(cx, t, record, if_exists, &w)?;
    let empty = if MAP_COLUMNS.contains(&column) {
        json!(["map", []])
    } else {
        json!(["set", []])
    };
    cx.push(update(t, cond, json!({ column: empty })), w);
    Ok(())
}

fn destroy(cx: &mut Ctx, table: &str, record: &str, if_exists: bool) -> Result<(), NotNative> {
    let t = table_const(table)?;
    let w = format!("destroy {t} {record}");
    let cond = check_record(cx, t, record, if_exists, &w)?;
    cx.push(delete(t, cond), w);
    if !full_uuid(record) {
        cx.mark(t, record, Done::Deleted);
    }
    Ok(())
}

/// `wait-until TABLE RECORD col[:key]=value...`: an OVSDB `wait` without a timeout, until a
/// row is the record and meets every condition.
fn wait_until(
    cx: &mut Ctx,
    table: &str,
    record: &str,
    conditions: &[ColVal],
) -> Result<(), NotNative> {
    let t = table_const(table)?;
    only_assignments(conditions)?;
    let mut cond = record_cond(t, record)?;
    let Some(all) = cond.as_array_mut() else {
        return unsupported("record condition is not a list");
    };
    for c in conditions {
        let v = cx.val(&c.value)?;
        all.push(match &c.key {
            None => json!([c.column, "==", v]),
            Some(k) => json!([c.column, "includes", ["map", [[k, v]]]]),
        });
    }
    cx.push(
        json!({"op": "wait", "table": t, "where": cond, "columns": [col::UUID],
               "until": "!=", "rows": []}),
        format!("wait-until {t} {record}"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::ctl::NbOp;
    use super::super::plan::{Case, check_cases, test_replica, translate, txn};
    use super::*;

    const U: &str = "0123abcd-0000-4000-8000-00000000beef";

    fn db(op: DbOp) -> NbOp {
        NbOp::Db(op)
    }

    #[test]
    fn db_table() {
        let acl = || DbOp::Create {
            table: nb::ACL.into(),
            id: Some("acl1".into()),
            columns: vec![ColVal::set("priority", 1001), ColVal::set("match", "ip4")],
        };
        let cases: Vec<Case> = vec![
            (
                "create + set a reference to it",
                vec![
                    db(acl()),
                    db(DbOp::Set {
                        table: nb::PORT_GROUP.into(),
                        record: "pg1".into(),
                        columns: vec![ColVal::set("acls", Val::Set(vec![Val::Ref("acl1".into())]))],
                        if_exists: false,
                    }),
                ],
                Some(vec!["insert ACL", "wait Port_Group", "update Port_Group"]),
            ),
            (
                "a reference to no row",
                vec![db(DbOp::Add {
                    table: nb::LOGICAL_ROUTER.into(),
                    record: "r1".into(),
                    column: "nat".into(),
                    values: vec![Val::Ref("nat0".into())],
                })],
                None,
            ),
            (
                "create + add the reference",
                vec![
                    db(DbOp::Create {
                        table: nb::NAT.into(),
                        id: Some("nat0".into()),
                        columns: vec![ColVal::set("type", "snat")],
                    }),
                    db(DbOp::Add {
                        table: nb::LOGICAL_ROUTER.into(),
                        record: "r1".into(),
                        column: "nat".into(),
                        values: vec![Val::Ref("nat0".into())],
                    }),
                ],
                Some(vec![
                    "insert NAT",
                    "wait Logical_Router",
                    "mutate Logical_Router",
                ]),
            ),
            ("the same id twice", vec![db(acl()), db(acl())], None),
            (
                "remove --if-exists and clear",
                vec![
                    db(DbOp::Remove {
                        table: nb::LOGICAL_ROUTER.into(),
                        record: "r1".into(),
                        column: "static_routes".into(),
                        values: vec![Val::Uuid(U.into())],
                        if_exists: true,
                    }),
                    db(DbOp::Clear {
                        table: nb::PORT_GROUP.into(),
                        record: "pg1".into(),
                        column: "ports".into(),
                        if_exists: false,
                    }),
                ],
                Some(vec![
                    "mutate Logical_Router",
                    "wait Port_Group",
                    "update Port_Group",
                ]),
            ),
            (
                "destroy --if-exists",
                vec![db(DbOp::Destroy {
                    table: nb::ADDRESS_SET.into(),
                    record: "as1".into(),
                    if_exists: true,
                })],
                Some(vec!["delete Address_Set"]),
            ),
            (
                "set --if-exists",
                vec![db(DbOp::Set {
                    table: nb::LOGICAL_SWITCH_PORT.into(),
                    record: "pa".into(),
                    columns: vec![ColVal::set("up", true)],
                    if_exists: true,
                })],
                Some(vec!["update Logical_Switch_Port"]),
            ),
            (
                "wait-until",
                vec![db(DbOp::WaitUntil {
                    table: nb::LOGICAL_SWITCH_PORT.into(),
                    record: "pa".into(),
                    conditions: vec![ColVal::set("up", true)],
                })],
                Some(vec!["wait Logical_Switch_Port"]),
            ),
            (
                "set with another operator",
                vec![db(DbOp::Set {
                    table: nb::LOGICAL_SWITCH_PORT.into(),
                    record: "pa".into(),
                    columns: vec![ColVal::set("tag", 1).with_op("<")],
                    if_exists: false,
                })],
                None,
            ),
            (
                "an unnamed table by name",
                vec![db(DbOp::Destroy {
                    table: nb::ACL.into(),
                    record: "x".into(),
                    if_exists: true,
                })],
                None,
            ),
        ];
        check_cases(cases, true);
    }

    #[test]
    fn values_land_as_ovsdb_mutations() {
        let t = txn(vec![
            db(DbOp::Remove {
                table: nb::LOAD_BALANCER.into(),
                record: U.into(),
                column: "vips".into(),
                values: vec![Val::str("10.96.0.1:80")],
                if_exists: true,
            }),
            db(DbOp::Set {
                table: nb::LOAD_BALANCER.into(),
                record: U.into(),
                columns: vec![ColVal::key("vips", "10.96.0.2:80", "10.1.0.5:8080")],
                if_exists: false,
            }),
            db(DbOp::Clear {
                table: nb::LOGICAL_SWITCH.into(),
                record: "n1".into(),
                column: "other_config".into(),
                if_exists: true,
            }),
            db(DbOp::Add {
                table: nb::LOGICAL_SWITCH.into(),
                record: "n1".into(),
                column: "external_ids".into(),
                values: vec![Val::str_map([("k", "v")])],
            }),
        ]);
        let p = translate(&t, &test_replica()).unwrap();
        assert_eq!(
            p.ops[0],
            json!({"op": "mutate", "table": nb::LOAD_BALANCER, "where": [["_uuid", "==", ["uuid", U]]],
                   "mutations": [["vips", "delete", ["set", ["10.96.0.1:80"]]]]})
        );
        assert_eq!(p.ops[1]["rows"], json!([{"_uuid": ["uuid", U]}]));
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
        assert_eq!(p.ops[3]["row"], json!({"other_config": ["map", []]}));
        assert_eq!(
            p.ops[5]["mutations"],
            json!([["external_ids", "insert", ["map", [["k", "v"]]]]])
        );
    }
}
