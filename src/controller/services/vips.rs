//! Services and endpoints → load-balancer VIPs, as pure functions.
//!
//! Every event recomputes the full VIP set of one service and applies the difference, so port
//! changes, type changes, endpoint removal and protocol changes all converge. Endpoint ports are
//! matched to service ports by port name and protocol (how the Endpoints API links them), so
//! named target ports work. A port without ready endpoints uses its serving-and-terminating
//! ones (Kubernetes' terminating-endpoints fallback); a port with neither gets no VIP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::endpoints::EpSet;
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, NbOp, Proto, Val, names};

/// What sets a load balancer apart beyond its protocol. OVN's `affinity_timeout` and
/// `skip_snat` are per load balancer, so services that need them get VIPs on a load balancer of
/// their flavor; the plain flavor is the cluster / gateway load balancer of the protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flavor {
    /// ClientIP session affinity timeout in seconds (`options:affinity_timeout`).
    pub affinity: Option<u32>,
    /// `options:skip_snat=true`: the gateway's `lb_force_snat_ip` is not applied, so the
    /// backend sees the client's address (externalTrafficPolicy Local).
    pub skip_snat: bool,
}

impl Flavor {
    pub const PLAIN: Flavor = Flavor {
        affinity: None,
        skip_snat: false,
    };

    /// The `options` a load balancer of this flavor carries.
    pub fn options(self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        if let Some(t) = self.affinity {
            o.push(("affinity_timeout", t.to_string()));
        }
        if self.skip_snat {
            o.push(("skip_snat", "true".to_string()));
        }
        o
    }

    /// Name suffix, e.g. `-local-affinity-10800`.
    fn suffix(self) -> String {
        let mut s = String::new();
        if self.skip_snat {
            s.push_str("-local");
        }
        if let Some(t) = self.affinity {
            s.push_str(&format!("-affinity-{t}"));
        }
        s
    }
}

/// A gateway router and its load balancers (the plain ones made by the node's gateway init,
/// flavored ones by this controller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub router: String,
    /// The node the gateway belongs to (`external_ids:k8s-node`); node-local endpoints are
    /// the ones on it.
    pub node: Option<String>,
    pub physical_ip: Ipv4Addr,
    pub lbs: BTreeMap<(Proto, Flavor), String>,
}

/// The load balancers VIPs can go to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbTargets {
    /// Cluster-wide LB uuid per protocol and flavor (attached to every node switch).
    pub cluster: BTreeMap<(Proto, Flavor), String>,
    pub gateways: Vec<Gateway>,
    /// Every node (its switch is named after it) and its node-local load balancers, which
    /// hold the ClusterIPs of internalTrafficPolicy Local services with that node's endpoints.
    pub nodes: BTreeMap<String, BTreeMap<(Proto, Flavor), String>>,
}

impl LbTargets {
    /// Every LB uuid whose VIPs this controller owns.
    pub fn all_uuids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cluster.values().cloned().collect();
        for g in &self.gateways {
            v.extend(g.lbs.values().cloned());
        }
        for lbs in self.nodes.values() {
            v.extend(lbs.values().cloned());
        }
        v.sort();
        v.dedup();
        v
    }
}

/// A flavored load balancer a service needs and that does not exist yet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbWant {
    /// On every node switch.
    Cluster(Proto, Flavor),
    /// On one gateway router.
    Gateway(String, Proto, Flavor),
    /// On one node's switch only (internalTrafficPolicy Local).
    Node(String, Proto, Flavor),
}

impl LbWant {
    pub fn name(&self) -> String {
        match self {
            LbWant::Cluster(p, f) => format!("cluster-lb-{}{}", p.lower(), f.suffix()),
            LbWant::Gateway(gr, p, f) => format!("{gr}-{}{}", p.lower(), f.suffix()),
            LbWant::Node(n, p, f) => format!("node-lb-{n}-{}{}", p.lower(), f.suffix()),
        }
    }

    fn proto_flavor(&self) -> (Proto, Flavor) {
        match self {
            LbWant::Cluster(p, f) | LbWant::Gateway(_, p, f) | LbWant::Node(_, p, f) => (*p, *f),
        }
    }

    /// Its `external_ids`, which is how `read_targets` finds it again.
    pub fn external_ids(&self) -> Vec<(&'static str, String)> {
        let (p, f) = self.proto_flavor();
        let mut e = vec![(names::EXT_SERVICE_LB, p.lower().to_string())];
        if let Some(t) = f.affinity {
            e.push((names::EXT_SERVICE_LB_AFFINITY, t.to_string()));
        }
        if f.skip_snat {
            e.push((names::EXT_SERVICE_LB_SKIP_SNAT, "yes".to_string()));
        }
        match self {
            LbWant::Gateway(gr, ..) => e.push((names::EXT_SERVICE_LB_GATEWAY, gr.clone())),
            LbWant::Node(n, ..) => e.push((names::EXT_SERVICE_LB_NODE, n.clone())),
            LbWant::Cluster(..) => {}
        }
        e
    }

    /// Reads one flavored load balancer back from its `external_ids`.
    pub fn parse(ext: &BTreeMap<String, String>) -> Option<LbWant> {
        let proto = Proto::parse(&ext.get(names::EXT_SERVICE_LB)?.to_uppercase())?;
        let flavor = Flavor {
            affinity: match ext.get(names::EXT_SERVICE_LB_AFFINITY) {
                Some(t) => Some(t.parse().ok()?),
                None => None,
            },
            skip_snat: ext.get(names::EXT_SERVICE_LB_SKIP_SNAT).map(String::as_str) == Some("yes"),
        };
        Some(
            match (
                ext.get(names::EXT_SERVICE_LB_GATEWAY),
                ext.get(names::EXT_SERVICE_LB_NODE),
            ) {
                (Some(gr), _) => LbWant::Gateway(gr.clone(), proto, flavor),
                (None, Some(n)) => LbWant::Node(n.clone(), proto, flavor),
                (None, None) => LbWant::Cluster(proto, flavor),
            },
        )
    }
}

