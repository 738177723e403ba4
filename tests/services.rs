//! Services end to end: the real binary (`-init-master -net-controller -nodeport`), real
//! NB/SB/northd, `ovn-trace` verdicts, and a TCP connection to a ClusterIP on the userspace
//! OVS dataplane.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use ovnkube::ovn::addrs::mac_from_ip;
use ovnkube::ovn::ovsdb::parse_tables;

const WAIT: Duration = Duration::from_secs(30);

struct PodAddr {
    port: String,
    switch: String,
    ip: std::net::Ipv4Addr,
    mac: String,
    gw: std::net::Ipv4Addr,
    len: u8,
}

/// A logical port for a "pod" made by the test (the pods controller is not involved here), at
/// host index `idx` of the node's subnet.
fn add_port(env: &Env, node: &str, subnet: &str, name: &str, idx: u32) -> PodAddr {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let ip = std::net::Ipv4Addr::from(base + idx);
    let mac = mac_from_ip(ip);
    let port = format!("default_{name}");
    env.central
        .nbctl(&[
            "--",
            "lsp-add",
            node,
            &port,
            "--",
            "lsp-set-addresses",
            &port,
            &format!("{mac} {ip}"),
        ])
        .unwrap();
    PodAddr {
        port,
        switch: node.into(),
        ip,
        mac,
        gw: std::net::Ipv4Addr::from(base + 1),
        len: net.prefix_len(),
    }
}

async fn nodes_ready(env: &Env, names: &[&str]) -> BTreeMap<String, String> {
    let api: Api<Node> = Api::all(env.client.clone());
    for n in names {
        api.create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some((*n).into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    eventually("node subnets and switches", WAIT, || async {
        let subs: BTreeMap<String, String> = api
            .list(&ListParams::default())
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
            .collect();
        let sw = env
            .central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .unwrap();
        (names
            .iter()
            .all(|n| subs.contains_key(*n) && sw.lines().any(|l| l.trim() == *n)))
        .then_some(subs)
    })
    .await
}

fn service(name: &str, ty: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sport(name: &str, proto: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

fn endpoints(name: &str, ips: &[std::net::Ipv4Addr], ports: &[(&str, &str, i32)]) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ips.iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, port)| EndpointPort {
                        name: Some((*n).into()),
                        protocol: Some((*p).into()),
                        port: *port,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }]),
    }
}

/// All VIPs of all load balancers: vip → backends.
fn all_vips(env: &Env) -> BTreeMap<String, String> {
    let out = env
        .central
        .nbctl(&["--format=json", "list", "Load_Balancer"])
        .unwrap();
    parse_tables(&out)
        .unwrap()
        .remove(0)
        .into_iter()
        .flat_map(|r| r.map("vips"))
        .collect()
}

/// ovn-trace of a new connection from `from` to `vip:port`; returns the trace text.
fn trace_to(env: &Env, from: &PodAddr, dst: &str, proto: &str, port: u16) -> String {
    let l4 = if proto == "tcp" {
        format!("tcp && tcp.src==33333 && tcp.dst=={port} && tcp.flags==2")
    } else {
        format!("udp && udp.src==33333 && udp.dst=={port}")
    };
    let flow = format!(
        "inport==\"{}\" && eth.src=={} && eth.dst=={} && ip4.src=={} && ip4.dst=={dst} && ip.ttl==64 && {l4}",
        from.port,
        from.mac,
        mac_from_ip(from.gw),
        from.ip
    );
    env.central
        .trace(&from.switch, &flow, &["--ct=new"])
        .unwrap()
}

