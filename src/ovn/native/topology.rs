//! Switches, routers, router ports and load balancer attachments: `ls-add`/`lr-add`
//! (`--may-exist`), `ls-del`/`lr-del` (`--if-exists`), `lrp-add` (`--may-exist`), `lrp-del`
//! (`--if-exists`), `ls-lb-add`/`lr-lb-add` (`--may-exist`), `ls-lb-del` and `lb-del`
//! (`--if-exists`).
//!
//! Switch and router names carry no unique index, so a name the replica says is free is
//! guarded by a `wait` that it still is; a name it says is taken once, by a `wait` that it
//! still is taken once. Router port names are unique in the schema, so a concurrent insert of
//! the same name aborts the commit by itself.

use ipnet::IpNet;
use serde_json::json;

use super::super::schema::{col, nb};
use super::plan::{
    Ctx, Done, NotNative, PortDelete, by_name, by_uuid, delete, full_uuid, insert, mutate,
    plain_name, refused, unsupported, wait, wait_none, wait_one, wait_uuid,
};
use super::ports::is_mac;

const LR: &str = nb::LOGICAL_ROUTER;
const LRP: &str = nb::LOGICAL_ROUTER_PORT;
const LB: &str = nb::LOAD_BALANCER;

fn kind(table: &str) -> &'static str {
    if table == LR { "router" } else { "switch" }
}

fn cmd(table: &str, verb: &str) -> String {
    format!("{}-{verb}", if table == LR { "lr" } else { "ls" })
}

/// `--may-exist ls-add NAME` / `--may-exist lr-add NAME`.
pub fn add_named(cx: &mut Ctx, table: &'static str, name: &str) -> Result<(), NotNative> {
    plain_name(name)?;
    let c = cmd(table, "add");
    match cx.state(table, name) {
        Some(Done::Created(_)) => return Ok(()),
        Some(Done::Deleted) => {}
        None => match cx.replica.named(table == LR, name).len() {
            0 => {
                cx.push(wait_none(table, name), format!("{c} {name}: still absent"));
            }
            1 => {
                cx.push(wait_one(table, name), format!("{c} {name}: still there"));
                return Ok(());
            }
            _ => {
                return refused(format!(
                    "{c}: multiple logical {}s named {name}",
                    kind(table)
                ));
            }
        },
    }
    let id = cx.row_id(kind(table));
    let i = cx.push(
        insert(table, json!({ col::NAME: name }), &id),
        format!("{c} {name}: insert"),
    );
    cx.mark(table, name, Done::Created(i));
    Ok(())
}

/// `--if-exists ls-del NAME` / `--if-exists lr-del NAME`: the row's ports (and a router's
/// routes and NAT rules) are not roots and go with it.
pub fn del_named(cx: &mut Ctx, table: &'static str, name: &str) -> Result<(), NotNative> {
    plain_name(name)?;
    let c = cmd(table, "del");
    match cx.state(table, name) {
        Some(Done::Created(_)) => unsupported(format!("{c} of {name} added by the same batch")),
        Some(Done::Deleted) => Ok(()),
        None => {
            match cx.replica.named(table == LR, name).len() {
                0 => {
                    cx.push(wait_none(table, name), format!("{c} {name}: still absent"));
                }
                1 => {
                    cx.push(
                        wait_one(table, name),
                        format!("{c} {name}: still there once"),
                    );
                    cx.push(delete(table, by_name(name)), format!("{c} {name}"));
                }
                _ => {
                    return refused(format!(
                        "{c}: multiple logical {}s named {name}",
                        kind(table)
                    ));
                }
            }
            cx.mark(table, name, Done::Deleted);
            Ok(())
        }
    }
}