/// Creates flavored load balancers and attaches them: cluster ones to every node switch in
/// `switches`, gateway ones to their router. One transaction.
pub fn create_lb_ops(wants: &[LbWant], switches: &[String]) -> Vec<NbOp> {
    let mut out = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        let id = format!("svclb{i}");
        let (p, f) = w.proto_flavor();
        let mut columns = vec![
            ColVal::set(col::NAME, Val::str(w.name())),
            ColVal::set(col::PROTOCOL, Val::str(p.lower())),
        ];
        columns.extend(
            w.external_ids()
                .into_iter()
                .map(|(k, v)| ColVal::key(col::EXTERNAL_IDS, k, Val::str(v))),
        );
        columns.extend(
            f.options()
                .into_iter()
                .map(|(k, v)| ColVal::key(col::OPTIONS, k, Val::str(v))),
        );
        out.push(NbOp::Db(DbOp::Create {
            table: nb::LOAD_BALANCER.into(),
            id: Some(id.clone()),
            columns,
        }));
        let attach = |table: &str, record: &str| {
            NbOp::Db(DbOp::Add {
                table: table.into(),
                record: record.into(),
                column: col::LOAD_BALANCER.into(),
                values: vec![Val::Ref(id.clone())],
            })
        };
        match w {
            LbWant::Cluster(..) => {
                out.extend(switches.iter().map(|s| attach(nb::LOGICAL_SWITCH, s)))
            }
            LbWant::Gateway(gr, ..) => out.push(attach(nb::LOGICAL_ROUTER, gr)),
            LbWant::Node(n, ..) => out.push(attach(nb::LOGICAL_SWITCH, &names::node_switch(n))),
        }
    }
    out
}

/// Attaches the flavored cluster load balancers to node switches that lack them (new nodes,
/// or a switch someone edited). `switches`: node switch → its `load_balancer` uuids.
pub fn attach_ops(
    targets: &LbTargets,
    switches: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<NbOp> {
    let mut out = Vec::new();
    for ((_, flavor), lb) in &targets.cluster {
        // The master attaches the plain ones.
        if *flavor == Flavor::PLAIN {
            continue;
        }
        for (sw, have) in switches {
            if !have.contains(lb) {
                out.push(NbOp::LsLbAdd {
                    switch: sw.clone(),
                    lb: lb.clone(),
                });
            }
        }
    }
    for (node, lbs) in &targets.nodes {
        let sw = names::node_switch(node);
        let Some(have) = switches.get(&sw) else {
            continue;
        };
        for lb in lbs.values().filter(|lb| !have.contains(*lb)) {
            out.push(NbOp::LsLbAdd {
                switch: sw.clone(),
                lb: lb.clone(),
            });
        }
    }
    out
}

/// (load balancer uuid, `"ip:port"`) → `"ip:port,ip:port"`.
pub type VipMap = BTreeMap<(String, String), String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub vips: VipMap,
    /// Flavored load balancers this service needs that do not exist yet; its VIPs there are
    /// programmed once they do.
    pub missing: std::collections::BTreeSet<LbWant>,
    /// Problems with this service's input, each naming the service and what is wrong.
    pub warnings: Vec<String>,
}

fn port_label(p: &ServicePort) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("port {n:?} ({})", p.port),
        _ => format!("port {}", p.port),
    }
}

/// One candidate backend of a service port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cand {
    addr: String,
    node: Option<String>,
    ready: bool,
    terminating_serving: bool,
}

/// The endpoints of service port `sp` (protocol `proto`): every usable address with its
/// conditions. Bad addresses are reported once here, whatever load balancers they feed.
fn port_endpoints(
    key: &str,
    sp: &ServicePort,
    proto: Proto,
    eps: &EpSet,
    warnings: &mut Vec<String>,
) -> Vec<Cand> {
    let want_name = sp.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut matched_port = false;
    for group in eps {
        let Some(ep) = group
            .ports
            .iter()
            .find(|ep| ep.name == want_name && Proto::parse(&ep.protocol) == Some(proto))
        else {
            continue;
        };
        matched_port = true;
        for a in &group.endpoints {
            if !a.ready && !a.terminating_serving {
                continue;
            }
            match a.ip.parse::<Ipv4Addr>() {
                Ok(ip) => out.push(Cand {
                    addr: format!("{ip}:{}", ep.port),
                    node: a.node.clone(),
                    ready: a.ready,
                    terminating_serving: a.terminating_serving,
                }),
                Err(_) => warnings.push(format!(
                    "service {key}: endpoint address {:?} is not an IPv4 address; skipped",
                    a.ip
                )),
            }
        }
    }
    let has_ports = eps.iter().any(|g| !g.ports.is_empty());
    if has_ports && !matched_port {
        warnings.push(format!(
            "service {key}: {} ({}) matches no endpoint port; check its name and targetPort",
            port_label(sp),
            proto.upper()
        ));
    }
    out
}

/// The backends (`"ip:port,..."`, sorted; empty when none) among `cands` on `node` (all nodes
/// when `None`): the ready ones, or when there is none, the serving-and-terminating ones, so
/// connections keep working while a rollout replaces the last ready pod.
fn pick(cands: &[Cand], node: Option<&str>) -> String {
    let here = |c: &&Cand| node.is_none() || c.node.as_deref() == node;
    let mut b: Vec<&str> = cands
        .iter()
        .filter(here)
        .filter(|c| c.ready)
        .map(|c| c.addr.as_str())
        .collect();
    if b.is_empty() {
        b = cands
            .iter()
            .filter(here)
            .filter(|c| c.terminating_serving)
            .map(|c| c.addr.as_str())
            .collect();
    }
    b.sort();
    b.dedup();
    b.join(",")
}

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The largest `affinity_timeout` OVN accepts.
const MAX_AFFINITY_TIMEOUT: u32 = 65_535;

