//! The native OVSDB backend against real NB servers: the same transactions through `ovn-nbctl`
//! and through `NativeNb` on two fresh databases must leave the same rows (uuids aside) and
//! fail alike; queries must read the same rows; the connection must survive an NB restart.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovn_testbed::Central;
use ovnkube::controller::pods_plan::{PortRow, delete_ops, port_ops};
use ovnkube::exec::RealExec;
use ovnkube::kube::annotations::PodNetwork;
use ovnkube::ovn::jsonrpc::Remote;
use ovnkube::ovn::ovsdb::{Datum, parse_tables};
use ovnkube::ovn::{
    ColVal, Ctl, CtlTarget, DbOp, NativeNb, Nb, NbOp, NbTxn, Nbctl, Query, Row, Val,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn nbctl(central: &Central) -> Arc<dyn Nb> {
    let mut t = CtlTarget::new("ovn-nbctl");
    t.db_args = vec![format!("--db={}", central.nb_db())];
    t.timeout = TIMEOUT;
    Arc::new(Nbctl(Ctl::new(Arc::new(RealExec::new(4)), t)))
}

async fn native(central: &Central, tcp: bool) -> NativeNb {
    let target = if tcp {
        format!("tcp:{}", common::open_nb_tcp(central).await)
    } else {
        central.nb_db()
    };
    let remote = Remote::parse(&target).expect("unix/tcp target");
    NativeNb::start(remote, nbctl(central), TIMEOUT)
}

fn net(ip: [u8; 4]) -> PodNetwork {
    let ip = Ipv4Addr::from(ip);
    let o = ip.octets();
    PodNetwork {
        ip,
        prefix_len: 24,
        mac: format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
        gateway: Ipv4Addr::new(o[0], o[1], o[2], 1),
    }
}

fn txn(ops: impl IntoIterator<Item = NbOp>) -> NbTxn {
    let mut t = NbTxn::new();
    t.extend(ops);
    t
}

/// Uuids replaced by the name of the row they point at (or a placeholder), sets sorted.
fn normalise(d: &Datum, names: &HashMap<String, String>) -> Datum {
    match d {
        Datum::Uuid(u) => Datum::Str(names.get(u).cloned().unwrap_or_else(|| "<uuid>".into())),
        Datum::Set(v) => {
            let mut v: Vec<Datum> = v.iter().map(|x| normalise(x, names)).collect();
            v.sort_by_key(|x| format!("{x:?}"));
            // A one-member set prints as its atom.
            if v.len() == 1 {
                v.remove(0)
            } else {
                Datum::Set(v)
            }
        }
        Datum::Map(p) => {
            let mut p: Vec<(Datum, Datum)> = p
                .iter()
                .map(|(k, v)| (normalise(k, names), normalise(v, names)))
                .collect();
            p.sort_by_key(|x| format!("{x:?}"));
            Datum::Map(p)
        }
        other => other.clone(),
    }
}

/// The switches and ports as `ovn-nbctl list` shows them, comparable across databases.
fn dump(central: &Central) -> Vec<BTreeMap<String, Datum>> {
    let mut tables = Vec::new();
    for t in ["Logical_Switch_Port", "Logical_Switch"] {
        let out = central.nbctl(&["--format=json", "list", t]).unwrap();
        tables.push(parse_tables(&out).unwrap().remove(0));
    }
    let names: HashMap<String, String> = tables
        .iter()
        .flatten()
        .map(|r| (r.uuid.clone(), r.str("name")))
        .collect();
    let mut rows: Vec<BTreeMap<String, Datum>> = tables
        .iter()
        .flatten()
        .map(|r| {
            r.columns
                .iter()
                // northd writes `up` on its own schedule.
                .filter(|(c, _)| c.as_str() != "up")
                .map(|(c, d)| (c.clone(), normalise(d, &names)))
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_nbctl_leave_the_same_rows() {
    let (a, b) = (Central::start().unwrap(), Central::start().unwrap());
    for c in [&a, &b] {
        for sw in ["n1", "n2"] {
            c.nbctl(&["ls-add", sw]).unwrap();
        }
    }
    let exec_nb = nbctl(&a);
    let nat = native(&b, false).await;
    // The duplicate-IP check runs on the replica once it is in sync (the server otherwise).
    let start = Instant::now();
    while !nat.replica_synced() {
        assert!(start.elapsed() < TIMEOUT, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lsp = "Logical_Switch_Port".to_string();

    let steps: Vec<(&str, NbTxn, bool)> = vec![
        (
            "pod ports in one batch on two switches",
            txn([
                port_ops("n1", "default", "p1", &net([10, 1, 0, 5])),
                port_ops("n2", "default", "p2", &net([10, 2, 0, 5])),
                port_ops("n1", "other", "p3", &net([10, 1, 0, 6])),
            ]
            .concat()),
            true,
        ),
        (
            "management port shape (add + addresses)",
            txn([
                NbOp::LspAdd {
                    switch: "n2".into(),
                    name: "k8s-n2".into(),
                },
                NbOp::LspSetAddresses {
                    name: "k8s-n2".into(),
                    addresses: vec!["0a:58:0a:02:00:02 10.2.0.2".into()],
                },
            ]),
            true,
        ),
        (
            "addresses and keys of an existing port",
            txn([
                NbOp::LspSetAddresses {
                    name: "default_p1".into(),
                    addresses: vec!["0a:58:0a:01:00:07 10.1.0.7".into()],
                },
                NbOp::Db(DbOp::Set {
                    table: lsp.clone(),
                    record: "default_p1".into(),
                    columns: vec![
                        ColVal::key("external_ids", "pod", "again"),
                        ColVal::key("external_ids", "new", "k\"ey"),
                        ColVal::set("dynamic_addresses", Val::Set(vec![])),
                    ],
                    if_exists: false,
                }),
            ]),
            true,
        ),
        (
            "port security of an existing port, replaced whole",
            txn([NbOp::Db(DbOp::Set {
                table: lsp.clone(),
                record: "default_p1".into(),
                columns: vec![ColVal::set(
                    "port_security",
                    Val::str_set(["0a:58:0a:01:00:07 10.1.0.7"]),
                )],
                if_exists: false,
            })]),
            true,
        ),
        (
            "switch keys and a whole map",
            txn([NbOp::Db(DbOp::Set {
                table: "Logical_Switch".into(),
                record: "n1".into(),
                columns: vec![
                    ColVal::key("other_config", "subnet", "10.1.0.0/24"),
                    ColVal::set("external_ids", Val::str_map([("a", "1"), ("b", "2")])),
                    ColVal::key("external_ids", "a", "3"),
                ],
                if_exists: false,
            })]),
            true,
        ),
        (
            "delete one port, and one that is absent",
            txn([delete_ops("default_p2"), delete_ops("default_nope")].concat()),
            true,
        ),
        (
            "may-exist re-add of an existing port",
            txn(port_ops("n1", "default", "p1", &net([10, 1, 0, 5]))),
            true,
        ),
        (
            "re-create a port on another switch in one transaction",
            txn([
                delete_ops("other_p3"),
                port_ops("n2", "other", "p3", &net([10, 2, 0, 6])),
            ]
            .concat()),
            true,
        ),
        (
            "a switch that does not exist fails the whole batch",
            txn([
                port_ops("n1", "default", "ok", &net([10, 1, 0, 9])),
                port_ops("nope", "default", "lost", &net([10, 9, 0, 5])),
            ]
            .concat()),
            false,
        ),
        (
            "a duplicate address on the switch fails",
            txn(port_ops("n2", "default", "dup", &net([10, 2, 0, 6]))),
            false,
        ),
        (
            "setting a port that does not exist fails",
            txn([NbOp::LspSetAddresses {
                name: "default_ghost".into(),
                addresses: vec!["0a:58:0a:01:00:08 10.1.0.8".into()],
            }]),
            false,
        ),
        (
            "a switch added, then ports on it",
            txn([
                vec![NbOp::LsAdd { name: "n3".into() }],
                port_ops("n3", "default", "p4", &net([10, 3, 0, 5])),
            ]
            .concat()),
            true,
        ),
    ];
    for (n, (what, t, ok)) in steps.iter().enumerate() {
        let ra = exec_nb.transact(t).await;
        let rb = nat.transact(t).await;
        assert_eq!(ra.is_ok(), *ok, "{what}: ovn-nbctl gave {ra:?}");
        assert_eq!(rb.is_ok(), *ok, "{what}: native gave {rb:?}");
        assert_eq!(dump(&a), dump(&b), "{what}: the databases differ");
        if n == 0 {
            // Pod ports carry port security (MAC + IP) on both backends: the equality above
            // must not hold merely because neither wrote it.
            for c in [&a, &b] {
                let ps = c
                    .nbctl(&["get", "Logical_Switch_Port", "default_p1", "port_security"])
                    .unwrap();
                assert_eq!(ps.trim(), "[\"0a:58:0a:01:00:05 10.1.0.5\"]", "{what}");
            }
        }
    }
    let s = nat.stats();
    // All native, the may-exist re-add and the mixed batch included; the three failures
    // were translated again (4 times each) before their refusal was the answer.
    assert_eq!((s.native, s.fallback), (12, 0), "{s:?}");
    assert!(s.retries >= 12, "{s:?}");
    assert!(!dump(&b).is_empty());
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|x, y| x.uuid.cmp(&y.uuid));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_the_same_rows() {
    let c = Central::start().unwrap();
    let nat = native(&c, true).await;
    c.nbctl(&["ls-add", "n1"]).unwrap();
    nat.transact(&txn([
        port_ops("n1", "default", "q1", &net([10, 1, 0, 5])),
        port_ops("n1", "default", "q2", &net([10, 1, 0, 6])),
    ]
    .concat()))
        .await
        .unwrap();
    c.nbctl(&["lsp-add", "n1", "plain"]).unwrap();
    let queries = [
        PortRow::query(),
        Query::list("Logical_Switch", &["name"]),
        Query::list("Logical_Switch_Port", &[]),
        Query::find(
            "Logical_Switch",
            &["name", "ports", "other_config"],
            vec![ColVal::set("name", "n1")],
        ),
        Query::find("Logical_Router", &["name"], vec![]),
    ];
    let via_nbctl = nbctl(&c).query(&queries).await.unwrap();
    let via_native = nat.query(&queries).await.unwrap();
    assert_eq!(via_native.len(), queries.len());
    for (i, (x, y)) in via_nbctl.into_iter().zip(via_native).enumerate() {
        assert_eq!(sorted(x), sorted(y), "query {i}: {:?}", queries[i]);
    }
    let pods = nat.query(&[PortRow::query()]).await.unwrap();
    assert_eq!(pods[0].len(), 2);
    assert_eq!(nat.stats().fallback, 0);
}

async fn until_ok(nb: &NativeNb, t: &NbTxn, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match nb.transact(t).await {
            Ok(_) => return start.elapsed(),
            Err(e) if start.elapsed() < within => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no success within {within:?}: {e:#}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_an_nb_restart() {
    let mut c = Central::start().unwrap();
    c.nbctl(&["ls-add", "n1"]).unwrap();
    for tcp in [false, true] {
        let nat = native(&c, tcp).await;
        let pfx = if tcp { "tcp" } else { "unix" };
        let add = |i: u8| {
            txn(port_ops(
                "n1",
                pfx,
                &format!("r{i}"),
                &net([10, 1, tcp as u8, i]),
            ))
        };
        until_ok(&nat, &add(1), Duration::from_secs(5)).await;

        c.stop_nb();
        let started = Instant::now();
        let err = nat.transact(&add(2)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow failure: {err:#}"
        );
        let msg = format!("{err:#}");
        assert!(
            msg.contains("unavailable") || msg.contains("connection lost"),
            "{msg}"
        );
        c.start_nb().unwrap();
        let took = until_ok(&nat, &add(2), Duration::from_secs(15)).await;
        eprintln!("{pfx}: back {took:?} after the restart");
        let ports = nat.query(&[PortRow::query()]).await.unwrap();
        let names: Vec<String> = ports[0].iter().map(|r| r.str("name")).collect();
        assert!(names.contains(&format!("{pfx}_r2")), "{names:?}");
        let s = nat.stats();
        assert_eq!(s.fallback, 0, "{s:?}");
        // The replica is rebuilt on the new connection.
        let start = Instant::now();
        while !nat.replica_synced() {
            assert!(start.elapsed() < TIMEOUT, "the replica never resynced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The real binary picks the native backend for a `tcp:` NB and serves the topology, the
/// node and its pods without handing a transaction or query to ovn-nbctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_pods_natively() {
    use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
    use kube::api::{ListParams, ObjectMeta, PostParams};
    use kube::{Api, ResourceExt};

    let env = common::Env::start("nbnative").await;
    let mut master = env.spawn("master", &env.master_args("10.7.0.0/16"));
    master.wait_log(
        "NB backend: native OVSDB connection",
        Duration::from_secs(30),
    );
    master.wait_log("cluster topology ready", Duration::from_secs(60));
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    master.wait_log("pod worker started", Duration::from_secs(60));
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for i in 0..20 {
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(format!("w{i}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    common::eventually("pods annotated", Duration::from_secs(60), || async {
        let l = pods.list(&ListParams::default()).await.unwrap().items;
        (l.iter()
            .filter(|p| p.annotations().contains_key("ovn"))
            .count()
            == 20)
            .then_some(())
    })
    .await;
    // Nothing the master writes or reads goes through ovn-nbctl: not the pods, not the
    // cluster topology, the node's switch, the service load balancers or the policy
    // controller's address sets (each fallback is logged at debug level, which -loglevel=5
    // shows; the line below proves the log has debug lines).
    let log = master.log_text();
    assert!(log.contains("DEBUG"), "the master logs no debug lines");
    let fallbacks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("through ovn-nbctl"))
        .collect();
    assert!(fallbacks.is_empty(), "{fallbacks:#?}");
    assert_eq!(
        env.central
            .nbctl(&[
                "--bare",
                "--columns=name",
                "find",
                "Logical_Switch_Port",
                "external_ids:pod=true"
            ])
            .unwrap()
            .split_whitespace()
            .count(),
        20
    );
    // Written natively, with port security.
    let open = env
        .central
        .nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            "external_ids:pod=true",
            "port_security=[]",
        ])
        .unwrap();
    assert!(
        open.trim().is_empty(),
        "ports without port security: {open}"
    );
    master.terminate();
}

/// The service controller's VIP ops on a load balancer given by uuid: the same rows whichever
/// backend runs them, natively on the persistent connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_vips_by_uuid_match_nbctl() {
    let (a, b) = (Central::start().unwrap(), Central::start().unwrap());
    let uuid = |c: &Central| {
        c.nbctl(&["create", "Load_Balancer", "name=lb", "protocol=tcp"])
            .unwrap()
            .trim()
            .to_string()
    };
    let (ua, ub) = (uuid(&a), uuid(&b));
    let exec_nb = nbctl(&a);
    let nat = native(&b, false).await;
    let lb = "Load_Balancer".to_string();
    let steps = |u: &str| -> Vec<(&'static str, NbTxn, bool)> {
        let set = |vip: &str, backends: &str| {
            NbOp::Db(DbOp::Set {
                table: lb.clone(),
                record: u.into(),
                columns: vec![ColVal::key("vips", vip, backends)],
                if_exists: false,
            })
        };
        let remove = |vips: &[&str]| {
            NbOp::Db(DbOp::Remove {
                table: lb.clone(),
                record: u.into(),
                column: "vips".into(),
                values: vips.iter().map(|v| Val::str(*v)).collect(),
                if_exists: true,
            })
        };
        vec![
            (
                "two VIPs",
                txn([
                    set("10.96.0.1:80", "10.1.0.5:8080,10.1.0.6:8080"),
                    set("10.96.0.2:53", "10.1.0.7:5353"),
                ]),
                true,
            ),
            (
                "change one, remove the other and an absent one",
                txn([
                    remove(&["10.96.0.2:53", "10.96.0.9:1"]),
                    set("10.96.0.1:80", "10.1.0.6:8080"),
                ]),
                true,
            ),
            (
                "a load balancer that does not exist fails",
                txn([NbOp::Db(DbOp::Set {
                    table: lb.clone(),
                    record: "00000000-0000-4000-8000-000000000000".into(),
                    columns: vec![ColVal::key("vips", "10.96.0.3:80", "10.1.0.5:80")],
                    if_exists: false,
                })]),
                false,
            ),
        ]
    };
    for ((what, ta, ok), (_, tb, _)) in steps(&ua).iter().zip(steps(&ub).iter()) {
        let ra = exec_nb.transact(ta).await;
        let rb = nat.transact(tb).await;
        assert_eq!(ra.is_ok(), *ok, "{what}: ovn-nbctl gave {ra:?}");
        assert_eq!(rb.is_ok(), *ok, "{what}: native gave {rb:?}");
        let vips = |c: &Central| {
            c.nbctl(&["get", "Load_Balancer", "lb", "vips"])
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(vips(&a), vips(&b), "{what}: the databases differ");
    }
    let s = nat.stats();
    // The missing row aborts the native attempt, which is the answer (after retries).
    assert_eq!((s.native, s.fallback), (3, 0), "{s:?}");
}

/// Every row of the tables ovnkube writes, uuids replaced by the name of the row they point
/// at (unnamed rows compare by content), without the columns northd writes on its schedule.
fn full_dump(central: &Central) -> Vec<(String, BTreeMap<String, Datum>)> {
    const TABLES: [&str; 10] = [
        "Logical_Switch",
        "Logical_Switch_Port",
        "Logical_Router",
        "Logical_Router_Port",
        "Logical_Router_Static_Route",
        "NAT",
        "Load_Balancer",
        "ACL",
        "Address_Set",
        "Port_Group",
    ];
    let mut tables = Vec::new();
    for t in TABLES {
        let out = central.nbctl(&["--format=json", "list", t]).unwrap();
        tables.push((t, parse_tables(&out).unwrap().remove(0)));
    }
    let names: HashMap<String, String> = tables
        .iter()
        .flat_map(|(_, rows)| rows)
        .filter(|r| !r.str("name").is_empty())
        .map(|r| (r.uuid.clone(), r.str("name")))
        .collect();
    let mut rows: Vec<(String, BTreeMap<String, Datum>)> = tables
        .iter()
        .flat_map(|(t, rows)| rows.iter().map(move |r| (t, r)))
        .map(|(t, r)| {
            let cols = r
                .columns
                .iter()
                .filter(|(c, _)| !matches!(c.as_str(), "up" | "dynamic_addresses"))
                .map(|(c, d)| (c.clone(), normalise(d, &names)))
                .collect();
            (t.to_string(), cols)
        })
        .collect();
    rows.sort_by_key(|r| format!("{r:?}"));
    rows
}

/// The project's own planners, run against one backend: the master's topology and node
/// switches, a node's gateway (set up, then changed), service load balancers, network policy
/// objects (created, changed, removed), a node's cleanup; and commands `ovn-nbctl` refuses.
mod scenario {
    use super::*;
    use ovnkube::controller::policy_plan::{self, AclSpec, Ids, Objects, PgSpec};
    use ovnkube::controller::services::vips::{Flavor, LbWant, create_lb_ops};
    use ovnkube::master::topology::{Snapshot, cluster_ops, node_cleanup_ops, node_ops};
    use ovnkube::node::gateway_plan::{GatewaySpec, GwSnapshot, Uplink, gateway_ops};
    use ovnkube::ovn::Proto;

    pub const NODES: usize = 4;

    pub fn node(i: usize) -> String {
        format!("n{i}")
    }

    pub fn subnet(i: usize) -> ipnet::Ipv4Net {
        format!("10.128.{i}.0/24").parse().unwrap()
    }

    pub fn mac(i: usize) -> String {
        format!("0a:58:0a:80:{i:02x}:02")
    }

    pub fn gateway(phys: &str, mac: &str, nexthop: &str) -> GatewaySpec {
        GatewaySpec {
            node: node(1),
            system_id: "sys-n1".into(),
            physical_ip: phys.parse().unwrap(),
            mac: mac.into(),
            nexthop: Some(nexthop.parse().unwrap()),
            cluster_subnets: vec!["10.128.0.0/16".parse().unwrap()],
            node_subnet: subnet(1),
            join_ip: "100.64.0.2/16".parse().unwrap(),
            uplink: Uplink::Localnet {
                port: "br-eth0_n1".into(),
                network: "physnet".into(),
            },
            nodeport: true,
        }
    }

    fn acl(prio: i64, m: &str) -> AclSpec {
        AclSpec {
            direction: "to-lport".into(),
            priority: prio,
            matches: m.into(),
            action: "allow-related".into(),
            after_lb: prio > 1000,
            external_ids: [("owner".to_string(), "test".to_string())].into(),
        }
    }

    pub fn policy(ports: &[&str], acls: &[AclSpec], ips: &[&str]) -> Objects {
        let mut o = policy_plan::mgmt_objects(ips.iter().map(|i| i.parse().unwrap()));
        o.pgs.insert(
            "pg_test".into(),
            PgSpec {
                external_ids: [("owner".to_string(), "test".to_string())].into(),
                ports: ports.iter().map(|p| p.to_string()).collect(),
                acls: acls.iter().cloned().collect(),
            },
        );
        o
    }

    pub fn acls_a() -> Vec<AclSpec> {
        vec![acl(1001, "ip4.src == $a"), acl(900, "ip4")]
    }

    pub fn acls_b() -> Vec<AclSpec> {
        vec![acl(1001, "ip4.src == $a"), acl(800, "tcp.dst == 80")]
    }

    /// A step's transactions, planned from what `nb` holds now. One arm per step of
    /// [`STEPS`], so that the scenario reads as a table: long for that reason only.
    pub async fn plan(nb: &dyn Nb, step: &str) -> Vec<NbTxn> {
        let snap = || async { Snapshot::read(nb).await.unwrap() };
        let gw = |spec: GatewaySpec| async move {
            let q = GwSnapshot::queries(&spec.node, spec.uplink.port());
            let snap = GwSnapshot::from_tables(nb.query(&q).await.unwrap());
            vec![txn(gateway_ops(&snap, &spec))]
        };
        let lbs = || async {
            let q = [Query::list("Load_Balancer", &["name"])];
            let mut rows = nb.query(&q).await.unwrap().remove(0);
            rows.sort_by_key(|r| r.str("name"));
            rows
        };
        match step {
            "cluster topology" => vec![txn(cluster_ops(&snap().await))],
            "node switches" => {
                let s = snap().await;
                (1..=NODES)
                    .map(|i| txn(node_ops(&s, &node(i), subnet(i), Some(&mac(i)))))
                    .collect()
            }
            "a node's batch replayed from scratch (may-exist everywhere)" => {
                let mut s = snap().await;
                s.switches.clear();
                s.router_ports.clear();
                s.switch_ports.clear();
                s.mgmt_ports.clear();
                vec![txn(node_ops(&s, &node(2), subnet(2), Some(&mac(2))))]
            }
            "gateway set up" => {
                gw(gateway("172.16.0.2/24", "0a:00:00:00:00:01", "172.16.0.1")).await
            }
            "gateway changed (router port re-created, NAT and routes replaced)" => {
                gw(gateway(
                    "172.16.0.3/24",
                    "0a:00:00:00:00:03",
                    "172.16.0.254",
                ))
                .await
            }
            "service load balancers created and attached" => {
                let switches: Vec<String> = (1..=NODES).map(node).collect();
                let wants = [
                    LbWant::Cluster(
                        Proto::Tcp,
                        Flavor {
                            affinity: Some(60),
                            skip_snat: false,
                        },
                    ),
                    LbWant::Gateway("GR_n1".into(), Proto::Udp, Flavor::PLAIN),
                    LbWant::Node(
                        node(2),
                        Proto::Tcp,
                        Flavor {
                            affinity: None,
                            skip_snat: true,
                        },
                    ),
                ];
                vec![txn(create_lb_ops(&wants, &switches))]
            }
            "service VIPs set and removed" => {
                let rows = lbs().await;
                let mut t = NbTxn::new();
                for r in &rows {
                    t.push(NbOp::Db(DbOp::Set {
                        table: "Load_Balancer".into(),
                        record: r.uuid.clone(),
                        columns: vec![
                            ColVal::key("vips", "10.96.0.1:80", "10.128.1.5:8080"),
                            ColVal::key("vips", "10.96.0.2:80", "10.128.2.5:8080"),
                        ],
                        if_exists: false,
                    }));
                    t.push(NbOp::Db(DbOp::Remove {
                        table: "Load_Balancer".into(),
                        record: r.uuid.clone(),
                        column: "vips".into(),
                        values: vec![Val::str("10.96.0.2:80")],
                        if_exists: true,
                    }));
                }
                vec![t]
            }
            "policy created" => {
                let want = policy(&["k8s-n1", "k8s-n2"], &acls_a(), &["10.128.1.2"]);
                vec![txn(policy_plan::diff_ops(
                    &Objects::default(),
                    &want,
                    &mut Ids::default(),
                ))]
            }
            "policy changed" => {
                let cur = policy(&["k8s-n1", "k8s-n2"], &acls_a(), &["10.128.1.2"]);
                let want = policy(&["k8s-n3"], &acls_b(), &["10.128.1.2", "10.128.3.2"]);
                let empty_ports = policy(&[], &[], &["10.128.3.2"]);
                vec![
                    txn(policy_plan::diff_ops(&cur, &want, &mut Ids::default())),
                    txn(policy_plan::diff_ops(
                        &want,
                        &empty_ports,
                        &mut Ids::default(),
                    )),
                    txn(policy_plan::diff_ops(
                        &empty_ports,
                        &want,
                        &mut Ids::default(),
                    )),
                ]
            }
            "policy removed" => {
                let cur = policy(&["k8s-n3"], &acls_b(), &["10.128.1.2", "10.128.3.2"]);
                vec![txn(policy_plan::diff_ops(
                    &cur,
                    &Objects::default(),
                    &mut Ids::default(),
                ))]
            }
            "node cleanup" => vec![txn(node_cleanup_ops(&snap().await, &node(1)))],
            "service load balancers deleted" => {
                let t = lbs()
                    .await
                    .into_iter()
                    .filter(|r| {
                        !["cluster-lb-tcp", "cluster-lb-udp", "cluster-lb-sctp"]
                            .contains(&r.str("name").as_str())
                    })
                    .map(|r| NbOp::LbDel { lb: r.uuid.clone() })
                    .collect::<Vec<_>>();
                vec![txn(t)]
            }
            "a port on a missing switch fails" => vec![txn([
                NbOp::LsAdd { name: "n9".into() },
                NbOp::LspAdd {
                    switch: "nope".into(),
                    name: "p9".into(),
                },
            ])],
            "a router port with another mac fails" => vec![txn([NbOp::LrpAdd {
                router: "ovn_cluster_router".into(),
                name: "rtos-n2".into(),
                mac: "0a:58:0a:80:02:99".into(),
                networks: vec!["10.128.2.1/24".into()],
            }])],
            "a port group naming a missing port fails" => vec![txn([NbOp::PgAdd {
                name: "pg_bad".into(),
                ports: vec!["k8s-n9".into()],
            }])],
            other => panic!("unknown step {other}"),
        }
    }

    /// (step, whether it succeeds)
    pub const STEPS: &[(&str, bool)] = &[
        ("cluster topology", true),
        ("node switches", true),
        (
            "a node's batch replayed from scratch (may-exist everywhere)",
            true,
        ),
        ("gateway set up", true),
        (
            "gateway changed (router port re-created, NAT and routes replaced)",
            true,
        ),
        ("service load balancers created and attached", true),
        ("service VIPs set and removed", true),
        ("policy created", true),
        ("policy changed", true),
        ("policy removed", true),
        ("node cleanup", true),
        ("service load balancers deleted", true),
        ("a port on a missing switch fails", false),
        ("a router port with another mac fails", false),
        ("a port group naming a missing port fails", false),
    ];
}

/// Topology, gateway, services and policy: the same NB rows whichever backend writes them,
/// the same failures, and nothing handed to ovn-nbctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_project_transactions_match_nbctl_without_fallback() {
    let (a, b) = (Central::start().unwrap(), Central::start().unwrap());
    let exec_nb = nbctl(&a);
    let nat = native(&b, false).await;
    let mut commands = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (step, ok) in scenario::STEPS {
        let (ta, tb) = (
            scenario::plan(&*exec_nb, step).await,
            scenario::plan(&nat, step).await,
        );
        assert!(ta.iter().any(|t| !t.is_empty()), "{step}: nothing planned");
        for (x, y) in ta.iter().zip(&tb) {
            commands += y.len();
            let ra = exec_nb.transact(x).await;
            let rb = nat.transact(y).await;
            assert_eq!(ra.is_ok(), *ok, "{step}: ovn-nbctl gave {ra:?} for {x:#?}");
            assert_eq!(rb.is_ok(), *ok, "{step}: native gave {rb:?} for {y:#?}");
        }
        assert_eq!(ta.len(), tb.len(), "{step}: the plans differ");
        let dump = full_dump(&b);
        assert_eq!(full_dump(&a), dump, "{step}: the databases differ");
        seen.extend(dump.into_iter().map(|(t, _)| t));
    }
    let s = nat.stats();
    assert_eq!(s.fallback, 0, "{s:?}");
    assert!(commands > 50, "{commands} commands");
    // Every table held rows at some step: the comparisons were not between empty tables.
    for t in [
        "Logical_Router_Port",
        "Logical_Router_Static_Route",
        "NAT",
        "Load_Balancer",
        "ACL",
        "Port_Group",
        "Address_Set",
    ] {
        assert!(seen.contains(t), "no {t} rows were compared");
    }
}

/// Benchmark (`make bench` style, `--ignored`): the master's initial topology plus 50 node
/// switches (each node read, planned and written as the master does), per backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_topology_and_50_node_switches() {
    use ovnkube::master::topology::{Snapshot, cluster_ops, node_ops};
    let nodes: usize = std::env::var("TOPOLOGY_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    for backend in ["exec", "native"] {
        let c = Central::start().unwrap();
        let nb: Arc<dyn Nb> = match backend {
            "exec" => nbctl(&c),
            _ => {
                let n = native(&c, false).await;
                let start = Instant::now();
                while !n.replica_synced() {
                    assert!(start.elapsed() < TIMEOUT, "the replica never synced");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Arc::new(n)
            }
        };
        let start = Instant::now();
        let snap = Snapshot::read(&*nb).await.unwrap();
        nb.transact(&txn(cluster_ops(&snap))).await.unwrap();
        let topology = start.elapsed();
        for i in 1..=nodes {
            let node = scenario::node(i);
            let snap = Snapshot::read_with_mgmt(&*nb, std::slice::from_ref(&node))
                .await
                .unwrap();
            let ops = node_ops(&snap, &node, scenario::subnet(i), Some(&scenario::mac(i)));
            nb.transact(&txn(ops)).await.unwrap();
        }
        let total = start.elapsed();
        let switches = c
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap()
            .split_whitespace()
            .count();
        assert_eq!(
            switches,
            nodes + 1,
            "{backend}: node switches and the join switch"
        );
        println!(
            "BENCH topology backend={backend} cluster={:.1}ms cluster+{nodes}nodes={:.1}ms per-node={:.2}ms",
            topology.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            (total - topology).as_secs_f64() * 1e3 / nodes as f64
        );
    }
}

/// Without `-nb-address` the master uses the database `ovn-nbctl` would use by default (the
/// local socket under `$OVN_RUNDIR`), and still over the native connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nb_address_the_local_socket_is_used_natively() {
    let env = common::Env::start("nbnative-local").await;
    let args: Vec<String> = env
        .master_args("10.7.0.0/16")
        .into_iter()
        .filter(|a| !a.starts_with("-nb-address=") && !a.starts_with("-sb-address="))
        .collect();
    let mut master = env.spawn("master", &args);
    master.wait_log("cluster topology ready", Duration::from_secs(60));
    let log = master.log_text();
    let socket = env.central.ovn_rundir().join("ovnnb_db.sock");
    let backend = log
        .lines()
        .find(|l| l.contains("NB backend:"))
        .unwrap_or_default();
    assert!(
        backend.contains("native OVSDB connection")
            && backend.contains(&format!("unix:{}", socket.display())),
        "{backend}"
    );
    assert!(!log.contains("through ovn-nbctl"), "{log}");
    assert!(
        env.nb_rows("Logical_Router")
            .contains_key("ovn_cluster_router")
    );
    assert_eq!(master.terminate().code(), Some(0));
}
