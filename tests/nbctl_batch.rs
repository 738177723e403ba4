//! The typed northbound layer against a real NB database: a rendered batch runs as one
//! `ovn-nbctl` transaction, reads come back typed, and a failing command leaves NB unchanged.

mod common;

use std::sync::Arc;

use ovn_testbed::Central;
use ovnkube::exec::RealExec;
use ovnkube::ovn::{ColVal, Ctl, CtlTarget, DbOp, Nb, NbOp, NbTxn, Nbctl, Query, RoutePolicy, Val};

async fn nb_for(central: &Central) -> Nbctl {
    let mut t = CtlTarget::new("ovn-nbctl");
    // Exercise the TCP remote the way `-nb-address=tcp://...` does.
    let addr = common::open_nb_tcp(central).await;
    t.db_args = vec![format!("--db=tcp:{addr}")];
    Nbctl(Ctl::new(Arc::new(RealExec::default()), t))
}

use common::nb_dump as dump;

fn topology_txn() -> NbTxn {
    let mut t = NbTxn::new();
    t.push(NbOp::LrAdd { name: "r1".into() })
        .push(NbOp::LrpAdd {
            router: "r1".into(),
            name: "rtos-n1".into(),
            mac: "0a:58:0a:01:00:01".into(),
            networks: vec!["10.1.0.1/24".into()],
        })
        .push(NbOp::LsAdd { name: "n1".into() })
        .push(NbOp::Db(DbOp::Set {
            table: "Logical_Switch".into(),
            record: "n1".into(),
            columns: vec![
                ColVal::key("other_config", "subnet", "10.1.0.0/24"),
                // A hostile label value stays data.
                ColVal::key("external_ids", "k8s.ovn.org/label", "a\"b\\c $x {y}"),
            ],
            if_exists: false,
        }))
        .push(NbOp::LspAdd {
            switch: "n1".into(),
            name: "default_web".into(),
        })
        .push(NbOp::LspSetAddresses {
            name: "default_web".into(),
            addresses: vec!["0a:58:0a:01:00:05 10.1.0.5".into()],
        })
        .push(NbOp::LrRouteAdd {
            router: "r1".into(),
            prefix: "10.1.0.0/24".into(),
            nexthop: "100.64.0.2".into(),
            port: None,
            policy: RoutePolicy::SrcIp,
        })
        .push(NbOp::Db(DbOp::Create {
            table: "Load_Balancer".into(),
            id: None,
            columns: vec![
                ColVal::set("name", "lb1"),
                ColVal::set("protocol", "tcp"),
                ColVal::key("vips", "10.96.0.10:80", "10.1.0.5:8080"),
            ],
        }))
        .push(NbOp::LsLbAdd {
            switch: "n1".into(),
            lb: "lb1".into(),
        });
    t
}

#[tokio::test]
async fn batch_runs_as_one_transaction_and_reads_back() {
    let central = Central::start().unwrap();
    let nb = nb_for(&central).await;
    nb.transact(&topology_txn()).await.unwrap();

    let t = nb
        .query(&[
            Query::list(
                "Logical_Switch",
                &["name", "other_config", "external_ids", "load_balancer"],
            ),
            Query::find(
                "Logical_Switch_Port",
                &["name", "addresses"],
                vec![ColVal::set("name", "default_web")],
            ),
            Query::list(
                "Logical_Router_Static_Route",
                &["ip_prefix", "nexthop", "policy"],
            ),
            Query::list("Load_Balancer", &["name", "vips"]),
        ])
        .await
        .unwrap();
    let sw = &t[0][0];
    assert_eq!(sw.str("name"), "n1");
    assert_eq!(
        sw.map_get("other_config", "subnet").as_deref(),
        Some("10.1.0.0/24")
    );
    assert_eq!(
        sw.map_get("external_ids", "k8s.ovn.org/label").as_deref(),
        Some("a\"b\\c $x {y}")
    );
    assert_eq!(sw.set("load_balancer"), [t[3][0].uuid.clone()]);
    assert_eq!(t[1][0].set("addresses"), ["0a:58:0a:01:00:05 10.1.0.5"]);
    assert_eq!(t[2][0].str("policy"), "src-ip");
    assert_eq!(t[2][0].str("nexthop"), "100.64.0.2");
    assert_eq!(
        t[3][0].map_get("vips", "10.96.0.10:80").as_deref(),
        Some("10.1.0.5:8080")
    );

    // Re-running the idempotent commands (all but `create`) is a no-op, not an error.
    let before = dump(&central);
    let mut again = topology_txn();
    again
        .ops
        .retain(|op| !matches!(op, NbOp::Db(DbOp::Create { .. })));
    nb.transact(&again).await.unwrap();
    assert_eq!(before, dump(&central));
}

