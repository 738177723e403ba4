//! Root-free tests of the controllers' state machines (pods, services, policy): the API
//! stand-in runs in-process (`kube-sandbox`) and the NB database is the in-memory [`MemNb`].
//! Events go in as API objects; what comes out is the NB state, the recorded transactions and
//! the annotations.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::pods::PodController;
use crate::kube::Informers;
use crate::kube::annotations::{HOST_SUBNET, POD_NETWORK, PodNetwork};
use crate::ovn::addrs::NodeAddrs;
use crate::ovn::mem::MemNb;
use crate::ovn::names::pod_port;
use crate::ovn::schema::{col, nb};
use crate::ovn::{Nb, NbOp};
use tokio_util::sync::CancellationToken;

pub(crate) const WAIT: Duration = Duration::from_secs(10);
const SUBNET: &str = "10.1.0.0/24";

struct World {
    _sandbox: kube_sandbox::Sandbox,
    client: Client,
    nb: Arc<MemNb>,
}

impl World {
    async fn new() -> World {
        let (sandbox, client) = crate::kube::test_sandbox().await;
        let nb = Arc::new(MemNb::new());
        nb.seed([NbOp::LsAdd { name: "n1".into() }]).unwrap();
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        node.metadata.annotations = Some([(HOST_SUBNET.to_string(), SUBNET.to_string())].into());
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        World {
            _sandbox: sandbox,
            client,
            nb,
        }
    }

    /// A pod controller over this world's API and NB.
    fn start(&self) -> Running {
        let ctl = PodController::new(self.nb.clone(), self.client.clone());
        let informers = Informers::new(self.client.clone());
        spawn(|token| ctl.run(informers, token))
    }

