//! Spare-mode gateways (`-init-gateways -gateway-spare-interface`) end to end on the OVS
//! userspace test bed: each chassis's NIC `eth1` is cabled to an "outside" namespace, then
//! dedicated to OVN (plugged into br-int, bound to the external switch's VIF port, its address
//! flushed). Checks SNAT egress, NodePort ingress to a pod on the other node, and that
//! re-running the init leaves the NB untouched (addresses only inside namespaces this test
//! creates: 172.31.0.0/24).

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
use ovn_testbed::{Chassis, Outside, TestPod, two_chassis};

const OUTSIDE: &str = "172.31.0.100/24";
const WAIT: Duration = Duration::from_secs(60);
const NODE_PORT: i32 = 30080;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A tiny TCP server answering every connection with `reply` (or the peer's address when
/// `reply` is empty) — http.server would stall on reverse DNS inside a netns.
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

/// Polls `f` (which returns stdout) until it prints `want`.
fn until_prints(
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
        assert!(
            Instant::now() < deadline,
            "{what}: wanted {want:?}, last got {out:?} / {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            dbg()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn sh(ch: &Chassis, argv: &[&str]) -> String {
    let o = ch.run_in_netns(argv).unwrap();
    assert!(o.status.success(), "{argv:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn nb(env: &Env, args: &[&str]) -> String {
    env.central
        .nbctl(args)
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string()
}

/// A node process started with the spare-mode gateway flags, in the chassis netns and its own mount
/// namespace (G17).
fn spawn_node(env: &Env, ns: &NodeSide, encap: &str) -> Child {
    let mut argv = vec![env!("CARGO_BIN_EXE_ovnkube").to_string()];
    argv.extend(ns.node_args(env, encap));
    argv.extend(
        [
            "-init-gateways",
            "-gateway-spare-interface",
            "-gateway-interface=eth1",
            "-gateway-nexthop=172.31.0.100",
            "-nodeport",
        ]
        .map(String::from),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    ns.chassis.spawn_gateway(&argv).unwrap()
}

fn node_log(ns: &NodeSide) -> String {
    std::fs::read_to_string(ns.dir.join("node.log")).unwrap_or_default()
}

/// Waits until the node's log says init finished `n` times.
fn wait_init(ns: &NodeSide, child: &mut Child, n: usize) {
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

fn stop(child: &mut Child) {
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

/// A pod made by the test: its logical port (nbctl) and a TestPod wired to it.
fn pod(
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

fn nodeport_service() -> Service {
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

fn endpoints(ip: &str) -> Endpoints {
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
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1");
    let mut d2 = spawn_node(&env, &n2, "172.30.0.2");
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
        until_prints("pod p1 -> outside", "172.31.0.1", &dbg1, || {
            p1.exec(&["python3", "-c", &client("172.31.0.100", 9000)])
                .unwrap()
        });
        until_prints("pod p2 -> outside", "172.31.0.2", &dbg2, || {
            p2.exec(&["python3", "-c", &client("172.31.0.100", 9000)])
                .unwrap()
        });
    });
    eprintln!("SNAT egress OK after {:?}", t0.elapsed());

    // NodePort ingress: outside -> <n1 IP>:30080 -> pod p2 on n2 (no bridge flows in spare
    // mode: everything on eth1 goes to GR_n1).
    let mut web = p2
        .spawn(&["python3", "-c", &server(8080, "hello from p2")])
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), "default");
    svcs.create(&PostParams::default(), &nodeport_service())
        .await
        .unwrap();
    eps.create(&PostParams::default(), &endpoints(&p2_ip))
        .await
        .unwrap();
    eventually(
        "the NodePort VIP on GR_n1's load balancer",
        WAIT,
        || async {
            let v = nb(
                &env,
                &[
                    "--bare",
                    "--columns=vips",
                    "find",
                    "Load_Balancer",
                    "external_ids:TCP_lb_gateway_router=GR_n1",
                ],
            );
            v.contains(&format!("172.31.0.1:{NODE_PORT}")).then_some(())
        },
    )
    .await;
    blocking(|| {
        until_prints("outside -> n1:NodePort", "hello from p2", &dbg1, || {
            out.exec(&["python3", "-c", &client("172.31.0.1", NODE_PORT as u16)])
                .unwrap()
        });
    });
    eprintln!("NodePort ingress OK after {:?}", t0.elapsed());

    // Re-running the init (eth1 now flushed) changes nothing in the NB database.
    let before = env.nb_dump();
    stop(&mut d1);
    let mut d1 = spawn_node(&env, &n1, "172.30.0.1");
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
        until_prints(
            "pod p1 -> outside after re-run",
            "172.31.0.1",
            &dbg1,
            || {
                p1.exec(&["python3", "-c", &client("172.31.0.100", 9000)])
                    .unwrap()
            },
        );
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
