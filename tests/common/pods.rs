//! Pod helpers shared by the pod tests and benchmarks: the pod objects, their annotations, and
//! the checks that each pod is served (an IP in its node's subnet, one logical port, no
//! duplicate IP).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::{ListParams, ObjectMeta};
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

/// What one pod-benchmark run measured.
pub struct Measured {
    pub latency: super::podbench::PodLatency,
    /// The master's VmRSS (KiB) after the storm.
    pub rss_kib: u64,
}

/// `make bench`: a master started with `args` on `env`, `node_count` nodes, then `n` pods
/// created at `rate` pods/s; returns the create→annotation latencies and the master's RSS.
/// Checks that every pod got its port.
pub async fn measure_pod_latency(
    env: &Env,
    args: &[String],
    node_count: usize,
    n: usize,
    rate: f64,
) -> Measured {
    let mut master = env.spawn("master", args);
    master.wait_log("cluster topology ready", WAIT);
    let nodes: Vec<String> = (0..node_count).map(|i| format!("node{i:03}")).collect();
    env.create_nodes(&nodes.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    wait_nodes_ready(env, &nodes.iter().map(String::as_str).collect::<Vec<_>>()).await;
    master.wait_log("pod worker started", WAIT);
    let latency = super::podbench::annotation_latency(env, &nodes, n, rate, |name, node| {
        pod(name, Some(node), false, None)
    })
    .await;
    assert_eq!(pod_ports(env).len(), n);
    let rss_kib = rss_kib(master.child.id());
    master.terminate();
    Measured { latency, rss_kib }
}

/// VmRSS of `pid` in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How many pods in `default` carry the network annotation (0 while the API does not answer).
pub async fn annotated_count(env: &Env) -> usize {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.annotations().contains_key("ovn"))
                .count()
        })
        .unwrap_or(0)
}
