//! OVSDB values as the `ovn-nbctl`/`ovs-vsctl` command line spells them, the generic database
//! commands both tools share (`create`, `set`, `add`, `remove`, `clear`, `destroy`, `find`,
//! `list`), and a parser for their `--format=json` output.
//!
//! Strings are always written as JSON-quoted atoms (`"..."`): the ovsdb clients parse a quoted
//! atom as a JSON string, so a Kubernetes label value with quotes, backslashes or `$` stays data
//! and can never change the structure of the command.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::ovn::schema::col;
use anyhow::{Context, Result, bail};

/// A value in ovsdb-client command syntax.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A row UUID, written bare.
    Uuid(String),
    /// A `--id=@name` reference created earlier in the same transaction (without the `@`).
    Ref(String),
    Set(Vec<Val>),
    Map(Vec<(Val, Val)>),
}

impl Val {
    pub fn str(s: impl Into<String>) -> Val {
        Val::Str(s.into())
    }

    pub fn str_map<K: AsRef<str>, V: AsRef<str>>(m: impl IntoIterator<Item = (K, V)>) -> Val {
        Val::Map(
            m.into_iter()
                .map(|(k, v)| (Val::str(k.as_ref()), Val::str(v.as_ref())))
                .collect(),
        )
    }

    pub fn str_set<S: AsRef<str>>(s: impl IntoIterator<Item = S>) -> Val {
        Val::Set(s.into_iter().map(|x| Val::str(x.as_ref())).collect())
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_into(&mut s);
        s
    }

    fn render_into(&self, out: &mut String) {
        match self {
            Val::Str(s) => out.push_str(&quote(s)),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Uuid(u) => out.push_str(u),
            Val::Ref(r) => {
                out.push('@');
                out.push_str(r);
            }
            Val::Set(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.render_into(out);
                }
                out.push(']');
            }
            Val::Map(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.render_into(out);
                    out.push('=');
                    v.render_into(out);
                }
                out.push('}');
            }
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Str(s.to_string())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Str(s)
    }
}

impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::Int(i)
    }
}

impl From<bool> for Val {
    fn from(b: bool) -> Val {
        Val::Bool(b)
    }
}

/// Quote a string as a JSON string literal, which ovsdb clients accept for any string atom.
pub fn quote(s: &str) -> String {
    // serde_json never fails to serialise a &str.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// A `column[:key]=value` assignment or a `column[:key]<op>value` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColVal {
    pub column: String,
    pub key: Option<String>,
    pub op: &'static str,
    pub value: Val,
}

impl ColVal {
    pub fn set(column: &str, value: impl Into<Val>) -> Self {
        ColVal {
            column: column.into(),
            key: None,
            op: "=",
            value: value.into(),
        }
    }

    pub fn key(column: &str, key: &str, value: impl Into<Val>) -> Self {
        ColVal {
            column: column.into(),
            key: Some(key.into()),
            op: "=",
            value: value.into(),
        }
    }

    pub fn with_op(mut self, op: &'static str) -> Self {
        self.op = op;
        self
    }

    pub fn render(&self) -> String {
        let mut s = self.column.clone();
        if let Some(k) = &self.key {
            s.push(':');
            s.push_str(&quote(k));
        }
        s.push_str(self.op);
        s.push_str(&self.value.render());
        s
    }
}

/// Commands that `ovn-nbctl` and `ovs-vsctl` share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbOp {
    /// `[--id=@id] create TABLE col=val...`
    Create {
        table: String,
        id: Option<String>,
        columns: Vec<ColVal>,
    },
    /// `[--if-exists] set TABLE RECORD col[:key]=val...`
    Set {
        table: String,
        record: String,
        columns: Vec<ColVal>,
        if_exists: bool,
    },
    /// `add TABLE RECORD COLUMN VALUE...`
    Add {
        table: String,
        record: String,
        column: String,
        values: Vec<Val>,
    },
    /// `[--if-exists] remove TABLE RECORD COLUMN VALUE...` (map keys or set members)
    Remove {
        table: String,
        record: String,
        column: String,
        values: Vec<Val>,
        if_exists: bool,
    },
    /// `[--if-exists] clear TABLE RECORD COLUMN`
    Clear {
        table: String,
        record: String,
        column: String,
        if_exists: bool,
    },
    /// `[--if-exists] destroy TABLE RECORD`
    Destroy {
        table: String,
        record: String,
        if_exists: bool,
    },
    /// `wait-until TABLE RECORD cond...`
    WaitUntil {
        table: String,
        record: String,
        conditions: Vec<ColVal>,
    },
}

