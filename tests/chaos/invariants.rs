//! The fault suite's invariant checker: pure functions over what the API holds (`World`) and
//! what the NB (plus the SB's port bindings) holds (`NbView`). "Converged" means `check`
//! returns nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use ovnkube::controller::policy_model::Selector;
use ovnkube::controller::policy_plan::policy_pg;
use ovnkube::kube::annotations::PodNetwork;
use ovnkube::ovn::addrs::NodeAddrs;
use ovnkube::ovn::names;
use ovnkube::ovn::proto::Proto;
use ovnkube::ovn::schema::nb as tables;

pub use crate::node_init::HostFacts;

/// A pod as the checker needs it: only pods bound to a node and on the pod network.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// The raw `ovn` annotation, if any.
    pub annotation: Option<String>,
}

/// A ClusterIP service port and the ready endpoint addresses of its slices.
#[derive(Clone, Debug, Default)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: String,
    pub port: i32,
    pub target_port: i32,
    pub ready: BTreeSet<String>,
}

/// A network policy: its port group holds the ports of the pods `selector` picks in `namespace`.
#[derive(Clone, Debug)]
pub struct PolicyView {
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
}

/// The API side of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Node name → its host-subnet annotation (None while unannotated or unparsable).
    pub nodes: BTreeMap<String, Option<Ipv4Net>>,
    pub pods: Vec<PodView>,
    pub services: Vec<ServiceView>,
    pub policies: Vec<PolicyView>,
    /// Node name → its management port MAC annotation, for the nodes that have one.
    pub mgmt_macs: BTreeMap<String, String>,
    /// The nodes that run a node agent, with what their hosts hold of the management port.
    /// Filled by the bed from the chassis, not from the API.
    pub agents: BTreeMap<String, HostFacts>,
}

/// A pod logical switch port.
#[derive(Clone, Debug, Default)]
pub struct PortView {
    pub uuid: String,
    pub addresses: Vec<String>,
}

/// A logical router with what a node agent's gateway router holds.
#[derive(Clone, Debug, Default)]
pub struct RouterView {
    pub name: String,
    /// `options:chassis`: the gateway router's node.
    pub chassis: Option<String>,
    /// Load balancer uuids.
    pub lbs: BTreeSet<String>,
    /// Static routes as `prefix via nexthop`, one entry per row.
    pub routes: Vec<String>,
    /// NAT rules as `type external_ip logical_ip`, one entry per row.
    pub nats: Vec<String>,
}

