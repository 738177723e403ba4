//! Label and field selectors with the apiserver's syntax.

use serde_json::{Map, Value};

use crate::resources::ResourceDef;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector; an empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses (set-based values contain commas).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| crate::util::check_subdomain(p).is_ok());
    if prefix_ok && is_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key \"{key}\": name part must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{v}\": a valid label must be an empty string \
             or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character"
        ))
    }
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement: expected a parenthesised set, got {rest:?}")
        })?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().all(|v| v.is_empty()) {
        return Err("for 'in', 'notin' operators, values set can't be empty".into());
    }
    for v in &values {
        check_value(v)?;
    }
    Ok(values)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                return Err(format!("found empty requirement in label selector {s:?}"));
            }
            if let Some(key) = term.strip_prefix('!') {
                let key = key.trim();
                check_key(key)?;
                reqs.push(Requirement {
                    key: key.into(),
                    op: Op::NotExists,
                    values: vec![],
                });
                continue;
            }
            let key_end = term
                .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '('))
                .unwrap_or(term.len());
            let key = &term[..key_end];
            check_key(key)?;
            let rest = term[key_end..].trim_start();
            let (op, values) = if rest.is_empty() {
                (Op::Exists, vec![])
            } else if let Some(v) = rest.strip_prefix("!=") {
                (Op::NotEq, vec![v.trim().to_string()])
            } else if let Some(v) = rest.strip_prefix("==") {
                (Op::Eq, vec![v.trim().to_string()])
            } else if let Some(v) = rest.strip_prefix('=') {
                (Op::Eq, vec![v.trim().to_string()])
            } else if let Some(v) = rest.strip_prefix('>') {
                (Op::Gt, vec![v.trim().to_string()])
            } else if let Some(v) = rest.strip_prefix('<') {
                (Op::Lt, vec![v.trim().to_string()])
            } else if let Some(v) = rest
                .strip_prefix("notin")
                .filter(|v| v.trim_start().starts_with('('))
            {
                (Op::NotIn, parse_set(v)?)
            } else if let Some(v) = rest
                .strip_prefix("in")
                .filter(|v| v.trim_start().starts_with('('))
            {
                (Op::In, parse_set(v)?)
            } else {
                return Err(format!(
                    "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            };
            match op {
                Op::Gt | Op::Lt if values[0].parse::<i64>().is_err() => {
                    return Err(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got {:?}",
                        values[0]
                    ));
                }
                Op::Eq | Op::NotEq => check_value(&values[0])?,
                _ => {}
            }
            reqs.push(Requirement {
                key: key.into(),
                op,
                values,
            });
        }
        Ok(LabelSelector(reqs))
    }

    /// Matches the labels of an object (`metadata.labels`, possibly absent).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.matches(labels)
    }

    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.0.iter().all(|r| {
            let got = labels.get(&r.key).and_then(Value::as_str);
            match r.op {
                Op::Eq => got == Some(r.values[0].as_str()),
                Op::NotEq => got != Some(r.values[0].as_str()),
                Op::In => got.is_some_and(|g| r.values.iter().any(|v| v == g)),
                Op::NotIn => got.is_none_or(|g| !r.values.iter().any(|v| v == g)),
                Op::Exists => got.is_some(),
                Op::NotExists => got.is_none(),
                Op::Gt | Op::Lt => {
                    let (Some(g), Ok(want)) = (
                        got.and_then(|g| g.parse::<i64>().ok()),
                        r.values[0].parse::<i64>(),
                    ) else {
                        return false;
                    };
                    if r.op == Op::Gt { g > want } else { g < want }
                }
            }
        })
    }
}

/// A parsed field selector (`a=b,c!=d`), restricted to the fields a resource supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl FieldSelector {
    pub fn parse(s: &str, def: &ResourceDef) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for term in split_unescaped(s, ',') {
            let term = term.trim();
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !def.extra_fields.contains(&field)
            {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), eq, unescape(value.trim())));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let ptr = format!("/{}", field.replace('.', "/"));
            let got = match obj.pointer(&ptr) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn equality_and_sets() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db, x)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web, db),!missing,tier", true),
            ("n>4", true),
            ("n<4", false),
            ("example.com/key", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn bad_syntax() {
        for sel in [
            "app=(",
            "=x",
            "app in ()",
            "app in web",
            "a,,b",
            "app=web=x",
            "a b",
            "n>x",
            "!",
            "-a=b",
        ] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel} should fail");
        }
    }

    #[test]
    fn fields() {
        let pods = &RESOURCES[0];
        let pod =
            json!({"metadata": {"name": "p1", "namespace": "ns1"}, "spec": {"nodeName": "n1"}});
        let unscheduled = json!({"metadata": {"name": "p2", "namespace": "ns1"}, "spec": {}});
        let f = FieldSelector::parse("spec.nodeName=n1", pods).unwrap();
        assert!(f.matches(&pod) && !f.matches(&unscheduled));
        let f = FieldSelector::parse("spec.nodeName==", pods).unwrap();
        assert!(!f.matches(&pod) && f.matches(&unscheduled));
        let f = FieldSelector::parse("metadata.namespace=ns1,metadata.name!=p1", pods).unwrap();
        assert!(!f.matches(&pod) && f.matches(&unscheduled));
        assert!(FieldSelector::parse("spec.bogus=1", pods).is_err());
        assert!(FieldSelector::parse("nonsense", pods).is_err());
        let nodes = &RESOURCES[3];
        assert!(FieldSelector::parse("spec.nodeName=x", nodes).is_err());
    }
}
