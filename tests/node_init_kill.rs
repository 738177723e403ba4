//! The node agent killed during its init: `ovnkube -init-node -init-gateways -nodeport` is
//! killed with SIGKILL right after each stage of its set-up (OVS configured, subnet seen,
//! management port made, its MAC recorded, gateway up), restarted, and the node must converge
//! as if the first run had never happened: the management port (one interface, one logical
//! port, its MAC on the Node), the gateway (router, join port, routes, NAT, load balancers),
//! and nothing left twice.

mod common;
mod gwbed;
#[path = "common/node_init.rs"]
mod node_init;
mod nodebed;

use std::time::{Duration, Instant};

use common::{Env, eventually};
use gwbed::*;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use node_init::{HostFacts, gateway_node, host_facts, kill_at, stages, start_agent};
use nodebed::*;
use ovn_testbed::Outside;
use ovnkube::kube::annotations::NODE_MGMT_PORT_MAC;

const NODE_IP: &str = "172.31.0.1";

/// What a healthy node leaves behind beyond the NB (`node_objects_ok`): one management
/// interface in the node's namespace and on br-int, its MAC on the Node object, one gateway
/// router bound to its chassis.
async fn node_side_ok(env: &Env, ns: &NodeSide) -> Result<(), String> {
    let facts = host_facts(ns)?;
    let HostFacts {
        mgmt_link_macs: macs,
        mgmt_ports_on_br_int: on_br_int,
    } = &facts;
    if macs.len() != 1 || *on_br_int != 1 {
        return Err(format!("management port on the host: {facts:?}"));
    }
    let api: Api<Node> = Api::all(env.client.clone());
    let node = api.get("n1").await.map_err(|e| e.to_string())?;
    let recorded = node.annotations().get(NODE_MGMT_PORT_MAC).cloned();
    if recorded.as_deref() != Some(macs[0].as_str()) {
        return Err(format!(
            "{NODE_MGMT_PORT_MAC} {recorded:?}, interface MAC {:?}",
            macs[0]
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
    let out = Outside::start(OUTSIDE).unwrap();
    let n1 = gateway_node(
        &env,
        &out,
        "n1",
        &format!("{NODE_IP}/24"),
        std::net::Ipv4Addr::LOCALHOST,
    )
    .unwrap();
    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let mgmt_ip = std::net::Ipv4Addr::from(u32::from(net.network()) + 2);
    let mgmt = format!("{} {mgmt_ip}", ovnkube::ovn::addrs::mac_from_ip(mgmt_ip));

    let mut figures: Vec<(&str, Duration)> = Vec::new();
    let mut inits = 0;
    let stages = stages("n1");
    for stage in &stages {
        let stage = stage.as_str();
        let from = node_log(&n1).len();
        let mut node = start_agent(&env, &n1, "127.0.0.1");
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
        let mut node = start_agent(&env, &n1, "127.0.0.1");
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
