//! `ovnkube -init-node` and the CNI plugin end to end on the OVS userspace test bed: the
//! real master (node switch), the real node init and plugin inside the chassis netns, pods as
//! network namespaces, traffic checked with ping and TCP.

mod common;
mod nodebed;

use std::time::{Duration, Instant};

use common::Env;
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts, two_chassis};
use serde_json::Value;

const INIT_TIMEOUT: Duration = Duration::from_secs(90);
const PING_TIMEOUT: Duration = Duration::from_secs(30);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    // The API stand-in runs on this runtime: keep its other worker free.
    tokio::task::block_in_place(f)
}

fn add(ns: &NodeSide, pod: &PodNs, version: &str) -> Value {
    let (path, args) = (pod.netns_path(), pod.cni_args());
    let conf = conf_with(&ns.cni_conf(), version, &[]);
    let (st, out, err) = blocking(|| ns.cni(&vars("ADD", pod, &path, &args), &conf));
    assert!(st.success(), "ADD {} failed: {out}\n{err}", pod.name);
    out
}

fn mgmt_ip(subnet: &str) -> String {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(net.network()) + 2).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_node_then_two_pods_talk_and_check_del() {
    let t0 = Instant::now();
    let env = Env::start("node-single").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let (st, log) = blocking(|| ns.init_node(&ns.node_args(&env, "127.0.0.1"), &[], INIT_TIMEOUT));
    assert!(st.success(), "node init failed ({st}):\n{log}");
    assert!(
        log.contains("ready for ovn initialization with subnet"),
        "{log}"
    );
    eprintln!("node init done after {:?}", t0.elapsed());

    // 1. external_ids, read back.
    let ids = ns
        .chassis
        .vsctl(&["get", "Open_vSwitch", ".", "external_ids"])
        .unwrap();
    for want in [
        "ovn-encap-ip=\"127.0.0.1\"".to_string(),
        "ovn-encap-type=geneve".to_string(),
        format!("ovn-remote=\"unix:{}\"", env.central.sb_sock().display()),
        format!("ovn-nb=\"unix:{}\"", env.central.nb_sock().display()),
        format!("k8s-api-server=\"{}\"", ns.fwd.http_url()),
        "system-id=n1".to_string(),
    ] {
        assert!(ids.contains(&want), "{want} not in {ids}");
    }
    assert!(!ids.contains("k8s-api-token"), "no token was given: {ids}");

    // 2. management port: MAC, address, routes in the chassis netns; its logical port.
    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let mgmt = mgmt_ip(&subnet);
    let gw = std::net::Ipv4Addr::from(u32::from(net.network()) + 1).to_string();
    let mac = ovnkube::ovn::addrs::mac_from_ip(mgmt.parse().unwrap());
    let sh = |argv: &[&str]| {
        let o = ns.chassis.run_in_netns(argv).unwrap();
        assert!(o.status.success(), "{argv:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let link = sh(&["ip", "-o", "link", "show", "dev", "k8s-n1"]);
    assert!(link.contains(&mac), "{link}");
    assert!(link.contains("UP"), "{link}");
    let addr = sh(&["ip", "-o", "-4", "addr", "show", "dev", "k8s-n1"]);
    assert!(addr.contains(&format!("{mgmt}/24")), "{addr}");
    let routes = sh(&["ip", "-4", "route", "show"]);
    for dst in [CLUSTER_SUBNET, SERVICE_CIDR] {
        assert!(
            routes.contains(&format!("{dst} via {gw} dev k8s-n1")),
            "{dst}: {routes}"
        );
    }
    let lsp = env
        .central
        .nbctl(&["get", "Logical_Switch_Port", "k8s-n1", "addresses"])
        .unwrap();
    assert!(lsp.contains(&format!("{mac} {mgmt}")), "{lsp}");
    let iface = ns
        .chassis
        .vsctl(&[
            "get",
            "Interface",
            "k8s-n1",
            "external_ids:iface-id",
            "type",
        ])
        .unwrap();
    assert!(
        iface.contains("k8s-n1") && iface.contains("internal"),
        "{iface}"
    );

    // 3. CNI config.
    let conf = ns.cni_conf();
    assert_eq!(conf["cniVersion"], "1.1.0");
    assert_eq!(conf["name"], "ovn-kubernetes");
    assert_eq!(conf["type"], "ovn-k8s-cni-overlay");
    assert_eq!(conf["mtu"], 1400);

    // Re-running the node init is harmless (idempotent); a token given is stored for the
    // CNI plugin but never logged, even at debug level.
    let mut args = ns.node_args(&env, "127.0.0.1");
    args.push("-k8s-token=tok-s3cret".into());
    let (st, log) = blocking(|| ns.init_node(&args, &[], INIT_TIMEOUT));
    assert!(st.success(), "second node init failed:\n{log}");
    assert!(!log.contains("tok-s3cret"), "token logged:\n{log}");
    let tok = ns
        .chassis
        .vsctl(&["get", "Open_vSwitch", ".", "external_ids:k8s-api-token"])
        .unwrap();
    assert_eq!(tok.trim(), "tok-s3cret");

    eprintln!("node checks done after {:?}", t0.elapsed());
    // 4. Two pods via ADD; a retried ADD (same container id) gives the same result.
    let a = PodNs::create(&env, "n1", &subnet, "pa", 10).await;
    let mut b = PodNs::create(&env, "n1", &subnet, "pb", 11).await;
    let ra = add(&ns, &a, "1.1.0");
    assert_eq!(ra["ips"][0]["address"], a.cidr.as_str());
    let rb = add(&ns, &b, "1.1.0");
    let rb2 = add(&ns, &b, "1.1.0");
    assert_eq!(rb["ips"], rb2["ips"]);
    let host_b = rb["interfaces"][0]["name"].as_str().unwrap().to_string();
    let port = ns
        .chassis
        .vsctl(&["get", "Interface", &host_b, "external_ids"])
        .unwrap();
    for want in [
        "iface-id=default_pb".to_string(),
        format!("attached_mac=\"{}\"", b.mac),
        format!("ip_address=\"{}\"", b.cidr),
        format!("sandbox={}", b.container_id),
    ] {
        assert!(port.contains(&want), "{want} not in {port}");
    }
    let t1 = Instant::now();
    blocking(|| {
        a.wait_ping(&b.ip, PING_TIMEOUT);
        b.wait_ping(&a.ip, PING_TIMEOUT);
        a.wait_ping(&mgmt, PING_TIMEOUT);
    });
    eprintln!("pings OK after {:?}", t1.elapsed());

    // TCP between the pods (a tiny echo server: http.server would stall ~10 s on a
    // reverse DNS lookup of its bind address inside a netns without DNS).
    let bip = b.ip.clone();
    let server = format!(
        "import socket as S\ns=S.socket()\ns.setsockopt(S.SOL_SOCKET,S.SO_REUSEADDR,1)\n\
         s.bind(('{bip}',8080))\ns.listen()\nwhile True:\n c,_=s.accept()\n \
         c.sendall(b'pong:'+c.recv(100))\n c.close()\n"
    );
    b.spawn(&["python3", "-c", &server]);
    let client = format!(
        "import socket as S\nc=S.create_connection(('{bip}',8080),3)\nc.sendall(b'ping')\n\
         print(c.recv(100).decode())\n"
    );
    blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = a.exec(&["python3", "-c", &client]);
            if String::from_utf8_lossy(&o.stdout).trim() == "pong:ping" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "TCP pa -> pb failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    eprintln!("TCP OK after {:?}", t1.elapsed());

    // 5. CHECK passes, then fails clearly once the pod's route is gone.
    let (path, args) = (b.netns_path(), b.cni_args());
    let check_conf = conf_with(&conf, "1.1.0", &[("prevResult", rb.clone())]);
    let (st, out, err) = blocking(|| ns.cni(&vars("CHECK", &b, &path, &args), &check_conf));
    assert!(st.success(), "CHECK failed: {out}\n{err}");
    let o = b.exec(&["ip", "route", "del", "default"]);
    assert!(o.status.success());
    let (st, out, _) = blocking(|| ns.cni(&vars("CHECK", &b, &path, &args), &check_conf));
    assert_eq!(st.code(), Some(1));
    assert_eq!(out["code"], 100);
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("default route via") && msg.contains("missing"),
        "{msg}"
    );

    // 6. DEL twice succeeds; the port and veth are gone.
    let del_conf = conf_with(&conf, "1.1.0", &[]);
    for _ in 0..2 {
        let (st, out, err) = blocking(|| ns.cni(&vars("DEL", &b, &path, &args), &del_conf));
        assert!(st.success(), "DEL failed: {out}\n{err}");
        assert_eq!(out, Value::Null);
    }
    let ports = ns.chassis.vsctl(&["list-ports", "br-int"]).unwrap();
    assert!(!ports.contains(&host_b), "{ports}");
    assert!(!b.exec(&["ip", "link", "show", "eth0"]).status.success());
    eprintln!("single-node test done in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_chassis_ping_over_geneve() {
    let t0 = Instant::now();
    let env = Env::start("node-two").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    create_node(&env, "n2").await;
    let (ca, cb) = two_chassis(&env.central, "n1", "n2").unwrap();
    let n1 = NodeSide::new(&env, ca);
    let n2 = NodeSide::new(&env, cb);
    for (n, ip) in [(&n1, "172.30.0.1"), (&n2, "172.30.0.2")] {
        let (st, log) = blocking(|| n.init_node(&n.node_args(&env, ip), &[], INIT_TIMEOUT));
        assert!(st.success(), "node init of {} failed:\n{log}", n.name);
    }
    let s1 = node_subnet(&env, "n1").await;
    let s2 = node_subnet(&env, "n2").await;
    assert_ne!(s1, s2);
    let a = PodNs::create(&env, "n1", &s1, "xa", 10).await;
    let b = PodNs::create(&env, "n2", &s2, "xb", 10).await;
    add(&n1, &a, "1.0.0");
    add(&n2, &b, "0.4.0");
    blocking(|| {
        a.wait_ping(&b.ip, PING_TIMEOUT);
        b.wait_ping(&a.ip, PING_TIMEOUT);
        // And the other node's management port, across the cluster router.
        a.wait_ping(&mgmt_ip(&s2), PING_TIMEOUT);
    });
    eprintln!("two-chassis test done in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_node_without_subnet_fails_clearly() {
    let t0 = Instant::now();
    let env = Env::start("node-nosubnet").await;
    // No master: the node never gets a subnet.
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let (st, log) = blocking(|| {
        ns.init_node(
            &ns.node_args(&env, "127.0.0.1"),
            &[("OVNKUBE_NODE_SUBNET_TIMEOUT", "3")],
            INIT_TIMEOUT,
        )
    });
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("node n1 got no subnet within 3s"), "{log}");
    assert!(log.contains("has no ovn_host_subnet annotation"), "{log}");
    assert!(
        !ns.cni_dir.join("10-ovn-kubernetes.conf").exists(),
        "CNI config written although the node is not ready"
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    eprintln!("no-subnet test done in {:?}", t0.elapsed());
}