/// The ClientIP affinity timeout of a service, when it asks for affinity.
fn affinity(key: &str, spec: &ServiceSpec, warnings: &mut Vec<String>) -> Option<u32> {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let t = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    Some(match t {
        None => DEFAULT_AFFINITY_TIMEOUT,
        Some(t) if t < 1 => {
            warnings.push(format!(
                "service {key}: sessionAffinityConfig timeoutSeconds {t} is not positive; using {DEFAULT_AFFINITY_TIMEOUT}"
            ));
            DEFAULT_AFFINITY_TIMEOUT
        }
        Some(t) if t as u32 > MAX_AFFINITY_TIMEOUT => {
            warnings.push(format!(
                "service {key}: sessionAffinityConfig timeoutSeconds {t} is above OVN's maximum; using {MAX_AFFINITY_TIMEOUT}"
            ));
            MAX_AFFINITY_TIMEOUT
        }
        Some(t) => t as u32,
    })
}

/// Whether an externalIP or LoadBalancer ingress IP may be programmed as a VIP, as far as
/// it can be told without the cluster's networks (the special ranges and the join network).
/// The controller screens the Service with the cluster's networks too
/// (`validate::screen_service`) before planning; both use the one check,
/// `validate::forbidden_vip`.
pub fn external_address_allowed(ip: Ipv4Addr) -> Result<(), String> {
    match super::validate::forbidden_vip(ip, &super::validate::Reserved::default()) {
        Some(why) => Err(format!("{ip} is {why}")),
        None => Ok(()),
    }
}

/// externalIPs and (type LoadBalancer) `status.loadBalancer.ingress[].ip`, each checked by
/// [`external_address_allowed`]; problems are reported and the address skipped.
pub fn external_addresses(key: &str, svc: &Service, warnings: &mut Vec<String>) -> Vec<Ipv4Addr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut cands: Vec<(&str, &str)> = spec
        .external_ips
        .iter()
        .flatten()
        .map(|e| ("externalIP", e.as_str()))
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        cands.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref())
                .map(|ip| ("LoadBalancer ingress IP", ip)),
        );
    }
    let mut out = Vec::new();
    for (what, e) in cands {
        match e.parse::<Ipv4Addr>() {
            Ok(ip) => match external_address_allowed(ip) {
                Ok(()) => out.push(ip),
                Err(why) => warnings.push(format!("service {key}: {what} {e:?} refused: {why}")),
            },
            Err(_) => warnings.push(format!(
                "service {key}: {what} {e:?} is not an IPv4 address; skipped"
            )),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The VIPs one service should have.
pub fn service_vips(
    key: &str,
    svc: &Service,
    eps: Option<&EpSet>,
    lbs: &LbTargets,
    nodeport: bool,
) -> Desired {
    let mut d = Desired::default();
    let Some(spec) = &svc.spec else {
        return d;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return d;
    }
    let cluster_ip = cluster_ip(key, spec, &mut d.warnings);
    let external = external_addresses(key, svc, &mut d.warnings);
    let with_nodeports = nodeport && matches!(ty, "NodePort" | "LoadBalancer");
    if cluster_ip.is_none() && external.is_empty() && !with_nodeports {
        return d;
    }
    let Some(eps) = eps else {
        return d;
    };
    let affinity = affinity(key, spec, &mut d.warnings);
    // externalTrafficPolicy Local: traffic arriving at a node goes only to that node's
    // endpoints and keeps its client address.
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let s = ServiceShape {
        key,
        cluster_ip,
        external,
        with_nodeports,
        cluster_flavor: Flavor {
            affinity,
            skip_snat: false,
        },
        gateway_flavor: Flavor {
            affinity,
            skip_snat: local,
        },
        local,
        // internalTrafficPolicy Local: a pod reaches the ClusterIP only through its own
        // node's endpoints, so the ClusterIP goes on each node's own load balancer instead of
        // the cluster-wide one.
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
    };
    for sp in spec.ports.iter().flatten() {
        let Some(proto) = port_proto(key, sp, &mut d.warnings) else {
            continue;
        };
        let cands = port_endpoints(key, sp, proto, eps, &mut d.warnings);
        let all = pick(&cands, None);
        if all.is_empty() {
            continue;
        }
        let port = Port {
            sp,
            proto,
            cands: &cands,
            all: &all,
        };
        node_local_vips(&s, &port, lbs, &mut d);
        cluster_lb_vips(&s, &port, lbs, &mut d);
        gateway_vips(&s, &port, lbs, &mut d);
    }
    d
}

/// What one service's VIPs depend on besides its ports.
struct ServiceShape<'a> {
    key: &'a str,
    cluster_ip: Option<Ipv4Addr>,
    external: Vec<Ipv4Addr>,
    with_nodeports: bool,
    cluster_flavor: Flavor,
    gateway_flavor: Flavor,
    local: bool,
    internal_local: bool,
}

/// One service port with a usable protocol and at least one ready-or-serving endpoint.
struct Port<'a> {
    sp: &'a ServicePort,
    proto: Proto,
    cands: &'a [Cand],
    /// The backends from every node.
    all: &'a str,
}

/// The service's IPv4 ClusterIP; headless services are resolved by DNS, not load-balanced.
fn cluster_ip(key: &str, spec: &ServiceSpec, warnings: &mut Vec<String>) -> Option<Ipv4Addr> {
    match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(s) => match s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                warnings.push(format!(
                    "service {key}: clusterIP {s:?} is not an IPv4 address; no ClusterIP VIPs"
                ));
                None
            }
        },
    }
}

