//! Root-free tests of the master's node loop: the API stand-in runs in-process (`kube-sandbox`)
//! and the NB database is the in-memory [`MemNb`]. Nodes go in as API objects; what comes out
//! is the subnet annotation, the NB topology and the recorded transactions.

use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::Master;
use crate::config::ClusterSubnet;
use crate::controller::machine_tests::{Running, WAIT, spawn, stop};
use crate::kube::Informers;
use crate::kube::annotations::HOST_SUBNET;
use crate::ovn::addrs::NodeAddrs;
use crate::ovn::mem::MemNb;
use crate::ovn::names::{self, CLUSTER_ROUTER, JOIN_SWITCH};
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, NbOp, Val};

struct Bed {
    _sandbox: kube_sandbox::Sandbox,
    client: Client,
    nb: Arc<MemNb>,
    /// `-cluster-subnet`, with /24 node subnets.
    cluster: Ipv4Net,
}

impl Bed {
    async fn new(cluster: &str) -> Bed {
        let (sandbox, client) = crate::kube::test_sandbox().await;
        Bed {
            _sandbox: sandbox,
            client,
            nb: Arc::new(MemNb::new()),
            cluster: cluster.parse().unwrap(),
        }
    }

    fn start(&self) -> Running {
        let subnets = [ClusterSubnet {
            cidr: self.cluster,
            host_prefix_len: 24,
        }];
        let master = Master::new(self.nb.clone(), self.client.clone(), &subnets);
        let informers = Informers::new(self.client.clone());
        spawn(|token| master.run(informers, token))
    }

    fn api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn add_node(&self, name: &str, subnet: Option<&str>) {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        if let Some(s) = subnet {
            node.metadata.annotations = Some([(HOST_SUBNET.to_string(), s.to_string())].into());
        }
        self.api()
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }

    async fn annotation(&self, name: &str) -> Option<String> {
        let node = self.api().get(name).await.ok()?;
        node.annotations().get(HOST_SUBNET).cloned()
    }