/// `--may-exist lrp-add ROUTER PORT MAC NETWORK...`
pub fn lrp_add(
    cx: &mut Ctx,
    router: &str,
    name: &str,
    mac: &str,
    networks: &[String],
) -> Result<(), NotNative> {
    plain_name(router)?;
    plain_name(name)?;
    if !is_mac(mac) {
        return refused(format!("lrp-add {name}: invalid mac address {mac}"));
    }
    if networks.is_empty() {
        return refused(format!("lrp-add {name}: no network"));
    }
    if let Some(bad) = networks.iter().find(|n| n.parse::<IpNet>().is_err()) {
        return refused(format!("lrp-add {name}: invalid network {bad}"));
    }
    match cx.state(LRP, name) {
        Some(Done::Created(_)) => return unsupported(format!("router port {name} added twice")),
        Some(Done::Deleted) => {}
        None => {
            if cx.replica.router_port(name).is_some() {
                return lrp_exists(cx, router, name, mac, networks);
            }
        }
    }
    cx.push(
        wait_one(LR, router),
        format!("lrp-add {router} {name}: router {router} exists once"),
    );
    let id = cx.row_id("lrp");
    let row = json!({ col::NAME: name, col::MAC: mac, col::NETWORKS: ["set", networks] });
    let i = cx.push(
        insert(LRP, row, &id),
        format!("lrp-add {router} {name}: insert"),
    );
    cx.mark(LRP, name, Done::Created(i));
    cx.push(
        mutate(
            LR,
            by_name(router),
            json!([[col::PORTS, "insert", ["set", [["named-uuid", id]]]]]),
        ),
        format!("lrp-add {router} {name}: add to the router"),
    );
    Ok(())
}

/// `--may-exist` on a router port that exists: nothing to do when it is the same port on the
/// same router; `ovn-nbctl` refuses any difference.
fn lrp_exists(
    cx: &mut Ctx,
    router: &str,
    name: &str,
    mac: &str,
    networks: &[String],
) -> Result<(), NotNative> {
    let Some((u, rec, on)) = cx.replica.router_port(name) else {
        return unsupported(format!("router port {name} vanished"));
    };
    let (u, rec, on) = (u.to_string(), rec.clone(), on.map(str::to_string));
    if on.as_deref() != Some(router) {
        let on = on.unwrap_or_default();
        return refused(format!(
            "lrp-add: port {name} already exists but in router {on}"
        ));
    }
    if !rec.scalar.eq_ignore_ascii_case(mac) {
        return refused(format!(
            "lrp-add: port {name} already exists with mac {}",
            rec.scalar
        ));
    }
    let (mut have, mut want) = (rec.vals.clone(), networks.to_vec());
    have.sort();
    want.sort();
    if have != want {
        return refused(format!(
            "lrp-add: port {name} already exists with networks {have:?}"
        ));
    }
    let w = format!("lrp-add {router} {name}: exists as it is");
    let cond = json!([[col::UUID, "==", ["uuid", u]], [col::NAME, "==", name]]);
    let row = json!([{ col::NAME: name, col::MAC: rec.scalar, col::NETWORKS: ["set", rec.vals] }]);
    cx.push(
        wait(LRP, cond, &[col::NAME, col::MAC, col::NETWORKS], row),
        w.clone(),
    );
    let on_router = json!([
        [col::NAME, "==", router],
        [col::PORTS, "includes", ["uuid", u]]
    ]);
    cx.push(
        wait(LR, on_router, &[col::NAME], json!([{ col::NAME: router }])),
        format!("{w} on {router}"),
    );
    Ok(())
}

/// `--if-exists lrp-del PORT`
pub fn lrp_del(cx: &mut Ctx, name: &str) -> Result<(), NotNative> {
    plain_name(name)?;
    match cx.state(LRP, name) {
        Some(Done::Created(_)) => unsupported(format!("router port {name} added and deleted")),
        Some(Done::Deleted) => Ok(()),
        None => {
            let uuid = cx.replica.router_port(name).map(|(u, ..)| u.to_string());
            let del = PortDelete {
                cmd: "lrp-del",
                port_table: LRP,
                parent_table: LR,
                parent: "router",
                name,
            };
            del.plan(cx, uuid);
            Ok(())
        }
    }
}