/// A port's protocol (TCP when unset), or `None` (with a warning) for an unsupported protocol
/// or a port number out of range.
fn port_proto(key: &str, sp: &ServicePort, warnings: &mut Vec<String>) -> Option<Proto> {
    let proto = match sp.protocol.as_deref() {
        None | Some("") => {
            warnings.push(format!(
                "service {key}: {} has no protocol; assuming TCP",
                port_label(sp)
            ));
            Proto::Tcp
        }
        Some(p) => match Proto::parse(p) {
            Some(p) => p,
            None => {
                warnings.push(format!(
                    "service {key}: {} has unsupported protocol {p:?}; skipped",
                    port_label(sp)
                ));
                return None;
            }
        },
    };
    if !(1..=65535).contains(&sp.port) {
        warnings.push(format!(
            "service {key}: {} is out of range; skipped",
            port_label(sp)
        ));
        return None;
    }
    Some(proto)
}

/// internalTrafficPolicy Local: the ClusterIP on each node's own load balancer, with that
/// node's endpoints.
fn node_local_vips(s: &ServiceShape, port: &Port, lbs: &LbTargets, d: &mut Desired) {
    let (true, Some(ip)) = (s.internal_local, s.cluster_ip) else {
        return;
    };
    for (node, node_lbs) in &lbs.nodes {
        let b = pick(port.cands, Some(node));
        if b.is_empty() {
            continue;
        }
        match node_lbs.get(&(port.proto, s.cluster_flavor)) {
            Some(lb) => {
                d.vips
                    .insert((lb.clone(), format!("{ip}:{}", port.sp.port)), b);
            }
            None => {
                d.missing
                    .insert(LbWant::Node(node.clone(), port.proto, s.cluster_flavor));
            }
        }
    }
}

/// The ClusterIP (unless node-local) and the external addresses on the cluster load balancer.
fn cluster_lb_vips(s: &ServiceShape, port: &Port, lbs: &LbTargets, d: &mut Desired) {
    let on_cluster_lb: Vec<&Ipv4Addr> = s
        .cluster_ip
        .iter()
        .filter(|_| !s.internal_local)
        .chain(&s.external)
        .collect();
    if on_cluster_lb.is_empty() {
        // Nothing for the cluster load balancer (internalTrafficPolicy Local).
    } else if lbs.cluster.contains_key(&(port.proto, Flavor::PLAIN)) {
        match lbs.cluster.get(&(port.proto, s.cluster_flavor)) {
            Some(lb) => {
                for ip in on_cluster_lb {
                    d.vips.insert(
                        (lb.clone(), format!("{ip}:{}", port.sp.port)),
                        port.all.to_string(),
                    );
                }
            }
            None => {
                d.missing
                    .insert(LbWant::Cluster(port.proto, s.cluster_flavor));
            }
        }
    } else {
        d.warnings.push(format!(
            "service {}: no cluster {} load balancer yet (is the master running?)",
            s.key,
            port.proto.upper()
        ));
    }
}

/// The external addresses and (with NodePorts) the node's physical IP on each gateway router
/// that serves the protocol; externalTrafficPolicy Local keeps each gateway to its node's
/// endpoints.
fn gateway_vips(s: &ServiceShape, port: &Port, lbs: &LbTargets, d: &mut Desired) {
    for g in &lbs.gateways {
        // A gateway without the plain load balancer of this protocol does not serve it.
        if !g.lbs.contains_key(&(port.proto, Flavor::PLAIN)) {
            continue;
        }
        let b = if s.local {
            match g.node.as_deref() {
                Some(n) => pick(port.cands, Some(n)),
                None => String::new(),
            }
        } else {
            port.all.to_string()
        };
        let mut vips: Vec<String> = s
            .external
            .iter()
            .map(|ip| format!("{ip}:{}", port.sp.port))
            .collect();
        if s.with_nodeports
            && let Some(np) = port.sp.node_port.filter(|p| *p > 0)
        {
            vips.push(format!("{}:{np}", g.physical_ip));
        }
        if b.is_empty() || vips.is_empty() {
            continue;
        }
        let Some(lb) = g.lbs.get(&(port.proto, s.gateway_flavor)) else {
            d.missing.insert(LbWant::Gateway(
                g.router.clone(),
                port.proto,
                s.gateway_flavor,
            ));
            continue;
        };
        for v in vips {
            d.vips.insert((lb.clone(), v), b.clone());
        }
    }
}