/// The NB side of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct NbView {
    pub switches: BTreeSet<String>,
    /// Pod ports (external_ids:pod=true) by name.
    pub pod_ports: BTreeMap<String, PortView>,
    /// VIP → backends of the plain TCP cluster load balancer.
    pub cluster_vips: BTreeMap<String, String>,
    /// Port group name → member port uuids.
    pub port_groups: BTreeMap<String, BTreeSet<String>>,
    /// Logical port names with an SB Port_Binding (northd has processed them).
    pub bound: BTreeSet<String>,
    /// (table, name) → number of rows, for switches, switch ports, routers and router ports:
    /// a name on two rows is a duplicate.
    pub names: BTreeMap<(String, String), usize>,
    /// Management ports (`k8s-<node>`) by name → addresses.
    pub mgmt_ports: BTreeMap<String, Vec<String>>,
    pub routers: Vec<RouterView>,
    /// (protocol, gateway router) → the uuids of the load balancers marked as that router's.
    pub gateway_lbs: BTreeMap<(Proto, String), Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    NodeWithoutSubnet(String),
    NodeWithoutSwitch(String),
    PodNotAnnotated(String),
    PodBadAnnotation(String, String),
    PodOutsideSubnet {
        pod: String,
        ip: String,
        subnet: String,
    },
    PodWithoutPort(String),
    PortAddressMismatch {
        port: String,
        want: String,
        have: Vec<String>,
    },
    StalePort(String),
    DuplicateIp(String, Vec<String>),
    VipMismatch {
        service: String,
        vip: String,
        want: String,
        have: Option<String>,
    },
    StaleVip(String),
    PolicyPortsMismatch {
        policy: String,
        want: BTreeSet<String>,
        have: Option<BTreeSet<String>>,
    },
    PortNotBound(String),
    DuplicateName {
        table: String,
        name: String,
        rows: usize,
    },
    /// A router with the same static route or NAT rule on two rows.
    DuplicateRule {
        router: String,
        rule: String,
    },
    MgmtPortMismatch {
        node: String,
        want: String,
        have: Option<Vec<String>>,
    },
    MgmtMacNotRecorded(String),
    MgmtHost {
        node: String,
        facts: HostFacts,
        recorded: Option<String>,
    },
    GatewayBroken {
        node: String,
        what: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NodeWithoutSubnet(n) => write!(f, "node {n} has no host subnet"),
            Violation::NodeWithoutSwitch(n) => write!(f, "node {n} has no logical switch"),
            Violation::PodNotAnnotated(p) => write!(f, "pod {p} has no ovn annotation"),
            Violation::PodBadAnnotation(p, e) => write!(f, "pod {p}: bad ovn annotation: {e}"),
            Violation::PodOutsideSubnet { pod, ip, subnet } => {
                write!(f, "pod {pod}: {ip} is outside its node's subnet {subnet}")
            }
            Violation::PodWithoutPort(p) => write!(f, "pod {p} has no logical port"),
            Violation::PortAddressMismatch { port, want, have } => {
                write!(
                    f,
                    "port {port}: addresses {have:?}, annotation says {want:?}"
                )
            }
            Violation::StalePort(p) => write!(f, "logical port {p} has no live pod"),
            Violation::DuplicateIp(ip, who) => write!(f, "{ip} is used by {who:?}"),
            Violation::VipMismatch {
                service,
                vip,
                want,
                have,
            } => {
                write!(
                    f,
                    "service {service}: VIP {vip} -> {have:?}, endpoints say {want:?}"
                )
            }
            Violation::StaleVip(v) => {
                write!(f, "cluster VIP {v} has no service with ready endpoints")
            }
            Violation::PolicyPortsMismatch { policy, want, have } => {
                write!(
                    f,
                    "policy {policy}: port group {have:?}, selected pods {want:?}"
                )
            }
            Violation::PortNotBound(p) => write!(f, "logical port {p} has no SB Port_Binding"),
            Violation::DuplicateName { table, name, rows } => {
                write!(f, "{table} {name} is on {rows} rows")
            }
            Violation::DuplicateRule { router, rule } => {
                write!(f, "router {router} has {rule:?} twice")
            }
            Violation::MgmtPortMismatch { node, want, have } => {
                write!(
                    f,
                    "node {node}: management port addresses {have:?}, want {want:?}"
                )
            }
            Violation::MgmtMacNotRecorded(n) => {
                write!(f, "node {n}: its agent recorded no management port MAC")
            }
            Violation::MgmtHost {
                node,
                facts,
                recorded,
            } => write!(
                f,
                "node {node}: management port on the host {facts:?}, recorded MAC {recorded:?}"
            ),
            Violation::GatewayBroken { node, what } => write!(f, "node {node}: gateway {what}"),
        }
    }
}

/// Every invariant; empty when converged.
pub fn check(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(nodes(w, nb));
    v.extend(pods(w, nb));
    v.extend(stale_ports(w, nb));
    v.extend(duplicate_ips(w, nb));
    v.extend(services(w, nb));
    v.extend(policies(w, nb));
    v.extend(duplicates(nb));
    v.extend(mgmt_ports(w, nb));
    for (node, facts) in &w.agents {
        v.extend(agent_host(w, node, facts));
        v.extend(gateway(nb, node));
    }
    v.sort();
    v
}

fn nodes(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut v = Vec::new();
    for (n, subnet) in &w.nodes {
        if subnet.is_none() {
            v.push(Violation::NodeWithoutSubnet(n.clone()));
        }
        if !nb.switches.contains(&names::node_switch(n)) {
            v.push(Violation::NodeWithoutSwitch(n.clone()));
        }
    }
    v
}