#[tokio::test]
async fn a_failing_command_leaves_the_database_unchanged() {
    let central = Central::start().unwrap();
    let nb = nb_for(&central).await;
    let mut first = NbTxn::new();
    first.push(NbOp::LsAdd {
        name: "keep".into(),
    });
    nb.transact(&first).await.unwrap();
    let before = dump(&central);

    let mut bad = topology_txn();
    // The last command fails: the port already exists on another switch.
    bad.push(NbOp::LspAdd {
        switch: "keep".into(),
        name: "default_web".into(),
    });
    let err = nb.transact(&bad).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("ovn-nbctl"), "{msg}");
    assert!(
        msg.contains("default_web"),
        "error should carry nbctl's stderr: {msg}"
    );
    assert_eq!(before, dump(&central), "a failed batch must not change NB");

    // Record names are validated before anything runs.
    let mut hostile = NbTxn::new();
    hostile.push(NbOp::LsAdd {
        name: "--db=tcp:1.2.3.4:1".into(),
    });
    assert!(nb.transact(&hostile).await.is_err());
    assert_eq!(before, dump(&central));
}

#[tokio::test]
async fn remove_and_set_members() {
    let central = Central::start().unwrap();
    let nb = nb_for(&central).await;
    nb.transact(&topology_txn()).await.unwrap();
    let lb = nb
        .query(&[Query::list("Load_Balancer", &["name"])])
        .await
        .unwrap()[0][0]
        .uuid
        .clone();
    let mut t = NbTxn::new();
    t.push(NbOp::Db(DbOp::Remove {
        table: "Load_Balancer".into(),
        record: lb.clone(),
        column: "vips".into(),
        values: vec![Val::str("10.96.0.10:80")],
        if_exists: true,
    }))
    .push(NbOp::Db(DbOp::Set {
        table: "Logical_Switch_Port".into(),
        record: "default_web".into(),
        columns: vec![ColVal::set(
            "addresses",
            Val::str_set(["0a:58:0a:01:00:06 10.1.0.6"]),
        )],
        if_exists: false,
    }));
    nb.transact(&t).await.unwrap();
    let r = nb
        .query(&[
            Query::list("Load_Balancer", &["vips"]),
            Query::find(
                "Logical_Switch_Port",
                &["addresses"],
                vec![ColVal::set("name", "default_web")],
            ),
        ])
        .await
        .unwrap();
    assert!(r[0][0].map("vips").is_empty());

    // Port groups: created with members, deleted, and deleting again is not an error.
    let mut t = NbTxn::new();
    t.push(NbOp::PgAdd {
        name: "pg_a".into(),
        ports: vec!["default_web".into()],
    });
    nb.transact(&t).await.unwrap();
    let pgs = nb
        .query(&[Query::list("Port_Group", &["name", "ports"])])
        .await
        .unwrap();
    assert_eq!(pgs[0].len(), 1);
    assert_eq!(pgs[0][0].set("ports").len(), 1);
    for _ in 0..2 {
        let mut t = NbTxn::new();
        t.push(NbOp::PgDel {
            name: "pg_a".into(),
        });
        nb.transact(&t).await.unwrap();
    }
    assert!(
        nb.query(&[Query::list("Port_Group", &["name"])])
            .await
            .unwrap()[0]
            .is_empty()
    );
    assert_eq!(r[1][0].set("addresses"), ["0a:58:0a:01:00:06 10.1.0.6"]);
}