/// `--may-exist ls-lb-add`/`lr-lb-add` (`add`) or `--if-exists ls-lb-del` of a load balancer
/// given by uuid (as the project gives them): the switch or router must exist once, and for
/// an add, the load balancer too. A set `insert` of a member already there changes nothing.
pub fn lb_attach(
    cx: &mut Ctx,
    table: &'static str,
    owner: &str,
    lb: &str,
    add: bool,
) -> Result<(), NotNative> {
    plain_name(owner)?;
    if !full_uuid(lb) {
        return unsupported(format!("load balancer {lb:?} by name"));
    }
    let c = cmd(table, if add { "lb-add" } else { "lb-del" });
    cx.push(
        wait_one(table, owner),
        format!("{c} {owner} {lb}: {} exists once", kind(table)),
    );
    if add {
        cx.push(
            wait_uuid(LB, lb, None),
            format!("{c} {owner} {lb}: load balancer exists"),
        );
    }
    let how = if add { "insert" } else { "delete" };
    cx.push(
        mutate(
            table,
            by_name(owner),
            json!([[col::LOAD_BALANCER, how, ["set", [["uuid", lb]]]]]),
        ),
        format!("{c} {owner} {lb}"),
    );
    Ok(())
}

/// `--if-exists lb-del LB` (by uuid): removed from every switch and router first, as
/// `ovn-nbctl` does (the references are strong).
pub fn lb_del(cx: &mut Ctx, lb: &str) -> Result<(), NotNative> {
    if !full_uuid(lb) {
        return unsupported(format!("load balancer {lb:?} by name"));
    }
    let uuid = json!(["uuid", lb]);
    for table in [nb::LOGICAL_SWITCH, LR] {
        cx.push(
            mutate(
                table,
                json!([[col::LOAD_BALANCER, "includes", uuid]]),
                json!([[col::LOAD_BALANCER, "delete", ["set", [uuid]]]]),
            ),
            format!("lb-del {lb}: detach from every {}", kind(table)),
        );
    }
    cx.push(delete(LB, by_uuid(lb)), format!("lb-del {lb}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::ctl::NbOp;
    use super::super::plan::{Case, check_cases, test_replica, translate, txn};
    use super::*;

    const U: &str = "0123abcd-0000-4000-8000-00000000beef";

    fn lrp_add(router: &str, name: &str, mac: &str, net: &str) -> NbOp {
        NbOp::LrpAdd {
            router: router.into(),
            name: name.into(),
            mac: mac.into(),
            networks: vec![net.into()],
        }
    }

    /// (case, ops, the plan's op kinds or None when refused)
    #[test]
    fn topology_table() {
        let ls_add = |n: &str| NbOp::LsAdd { name: n.into() };
        let cases: Vec<Case> = vec![
            (
                "ls-add of a new switch",
                vec![ls_add("n2"), ls_add("n2")],
                Some(vec!["wait Logical_Switch", "insert Logical_Switch"]),
            ),
            (
                "ls-add of an existing switch",
                vec![ls_add("n1")],
                Some(vec!["wait Logical_Switch"]),
            ),
            (
                "ls-add of a name two switches have",
                vec![ls_add("dup")],
                None,
            ),
            (
                "lr-add of an existing router",
                vec![NbOp::LrAdd { name: "r1".into() }],
                Some(vec!["wait Logical_Router"]),
            ),
            (
                "ls-del of a switch, then of it again",
                vec![
                    NbOp::LsDel { name: "n1".into() },
                    NbOp::LsDel { name: "n1".into() },
                ],
                Some(vec!["wait Logical_Switch", "delete Logical_Switch"]),
            ),
            (
                "lr-del of an absent router",
                vec![NbOp::LrDel { name: "gr".into() }],
                Some(vec!["wait Logical_Router"]),
            ),
            (
                "ls-del of a duplicated name",
                vec![NbOp::LsDel { name: "dup".into() }],
                None,
            ),
            (
                "lrp-add of a new port",
                vec![lrp_add("r1", "rtoj", "0a:58:64:40:00:01", "100.64.0.1/16")],
                Some(vec![
                    "wait Logical_Router",
                    "insert Logical_Router_Port",
                    "mutate Logical_Router",
                ]),
            ),
            (
                "lrp-add of the port as it is (mac case aside)",
                vec![lrp_add("r1", "rtos-n1", "0A:58:0a:01:00:01", "10.1.0.1/24")],
                Some(vec!["wait Logical_Router_Port", "wait Logical_Router"]),
            ),
            (
                "lrp-add with another mac",
                vec![lrp_add("r1", "rtos-n1", "0a:58:0a:01:00:02", "10.1.0.1/24")],
                None,
            ),
            (
                "lrp-add with other networks",
                vec![lrp_add("r1", "rtos-n1", "0a:58:0a:01:00:01", "10.1.0.2/24")],
                None,
            ),
            (
                "lrp-add on another router",
                vec![lrp_add("r2", "rtos-n1", "0a:58:0a:01:00:01", "10.1.0.1/24")],
                None,
            ),
            (
                "lrp-add with a bad network",
                vec![lrp_add("r1", "x", "0a:58:0a:01:00:01", "10.1.0.1")],
                None,
            ),
            (
                "lrp-add with a bad mac",
                vec![lrp_add("r1", "x", "0a:58:0a:01:00", "10.1.0.1/24")],
                None,
            ),
            (
                "lrp-del then lrp-add: re-created",
                vec![
                    NbOp::LrpDel {
                        name: "rtos-n1".into(),
                    },
                    lrp_add("r1", "rtos-n1", "0a:58:0a:01:00:02", "10.1.0.1/24"),
                ],
                Some(vec![
                    "wait Logical_Router_Port",
                    "mutate Logical_Router",
                    "delete Logical_Router_Port",
                    "wait Logical_Router",
                    "insert Logical_Router_Port",
                    "mutate Logical_Router",
                ]),
            ),
            (
                "lrp-del of an absent port",
                vec![NbOp::LrpDel { name: "x".into() }],
                Some(vec!["wait Logical_Router_Port"]),
            ),
            (
                "ls-lb-add, ls-lb-del, lr-lb-add",
                vec![
                    NbOp::LsLbAdd {
                        switch: "n1".into(),
                        lb: U.into(),
                    },
                    NbOp::LsLbDel {
                        switch: "n1".into(),
                        lb: U.into(),
                    },
                    NbOp::LrLbAdd {
                        router: "r1".into(),
                        lb: U.into(),
                    },
                ],
                Some(vec![
                    "wait Logical_Switch",
                    "wait Load_Balancer",
                    "mutate Logical_Switch",
                    "wait Logical_Switch",
                    "mutate Logical_Switch",
                    "wait Logical_Router",
                    "wait Load_Balancer",
                    "mutate Logical_Router",
                ]),
            ),
            (
                "lb-del",
                vec![NbOp::LbDel { lb: U.into() }],
                Some(vec![
                    "mutate Logical_Switch",
                    "mutate Logical_Router",
                    "delete Load_Balancer",
                ]),
            ),
        ];
        check_cases(cases, false);
    }

    #[test]
    fn guards_hold_the_decisions() {
        let r = test_replica();
        // Absent: a wait for none; present as asked: the row's mac and networks as read.
        let p = translate(&txn(vec![NbOp::LsAdd { name: "n2".into() }]), &r).unwrap();
        assert_eq!(p.ops[0], wait_none(nb::LOGICAL_SWITCH, "n2"));
        let p = translate(
            &txn(vec![lrp_add(
                "r1",
                "rtos-n1",
                "0a:58:0a:01:00:01",
                "10.1.0.1/24",
            )]),
            &r,
        )
        .unwrap();
        assert_eq!(
            p.ops[0]["rows"],
            json!([{"name": "rtos-n1", "mac": "0a:58:0a:01:00:01", "networks": ["set", ["10.1.0.1/24"]]}])
        );
        assert_eq!(
            p.ops[1]["where"],
            json!([["name", "==", "r1"], ["ports", "includes", ["uuid", "l1"]]])
        );
        let p = translate(&txn(vec![NbOp::LbDel { lb: U.into() }]), &r).unwrap();
        assert_eq!(
            p.ops[0]["where"],
            json!([["load_balancer", "includes", ["uuid", U]]])
        );
        // Load balancers by name are left to ovn-nbctl.
        let t = txn(vec![NbOp::LbDel {
            lb: "cluster-lb-tcp".into(),
        }]);
        assert!(matches!(translate(&t, &r), Err(NotNative::Unsupported(_))));
    }
}