impl DbOp {
    /// The `ovn-nbctl` database-command arguments of this operation. Long because it is one flat
    /// table, an arm per operation with its words in order.
    pub fn render(&self, out: &mut Vec<String>) {
        match self {
            DbOp::Create { table, id, columns } => {
                if let Some(id) = id {
                    out.push(format!("--id=@{id}"));
                }
                out.push("create".into());
                out.push(table.clone());
                out.extend(columns.iter().map(ColVal::render));
            }
            DbOp::Set {
                table,
                record,
                columns,
                if_exists,
            } => {
                if *if_exists {
                    out.push("--if-exists".into());
                }
                out.extend(["set".into(), table.clone(), record.clone()]);
                out.extend(columns.iter().map(ColVal::render));
            }
            DbOp::Add {
                table,
                record,
                column,
                values,
            } => {
                out.extend(["add".into(), table.clone(), record.clone(), column.clone()]);
                out.extend(values.iter().map(Val::render));
            }
            DbOp::Remove {
                table,
                record,
                column,
                values,
                if_exists,
            } => {
                if *if_exists {
                    out.push("--if-exists".into());
                }
                out.extend([
                    "remove".into(),
                    table.clone(),
                    record.clone(),
                    column.clone(),
                ]);
                out.extend(values.iter().map(Val::render));
            }
            DbOp::Clear {
                table,
                record,
                column,
                if_exists,
            } => {
                if *if_exists {
                    out.push("--if-exists".into());
                }
                out.extend([
                    "clear".into(),
                    table.clone(),
                    record.clone(),
                    column.clone(),
                ]);
            }
            DbOp::Destroy {
                table,
                record,
                if_exists,
            } => {
                if *if_exists {
                    out.push("--if-exists".into());
                }
                out.extend(["destroy".into(), table.clone(), record.clone()]);
            }
            DbOp::WaitUntil {
                table,
                record,
                conditions,
            } => {
                out.extend(["wait-until".into(), table.clone(), record.clone()]);
                out.extend(conditions.iter().map(ColVal::render));
            }
        }
    }
}

/// A read: `--columns=... find TABLE cond...` (or `list` when there are no conditions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub table: String,
    pub columns: Vec<String>,
    pub conditions: Vec<ColVal>,
}

impl Query {
    pub fn list(table: &str, columns: &[&str]) -> Self {
        Query {
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            conditions: Vec::new(),
        }
    }

    pub fn find(table: &str, columns: &[&str], conditions: Vec<ColVal>) -> Self {
        Query {
            conditions,
            ..Query::list(table, columns)
        }
    }

    pub fn render(&self, out: &mut Vec<String>) {
        out.push("--".into());
        if !self.columns.is_empty() {
            let mut cols = self.columns.clone();
            if !cols.iter().any(|c| c == col::UUID) {
                cols.insert(0, col::UUID.into());
            }
            out.push(format!("--columns={}", cols.join(",")));
        }
        if self.conditions.is_empty() {
            out.extend(["list".into(), self.table.clone()]);
        } else {
            out.extend(["find".into(), self.table.clone()]);
            out.extend(self.conditions.iter().map(ColVal::render));
        }
    }
}

/// A value read back from `--format=json` output.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    Str(String),
    Int(i64),
    Real(f64),
    Bool(bool),
    Uuid(String),
    Set(Vec<Datum>),
    Map(Vec<(Datum, Datum)>),
}