    /// The subnet of `node` once its annotation names it and the NB holds the node's whole
    /// topology for it: the switch, `rtos-`/`stor-` joined to the cluster router, the cluster
    /// load balancers on the switch.
    async fn served(&self, node: &str) -> Ipv4Net {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.annotation(node).await
                && let Ok(net) = s.parse::<Ipv4Net>()
                && self.topology_of(node) == Some(net)
            {
                return net;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} was not served in {WAIT:?}; NB log: {:#?}",
                self.nb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The subnet the NB topology of `node` is built for, when all of it is there.
    fn topology_of(&self, node: &str) -> Option<Ipv4Net> {
        let sw = self.nb.row(nb::LOGICAL_SWITCH, &names::node_switch(node))?;
        let net: Ipv4Net = sw.map_get(col::OTHER_CONFIG, "subnet")?.parse().ok()?;
        let a = NodeAddrs::new(net);
        let rtos = self.nb.row(nb::LOGICAL_ROUTER_PORT, &names::rtos(node))?;
        let stor = self.nb.row(nb::LOGICAL_SWITCH_PORT, &names::stor(node))?;
        let router = self.nb.row(nb::LOGICAL_ROUTER, CLUSTER_ROUTER)?;
        let lbs = self.nb.rows(nb::LOAD_BALANCER).len();
        let whole = sw.map_get(col::EXTERNAL_IDS, names::EXT_NODE).as_deref() == Some(node)
            && rtos.set(col::NETWORKS) == [a.gateway.to_string()]
            && router.set(col::PORTS).contains(&rtos.uuid)
            && sw.set(col::PORTS).contains(&stor.uuid)
            && stor.map_get(col::OPTIONS, "router-port") == Some(names::rtos(node))
            && sw.set(col::LOAD_BALANCER).len() == lbs;
        whole.then_some(net)
    }

    /// Wait until `ok` holds for the NB.
    async fn until(&self, what: &str, ok: impl Fn(&MemNb) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ok(&self.nb) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} did not happen in {WAIT:?}; NB log: {:#?}",
                self.nb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether each transaction from the `from`-th on mentions `node` (applied or not).
    fn txns_since(&self, from: usize) -> Vec<(bool, String)> {
        self.nb
            .log()
            .into_iter()
            .skip(from)
            .map(|r| (r.applied, format!("{:?}", r.ops)))
            .collect()
    }
}

fn mentions(ops: &str, node: &str) -> bool {
    ops.contains(&format!("{node:?}"))
}

#[tokio::test]
async fn nodes_get_subnets_and_topology_and_a_restart_rewrites_nothing() {
    let b = Bed::new("10.128.0.0/22").await;
    // A node annotated by an earlier master keeps its subnet, even over an empty NB.
    b.add_node("n1", Some("10.128.2.0/24")).await;
    let master = b.start();
    b.add_node("n2", None).await;
    let n1 = b.served("n1").await;
    let n2 = b.served("n2").await;
    assert_eq!(n1.to_string(), "10.128.2.0/24");
    assert!(n2 != n1 && b.cluster.contains(&n2), "{n2}");
    // The cluster objects the nodes hang on.
    let router = b.nb.row(nb::LOGICAL_ROUTER, CLUSTER_ROUTER).unwrap();
    assert_eq!(
        router.map_get(col::EXTERNAL_IDS, names::EXT_CLUSTER_ROUTER),
        Some("yes".into())
    );
    let join = b.nb.row(nb::LOGICAL_SWITCH, JOIN_SWITCH).unwrap();
    assert_eq!(
        join.map_get(col::OTHER_CONFIG, "subnet"),
        Some("100.64.0.0/16".into())
    );
    assert_eq!(b.nb.rows(nb::LOAD_BALANCER).len(), 3);

    // A change that is not the master's business (a label) writes nothing: the only
    // transactions after it are the next node's.
    let from = b.nb.log().len();
    let patch = serde_json::json!({"metadata": {"labels": {"zone": "a"}}});
    b.api()
        .patch("n2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    b.add_node("n3", None).await;
    b.served("n3").await;
    let after = b.txns_since(from);
    assert!(
        !after.is_empty() && after.iter().all(|(_, ops)| mentions(ops, "n3")),
        "{after:#?}"
    );

    // A restarted master over a database that is right rebuilds its allocator from the
    // annotations and writes nothing for the nodes it finds.
    stop(master).await;
    let from = b.nb.log().len();
    let _master = b.start();
    b.add_node("n4", None).await;
    let n4 = b.served("n4").await;
    assert!(![n1, n2].contains(&n4), "{n4} is taken");
    let after = b.txns_since(from);
    assert!(
        after.iter().all(|(_, ops)| mentions(ops, "n4")),
        "{after:#?}"
    );
    assert_eq!(b.annotation("n1").await.as_deref(), Some("10.128.2.0/24"));
}

#[tokio::test]
async fn a_deleted_node_loses_its_objects_and_frees_its_subnet() {
    // Room for two nodes.
    let b = Bed::new("10.128.0.0/23").await;
    let _master = b.start();
    b.add_node("n1", None).await;
    b.add_node("n2", None).await;
    b.served("n1").await;
    let n2 = b.served("n2").await;
    // What n2's node agent made: its gateway router, and a route on the cluster router; n1
    // has a route too.
    let route = |id: &str, node: &str, prefix: &str| {
        [
            NbOp::Db(DbOp::Create {
                table: nb::LOGICAL_ROUTER_STATIC_ROUTE.into(),
                id: Some(id.into()),
                columns: vec![
                    ColVal::set(col::IP_PREFIX, prefix),
                    ColVal::set(col::NEXTHOP, "100.64.0.3"),
                    ColVal::key(col::EXTERNAL_IDS, names::EXT_NODE, node),
                ],
            }),
            NbOp::Db(DbOp::Add {
                table: nb::LOGICAL_ROUTER.into(),
                record: CLUSTER_ROUTER.into(),
                column: col::STATIC_ROUTES.into(),
                values: vec![Val::Ref(id.into())],
            }),
        ]
    };
    let gr = names::gateway_router("n2");
    let mut seed = vec![
        NbOp::LrAdd { name: gr.clone() },
        NbOp::Db(DbOp::Set {
            table: nb::LOGICAL_ROUTER.into(),
            record: gr.clone(),
            columns: vec![ColVal::key(col::EXTERNAL_IDS, names::EXT_NODE, "n2")],
            if_exists: false,
        }),
    ];
    seed.extend(route("r1", "n1", "10.128.0.0/24"));
    seed.extend(route("r2", "n2", "10.128.1.0/24"));
    b.nb.seed(seed).unwrap();

    // The pool is full: a third node waits, without an annotation.
    b.add_node("n3", None).await;
    b.api()
        .delete("n2", &DeleteParams::default())
        .await
        .unwrap();
    // The freed subnet goes to the waiting node.
    assert_eq!(b.served("n3").await, n2);
    b.until("n2's objects removed", |nb| {
        nb.row(nb::LOGICAL_SWITCH, "n2").is_none()
            && nb
                .row(nb::LOGICAL_ROUTER_PORT, &names::rtos("n2"))
                .is_none()
            && nb.row(nb::LOGICAL_ROUTER, &gr).is_none()
    })
    .await;
    // Only n2's route left the cluster router (and with it the database).
    let routes: Vec<String> =
        b.nb.rows(nb::LOGICAL_ROUTER_STATIC_ROUTE)
            .iter()
            .map(|r| r.str(col::IP_PREFIX))
            .collect();
    assert_eq!(routes, ["10.128.0.0/24"]);
    assert!(b.topology_of("n1").is_some());
}

#[tokio::test]
async fn failed_transactions_are_retried_and_unusable_annotations_replaced() {
    let b = Bed::new("10.128.0.0/22").await;
    // The cluster topology's first transaction fails: the master waits for the NB.
    b.nb.fail_next(1);
    // One claim outside -cluster-subnet, one that is no subnet at all.
    b.add_node("foreign", Some("192.168.7.0/24")).await;
    b.add_node("garbled", Some("not a subnet")).await;
    let _master = b.start();
    let foreign = b.served("foreign").await;
    let garbled = b.served("garbled").await;
    assert!(b.cluster.contains(&foreign) && b.cluster.contains(&garbled));
    assert_ne!(foreign, garbled);
    let log = b.nb.log();
    assert!(!log[0].applied, "failed on purpose: {log:#?}");

    // A node whose sync fails twice is served by the retries.
    b.served("foreign").await;
    let from = b.nb.log().len();
    b.nb.fail_next(2);
    b.add_node("web", None).await;
    b.served("web").await;
    let attempts: Vec<bool> = b
        .txns_since(from)
        .into_iter()
        .filter(|(_, ops)| mentions(ops, "web"))
        .map(|(applied, _)| applied)
        .collect();
    assert_eq!(attempts, [false, false, true]);
}
