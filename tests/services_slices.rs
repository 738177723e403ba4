//! Services from EndpointSlices on the real dataplane: the real binary (master + service
//! controller) against NB/SB over unix sockets, pods in network namespaces on the userspace OVS
//! datapath, TCP connections to ClusterIPs. The API server publishes only EndpointSlices here
//! (mirroring off), so nothing can come from core/v1 Endpoints.

mod common;
mod gwbed;
mod nodebed;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, eventually};
use gwbed::{blocking, client, pod, server, until_prints};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Node, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use kube_sandbox::SandboxConfig;
use ovn_testbed::{Chassis, TestPod};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// An Env whose API server serves slices but does not mirror Endpoints into them.
async fn env_slices_only(name: &str) -> Env {
    env_with(
        name,
        SandboxConfig {
            mirror_endpoints: false,
            ..SandboxConfig::default()
        },
    )
    .await
}

async fn env_with(name: &str, cfg: SandboxConfig) -> Env {
    Env::start_with(name, cfg).await
}

/// The master's flags with the NB/SB as unix sockets (how a stock Debian central serves them).
fn master_args(env: &Env, subnet: &str) -> Vec<String> {
    env.master_args_unix(subnet)
}

async fn node_subnets(env: &Env, names: &[&str]) -> BTreeMap<String, String> {
    env.create_nodes(names.iter().copied()).await;
    let api: Api<Node> = Api::all(env.client.clone());
    eventually("node subnets and switches", WAIT, || async {
        let subs: BTreeMap<String, String> = api
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|n| {
                Some((
                    n.name_any(),
                    n.annotations().get("ovn_host_subnet")?.clone(),
                ))
            })
            .collect();
        let sw = env
            .central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .ok()?;
        (names
            .iter()
            .all(|n| subs.contains_key(*n) && sw.lines().any(|l| l.trim() == *n)))
        .then_some(subs)
    })
    .await
}

