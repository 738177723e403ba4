//! "Correct after every restart": the northbound database is lost while the master is down
//! (a fresh, empty NB), and the restarted master rebuilds everything from the Kubernetes
//! objects alone — topology, pod ports with the same addresses, service VIPs, policy port
//! groups, address sets and ACLs.

mod common;
mod gwbed;
mod nodebed;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::fixture::{create_web, pod};
use common::{Env, eventually};
use gwbed::wipe_nb;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

const WAIT: Duration = Duration::from_secs(60);

/// What the NB holds, by name and content (UUIDs differ after a rebuild).
fn projection(env: &Env) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let lsps = env.nb_table("Logical_Switch_Port");
    let lsp_name: BTreeMap<String, String> = lsps
        .iter()
        .map(|r| (r.uuid.clone(), r.str("name")))
        .collect();
    let names = |uuids: Vec<String>| -> String {
        let mut v: Vec<String> = uuids
            .iter()
            .map(|u| lsp_name.get(u).cloned().unwrap_or_default())
            .collect();
        v.sort();
        v.join(",")
    };
    for r in env.nb_table("Logical_Switch") {
        p.insert(
            format!("ls {}", r.str("name")),
            format!(
                "{:?} ports={}",
                r.map("other_config"),
                names(r.set("ports"))
            ),
        );
    }
    for r in &lsps {
        let mut addrs = r.set("addresses");
        addrs.sort();
        p.insert(
            format!("lsp {}", r.str("name")),
            format!("type={} addresses={addrs:?}", r.str("type")),
        );
    }
    for r in env.nb_table("Logical_Router_Port") {
        p.insert(
            format!("lrp {}", r.str("name")),
            format!("{:?}", r.set("networks")),
        );
    }
    for r in env.nb_table("Logical_Router") {
        p.insert(format!("lr {}", r.str("name")), String::new());
    }
    for r in env.nb_table("Load_Balancer") {
        for (vip, backends) in r.map("vips") {
            p.insert(format!("vip {vip}"), backends);
        }
    }
    let acls: BTreeMap<String, String> = env
        .nb_table("ACL")
        .into_iter()
        .map(|r| {
            (
                r.uuid.clone(),
                format!(
                    "{} {} {} {}",
                    r.str("direction"),
                    r.get("priority")
                        .and_then(|d| d.as_int())
                        .unwrap_or_default(),
                    r.str("action"),
                    r.str("match")
                ),
            )
        })
        .collect();
    for r in env.nb_table("Port_Group") {
        let mut a: Vec<String> = r
            .set("acls")
            .iter()
            .map(|u| acls.get(u).cloned().unwrap_or_default())
            .collect();
        a.sort();
        p.insert(
            format!("pg {}", r.str("name")),
            format!("ports={} acls={a:?}", names(r.set("ports"))),
        );
    }
    for r in env.nb_table("Address_Set") {
        let mut a = r.set("addresses");
        a.sort();
        p.insert(format!("as {}", r.str("name")), format!("{a:?}"));
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_rebuilt_from_kubernetes_after_the_nb_is_lost() {
    let mut env = Env::start("restore").await;
    let args = env.master_args("10.30.0.0/16");
    let mut master = env.spawn("master", &args);
    master.wait_log("initial policy sync done", WAIT);

    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in ["n1", "n2"] {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for i in 0..6 {
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        let role = if i < 2 { "server" } else { "client" };
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), node, role))
            .await
            .unwrap();
    }
    let ips: BTreeMap<String, String> = eventually("pods annotated", WAIT, || async {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        let got: BTreeMap<String, String> = list
            .iter()
            .filter_map(|p| {
                let v: serde_json::Value =
                    serde_json::from_str(p.annotations().get("ovn")?).ok()?;
                let ip = v["ip_address"].as_str()?.split('/').next()?.to_string();
                Some((p.name_any(), ip))
            })
            .collect();
        (got.len() == 6).then_some(got)
    })
    .await;

    create_web(&env, &ips).await;
    let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "clients-to-servers", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                              "ports": [{"port": 8080}]}]}
    }))
    .unwrap();
    Api::<NetworkPolicy>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &np)
        .await
        .unwrap();

    // Wait until all of it is in NB, and stays put.
    let before = eventually("the whole state in NB", WAIT, || async {
        let p = projection(&env);
        let has_vip = p.keys().any(|k| k.starts_with("vip "));
        let pod_ports = p.keys().filter(|k| k.starts_with("lsp default_p")).count();
        let pg_with_acls = p
            .iter()
            .any(|(k, v)| k.starts_with("pg ") && v.contains("allow-related"));
        let peers_filled = p
            .iter()
            .any(|(k, v)| k.starts_with("as ") && v.contains(&ips["p2"]));
        (has_vip && pod_ports == 6 && pg_with_acls && peers_filled).then_some(p)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        before,
        projection(&env),
        "state must be stable before the test"
    );

    // The database is lost while the master is down.
    assert_eq!(master.terminate().code(), Some(0));
    wipe_nb(&mut env, |env| env.nb_table("Logical_Switch").is_empty());
    let mut master = env.spawn("master2", &args);
    master.wait_log("initial policy sync done", WAIT);
    let after = eventually("NB rebuilt", WAIT, || async {
        let p = projection(&env);
        (p == before).then_some(p)
    })
    .await;
    let lost: BTreeSet<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(lost.is_empty(), "{lost:?}");
    // Every pod kept its address (the annotation is the source of truth).
    let again: BTreeMap<String, String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| {
            let v: serde_json::Value = serde_json::from_str(p.annotations().get("ovn")?).ok()?;
            Some((
                p.name_any(),
                v["ip_address"].as_str()?.split('/').next()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(again, ips);
}
