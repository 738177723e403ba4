//! NetworkPolicy end to end: the real binary (`-init-master -net-controller`), real
//! NB/SB/northd, the Kubernetes API stand-in. Namespaces x, y, z with pods a, b, c each; every
//! scenario is judged for every (from, to) pair with `ovn-trace --ct=new` (TCP and UDP), a
//! subset with real packets on the OVS userspace dataplane.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace,
    Node, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use ovnkube::ovn::addrs::mac_from_ip;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const NSS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A pod of the matrix and its address.
#[derive(Clone, Debug)]
struct P {
    ns: String,
    name: String,
    port: String,
    node: String,
    ip: Ipv4Addr,
    mac: String,
    gw: Ipv4Addr,
    len: u8,
}

impl P {
    fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    proto: &'static str,
    port: u16,
}

const TCP80: Probe = Probe {
    proto: "tcp",
    port: 80,
};
const TCP81: Probe = Probe {
    proto: "tcp",
    port: 81,
};
const UDP80: Probe = Probe {
    proto: "udp",
    port: 80,
};
const UDP81: Probe = Probe {
    proto: "udp",
    port: 81,
};

fn cport(name: &str, port: i32, proto: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(proto.into()),
        ..Default::default()
    }
}

/// The netpol e2e pod: serve-80-tcp ... serve-81-udp, plus `web` (80, or 81 on pods `c`).
fn pod(ns: &str, name: &str, node: &str) -> Pod {
    let web = if name == "c" { 81 } else { 80 };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some([("pod".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("agnhost".into()),
                ports: Some(vec![
                    cport("serve-80-tcp", 80, "TCP"),
                    cport("serve-81-tcp", 81, "TCP"),
                    cport("serve-80-udp", 80, "UDP"),
                    cport("serve-81-udp", 81, "UDP"),
                    cport("web", web, "TCP"),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn set_ns_labels(env: &Env, ns: &str, labels: &[(&str, &str)]) {
    let api: Api<Namespace> = Api::all(env.client.clone());
    let mut n = api.get(ns).await.unwrap();
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    api.replace(ns, &PostParams::default(), &n).await.unwrap();
}

async fn set_pod_labels(env: &Env, ns: &str, name: &str, labels: &[(&str, &str)]) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let mut p = api.get(name).await.unwrap();
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    api.replace(name, &PostParams::default(), &p).await.unwrap();
}

/// Nodes n1, n2 with subnets and switches; namespaces x, y, z (label ns=<name>) with pods
/// a, b (on n1) and c (on n2), annotated by the pod controller; a management port on n1.
async fn cluster(env: &Env) -> Vec<P> {
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in ["n1", "n2"] {
        nodes
            .create(
                &PostParams::default(),
                &Node {
                    metadata: ObjectMeta {
                        name: Some(n.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    eventually("node subnets and switches", WAIT, || async {
        let l = nodes.list(&ListParams::default()).await.unwrap();
        let sw = env
            .central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap();
        (l.items
            .iter()
            .filter(|n| n.annotations().contains_key("ovn_host_subnet"))
            .count()
            == 2
            && ["n1", "n2"]
                .iter()
                .all(|n| sw.lines().any(|l| l.trim() == *n)))
        .then_some(())
    })
    .await;
    let nsapi: Api<Namespace> = Api::all(env.client.clone());
    for ns in NSS {
        nsapi
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.into()),
                        labels: Some([("ns".to_string(), ns.to_string())].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
        for p in PODS {
            let node = if p == "c" { "n2" } else { "n1" };
            pods.create(&PostParams::default(), &pod(ns, p, node))
                .await
                .unwrap();
        }
    }
    let mut out = Vec::new();
    for ns in NSS {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
        for p in PODS {
            let ann = eventually(&format!("pod {ns}/{p} annotated"), WAIT, || async {
                pods.get(p).await.ok()?.annotations().get("ovn").cloned()
            })
            .await;
            let v: serde_json::Value = serde_json::from_str(&ann).unwrap();
            let (ip, len) = v["ip_address"].as_str().unwrap().split_once('/').unwrap();
            out.push(P {
                ns: ns.into(),
                name: p.into(),
                port: format!("{ns}_{p}"),
                node: if p == "c" { "n2" } else { "n1" }.into(),
                ip: ip.parse().unwrap(),
                mac: v["mac_address"].as_str().unwrap().into(),
                gw: v["gateway_ip"].as_str().unwrap().parse().unwrap(),
                len: len.parse().unwrap(),
            });
        }
    }
    out
}

/// ovn-trace of a new connection `from` → `to`; true when it is delivered to `to`'s port.
fn delivered(env: &Env, from: &P, to_ip: Ipv4Addr, to: &P, pr: Probe) -> (bool, String) {
    let l4 = match pr.proto {
        "tcp" => format!(
            "tcp && tcp.src==33333 && tcp.dst=={} && tcp.flags==2",
            pr.port
        ),
        _ => format!("udp && udp.src==33333 && udp.dst=={}", pr.port),
    };
    // Same switch: straight to the pod's MAC; otherwise to the router.
    let dst_mac = if from.node == to.node && to_ip == to.ip {
        to.mac.clone()
    } else {
        mac_from_ip(from.gw)
    };
    let flow = format!(
        "inport==\"{}\" && eth.src=={} && eth.dst=={dst_mac} && ip4.src=={} && ip4.dst=={to_ip} && ip.ttl==64 && {l4}",
        from.port, from.mac, from.ip
    );
    // One `--ct` per conntrack action on the path (up to two per switch crossed): the first
    // packet of a connection is new in every zone. With a single flag, later ct actions see
    // ovn-trace's default "est", and a drop ACL's flow for established connections judges.
    let t = env
        .central
        .trace(&from.node, &flow, &["--ct=new"; 6])
        .unwrap();
    // The detailed trace ends a delivery with `output;` and `/* output to "<port>", ... */`.
    (t.contains(&format!("/* output to \"{}\"", to.port)), t)
}

type Expect<'a> = &'a (dyn Fn(&P, &P, Probe) -> bool + Sync);

/// Every (from, to, probe) cell that differs from `expect`.
fn mismatches(env: &Env, pods: &[P], probes: &[Probe], expect: Expect) -> Vec<String> {
    let cells: Vec<(&P, &P, Probe)> = pods
        .iter()
        .flat_map(|f| pods.iter().map(move |t| (f, t)))
        .filter(|(f, t)| f.port != t.port)
        .flat_map(|(f, t)| probes.iter().map(move |p| (f, t, *p)))
        .collect();
    let bad = std::sync::Mutex::new(Vec::new());
    let chunks: Vec<&[(&P, &P, Probe)]> = cells.chunks(cells.len().div_ceil(3)).collect();
    std::thread::scope(|s| {
        for ch in chunks {
            let bad = &bad;
            s.spawn(move || {
                for (f, t, p) in ch {
                    let (got, trace) = delivered(env, f, t.ip, t, *p);
                    let want = expect(f, t, *p);
                    if got != want {
                        let mut b = bad.lock().unwrap();
                        if b.is_empty() {
                            eprintln!("first mismatch trace:\n{trace}");
                        }
                        b.push(format!(
                            "{} -> {} {}/{}: want {} got {}",
                            f.id(),
                            t.id(),
                            p.proto,
                            p.port,
                            if want { "allowed" } else { "blocked" },
                            if got { "allowed" } else { "blocked" }
                        ));
                    }
                }
            });
        }
    });
    let mut v = bad.into_inner().unwrap();
    v.sort();
    v
}

/// Our NB objects, to tell when the controller has settled.
fn owned_state(env: &Env) -> String {
    let mut s = String::new();
    for t in ["Port_Group", "Address_Set", "ACL"] {
        s.push_str(
            &env.central
                .nbctl(&[
                    "--format=json",
                    "--columns=name,ports,acls,addresses,match,external_ids",
                    "list",
                    t,
                ])
                .or_else(|_| env.central.nbctl(&["--format=json", "list", t]))
                .unwrap(),
        );
    }
    s
}

fn settle(env: &Env) {
    let mut last = owned_state(env);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = owned_state(env);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    env.central
        .nbctl(&["--wait=sb", "--timeout=20", "sync"])
        .unwrap();
}

struct Tally {
    scenarios: usize,
    cells: usize,
    started: Instant,
}

/// Check the whole matrix against `expect`, allowing the controller a few seconds.
fn check(env: &Env, pods: &[P], tally: &mut Tally, name: &str, probes: &[Probe], expect: Expect) {
    let t0 = Instant::now();
    let mut last = Vec::new();
    for attempt in 0..6 {
        settle(env);
        last = mismatches(env, pods, probes, expect);
        if last.is_empty() {
            let cells = 72 * probes.len();
            tally.scenarios += 1;
            tally.cells += cells;
            eprintln!(
                "scenario {:>2} {name}: {cells} cells ok ({:.1}s, attempt {})",
                tally.scenarios,
                t0.elapsed().as_secs_f64(),
                attempt + 1
            );
            if TRACED.contains(&name) {
                tool_agrees(env, pods, name, probes, expect);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    panic!(
        "scenario {name}: {} cells differ:\n{}\n--- NB ---\n{}",
        last.len(),
        last.join("\n"),
        env.central
            .nbctl(&[
                "list",
                "Port_Group",
                "--",
                "list",
                "Address_Set",
                "--",
                "list",
                "ACL"
            ])
            .unwrap_or_default()
    );
}

/// Scenarios of `reachability_matrix` whose every cell is also asked of the operator's tool,
/// `ovn-kube-util trace`: its verdict must agree with the expected reachability.
const TRACED: &[&str] = &[
    "default deny ingress in x",
    "x/a from namespace y",
    "egress x/a to */b UDP 80",
];

/// `ovn-kube-util trace ARGS` against this test bed (the NB and SB as unix sockets).
fn util_trace_output(env: &Env, args: &[String]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let conf = env.dir.join("trace-tool.conf");
    if !conf.exists() {
        std::fs::write(&conf, "# empty: flags only\n").unwrap();
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .arg0("ovn-kube-util")
        .arg("trace")
        .args(args)
        .arg(format!("-k8s-kubeconfig={}", env.kubeconfig.display()))
        .arg(format!("-nb-address={}", env.central.nb_db()))
        .arg(format!("-sb-address={}", env.central.sb_db()))
        .arg(format!("-config-file={}", conf.display()))
        .output()
        .unwrap()
}

/// The same with `--json`: the exit status and the report.
fn util_trace(env: &Env, args: &[String]) -> (Option<i32>, serde_json::Value) {
    let mut args = args.to_vec();
    args.push("--json".into());
    let out = util_trace_output(env, &args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "trace {args:?}: no JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// Every cell of the matrix through the tool: TCP cells name the destination pod, UDP cells its
/// IP. A drop must name the ACL's origin: the policy isolating the pod.
fn tool_agrees(env: &Env, pods: &[P], name: &str, probes: &[Probe], expect: Expect) {
    let t0 = Instant::now();
    let cells: Vec<(&P, &P, Probe)> = pods
        .iter()
        .flat_map(|f| pods.iter().map(move |t| (f, t)))
        .filter(|(f, t)| f.port != t.port)
        .flat_map(|(f, t)| probes.iter().map(move |p| (f, t, *p)))
        .collect();
    let bad = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for ch in cells.chunks(cells.len().div_ceil(3)) {
            let bad = &bad;
            s.spawn(move || {
                for (f, t, p) in ch {
                    let dst = if p.proto == "udp" {
                        t.ip.to_string()
                    } else {
                        t.id()
                    };
                    let args = [
                        "--src".to_string(),
                        f.id(),
                        "--dst".into(),
                        dst,
                        format!("--{}", p.proto),
                        p.port.to_string(),
                    ];
                    let (code, r) = util_trace(env, &args);
                    let want = expect(f, t, *p);
                    let got = r["verdict"] == "delivered";
                    let named = r["paths"][0]["dropped_by"]["isolated_by"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty());
                    let code_ok = code == Some(if got { 0 } else { 2 });
                    if got != want || (!got && !named) || !code_ok {
                        bad.lock().unwrap().push(format!(
                            "{} -> {} {}/{}: want {} got (exit {code:?}) {r}",
                            f.id(),
                            t.id(),
                            p.proto,
                            p.port,
                            if want { "delivered" } else { "dropped" },
                        ));
                    }
                }
            });
        }
    });
    let bad = bad.into_inner().unwrap();
    assert!(
        bad.is_empty(),
        "scenario {name}: the trace tool disagrees on {} of {} cells:\n{}",
        bad.len(),
        cells.len(),
        bad.join("\n")
    );
    eprintln!(
        "scenario {name}: trace tool agrees on all {} cells ({:.1}s)",
        cells.len(),
        t0.elapsed().as_secs_f64()
    );
}

fn np(v: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(v).unwrap()
}

/// Make exactly `pols` exist (create, replace or delete the rest).
async fn set_policies(env: &Env, pols: &[NetworkPolicy]) {
    for ns in NSS {
        let api: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), ns);
        for old in api.list(&ListParams::default()).await.unwrap().items {
            let keep = pols
                .iter()
                .any(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == old.name_any());
            if !keep {
                api.delete(&old.name_any(), &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
    }
    for p in pols {
        let ns = p.namespace().unwrap();
        let api: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), &ns);
        match api.get_opt(&p.name_any()).await.unwrap() {
            Some(old) => {
                let mut new = p.clone();
                new.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(&p.name_any(), &PostParams::default(), &new)
                    .await
                    .unwrap();
            }
            None => {
                api.create(&PostParams::default(), p).await.unwrap();
            }
        }
    }
}

fn is(p: &P, id: &str) -> bool {
    p.id() == id
}

const BOTH: &[Probe] = &[TCP80, UDP80];
const FOUR: &[Probe] = &[TCP80, TCP81, UDP80, UDP81];

fn deny_ingress(ns: &str) -> NetworkPolicy {
    np(
        json!({"metadata": {"name": "deny-ingress", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    )
}

/// Ingress to x/a from the given peers (and ports).
fn to_xa(name: &str, from: serde_json::Value, ports: Option<serde_json::Value>) -> NetworkPolicy {
    let mut rule = json!({"from": from});
    if let Some(p) = ports {
        rule["ports"] = p;
    }
    np(json!({"metadata": {"name": name, "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [rule]}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_matrix() {
    let env = Env::start("netpol").await;
    let mut master = env.spawn("master", &env.master_args("10.30.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    let pods = cluster(&env).await;
    let by = |id: &str| pods.iter().find(|p| p.id() == id).unwrap().clone();
    let mut tally = Tally {
        scenarios: 0,
        cells: 0,
        started: Instant::now(),
    };
    let all = |_: &P, _: &P, _: Probe| true;

    // 1. No policy: everything reaches everything.
    check(&env, &pods, &mut tally, "no policies", BOTH, &all);

    // 2. Default deny ingress in x.
    set_policies(&env, &[deny_ingress("x")]).await;
    check(
        &env,
        &pods,
        &mut tally,
        "default deny ingress in x",
        BOTH,
        &|_, t, _| t.ns != "x",
    );

    // 3. Default deny egress in x.
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "deny-egress", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "default deny egress in x",
        BOTH,
        &|f, _, _| f.ns != "x",
    );

    // 4. Default deny both directions in x.
    let deny_all_x = np(json!({"metadata": {"name": "deny-all", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}));
    set_policies(&env, std::slice::from_ref(&deny_all_x)).await;
    check(
        &env,
        &pods,
        &mut tally,
        "default deny all in x",
        BOTH,
        &|f, t, _| f.ns != "x" && t.ns != "x",
    );
    {
        let xa = by("x/a");
        let mgmt = mgmt_port(&env, &xa);
        let (ok, trace) = delivered(&env, &mgmt, xa.ip, &xa, TCP80);
        assert!(ok, "management port to isolated x/a (early):\n{trace}");
    }

    // 5. Deny all plus allow-all ingress: policies are additive.
    set_policies(
        &env,
        &[
            deny_ingress("x"),
            np(json!({"metadata": {"name": "allow-all", "namespace": "x"},
                "spec": {"podSelector": {}, "ingress": [{}]}})),
        ],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "deny + allow-all ingress",
        BOTH,
        &all,
    );

    // 6. Allow to x/a from namespace y only.
    let from_y = to_xa(
        "from-y",
        json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]),
        None,
    );
    set_policies(&env, std::slice::from_ref(&from_y)).await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a from namespace y",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.ns == "y",
    );
    // The tool names the policy that lets it in.
    let (_, r) = util_trace(
        &env,
        &["--src", "y/a", "--dst", "x/a", "--tcp", "80"].map(String::from),
    );
    assert!(
        r["paths"][0]["allowed_by"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["policy"] == "x/from-y")),
        "{r:#}"
    );

    // 7. Allow to x/a from pod b of its own namespace.
    let from_xb = to_xa(
        "from-pod",
        json!([{"podSelector": {"matchLabels": {"pod": "b"}}}]),
        None,
    );
    set_policies(&env, std::slice::from_ref(&from_xb)).await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a from pod x/b",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "x/b"),
    );

    // 8. Pod b of any namespace (namespaceSelector {} AND podSelector).
    set_policies(
        &env,
        &[to_xa(
            "from-any-b",
            json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a from pods b of all namespaces",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.name == "b",
    );

    // 9. AND: namespace y and pod c in one peer.
    set_policies(
        &env,
        &[to_xa(
            "and",
            json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                     "podSelector": {"matchLabels": {"pod": "c"}}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "AND peer: y/c only",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "y/c"),
    );

    // 10. OR: namespace y, or pod c of x, as two peers.
    set_policies(
        &env,
        &[to_xa(
            "or",
            json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                   {"podSelector": {"matchLabels": {"pod": "c"}}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "OR peers: y/* or x/c",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.ns == "y" || is(f, "x/c"),
    );

    // 11. namespaceSelector matchExpressions NotIn.
    set_policies(
        &env,
        &[to_xa(
            "ns-notin",
            json!([{"namespaceSelector": {"matchExpressions": [
                {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "namespaceSelector NotIn x",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.ns != "x",
    );

    // 12. podSelector matchExpressions In, applied to every pod of x.
    set_policies(
        &env,
        &[np(json!({"metadata": {"name": "pod-in", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}}))],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "podSelector In [b c] to all of x",
        BOTH,
        &|f, t, _| t.ns != "x" || (f.ns == "x" && f.name != "a"),
    );

    // 13. Numeric port: TCP 80 from anywhere.
    set_policies(
        &env,
        &[to_xa(
            "tcp80",
            json!([]),
            Some(json!([{"port": 80, "protocol": "TCP"}])),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a on TCP 80 only",
        FOUR,
        &|_, t, p| !is(t, "x/a") || p == TCP80,
    );

    // 14. Named port serve-81-udp.
    set_policies(
        &env,
        &[to_xa(
            "named",
            json!([{"namespaceSelector": {}}]),
            Some(json!([{"port": "serve-81-udp", "protocol": "UDP"}])),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a on named port serve-81-udp",
        FOUR,
        &|_, t, p| !is(t, "x/a") || p == UDP81,
    );

    // 15. Named port resolving differently per pod (web: 80 on a/b, 81 on c), all of x.
    set_policies(
        &env,
        &[np(json!({"metadata": {"name": "web", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}}))],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "named port resolved per pod",
        FOUR,
        &|_, t, p| t.ns != "x" || p == if t.name == "c" { TCP81 } else { TCP80 },
    );

    // 16. endPort range 81-90 TCP.
    set_policies(
        &env,
        &[to_xa(
            "range",
            json!([]),
            Some(json!([{"port": 81, "endPort": 90, "protocol": "TCP"}])),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "x/a TCP 81-90 (endPort)",
        FOUR,
        &|_, t, p| !is(t, "x/a") || p == TCP81,
    );

    // 17. ipBlock: one /32.
    let yb = by("y/b");
    set_policies(
        &env,
        &[to_xa(
            "block",
            json!([{"ipBlock": {"cidr": format!("{}/32", yb.ip)}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "ipBlock y/b/32",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "y/b"),
    );

    // 18. ipBlock with except: node n1's subnet except y/b.
    let n1_net = format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(yb.ip) & !((1u32 << (32 - yb.len)) - 1)),
        yb.len
    );
    set_policies(
        &env,
        &[to_xa(
            "block-except",
            json!([{"ipBlock": {"cidr": n1_net, "except": [format!("{}/32", yb.ip)]}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "ipBlock n1 subnet except y/b",
        BOTH,
        &|f, t, _| !is(t, "x/a") || (f.node == "n1" && !is(f, "y/b")),
    );

    // 19. except does not override another policy's allow: y/b still allowed by from-pod-y-b.
    set_policies(
        &env,
        &[
            to_xa(
                "block-except",
                json!([{"ipBlock": {"cidr": n1_net, "except": [format!("{}/32", yb.ip)]}}]),
                None,
            ),
            to_xa(
                "from-yb",
                json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                        "podSelector": {"matchLabels": {"pod": "b"}}}]),
                None,
            ),
        ],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "except does not override other allows",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.node == "n1",
    );

    // 20. Multiple ipBlocks in one rule.
    let zc = by("z/c");
    set_policies(
        &env,
        &[to_xa(
            "blocks",
            json!([{"ipBlock": {"cidr": format!("{}/32", yb.ip)}},
                   {"ipBlock": {"cidr": format!("{}/32", zc.ip)}}]),
            None,
        )],
    )
    .await;
    check(&env, &pods, &mut tally, "two ipBlocks", BOTH, &|f, t, _| {
        !is(t, "x/a") || is(f, "y/b") || is(f, "z/c")
    });

    // 21. Egress from x/a to namespace y only.
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "egress-y", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}}),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "egress x/a to namespace y",
        BOTH,
        &|f, t, _| !is(f, "x/a") || t.ns == "y",
    );

    // 22. Egress to pods b anywhere on UDP 80 only.
    set_policies(
        &env,
        &[np(json!({"metadata": {"name": "egress-b-udp", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}],
                                 "ports": [{"port": 80, "protocol": "UDP"}]}]}}))],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "egress x/a to */b UDP 80",
        FOUR,
        &|f, t, p| !is(f, "x/a") || (t.name == "b" && p == UDP80),
    );

    // 23. Egress ipBlock with except, plus a named port on the destination.
    let xb = by("x/b");
    set_policies(
        &env,
        &[np(json!({"metadata": {"name": "egress-block", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                     "egress": [
                        {"to": [{"ipBlock": {"cidr": n1_net, "except": [format!("{}/32", xb.ip)]}}]},
                        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                         "ports": [{"port": "serve-81-tcp"}]}]}}))],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "egress ipBlock except + named port",
        FOUR,
        &|f, t, p| {
            !is(f, "x/a") || (t.node == "n1" && !is(t, "x/b")) || (t.ns == "z" && p == TCP81)
        },
    );

    // 24. Policy update: from-pod (x/b) becomes from pod c.
    set_policies(&env, std::slice::from_ref(&from_xb)).await;
    check(
        &env,
        &pods,
        &mut tally,
        "before update: from x/b",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "x/b"),
    );
    set_policies(
        &env,
        &[to_xa(
            "from-pod",
            json!([{"podSelector": {"matchLabels": {"pod": "c"}}}]),
            None,
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "policy update: from x/c",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "x/c"),
    );

    // 25. Pod label change: x/b relabelled pod=c joins, then leaves again.
    set_pod_labels(&env, "x", "b", &[("pod", "c")]).await;
    check(
        &env,
        &pods,
        &mut tally,
        "pod label change joins the peers",
        BOTH,
        &|f, t, _| !is(t, "x/a") || is(f, "x/c") || is(f, "x/b"),
    );
    set_pod_labels(&env, "x", "b", &[("pod", "b")]).await;

    // 26. Namespace label change: z labelled ns=y joins from-y.
    set_policies(&env, std::slice::from_ref(&from_y)).await;
    set_ns_labels(&env, "z", &[("ns", "y")]).await;
    check(
        &env,
        &pods,
        &mut tally,
        "namespace label change",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.ns == "y" || f.ns == "z",
    );
    set_ns_labels(&env, "z", &[("ns", "z")]).await;
    check(
        &env,
        &pods,
        &mut tally,
        "namespace label change back",
        BOTH,
        &|f, t, _| !is(t, "x/a") || f.ns == "y",
    );

    // 27. Selected pod's label change: x/a stops being selected.
    set_pod_labels(&env, "x", "a", &[("pod", "a2")]).await;
    check(
        &env,
        &pods,
        &mut tally,
        "selected pod leaves the policy",
        BOTH,
        &all,
    );
    set_pod_labels(&env, "x", "a", &[("pod", "a")]).await;

    // 28. Egress to a service: judged after load balancing, on the backend.
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "y");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "y");
    let mut vip = BTreeMap::new();
    for (name, backend) in [("to-yb", by("y/b")), ("to-zc", by("z/c"))] {
        let s = svcs
            .create(
                &PostParams::default(),
                &Service {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some("y".into()),
                        ..Default::default()
                    },
                    spec: Some(ServiceSpec {
                        ports: Some(vec![ServicePort {
                            name: Some("http".into()),
                            protocol: Some("TCP".into()),
                            port: 8080,
                            target_port: Some(IntOrString::Int(80)),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let cip: Ipv4Addr = s.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
        eps.create(
            &PostParams::default(),
            &Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("y".into()),
                    ..Default::default()
                },
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: backend.ip.to_string(),
                        ..Default::default()
                    }]),
                    ports: Some(vec![EndpointPort {
                        name: Some("http".into()),
                        protocol: Some("TCP".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
        vip.insert(name, (cip, backend));
    }
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "egress-yb", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                         "podSelector": {"matchLabels": {"pod": "b"}}}]}]}}),
        )],
    )
    .await;
    check(
        &env,
        &pods,
        &mut tally,
        "egress x/a to y/b only",
        BOTH,
        &|f, t, _| !is(f, "x/a") || is(t, "y/b"),
    );
    let xa = by("x/a");
    let probe = Probe {
        proto: "tcp",
        port: 8080,
    };
    for (name, want) in [("to-yb", true), ("to-zc", false)] {
        let (cip, backend) = &vip[name];
        let got = eventually(&format!("service {name} load-balanced"), WAIT, || async {
            let (ok, t) = delivered(&env, &xa, *cip, backend, probe);
            t.contains(&format!("ct_lb_mark(backends={}:80)", backend.ip))
                .then_some(ok)
        })
        .await;
        assert_eq!(
            got,
            want,
            "x/a -> service {name} ({cip}) -> {}",
            backend.id()
        );
    }
    // The tool, pod to service: through the VIP to the backend, judged there.
    let (code, r) = util_trace(
        &env,
        &["--src", "x/a", "--dst", "y/to-yb", "--tcp", "8080"].map(String::from),
    );
    let (cip, yb) = &vip["to-yb"];
    assert_eq!(
        (code, &r["verdict"]),
        (Some(0), &json!("delivered")),
        "{r:#}"
    );
    assert_eq!(r["vip"], format!("{cip}:8080"), "{r:#}");
    assert_eq!(
        r["paths"][0]["path"],
        format!("backend {}:80 ({})", yb.ip, yb.id()),
        "{r:#}"
    );
    let (code, r) = util_trace(
        &env,
        &["--src", "x/a", "--dst", "y/to-zc", "--tcp", "8080"].map(String::from),
    );
    assert_eq!((code, &r["verdict"]), (Some(2), &json!("dropped")), "{r:#}");
    assert_eq!(
        r["paths"][0]["dropped_by"]["isolated_by"],
        json!(["x/egress-yb"]),
        "{r:#}"
    );
    // What the operator reads.
    let out = util_trace_output(
        &env,
        &["--src", "x/a", "--dst", "y/to-zc", "--tcp", "8080"].map(String::from),
    );
    let (cip, zc) = &vip["to-zc"];
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "x/a -> y/to-zc tcp/8080 via load-balancer VIP {cip}:8080: dropped\n  backend {}:80 (z/c): \
             dropped by default deny (Egress) of namespace x, the pod being isolated by NetworkPolicy x/egress-yb\n",
            zc.ip
        )
    );
    // Missing objects are named.
    for (dst, l4, missing) in [
        ("y/nosuch", "--tcp", "no pod or service y/nosuch"),
        (
            "y/to-yb",
            "--udp",
            "service y/to-yb has no UDP port 8080 (it has TCP/8080)",
        ),
    ] {
        let (code, r) = util_trace(
            &env,
            &["--src", "x/a", "--dst", dst, l4, "8080"].map(String::from),
        );
        assert_eq!((code, &r["verdict"]), (Some(2), &json!("missing")), "{r:#}");
        assert!(r["missing"].as_str().unwrap().contains(missing), "{r:#}");
    }
    tally.scenarios += 1;
    eprintln!(
        "scenario {:>2} egress to service endpoints (after LB): ok",
        tally.scenarios
    );

    // 29. The node's management port (kubelet probes) still reaches isolated pods.
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "deny-all", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        )],
    )
    .await;
    let mgmt = mgmt_port(&env, &xa);
    check(
        &env,
        &pods,
        &mut tally,
        "deny all in x, again",
        BOTH,
        &|f, t, _| f.ns != "x" && t.ns != "x",
    );
    let (ok, trace) = delivered(&env, &mgmt, xa.ip, &xa, TCP80);
    assert!(ok, "management port to isolated x/a:\n{trace}");
    eprintln!(
        "scenario {:>2} node management port to isolated pod: ok",
        tally.scenarios
    );

    // 30. Policy delete: everything open again, and nothing of ours left in NB.
    set_policies(&env, &[]).await;
    check(&env, &pods, &mut tally, "all policies deleted", BOTH, &all);
    let pgs = env
        .central
        .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
        .unwrap();
    assert!(pgs.trim().is_empty(), "port groups left: {pgs}");
    let acls = env
        .central
        .nbctl(&["--bare", "--columns=_uuid", "list", "ACL"])
        .unwrap();
    assert!(acls.trim().is_empty(), "ACLs left: {acls}");

    eprintln!(
        "reachability matrix: {} scenarios, {} ovn-trace cells, {:.0}s",
        tally.scenarios,
        tally.cells,
        tally.started.elapsed().as_secs_f64()
    );
    assert!(tally.scenarios >= 25);
    assert!(!master.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_other_policies_keep_working() {
    let env = Env::start("netpolbad").await;
    let mut master = env.spawn("master", &env.master_args("10.31.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    let pods = cluster(&env).await;
    let mut tally = Tally {
        scenarios: 0,
        cells: 0,
        started: Instant::now(),
    };
    let good = to_xa(
        "good",
        json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]),
        None,
    );
    let bad_cidr = np(json!({"metadata": {"name": "bad-cidr", "namespace": "y"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/99"}}]},
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}}));
    let bad_proto = np(json!({"metadata": {"name": "bad-proto", "namespace": "z"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"ports": [{"port": 80, "protocol": "ICMP"}]}]}}));
    let bad_op = np(json!({"metadata": {"name": "bad-op", "namespace": "z"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [
            {"from": [{"podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "Equals", "values": ["a"]}]}}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}}));
    // A port entry with neither port nor protocol (crashed the 2018 controller): all TCP.
    let no_port = np(json!({"metadata": {"name": "no-port", "namespace": "z"},
        "spec": {"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"ports": [{}]}]}}));
    set_policies(&env, &[good, bad_cidr, bad_proto, bad_op, no_port]).await;
    master.wait_log(
        "network policy y/bad-cidr: ingress rule 0: peer 0: ipBlock cidr \"10.0.0.0/99\" is not a valid CIDR",
        WAIT,
    );
    master.wait_log(
        "network policy z/bad-proto: ingress rule 0: port 0: protocol \"ICMP\" is not supported",
        WAIT,
    );
    master.wait_log(
        "network policy z/bad-op: ingress rule 0: peer 0: podSelector: label selector on key \"pod\" has the invalid operator \"Equals\"",
        WAIT,
    );
    // Bad rules allow nothing; the good rules of the same policies and the other policy work.
    check(
        &env,
        &pods,
        &mut tally,
        "bad rules fail closed, the rest works",
        FOUR,
        &|f, t, p| {
            if is(t, "x/a") {
                f.ns == "y"
            } else if is(t, "y/a") {
                is(f, "y/b")
            } else if is(t, "z/a") {
                false
            } else if is(t, "z/b") {
                f.ns == "x"
            } else if is(t, "z/c") {
                p.proto == "tcp"
            } else {
                true
            }
        },
    );
    let events: Api<Event> = Api::all(env.client.clone());
    let found = eventually("InvalidNetworkPolicy events", WAIT, || async {
        let evs = events.list(&ListParams::default()).await.ok()?.items;
        let names: Vec<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidNetworkPolicy"))
            .filter_map(|e| e.regarding.as_ref().and_then(|r| r.name.clone()))
            .collect();
        ["bad-cidr", "bad-proto", "bad-op"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
            .then_some(names)
    })
    .await;
    assert!(
        !found.iter().any(|n| n == "good" || n == "no-port"),
        "{found:?}"
    );
    assert!(!master.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_removes_stale_objects_and_only_those() {
    let env = Env::start("netpolsync").await;
    let mut master = env.spawn("master", &env.master_args("10.32.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    let pods = cluster(&env).await;
    let mut tally = Tally {
        scenarios: 0,
        cells: 0,
        started: Instant::now(),
    };
    // Two policies per namespace (the 2018 sync kept only the last one of each namespace).
    let p = |ns: &str, name: &str, pod: &str| {
        np(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"pod": pod}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}}))
    };
    let pols = vec![p("x", "one", "a"), p("x", "two", "c"), p("y", "gone", "a")];
    set_policies(&env, &pols).await;
    let expect = |f: &P, t: &P, _: Probe| {
        let isolated = is(t, "x/a") || is(t, "x/c") || is(t, "y/a");
        !isolated || (f.ns == t.ns && f.name == "b")
    };
    check(&env, &pods, &mut tally, "before restart", BOTH, &expect);
    // Something that is not ours must survive.
    env.central
        .nbctl(&[
            "pg-add",
            "foreign_pg",
            "--",
            "create",
            "Address_Set",
            "name=foreign_as",
        ])
        .unwrap();
    let pg_uuid = |name: &str| {
        env.central
            .nbctl(&[
                "--bare",
                "--columns=_uuid",
                "find",
                "Port_Group",
                &format!("name={name}"),
            ])
            .unwrap()
            .trim()
            .to_string()
    };
    let hash = |s: &str| ovnkube::ovn::names::hash_name(s);
    let keep_uuid = pg_uuid(&hash("x_one"));
    let keep_acls = env
        .central
        .nbctl(&[
            "--bare",
            "--columns=acls",
            "find",
            "Port_Group",
            &format!("name={}", hash("x_two")),
        ])
        .unwrap();
    master.terminate();

    // While down: y/gone deleted (y's default deny must go too).
    let api: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), "y");
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    let mut master = env.spawn("master2", &env.master_args("10.32.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    assert!(
        master.log_text().contains("stale_removed=2"),
        "{}",
        master.log_text()
    );
    let names = env
        .central
        .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
        .unwrap();
    assert!(names.contains("foreign_pg"));
    assert!(!names.contains(&hash("y_gone")), "{names}");
    assert!(!names.contains(&hash("y_ingressDefaultDeny")), "{names}");
    assert_eq!(
        pg_uuid(&hash("x_one")),
        keep_uuid,
        "valid port group re-created"
    );
    let acls_now = env
        .central
        .nbctl(&[
            "--bare",
            "--columns=acls",
            "find",
            "Port_Group",
            &format!("name={}", hash("x_two")),
        ])
        .unwrap();
    assert_eq!(acls_now, keep_acls, "valid ACLs rewritten");
    assert!(
        env.central
            .nbctl(&["--bare", "--columns=name", "list", "Address_Set"])
            .unwrap()
            .contains("foreign_as")
    );
    check(
        &env,
        &pods,
        &mut tally,
        "after restart",
        BOTH,
        &|f, t, pr| !is(t, "y/a") && expect(f, t, pr) || is(t, "y/a"),
    );
}

/// A management port on `pod`'s node (`k8s-<node>`, `.2` of its subnet), as node init makes it.
fn mgmt_port(env: &Env, pod: &P) -> P {
    let ip = Ipv4Addr::from(u32::from(pod.gw) + 1);
    let mgmt = P {
        ns: "node".into(),
        name: pod.node.clone(),
        port: format!("k8s-{}", pod.node),
        node: pod.node.clone(),
        ip,
        mac: mac_from_ip(ip),
        gw: pod.gw,
        len: pod.len,
    };
    env.central
        .nbctl(&[
            "--may-exist",
            "lsp-add",
            &pod.node,
            &mgmt.port,
            "--",
            "lsp-set-addresses",
            &mgmt.port,
            &format!("{} {}", mgmt.mac, mgmt.ip),
        ])
        .unwrap();
    mgmt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_management_port_reaches_isolated_pods() {
    let env = Env::start("netpolmgmt").await;
    let mut master = env.spawn("master", &env.master_args("10.34.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    let pods = cluster(&env).await;
    let by = |id: &str| pods.iter().find(|p| p.id() == id).unwrap().clone();
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "deny-all", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
        )],
    )
    .await;
    // A load balancer on the switches changes the conntrack path; judge with one present.
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "y");
    svcs.create(
        &PostParams::default(),
        &Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    protocol: Some("TCP".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Api::<Endpoints>::namespaced(env.client.clone(), "y")
        .create(
            &PostParams::default(),
            &Endpoints {
                metadata: ObjectMeta {
                    name: Some("web".into()),
                    ..Default::default()
                },
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: by("y/b").ip.to_string(),
                        ..Default::default()
                    }]),
                    ports: Some(vec![EndpointPort {
                        protocol: Some("TCP".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
    let xa = by("x/a");
    let mgmt = mgmt_port(&env, &xa);
    let mut last = String::new();
    let ok = eventually(
        "management port reaches isolated x/a",
        Duration::from_secs(30),
        || {
            settle(&env);
            let (ok, t) = delivered(&env, &mgmt, xa.ip, &xa, TCP80);
            let blocked = !delivered(&env, &by("y/a"), xa.ip, &xa, TCP80).0;
            last = t;
            async move { (ok && blocked).then_some(()) }
        },
    );
    let res = tokio::time::timeout(Duration::from_secs(40), ok).await;
    assert!(
        res.is_ok(),
        "{last}\n{}",
        env.central
            .nbctl(&["list", "Address_Set"])
            .unwrap_or_default()
    );
}

const SERVER: &str = "import socket, threading
def tcp(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', p)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b'hi'); c.close()
def udp(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', p))
    while True:
        d, a = s.recvfrom(100); s.sendto(b'hi', a)
for p in (80, 81):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
udp(80)
";

const CLIENT: &str = "import socket, sys
proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == 'tcp':
        s = socket.create_connection((ip, port), timeout=1.5); print(s.recv(10).decode())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b'x', (ip, port)); print(s.recvfrom(10)[0].decode())
except Exception as e:
    print('fail', e)
";

/// Real packets: does `from` get an answer from `ip:port`?
fn connects(from: &ovn_testbed::TestPod, proto: &str, ip: Ipv4Addr, port: u16) -> bool {
    let out = from
        .exec(&[
            "python3",
            "-c",
            CLIENT,
            proto,
            &ip.to_string(),
            &port.to_string(),
        ])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "hi"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_packets_on_the_userspace_dataplane() {
    let env = Env::start("netpoldp").await;
    let mut master = env.spawn("master", &env.master_args("10.33.0.0/16"));
    master.wait_log("initial policy sync done", WAIT);
    let pods = cluster(&env).await;
    let by = |id: &str| pods.iter().find(|p| p.id() == id).unwrap().clone();
    let chassis = ovn_testbed::Chassis::start(&env.central, "ch1", Default::default()).unwrap();
    let mut live = BTreeMap::new();
    let mut servers = Vec::new();
    for id in ["x/a", "y/b", "z/c"] {
        let p = by(id);
        let tp = ovn_testbed::TestPod::create(
            &chassis,
            &format!("{}{}", p.ns, p.name),
            &p.port,
            &p.mac,
            &format!("{}/{}", p.ip, p.len),
            &p.gw.to_string(),
        )
        .unwrap();
        servers.push(tp.spawn(&["python3", "-c", SERVER]).unwrap());
        live.insert(id, (tp, p));
    }
    env.central
        .nbctl(&["--wait=hv", "--timeout=20", "sync"])
        .unwrap();
    let mut done = 0;
    // Each cell: (from, to, proto, port, want). Waits until every cell holds at once.
    let mut expect = async |name: &str, cells: &[(&str, Ipv4Addr, &str, u16, bool)]| {
        let t0 = Instant::now();
        eventually(&format!("dataplane: {name}"), WAIT, || async {
            for (from, ip, proto, port, want) in cells {
                if connects(&live[from].0, proto, *ip, *port) != *want {
                    return None;
                }
            }
            Some(())
        })
        .await;
        done += 1;
        eprintln!(
            "dataplane {done}: {name}: {} cells ok ({:.1}s)",
            cells.len(),
            t0.elapsed().as_secs_f64()
        );
    };
    let (xa, yb, zc) = (by("x/a").ip, by("y/b").ip, by("z/c").ip);

    expect(
        "no policies",
        &[
            ("x/a", yb, "tcp", 80, true),
            ("x/a", yb, "udp", 80, true),
            ("y/b", xa, "tcp", 81, true),
            ("x/a", zc, "tcp", 80, true),
        ],
    )
    .await;

    // Ingress into y only from namespace x on TCP 80.
    set_policies(
        &env,
        &[np(
            json!({"metadata": {"name": "from-x-80", "namespace": "y"},
            "spec": {"podSelector": {}, "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                "ports": [{"port": 80}]}]}}),
        )],
    )
    .await;
    expect(
        "ingress y from x on TCP 80",
        &[
            ("x/a", yb, "tcp", 80, true),
            ("x/a", yb, "tcp", 81, false),
            ("x/a", yb, "udp", 80, false),
            ("z/c", yb, "tcp", 80, false),
            // y is not isolated for egress; answers to x pass.
            ("y/b", xa, "tcp", 80, true),
        ],
    )
    .await;

    // Egress from x only to y/b TCP 80; replies to others' connections still flow.
    set_policies(
        &env,
        &[np(json!({"metadata": {"name": "to-yb", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                        "podSelector": {"matchLabels": {"pod": "b"}}}],
                "ports": [{"port": 80, "protocol": "TCP"}]}]}}))],
    )
    .await;
    expect(
        "egress x to y/b TCP 80",
        &[
            ("x/a", yb, "tcp", 80, true),
            ("x/a", yb, "tcp", 81, false),
            ("x/a", zc, "tcp", 80, false),
            ("x/a", zc, "udp", 80, false),
            ("z/c", xa, "tcp", 80, true),
        ],
    )
    .await;

    // The same egress policy judged after load balancing: a ClusterIP backed by y/b passes,
    // one backed by z/c does not.
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "y");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "y");
    let mut cips = Vec::new();
    for (name, backend) in [("web-yb", yb), ("web-zc", zc)] {
        let s = svcs
            .create(
                &PostParams::default(),
                &Service {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    spec: Some(ServiceSpec {
                        ports: Some(vec![ServicePort {
                            name: Some("http".into()),
                            protocol: Some("TCP".into()),
                            port: 80,
                            target_port: Some(IntOrString::Int(80)),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        eps.create(
            &PostParams::default(),
            &Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: backend.to_string(),
                        ..Default::default()
                    }]),
                    ports: Some(vec![EndpointPort {
                        name: Some("http".into()),
                        protocol: Some("TCP".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
        cips.push(
            s.spec
                .unwrap()
                .cluster_ip
                .unwrap()
                .parse::<Ipv4Addr>()
                .unwrap(),
        );
    }
    expect(
        "egress through a ClusterIP, judged on the backend",
        &[
            ("x/a", cips[0], "tcp", 80, true),
            ("x/a", cips[1], "tcp", 80, false),
            ("y/b", cips[1], "tcp", 80, true),
        ],
    )
    .await;

    // Everything deleted: open again.
    set_policies(&env, &[]).await;
    expect(
        "policies deleted",
        &[
            ("x/a", zc, "tcp", 80, true),
            ("z/c", yb, "udp", 80, true),
            ("x/a", yb, "tcp", 81, true),
        ],
    )
    .await;
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop(live);
    drop(chassis);
    assert!(!master.log_text().contains("panicked"));
}

/// Count rows of an NB/SB table.
fn count(out: &str) -> usize {
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

/// `make bench`: NS namespaces × PODS pods × 5 policies on 10 nodes (default 100 × 10 × 5).
/// Prints the time from the first policy create until NB holds the final state, the time
/// northd then needs, the ACL / port group / address set / logical flow counts, and the
/// latency of one pod add at that scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_policy_programming() {
    let var = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n_ns, n_pods) = (var("POLICY_BENCH_NS", 100), var("POLICY_BENCH_PODS", 10));
    let env = Env::start("netpolbench").await;
    let args: Vec<String> = env
        .master_args("10.40.0.0/14")
        .into_iter()
        .map(|a| {
            if a.starts_with("-loglevel") {
                "-loglevel=5".into()
            } else {
                a
            }
        })
        .collect();
    let mut master = env.spawn("master", &args);
    master.wait_log("initial policy sync done", WAIT);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node_names: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    for n in &node_names {
        nodes
            .create(
                &PostParams::default(),
                &Node {
                    metadata: ObjectMeta {
                        name: Some(n.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    eventually("node switches", WAIT, || async {
        let sw = env
            .central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap();
        node_names
            .iter()
            .all(|n| sw.lines().any(|l| l.trim() == n))
            .then_some(())
    })
    .await;

    // Namespaces and pods (roles: server, client, other), all plugged before any policy.
    let t0 = Instant::now();
    let nsapi: Api<Namespace> = Api::all(env.client.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut handles = Vec::new();
    for i in 0..n_ns {
        let ns = format!("ns{i:03}");
        nsapi
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        labels: Some([("team".to_string(), format!("t{}", i % 10))].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for j in 0..n_pods {
            let mut p = pod(&ns, &format!("p{j}"), &node_names[(i * n_pods + j) % 10]);
            let role = ["server", "client", "other"][j % 3];
            p.metadata.labels = Some([("role".to_string(), role.to_string())].into());
            let (client, slots) = (env.client.clone(), slots.clone());
            let ns = ns.clone();
            handles.push(tokio::spawn(async move {
                let _s = slots.acquire().await.unwrap();
                Api::<Pod>::namespaced(client, &ns)
                    .create(&PostParams::default(), &p)
                    .await
                    .unwrap();
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let total = n_ns * n_pods;
    eventually("all pods plugged", Duration::from_secs(600), || async {
        let n = count(
            &env.central
                .nbctl(&[
                    "--bare",
                    "--columns=_uuid",
                    "find",
                    "Logical_Switch_Port",
                    "external_ids:pod=true",
                ])
                .unwrap(),
        );
        (n >= total).then_some(())
    })
    .await;
    eprintln!(
        "BENCH policy: {total} pods plugged in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Five policies per namespace.
    let pols = |ns: &str, i: usize| {
        vec![
            np(
                json!({"metadata": {"name": "deny-ingress", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
            ),
            np(
                json!({"metadata": {"name": "clients-to-servers", "namespace": ns},
                "spec": {"podSelector": {"matchLabels": {"role": "server"}}, "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}]}]}}),
            ),
            np(json!({"metadata": {"name": "team-web", "namespace": ns},
                "spec": {"podSelector": {"matchLabels": {"role": "server"}}, "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 10)}}}],
                    "ports": [{"port": "web"}]}]}})),
            np(json!({"metadata": {"name": "monitoring", "namespace": ns},
                "spec": {"podSelector": {}, "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "t0"}},
                              "podSelector": {"matchLabels": {"role": "other"}}}],
                    "ports": [{"port": 9090}]}]}})),
            np(json!({"metadata": {"name": "egress", "namespace": ns},
                "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "server"}}}]},
                        {"to": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.1.0/24"]}}],
                         "ports": [{"port": 53, "protocol": "UDP"}]}]}})),
        ]
    };
    let t1 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n_ns {
        let ns = format!("ns{i:03}");
        for p in pols(&ns, i) {
            let (client, slots, ns) = (env.client.clone(), slots.clone(), ns.clone());
            handles.push(tokio::spawn(async move {
                let _s = slots.acquire().await.unwrap();
                Api::<NetworkPolicy>::namespaced(client, &ns)
                    .create(&PostParams::default(), &p)
                    .await
                    .unwrap();
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let created = t1.elapsed();
    // Final state: 5 policy groups + 2 default-deny groups per namespace, then no change.
    let want_pgs = n_ns * 7;
    let snapshot = || {
        env.central
            .nbctl(&[
                "--bare",
                "--",
                "--columns=ports,acls",
                "list",
                "Port_Group",
                "--",
                "--columns=addresses",
                "list",
                "Address_Set",
            ])
            .unwrap()
    };
    let mut last = String::new();
    let mut last_change = Instant::now();
    loop {
        let pgs = count(
            &env.central
                .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
                .unwrap(),
        );
        let s = snapshot();
        if s != last {
            last = s;
            last_change = Instant::now();
        } else if pgs >= want_pgs && last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "policies not programmed in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let programmed = last_change.duration_since(t1);
    let t2 = Instant::now();
    env.central
        .nbctl(&["--wait=sb", "--timeout=600", "sync"])
        .unwrap();
    let northd = t2.elapsed();
    let acls = count(
        &env.central
            .nbctl(&["--bare", "--columns=_uuid", "list", "ACL"])
            .unwrap(),
    );
    let pgs = count(
        &env.central
            .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
            .unwrap(),
    );
    let sets = count(
        &env.central
            .nbctl(&["--bare", "--columns=name", "list", "Address_Set"])
            .unwrap(),
    );
    let lflows = env
        .central
        .sbctl(&["--columns=_uuid", "list", "Logical_Flow"])
        .unwrap()
        .matches("_uuid")
        .count();

    // One more pod at this scale: time until it is isolated (in its namespace's deny group).
    let t3 = Instant::now();
    let mut p = pod("ns000", "late", &node_names[0]);
    p.metadata.labels = Some([("role".to_string(), "server".to_string())].into());
    Api::<Pod>::namespaced(env.client.clone(), "ns000")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    let deny = ovnkube::ovn::names::hash_name("ns000_ingressDefaultDeny");
    eventually("late pod isolated", Duration::from_secs(120), || async {
        let uuid = env
            .central
            .nbctl(&[
                "--bare",
                "--columns=_uuid",
                "find",
                "Logical_Switch_Port",
                "name=ns000_late",
            ])
            .unwrap();
        let ports = env
            .central
            .nbctl(&[
                "--bare",
                "--columns=ports",
                "find",
                "Port_Group",
                &format!("name={deny}"),
            ])
            .unwrap();
        (!uuid.trim().is_empty() && ports.contains(uuid.trim())).then_some(())
    })
    .await;
    let late = t3.elapsed();
    let log = master.log_text();
    eprintln!(
        "BENCH policy: {} policy NB transactions, {} failed",
        log.matches("policy NB transaction").count(),
        log.matches("policy NB transaction failed").count()
    );
    println!(
        "BENCH policy: {n_ns} namespaces x {n_pods} pods x 5 policies ({} policies, {total} pods, 10 nodes)\n\
         BENCH policy: API creates {:.1}s; NB programmed {:.1}s after the first create; northd +{:.1}s\n\
         BENCH policy: ACLs={acls} port_groups={pgs} address_sets={sets} logical_flows={lflows}\n\
         BENCH policy: one more pod at this scale: created -> isolated {:.2}s",
        n_ns * 5,
        created.as_secs_f64(),
        programmed.as_secs_f64(),
        northd.as_secs_f64(),
        late.as_secs_f64()
    );
    master.terminate();
}
