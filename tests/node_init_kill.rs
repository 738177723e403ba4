//! The node agent killed during its init: `ovnkube -init-node -init-gateways -nodeport` is
//! killed with SIGKILL right after each stage of its set-up (OVS configured, subnet seen,
//! management port made, its MAC recorded, gateway up), restarted, and the node must converge
//! as if the first run had never happened: the management port (one interface, one logical
//! port, its MAC on the Node), the gateway (router, join port, routes, NAT, load balancers),
//! and nothing left twice.

mod common;
mod gwbed;
mod nodebed;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use gwbed::*;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts, Outside};
use ovnkube::kube::annotations::NODE_MGMT_PORT_MAC;

const NODE_IP: &str = "172.31.0.1";

/// Log lines of the init's stages: the node is killed as soon as one appears. The first
/// trial runs on a fresh node, so it takes the stage a re-init skips (the MAC is recorded
/// only once): killed between the annotation and the gateway.
const STAGES: [&str; 5] = [
    "recorded the management port MAC on the node",
    "set Open_vSwitch external_ids",
    "ready for ovn initialization with subnet",
    "management port configured",
    "gateway router GR_n1 ready",
];

/// Waits for `needle` in the node's log (after byte `from`) and kills the node with SIGKILL
/// at once. `Some(false)`: the init finished without logging it (a re-init that had nothing
/// to do at that stage); `None`: it exited or hung first.
fn kill_at(ns: &NodeSide, node: &mut NodeProc, from: usize, needle: &str) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = node_log(ns);
        let new = log.get(from..).unwrap_or_default();
        if new.contains(needle) {
            let _ = Command::new("kill")
                .args(["-9", &node.0.id().to_string()])
                .status();
            let _ = node.0.wait();
            return Some(true);
        }
        if new.contains("CNI config written") {
            return Some(false);
        }
        if matches!(node.0.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a healthy node leaves behind beyond the NB (`node_objects_ok`): one management
/// interface in the node's namespace and on br-int, its MAC on the Node object.
async fn node_side_ok(env: &Env, ns: &NodeSide) -> Result<(), String> {
    let out = ns
        .chassis
        .run_in_netns(&["ip", "-o", "link", "show"])
        .map_err(|e| e.to_string())?;
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    let mgmt_links = links.lines().filter(|l| l.contains(" k8s-n1:")).count();
    if mgmt_links != 1 {
        return Err(format!("{mgmt_links} k8s-n1 links:\n{links}"));
    }
    let mac = links
        .lines()
        .find(|l| l.contains(" k8s-n1:"))
        .and_then(|l| l.split("link/ether ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let ports = ns
        .chassis
        .vsctl(&["list-ports", "br-int"])
        .map_err(|e| e.to_string())?;
    let on_br_int = ports.lines().filter(|p| p.trim() == "k8s-n1").count();
    if on_br_int != 1 {
        return Err(format!("{on_br_int} k8s-n1 ports on br-int: {ports}"));
    }
    let api: Api<Node> = Api::all(env.client.clone());
    let node = api.get("n1").await.map_err(|e| e.to_string())?;
    let recorded = node.annotations().get(NODE_MGMT_PORT_MAC).cloned();
    if recorded.as_deref() != Some(mac.as_str()) {
        return Err(format!(
            "{NODE_MGMT_PORT_MAC} {recorded:?}, interface MAC {mac:?}"
        ));
    }
    let routers = env
        .central
        .nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Router",
            "options:chassis=n1",
        ])
        .unwrap_or_default();
    if routers.split_whitespace().count() != 1 {
        return Err(format!("gateway routers of n1: {routers:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_killed_during_init_converges_after_a_restart() {
    let env = Env::start("node-init-kill").await;
    let args = env.master_args(CLUSTER_SUBNET);
    let mut master = env.spawn("master", &args);
    master.wait_log("initial service sync done", WAIT);
    create_node(&env, "n1").await;
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ch, "eth1", &format!("{NODE_IP}/24"), true)
        .unwrap();
    let n1 = NodeSide::new(&env, ch);
    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let mgmt_ip = std::net::Ipv4Addr::from(u32::from(net.network()) + 2);
    let mgmt = format!("{} {mgmt_ip}", ovnkube::ovn::addrs::mac_from_ip(mgmt_ip));

    let mut figures: Vec<(&str, Duration)> = Vec::new();
    let mut inits = 0;
    for stage in STAGES {
        let from = node_log(&n1).len();
        let mut node = NodeProc(spawn_node(&env, &n1, "127.0.0.1", &[], GATEWAY_FLAGS));
        let killed = blocking(|| kill_at(&n1, &mut node, from, stage));
        match killed {
            Some(true) => {}
            Some(false) => {
                // Only the first trial starts from a fresh node; a later one may have had
                // nothing to do at this stage.
                eprintln!("re-init did not log {stage:?}; not killed there");
                inits += 1;
                continue;
            }
            None => panic!("the init never logged {stage:?}:\n{}", node_log(&n1)),
        }
        // The restart: a fresh process on whatever the killed one left.
        let t = Instant::now();
        let mut node = NodeProc(spawn_node(&env, &n1, "127.0.0.1", &[], GATEWAY_FLAGS));
        inits += 1;
        blocking(|| wait_init(&n1, &mut node.0, inits));
        eventually("the node's NB objects", WAIT, || async {
            node_objects_ok(&env, NODE_IP, &subnet, &mgmt).ok()
        })
        .await;
        eventually("the node's own state", WAIT, || async {
            node_side_ok(&env, &n1).await.ok()
        })
        .await;
        let took = t.elapsed();
        eprintln!("killed after {stage:?}: converged {took:?} after the restart");
        figures.push((stage, took));
        // The next trial starts from a running node killed the same way.
        drop(node);
    }
    // The first stage always runs on a fresh node; the rest count when their line appeared.
    assert!(!figures.is_empty());
    eprintln!("node init kills: {figures:?}");
    assert_eq!(master.terminate().code(), Some(0));
}
