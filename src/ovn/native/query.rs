//! NB queries as OVSDB `select`s, read back as the rows `ovn-nbctl --format=json` prints.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use super::super::ovsdb::{Query, Row, parse_tables};
use super::plan::{Unsupported, unsupported, val_json};

/// A query as a `select`: `col=value` is `==`, `col:key=value` is `includes` of that pair.
pub fn select_for(q: &Query) -> Result<Value, Unsupported> {
    let mut conds = Vec::new();
    for c in &q.conditions {
        if c.op != "=" {
            return unsupported(format!("query condition operator {}", c.op));
        }
        let v = val_json(&c.value, &Default::default())?;
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