fn service(name: &str, affinity_timeout: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            session_affinity: affinity_timeout.map(|_| "ClientIP".into()),
            session_affinity_config: affinity_timeout.map(|t| SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(t),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// (ip, node, ready, serving, terminating)
type Cond<'a> = (&'a str, &'a str, bool, bool, bool);

fn slice(svc: &str, name: &str, family: &str, eps: &[Cond]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node, ready, serving, terminating)| {
            json!({"addresses": [ip], "nodeName": node,
                   "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

async fn put_slice(env: &Env, s: EndpointSlice) {
    let api: Api<EndpointSlice> = Api::namespaced(env.client.clone(), "default");
    let name = s.name_any();
    match api.get_opt(&name).await.unwrap() {
        None => {
            api.create(&PostParams::default(), &s).await.unwrap();
        }
        Some(old) => {
            let mut s = s;
            s.metadata.resource_version = old.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &s)
                .await
                .unwrap();
        }
    }
}

/// vip → (backends, load balancer name), over every load balancer.
fn vips(env: &Env) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for r in env.nb_table("Load_Balancer") {
        for (v, b) in r.map("vips") {
            out.insert(v, (b, r.str("name")));
        }
    }
    out
}

async fn wait_backends(env: &Env, vip: &str, want: Option<&str>) {
    eventually(&format!("VIP {vip} -> {want:?}"), WAIT, || async {
        let v = vips(env);
        (v.get(vip).map(|(b, _)| b.as_str()) == want).then_some(())
    })
    .await;
}

/// `n` new TCP connections from `p` to `ip:80`; what each server answered, in order.
fn answers(p: &TestPod, ip: &str, n: usize) -> Vec<String> {
    let prog = format!(
        "import socket as S\nfor _ in range({n}):\n c=S.create_connection(('{ip}',80),3)\n \
         print(c.recv(100).decode())\n c.close()\n"
    );
    let o = p.exec(&["python3", "-c", &prog]).unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

struct Bed {
    env: Env,
    _master: common::Daemon,
    _chassis: Chassis,
    client: TestPod,
    _servers: Vec<(TestPod, std::process::Child)>,
    ips: BTreeMap<&'static str, String>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for (_, c) in &mut self._servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The master, nodes n1/n2, one chassis with a client pod on n1 and servers s1 (n1) and s2
/// (n2) answering with their name on port 8080.
async fn bed(name: &str, subnet: &str) -> Bed {
    let env = env_slices_only(name).await;
    let mut master = env.spawn("master", &master_args(&env, subnet));
    master.wait_log("initial service sync done", WAIT);
    assert!(
        master.log_text().contains("source=Slices"),
        "{}",
        master.log_text()
    );
    let subs = node_subnets(&env, &["n1", "n2"]).await;
    let ch = Chassis::start(&env.central, "ch1", Default::default()).unwrap();
    let (client, cip) = pod(&env, &ch, "n1", &subs["n1"], "client", 5);
    let mut servers = Vec::new();
    let mut ips = BTreeMap::new();
    ips.insert("client", cip);
    for (sname, node, idx) in [("s1", "n1", 6), ("s2", "n2", 5)] {
        let (p, ip) = pod(&env, &ch, node, &subs[node], sname, idx);
        let child = p.spawn(&["python3", "-c", &server(8080, sname)]).unwrap();
        servers.push((p, child));
        ips.insert(sname, ip);
    }
    Bed {
        env,
        _master: master,
        _chassis: ch,
        client,
        _servers: servers,
        ips,
    }
}

fn cluster_ip(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
}

fn hv_sync(env: &Env) {
    env.central
        .nbctl(&["--wait=hv", "--timeout=30", "sync"])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_through_slices_with_the_terminating_fallback() {
    let b = bed("slices", "10.40.0.0/16").await;
    let (s1, s2) = (b.ips["s1"].clone(), b.ips["s2"].clone());
    let svcs: Api<Service> = Api::namespaced(b.env.client.clone(), "default");
    let web = svcs
        .create(&PostParams::default(), &service("web", None))
        .await
        .unwrap();
    let vip = format!("{}:80", cluster_ip(&web));
    // Two slices joined by the service-name label, and an IPv6 slice that is ignored.
    put_slice(
        &b.env,
        slice("web", "web-a", "IPv4", &[(&s1, "n1", true, true, false)]),
    )
    .await;
    put_slice(
        &b.env,
        slice("web", "web-b", "IPv4", &[(&s2, "n2", true, true, false)]),
    )
    .await;
    put_slice(
        &b.env,
        slice(
            "web",
            "web-v6",
            "IPv6",
            &[("fd00::5", "n2", true, true, false)],
        ),
    )
    .await;
    wait_backends(&b.env, &vip, Some(&format!("{s1}:8080,{s2}:8080"))).await;
    hv_sync(&b.env);
    let ip = cluster_ip(&web);
    until_prints("client -> ClusterIP", "s1", &String::new, || {
        b.client.exec(&["python3", "-c", &client(&ip, 80)]).unwrap()
    });

    // s1 terminating but still serving, s2 terminating and no longer serving: no endpoint is
    // ready, so the serving-and-terminating one keeps the service up.
    put_slice(
        &b.env,
        slice("web", "web-a", "IPv4", &[(&s1, "n1", false, true, true)]),
    )
    .await;
    put_slice(
        &b.env,
        slice("web", "web-b", "IPv4", &[(&s2, "n2", false, false, true)]),
    )
    .await;
    wait_backends(&b.env, &vip, Some(&format!("{s1}:8080"))).await;
    hv_sync(&b.env);
    let got = blocking(|| answers(&b.client, &ip, 10));
    assert_eq!(got, vec!["s1"; 10], "only the terminating-but-serving s1");

    // A ready endpoint again: it is preferred over the terminating one.
    put_slice(
        &b.env,
        slice("web", "web-b", "IPv4", &[(&s2, "n2", true, true, false)]),
    )
    .await;
    wait_backends(&b.env, &vip, Some(&format!("{s2}:8080"))).await;
    hv_sync(&b.env);
    let got = blocking(|| answers(&b.client, &ip, 10));
    assert_eq!(got, vec!["s2"; 10], "the ready s2 only");

    // All slices gone: no VIP.
    let api: Api<EndpointSlice> = Api::namespaced(b.env.client.clone(), "default");
    for n in ["web-a", "web-b", "web-v6"] {
        api.delete(n, &Default::default()).await.unwrap();
    }
    wait_backends(&b.env, &vip, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_pins_one_client_while_round_robin_uses_both() {
    let b = bed("affinity", "10.41.0.0/16").await;
    let (s1, s2) = (b.ips["s1"].clone(), b.ips["s2"].clone());
    let svcs: Api<Service> = Api::namespaced(b.env.client.clone(), "default");
    let rr = svcs
        .create(&PostParams::default(), &service("rr", None))
        .await
        .unwrap();
    let sticky = svcs
        .create(&PostParams::default(), &service("sticky", Some(600)))
        .await
        .unwrap();
    let both = [
        (s1.as_str(), "n1", true, true, false),
        (s2.as_str(), "n2", true, true, false),
    ];
    put_slice(&b.env, slice("rr", "rr-a", "IPv4", &both)).await;
    put_slice(&b.env, slice("sticky", "sticky-a", "IPv4", &both)).await;
    let backends = format!("{s1}:8080,{s2}:8080");
    let (rr_ip, sticky_ip) = (cluster_ip(&rr), cluster_ip(&sticky));
    wait_backends(&b.env, &format!("{rr_ip}:80"), Some(&backends)).await;
    wait_backends(&b.env, &format!("{sticky_ip}:80"), Some(&backends)).await;

    // NB: the sticky VIP is on a load balancer with OVN's affinity timeout, attached to every
    // node switch; the round-robin one stays on the plain cluster load balancer.
    let v = vips(&b.env);
    let aff_lb = v[&format!("{sticky_ip}:80")].1.clone();
    assert_eq!(aff_lb, "cluster-lb-tcp-affinity-600");
    assert_eq!(v[&format!("{rr_ip}:80")].1, "cluster-lb-tcp");
    let timeout = b
        .env
        .central
        .nbctl(&["get", "Load_Balancer", &aff_lb, "options:affinity_timeout"])
        .unwrap();
    assert_eq!(timeout.trim().trim_matches('"'), "600");
    let uuid = b
        .env
        .central
        .nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "Load_Balancer",
            &format!("name={aff_lb}"),
        ])
        .unwrap();
    for sw in ["n1", "n2"] {
        let lbs = b
            .env
            .central
            .nbctl(&["get", "Logical_Switch", sw, "load_balancer"])
            .unwrap();
        assert!(lbs.contains(uuid.trim()), "{sw}: {lbs}");
    }
    hv_sync(&b.env);

    until_prints("client -> sticky ClusterIP", "", &String::new, || {
        // Any answer at all: the dataplane is ready.
        let mut o = b
            .client
            .exec(&["python3", "-c", &client(&sticky_ip, 80)])
            .unwrap();
        if !o.stdout.is_empty() {
            o.stdout.clear();
        } else {
            o.stdout = b"not yet".to_vec();
        }
        o
    });
    let got = blocking(|| answers(&b.client, &rr_ip, 20));
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 2, "round robin reaches both: {got:?}");
    let got = blocking(|| answers(&b.client, &sticky_ip, 20));
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 1, "affinity keeps one backend: {got:?}");
    assert_eq!(got.len(), 20);
}

/// A server on port 8080 answering every connection with `<name> <peer address>`.
fn named_peer_server(name: &str) -> String {
    format!(
        "import socket as S\ns=S.socket()\ns.setsockopt(S.SOL_SOCKET,S.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',8080))\ns.listen()\nwhile True:\n c,a=s.accept()\n try:\n  \
         c.sendall(('{name} '+a[0]).encode())\n  c.close()\n except OSError:\n  pass\n"
    )
}

fn nodeport_service(name: &str, node_port: i32, local: bool) -> Service {
    let mut s = service(name, None);
    let spec = s.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    spec.ports.as_mut().unwrap()[0].node_port = Some(node_port);
    if local {
        spec.external_traffic_policy = Some("Local".into());
    }
    s
}

/// `n` connections from the outside namespace to `ip:port`; the answers.
fn outside_answers(out: &ovn_testbed::Outside, ip: &str, port: i32, n: usize) -> Vec<String> {
    let prog = format!(
        "import socket as S\nfor _ in range({n}):\n c=S.create_connection(('{ip}',{port}),3)\n \
         print(c.recv(100).decode())\n c.close()\n"
    );
    let o = out.exec(&["python3", "-c", &prog]).unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Like [`outside_answers`], but a connection that fails is `None` instead of a panic.
fn outside_tries(out: &ovn_testbed::Outside, ip: &str, port: i32, n: usize) -> Vec<Option<String>> {
    let prog = format!(
        "import socket as S\nfor _ in range({n}):\n try:\n  c=S.create_connection(('{ip}',{port}),2)\n  \
         print(c.recv(100).decode())\n  c.close()\n except OSError:\n  print('ERR')\n"
    );
    let o = out.exec(&["python3", "-c", &prog]).unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| (l != "ERR").then(|| l.to_string()))
        .collect()
}

/// Two gateway nodes n1 (172.31.0.1) and n2 (172.31.0.2) on one outside network, the real
/// node processes with the gateway flags, server pods s1 (n1) and s2 (n2) answering with
/// `<name> <peer address>`, and a client namespace outside the cluster.
/// Fields drop in order: node processes before their namespaces, the central last.
struct GwBed {
    servers: Vec<std::process::Child>,
    _nodes: Vec<gwbed::NodeProc>,
    _pods: Vec<TestPod>,
    n1: nodebed::NodeSide,
    n2: nodebed::NodeSide,
    out: ovn_testbed::Outside,
    ip1: String,
    ip2: String,
    _master: common::Daemon,
    env: Env,
}

impl Drop for GwBed {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn gw_bed(name: &str) -> GwBed {
    use gwbed::{GATEWAY_FLAGS, NodeProc, OUTSIDE, spawn_node, wait_init};
    use nodebed::{CLUSTER_SUBNET, NodeSide, node_subnet};
    let env = env_slices_only(name).await;
    let mut master = env.spawn("master", &master_args(&env, CLUSTER_SUBNET));
    master.wait_log("initial service sync done", WAIT);
    env.create_nodes(["n1", "n2"]).await;
    let (ca, cb) = ovn_testbed::two_chassis(&env.central, "n1", "n2").unwrap();
    let out = ovn_testbed::Outside::start(OUTSIDE).unwrap();
    out.attach(&ca, "eth1", "172.31.0.1/24", true).unwrap();
    out.attach(&cb, "eth1", "172.31.0.2/24", true).unwrap();
    let n1 = NodeSide::new(&env, ca);
    let n2 = NodeSide::new(&env, cb);
    let mut d1 = NodeProc(spawn_node(&env, &n1, "172.30.0.1", &[], GATEWAY_FLAGS));
    let mut d2 = NodeProc(spawn_node(&env, &n2, "172.30.0.2", &[], GATEWAY_FLAGS));
    blocking(|| {
        wait_init(&n1, &mut d1.0, 1);
        wait_init(&n2, &mut d2.0, 1);
    });
    let sub1 = node_subnet(&env, "n1").await;
    let sub2 = node_subnet(&env, "n2").await;
    let (p1, ip1) = pod(&env, &n1.chassis, "n1", &sub1, "s1", 10);
    let (p2, ip2) = pod(&env, &n2.chassis, "n2", &sub2, "s2", 10);
    let servers = vec![
        p1.spawn(&["python3", "-c", &named_peer_server("s1")])
            .unwrap(),
        p2.spawn(&["python3", "-c", &named_peer_server("s2")])
            .unwrap(),
    ];
    GwBed {
        env,
        _master: master,
        out,
        n1,
        n2,
        ip1,
        ip2,
        _pods: vec![p1, p2],
        servers,
        _nodes: vec![d1, d2],
    }
}

impl GwBed {
    /// Both servers, ready, on their nodes.
    fn both(&self) -> [Cond<'_>; 2] {
        [
            (self.ip1.as_str(), "n1", true, true, false),
            (self.ip2.as_str(), "n2", true, true, false),
        ]
    }

    /// Waits until bridge breth1 of `ns` sends `needle` (a flow match) into OVN.
    async fn wait_flow(&self, ns: &nodebed::NodeSide, needle: &str) {
        eventually(
            &format!("{needle} flow on breth1 of {}", ns.name),
            WAIT,
            || async {
                let f = gwbed::sh(&ns.chassis, &["ovs-ofctl", "dump-flows", "breth1"]);
                f.contains(needle).then_some(())
            },
        )
        .await;
    }

    /// The servers that answered `n` connections to `ip:port` from outside, with the address
    /// each saw (polls first until one connection succeeds).
    fn outside_seen(&self, ip: &str, port: i32, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while got.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "outside -> {ip}:{port}: only {got:?}"
            );
            got.extend(
                blocking(|| outside_tries(&self.out, ip, port, n - got.len()))
                    .into_iter()
                    .flatten(),
            );
        }
        got
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_policy_local_serves_node_endpoints_and_keeps_the_client_ip() {
    use gwbed::OUTSIDE;
    let b = gw_bed("etplocal").await;
    let (env, out) = (&b.env, &b.out);
    let (ip1, ip2) = (b.ip1.clone(), b.ip2.clone());
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    svcs.create(
        &PostParams::default(),
        &nodeport_service("local", 30081, true),
    )
    .await
    .unwrap();
    svcs.create(
        &PostParams::default(),
        &nodeport_service("cluster", 30082, false),
    )
    .await
    .unwrap();
    put_slice(env, slice("local", "local-a", "IPv4", &b.both())).await;
    put_slice(env, slice("cluster", "cluster-a", "IPv4", &b.both())).await;

    // NB: each gateway's no-SNAT load balancer holds its own node's endpoint only.
    wait_backends(env, "172.31.0.1:30081", Some(&format!("{ip1}:8080"))).await;
    wait_backends(env, "172.31.0.2:30081", Some(&format!("{ip2}:8080"))).await;
    wait_backends(
        env,
        "172.31.0.1:30082",
        Some(&format!("{ip1}:8080,{ip2}:8080")),
    )
    .await;
    let v = vips(env);
    assert_eq!(v["172.31.0.1:30081"].1, "GR_n1-tcp-local");
    assert_eq!(v["172.31.0.1:30082"].1, "GR_n1-tcp");
    let skip = env
        .central
        .nbctl(&[
            "get",
            "Load_Balancer",
            "GR_n1-tcp-local",
            "options:skip_snat",
        ])
        .unwrap();
    assert_eq!(skip.trim().trim_matches('"'), "true");
    for (ns, port) in [(&b.n1, 30081), (&b.n1, 30082), (&b.n2, 30081)] {
        b.wait_flow(ns, &format!("tp_dst={port}")).await;
    }
    hv_sync(env);

    // Packets: through n1 only s1 answers and sees the outside client's own address; through
    // n2 only s2. The Cluster-policy NodePort on n1 reaches both, SNATed (not the client's IP).
    let client_ip = OUTSIDE.split('/').next().unwrap();
    let want1 = format!("s1 {client_ip}");
    until_prints("outside -> n1:30081", &want1, &String::new, || {
        out.exec(&["python3", "-c", &client("172.31.0.1", 30081)])
            .unwrap()
    });
    let got = blocking(|| outside_answers(out, "172.31.0.1", 30081, 10));
    assert_eq!(got, vec![want1.clone(); 10]);
    let want2 = format!("s2 {client_ip}");
    until_prints("outside -> n2:30081", &want2, &String::new, || {
        out.exec(&["python3", "-c", &client("172.31.0.2", 30081)])
            .unwrap()
    });
    // Both endpoints answer through n1's Cluster-policy NodePort (s2 across the overlay),
    // and none of them sees the client's address.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "Cluster policy reached only {seen:?}"
        );
        for a in blocking(|| outside_tries(out, "172.31.0.1", 30082, 5)) {
            let Some(a) = a else { continue };
            assert!(
                !a.ends_with(&format!(" {client_ip}")),
                "Cluster policy SNATs: {a}"
            );
            seen.insert(a.split(' ').next().unwrap_or_default().to_string());
        }
    }
}

/// A NodePort service with ClientIP affinity added after others are programmed on two
/// gateways: it is programmed (this once stalled the service controller), and 20 connections
/// from one outside client through it reach one backend, while the NodePort without affinity
/// reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_nodeport_with_client_ip_affinity_pins_an_outside_client() {
    let b = gw_bed("npaffinity").await;
    let env = &b.env;
    let backends = format!("{}:8080,{}:8080", b.ip1, b.ip2);
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    for (name, port, local) in [("local", 30081, true), ("cluster", 30082, false)] {
        svcs.create(&PostParams::default(), &nodeport_service(name, port, local))
            .await
            .unwrap();
        put_slice(env, slice(name, &format!("{name}-a"), "IPv4", &b.both())).await;
    }
    wait_backends(env, "172.31.0.1:30082", Some(&backends)).await;
    wait_backends(env, "172.31.0.2:30081", Some(&format!("{}:8080", b.ip2))).await;
    b.wait_flow(&b.n1, "tp_dst=30082").await;
    hv_sync(env);
    let served = |got: &[String]| -> std::collections::BTreeSet<String> {
        got.iter()
            .map(|a| a.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    let got = b.outside_seen("172.31.0.1", 30082, 20);
    assert_eq!(served(&got).len(), 2, "round robin reaches both: {got:?}");

    let mut sticky = nodeport_service("sticky", 30083, false);
    let spec = sticky.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(SessionAffinityConfig {
        client_ip: Some(ClientIPConfig {
            timeout_seconds: Some(600),
        }),
    });
    svcs.create(&PostParams::default(), &sticky).await.unwrap();
    put_slice(env, slice("sticky", "sticky-a", "IPv4", &b.both())).await;
    // Polled here (not `wait_backends`) so that a stall shows the master's own account.
    let deadline = std::time::Instant::now() + WAIT;
    while ["172.31.0.1", "172.31.0.2"]
        .iter()
        .any(|gw| vips(env).get(&format!("{gw}:30083")).map(|(b, _)| b) != Some(&backends))
    {
        if std::time::Instant::now() > deadline {
            let log = b._master.log_text();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains(" DEBUG ")).collect();
            panic!(
                "the affinity NodePort was not programmed within {WAIT:?}; NB: {:?}\nmaster \
                 (INFO and above):\n{}",
                vips(env),
                tail[tail.len().saturating_sub(40)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = vips(env);
    assert_eq!(v["172.31.0.1:30083"].1, "GR_n1-tcp-affinity-600");
    assert_eq!(v["172.31.0.2:30083"].1, "GR_n2-tcp-affinity-600");
    b.wait_flow(&b.n1, "tp_dst=30083").await;
    hv_sync(env);

    let got = b.outside_seen("172.31.0.1", 30083, 20);
    assert_eq!(served(&got).len(), 1, "affinity keeps one backend: {got:?}");
}

/// Routes the outside client's traffic for `ip` through gateway `via` (as an upstream router
/// announcing a LoadBalancer IP would).
fn route_via(out: &ovn_testbed::Outside, ip: &str, via: &str) {
    let o = out
        .exec(&["ip", "route", "replace", &format!("{ip}/32"), "via", via])
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

/// LoadBalancer ingress IPs and externalIPs reach the service from outside through a gateway
/// node's NIC; with externalTrafficPolicy Local only the node's own endpoint answers and sees
/// the client's address; a refused address gets no bridge flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_and_external_ips_are_reachable_from_outside() {
    use gwbed::OUTSIDE;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use kube::api::{Patch, PatchParams};
    let b = gw_bed("lbips").await;
    let env = &b.env;
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let (lb_ip, ext_ip, refused) = ("192.0.2.50", "198.51.100.20", "10.128.200.9");
    let mut lb = nodeport_service("lb", 30085, true);
    lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    svcs.create(&PostParams::default(), &lb).await.unwrap();
    let status = ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(lb_ip.into()),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    };
    svcs.patch_status(
        "lb",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
    let mut ext = service("ext", None);
    ext.spec.as_mut().unwrap().external_ips = Some(vec![ext_ip.into(), refused.into()]);
    svcs.create(&PostParams::default(), &ext).await.unwrap();
    put_slice(env, slice("lb", "lb-a", "IPv4", &b.both())).await;
    put_slice(env, slice("ext", "ext-a", "IPv4", &b.both())).await;

    // NB: the LoadBalancer IP on each gateway's no-SNAT load balancer with its own endpoint.
    let on = |lb_name: &str, vip: &str| {
        env.nb_table("Load_Balancer")
            .iter()
            .find(|r| r.str("name") == lb_name)
            .and_then(|r| r.map("vips").get(vip).cloned())
    };
    eventually("the LoadBalancer IP on both gateways", WAIT, || async {
        let vip = format!("{lb_ip}:80");
        (on("GR_n1-tcp-local", &vip) == Some(format!("{}:8080", b.ip1))
            && on("GR_n2-tcp-local", &vip) == Some(format!("{}:8080", b.ip2)))
        .then_some(())
    })
    .await;
    eventually("the externalIP on both gateways", WAIT, || async {
        (on("GR_n1-tcp", &format!("{ext_ip}:80")).is_some()
            && on("GR_n2-tcp", &format!("{ext_ip}:80")).is_some())
        .then_some(())
    })
    .await;
    for ns in [&b.n1, &b.n2] {
        b.wait_flow(ns, &format!("nw_dst={lb_ip},tp_dst=80")).await;
        b.wait_flow(ns, &format!("nw_dst={ext_ip},tp_dst=80")).await;
        let f = gwbed::sh(&ns.chassis, &["ovs-ofctl", "dump-flows", "breth1"]);
        assert!(!f.contains(refused), "a refused externalIP got a flow: {f}");
    }
    hv_sync(env);

    // Packets: the LoadBalancer IP through n1 reaches s1 only, through n2 s2 only, both with
    // the client's own address.
    let client_ip = OUTSIDE.split('/').next().unwrap();
    for (via, server) in [("172.31.0.1", "s1"), ("172.31.0.2", "s2")] {
        route_via(&b.out, lb_ip, via);
        let want = format!("{server} {client_ip}");
        until_prints(
            &format!("outside -> {lb_ip} via {via}"),
            &want,
            &String::new,
            || b.out.exec(&["python3", "-c", &client(lb_ip, 80)]).unwrap(),
        );
        let got = b.outside_seen(lb_ip, 80, 10);
        assert_eq!(got, vec![want; 10], "via {via}");
    }
    // The externalIP (Cluster policy) reaches both endpoints through n1.
    route_via(&b.out, ext_ip, "172.31.0.1");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "externalIP reached only {seen:?}"
        );
        for a in blocking(|| outside_tries(&b.out, ext_ip, 80, 5))
            .into_iter()
            .flatten()
        {
            seen.insert(a.split(' ').next().unwrap_or_default().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local_keeps_pods_on_their_node_endpoints() {
    let b = bed("itplocal", "10.42.0.0/16").await;
    let (s1, s2) = (b.ips["s1"].clone(), b.ips["s2"].clone());
    let svcs: Api<Service> = Api::namespaced(b.env.client.clone(), "default");
    let mut s = service("itp", None);
    s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let s = svcs.create(&PostParams::default(), &s).await.unwrap();
    let both = [
        (s1.as_str(), "n1", true, true, false),
        (s2.as_str(), "n2", true, true, false),
    ];
    put_slice(&b.env, slice("itp", "itp-a", "IPv4", &both)).await;
    let vip = format!("{}:80", cluster_ip(&s));
    // NB: the ClusterIP is on each node's own load balancer with that node's endpoint only.
    let per_lb = || {
        let mut m = BTreeMap::new();
        for r in b.env.nb_table("Load_Balancer") {
            if let Some(be) = r.map("vips").get(&vip) {
                m.insert(r.str("name"), be.clone());
            }
        }
        m
    };
    let want: BTreeMap<String, String> = [
        ("node-lb-n1-tcp".to_string(), format!("{s1}:8080")),
        ("node-lb-n2-tcp".to_string(), format!("{s2}:8080")),
    ]
    .into();
    eventually("the ClusterIP on the node load balancers", WAIT, || async {
        (per_lb() == want).then_some(())
    })
    .await;
    hv_sync(&b.env);
    let ip = cluster_ip(&s);
    until_prints("client -> ClusterIP", "s1", &String::new, || {
        b.client.exec(&["python3", "-c", &client(&ip, 80)]).unwrap()
    });
    // Packets: the client on n1 only ever reaches n1's endpoint.
    let got = blocking(|| answers(&b.client, &ip, 20));
    assert_eq!(got, vec!["s1"; 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discovery_v1_the_controller_reads_core_endpoints() {
    use k8s_openapi::api::core::v1::Endpoints;
    let env = env_with(
        "noslices",
        SandboxConfig {
            hidden_groups: vec!["discovery.k8s.io".into()],
            ..SandboxConfig::default()
        },
    )
    .await;
    let mut master = env.spawn("master", &master_args(&env, "10.43.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    assert!(
        master.log_text().contains("source=Endpoints"),
        "{}",
        master.log_text()
    );
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let s = svcs
        .create(&PostParams::default(), &service("old", None))
        .await
        .unwrap();
    let e: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "old", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.43.1.5"}, {"ip": "10.43.2.5"}],
                     "notReadyAddresses": [{"ip": "10.43.2.6"}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}],
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &e)
        .await
        .unwrap();
    wait_backends(
        &env,
        &format!("{}:80", cluster_ip(&s)),
        Some("10.43.1.5:8080,10.43.2.5:8080"),
    )
    .await;
}
