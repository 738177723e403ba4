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
