//! Spare-mode gateways (`-init-gateways -gateway-spare-interface`) end to end on the OVS
//! userspace test bed: each chassis's NIC `eth1` is cabled to an "outside" namespace, then
//! dedicated to OVN (plugged into br-int, bound to the external switch's VIF port, its address
//! flushed). Checks SNAT egress, NodePort ingress to a pod on the other node, and that
//! re-running the init leaves the NB untouched (addresses only inside namespaces this test
//! creates: 172.31.0.0/24).

mod common;
mod gwbed;
mod nodebed;

use std::time::Instant;

use common::Env;
use gwbed::*;
use nodebed::*;
use ovn_testbed::{Outside, two_chassis};

/// The spare-mode gateway flags.
const SPARE_FLAGS: &[&str] = &[
    "-init-gateways",
    "-gateway-spare-interface",
    "-gateway-interface=eth1",
    "-gateway-nexthop=172.31.0.100",
    "-nodeport",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_gateways_snat_egress_nodeport_ingress_and_rerun() {
    let t0 = Instant::now();
    let env = Env::start("gateway_spare").await;
    let mut master = env.spawn("master", &env.master_args(CLUSTER_SUBNET));
    master.wait_log("initial service sync done", WAIT);
    create_node(&env, "n1").await;
    create_node(&env, "n2").await;
    let (ca, cb) = two_chassis(&env.central, "n1", "n2").unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    // A second NIC, not the default route's: the gateway flags name it and the next hop.
    out.attach(&ca, "eth1", "172.31.0.1/24", false).unwrap();
    out.attach(&cb, "eth1", "172.31.0.2/24", false).unwrap();
    let macs: Vec<String> = [&ca, &cb]
        .iter()
        .map(|c| {
            sh(c, &["cat", "/sys/class/net/eth1/address"])
                .trim()
                .to_string()
        })
        .collect();

    let n1 = NodeSide::new(&env, ca);
    let n2 = NodeSide::new(&env, cb);
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1", &[], SPARE_FLAGS);
    let mut d2 = spawn_node(&env, &n2, "172.30.0.2", &[], SPARE_FLAGS);
    blocking(|| {
        wait_init(&n1, &mut d1, 1);
        wait_init(&n2, &mut d2, 1);
    });
    eprintln!("spare gateways initialised after {:?}", t0.elapsed());

    // NB: the gateway routers share the NIC's IP and MAC; the external port is a VIF port.
    for ((ns, ip), mac) in [(&n1, "172.31.0.1"), (&n2, "172.31.0.2")]
        .into_iter()
        .zip(&macs)
    {
        let n = ns.name.as_str();
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
        let rtoe = format!("rtoe-{gr}");
        assert_eq!(
            nb(&env, &["get", "Logical_Router_Port", &rtoe, "mac"]),
            *mac
        );
        let nets = nb(&env, &["get", "Logical_Router_Port", &rtoe, "networks"]);
        assert!(nets.contains(&format!("{ip}/24")), "{nets}");
        let snat = nb(&env, &["lr-nat-list", &gr]);
        assert!(snat.contains(ip) && snat.contains(CLUSTER_SUBNET), "{snat}");
        let vif = format!("eth1_{n}");
        assert_eq!(nb(&env, &["get", "Logical_Switch_Port", &vif, "type"]), "");
        // Host side: eth1 is in br-int, bound to that port, and has no address any more.
        let ch = &ns.chassis;
        assert_eq!(ch.vsctl(&["port-to-br", "eth1"]).unwrap().trim(), "br-int");
        assert_eq!(
            ch.vsctl(&["get", "interface", "eth1", "external_ids:iface-id"])
                .unwrap()
                .trim()
                .trim_matches('"'),
            vif
        );
        assert!(!sh(ch, &["ip", "-4", "addr", "show", "dev", "eth1"]).contains("inet "));
        assert!(
            ch.vsctl(&["br-exists", "breth1"]).is_err(),
            "spare mode made a bridge"
        );
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
            "--- {} br-int flows (table 0):\n{}\n--- vswitchd log (newest first):\n{}\n--- node log:\n{}",
            ns.name,
            ch.run_in_netns(&["ovs-ofctl", "dump-flows", "br-int", "table=0"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
            std::fs::read_to_string(ch.rundir().join("ovs-vswitchd.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            node_log(ns)
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let dbg1 = || dbg(&n1);
    let dbg2 = || dbg(&n2);
    blocking(|| {
        egress("pod p1 -> outside", "172.31.0.1", &dbg1, &p1);
        egress("pod p2 -> outside", "172.31.0.2", &dbg2, &p2);
    });
    eprintln!("SNAT egress OK after {:?}", t0.elapsed());

    // NodePort ingress: outside -> <n1 IP>:30080 -> pod p2 on n2 (no bridge flows in spare
    // mode: everything on eth1 goes to GR_n1).
    let mut web = p2
        .spawn(&["python3", "-c", &server(8080, "hello from p2")])
        .unwrap();
    create_nodeport(&env, &p2_ip).await;
    wait_nodeport_vip(&env).await;
    blocking(|| {
        nodeport_ingress(&out, &dbg1);
    });
    eprintln!("NodePort ingress OK after {:?}", t0.elapsed());

    // Re-running the init (eth1 now flushed) changes nothing in the NB database.
    let before = env.nb_dump();
    stop(&mut d1);
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1", &[], SPARE_FLAGS);
    blocking(|| wait_init(&n1, &mut d1, 2));
    let log = node_log(&n1);
    assert!(log.contains("gateway router already up to date"), "{log}");
    assert_eq!(
        before,
        env.nb_dump(),
        "re-running the spare gateway init changed the NB"
    );
    // And the data path still works.
    blocking(|| {
        egress("pod p1 -> outside after re-run", "172.31.0.1", &dbg1, &p1);
    });

    stop(&mut d1);
    stop(&mut d2);
    for c in [&mut echo, &mut web] {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(master);
    eprintln!("spare gateway test done in {:?}", t0.elapsed());
}