/// Commands that turn `have` into `want`: one `set` per load balancer for new or changed VIPs
/// and one `remove` per load balancer for VIPs to drop.
pub fn diff_ops(have: &VipMap, want: &VipMap) -> Vec<NbOp> {
    let mut sets: BTreeMap<&str, Vec<ColVal>> = BTreeMap::new();
    let mut removes: BTreeMap<&str, Vec<Val>> = BTreeMap::new();
    for ((lb, vip), b) in want {
        if have.get(&(lb.clone(), vip.clone())) != Some(b) {
            sets.entry(lb)
                .or_default()
                .push(ColVal::key(col::VIPS, vip, b.as_str()));
        }
    }
    for (lb, vip) in have.keys() {
        if !want.contains_key(&(lb.clone(), vip.clone())) {
            removes.entry(lb).or_default().push(Val::str(vip.as_str()));
        }
    }
    let mut out = Vec::new();
    for (lb, values) in removes {
        out.push(NbOp::Db(DbOp::Remove {
            table: nb::LOAD_BALANCER.into(),
            record: lb.to_string(),
            column: col::VIPS.into(),
            values,
            if_exists: true,
        }));
    }
    for (lb, columns) in sets {
        out.push(NbOp::Db(DbOp::Set {
            table: nb::LOAD_BALANCER.into(),
            record: lb.to_string(),
            columns,
            if_exists: false,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::services::endpoints::from_endpoints;
    use k8s_openapi::api::core::v1::{
        EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const P: Flavor = Flavor::PLAIN;

    fn lbs() -> LbTargets {
        LbTargets {
            cluster: [
                ((Proto::Tcp, P), "ct".into()),
                ((Proto::Udp, P), "cu".into()),
                ((Proto::Sctp, P), "cs".into()),
            ]
            .into(),
            gateways: vec![
                Gateway {
                    router: "GR_a".into(),
                    node: Some("a".into()),
                    physical_ip: "172.30.0.1".parse().unwrap(),
                    lbs: [
                        ((Proto::Tcp, P), "ga-t".into()),
                        ((Proto::Udp, P), "ga-u".into()),
                    ]
                    .into(),
                },
                Gateway {
                    router: "GR_b".into(),
                    node: Some("b".into()),
                    physical_ip: "172.30.0.2".parse().unwrap(),
                    lbs: [((Proto::Tcp, P), "gb-t".into())].into(),
                },
            ],
            nodes: [
                ("a".to_string(), BTreeMap::new()),
                ("b".to_string(), BTreeMap::new()),
            ]
            .into(),
        }
    }

    fn port(
        name: Option<&str>,
        proto: Option<&str>,
        port: i32,
        target: IntOrString,
        node_port: Option<i32>,
    ) -> ServicePort {
        ServicePort {
            name: name.map(String::from),
            protocol: proto.map(String::from),
            port,
            target_port: Some(target),
            node_port,
            ..Default::default()
        }
    }

    fn svc(ty: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(ty.into()),
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// (addresses, [(port name, protocol, port)]) per subset.
    type Subset<'a> = (Vec<&'a str>, Vec<(Option<&'a str>, &'a str, i32)>);

    fn eps(subsets: Vec<Subset>) -> Endpoints {
        Endpoints {
            subsets: Some(
                subsets
                    .into_iter()
                    .map(|(ips, ports)| EndpointSubset {
                        addresses: Some(
                            ips.into_iter()
                                .map(|ip| EndpointAddress {
                                    ip: ip.into(),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ports: Some(
                            ports
                                .into_iter()
                                .map(|(n, p, port)| EndpointPort {
                                    name: n.map(String::from),
                                    protocol: Some(p.into()),
                                    port,
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn vip(lb: &str, v: &str) -> (String, String) {
        (lb.into(), v.into())
    }

    #[test]
    fn cluster_ip_tcp_and_udp() {
        let s = svc(
            "ClusterIP",
            "10.96.0.10",
            vec![
                port(Some("web"), Some("TCP"), 80, IntOrString::Int(8080), None),
                port(
                    Some("dns"),
                    Some("UDP"),
                    53,
                    IntOrString::String("dns".into()),
                    None,
                ),
            ],
        );
        let e = eps(vec![(
            vec!["10.1.0.6", "10.1.1.5"],
            vec![(Some("web"), "TCP", 8080), (Some("dns"), "UDP", 5353)],
        )]);
        let d = service_vips("ns/s", &s, Some(&from_endpoints(&e)), &lbs(), true);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.vips.len(), 2);
        assert_eq!(
            d.vips[&vip("ct", "10.96.0.10:80")],
            "10.1.0.6:8080,10.1.1.5:8080"
        );
        assert_eq!(
            d.vips[&vip("cu", "10.96.0.10:53")],
            "10.1.0.6:5353,10.1.1.5:5353"
        );
    }

    #[test]
    fn nodeport_goes_to_every_gateway_of_that_protocol_and_keeps_cluster_ip() {
        let s = svc(
            "NodePort",
            "10.96.0.11",
            vec![
                port(None, Some("TCP"), 80, IntOrString::Int(80), Some(30080)),
                port(
                    Some("u"),
                    Some("UDP"),
                    81,
                    IntOrString::Int(81),
                    Some(30081),
                ),
            ],
        );
        let e = eps(vec![(
            vec!["10.1.0.6"],
            vec![(None, "TCP", 80), (Some("u"), "UDP", 81)],
        )]);
        let d = service_vips("ns/np", &s, Some(&from_endpoints(&e)), &lbs(), true);
        assert_eq!(d.vips[&vip("ct", "10.96.0.11:80")], "10.1.0.6:80");
        assert_eq!(d.vips[&vip("ga-t", "172.30.0.1:30080")], "10.1.0.6:80");
        assert_eq!(d.vips[&vip("gb-t", "172.30.0.2:30080")], "10.1.0.6:80");
        // The reference's UDP bug: a UDP NodePort service got no ClusterIP VIP. Fixed.
        assert_eq!(d.vips[&vip("cu", "10.96.0.11:81")], "10.1.0.6:81");
        assert_eq!(d.vips[&vip("ga-u", "172.30.0.1:30081")], "10.1.0.6:81");
        assert_eq!(d.vips.len(), 5);
        // Without -nodeport only the ClusterIP VIPs.
        let d = service_vips("ns/np", &s, Some(&from_endpoints(&e)), &lbs(), false);
        assert_eq!(d.vips.len(), 2);
    }

    #[test]
    fn headless_external_name_and_no_endpoints_give_nothing() {
        let e = eps(vec![(vec!["10.1.0.6"], vec![(None, "TCP", 80)])]);
        let p = || vec![port(None, Some("TCP"), 80, IntOrString::Int(80), None)];
        assert!(
            service_vips(
                "a/h",
                &svc("ClusterIP", "None", p()),
                Some(&from_endpoints(&e)),
                &lbs(),
                true
            )
            .vips
            .is_empty()
        );
        assert!(
            service_vips(
                "a/x",
                &svc("ExternalName", "", p()),
                Some(&from_endpoints(&e)),
                &lbs(),
                true
            )
            .vips
            .is_empty()
        );
        assert!(
            service_vips(
                "a/n",
                &svc("ClusterIP", "10.96.0.1", p()),
                None,
                &lbs(),
                true
            )
            .vips
            .is_empty()
        );
        let empty = Endpoints {
            subsets: Some(vec![]),
            ..Default::default()
        };
        let d = service_vips(
            "a/n",
            &svc("ClusterIP", "10.96.0.1", p()),
            Some(&from_endpoints(&empty)),
            &lbs(),
            true,
        );
        assert!(d.vips.is_empty() && d.warnings.is_empty());
    }

    #[test]
    fn external_ips_on_cluster_and_gateway_lbs() {
        let mut s = svc(
            "ClusterIP",
            "10.96.0.12",
            vec![port(None, Some("TCP"), 443, IntOrString::Int(8443), None)],
        );
        s.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.10".into(), "bogus".into()]);
        let e = eps(vec![(vec!["10.1.0.7"], vec![(None, "TCP", 8443)])]);
        let d = service_vips("ns/ext", &s, Some(&from_endpoints(&e)), &lbs(), false);
        assert_eq!(d.vips[&vip("ct", "192.0.2.10:443")], "10.1.0.7:8443");
        assert_eq!(d.vips[&vip("ga-t", "192.0.2.10:443")], "10.1.0.7:8443");
        assert_eq!(d.vips[&vip("gb-t", "192.0.2.10:443")], "10.1.0.7:8443");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("ns/ext") && w.contains("bogus"))
        );
    }

    #[test]
    fn bad_input_is_reported_and_the_rest_is_programmed() {
        let s = svc(
            "ClusterIP",
            "10.96.0.13",
            vec![
                port(Some("a"), None, 80, IntOrString::Int(80), None),
                port(Some("b"), Some("FOO"), 81, IntOrString::Int(81), None),
                port(
                    Some("c"),
                    Some("TCP"),
                    82,
                    IntOrString::String("nomatch".into()),
                    None,
                ),
                port(Some("d"), Some("TCP"), 83, IntOrString::Int(83), None),
            ],
        );
        let e = eps(vec![(
            vec!["10.1.0.8", "not-an-ip"],
            vec![(Some("a"), "TCP", 80), (Some("d"), "TCP", 83)],
        )]);
        let d = service_vips("ns/bad", &s, Some(&from_endpoints(&e)), &lbs(), true);
        assert_eq!(d.vips[&vip("ct", "10.96.0.13:80")], "10.1.0.8:80");
        assert_eq!(d.vips[&vip("ct", "10.96.0.13:83")], "10.1.0.8:83");
        assert_eq!(d.vips.len(), 2);
        let w = d.warnings.join("\n");
        assert!(w.contains("ns/bad") && w.contains("no protocol"), "{w}");
        assert!(w.contains("unsupported protocol \"FOO\""), "{w}");
        assert!(
            w.contains("port \"c\" (82) (TCP) matches no endpoint port"),
            "{w}"
        );
        assert!(w.contains("\"not-an-ip\" is not an IPv4 address"), "{w}");
    }

    #[test]
    fn sctp_goes_to_its_own_load_balancers() {
        let s = svc(
            "NodePort",
            "10.96.0.15",
            vec![port(
                Some("s"),
                Some("SCTP"),
                9000,
                IntOrString::Int(9000),
                Some(30900),
            )],
        );
        let e = eps(vec![(vec!["10.1.0.11"], vec![(Some("s"), "SCTP", 9000)])]);
        let mut targets = lbs();
        targets.gateways[0]
            .lbs
            .insert((Proto::Sctp, P), "ga-s".into());
        let d = service_vips("ns/sctp", &s, Some(&from_endpoints(&e)), &targets, true);
        assert_eq!(d.vips[&vip("cs", "10.96.0.15:9000")], "10.1.0.11:9000");
        assert_eq!(d.vips[&vip("ga-s", "172.30.0.1:30900")], "10.1.0.11:9000");
        // GR_b has no SCTP load balancer: nothing there, and no TCP/UDP LB is used instead.
        assert_eq!(d.vips.len(), 2);
    }

    #[test]
    fn not_ready_addresses_are_not_backends() {
        let s = svc(
            "ClusterIP",
            "10.96.0.14",
            vec![port(None, Some("TCP"), 80, IntOrString::Int(80), None)],
        );
        let mut e = eps(vec![(vec!["10.1.0.9"], vec![(None, "TCP", 80)])]);
        e.subsets.as_mut().unwrap()[0].not_ready_addresses = Some(vec![EndpointAddress {
            ip: "10.1.0.10".into(),
            ..Default::default()
        }]);
        let d = service_vips("ns/r", &s, Some(&from_endpoints(&e)), &lbs(), true);
        assert_eq!(d.vips[&vip("ct", "10.96.0.14:80")], "10.1.0.9:80");
    }

    #[test]
    fn diff_sets_changes_and_removes_leftovers_per_lb() {
        let have: VipMap = [
            (vip("ct", "10.96.0.1:80"), "10.1.0.5:80".to_string()),
            (vip("ct", "10.96.0.1:81"), "10.1.0.5:81".to_string()),
            (vip("ga-t", "172.30.0.1:30080"), "10.1.0.5:80".to_string()),
        ]
        .into();
        let want: VipMap = [
            (vip("ct", "10.96.0.1:80"), "10.1.0.5:80".to_string()),
            (vip("ct", "10.96.0.1:82"), "10.1.0.6:82".to_string()),
        ]
        .into();
        let mut t = crate::ovn::NbTxn::new();
        t.extend(diff_ops(&have, &want));
        assert_eq!(
            t.render().join(" "),
            "-- --if-exists remove Load_Balancer ct vips \"10.96.0.1:81\" \
             -- --if-exists remove Load_Balancer ga-t vips \"172.30.0.1:30080\" \
             -- set Load_Balancer ct vips:\"10.96.0.1:82\"=\"10.1.0.6:82\""
        );
        assert!(diff_ops(&want, &want).is_empty());
    }
    fn ep(
        ip: &str,
        node: &str,
        ready: bool,
        term: bool,
    ) -> crate::controller::services::endpoints::Ep {
        crate::controller::services::endpoints::Ep {
            ip: ip.into(),
            node: Some(node.into()),
            ready,
            terminating_serving: term,
        }
    }

    fn set(eps: Vec<crate::controller::services::endpoints::Ep>) -> EpSet {
        vec![crate::controller::services::endpoints::EpGroup {
            ports: vec![crate::controller::services::endpoints::EpPort {
                name: String::new(),
                protocol: "TCP".into(),
                port: 8080,
            }],
            endpoints: eps,
        }]
    }

    fn np_svc() -> Service {
        svc(
            "NodePort",
            "10.96.0.20",
            vec![port(
                None,
                Some("TCP"),
                80,
                IntOrString::Int(8080),
                Some(30080),
            )],
        )
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let s = np_svc();
        let d = service_vips(
            "ns/t",
            &s,
            Some(&set(vec![
                ep("10.1.0.5", "a", true, false),
                ep("10.1.0.6", "a", false, true),
            ])),
            &lbs(),
            true,
        );
        assert_eq!(d.vips[&vip("ct", "10.96.0.20:80")], "10.1.0.5:8080");
        let d = service_vips(
            "ns/t",
            &s,
            Some(&set(vec![
                ep("10.1.0.6", "a", false, true),
                ep("10.1.0.7", "b", false, true),
                ep("10.1.0.8", "b", false, false),
            ])),
            &lbs(),
            true,
        );
        assert_eq!(
            d.vips[&vip("ct", "10.96.0.20:80")],
            "10.1.0.6:8080,10.1.0.7:8080"
        );
        // Neither ready nor serving: no VIP at all.
        let d = service_vips(
            "ns/t",
            &s,
            Some(&set(vec![ep("10.1.0.8", "b", false, false)])),
            &lbs(),
            true,
        );
        assert!(d.vips.is_empty());
    }

    #[test]
    fn client_ip_affinity_goes_to_a_load_balancer_of_its_timeout() {
        let mut s = np_svc();
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        let e = set(vec![ep("10.1.0.5", "a", true, false)]);
        let f = Flavor {
            affinity: Some(10_800),
            skip_snat: false,
        };
        // Not there yet: asked for, and nothing is put on the plain load balancers.
        let d = service_vips("ns/aff", &s, Some(&e), &lbs(), true);
        assert!(d.vips.is_empty(), "{:?}", d.vips);
        assert_eq!(
            d.missing.iter().cloned().collect::<Vec<_>>(),
            vec![
                LbWant::Cluster(Proto::Tcp, f),
                LbWant::Gateway("GR_a".into(), Proto::Tcp, f),
                LbWant::Gateway("GR_b".into(), Proto::Tcp, f),
            ]
        );
        let mut t = lbs();
        t.cluster.insert((Proto::Tcp, f), "ct-aff".into());
        t.gateways[0].lbs.insert((Proto::Tcp, f), "ga-aff".into());
        t.gateways[1].lbs.insert((Proto::Tcp, f), "gb-aff".into());
        let d = service_vips("ns/aff", &s, Some(&e), &t, true);
        assert!(d.missing.is_empty());
        assert_eq!(d.vips[&vip("ct-aff", "10.96.0.20:80")], "10.1.0.5:8080");
        assert_eq!(d.vips[&vip("ga-aff", "172.30.0.1:30080")], "10.1.0.5:8080");
        assert_eq!(d.vips.len(), 3);
        // A timeout above OVN's maximum is clamped, with a warning.
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
            client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                timeout_seconds: Some(86_400),
            }),
        });
        let d = service_vips("ns/aff", &s, Some(&e), &t, true);
        assert!(d.missing.contains(&LbWant::Cluster(
            Proto::Tcp,
            Flavor {
                affinity: Some(65_535),
                skip_snat: false
            }
        )));
        assert!(
            d.warnings.iter().any(|w| w.contains("86400")),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn external_traffic_policy_local_uses_node_endpoints_without_snat() {
        let mut s = np_svc();
        s.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let e = set(vec![
            ep("10.1.0.5", "a", true, false),
            ep("10.1.1.5", "b", true, false),
        ]);
        let local = Flavor {
            affinity: None,
            skip_snat: true,
        };
        let mut t = lbs();
        t.gateways[0]
            .lbs
            .insert((Proto::Tcp, local), "ga-local".into());
        let d = service_vips("ns/l", &s, Some(&e), &t, true);
        // The ClusterIP keeps every endpoint; each gateway only its node's, on its no-SNAT LB.
        assert_eq!(
            d.vips[&vip("ct", "10.96.0.20:80")],
            "10.1.0.5:8080,10.1.1.5:8080"
        );
        assert_eq!(
            d.vips[&vip("ga-local", "172.30.0.1:30080")],
            "10.1.0.5:8080"
        );
        assert!(!d.vips.contains_key(&vip("ga-t", "172.30.0.1:30080")));
        assert_eq!(
            d.missing.iter().cloned().collect::<Vec<_>>(),
            vec![LbWant::Gateway("GR_b".into(), Proto::Tcp, local)]
        );
        // A node without local endpoints gets no VIP (and needs no load balancer).
        let only_a = set(vec![ep("10.1.0.5", "a", true, false)]);
        let d = service_vips("ns/l", &s, Some(&only_a), &t, true);
        assert!(d.missing.is_empty(), "{:?}", d.missing);
        assert!(!d.vips.keys().any(|(_, v)| v == "172.30.0.2:30080"));
    }

    #[test]
    fn load_balancer_ingress_ips_are_programmed_like_external_ips_with_the_same_check() {
        let mut s = svc(
            "LoadBalancer",
            "10.96.0.21",
            vec![port(
                None,
                Some("TCP"),
                443,
                IntOrString::Int(8080),
                Some(30443),
            )],
        );
        s.spec.as_mut().unwrap().external_ips = Some(vec!["127.0.0.1".into()]);
        s.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
                ingress: Some(vec![
                    k8s_openapi::api::core::v1::LoadBalancerIngress {
                        ip: Some("198.51.100.7".into()),
                        ..Default::default()
                    },
                    k8s_openapi::api::core::v1::LoadBalancerIngress {
                        ip: Some("224.0.0.1".into()),
                        ..Default::default()
                    },
                    k8s_openapi::api::core::v1::LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let e = set(vec![ep("10.1.0.5", "a", true, false)]);
        let d = service_vips("ns/lb", &s, Some(&e), &lbs(), true);
        for lb in ["ct", "ga-t", "gb-t"] {
            assert_eq!(d.vips[&vip(lb, "198.51.100.7:443")], "10.1.0.5:8080");
        }
        let w = d.warnings.join("\n");
        assert!(w.contains("externalIP \"127.0.0.1\" refused"), "{w}");
        assert!(
            w.contains("LoadBalancer ingress IP \"224.0.0.1\" refused"),
            "{w}"
        );
        assert!(
            !d.vips
                .keys()
                .any(|(_, v)| v.starts_with("127.") || v.starts_with("224."))
        );
        // Ingress IPs count only for type LoadBalancer.
        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let d = service_vips("ns/lb", &s, Some(&e), &lbs(), true);
        assert!(!d.vips.keys().any(|(_, v)| v.starts_with("198.51.100.7")));
    }

    #[test]
    fn flavored_load_balancers_are_created_attached_and_found_again() {
        let f = Flavor {
            affinity: Some(30),
            skip_snat: true,
        };
        let wants = vec![
            LbWant::Cluster(
                Proto::Udp,
                Flavor {
                    affinity: Some(30),
                    skip_snat: false,
                },
            ),
            LbWant::Gateway("GR_a".into(), Proto::Tcp, f),
        ];
        assert_eq!(wants[0].name(), "cluster-lb-udp-affinity-30");
        assert_eq!(wants[1].name(), "GR_a-tcp-local-affinity-30");
        let mut t = crate::ovn::NbTxn::new();
        t.extend(create_lb_ops(&wants, &["n1".into(), "n2".into()]));
        let r = t.render().join(" ");
        assert!(r.contains("--id=@svclb0 create Load_Balancer name=\"cluster-lb-udp-affinity-30\" protocol=\"udp\""), "{r}");
        assert!(r.contains("options:\"affinity_timeout\"=\"30\""), "{r}");
        assert!(
            r.contains("add Logical_Switch n1 load_balancer @svclb0"),
            "{r}"
        );
        assert!(
            r.contains("add Logical_Switch n2 load_balancer @svclb0"),
            "{r}"
        );
        assert!(r.contains("options:\"skip_snat\"=\"true\""), "{r}");
        assert!(
            r.contains("add Logical_Router GR_a load_balancer @svclb1"),
            "{r}"
        );
        for w in &wants {
            let ext: BTreeMap<String, String> = w
                .external_ids()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(LbWant::parse(&ext).as_ref(), Some(w));
        }
        // Attach: a switch missing a flavored cluster LB gets it; plain ones are the master's.
        let mut targets = lbs();
        targets
            .cluster
            .insert((Proto::Udp, wants_flavor()), "cu-aff".into());
        let switches: BTreeMap<String, std::collections::BTreeSet<String>> = [
            ("n1".to_string(), ["cu-aff".to_string()].into()),
            ("n2".to_string(), Default::default()),
        ]
        .into();
        let mut t = crate::ovn::NbTxn::new();
        t.extend(attach_ops(&targets, &switches));
        assert_eq!(t.render().join(" "), "-- --may-exist ls-lb-add n2 cu-aff");
    }

    #[test]
    fn internal_traffic_policy_local_puts_the_cluster_ip_on_each_node_with_its_endpoints() {
        let mut s = np_svc();
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("ClusterIP".into());
        spec.internal_traffic_policy = Some("Local".into());
        spec.external_ips = Some(vec!["192.0.2.20".into()]);
        let e = set(vec![
            ep("10.1.0.5", "a", true, false),
            ep("10.1.1.5", "b", true, false),
        ]);
        let d = service_vips("ns/itp", &s, Some(&e), &lbs(), true);
        assert_eq!(
            d.missing.iter().cloned().collect::<Vec<_>>(),
            vec![
                LbWant::Node("a".into(), Proto::Tcp, P),
                LbWant::Node("b".into(), Proto::Tcp, P),
            ]
        );
        let mut t = lbs();
        t.nodes
            .get_mut("a")
            .unwrap()
            .insert((Proto::Tcp, P), "na".into());
        t.nodes
            .get_mut("b")
            .unwrap()
            .insert((Proto::Tcp, P), "nb".into());
        let d = service_vips("ns/itp", &s, Some(&e), &t, true);
        assert!(d.missing.is_empty());
        assert_eq!(d.vips[&vip("na", "10.96.0.20:80")], "10.1.0.5:8080");
        assert_eq!(d.vips[&vip("nb", "10.96.0.20:80")], "10.1.1.5:8080");
        // Not on the cluster LB; external IPs are not internal traffic and stay there.
        assert!(!d.vips.contains_key(&vip("ct", "10.96.0.20:80")));
        assert_eq!(
            d.vips[&vip("ct", "192.0.2.20:80")],
            "10.1.0.5:8080,10.1.1.5:8080"
        );
        // A node without endpoints gets no VIP.
        let only_a = set(vec![ep("10.1.0.5", "a", true, false)]);
        let d = service_vips("ns/itp", &s, Some(&only_a), &t, true);
        assert!(!d.vips.keys().any(|(lb, _)| lb == "nb"));
        assert_eq!(
            LbWant::Node("a".into(), Proto::Tcp, P).name(),
            "node-lb-a-tcp"
        );
        let mut tx = crate::ovn::NbTxn::new();
        tx.extend(create_lb_ops(
            &[LbWant::Node("a".into(), Proto::Tcp, P)],
            &["a".into(), "b".into()],
        ));
        let r = tx.render().join(" ");
        assert!(
            r.contains("add Logical_Switch a load_balancer @svclb0"),
            "{r}"
        );
        assert!(!r.contains("add Logical_Switch b"), "{r}");
    }

    fn wants_flavor() -> Flavor {
        Flavor {
            affinity: Some(30),
            skip_snat: false,
        }
    }
}
