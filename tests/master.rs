//! `-init-master` end to end: the real binary, a real NB/SB/northd, the Kubernetes API
//! stand-in. Checks what an operator would look at: `ovn-nbctl` state and node annotations.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Env, eventually};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

const WAIT: Duration = Duration::from_secs(30);

fn node(name: &str, subnet: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: subnet.map(|s| [("ovn_host_subnet".to_string(), s.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn subnets(env: &Env) -> BTreeMap<String, String> {
    let api: Api<Node> = Api::all(env.client.clone());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| {
            Some((
                n.name_any(),
                n.annotations().get("ovn_host_subnet")?.clone(),
            ))
        })
        .collect()
}

/// Wait until every listed node has an annotation and an NB switch matching it.
async fn wait_nodes_ready(env: &Env, names: &[&str]) -> BTreeMap<String, String> {
    eventually("node switches", WAIT, || async {
        let subs = subnets(env).await;
        let switches = env.nb_rows("Logical_Switch");
        let ok = names.iter().all(|n| {
            subs.get(*n).is_some_and(|s| {
                switches
                    .get(*n)
                    .and_then(|sw| sw.map_get("other_config", "subnet"))
                    .as_ref()
                    == Some(s)
            })
        });
        ok.then_some(subs)
    })
    .await
}

fn assert_node_topology(env: &Env, node: &str, subnet: &str) {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let gw = std::net::Ipv4Addr::from(base + 1);
    let mgmt = std::net::Ipv4Addr::from(base + 2);
    let len = net.prefix_len();
    let sw = &env.nb_rows("Logical_Switch")[node];
    assert_eq!(
        sw.map_get("other_config", "exclude_ips"),
        Some(mgmt.to_string())
    );
    assert_eq!(
        sw.map_get("external_ids", "gateway_ip"),
        Some(format!("{gw}/{len}"))
    );
    let lbs = env.nb_rows("Load_Balancer");
    let cluster_lbs: BTreeSet<String> = lbs
        .values()
        .filter(|lb| {
            lb.map("external_ids")
                .keys()
                .any(|k| k.starts_with("k8s-cluster-lb-"))
        })
        .map(|lb| lb.uuid.clone())
        .collect();
    assert_eq!(cluster_lbs.len(), 3);
    assert_eq!(
        sw.set("load_balancer").into_iter().collect::<BTreeSet<_>>(),
        cluster_lbs
    );
    let lrp = &env.nb_rows("Logical_Router_Port")[&format!("rtos-{node}")];
    assert_eq!(lrp.set("networks"), [format!("{gw}/{len}")]);
    let routers = env.nb_rows("Logical_Router");
    assert!(
        routers["ovn_cluster_router"]
            .set("ports")
            .contains(&lrp.uuid)
    );
    let lsp = &env.nb_rows("Logical_Switch_Port")[&format!("stor-{node}")];
    assert_eq!(lsp.str("type"), "router");
    assert_eq!(
        lsp.map_get("options", "router-port"),
        Some(format!("rtos-{node}"))
    );
    assert!(sw.set("ports").contains(&lsp.uuid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_topology_delete_and_restarts() {
    let env = Env::start("three").await;
    let mut master = env.spawn("master", &env.master_args("10.1.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);

    // Cluster-wide objects.
    let routers = env.nb_rows("Logical_Router");
    let cr = &routers["ovn_cluster_router"];
    assert_eq!(
        cr.map_get("external_ids", "k8s-cluster-router").as_deref(),
        Some("yes")
    );
    let switches = env.nb_rows("Logical_Switch");
    assert!(switches.contains_key("join"));
    let rtoj = &env.nb_rows("Logical_Router_Port")["rtoj-ovn_cluster_router"];
    assert_eq!(rtoj.set("networks"), ["100.64.0.1/16"]);
    assert_eq!(
        rtoj.map_get("external_ids", "connect_to_join").as_deref(),
        Some("yes")
    );
    // The master opened the DB servers' listeners itself (the stock central has none), on
    // the addresses it was given.
    let listen = |a: std::net::SocketAddr| vec![format!("ptcp:{}:{}", a.port(), a.ip())];
    assert_eq!(env.central.nb_connections().unwrap(), listen(env.nb_addr));
    assert_eq!(env.central.sb_connections().unwrap(), listen(env.sb_addr));

    env.create_nodes(["n1", "n2", "n3"].map(String::from)).await;
    let subs = wait_nodes_ready(&env, &["n1", "n2", "n3"]).await;
    let distinct: BTreeSet<_> = subs.values().collect();
    assert_eq!(distinct.len(), 3, "{subs:?}");
    for (n, s) in &subs {
        let net: ipnet::Ipv4Net = s.parse().unwrap();
        assert_eq!(net.prefix_len(), 24);
        assert!(
            "10.1.0.0/16"
                .parse::<ipnet::Ipv4Net>()
                .unwrap()
                .contains(&net)
        );
        assert_node_topology(&env, n, s);
    }
    // `ovn-nbctl show`, read semantically: the router has 4 ports (join + 3 nodes).
    let show = env.central.nbctl(&["show", "ovn_cluster_router"]).unwrap();
    assert_eq!(show.matches("port rtos-").count(), 3, "{show}");
    assert_eq!(show.matches("port rtoj-").count(), 1, "{show}");

    // A gateway made by a node (issue 8) for n3, so deletion has something to remove there too.
    env.central
        .nbctl(&[
            "--",
            "lr-add",
            "GR_n3",
            "--",
            "ls-add",
            "ext_n3",
            "--",
            "set",
            "Logical_Router",
            "GR_n3",
            "external_ids:k8s-node=n3",
            "--",
            "lsp-add",
            "join",
            "jtor-GR_n3",
            "--",
            "lsp-set-type",
            "jtor-GR_n3",
            "router",
            "--",
            "create",
            "Load_Balancer",
            "external_ids:TCP_lb_gateway_router=GR_n3",
            "protocol=tcp",
        ])
        .unwrap();

    // Delete a node: its objects go, the others stay.
    let api: Api<Node> = Api::all(env.client.clone());
    api.delete("n3", &DeleteParams::default()).await.unwrap();
    eventually("n3 objects removed", WAIT, || async {
        let sw = env.nb_rows("Logical_Switch");
        let lr = env.nb_rows("Logical_Router");
        let lrp = env.nb_rows("Logical_Router_Port");
        let lsp = env.nb_rows("Logical_Switch_Port");
        let lbs = env
            .central
            .nbctl(&["--format=json", "list", "Load_Balancer"])
            .unwrap();
        (!sw.contains_key("n3")
            && !sw.contains_key("ext_n3")
            && !lr.contains_key("GR_n3")
            && !lrp.contains_key("rtos-n3")
            && !lsp.contains_key("jtor-GR_n3")
            && !lbs.contains("GR_n3"))
        .then_some(())
    })
    .await;
    assert_node_topology(&env, "n1", &subs["n1"]);
    assert_node_topology(&env, "n2", &subs["n2"]);

    // Restart with nothing changed: no NB change at all.
    master.terminate();
    let before = env.nb_dump();
    let mut master = env.spawn("master2", &env.master_args("10.1.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    assert_eq!(
        before,
        env.nb_dump(),
        "a restart with unchanged nodes must not touch NB"
    );
    assert_eq!(
        subnets(&env).await,
        subs.iter()
            .filter(|(n, _)| *n != "n3")
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect()
    );

    // A node deleted while the master is down is cleaned at start.
    master.terminate();
    api.delete("n2", &DeleteParams::default()).await.unwrap();
    let mut master = env.spawn("master3", &env.master_args("10.1.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    let sw = env.nb_rows("Logical_Switch");
    assert!(!sw.contains_key("n2"));
    assert!(!env.nb_rows("Logical_Router_Port").contains_key("rtos-n2"));
    assert_node_topology(&env, "n1", &subs["n1"]);
    // A new node never gets a subnet another node holds.
    env.create_nodes(["n4".to_string()]).await;
    let subs2 = wait_nodes_ready(&env, &["n1", "n4"]).await;
    assert_ne!(subs2["n4"], subs2["n1"]);
    assert_eq!(master.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_length_form_gives_23s() {
    let env = Env::start("slash23").await;
    let mut master = env.spawn("master", &env.master_args("10.128.0.0/14/23"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(["a", "b"].map(String::from)).await;
    let subs = wait_nodes_ready(&env, &["a", "b"]).await;
    for (n, s) in &subs {
        let net: ipnet::Ipv4Net = s.parse().unwrap();
        assert_eq!(net.prefix_len(), 23, "{n}: {s}");
        assert!(
            "10.128.0.0/14"
                .parse::<ipnet::Ipv4Net>()
                .unwrap()
                .contains(&net)
        );
        assert_node_topology(&env, n, s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_annotations_are_reallocated_without_touching_others() {
    let env = Env::start("bad").await;
    let api: Api<Node> = Api::all(env.client.clone());
    // Annotated before the master starts: one valid, then one overlapping it (younger), one
    // outside the cluster subnet, one not a CIDR.
    api.create(&PostParams::default(), &node("good", Some("10.2.7.0/24")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (n, s) in [
        ("dup", "10.2.7.0/24"),
        ("outside", "10.99.0.0/24"),
        ("junk", "not-a-cidr"),
    ] {
        api.create(&PostParams::default(), &node(n, Some(s)))
            .await
            .unwrap();
    }
    let master = env.spawn("master", &env.master_args("10.2.0.0/16"));
    let subs = wait_nodes_ready(&env, &["good", "dup", "outside", "junk"]).await;
    assert_eq!(
        subs["good"], "10.2.7.0/24",
        "the valid, older claim is kept"
    );
    let distinct: BTreeSet<_> = subs.values().collect();
    assert_eq!(distinct.len(), 4, "{subs:?}");
    for n in ["dup", "outside", "junk"] {
        assert_ne!(subs[n], "10.2.7.0/24");
        assert_node_topology(&env, n, &subs[n]);
    }
    let log = master.log_text();
    assert!(
        log.contains("unusable ovn_host_subnet annotation \"not-a-cidr\""),
        "{log}"
    );
    assert!(log.contains("outside the cluster subnet"), "{log}");
    assert!(log.contains("already allocated to another node"), "{log}");
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let evs = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        evs.iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidHostSubnet"))
            .count()
            >= 3
    );

    // A malformed annotation written later is corrected back to what the node holds.
    let held = subs["junk"].clone();
    api.patch(
        "junk",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {"ovn_host_subnet": "garbage"}}}),
        ),
    )
    .await
    .unwrap();
    eventually("annotation restored", WAIT, || async {
        (subnets(&env).await.get("junk") == Some(&held)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_with_300_nodes_and_room_after_a_delete() {
    let env = Env::start("exhaust").await;
    let mut master = env.spawn("master", &env.master_args("10.3.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    let names: Vec<String> = (0..300).map(|i| format!("node{i:03}")).collect();
    env.create_nodes(names.clone()).await;
    let long = Duration::from_secs(180);
    let subs = eventually("256 nodes allocated", long, || async {
        let s = subnets(&env).await;
        (s.len() == 256).then_some(s)
    })
    .await;
    let distinct: BTreeSet<_> = subs.values().collect();
    assert_eq!(distinct.len(), 256);
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let exhausted: BTreeSet<String> = eventually("44 exhaustion events", long, || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let s: BTreeSet<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SubnetExhausted"))
            .filter_map(|e| e.regarding.as_ref().and_then(|r| r.name.clone()))
            .collect();
        (s.len() == 44).then_some(s)
    })
    .await;
    assert!(exhausted.iter().all(|n| !subs.contains_key(n)));
    // Logged once per node, not on every retry.
    let log = master.log_text();
    assert_eq!(log.matches("no free subnet for node").count(), 44);
    // Switches exist for exactly the allocated nodes.
    eventually("256 node switches", long, || async {
        let n = env
            .nb_rows("Logical_Switch")
            .values()
            .filter(|s| s.map_get("external_ids", "k8s-node").is_some())
            .count();
        (n == 256).then_some(())
    })
    .await;

    // Freeing one node makes room for one waiting node.
    let victim = subs.keys().next().unwrap().clone();
    let api: Api<Node> = Api::all(env.client.clone());
    api.delete(&victim, &DeleteParams::default()).await.unwrap();
    let after = eventually("one waiting node allocated", WAIT, || async {
        let s = subnets(&env).await;
        (s.len() == 256 && !s.contains_key(&victim)).then_some(s)
    })
    .await;
    let newcomer: Vec<_> = after.keys().filter(|n| exhausted.contains(*n)).collect();
    assert_eq!(newcomer.len(), 1, "{newcomer:?}");
    assert_eq!(
        after[newcomer[0]], subs[&victim],
        "the freed subnet is the only free one"
    );
}