fn port_name(p: &PodView) -> String {
    names::pod_port(&p.namespace, &p.name)
}

fn pods(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut v = Vec::new();
    for p in &w.pods {
        let id = port_name(p);
        let Some(ann) = &p.annotation else {
            v.push(Violation::PodNotAnnotated(id));
            continue;
        };
        let net = match PodNetwork::parse(ann) {
            Ok(n) => n,
            Err(e) => {
                v.push(Violation::PodBadAnnotation(id, e));
                continue;
            }
        };
        if let Some(Some(subnet)) = w.nodes.get(&p.node)
            && !(subnet.contains(&net.ip) && net.prefix_len == subnet.prefix_len())
        {
            v.push(Violation::PodOutsideSubnet {
                pod: id.clone(),
                ip: net.cidr().to_string(),
                subnet: subnet.to_string(),
            });
        }
        let want = net.lsp_address();
        match nb.pod_ports.get(&id) {
            None => v.push(Violation::PodWithoutPort(id)),
            Some(port) => {
                if port.addresses != [want.clone()] {
                    v.push(Violation::PortAddressMismatch {
                        port: id.clone(),
                        want,
                        have: port.addresses.clone(),
                    });
                }
                if !nb.bound.contains(&id) {
                    v.push(Violation::PortNotBound(id));
                }
            }
        }
    }
    v
}

fn stale_ports(w: &World, nb: &NbView) -> Vec<Violation> {
    let live: BTreeSet<String> = w.pods.iter().map(port_name).collect();
    nb.pod_ports
        .keys()
        .filter(|p| !live.contains(*p))
        .map(|p| Violation::StalePort(p.clone()))
        .collect()
}

fn duplicate_ips(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut users: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for p in &w.pods {
        if let Some(net) = p
            .annotation
            .as_deref()
            .and_then(|a| PodNetwork::parse(a).ok())
        {
            users
                .entry(net.ip)
                .or_default()
                .insert(format!("pod {}", port_name(p)));
        }
    }
    for (name, port) in &nb.pod_ports {
        for a in &port.addresses {
            for ip in a
                .split_whitespace()
                .filter_map(|t| t.parse::<Ipv4Addr>().ok())
            {
                users.entry(ip).or_default().insert(format!("port {name}"));
            }
        }
    }
    for (name, addrs) in &nb.mgmt_ports {
        for ip in addrs
            .iter()
            .flat_map(|a| a.split_whitespace())
            .filter_map(|t| t.parse::<Ipv4Addr>().ok())
        {
            users.entry(ip).or_default().insert(format!("port {name}"));
        }
    }
    // A pod and its own port share an address; two pods, or two ports, must not.
    users
        .into_iter()
        .filter(|(_, who)| {
            let pods = who.iter().filter(|w| w.starts_with("pod ")).count();
            let ports = who.len() - pods;
            pods > 1 || ports > 1
        })
        .map(|(ip, who)| Violation::DuplicateIp(ip.to_string(), who.into_iter().collect()))
        .collect()
}

