//! Gateway test bed shared by `tests/gateway.rs`, `tests/gateway_spare.rs`,
//! `tests/restore_node.rs` (and `wipe_nb` by `tests/restore.rs`): the node process with
//! gateway flags, pods wired by hand, a NodePort service, tiny TCP servers and clients run
//! with python3 inside the namespaces the tests create.

#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use ovn_testbed::{Chassis, Outside, TestPod};

use crate::common::{Env, eventually};
use crate::nodebed::{CLUSTER_SUBNET, NodeSide};

pub const OUTSIDE: &str = "172.31.0.100/24";
pub const WAIT: Duration = Duration::from_secs(60);
pub const NODE_PORT: i32 = 30080;

/// The shared-mode gateway flags.
pub const GATEWAY_FLAGS: &[&str] = &["-init-gateways", "-nodeport"];

pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A tiny TCP server answering every connection with `reply` (or the peer's address when
/// `reply` is empty) — http.server would stall on reverse DNS inside a netns.
pub fn server(port: u16, reply: &str) -> String {
    let answer = if reply.is_empty() {
        "a[0].encode()".to_string()
    } else {
        format!("b'{reply}'")
    };
    format!(
        "import socket as S\ns=S.socket()\ns.setsockopt(S.SOL_SOCKET,S.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen()\nwhile True:\n c,a=s.accept()\n try:\n  \
         c.sendall({answer})\n  c.close()\n except OSError:\n  pass\n"
    )
}

pub fn client(ip: &str, port: u16) -> String {
    format!(
        "import socket as S\nc=S.create_connection(('{ip}',{port}),3)\nprint(c.recv(100).decode())\n"
    )
}

/// Polls `f` (which returns stdout) until it prints `want`; `dbg` adds context to a failure
/// (nothing when it returns an empty string).
pub fn until_prints(
    what: &str,
    want: &str,
    dbg: &dyn Fn() -> String,
    mut f: impl FnMut() -> std::process::Output,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = f();
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if out == want {
            return;
        }
        if Instant::now() >= deadline {
            let d = dbg();
            let sep = if d.is_empty() { "" } else { "\n" };
            panic!(
                "{what}: wanted {want:?}, last got {out:?} / {}{sep}{d}",
                String::from_utf8_lossy(&o.stderr),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn sh(ch: &Chassis, argv: &[&str]) -> String {
    let o = ch.run_in_netns(argv).unwrap();
    assert!(o.status.success(), "{argv:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ovn-nbctl args`, trimmed and unquoted. A failure panics unless `lenient`, which reads it
/// as empty output (for tests where the NB goes away).
pub fn nbctl(env: &Env, args: &[&str], lenient: bool) -> String {
    let r = env.central.nbctl(args);
    let out = if lenient {
        r.unwrap_or_default()
    } else {
        r.unwrap()
    };
    out.trim().trim_matches('"').to_string()
}

/// `ovn-nbctl args`, trimmed and unquoted; panics on failure.
pub fn nb(env: &Env, args: &[&str]) -> String {
    nbctl(env, args, false)
}

/// The VIPs of GR_n1's TCP load balancer.
pub fn gr_vips(env: &Env, lenient: bool) -> String {
    nbctl(
        env,
        &[
            "--bare",
            "--columns=vips",
            "find",
            "Load_Balancer",
            "external_ids:TCP_lb_gateway_router=GR_n1",
        ],
        lenient,
    )
}

/// A node process started with `flags` (the gateway flags), in the chassis netns and its own
/// mount namespace (G17); `envs` (`NAME=value`) run it through `env`.
pub fn spawn_node(env: &Env, ns: &NodeSide, encap: &str, envs: &[&str], flags: &[&str]) -> Child {
    let mut argv: Vec<String> = Vec::new();
    if !envs.is_empty() {
        argv.push("env".to_string());
        argv.extend(envs.iter().map(|e| e.to_string()));
    }
    argv.push(env!("CARGO_BIN_EXE_ovnkube").to_string());
    argv.extend(ns.node_args(env, encap));
    argv.extend(flags.iter().map(|f| f.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    ns.chassis.spawn_gateway(&argv).unwrap()
}

pub fn node_log(ns: &NodeSide) -> String {
    std::fs::read_to_string(ns.dir.join("node.log")).unwrap_or_default()
}

/// Waits until the node's log says init finished `n` times.
pub fn wait_init(ns: &NodeSide, child: &mut Child, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = node_log(ns);
        if log.matches("CNI config written").count() >= n {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("node {} exited ({st}):\n{log}", ns.name);
        }
        assert!(
            Instant::now() < deadline,
            "node {} not initialised:\n{log}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM (by PID, unless it already exited), then SIGKILL after 10 s.
pub fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills the node process (by PID) even when an assertion fails.
pub struct NodeProc(pub Child);

impl Drop for NodeProc {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

/// The pod's logical port `default_<name>` on switch `node` (made by the test, as the pod
/// controller would), its MAC derived from `ip`.
pub fn pod_lsp(env: &Env, node: &str, name: &str, ip: std::net::Ipv4Addr) -> (String, String) {
    let mac = ovnkube::ovn::addrs::mac_from_ip(ip);
    let port = format!("default_{name}");
    nb(
        env,
        &[
            "--may-exist",
            "lsp-add",
            node,
            &port,
            "--",
            "lsp-set-addresses",
            &port,
            &format!("{mac} {ip}"),
        ],
    );
    (port, mac)
}

/// A pod made by the test: its logical port (nbctl) and a TestPod wired to it.
pub fn pod(
    env: &Env,
    ch: &Chassis,
    node: &str,
    subnet: &str,
    name: &str,
    idx: u32,
) -> (TestPod, String) {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let ip = std::net::Ipv4Addr::from(base + idx);
    let (port, mac) = pod_lsp(env, node, name, ip);
    let gw = std::net::Ipv4Addr::from(base + 1).to_string();
    let p = TestPod::create(
        ch,
        name,
        &port,
        &mac,
        &format!("{ip}/{}", net.prefix_len()),
        &gw,
    )
    .unwrap();
    (p, ip.to_string())
}

pub fn nodeport_service() -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                node_port: Some(NODE_PORT),
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn endpoints(ip: &str) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: ip.into(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    }
}

/// Creates the NodePort service `default/web` and its endpoints (the pod at `ip`).
pub async fn create_nodeport(env: &Env, ip: &str) {
    Api::<Service>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &nodeport_service())
        .await
        .unwrap();
    Api::<Endpoints>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &endpoints(ip))
        .await
        .unwrap();
}

/// Stop the NB server, replace its database with an empty one, start it again; `is_empty`
/// checks that the NB is empty now.
pub fn wipe_nb(env: &mut Env, is_empty: impl FnOnce(&Env) -> bool) {
    env.central.stop_nb();
    let db = env.central.dir().join("ovnnb_db.db");
    std::fs::remove_file(&db).unwrap();
    let ok = Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg("/usr/share/ovn/ovn-nb.ovsschema")
        .status()
        .unwrap();
    assert!(ok.success());
    env.central.start_nb().unwrap();
    assert!(is_empty(env), "the NB must be empty now");
}

/// Polls until pod `p` reaches the outside echo server (172.31.0.100:9000) which sees it as
/// `want` (its node's IP: SNAT).
pub fn egress(what: &str, want: &str, dbg: &dyn Fn() -> String, p: &TestPod) {
    until_prints(what, want, dbg, || {
        p.exec(&["python3", "-c", &client("172.31.0.100", 9000)])
            .unwrap()
    });
}

/// Waits until n1's NodePort VIP (172.31.0.1) is on GR_n1's load balancer.
pub async fn wait_nodeport_vip(env: &Env) {
    eventually(
        "the NodePort VIP on GR_n1's load balancer",
        WAIT,
        || async {
            let v = gr_vips(env, false);
            v.contains(&format!("172.31.0.1:{NODE_PORT}")).then_some(())
        },
    )
    .await;
}

/// Polls until the outside reaches pod p2's server through n1's NodePort.
pub fn nodeport_ingress(out: &Outside, dbg: &dyn Fn() -> String) {
    until_prints("outside -> n1:NodePort", "hello from p2", dbg, || {
        out.exec(&["python3", "-c", &client("172.31.0.1", NODE_PORT as u16)])
            .unwrap()
    });
}

/// `ovn-nbctl args` with a failure read as empty output (the NB may be away).
fn lenient(env: &Env, args: &[&str]) -> String {
    nbctl(env, args, true)
}

/// What must be in the NB for node n1 (master's and node's objects); `Err` says what is not.
pub fn node_objects_ok(
    env: &Env,
    node_ip: &str,
    subnet: &str,
    mgmt: &str,
) -> Result<String, String> {
    let gr = "GR_n1";
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    // The master's.
    let sw = lenient(env, &["get", "Logical_Switch", "n1", "other_config:subnet"]);
    check(sw == subnet, format!("switch n1 subnet {sw:?}"))?;
    let rtos = lenient(env, &["get", "Logical_Router_Port", "rtos-n1", "networks"]);
    check(!rtos.is_empty(), "rtos-n1".into())?;
    // The node's: the management port's LSP with its address, on the node switch.
    let a = lenient(env, &["get", "Logical_Switch_Port", "k8s-n1", "addresses"]);
    check(a.contains(mgmt), format!("k8s-n1 addresses {a:?}"))?;
    let ports = lenient(env, &["lsp-list", "n1"]);
    check(ports.contains("(k8s-n1)"), format!("n1 ports {ports:?}"))?;
    // The gateway router, its join port and the address derived from it.
    let chassis = lenient(env, &["get", "Logical_Router", gr, "options:chassis"]);
    check(chassis == "n1", format!("{gr} chassis {chassis:?}"))?;
    let j = lenient(
        env,
        &["get", "Logical_Router_Port", "rtoj-GR_n1", "networks"],
    );
    let join = j
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    check(
        join.starts_with("100.64."),
        format!("rtoj-{gr} networks {j:?}"),
    )?;
    let jtor = lenient(env, &["get", "Logical_Switch_Port", "jtor-GR_n1", "type"]);
    check(jtor == "router", format!("jtor-{gr} type {jtor:?}"))?;
    let snat_ip = lenient(
        env,
        &["get", "Logical_Router", gr, "options:lb_force_snat_ip"],
    );
    check(
        snat_ip == join,
        format!("lb_force_snat_ip {snat_ip:?} join {join}"),
    )?;
    let routes = lenient(env, &["lr-route-list", gr]);
    check(
        routes.contains(CLUSTER_SUBNET) && routes.contains("0.0.0.0/0"),
        format!("{gr} routes {routes}"),
    )?;
    let nat = lenient(env, &["lr-nat-list", gr]);
    check(
        nat.contains(node_ip) && nat.contains(CLUSTER_SUBNET),
        format!("{gr} NAT {nat}"),
    )?;
    let attached = lenient(env, &["get", "Logical_Router", gr, "load_balancer"]);
    for p in ["TCP", "UDP"] {
        let uuid = nb(
            env,
            &[
                "--bare",
                "--columns=_uuid",
                "find",
                "Load_Balancer",
                &format!("external_ids:{p}_lb_gateway_router={gr}"),
            ],
        );
        check(
            !uuid.is_empty() && attached.contains(&uuid),
            format!("{p} LB {uuid:?} on {gr}: {attached}"),
        )?;
    }
    let ext = lenient(env, &["lsp-list", "ext_n1"]);
    check(
        ext.contains("breth1_n1") && ext.contains("etor-GR_n1"),
        format!("ext_n1 ports {ext:?}"),
    )?;
    let ln = lenient(env, &["get", "Logical_Switch_Port", "breth1_n1", "type"]);
    check(ln == "localnet", format!("breth1_n1 type {ln:?}"))?;
    // The cluster router's routes of this node follow the join address.
    let cr = lenient(
        env,
        &[
            "--bare",
            "--columns=nexthop",
            "find",
            "Logical_Router_Static_Route",
            "external_ids:k8s-node=n1",
        ],
    );
    let hops: Vec<&str> = cr.split_whitespace().collect();
    check(
        hops.len() == 2 && hops.iter().all(|h| *h == join),
        format!("cluster-router routes of n1: {hops:?} (join {join})"),
    )?;
    Ok(join)
}
