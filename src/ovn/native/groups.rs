//! Port groups: `pg-add`, `pg-set-ports` and `--if-exists destroy Port_Group`.
//!
//! `ovn-nbctl` resolves each port name to its row; so does the translation, from the
//! replica (or the port's `insert` in the same transaction), with a `wait` per resolved
//! port that the uuid still is that port: the group's references are weak, so a port deleted
//! and re-created meanwhile would otherwise leave the group silently without it.

use serde_json::{Value, json};

use super::super::schema::{col, nb};
use super::plan::{
    Ctx, Done, NotNative, by_name, delete, insert, plain_name, refused, update, wait_one, wait_uuid,
};

const PG: &str = nb::PORT_GROUP;
const LSP: &str = nb::LOGICAL_SWITCH_PORT;

/// The ports as OVSDB uuids (or named uuids of ports this transaction inserts).
fn resolve_ports(cx: &mut Ctx, c: &str, ports: &[String]) -> Result<Value, NotNative> {
    let mut members = Vec::with_capacity(ports.len());
    for p in ports {
        plain_name(p)?;
        match cx.state(LSP, p) {
            Some(Done::Created(i)) => members.push(cx.named_uuid(i)),
            Some(Done::Deleted) => return refused(format!("{c}: port {p} not found")),
            None => {
                let Some(u) = cx.replica.port_uuid(p).map(str::to_string) else {
                    return refused(format!("{c}: port {p} not found"));
                };
                cx.push(
                    wait_uuid(LSP, &u, Some(p)),
                    format!("{c}: port {p} is still {u}"),
                );
                members.push(json!(["uuid", u]));
            }
        }
    }
    Ok(json!(["set", members]))
}

/// `pg-add NAME [PORT...]` (an existing group aborts the commit on the name's unique index,
/// as `ovn-nbctl` fails).
pub fn pg_add(cx: &mut Ctx, name: &str, ports: &[String]) -> Result<(), NotNative> {
    plain_name(name)?;
    if matches!(cx.state(PG, name), Some(Done::Created(_))) {
        return refused(format!("pg-add: port group {name} already exists"));
    }
    let c = format!("pg-add {name}");
    let members = resolve_ports(cx, &c, ports)?;
    let id = cx.row_id("pg");
    let i = cx.push(
        insert(PG, json!({ col::NAME: name, col::PORTS: members }), &id),
        c,
    );
    cx.mark(PG, name, Done::Created(i));
    Ok(())
}

/// `pg-set-ports NAME PORT...`
pub fn pg_set_ports(cx: &mut Ctx, name: &str, ports: &[String]) -> Result<(), NotNative> {
    plain_name(name)?;
    let c = format!("pg-set-ports {name}");
    let members = resolve_ports(cx, &c, ports)?;
    match cx.state(PG, name) {
        Some(Done::Created(i)) => cx.ops[i]["row"][col::PORTS] = members,
        Some(Done::Deleted) => return refused(format!("{c}: port group not found")),
        None => {
            cx.push(wait_one(PG, name), format!("{c}: the group exists once"));
            cx.push(update(PG, by_name(name), json!({ col::PORTS: members })), c);
        }
    }
    Ok(())
}

/// `--if-exists destroy Port_Group NAME` (its ACLs are not roots and go with it).
pub fn pg_del(cx: &mut Ctx, name: &str) -> Result<(), NotNative> {
    plain_name(name)?;
    cx.push(delete(PG, by_name(name)), format!("destroy {PG} {name}"));
    cx.mark(PG, name, Done::Deleted);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::super::ctl::NbOp;
    use super::super::plan::{Case, check_cases, test_replica, translate, txn};
    use super::*;

    fn ports(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_table() {
        let cases: Vec<Case> = vec![
            (
                "pg-add with ports of the replica",
                vec![NbOp::PgAdd {
                    name: "pg1".into(),
                    ports: ports(&["pa", "pb"]),
                }],
                Some(vec![
                    "wait Logical_Switch_Port",
                    "wait Logical_Switch_Port",
                    "insert Port_Group",
                ]),
            ),
            (
                "pg-add with a port of the same batch, then set its ports",
                vec![
                    NbOp::LspAdd {
                        switch: "n1".into(),
                        name: "x".into(),
                    },
                    NbOp::PgAdd {
                        name: "pg1".into(),
                        ports: ports(&["x"]),
                    },
                    NbOp::PgSetPorts {
                        name: "pg1".into(),
                        ports: ports(&["x", "pa"]),
                    },
                ],
                Some(vec![
                    "wait Logical_Switch",
                    "insert Logical_Switch_Port",
                    "mutate Logical_Switch",
                    "insert Port_Group",
                    "wait Logical_Switch_Port",
                ]),
            ),
            (
                "pg-add with a missing port",
                vec![NbOp::PgAdd {
                    name: "pg1".into(),
                    ports: ports(&["ghost"]),
                }],
                None,
            ),
            (
                "pg-set-ports of an existing group",
                vec![NbOp::PgSetPorts {
                    name: "pg1".into(),
                    ports: ports(&["pa"]),
                }],
                Some(vec![
                    "wait Logical_Switch_Port",
                    "wait Port_Group",
                    "update Port_Group",
                ]),
            ),
            (
                "pg-del",
                vec![NbOp::PgDel { name: "pg1".into() }],
                Some(vec!["delete Port_Group"]),
            ),
            (
                "pg-add twice",
                vec![
                    NbOp::PgAdd {
                        name: "pg1".into(),
                        ports: vec![],
                    },
                    NbOp::PgAdd {
                        name: "pg1".into(),
                        ports: vec![],
                    },
                ],
                None,
            ),
        ];
        check_cases(cases, false);
    }

    #[test]
    fn members_are_uuids_or_named_uuids() {
        let t = txn(vec![
            NbOp::LspAdd {
                switch: "n1".into(),
                name: "x".into(),
            },
            NbOp::PgAdd {
                name: "pg1".into(),
                ports: ports(&["x", "pa"]),
            },
        ]);
        let p = translate(&t, &test_replica()).unwrap();
        let id = &p.ops[1]["uuid-name"];
        assert_eq!(p.ops[3]["op"], "wait");
        assert_eq!(
            p.ops[4]["row"],
            json!({"name": "pg1", "ports": ["set", [["named-uuid", id], ["uuid", "p1"]]]})
        );
    }
}
