//! Small building blocks for "make NB look like this" plans: compare what a snapshot row holds
//! with what is wanted and emit only the commands that close the gap.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::{ColVal, DbOp, NbOp, Row};

/// `set TABLE RECORD column:key=value ...` for the given keys.
pub fn set_keys(table: &str, record: &str, column: &str, kv: &[(&str, String)]) -> NbOp {
    NbOp::Db(DbOp::Set {
        table: table.into(),
        record: record.into(),
        columns: kv
            .iter()
            .map(|(k, v)| ColVal::key(column, k, v.as_str()))
            .collect(),
        if_exists: false,
    })
}

/// Keys of `want` that `have` lacks or holds with another value.
pub fn differing<'a>(
    have: &BTreeMap<String, String>,
    want: &'a [(&'a str, String)],
) -> Vec<(&'a str, String)> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

/// A router port with exactly this MAC and network and these external_ids. A port holding
/// other values is re-created in the same transaction: `--may-exist lrp-add` refuses to change
/// them.
pub fn ensure_lrp(
    existing: Option<&Row>,
    router: &str,
    name: &str,
    mac: &str,
    network: Ipv4Net,
    ext: &[(&str, String)],
    out: &mut Vec<NbOp>,
) {
    let want_net = network.to_string();
    let same =
        existing.is_some_and(|p| p.str("mac") == mac && p.set("networks") == [want_net.as_str()]);
    if !same {
        if existing.is_some() {
            out.push(NbOp::LrpDel { name: name.into() });
        }
        out.push(NbOp::LrpAdd {
            router: router.into(),
            name: name.into(),
            mac: mac.into(),
            networks: vec![want_net],
        });
    }
    // A re-created port starts without external_ids.
    let have = match (same, existing) {
        (true, Some(p)) => p.map("external_ids"),
        _ => BTreeMap::new(),
    };
    let ext = differing(&have, ext);
    if !ext.is_empty() {
        out.push(set_keys("Logical_Router_Port", name, "external_ids", &ext));
    }
}
