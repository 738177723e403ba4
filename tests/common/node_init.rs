//! A node agent (`ovnkube -init-node -init-gateways -nodeport`, the README's node role) killed
//! during its init, shared by `tests/node_init_kill.rs` (a kill after every stage in turn) and
//! the fault suite (`tests/chaos.rs`, a kill at a random stage): the node's chassis on the
//! outside network, the stages its log marks, the kill at one of them, and what the node's
//! host holds afterwards. It builds on the `nodebed` and `gwbed` modules, so a test includes
//! it next to them (`#[path = "common/node_init.rs"] mod node_init;`) rather than through
//! `common`, which every test includes.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use ovn_testbed::{Chassis, ChassisOpts, Outside};
use ovnkube::ovn::names;

use crate::common::Env;
use crate::gwbed::{GATEWAY_FLAGS, NodeProc, node_log, spawn_node};
use crate::nodebed::NodeSide;

/// The log lines of the init's stages. A fresh node logs all of them; the MAC annotation's
/// line comes first because a re-init of a node whose MAC is already recorded skips it (the
/// MAC is written only when it differs), so a series of kills on one node starts with it.
pub fn stages(node: &str) -> [String; 5] {
    [
        MAC_RECORDED.to_string(),
        "set Open_vSwitch external_ids".to_string(),
        "ready for ovn initialization with subnet".to_string(),
        "management port configured".to_string(),
        format!("gateway router {} ready", names::gateway_router(node)),
    ]
}

/// The stage a fresh node logs and a re-init skips.
pub const MAC_RECORDED: &str = "recorded the management port MAC on the node";

/// The line that ends the init.
pub const INIT_DONE: &str = "CNI config written";

/// One gateway node: a chassis named `node` (tunnel endpoint `encap`) whose `eth1` is
/// `node_cidr` on `outside` and its default route, with what the node process needs inside
/// its netns.
pub fn gateway_node(
    env: &Env,
    outside: &Outside,
    node: &str,
    node_cidr: &str,
    encap: std::net::Ipv4Addr,
) -> anyhow::Result<NodeSide> {
    let opts = ChassisOpts {
        encap_ip: Some(encap),
        ..ChassisOpts::default()
    };
    let ch = Chassis::start(&env.central, node, opts)?;
    outside.attach(&ch, "eth1", node_cidr, true)?;
    Ok(NodeSide::new(env, ch))
}

/// Starts the node agent with the gateway flags (tunnel endpoint `encap`).
pub fn start_agent(env: &Env, ns: &NodeSide, encap: &str) -> NodeProc {
    NodeProc(spawn_node(env, ns, encap, &[], GATEWAY_FLAGS))
}

/// Waits for `needle` in the node's log (after byte `from`) and kills the node with SIGKILL
/// at once. `Some(false)`: the init finished without logging it (a re-init that had nothing
/// to do at that stage); `None`: it exited or hung first.
pub fn kill_at(ns: &NodeSide, node: &mut NodeProc, from: usize, needle: &str) -> Option<bool> {
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
        if new.contains(INIT_DONE) {
            return Some(false);
        }
        if matches!(node.0.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the node's host holds of its management port: the MACs of the `k8s-<node>` links in
/// its netns (one when healthy) and how many `k8s-<node>` ports br-int has (one).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostFacts {
    pub mgmt_link_macs: Vec<String>,
    pub mgmt_ports_on_br_int: usize,
}

/// Reads [`HostFacts`] from the node's chassis.
pub fn host_facts(ns: &NodeSide) -> Result<HostFacts, String> {
    let iface = names::mgmt_iface(&ns.name);
    let out = ns
        .chassis
        .run_in_netns(&["ip", "-o", "link", "show"])
        .map_err(|e| e.to_string())?;
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    let mark = format!(" {iface}:");
    let mgmt_link_macs = links
        .lines()
        .filter(|l| l.contains(&mark))
        .map(|l| {
            l.split("link/ether ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let ports = ns
        .chassis
        .vsctl(&["list-ports", names::BR_INT])
        .map_err(|e| e.to_string())?;
    let mgmt_ports_on_br_int = ports.lines().filter(|p| p.trim() == iface).count();
    Ok(HostFacts {
        mgmt_link_macs,
        mgmt_ports_on_br_int,
    })
}
