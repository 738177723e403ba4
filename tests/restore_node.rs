//! The node's own NB objects after the NB is lost: a running `ovnkube -init-node
//! -init-gateways -nodeport` (which stays alive) puts back the management port's logical port
//! and its gateway (`GR_<node>`, join port, `ext_<node>`, routes, NAT, load balancers) once the
//! restarted master has rebuilt the node switch — without a node restart. And a healthy node
//! makes no NB transaction at all while it re-checks.
//!
//! The node runs with `OVNKUBE_NB_BACKEND=exec`, so every NB transaction it makes is an
//! `ovn-nbctl` command in its debug log (reads are `--format=json`), which the test counts.

mod common;
mod nodebed;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts, Outside, TestPod};

const OUTSIDE: &str = "172.31.0.100/24";
const NODE_IP: &str = "172.31.0.1";
const WAIT: Duration = Duration::from_secs(60);
const REPAIR: Duration = Duration::from_secs(40);
const NODE_PORT: i32 = 30080;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn nb(env: &Env, args: &[&str]) -> String {
    env.central
        .nbctl(args)
        .unwrap_or_default()
        .trim()
        .trim_matches('"')
        .to_string()
}

fn node_log(ns: &NodeSide) -> String {
    std::fs::read_to_string(ns.dir.join("node.log")).unwrap_or_default()
}

/// The NB transactions the node made so far (`ovn-nbctl` runs that are not reads).
fn nb_writes(ns: &NodeSide) -> Vec<String> {
    node_log(ns)
        .lines()
        .filter(|l| l.contains("cmd=ovn-nbctl") && !l.contains("--format=json"))
        .filter(|l| !l.contains("exec failed"))
        .map(str::to_string)
        .collect()
}

