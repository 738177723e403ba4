//! Gateways (`-init-gateways`) end to end on the OVS userspace test bed: the real master
//! (with the service controller), `ovnkube -init-node -init-gateways -nodeport` inside each
//! chassis netns, and an "outside" namespace cabled to the chassis's gateway NICs (the only
//! other addresses used: 172.31.0.0/24 and friends, inside namespaces this test creates).

mod common;
mod gwbed;
mod nodebed;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use gwbed::*;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::DeleteParams;
use nodebed::*;
use ovn_testbed::{Central, Chassis, ChassisOpts, Outside, two_chassis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_gateways_snat_egress_nodeport_ingress_rerun_and_delete() {
    let t0 = Instant::now();
    let env = Env::start("gateway").await;
    let mut master = env.spawn("master", &env.master_args(CLUSTER_SUBNET));
    master.wait_log("initial service sync done", WAIT);
    create_node(&env, "n1").await;
    create_node(&env, "n2").await;
    let (ca, cb) = two_chassis(&env.central, "n1", "n2").unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ca, "eth1", "172.31.0.1/24", true).unwrap();
    out.attach(&cb, "eth1", "172.31.0.2/24", true).unwrap();
    // n2 starts from a nics-to-bridge that was killed half-way: the bridge exists with the
    // NIC in it, the address is on both, the default route already moved.
    cb.vsctl(&[
        "--",
        "add-br",
        "breth1",
        "--",
        "set",
        "bridge",
        "breth1",
        "datapath_type=netdev",
        "fail-mode=standalone",
        "--",
        "add-port",
        "breth1",
        "eth1",
    ])
    .unwrap();
    eventually("breth1 on n2", WAIT, || async {
        cb.run_in_netns(&["ip", "link", "show", "breth1"])
            .ok()
            .filter(|o| o.status.success())
    })
    .await;
    sh(
        &cb,
        &["ip", "addr", "add", "172.31.0.2/24", "dev", "breth1"],
    );
    sh(&cb, &["ip", "link", "set", "breth1", "up"]);
    sh(
        &cb,
        &[
            "ip",
            "route",
            "replace",
            "default",
            "via",
            "172.31.0.100",
            "dev",
            "breth1",
        ],
    );

    let n1 = NodeSide::new(&env, ca);
    let n2 = NodeSide::new(&env, cb);
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1", &[], GATEWAY_FLAGS);
    let mut d2 = spawn_node(&env, &n2, "172.30.0.2", &[], GATEWAY_FLAGS);
    blocking(|| {
        wait_init(&n1, &mut d1, 1);
        wait_init(&n2, &mut d2, 1);
    });
    eprintln!("gateways initialised after {:?}", t0.elapsed());

    // NB: the gateway routers, their join addresses (distinct, from OVN IPAM), the LBs.
    let mut join = BTreeMap::new();
    for (n, ip) in [("n1", "172.31.0.1"), ("n2", "172.31.0.2")] {
        let gr = format!("GR_{n}");
        assert_eq!(
            nb(&env, &["get", "Logical_Router", &gr, "options:chassis"]),
            n
        );
        assert_eq!(
            nb(
                &env,
                &["get", "Logical_Router", &gr, "external_ids:physical_ip"]
            ),
            ip
        );
        let j = nb(
            &env,
            &[
                "get",
                "Logical_Router_Port",
                &format!("rtoj-{gr}"),
                "networks",
            ],
        );
        assert!(j.contains("100.64.") && j.contains("/16"), "{j}");
        let snat = nb(&env, &["lr-nat-list", &gr]);
        assert!(
            snat.contains(&format!("snat  {ip}")) || snat.contains(ip),
            "{snat}"
        );
        assert!(snat.contains(CLUSTER_SUBNET), "{snat}");
        for p in ["TCP", "UDP"] {
            let proto = nb(
                &env,
                &[
                    "--bare",
                    "--columns=protocol",
                    "find",
                    "Load_Balancer",
                    &format!("external_ids:{p}_lb_gateway_router={gr}"),
                ],
            );
            assert_eq!(proto, p.to_lowercase());
        }
        let ln = nb(
            &env,
            &["get", "Logical_Switch_Port", &format!("breth1_{n}"), "type"],
        );
        assert_eq!(ln, "localnet");
        join.insert(n, j);
    }
    assert_ne!(join["n1"], join["n2"], "two gateways got one join address");
    let routes = nb(&env, &["lr-route-list", "ovn_cluster_router"]);
    assert!(routes.contains("src-ip"), "{routes}");

    // Host side: the addresses and routes moved to the bridge (n2 converged from half-way).
    for (ns, ip) in [(&n1, "172.31.0.1/24"), (&n2, "172.31.0.2/24")] {
        let ch = &ns.chassis;
        assert!(sh(ch, &["ip", "-4", "addr", "show", "dev", "breth1"]).contains(ip));
        assert!(!sh(ch, &["ip", "-4", "addr", "show", "dev", "eth1"]).contains("inet "));
        let def = sh(ch, &["ip", "route", "show", "default"]);
        assert!(def.contains("via 172.31.0.100 dev breth1"), "{def}");
        assert_eq!(
            ch.vsctl(&["get", "bridge", "breth1", "datapath_type"])
                .unwrap()
                .trim(),
            "netdev"
        );
        assert!(
            ch.vsctl(&[
                "get",
                "open_vswitch",
                ".",
                "external_ids:ovn-bridge-mappings"
            ])
            .unwrap()
            .contains("physnet:breth1")
        );
        // G17: the gateway code configured --delete-transient-ports in its private copy.
        let copy = std::fs::read_to_string(ch.rundir().join("openvswitch-switch.default")).unwrap();
        assert!(copy.contains("--delete-transient-ports"), "{copy}");
    }

    // SNAT egress: pods reach the outside, which sees their node's IP.
    let s1 = node_subnet(&env, "n1").await;
    let s2 = node_subnet(&env, "n2").await;
    let (p1, _) = pod(&env, &n1.chassis, "n1", &s1, "p1", 10);
    let (p2, p2_ip) = pod(&env, &n2.chassis, "n2", &s2, "p2", 10);
    let mut echo = out.spawn(&["python3", "-c", &server(9000, "")]).unwrap();
    let dbg = |ns: &NodeSide| {
        let ch = &ns.chassis;
        format!(
            "--- {} flows:\n{}\n--- conntrack:\n{}\n--- vswitchd log (newest first):\n{}",
            ns.name,
            ch.run_in_netns(&["ovs-ofctl", "dump-flows", "breth1"])
                .map(|o| format!("{o:?}"))
                .unwrap_or_default(),
            ch.appctl(&["dpctl/dump-conntrack", "netdev@ovs-netdev"])
                .unwrap_or_default()
                .lines()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(ch.rundir().join("ovs-vswitchd.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let dbg1 = || dbg(&n1);
    let dbg2 = || dbg(&n2);
    blocking(|| {
        egress("pod p1 -> outside", "172.31.0.1", &dbg1, &p1);
        egress("pod p2 -> outside", "172.31.0.2", &dbg2, &p2);
    });
    eprintln!("SNAT egress OK after {:?}", t0.elapsed());

    // NodePort ingress: outside -> <n1 IP>:30080 -> pod p2 on n2.
    let mut web = p2
        .spawn(&["python3", "-c", &server(8080, "hello from p2")])
        .unwrap();
    create_nodeport(&env, &p2_ip).await;
    wait_nodeport_vip(&env).await;
    eventually("the NodePort flow on breth1", WAIT, || async {
        let f = sh(&n1.chassis, &["ovs-ofctl", "dump-flows", "breth1"]);
        f.contains(&format!("tp_dst={NODE_PORT}")).then_some(())
    })
    .await;
    blocking(|| {
        nodeport_ingress(&out, &dbg1);
    });
    eprintln!("NodePort ingress OK after {:?}", t0.elapsed());

    // Re-running the init changes nothing in the NB database.
    let before = env.nb_dump();
    stop(&mut d1);
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1", &[], GATEWAY_FLAGS);
    blocking(|| wait_init(&n1, &mut d1, 2));
    let log = node_log(&n1);
    assert!(log.contains("gateway router already up to date"), "{log}");
    assert_eq!(
        before,
        env.nb_dump(),
        "re-running the gateway init changed the NB"
    );

    // Deleting the node removes its gateway (the master's node cleanup).
    stop(&mut d1);
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    eventually("GR_n1 and friends gone", WAIT, || async {
        let dump = env.nb_dump();
        (!dump.contains("GR_n1") && !dump.contains("ext_n1") && !dump.contains("\"n1\""))
            .then_some(())
    })
    .await;
    assert!(env.nb_dump().contains("GR_n2"));
    stop(&mut d2);
    for c in [&mut echo, &mut web] {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(master);
    eprintln!("gateway test done in {:?}", t0.elapsed());
}

fn util(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("ovn-kube-util");
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ovnkube"), &p).unwrap();
    p
}

/// `ovn-kube-util ARGS` in the chassis (private mount ns); (exit code, stderr).
fn run_util(ch: &Chassis, util: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec![util.to_str().unwrap()];
    argv.extend(args);
    let cmd = ch.gateway_command(&argv).unwrap();
    let (st, _, err) = run_with_timeout(cmd, None, Duration::from_secs(60));
    (st.code(), err)
}

fn addrs(ch: &Chassis, dev: &str) -> String {
    sh(ch, &["ip", "-4", "-o", "addr", "show", "dev", dev])
}

fn assert_on(ch: &Chassis, dev: &str, other: &str) {
    let a = addrs(ch, dev);
    for ip in ["172.31.0.1/24", "172.31.5.1/24"] {
        assert!(a.contains(ip), "{ip} not on {dev}: {a}");
    }
    if !other.is_empty() {
        assert!(
            !addrs(ch, other).contains("inet "),
            "{other} still has addresses"
        );
    }
    let r = sh(ch, &["ip", "-4", "route", "show"]);
    assert!(
        r.contains(&format!("default via 172.31.0.100 dev {dev}")),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "198.51.100.0/24 via 172.31.0.100 dev {dev} proto static metric 5"
        )),
        "{r}"
    );
}

#[test]
fn nics_to_bridge_restores_on_failure_and_converges_after_a_kill() {
    let t0 = Instant::now();
    let central = Central::start().unwrap();
    let ch = Chassis::start(&central, "g1", ChassisOpts::default()).unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ch, "eth1", "172.31.0.1/24", true).unwrap();
    sh(&ch, &["ip", "addr", "add", "172.31.5.1/24", "dev", "eth1"]);
    sh(
        &ch,
        &[
            "ip",
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "172.31.0.100",
            "dev",
            "eth1",
            "proto",
            "static",
            "metric",
            "5",
        ],
    );
    let util = util(central.dir());
    let real_defaults = std::fs::read("/etc/default/openvswitch-switch").ok();

    // 1. A failing step (vswitchd cannot create a bridge named beyond IFNAMSIZ): the NIC
    //    keeps its addresses and routes and leaves OVS.
    out.attach(&ch, "ethgateway0123", "172.31.9.1/24", false)
        .unwrap();
    sh(
        &ch,
        &[
            "ip",
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "172.31.9.100",
            "dev",
            "ethgateway0123",
        ],
    );
    let (code, err) = run_util(&ch, &util, &["nics-to-bridge", "ethgateway0123"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("could not create bridge brethgateway0123")
            || err.contains("interface brethgateway0123 did not appear"),
        "{err}"
    );
    assert!(
        err.contains("ethgateway0123 has its addresses and routes back"),
        "{err}"
    );
    assert!(addrs(&ch, "ethgateway0123").contains("172.31.9.1/24"));
    assert!(
        sh(&ch, &["ip", "route"]).contains("203.0.113.0/24 via 172.31.9.100 dev ethgateway0123")
    );
    assert!(ch.vsctl(&["br-exists", "brethgateway0123"]).is_err());
    assert!(ch.vsctl(&["port-to-br", "ethgateway0123"]).is_err());

    // 2. Killed in the middle (as soon as the bridge exists), then re-run: converges.
    let mut argv = vec![util.to_str().unwrap().to_string()];
    argv.extend(["nics-to-bridge".to_string(), "eth1".to_string()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut child = ch.spawn_gateway(&argv).unwrap();
    let deadline = Instant::now() + WAIT;
    while ch.vsctl(&["br-exists", "breth1"]).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (code, err) = run_util(&ch, &util, &["nics-to-bridge", "eth1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_on(&ch, "breth1", "eth1");
    let (code, err) = run_util(&ch, &util, &["nics-to-bridge", "eth1"]);
    assert_eq!(code, Some(0), "re-run: {err}");
    assert_on(&ch, "breth1", "eth1");

    // 3. bridges-to-nic gives everything back and deletes the bridge.
    let (code, err) = run_util(&ch, &util, &["bridges-to-nic", "breth1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_on(&ch, "eth1", "");
    assert!(ch.vsctl(&["br-exists", "breth1"]).is_err());

    // 4. A hand-made half state (bridge, one address on both, default route moved): converges.
    ch.vsctl(&[
        "--",
        "add-br",
        "breth1",
        "--",
        "set",
        "bridge",
        "breth1",
        "datapath_type=netdev",
        "--",
        "add-port",
        "breth1",
        "eth1",
    ])
    .unwrap();
    let deadline = Instant::now() + WAIT;
    while !ch
        .run_in_netns(&["ip", "link", "show", "breth1"])
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "breth1 did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    sh(
        &ch,
        &["ip", "addr", "add", "172.31.0.1/24", "dev", "breth1"],
    );
    sh(&ch, &["ip", "link", "set", "breth1", "up"]);
    sh(
        &ch,
        &[
            "ip",
            "route",
            "replace",
            "default",
            "via",
            "172.31.0.100",
            "dev",
            "breth1",
        ],
    );
    let (code, err) = run_util(&ch, &util, &["nics-to-bridge", "eth1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_on(&ch, "breth1", "eth1");
    assert_eq!(
        ch.vsctl(&["get", "bridge", "breth1", "external_ids:bridge-uplink"])
            .unwrap()
            .trim(),
        "eth1"
    );

    // Usage errors, and the host's file was never touched (G17).
    let (code, err) = run_util(&ch, &util, &["nics-to-bridge"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Please specify list of nic interfaces"),
        "{err}"
    );
    assert_eq!(
        std::fs::read("/etc/default/openvswitch-switch").ok(),
        real_defaults
    );
    eprintln!("nics-to-bridge test done in {:?}", t0.elapsed());
}