impl Datum {
    fn from_json(v: &serde_json::Value) -> Result<Datum> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) => Datum::Str(s.clone()),
            J::Bool(b) => Datum::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Datum::Int(i),
                None => Datum::Real(n.as_f64().unwrap_or_default()),
            },
            J::Array(a) if a.len() == 2 => {
                let tag = a[0].as_str().unwrap_or_default();
                match tag {
                    "uuid" | "named-uuid" => Datum::Uuid(a[1].as_str().unwrap_or_default().into()),
                    "set" => Datum::Set(
                        a[1].as_array()
                            .context("ovsdb set without members")?
                            .iter()
                            .map(Datum::from_json)
                            .collect::<Result<_>>()?,
                    ),
                    "map" => Datum::Map(
                        a[1].as_array()
                            .context("ovsdb map without pairs")?
                            .iter()
                            .map(|p| {
                                let p = p.as_array().context("ovsdb map pair")?;
                                if p.len() != 2 {
                                    bail!("ovsdb map pair of length {}", p.len());
                                }
                                Ok((Datum::from_json(&p[0])?, Datum::from_json(&p[1])?))
                            })
                            .collect::<Result<_>>()?,
                    ),
                    other => bail!("unknown ovsdb value tag {other:?}"),
                }
            }
            other => bail!("unexpected ovsdb JSON value {other}"),
        })
    }

    /// The atom as a string, if it is a single atom (a one-element set counts).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::Str(s) | Datum::Uuid(s) => Some(s),
            Datum::Set(v) if v.len() == 1 => v[0].as_str(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Datum::Int(i) => Some(*i),
            Datum::Set(v) if v.len() == 1 => v[0].as_int(),
            _ => None,
        }
    }

    /// Members of a set column (a lone atom is a one-member set, as OVSDB prints it).
    pub fn as_set(&self) -> Vec<&Datum> {
        match self {
            Datum::Set(v) => v.iter().collect(),
            Datum::Map(_) => Vec::new(),
            atom => vec![atom],
        }
    }

    pub fn as_str_set(&self) -> Vec<String> {
        self.as_set()
            .into_iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect()
    }

    pub fn as_str_map(&self) -> BTreeMap<String, String> {
        match self {
            Datum::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// One row of a `list`/`find` result.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub uuid: String,
    pub columns: BTreeMap<String, Datum>,
}

impl Row {
    pub fn get(&self, col: &str) -> Option<&Datum> {
        self.columns.get(col)
    }

    /// A string column; empty when absent or an empty optional.
    pub fn str(&self, col: &str) -> String {
        self.get(col)
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string()
    }

    pub fn map(&self, col: &str) -> BTreeMap<String, String> {
        self.get(col).map(Datum::as_str_map).unwrap_or_default()
    }

    pub fn set(&self, col: &str) -> Vec<String> {
        self.get(col).map(Datum::as_str_set).unwrap_or_default()
    }

    pub fn map_get(&self, col: &str, key: &str) -> Option<String> {
        self.map(col).remove(key)
    }
}

/// Parse the output of one `--format=json` invocation holding one JSON table per query.
pub fn parse_tables(stdout: &str) -> Result<Vec<Vec<Row>>> {
    let mut tables = Vec::new();
    for value in serde_json::Deserializer::from_str(stdout).into_iter::<serde_json::Value>() {
        let value = value.context("parsing ovsdb client JSON output")?;
        let headings: Vec<String> = value
            .get("headings")
            .and_then(|h| h.as_array())
            .context("ovsdb JSON table without headings")?
            .iter()
            .map(|h| h.as_str().unwrap_or_default().to_string())
            .collect();
        let data = value
            .get("data")
            .and_then(|d| d.as_array())
            .context("ovsdb JSON table without data")?;
        let mut rows = Vec::with_capacity(data.len());
        for r in data {
            let cells = r.as_array().context("ovsdb JSON row is not an array")?;
            let mut row = Row {
                uuid: String::new(),
                columns: BTreeMap::new(),
            };
            for (h, c) in headings.iter().zip(cells) {
                let d = Datum::from_json(c).with_context(|| format!("column {h}"))?;
                if h == col::UUID {
                    row.uuid = d.as_str().unwrap_or_default().to_string();
                } else {
                    row.columns.insert(h.clone(), d);
                }
            }
            rows.push(row);
        }
        tables.push(rows);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovn::schema::nb;

    #[test]
    fn quoting_keeps_hostile_strings_as_data() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c$d"), r#""a\"b\\c$d""#);
        let cv = ColVal::key(col::EXTERNAL_IDS, "k8s.ovn.org/x", "a \"q\" b");
        assert_eq!(cv.render(), r#"external_ids:"k8s.ovn.org/x"="a \"q\" b""#);
    }

    #[test]
    fn renders_sets_maps_refs() {
        assert_eq!(Val::str_set(["a", "b"]).render(), r#"["a","b"]"#);
        assert_eq!(Val::str_map([("k", "v")]).render(), r#"{"k"="v"}"#);
        assert_eq!(Val::Ref("acl".into()).render(), "@acl");
        assert_eq!(Val::Int(-3).render(), "-3");
    }

    #[test]
    fn renders_generic_ops() {
        let mut out = Vec::new();
        DbOp::Create {
            table: nb::ACL.into(),
            id: Some("acl".into()),
            columns: vec![
                ColVal::set(col::PRIORITY, 1001),
                ColVal::set(col::MATCH, "ip4"),
            ],
        }
        .render(&mut out);
        assert_eq!(
            out,
            [
                "--id=@acl",
                "create",
                nb::ACL,
                "priority=1001",
                "match=\"ip4\""
            ]
        );
        let mut out = Vec::new();
        DbOp::Remove {
            table: nb::LOAD_BALANCER.into(),
            record: "u1".into(),
            column: col::VIPS.into(),
            values: vec![Val::str("10.0.0.1:80")],
            if_exists: true,
        }
        .render(&mut out);
        assert_eq!(
            out,
            [
                "--if-exists",
                "remove",
                nb::LOAD_BALANCER,
                "u1",
                col::VIPS,
                "\"10.0.0.1:80\""
            ]
        );
    }

    #[test]
    fn renders_queries() {
        let mut out = Vec::new();
        Query::find(
            nb::LOGICAL_SWITCH_PORT,
            &[col::NAME],
            vec![ColVal::key(col::EXTERNAL_IDS, "pod", "true")],
        )
        .render(&mut out);
        assert_eq!(
            out,
            [
                "--",
                "--columns=_uuid,name",
                "find",
                nb::LOGICAL_SWITCH_PORT,
                "external_ids:\"pod\"=\"true\""
            ]
        );
    }

    #[test]
    fn parses_json_tables() {
        let out = r#"{"data":[[["uuid","u-1"],"p1","0a:58:0a:01:00:05 10.1.0.5",["map",[["pod","true"]]],["set",[]],["set",["a","b"]],7]],"headings":["_uuid","name","addresses","external_ids","type","tags","tag"]}
{"data":[],"headings":["_uuid","name"]}
"#;
        let t = parse_tables(out).unwrap();
        assert_eq!(t.len(), 2);
        let r = &t[0][0];
        assert_eq!(r.uuid, "u-1");
        assert_eq!(r.str(col::NAME), "p1");
        assert_eq!(r.set(col::ADDRESSES), ["0a:58:0a:01:00:05 10.1.0.5"]);
        assert_eq!(r.map_get(col::EXTERNAL_IDS, "pod").as_deref(), Some("true"));
        assert_eq!(r.str(col::TYPE), "");
        assert_eq!(r.set(col::TAGS), ["a", "b"]);
        assert_eq!(r.get(col::TAG).and_then(Datum::as_int), Some(7));
        assert!(t[1].is_empty());
    }

    #[test]
    fn rejects_garbage_output() {
        assert!(parse_tables("not json").is_err());
        assert!(parse_tables(r#"{"data":[]}"#).is_err());
    }
}
