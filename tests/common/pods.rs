//! Pod helpers shared by the pod tests and benchmarks: the pod objects, their annotations, and
//! the checks that each pod is served (an IP in its node's subnet, one logical port, no
//! duplicate IP).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use ovnkube::ovn::Row;

use super::{Env, eventually};

pub const WAIT: Duration = Duration::from_secs(60);

pub fn pod(name: &str, node: Option<&str>, host_network: bool, ann: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            annotations: ann.map(|a| [("ovn".to_string(), a.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            host_network: host_network.then_some(true),
            containers: vec![Container {
                name: "c".into(),
                image: Some("pause".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod ports (external_ids:pod=true) by name.
pub fn pod_ports(env: &Env) -> BTreeMap<String, Row> {
    env.nb_rows("Logical_Switch_Port")
        .into_iter()
        .filter(|(_, r)| r.map_get("external_ids", "pod").as_deref() == Some("true"))
        .collect()
}

/// Node name → subnet, once every listed node has its annotation and switch.
pub async fn wait_nodes_ready(env: &Env, names: &[&str]) -> BTreeMap<String, ipnet::Ipv4Net> {
    eventually("node switches", WAIT, || async {
        let api: Api<Node> = Api::all(env.client.clone());
        let nodes = api.list(&ListParams::default()).await.unwrap().items;
        let switches = env.nb_rows("Logical_Switch");
        let subs: BTreeMap<String, ipnet::Ipv4Net> = nodes
            .iter()
            .filter_map(|n| {
                let s = n.annotations().get("ovn_host_subnet")?;
                switches.get(&n.name_any())?;
                Some((n.name_any(), s.parse().ok()?))
            })
            .collect();
        names.iter().all(|n| subs.contains_key(*n)).then_some(subs)
    })
    .await
}

/// Pod name → `ovn` annotation, for every pod of `default`.
pub async fn annotations(env: &Env) -> BTreeMap<String, Option<String>> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.annotations().get("ovn").cloned()))
        .collect()
}

pub async fn wait_annotated(env: &Env, names: &[String]) -> BTreeMap<String, Ann> {
    eventually("pods annotated", WAIT, || async {
        let all = annotations(env).await;
        let got: BTreeMap<String, Ann> = names
            .iter()
            .filter_map(|n| Some((n.clone(), Ann::parse(all.get(n)?.as_deref()?))))
            .collect();
        (got.len() == names.len()).then_some(got)
    })
    .await
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ann {
    pub ip: Ipv4Addr,
    pub len: u8,
    pub mac: String,
    pub gw: Ipv4Addr,
}

impl Ann {
    pub fn parse(v: &str) -> Ann {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        let (ip, len) = j["ip_address"].as_str().unwrap().split_once('/').unwrap();
        Ann {
            ip: ip.parse().unwrap(),
            len: len.parse().unwrap(),
            mac: j["mac_address"].as_str().unwrap().into(),
            gw: j["gateway_ip"].as_str().unwrap().parse().unwrap(),
        }
    }
}

/// Check the annotations against the node subnets and the NB ports; returns the IPs.
pub fn check_served(
    env: &Env,
    anns: &BTreeMap<String, Ann>,
    node_of: &dyn Fn(&str) -> String,
    subs: &BTreeMap<String, ipnet::Ipv4Net>,
) {
    let ports = pod_ports(env);
    let mut ips = BTreeSet::new();
    for (name, a) in anns {
        let node = node_of(name);
        let sub = subs[&node];
        assert!(sub.contains(&a.ip), "{name}: {} outside {sub}", a.ip);
        let off = u32::from(a.ip) - u32::from(sub.network());
        assert!(
            off > 2 && a.ip != sub.broadcast(),
            "{name}: reserved {}",
            a.ip
        );
        assert_eq!(a.len, sub.prefix_len());
        assert_eq!(a.gw, Ipv4Addr::from(u32::from(sub.network()) + 1));
        assert!(ips.insert(a.ip), "duplicate IP {}", a.ip);
        let p = ports
            .get(&format!("default_{name}"))
            .unwrap_or_else(|| panic!("no port for {name}"));
        assert_eq!(
            p.set("addresses"),
            [format!("{} {}", a.mac, a.ip)],
            "{name}"
        );
        assert_eq!(
            p.map_get("external_ids", "namespace").as_deref(),
            Some("default")
        );
        assert_eq!(
            p.map_get("external_ids", "logical_switch").as_deref(),
            Some(node.as_str())
        );
    }
}

/// The pod benchmark's master flags: `args` at log level 4 (level 5 costs CPU at this rate).
pub fn bench_args(args: Vec<String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if a.starts_with("-loglevel") {
                "-loglevel=4".into()
            } else {
                a
            }
        })
        .collect()
}

/// `make bench`: a master started with `args` on `env`, 50 nodes, then `n` pods created at
/// `rate` pods/s; returns create→annotation p50, p99, p99 of the last 10% (ms) and the
/// throughput (pods/s). Checks that every pod got its port.
pub async fn measure_pod_latency(
    env: &Env,
    args: &[String],
    n: usize,
    rate: f64,
) -> (f64, f64, f64, f64) {
    let mut master = env.spawn("master", args);
    master.wait_log("cluster topology ready", WAIT);
    let nodes: Vec<String> = (0..50).map(|i| format!("node{i:02}")).collect();
    env.create_nodes(&nodes.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    wait_nodes_ready(env, &nodes.iter().map(String::as_str).collect::<Vec<_>>()).await;
    master.wait_log("pod worker started", WAIT);

    // First sight of the annotation, per pod.
    let seen: Arc<Mutex<HashMap<String, std::time::Instant>>> = Arc::default();
    let watch = {
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                    && p.annotations().contains_key("ovn")
                {
                    seen.lock()
                        .unwrap()
                        .entry(p.name_any())
                        .or_insert_with(std::time::Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let created: Arc<Mutex<HashMap<String, std::time::Instant>>> = Arc::default();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let start = std::time::Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let name = format!("p{i:05}");
        let p = pod(&name, Some(&nodes[i % nodes.len()]), false, None);
        let (api, created, slots) = (api.clone(), created.clone(), slots.clone());
        handles.push(tokio::spawn(async move {
            let _s = slots.acquire().await.unwrap();
            created
                .lock()
                .unwrap()
                .insert(name, std::time::Instant::now());
            api.create(&PostParams::default(), &p).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let long = Duration::from_secs(600);
    eventually("all bench pods annotated", long, || async {
        (seen.lock().unwrap().len() >= n).then_some(())
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let created = created.lock().unwrap().clone();
    let mut order: Vec<(&String, &std::time::Instant)> = created.iter().collect();
    order.sort_by_key(|(_, t)| **t);
    let lat = |keys: &[(&String, &std::time::Instant)]| -> Vec<f64> {
        let mut v: Vec<f64> = keys
            .iter()
            .map(|(k, t)| seen[*k].saturating_duration_since(**t).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let all = lat(&order);
    let tail = lat(&order[order.len() * 9 / 10..]);
    let last = seen.values().max().copied().unwrap_or(start);
    let throughput = n as f64 / last.duration_since(start).as_secs_f64();
    assert_eq!(pod_ports(env).len(), n);
    master.terminate();
    (
        pct(&all, 0.5),
        pct(&all, 0.99),
        pct(&tail, 0.99),
        throughput,
    )
}