    async fn add_pod(&self, name: &str, annotation: Option<&str>) {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        if let Some(a) = annotation {
            pod.metadata.annotations = Some([(POD_NETWORK.to_string(), a.to_string())].into());
        }
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    /// The pod's `ovn` annotation once the controller wrote it and its port carries it.
    async fn served(&self, name: &str) -> PodNetwork {
        let api = Api::<Pod>::namespaced(self.client.clone(), "default");
        let port = pod_port("default", name);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ann = api
                .get(name)
                .await
                .ok()
                .and_then(|p| p.annotations().get(POD_NETWORK).cloned());
            let row = self.nb.row(nb::LOGICAL_SWITCH_PORT, &port);
            // The CNI plugin's reading: what the controller writes, the plugin must accept.
            if let (Some(Ok(net)), Some(r)) = (ann.as_deref().map(PodNetwork::parse), row)
                && r.set(col::ADDRESSES) == [net.lsp_address()]
            {
                return net;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} was not served in {WAIT:?}; NB log: {:#?}",
                self.nb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Transactions (applied or not) that touched the port of pod `name`.
    fn txns_for(&self, name: &str) -> Vec<(bool, usize)> {
        let port = pod_port("default", name);
        self.nb
            .log()
            .iter()
            .filter(|r| format!("{:?}", r.ops).contains(&format!("{port:?}")))
            .map(|r| (r.applied, r.ops.len()))
            .collect()
    }
}

/// A running controller: its token (cancel to stop it) and its task.
pub(crate) type Running = (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Spawn a controller's `run` with a fresh cancellation token (or stopped with the test's
/// runtime).
pub(crate) fn spawn<F>(run: impl FnOnce(CancellationToken) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let token = CancellationToken::new();
    (token.clone(), tokio::spawn(run(token)))
}

/// Cancel a running controller and wait for it to end cleanly.
pub(crate) async fn stop((token, task): Running) {
    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn want(ip: &str) -> PodNetwork {
    PodNetwork::new(
        ip.parse().unwrap(),
        &NodeAddrs::new(SUBNET.parse().unwrap()),
    )
}

#[tokio::test]
async fn pods_get_addresses_ports_and_annotations_in_order() {
    let w = World::new().await;
    let (_stop, _task) = w.start();
    for (pod, annotation, ip) in [
        ("a", None, "10.1.0.3"),
        ("b", None, "10.1.0.4"),
        // A user's annotation is kept and its address skipped by allocation.
        (
            "c",
            Some(
                r#"{"ip_address":"10.1.0.5/24","mac_address":"0a:58:0a:01:00:05","gateway_ip":"10.1.0.1"}"#,
            ),
            "10.1.0.5",
        ),
        ("d", None, "10.1.0.6"),
    ] {
        w.add_pod(pod, annotation).await;
        assert_eq!(w.served(pod).await, want(ip), "{pod}");
    }
    let port =
        w.nb.row(nb::LOGICAL_SWITCH_PORT, &pod_port("default", "a"))
            .unwrap();
    assert_eq!(
        port.set(col::PORT_SECURITY),
        [want("10.1.0.3").lsp_address()]
    );
    let ids = port.map(col::EXTERNAL_IDS);
    assert_eq!(ids.get("pod").map(String::as_str), Some("true"));
    assert_eq!(ids.get("logical_switch").map(String::as_str), Some("n1"));
}

#[tokio::test]
async fn a_failed_transaction_is_retried() {
    let w = World::new().await;
    let (_stop, _task) = w.start();
    // Let the controller finish its initial sync before the failure is armed.
    w.add_pod("first", None).await;
    w.served("first").await;
    w.nb.fail_next(2);
    w.add_pod("web", None).await;
    assert_eq!(w.served("web").await, want("10.1.0.4"));
    let attempts = w.txns_for("web");
    assert_eq!(
        attempts
            .iter()
            .map(|(applied, _)| *applied)
            .collect::<Vec<_>>(),
        [false, false, true],
        "{attempts:?}"
    );
}

#[tokio::test]
async fn a_restarted_controller_rebuilds_its_state_from_annotations_and_ports() {
    let w = World::new().await;
    let (stop, task) = w.start();
    w.add_pod("web", None).await;
    assert_eq!(w.served("web").await, want("10.1.0.3"));
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let before = w.txns_for("web").len();

    let (_stop, _task) = w.start();
    w.add_pod("db", None).await;
    // The served pod's address is known again, so the new pod gets the next one, and the
    // served pod's port (already right) is not written again.
    assert_eq!(w.served("db").await, want("10.1.0.4"));
    assert_eq!(w.served("web").await, want("10.1.0.3"));
    assert_eq!(w.txns_for("web").len(), before);
}

mod services {
    use k8s_openapi::api::core::v1::{Endpoints, Service};

    use super::*;
    use crate::controller::services::ServiceController;
    use crate::ovn::{ColVal, DbOp, Proto, names};

    const VIP: &str = "10.96.0.10:80";

    async fn world() -> World {
        let w = World::new().await;
        let lb = NbOp::Db(DbOp::Create {
            table: nb::LOAD_BALANCER.into(),
            id: None,
            columns: vec![
                ColVal::set(col::NAME, "cluster-lb-tcp"),
                ColVal::key(col::EXTERNAL_IDS, &names::ext_cluster_lb(Proto::Tcp), "yes"),
                ColVal::set(col::PROTOCOL, "tcp"),
            ],
        });
        w.nb.seed([lb]).unwrap();
        w
    }

    fn start(w: &World) -> Running {
        let ctl = ServiceController::new(w.nb.clone(), false);
        let informers = Informers::new(w.client.clone());
        spawn(|token| ctl.run(w.client.clone(), informers, token))
    }

    async fn add_service(w: &World, backends: &[&str]) {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }))
        .unwrap();
        Api::<Service>::namespaced(w.client.clone(), "default")
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
        let addrs: Vec<serde_json::Value> = backends
            .iter()
            .map(|ip| serde_json::json!({"ip": ip}))
            .collect();
        let eps: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": addrs,
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}],
        }))
        .unwrap();
        Api::<Endpoints>::namespaced(w.client.clone(), "default")
            .create(&PostParams::default(), &eps)
            .await
            .unwrap();
    }

    /// The cluster TCP load balancer's VIPs once they equal `want`.
    async fn vips(w: &World, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let have =
                w.nb.row(nb::LOAD_BALANCER, "cluster-lb-tcp")
                    .map(|r| r.map(col::VIPS))
                    .unwrap_or_default();
            if have.get(VIP).map(String::as_str) == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "VIP {VIP} is {have:?}, not {want:?}; NB log: {:#?}",
                w.nb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn endpoints_become_vips_after_a_failed_transaction_and_survive_a_restart() {
        let w = world().await;
        w.nb.fail_next(1);
        let (stop, task) = start(&w);
        add_service(&w, &["10.1.0.3", "10.1.0.4"]).await;
        vips(&w, "10.1.0.3:8080,10.1.0.4:8080").await;
        let log = w.nb.log();
        assert!(
            !log[0].applied,
            "the first transaction was failed on purpose"
        );
        assert!(log.iter().any(|r| r.applied), "{log:#?}");
        stop.cancel();
        tokio::time::timeout(WAIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        // A restart over a database that is already right rewrites nothing: the only
        // transaction after it is the one for the endpoint added afterwards.
        let before = w.nb.log().len();
        let (_stop, _task) = start(&w);
        let api = Api::<Endpoints>::namespaced(w.client.clone(), "default");
        let mut eps = api.get("web").await.unwrap();
        if let Some(subsets) = eps.subsets.as_mut() {
            subsets[0]
                .addresses
                .get_or_insert_default()
                .push(serde_json::from_value(serde_json::json!({"ip": "10.1.0.5"})).unwrap());
        }
        api.replace("web", &PostParams::default(), &eps)
            .await
            .unwrap();
        vips(&w, "10.1.0.3:8080,10.1.0.4:8080,10.1.0.5:8080").await;
        let after: Vec<Vec<NbOp>> = w.nb.log().into_iter().skip(before).map(|r| r.ops).collect();
        let want = NbOp::Db(DbOp::Set {
            table: nb::LOAD_BALANCER.into(),
            record: w.nb.row(nb::LOAD_BALANCER, "cluster-lb-tcp").unwrap().uuid,
            columns: vec![ColVal::key(
                col::VIPS,
                VIP,
                "10.1.0.3:8080,10.1.0.4:8080,10.1.0.5:8080",
            )],
            if_exists: false,
        });
        assert_eq!(after, [vec![want]]);
    }
}

mod policy {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::DeleteParams;
    use tokio::sync::mpsc;

    use super::*;
    use crate::controller::policy::PolicyController;
    use crate::ovn::Row;

    /// Wait until `ok` holds for the NB, failing with the NB log after [`WAIT`].
    async fn until(w: &World, what: &str, ok: impl Fn(&MemNb) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ok(&w.nb) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} did not happen in {WAIT:?}; NB log: {:#?}",
                w.nb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a port group holds `port` and has a drop ACL: the port is isolated.
    fn isolated(nb: &MemNb, port: &str) -> bool {
        let Some(lsp) = nb.row(nb::LOGICAL_SWITCH_PORT, port) else {
            return false;
        };
        let acls: Vec<Row> = nb.rows(nb::ACL);
        nb.rows(nb::PORT_GROUP).iter().any(|pg| {
            pg.set(col::PORTS).contains(&lsp.uuid)
                && pg.set(col::ACLS).iter().any(|a| {
                    acls.iter()
                        .any(|r| r.uuid == *a && r.str(col::ACTION) == "drop")
                })
        })
    }

    /// The port groups of network policy `name` (namespace `default`).
    fn groups_of(nb: &MemNb, name: &str) -> usize {
        use crate::controller::policy_plan::EXT_POLICY;
        nb.rows(nb::PORT_GROUP)
            .iter()
            .filter(|pg| pg.map_get(col::EXTERNAL_IDS, EXT_POLICY).as_deref() == Some(name))
            .count()
    }

    fn deny(name: &str) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_restarted_policy_controller_keeps_what_is_right_and_removes_what_went_stale() {
        let w = World::new().await;
        let nb: Arc<dyn Nb> = w.nb.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let pods = PodController::new(nb.clone(), w.client.clone()).with_port_events(tx);
        let _pods = spawn(|token| pods.run(Informers::new(w.client.clone()), token));
        let policy = PolicyController::new(nb.clone(), w.client.clone(), rx);
        let first = spawn(|token| policy.run(Informers::new(w.client.clone()), token));
        w.add_pod("web", None).await;
        w.served("web").await;
        let port = pod_port("default", "web");
        let api = Api::<NetworkPolicy>::namespaced(w.client.clone(), "default");
        api.create(&PostParams::default(), &deny("old"))
            .await
            .unwrap();
        api.create(&PostParams::default(), &deny("kept"))
            .await
            .unwrap();
        until(&w, "both policies programmed", |nb| {
            isolated(nb, &port) && groups_of(nb, "old") == 1 && groups_of(nb, "kept") == 1
        })
        .await;
        stop(first).await;

        // While it is down, one policy goes. The restarted controller learns the pod's port
        // from the NB (no port event: the pod controller reported it to the first one).
        api.delete("old", &DeleteParams::default()).await.unwrap();
        let before = w.nb.log().len();
        let (_tx, rx) = mpsc::unbounded_channel();
        let policy = PolicyController::new(nb, w.client.clone(), rx);
        let _second = spawn(|token| policy.run(Informers::new(w.client.clone()), token));
        until(&w, "the stale policy's removal", |nb| {
            groups_of(nb, "old") == 0
        })
        .await;
        assert_eq!(groups_of(&w.nb, "kept"), 1);
        assert!(
            isolated(&w.nb, &port),
            "web stays isolated by the kept policy"
        );
        // One transaction removed the stale objects; nothing else was rewritten.
        let after = w.nb.log().split_off(before);
        assert_eq!(after.len(), 1, "{after:#?}");
        let ops = format!("{:?}", after[0].ops);
        assert!(!ops.contains("PgAdd") && !ops.contains("Create"), "{ops}");
    }

    #[tokio::test]
    async fn a_deny_policy_isolates_its_pods_and_its_removal_is_retried() {
        let w = World::new().await;
        let (tx, rx) = mpsc::unbounded_channel();
        let nb: Arc<dyn Nb> = w.nb.clone();
        let pods_token = CancellationToken::new();
        let pods = PodController::new(nb.clone(), w.client.clone()).with_port_events(tx);
        tokio::spawn(pods.run(Informers::new(w.client.clone()), pods_token));
        let policy_token = CancellationToken::new();
        let policy = PolicyController::new(nb, w.client.clone(), rx);
        tokio::spawn(policy.run(Informers::new(w.client.clone()), policy_token));

        w.add_pod("web", None).await;
        w.served("web").await;
        let port = pod_port("default", "web");
        assert!(!isolated(&w.nb, &port), "no policy yet");

        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "deny", "namespace": "default"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }))
        .unwrap();
        let api = Api::<NetworkPolicy>::namespaced(w.client.clone(), "default");
        api.create(&PostParams::default(), &np).await.unwrap();
        until(&w, "isolation of web", |nb| isolated(nb, &port)).await;

        let before = w.nb.log().len();
        w.nb.fail_next(1);
        api.delete("deny", &DeleteParams::default()).await.unwrap();
        until(&w, "the end of web's isolation", |nb| !isolated(nb, &port)).await;
        let after: Vec<bool> = w.nb.log()[before..].iter().map(|r| r.applied).collect();
        assert_eq!(after.first(), Some(&false), "{after:?}");
        assert!(after.contains(&true), "{after:?}");
    }
}