async fn wait_vip(env: &Env, vip: &str, backends: Option<&str>) {
    eventually(&format!("VIP {vip} -> {backends:?}"), WAIT, || async {
        let v = all_vips(env);
        (v.get(vip).map(String::as_str) == backends).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_nodeport_endpoint_changes_and_restart_sync() {
    let env = Env::start("svc").await;
    let mut master = env.spawn("master", &env.master_args("10.20.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let subs = nodes_ready(&env, &["n1", "n2"]).await;
    let a = add_port(&env, "n1", &subs["n1"], "a", 5);
    let b = add_port(&env, "n2", &subs["n2"], "b", 5);
    let c = add_port(&env, "n1", &subs["n1"], "c", 6);

    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    let web = svcs
        .create(
            &PostParams::default(),
            &service(
                "web",
                "ClusterIP",
                vec![
                    sport("http", "TCP", 80, 8080),
                    sport("dns", "UDP", 53, 5353),
                ],
            ),
        )
        .await
        .unwrap();
    let cip = web.spec.unwrap().cluster_ip.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints(
            "web",
            &[b.ip],
            &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
        ),
    )
    .await
    .unwrap();
    wait_vip(&env, &format!("{cip}:80"), Some(&format!("{}:8080", b.ip))).await;
    wait_vip(&env, &format!("{cip}:53"), Some(&format!("{}:5353", b.ip))).await;

    // ovn-trace from pod a to the ClusterIP: load-balanced to b's endpoint, TCP and UDP.
    let t = trace_to(&env, &a, &cip, "tcp", 80);
    assert!(
        t.contains(&format!("ct_lb_mark(backends={}:8080)", b.ip)),
        "{t}"
    );
    let t = trace_to(&env, &a, &cip, "udp", 53);
    assert!(
        t.contains(&format!("ct_lb_mark(backends={}:5353)", b.ip)),
        "{t}"
    );

    // Endpoint change: only the new endpoint remains.
    let mut e = eps.get("web").await.unwrap();
    e.subsets = endpoints(
        "web",
        &[c.ip],
        &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
    )
    .subsets;
    eps.replace("web", &PostParams::default(), &e)
        .await
        .unwrap();
    wait_vip(&env, &format!("{cip}:80"), Some(&format!("{}:8080", c.ip))).await;
    let t = trace_to(&env, &a, &cip, "tcp", 80);
    assert!(
        t.contains(&format!("ct_lb_mark(backends={}:8080)", c.ip)),
        "{t}"
    );
    assert!(!t.contains(&b.ip.to_string()), "{t}");

    // NodePort on a gateway router (as a node's gateway init makes it) created after the service.
    let np = svcs
        .create(
            &PostParams::default(),
            &service("np", "NodePort", vec![sport("http", "TCP", 8800, 8080)]),
        )
        .await
        .unwrap();
    let node_port = np.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints("np", &[b.ip, c.ip], &[("http", "TCP", 8080)]),
    )
    .await
    .unwrap();
    env.central
        .nbctl(&[
            "--",
            "lr-add",
            "GR_n1",
            "--",
            "set",
            "Logical_Router",
            "GR_n1",
            "external_ids:physical_ip=172.30.0.1",
            "--",
            "create",
            "Load_Balancer",
            "external_ids:TCP_lb_gateway_router=GR_n1",
            "protocol=tcp",
        ])
        .unwrap();
    let both = {
        let mut v = [b.ip.to_string(), c.ip.to_string()];
        v.sort();
        format!("{}:8080,{}:8080", v[0], v[1])
    };
    wait_vip(&env, &format!("172.30.0.1:{node_port}"), Some(&both)).await;

    // Deleting the endpoints removes the VIP; deleting the service too.
    eps.delete("np", &DeleteParams::default()).await.unwrap();
    wait_vip(&env, &format!("172.30.0.1:{node_port}"), None).await;
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    wait_vip(&env, &format!("{cip}:80"), None).await;
    let t = trace_to(&env, &a, &cip, "tcp", 80);
    assert!(!t.contains("ct_lb_mark(backends="), "{t}");

    // Restart sync: a service deleted while the controller is down loses its VIPs, others stay.
    let keep = svcs
        .create(
            &PostParams::default(),
            &service("keep", "ClusterIP", vec![sport("http", "TCP", 81, 8080)]),
        )
        .await
        .unwrap();
    let keep_ip = keep.spec.unwrap().cluster_ip.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints("keep", &[b.ip], &[("http", "TCP", 8080)]),
    )
    .await
    .unwrap();
    let gone = svcs
        .create(
            &PostParams::default(),
            &service("gone", "ClusterIP", vec![sport("http", "TCP", 82, 8080)]),
        )
        .await
        .unwrap();
    let gone_ip = gone.spec.unwrap().cluster_ip.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints("gone", &[b.ip], &[("http", "TCP", 8080)]),
    )
    .await
    .unwrap();
    wait_vip(
        &env,
        &format!("{keep_ip}:81"),
        Some(&format!("{}:8080", b.ip)),
    )
    .await;
    wait_vip(
        &env,
        &format!("{gone_ip}:82"),
        Some(&format!("{}:8080", b.ip)),
    )
    .await;
    master.terminate();
    svcs.delete("gone", &DeleteParams::default()).await.unwrap();
    let before = all_vips(&env);
    let mut master = env.spawn("master2", &env.master_args("10.20.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let after = all_vips(&env);
    let mut expected = before.clone();
    expected.remove(&format!("{gone_ip}:82"));
    assert_eq!(after, expected, "only the deleted service's VIPs go");
    assert!(
        master.log_text().contains("stale_removed=1"),
        "{}",
        master.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_logged_and_the_rest_is_programmed() {
    let env = Env::start("svcbad").await;
    let mut master = env.spawn("master", &env.master_args("10.21.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    let s = svcs
        .create(
            &PostParams::default(),
            &service(
                "mixed",
                "ClusterIP",
                vec![sport("ok", "TCP", 80, 80), sport("odd", "TCP", 81, 81)],
            ),
        )
        .await
        .unwrap();
    let cip = s.spec.unwrap().cluster_ip.unwrap();
    let mut e = endpoints(
        "mixed",
        &["10.21.1.5".parse().unwrap()],
        &[("ok", "TCP", 80)],
    );
    e.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()
        .push(EndpointAddress {
            ip: "banana".into(),
            ..Default::default()
        });
    eps.create(&PostParams::default(), &e).await.unwrap();
    wait_vip(&env, &format!("{cip}:80"), Some("10.21.1.5:80")).await;
    master.wait_log(
        "service default/mixed: endpoint address \"banana\" is not an IPv4 address",
        WAIT,
    );
    master.wait_log(
        "service default/mixed: port \"odd\" (81) (TCP) matches no endpoint port",
        WAIT,
    );
    // Headless services get nothing and no error.
    let mut h = service("headless", "ClusterIP", vec![sport("ok", "TCP", 80, 80)]);
    h.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    svcs.create(&PostParams::default(), &h).await.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints(
            "headless",
            &["10.21.1.6".parse().unwrap()],
            &[("ok", "TCP", 80)],
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !all_vips(&env).keys().any(|k| k.starts_with("None")),
        "{:?}",
        all_vips(&env)
    );
    assert!(
        !master.log_text().contains("default/headless"),
        "{}",
        master.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_a_cluster_ip_on_the_userspace_dataplane() {
    let env = Env::start("svcdp").await;
    let mut master = env.spawn("master", &env.master_args("10.22.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let subs = nodes_ready(&env, &["n1", "n2"]).await;
    let a = add_port(&env, "n1", &subs["n1"], "client", 5);
    let b = add_port(&env, "n2", &subs["n2"], "server", 5);
    let chassis = ovn_testbed::Chassis::start(&env.central, "ch1", Default::default()).unwrap();
    let cidr = |p: &PodAddr| format!("{}/{}", p.ip, p.len);
    let pa = ovn_testbed::TestPod::create(
        &chassis,
        "client",
        &a.port,
        &a.mac,
        &cidr(&a),
        &a.gw.to_string(),
    )
    .unwrap();
    let pb = ovn_testbed::TestPod::create(
        &chassis,
        "server",
        &b.port,
        &b.mac,
        &cidr(&b),
        &b.gw.to_string(),
    )
    .unwrap();
    let mut server = pb
        .spawn(&["python3", "-c", "import http.server as h, socketserver as s\nclass H(h.BaseHTTPRequestHandler):\n def do_GET(self):\n  self.send_response(200); self.end_headers(); self.wfile.write(b'hello from server')\n def log_message(self,*a): pass\ns.TCPServer(('0.0.0.0', 8080), H).serve_forever()"])
        .unwrap();

    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    let s = svcs
        .create(
            &PostParams::default(),
            &service("web", "ClusterIP", vec![sport("http", "TCP", 80, 8080)]),
        )
        .await
        .unwrap();
    let cip = s.spec.unwrap().cluster_ip.unwrap();
    eps.create(
        &PostParams::default(),
        &endpoints("web", &[b.ip], &[("http", "TCP", 8080)]),
    )
    .await
    .unwrap();
    wait_vip(&env, &format!("{cip}:80"), Some(&format!("{}:8080", b.ip))).await;
    env.central
        .nbctl(&["--wait=hv", "--timeout=20", "sync"])
        .unwrap();

    let url = format!("http://{cip}:80/");
    let body = eventually("HTTP answer through the ClusterIP", WAIT, || async {
        let out = pa
            .exec(&["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('{url}',timeout=3).read().decode())")])
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        s.contains("hello from server").then_some(s)
    })
    .await;
    assert!(body.contains("hello from server"));
    let _ = server.kill();
    let _ = server.wait();
}
