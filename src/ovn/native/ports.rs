//! Logical switch ports: `lsp-add`, `lsp-set-addresses`, `lsp-del`.
//!
//! - `--may-exist lsp-add`: a port the replica does not know is inserted (the unique index on
//!   its name aborts the commit if it appeared meanwhile) and added to its switch, which must
//!   exist exactly once; a port already on that switch is left alone, guarded by `wait`s that
//!   it still is; a port on another switch is refused as `ovn-nbctl` refuses it.
//! - `lsp-set-addresses`: the IPs must not be on another port of the switch (checked on the
//!   replica, and among the ports of the transaction); a port inserted by this transaction
//!   gets them in its `insert` row.
//! - `--if-exists lsp-del`: the replica's uuid, guarded by a `wait` that the row still is
//!   that port, removed from its switch and deleted; an absent port is guarded as absent.

use std::net::IpAddr;

use serde_json::json;

use super::super::schema::{col, nb};
use super::plan::{
    Ctx, Done, NotNative, PortDelete, by_name, insert, mutate, plain_name, refused, unsupported,
    update, wait, wait_one, wait_uuid,
};
use super::replica::ips_of;

const LS: &str = nb::LOGICAL_SWITCH;
const LSP: &str = nb::LOGICAL_SWITCH_PORT;

pub fn lsp_add(cx: &mut Ctx, switch: &str, name: &str) -> Result<(), NotNative> {
    plain_name(switch)?;
    plain_name(name)?;
    match cx.state(LSP, name) {
        Some(Done::Created(_)) => return unsupported(format!("port {name} added twice")),
        Some(Done::Deleted) => {}
        None => {
            if let Some(u) = cx.replica.port_uuid(name).map(str::to_string) {
                return lsp_exists(cx, switch, name, &u);
            }
        }
    }
    if cx.switches_checked.insert(switch.to_string()) {
        let w = format!("lsp-add {switch} {name}: switch {switch} exists once");
        cx.push(wait_one(LS, switch), w);
    }
    cx.switch_of.insert(name.to_string(), switch.to_string());
    let id = cx.row_id("lsp");
    let i = cx.push(
        insert(LSP, json!({ col::NAME: name }), &id),
        format!("lsp-add {switch} {name}: insert"),
    );
    cx.mark(LSP, name, Done::Created(i));
    cx.push(
        mutate(
            LS,
            by_name(switch),
            json!([[col::PORTS, "insert", ["set", [["named-uuid", id]]]]]),
        ),
        format!("lsp-add {switch} {name}: add to the switch"),
    );
    Ok(())
}

/// `--may-exist` on a port that exists: nothing to do when it is on `switch`.
fn lsp_exists(cx: &mut Ctx, switch: &str, name: &str, u: &str) -> Result<(), NotNative> {
    match cx.replica.switch_of(name) {
        Some(sw) if sw == switch => {}
        Some(other) => {
            return refused(format!(
                "lsp-add: port {name} already exists but in switch {other}"
            ));
        }
        None => return refused(format!("lsp-add: port {name} exists but in no switch")),
    }
    let w = format!("lsp-add {switch} {name}: the port exists");
    cx.push(wait_uuid(LSP, u, Some(name)), format!("{w} as {u}"));
    let on_switch = json!([
        [col::NAME, "==", switch],
        [col::PORTS, "includes", ["uuid", u]]
    ]);
    cx.push(
        wait(LS, on_switch, &[col::NAME], json!([{ col::NAME: switch }])),
        format!("{w} on {switch}"),
    );
    Ok(())
}