fn stop(child: &mut Child) {
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
struct NodeProc(Child);

impl Drop for NodeProc {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

/// Stop the NB server, replace its database with an empty one, start it again.
fn wipe_nb(env: &mut Env) {
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
    assert!(
        nb(env, &["--bare", "--columns=name", "list", "Logical_Switch"]).is_empty(),
        "the NB must be empty now"
    );
}

fn server(port: u16, reply: &str) -> String {
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

fn client(ip: &str, port: u16) -> String {
    format!(
        "import socket as S\nc=S.create_connection(('{ip}',{port}),3)\nprint(c.recv(100).decode())\n"
    )
}

fn until_prints(what: &str, want: &str, mut f: impl FnMut() -> std::process::Output) {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = f();
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if out == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: wanted {want:?}, last got {out:?} / {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn gr_vips(env: &Env) -> String {
    nb(
        env,
        &[
            "--bare",
            "--columns=vips",
            "find",
            "Load_Balancer",
            "external_ids:TCP_lb_gateway_router=GR_n1",
        ],
    )
}

/// The pod's logical port (made by the test, as the pod controller would).
fn pod_lsp(env: &Env, node: &str, port: &str, mac: &str, ip: &str) {
    nb(
        env,
        &[
            "--may-exist",
            "lsp-add",
            node,
            port,
            "--",
            "lsp-set-addresses",
            port,
            &format!("{mac} {ip}"),
        ],
    );
}

/// What must be in the NB for node n1 (master's and node's objects); `Err` says what is not.
fn node_objects_ok(env: &Env, subnet: &str, mgmt: &str) -> Result<String, String> {
    let gr = "GR_n1";
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    // The master's.
    let sw = nb(env, &["get", "Logical_Switch", "n1", "other_config:subnet"]);
    check(sw == subnet, format!("switch n1 subnet {sw:?}"))?;
    let rtos = nb(env, &["get", "Logical_Router_Port", "rtos-n1", "networks"]);
    check(!rtos.is_empty(), "rtos-n1".into())?;
    // The node's: the management port's LSP with its address, on the node switch.
    let a = nb(env, &["get", "Logical_Switch_Port", "k8s-n1", "addresses"]);
    check(a.contains(mgmt), format!("k8s-n1 addresses {a:?}"))?;
    let ports = nb(env, &["lsp-list", "n1"]);
    check(ports.contains("(k8s-n1)"), format!("n1 ports {ports:?}"))?;
    // The gateway router, its join port and the address derived from it.
    let chassis = nb(env, &["get", "Logical_Router", gr, "options:chassis"]);
    check(chassis == "n1", format!("{gr} chassis {chassis:?}"))?;
    let j = nb(
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
    let jtor = nb(env, &["get", "Logical_Switch_Port", "jtor-GR_n1", "type"]);
    check(jtor == "router", format!("jtor-{gr} type {jtor:?}"))?;
    let snat_ip = nb(
        env,
        &["get", "Logical_Router", gr, "options:lb_force_snat_ip"],
    );
    check(
        snat_ip == join,
        format!("lb_force_snat_ip {snat_ip:?} join {join}"),
    )?;
    let routes = nb(env, &["lr-route-list", gr]);
    check(
        routes.contains(CLUSTER_SUBNET) && routes.contains("0.0.0.0/0"),
        format!("{gr} routes {routes}"),
    )?;
    let nat = nb(env, &["lr-nat-list", gr]);
    check(
        nat.contains(NODE_IP) && nat.contains(CLUSTER_SUBNET),
        format!("{gr} NAT {nat}"),
    )?;
    let attached = nb(env, &["get", "Logical_Router", gr, "load_balancer"]);
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
    let ext = nb(env, &["lsp-list", "ext_n1"]);
    check(
        ext.contains("breth1_n1") && ext.contains("etor-GR_n1"),
        format!("ext_n1 ports {ext:?}"),
    )?;
    let ln = nb(env, &["get", "Logical_Switch_Port", "breth1_n1", "type"]);
    check(ln == "localnet", format!("breth1_n1 type {ln:?}"))?;
    // The cluster router's routes of this node follow the join address.
    let cr = nb(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_rebuilds_its_nb_objects_after_the_nb_is_lost() {
    let t0 = Instant::now();
    let mut env = Env::start("restore-node").await;
    let args = env.master_args(CLUSTER_SUBNET);
    let mut master = env.spawn("master", &args);
    master.wait_log("initial service sync done", WAIT);
    create_node(&env, "n1").await;
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ch, "eth1", &format!("{NODE_IP}/24"), true)
        .unwrap();
    let n1 = NodeSide::new(&env, ch);
    let mut argv = vec![
        "env".to_string(),
        "OVNKUBE_NB_BACKEND=exec".to_string(),
        env!("CARGO_BIN_EXE_ovnkube").to_string(),
    ];
    argv.extend(n1.node_args(&env, "127.0.0.1"));
    argv.extend(["-init-gateways".to_string(), "-nodeport".to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut node = NodeProc(n1.chassis.spawn_gateway(&argv).unwrap());
    blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !node_log(&n1).contains("CNI config written") {
            if let Ok(Some(st)) = node.0.try_wait() {
                panic!("node exited ({st}):\n{}", node_log(&n1));
            }
            assert!(Instant::now() < deadline, "node not up:\n{}", node_log(&n1));
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    eprintln!("gateway up after {:?}", t0.elapsed());

    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let mgmt_ip = std::net::Ipv4Addr::from(base + 2);
    let mgmt = format!("{} {mgmt_ip}", ovnkube::ovn::addrs::mac_from_ip(mgmt_ip));
    let join_before = eventually("the node's objects", WAIT, || async {
        node_objects_ok(&env, &subnet, &mgmt).ok()
    })
    .await;

    // A pod with SNAT egress, and a NodePort service backed by it.
    let pod_ip = std::net::Ipv4Addr::from(base + 10);
    let pod_mac = ovnkube::ovn::addrs::mac_from_ip(pod_ip);
    pod_lsp(&env, "n1", "default_p1", &pod_mac, &pod_ip.to_string());
    let gw = std::net::Ipv4Addr::from(base + 1).to_string();
    let p1 = TestPod::create(
        &n1.chassis,
        "p1",
        "default_p1",
        &pod_mac,
        &format!("{pod_ip}/{}", net.prefix_len()),
        &gw,
    )
    .unwrap();
    let mut echo = out.spawn(&["python3", "-c", &server(9000, "")]).unwrap();
    let egress = |what: &str| {
        until_prints(what, NODE_IP, || {
            p1.exec(&["python3", "-c", &client("172.31.0.100", 9000)])
                .unwrap()
        })
    };
    blocking(|| egress("pod p1 -> outside (SNAT)"));
    let svc = Service {
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
    };
    let eps = Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: pod_ip.to_string(),
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
    };
    Api::<Service>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    Api::<Endpoints>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &eps)
        .await
        .unwrap();
    let vip = format!("{NODE_IP}:{NODE_PORT}");
    eventually("the NodePort VIP on GR_n1", WAIT, || async {
        gr_vips(&env).contains(&vip).then_some(())
    })
    .await;

    // Nothing broken: the node re-checks (reads) but writes nothing, over 20 s.
    let writes = nb_writes(&n1);
    // The filter sees the init's own transactions (so it would see a re-check's).
    assert!(
        writes
            .iter()
            .any(|w| w.contains("lsp-add") && w.contains("k8s-n1")),
        "{writes:#?}"
    );
    let reads = |log: &str| log.matches("k8s-n1").count();
    let (reads0, dump0) = (reads(&node_log(&n1)), env.nb_dump());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = node_log(&n1);
    let new_writes: Vec<_> = nb_writes(&n1).into_iter().skip(writes.len()).collect();
    assert!(
        new_writes.is_empty(),
        "a healthy node wrote to the NB: {new_writes:#?}"
    );
    assert!(
        reads(&log) > reads0,
        "the node did not re-check its objects in 20 s:\n{log}"
    );
    assert_eq!(
        dump0,
        env.nb_dump(),
        "the NB changed while nothing was broken"
    );
    assert!(!log.contains("repaired"), "{log}");
    eprintln!("quiet window OK after {:?}", t0.elapsed());

    // The NB is lost while the master is down; only the master is restarted.
    assert_eq!(master.terminate().code(), Some(0));
    wipe_nb(&mut env);
    let lost = Instant::now();
    let mut master = env.spawn("master2", &args);
    master.wait_log("initial service sync done", WAIT);
    let join_after = eventually("master's and node's objects back", REPAIR, || async {
        node_objects_ok(&env, &subnet, &mgmt).ok()
    })
    .await;
    eprintln!(
        "rebuilt {:?} after the wipe (join {join_before} -> {join_after})",
        lost.elapsed()
    );
    let log = node_log(&n1);
    assert!(log.contains("repaired gateway router GR_n1"), "{log}");
    assert!(log.contains("repaired the management port"), "{log}");
    assert!(
        matches!(node.0.try_wait(), Ok(None)),
        "the node process must keep running"
    );

    // The paths work again: the service controller refills the gateway's LB; the pod's own
    // port (the pod controller's job, made by hand here) put back, SNAT egress works.
    eventually("the NodePort VIP back on GR_n1", WAIT, || async {
        gr_vips(&env).contains(&vip).then_some(())
    })
    .await;
    pod_lsp(&env, "n1", "default_p1", &pod_mac, &pod_ip.to_string());
    blocking(|| egress("pod p1 -> outside (SNAT) after the rebuild"));

    // Someone deletes the join port while its address is taken: the node asks OVN IPAM
    // again, and everything derived from the join address follows the new one.
    nb(
        &env,
        &[
            "lrp-del",
            "rtoj-GR_n1",
            "--",
            "lsp-del",
            "jtor-GR_n1",
            "--",
            "lsp-add",
            "join",
            "squatter",
            "--",
            "lsp-set-addresses",
            "squatter",
            &format!("0a:58:00:00:00:01 {join_after}"),
        ],
    );
    let join_new = eventually(
        "the gateway back with a new join address",
        REPAIR,
        || async {
            node_objects_ok(&env, &subnet, &mgmt)
                .ok()
                .filter(|j| *j != join_after)
        },
    )
    .await;
    eprintln!("join port re-created: {join_after} -> {join_new}");
    blocking(|| egress("pod p1 -> outside (SNAT) after the new join address"));

    // Respects SIGTERM.
    let _ = Command::new("kill").arg(node.0.id().to_string()).status();
    let st = blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = node.0.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(st.is_some(), "the node did not stop on SIGTERM");
    let _ = echo.kill();
    let _ = echo.wait();
    drop(master);
    eprintln!("restore-node test done in {:?}", t0.elapsed());
}