/// `ip:port,ip:port` in a canonical (sorted) order.
fn backends(ips: &BTreeSet<String>, port: i32) -> String {
    ips.iter()
        .map(|ip| format!("{ip}:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn canonical(b: &str) -> String {
    let set: BTreeSet<&str> = b
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn services(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut wanted = BTreeSet::new();
    for s in &w.services {
        let vip = format!("{}:{}", s.cluster_ip, s.port);
        let have = nb.cluster_vips.get(&vip).map(|b| canonical(b));
        if s.ready.is_empty() {
            // No ready endpoint: no VIP at all (see the services design).
            if have.is_some() {
                v.push(Violation::VipMismatch {
                    service: format!("{}/{}", s.namespace, s.name),
                    vip,
                    want: String::new(),
                    have,
                });
            }
            continue;
        }
        wanted.insert(vip.clone());
        // Both sides in the same canonical order: `ready` is sorted by IP alone, and
        // "10.0.0.1" < "10.0.0.17" by IP but "10.0.0.17:80" < "10.0.0.1:80" by backend.
        let want = canonical(&backends(&s.ready, s.target_port));
        if have.as_deref() != Some(want.as_str()) {
            v.push(Violation::VipMismatch {
                service: format!("{}/{}", s.namespace, s.name),
                vip,
                want,
                have,
            });
        }
    }
    let known: BTreeSet<String> = w
        .services
        .iter()
        .map(|s| format!("{}:{}", s.cluster_ip, s.port))
        .collect();
    for vip in nb.cluster_vips.keys() {
        if !wanted.contains(vip) && !known.contains(vip) {
            v.push(Violation::StaleVip(vip.clone()));
        }
    }
    v
}

fn policies(w: &World, nb: &NbView) -> Vec<Violation> {
    let names_by_uuid: BTreeMap<&str, &str> = nb
        .pod_ports
        .iter()
        .map(|(n, p)| (p.uuid.as_str(), n.as_str()))
        .collect();
    let mut v = Vec::new();
    for pol in &w.policies {
        let want: BTreeSet<String> = w
            .pods
            .iter()
            .filter(|p| p.namespace == pol.namespace && pol.selector.matches(&p.labels))
            .map(port_name)
            .collect();
        let have: Option<BTreeSet<String>> = nb
            .port_groups
            .get(&policy_pg(&pol.namespace, &pol.name))
            .map(|uuids| {
                uuids
                    .iter()
                    .map(|u| {
                        names_by_uuid
                            .get(u.as_str())
                            .map_or_else(|| format!("uuid {u}"), |n| n.to_string())
                    })
                    .collect()
            });
        if have.as_ref() != Some(&want) {
            v.push(Violation::PolicyPortsMismatch {
                policy: format!("{}/{}", pol.namespace, pol.name),
                want,
                have,
            });
        }
    }
    v
}

/// Nothing the master or a node agent names is there twice: no name on two switches, switch
/// ports, routers or router ports, no static route or NAT rule twice on a router.
fn duplicates(nb: &NbView) -> Vec<Violation> {
    let mut v: Vec<Violation> = nb
        .names
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((table, name), n)| Violation::DuplicateName {
            table: table.clone(),
            name: name.clone(),
            rows: *n,
        })
        .collect();
    for r in &nb.routers {
        let mut seen = BTreeSet::new();
        for rule in r.routes.iter().chain(&r.nats) {
            if !seen.insert(rule) {
                v.push(Violation::DuplicateRule {
                    router: r.name.clone(),
                    rule: rule.clone(),
                });
            }
        }
    }
    v
}

/// Every node that reported its management port MAC has its logical port `k8s-<node>` with
/// that MAC and the subnet's management address (the master owns it).
fn mgmt_ports(w: &World, nb: &NbView) -> Vec<Violation> {
    let mut v = Vec::new();
    for (node, mac) in &w.mgmt_macs {
        let Some(Some(subnet)) = w.nodes.get(node) else {
            continue;
        };
        let want = format!(
            "{} {}",
            mac.to_ascii_lowercase(),
            NodeAddrs::new(*subnet).mgmt.addr()
        );
        let have = nb.mgmt_ports.get(&names::mgmt_port(node));
        if have.is_none_or(|h| *h != [want.clone()]) {
            v.push(Violation::MgmtPortMismatch {
                node: node.clone(),
                want,
                have: have.cloned(),
            });
        }
    }
    v
}

/// A node agent's host: one management interface, on br-int once, whose MAC is the one on
/// the Node.
fn agent_host(w: &World, node: &str, facts: &HostFacts) -> Vec<Violation> {
    let recorded = w.mgmt_macs.get(node).cloned();
    let Some(mac) = &recorded else {
        return vec![Violation::MgmtMacNotRecorded(node.to_string())];
    };
    let ok = facts.mgmt_ports_on_br_int == 1
        && matches!(facts.mgmt_link_macs.as_slice(), [m] if m.eq_ignore_ascii_case(mac));
    if ok {
        return Vec::new();
    }
    vec![Violation::MgmtHost {
        node: node.to_string(),
        facts: facts.clone(),
        recorded,
    }]
}

/// A node agent's gateway: its router bound to the node's chassis (and no other router
/// bound there), with a default route and a SNAT rule, its join ports, its external switch,
/// and one TCP and one UDP load balancer of its own attached to it.
fn gateway(nb: &NbView, node: &str) -> Vec<Violation> {
    let gr = names::gateway_router(node);
    let mut missing = Vec::new();
    let bound: Vec<&RouterView> = nb
        .routers
        .iter()
        .filter(|r| r.chassis.as_deref() == Some(node))
        .collect();
    match bound.as_slice() {
        [r] if r.name == gr => {
            if !r.routes.iter().any(|x| x.starts_with("0.0.0.0/0 ")) {
                missing.push("has no default route".to_string());
            }
            if !r.nats.iter().any(|x| x.starts_with("snat ")) {
                missing.push("has no SNAT rule".to_string());
            }
            for p in [Proto::Tcp, Proto::Udp] {
                let lbs = nb
                    .gateway_lbs
                    .get(&(p, gr.clone()))
                    .map_or(&[][..], Vec::as_slice);
                if !matches!(lbs, [lb] if r.lbs.contains(lb)) {
                    missing.push(format!(
                        "{p:?} load balancers {lbs:?}, attached {:?}",
                        r.lbs
                    ));
                }
            }
        }
        _ => missing.push(format!(
            "routers bound to the chassis: {:?}",
            bound.iter().map(|r| &r.name).collect::<Vec<_>>()
        )),
    }
    let named = |table: &str, name: String| {
        nb.names
            .contains_key(&(table.to_string(), name.clone()))
            .then_some(())
            .ok_or(format!("{table} {name} is missing"))
    };
    for check in [
        named(tables::LOGICAL_ROUTER_PORT, names::rtoj(&gr)),
        named(tables::LOGICAL_SWITCH_PORT, names::jtor(&gr)),
        named(tables::LOGICAL_SWITCH, names::ext_switch(node)),
    ] {
        if let Err(e) = check {
            missing.push(e);
        }
    }
    missing
        .into_iter()
        .map(|what| Violation::GatewayBroken {
            node: node.to_string(),
            what,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANN_A: &str =
        r#"{"ip_address":"10.1.0.3/24","mac_address":"0a:58:0a:01:00:03","gateway_ip":"10.1.0.1"}"#;
    const ANN_B: &str =
        r#"{"ip_address":"10.1.0.4/24","mac_address":"0a:58:0a:01:00:04","gateway_ip":"10.1.0.1"}"#;

    fn pod(name: &str, app: &str, ann: Option<&str>) -> PodView {
        PodView {
            namespace: "default".into(),
            name: name.into(),
            node: "n1".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            annotation: ann.map(String::from),
        }
    }

    fn port(uuid: &str, addr: &str) -> PortView {
        PortView {
            uuid: uuid.into(),
            addresses: vec![addr.into()],
        }
    }

    fn selector(app: &str) -> Selector {
        Selector {
            labels: [("app".to_string(), app.to_string())].into(),
            reqs: Vec::new(),
        }
    }

    /// A converged world: two pods on n1, one service with two ready endpoints, one policy
    /// selecting pod a.
    fn good() -> (World, NbView) {
        let w = World {
            nodes: [("n1".to_string(), Some("10.1.0.0/24".parse().unwrap()))].into(),
            pods: vec![pod("a", "web", Some(ANN_A)), pod("b", "db", Some(ANN_B))],
            services: vec![ServiceView {
                namespace: "default".into(),
                name: "s".into(),
                cluster_ip: "10.96.0.10".into(),
                port: 80,
                target_port: 8080,
                ready: ["10.9.0.1".to_string(), "10.9.0.2".to_string()].into(),
            }],
            policies: vec![PolicyView {
                namespace: "default".into(),
                name: "p".into(),
                selector: selector("web"),
            }],
            mgmt_macs: [("n1".to_string(), MGMT_MAC.to_string())].into(),
            agents: [(
                "n1".to_string(),
                HostFacts {
                    mgmt_link_macs: vec![MGMT_MAC.to_string()],
                    mgmt_ports_on_br_int: 1,
                },
            )]
            .into(),
        };
        let nb = NbView {
            switches: ["n1".to_string()].into(),
            pod_ports: [
                (
                    "default_a".to_string(),
                    port("u-a", "0a:58:0a:01:00:03 10.1.0.3"),
                ),
                (
                    "default_b".to_string(),
                    port("u-b", "0a:58:0a:01:00:04 10.1.0.4"),
                ),
            ]
            .into(),
            cluster_vips: [(
                "10.96.0.10:80".to_string(),
                "10.9.0.2:8080,10.9.0.1:8080".to_string(),
            )]
            .into(),
            port_groups: [(policy_pg("default", "p"), ["u-a".to_string()].into())].into(),
            bound: ["default_a".to_string(), "default_b".to_string()].into(),
            names: [
                (tables::LOGICAL_SWITCH, "n1"),
                (tables::LOGICAL_SWITCH, "ext_n1"),
                (tables::LOGICAL_SWITCH_PORT, "jtor-GR_n1"),
                (tables::LOGICAL_SWITCH_PORT, "k8s-n1"),
                (tables::LOGICAL_ROUTER, "GR_n1"),
                (tables::LOGICAL_ROUTER_PORT, "rtoj-GR_n1"),
            ]
            .into_iter()
            .map(|(t, n)| ((t.to_string(), n.to_string()), 1))
            .collect(),
            mgmt_ports: [("k8s-n1".to_string(), vec![format!("{MGMT_MAC} 10.1.0.2")])].into(),
            routers: vec![RouterView {
                name: "GR_n1".into(),
                chassis: Some("n1".into()),
                lbs: ["lb-t".to_string(), "lb-u".to_string()].into(),
                routes: vec![
                    "10.1.0.0/16 via 100.64.0.1".into(),
                    "0.0.0.0/0 via 172.31.0.100".into(),
                ],
                nats: vec!["snat 172.31.0.1 10.1.0.0/16".into()],
            }],
            gateway_lbs: [
                ((Proto::Tcp, "GR_n1".to_string()), vec!["lb-t".to_string()]),
                ((Proto::Udp, "GR_n1".to_string()), vec!["lb-u".to_string()]),
            ]
            .into(),
        };
        (w, nb)
    }

    /// The management port MAC of n1 (10.1.0.2's derived MAC).
    const MGMT_MAC: &str = "0a:58:0a:01:00:02";

    #[test]
    fn invariant_table() {
        type Mutate = fn(&mut World, &mut NbView);
        let cases: Vec<(&str, Mutate, &str)> = vec![
            ("converged", |_, _| {}, ""),
            (
                "an endpoint IP that is a prefix of another",
                |w, nb| {
                    w.services[0].ready = ["10.9.0.1".to_string(), "10.9.0.17".to_string()].into();
                    nb.cluster_vips.insert(
                        "10.96.0.10:80".to_string(),
                        "10.9.0.17:8080,10.9.0.1:8080".to_string(),
                    );
                },
                "",
            ),
            (
                "node without subnet",
                |w, _| {
                    w.nodes.insert("n1".into(), None);
                },
                "node n1 has no host subnet",
            ),
            (
                "node without switch",
                |_, nb| {
                    nb.switches.clear();
                },
                "node n1 has no logical switch",
            ),
            (
                "pod not annotated",
                |w, _| w.pods[1].annotation = None,
                "pod default_b has no ovn annotation",
            ),
            (
                "bad annotation",
                |w, _| w.pods[1].annotation = Some("{}".into()),
                "bad ovn annotation",
            ),
            (
                "outside subnet",
                |w, _| {
                    w.nodes
                        .insert("n1".into(), Some("10.2.0.0/24".parse().unwrap()));
                },
                "outside its node's subnet 10.2.0.0/24",
            ),
            (
                "no port",
                |_, nb| {
                    nb.pod_ports.remove("default_b");
                },
                "pod default_b has no logical port",
            ),
            (
                "wrong MAC on port",
                |_, nb| {
                    nb.pod_ports.insert(
                        "default_b".into(),
                        port("u-b", "0a:58:0a:01:00:99 10.1.0.4"),
                    );
                },
                "port default_b: addresses",
            ),
            (
                "port of a deleted pod",
                |w, _| {
                    w.pods.pop();
                },
                "logical port default_b has no live pod",
            ),
            (
                "two pods, one IP",
                |w, nb| {
                    w.pods[1].annotation = Some(ANN_A.into());
                    nb.pod_ports.insert(
                        "default_b".into(),
                        port("u-b", "0a:58:0a:01:00:03 10.1.0.3"),
                    );
                },
                "10.1.0.3 is used by",
            ),
            (
                "missing backend",
                |_, nb| {
                    nb.cluster_vips
                        .insert("10.96.0.10:80".into(), "10.9.0.1:8080".into());
                },
                "VIP 10.96.0.10:80",
            ),
            (
                "no VIP",
                |_, nb| nb.cluster_vips.clear(),
                "VIP 10.96.0.10:80 -> None",
            ),
            (
                "VIP without ready endpoints",
                |w, _| w.services[0].ready.clear(),
                "VIP 10.96.0.10:80",
            ),
            (
                "VIP of a deleted service",
                |w, _| w.services.clear(),
                "cluster VIP 10.96.0.10:80 has no service",
            ),
            (
                "policy misses a pod",
                |w, _| {
                    w.pods[1].labels.insert("app".into(), "web".into());
                },
                "policy default/p",
            ),
            (
                "policy holds an unknown port",
                |_, nb| {
                    nb.port_groups.insert(
                        policy_pg("default", "p"),
                        ["u-a".to_string(), "u-x".to_string()].into(),
                    );
                },
                "uuid u-x",
            ),
            (
                "policy without port group",
                |_, nb| nb.port_groups.clear(),
                "port group None",
            ),
            (
                "port not bound in SB",
                |_, nb| {
                    nb.bound.remove("default_a");
                },
                "logical port default_a has no SB Port_Binding",
            ),
            (
                "a switch twice",
                |_, nb| {
                    nb.names
                        .insert((tables::LOGICAL_SWITCH.into(), "ext_n1".into()), 2);
                },
                "Logical_Switch ext_n1 is on 2 rows",
            ),
            (
                "a NAT rule twice",
                |_, nb| {
                    let nat = nb.routers[0].nats[0].clone();
                    nb.routers[0].nats.push(nat);
                },
                "router GR_n1 has \"snat 172.31.0.1 10.1.0.0/16\" twice",
            ),
            (
                "a route twice",
                |_, nb| {
                    let r = nb.routers[0].routes[1].clone();
                    nb.routers[0].routes.push(r);
                },
                "router GR_n1 has \"0.0.0.0/0 via 172.31.0.100\" twice",
            ),
            (
                "management port missing",
                |_, nb| nb.mgmt_ports.clear(),
                "node n1: management port addresses None",
            ),
            (
                "management port with another MAC",
                |_, nb| {
                    nb.mgmt_ports
                        .insert("k8s-n1".into(), vec!["0a:58:0a:01:00:09 10.1.0.2".into()]);
                },
                "node n1: management port addresses Some",
            ),
            (
                "management port with a pod's IP",
                |_, nb| {
                    nb.mgmt_ports
                        .insert("k8s-n1".into(), vec![format!("{MGMT_MAC} 10.1.0.3")]);
                },
                "10.1.0.3 is used by",
            ),
            (
                "MAC not recorded",
                |w, _| {
                    w.mgmt_macs.clear();
                },
                "node n1: its agent recorded no management port MAC",
            ),
            (
                "two management links",
                |w, _| {
                    w.agents
                        .get_mut("n1")
                        .unwrap()
                        .mgmt_link_macs
                        .push(MGMT_MAC.into());
                },
                "node n1: management port on the host",
            ),
            (
                "management port twice on br-int",
                |w, _| w.agents.get_mut("n1").unwrap().mgmt_ports_on_br_int = 2,
                "node n1: management port on the host",
            ),
            (
                "interface MAC is not the recorded one",
                |w, _| {
                    w.agents.get_mut("n1").unwrap().mgmt_link_macs =
                        vec!["0a:58:0a:01:00:09".into()];
                },
                "recorded MAC Some(\"0a:58:0a:01:00:02\")",
            ),
            (
                "MAC recorded in capitals",
                |w, nb| {
                    w.mgmt_macs
                        .insert("n1".into(), MGMT_MAC.to_ascii_uppercase());
                    nb.mgmt_ports
                        .insert("k8s-n1".into(), vec![format!("{MGMT_MAC} 10.1.0.2")]);
                },
                "",
            ),
            (
                "no gateway router",
                |_, nb| nb.routers.clear(),
                "node n1: gateway routers bound to the chassis: []",
            ),
            (
                "a second router on the chassis",
                |_, nb| {
                    let mut r = nb.routers[0].clone();
                    r.name = "GR_other".into();
                    nb.routers.push(r);
                },
                "routers bound to the chassis: [\"GR_n1\", \"GR_other\"]",
            ),
            (
                "gateway router on another chassis",
                |_, nb| nb.routers[0].chassis = Some("n2".into()),
                "routers bound to the chassis: []",
            ),
            (
                "no default route",
                |_, nb| {
                    nb.routers[0].routes.pop();
                },
                "gateway has no default route",
            ),
            (
                "no SNAT",
                |_, nb| nb.routers[0].nats.clear(),
                "gateway has no SNAT rule",
            ),
            (
                "UDP load balancer missing",
                |_, nb| {
                    nb.gateway_lbs.remove(&(Proto::Udp, "GR_n1".into()));
                },
                "Udp load balancers []",
            ),
            (
                "TCP load balancer twice",
                |_, nb| {
                    nb.gateway_lbs.insert(
                        (Proto::Tcp, "GR_n1".into()),
                        vec!["lb-t".into(), "lb-x".into()],
                    );
                },
                "Tcp load balancers",
            ),
            (
                "TCP load balancer not attached",
                |_, nb| {
                    nb.routers[0].lbs.remove("lb-t");
                },
                "Tcp load balancers [\"lb-t\"]",
            ),
            (
                "no join switch port",
                |_, nb| {
                    nb.names
                        .remove(&(tables::LOGICAL_SWITCH_PORT.into(), "jtor-GR_n1".into()));
                },
                "Logical_Switch_Port jtor-GR_n1 is missing",
            ),
            (
                "no join router port",
                |_, nb| {
                    nb.names
                        .remove(&(tables::LOGICAL_ROUTER_PORT.into(), "rtoj-GR_n1".into()));
                },
                "Logical_Router_Port rtoj-GR_n1 is missing",
            ),
            (
                "no external switch",
                |_, nb| {
                    nb.names
                        .remove(&(tables::LOGICAL_SWITCH.into(), "ext_n1".into()));
                },
                "Logical_Switch ext_n1 is missing",
            ),
            (
                "a node without an agent needs no gateway",
                |w, nb| {
                    w.agents.clear();
                    w.mgmt_macs.clear();
                    nb.routers.clear();
                    nb.mgmt_ports.clear();
                },
                "",
            ),
        ];
        for (what, mutate, want) in cases {
            let (mut w, mut nb) = good();
            mutate(&mut w, &mut nb);
            let got: Vec<String> = check(&w, &nb).iter().map(|v| v.to_string()).collect();
            if want.is_empty() {
                assert!(got.is_empty(), "{what}: {got:?}");
            } else {
                assert!(
                    got.iter().any(|g| g.contains(want)),
                    "{what}: want {want:?} in {got:?}"
                );
            }
        }
    }
}