/// `MAC [IP...]` with plain addresses, or a keyword; `Ok(true)` when it carries an IP
/// (`ovn-nbctl` refuses such an IP twice on one switch). Other forms are left to `ovn-nbctl`'s
/// own validation.
pub fn check_address(a: &str) -> Result<bool, NotNative> {
    if matches!(a, "unknown" | "router" | "dynamic") {
        return Ok(false);
    }
    let mut parts = a.split(' ');
    let mac = parts.next().unwrap_or_default();
    if !is_mac(mac) {
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

pub fn is_mac(mac: &str) -> bool {
    mac.len() == 17
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
}

pub fn lsp_set_addresses(cx: &mut Ctx, name: &str, addresses: &[String]) -> Result<(), NotNative> {
    plain_name(name)?;
    let mut ips = Vec::new();
    for a in addresses {
        if check_address(a)? {
            ips.extend(ips_of(a));
        }
    }
    if !ips.is_empty() {
        check_unique_ips(cx, name, ips)?;
    }
    let v = json!(["set", addresses]);
    match cx.state(LSP, name) {
        Some(Done::Created(i)) => cx.ops[i]["row"][col::ADDRESSES] = v,
        Some(Done::Deleted) => {
            return unsupported(format!("port {name} changed after its deletion"));
        }
        None => {
            let w = format!("lsp-set-addresses {name}");
            cx.push(wait_one(LSP, name), format!("{w}: port exists"));
            cx.push(update(LSP, by_name(name), json!({ col::ADDRESSES: v })), w);
        }
    }
    Ok(())
}

/// `ovn-nbctl` refuses an IP that another port of the switch has.
fn check_unique_ips(cx: &mut Ctx, name: &str, ips: Vec<IpAddr>) -> Result<(), NotNative> {
    let sw = match cx.switch_of.get(name) {
        Some(sw) => sw.clone(),
        None => match cx.replica.switch_of(name) {
            Some(sw) => sw,
            None => return refused(format!("lsp-set-addresses: port {name} not found")),
        },
    };
    let deleted = |p: &str| cx.state(LSP, p) == Some(Done::Deleted);
    if let Some(other) = cx.replica.duplicate(&sw, name, &ips, deleted) {
        return refused(format!(
            "lsp-set-addresses {name}: an address is already used by port {other} on switch {sw}"
        ));
    }
    for ip in ips {
        if let Some(other) = cx.ips_here.insert((sw.clone(), ip), name.to_string())
            && other != name
        {
            return refused(format!(
                "lsp-set-addresses: {ip} given to {other} and {name}"
            ));
        }
    }
    Ok(())
}

pub fn lsp_del(cx: &mut Ctx, name: &str) -> Result<(), NotNative> {
    plain_name(name)?;
    match cx.state(LSP, name) {
        Some(Done::Created(_)) => unsupported(format!("port {name} added and deleted")),
        // `--if-exists` on a port this transaction already removed.
        Some(Done::Deleted) => Ok(()),
        None => {
            let uuid = cx.replica.port_uuid(name).map(str::to_string);
            let del = PortDelete {
                cmd: "lsp-del",
                port_table: LSP,
                parent_table: LS,
                parent: "switch",
                name,
            };
            del.plan(cx, uuid);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::ctl::NbOp;
    use super::super::super::ovsdb::{ColVal, DbOp, Val};
    use super::super::plan::{Case, check_cases, kinds, test_replica, translate, txn};
    use super::*;

    fn add(sw: &str, port: &str, addr: &str) -> Vec<NbOp> {
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
    }

    fn del(port: &str) -> NbOp {
        NbOp::LspDel { name: port.into() }
    }

    #[test]
    fn port_add_merges_into_one_insert() {
        let mut ops = add("n1", "default_x", "0a:58:0a:01:00:09 10.1.0.9");
        ops.push(NbOp::Db(DbOp::Set {
            table: LSP.into(),
            record: "default_x".into(),
            columns: vec![
                ColVal::key("external_ids", "pod", "true"),
                ColVal::key("external_ids", "pod", "yes"),
                ColVal::set("dynamic_addresses", Val::Set(Vec::new())),
            ],
            if_exists: false,
        }));
        let p = translate(&txn(ops), &test_replica()).unwrap();
        assert_eq!(
            kinds(&p),
            [
                "wait Logical_Switch",
                "insert Logical_Switch_Port",
                "mutate Logical_Switch"
            ]
        );
        assert_eq!(p.what.len(), p.ops.len());
        assert_eq!(
            p.ops[1]["row"],
            json!({"name": "default_x", "addresses": ["set", ["0a:58:0a:01:00:09 10.1.0.9"]],
                    "external_ids": ["map", [["pod", "yes"]]], "dynamic_addresses": ["set", []]})
        );
        let id = p.ops[1]["uuid-name"].clone();
        assert_eq!(
            p.ops[2]["mutations"],
            json!([["ports", "insert", ["set", [["named-uuid", id]]]]])
        );
    }

    /// (case, ops, the plan's op kinds or None when refused)
    #[test]
    fn ports_table() {
        let cases: Vec<Case> = vec![
            (
                "may-exist on the port's switch: guards only",
                add("n1", "pa", "0a:58:0a:01:00:05 10.1.0.5"),
                Some(vec![
                    "wait Logical_Switch_Port",
                    "wait Logical_Switch",
                    "wait Logical_Switch_Port",
                    "update Logical_Switch_Port",
                ]),
            ),
            (
                "may-exist on another switch",
                add("join", "pa", "0a:58:0a:01:00:05 10.1.0.5"),
                None,
            ),
            (
                "an IP of another port of the switch",
                add("n1", "x", "0a:58:0a:01:00:05 10.1.0.5"),
                None,
            ),
            (
                "the same IP on another switch",
                add("join", "x", "0a:58:0a:01:00:05 10.1.0.5"),
                Some(vec![
                    "wait Logical_Switch",
                    "insert Logical_Switch_Port",
                    "mutate Logical_Switch",
                ]),
            ),
            (
                "one IP twice in the batch",
                [
                    add("n1", "x", "0a:58:0a:01:00:09 10.1.0.9"),
                    add("n1", "y", "0a:58:0a:01:00:0a 10.1.0.9"),
                ]
                .concat(),
                None,
            ),
            (
                "the IP of a port deleted earlier in the batch",
                [
                    vec![del("pa")],
                    add("n1", "x", "0a:58:0a:01:00:05 10.1.0.5"),
                ]
                .concat(),
                Some(vec![
                    "wait Logical_Switch_Port",
                    "mutate Logical_Switch",
                    "delete Logical_Switch_Port",
                    "wait Logical_Switch",
                    "insert Logical_Switch_Port",
                    "mutate Logical_Switch",
                ]),
            ),
            (
                "delete an absent port",
                vec![del("nope"), del("nope")],
                Some(vec!["wait Logical_Switch_Port"]),
            ),
            (
                "addresses of an unknown port",
                vec![NbOp::LspSetAddresses {
                    name: "ghost".into(),
                    addresses: vec!["0a:58:0a:01:00:05 10.1.0.7".into()],
                }],
                None,
            ),
        ];
        check_cases(cases, false);
    }

    #[test]
    fn delete_is_guarded_by_the_replica_uuid() {
        let p = translate(&txn(vec![del("pa")]), &test_replica()).unwrap();
        assert_eq!(
            p.ops[0]["where"],
            json!([["_uuid", "==", ["uuid", "p1"]], ["name", "==", "pa"]])
        );
        assert_eq!(
            p.ops[1]["where"],
            json!([["ports", "includes", ["uuid", "p1"]]])
        );
        assert_eq!(p.ops[2]["where"], json!([["_uuid", "==", ["uuid", "p1"]]]));
    }

    #[test]
    fn odd_shapes_are_left_to_nbctl() {
        let cases = vec![
            vec![del("beef")],
            vec![NbOp::LspSetAddresses {
                name: "pa".into(),
                addresses: vec!["0a:58:0a:01:00:05 10.1.0.5/24".into()],
            }],
            [add("n1", "x", "0a:58:0a:01:00:09 10.1.0.9"), vec![del("x")]].concat(),
        ];
        for ops in cases {
            let got = translate(&txn(ops.clone()), &test_replica());
            assert!(
                matches!(got, Err(NotNative::Unsupported(_))),
                "{ops:?}: {got:?}"
            );
        }
        assert_eq!(check_address("0a:58:0a:01:00:05"), Ok(false));
        assert_eq!(check_address("unknown"), Ok(false));
        assert_eq!(
            check_address("0a:58:0a:01:00:05 10.1.0.5 fd00::5"),
            Ok(true)
        );
    }
}
