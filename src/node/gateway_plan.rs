//! What a node's gateway init writes to the NB database, as a pure function of what it read:
//! nothing is emitted when the database already matches, so re-running the init changes
//! nothing.
//!
//! Per node `N` with gateway router `G = GR_N`:
//! * `G` (`options:chassis`, `options:lb_force_snat_ip=<join IP>`, `external_ids:physical_ip`,
//!   `external_ids:k8s-node`), its join port `rtoj-G` (address from OVN IPAM on `join`, see
//!   `gateway.rs`) and `jtor-G` on `join`;
//! * the external switch `ext_N` with the uplink port (a `localnet` port in shared mode, a VIF
//!   bound to the NIC in spare mode), `rtoe-G` with the node's IP and MAC, `etor-G`;
//! * on `G`: a route per cluster subnet to the cluster router, the default route via the next
//!   hop, an SNAT of every cluster subnet to the node IP;
//! * on the cluster router: `<node subnet> → <join IP>` (src-ip) and the /32 `<join IP> →
//!   <join IP>` (replies to load-balanced traffic come back to this gateway), both tagged `external_ids:k8s-node=N` so node deletion finds
//!   them;
//! * with `-nodeport`: TCP and UDP load balancers on `G` (`protocol` set,
//!   `external_ids:<PROTO>_lb_gateway_router=G`: the service controller's contract).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ovn::addrs::join_router_ip;
use crate::ovn::ensure::{differing, ensure_lrp, set_keys};
use crate::ovn::names::{self, CLUSTER_ROUTER, JOIN_SWITCH};
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, NbOp, Proto, Query, Row, Val};

/// The provider network name of the localnet port (`ovn-bridge-mappings=physnet:<bridge>`).
pub const PHYSNET: &str = "physnet";

/// Router port from a gateway router to the external switch.
pub fn rtoe(gr: &str) -> String {
    format!("rtoe-{gr}")
}

/// External-switch port towards the gateway router.
pub fn etor(gr: &str) -> String {
    format!("etor-{gr}")
}

/// How the external switch reaches the physical network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uplink {
    /// Shared mode: a `localnet` port; ovn-controller patches br-int to the bridge mapped to
    /// `network`.
    Localnet { port: String, network: String },
    /// Spare mode: a VIF port bound to the NIC plugged into br-int (`iface-id=port`).
    Vif { port: String },
}

impl Uplink {
    pub fn port(&self) -> &str {
        match self {
            Uplink::Localnet { port, .. } | Uplink::Vif { port } => port,
        }
    }
}

/// What the gateway of one node should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySpec {
    pub node: String,
    pub system_id: String,
    /// The node's IP with its prefix length (shared with the host in shared mode).
    pub physical_ip: Ipv4Net,
    pub mac: String,
    pub nexthop: Option<Ipv4Addr>,
    pub cluster_subnets: Vec<Ipv4Net>,
    pub node_subnet: Ipv4Net,
    /// The gateway router's address on the join switch (a /16 of 100.64.0.0).
    pub join_ip: Ipv4Net,
    pub uplink: Uplink,
    pub nodeport: bool,
}

/// The rows the plan looks at.
#[derive(Clone, Debug, Default)]
pub struct GwSnapshot {
    pub gr: Option<Row>,
    pub cluster_router: Option<Row>,
    pub ext_switch: Option<Row>,
    /// Router ports by name (`rtoj-G`, `rtoe-G`).
    pub lrps: BTreeMap<String, Row>,
    /// Switch ports by name (`jtor-G`, `etor-G`, the uplink port).
    pub lsps: BTreeMap<String, Row>,
    /// Every static route by UUID.
    pub routes: BTreeMap<String, Row>,
    /// Every NAT row by UUID.
    pub nats: BTreeMap<String, Row>,
    /// Every load balancer.
    pub lbs: Vec<Row>,
}

impl GwSnapshot {
    /// The reads, in one invocation.
    pub fn queries(node: &str, uplink_port: &str) -> Vec<Query> {
        let gr = names::gateway_router(node);
        let by_name = |table: &str, cols: &[&str], name: &str| {
            Query::find(table, cols, vec![ColVal::set(col::NAME, Val::str(name))])
        };
        let lr_cols = [
            col::NAME,
            col::OPTIONS,
            col::EXTERNAL_IDS,
            col::STATIC_ROUTES,
            col::NAT,
            col::LOAD_BALANCER,
        ];
        let lrp_cols = [col::NAME, col::MAC, col::NETWORKS, col::EXTERNAL_IDS];
        let lsp_cols = [
            col::NAME,
            col::TYPE,
            col::OPTIONS,
            col::ADDRESSES,
            col::DYNAMIC_ADDRESSES,
        ];
        vec![
            by_name(nb::LOGICAL_ROUTER, &lr_cols, &gr),
            by_name(nb::LOGICAL_ROUTER, &lr_cols, CLUSTER_ROUTER),
            by_name(nb::LOGICAL_SWITCH, &[col::NAME], &names::ext_switch(node)),
            by_name(nb::LOGICAL_ROUTER_PORT, &lrp_cols, &names::rtoj(&gr)),
            by_name(nb::LOGICAL_ROUTER_PORT, &lrp_cols, &rtoe(&gr)),
            by_name(nb::LOGICAL_SWITCH_PORT, &lsp_cols, &names::jtor(&gr)),
            by_name(nb::LOGICAL_SWITCH_PORT, &lsp_cols, &etor(&gr)),
            by_name(nb::LOGICAL_SWITCH_PORT, &lsp_cols, uplink_port),
            Query::list(
                nb::LOGICAL_ROUTER_STATIC_ROUTE,
                &[
                    col::IP_PREFIX,
                    col::NEXTHOP,
                    col::POLICY,
                    col::OUTPUT_PORT,
                    col::EXTERNAL_IDS,
                ],
            ),
            Query::list(nb::NAT, &[col::TYPE, col::EXTERNAL_IP, col::LOGICAL_IP]),
            Query::list(
                nb::LOAD_BALANCER,
                &[col::NAME, col::PROTOCOL, col::EXTERNAL_IDS],
            ),
        ]
    }

    pub fn from_tables(t: Vec<Vec<Row>>) -> GwSnapshot {
        let mut it = t.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let first = |v: Vec<Row>| v.into_iter().next();
        let gr = first(next());
        let cluster_router = first(next());
        let ext_switch = first(next());
        let mut lrps = BTreeMap::new();
        for r in next().into_iter().chain(next()) {
            lrps.insert(r.str(col::NAME), r);
        }
        let mut lsps = BTreeMap::new();
        for r in next().into_iter().chain(next()).chain(next()) {
            lsps.insert(r.str(col::NAME), r);
        }
        let routes = next().into_iter().map(|r| (r.uuid.clone(), r)).collect();
        let nats = next().into_iter().map(|r| (r.uuid.clone(), r)).collect();
        let lbs = next();
        GwSnapshot {
            gr,
            cluster_router,
            ext_switch,
            lrps,
            lsps,
            routes,
            nats,
            lbs,
        }
    }
}

/// A static route as the plan compares them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RouteKey {
    policy: &'static str,
    prefix: String,
    nexthop: String,
    port: String,
}

impl RouteKey {
    fn of(r: &Row) -> RouteKey {
        RouteKey {
            policy: if r.str(col::POLICY) == "src-ip" {
                "src-ip"
            } else {
                "dst-ip"
            },
            prefix: r.str(col::IP_PREFIX),
            nexthop: r.str(col::NEXTHOP),
            port: r.str(col::OUTPUT_PORT),
        }
    }

    fn create(&self, id: &str, node: Option<&str>) -> NbOp {
        let mut columns = vec![
            ColVal::set(col::IP_PREFIX, Val::str(&self.prefix)),
            ColVal::set(col::NEXTHOP, Val::str(&self.nexthop)),
        ];
        if self.policy == "src-ip" {
            columns.push(ColVal::set(col::POLICY, Val::str("src-ip")));
        }
        if !self.port.is_empty() {
            columns.push(ColVal::set(col::OUTPUT_PORT, Val::str(&self.port)));
        }
        if let Some(n) = node {
            columns.push(ColVal::key(col::EXTERNAL_IDS, names::EXT_NODE, Val::str(n)));
        }
        NbOp::Db(DbOp::Create {
            table: nb::LOGICAL_ROUTER_STATIC_ROUTE.into(),
            id: Some(id.into()),
            columns,
        })
    }
}

/// A prefix the way ovn-nbctl stores it: a /32 is the bare address.
fn prefix_str(n: Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.trunc().to_string()
    }
}

/// Creates a row with `--id=@<id>` and references it from `router.column`.
fn add_ref(out: &mut Vec<NbOp>, router: &str, column: &str, id: &str) {
    out.push(NbOp::Db(DbOp::Add {
        table: nb::LOGICAL_ROUTER.into(),
        record: router.into(),
        column: column.into(),
        values: vec![Val::Ref(id.into())],
    }));
}

fn remove_refs(out: &mut Vec<NbOp>, router: &str, column: &str, mut uuids: Vec<String>) {
    if uuids.is_empty() {
        return;
    }
    uuids.sort();
    out.push(NbOp::Db(DbOp::Remove {
        table: nb::LOGICAL_ROUTER.into(),
        record: router.into(),
        column: column.into(),
        values: uuids.into_iter().map(Val::Uuid).collect(),
        if_exists: true,
    }));
}

/// A switch port `name` on `switch` with exactly this type, options and addresses.
fn ensure_lsp(
    snap: &GwSnapshot,
    switch: &str,
    name: &str,
    kind: &str,
    options: &[(&str, &str)],
    addresses: &[&str],
    out: &mut Vec<NbOp>,
) {
    let existing = snap.lsps.get(name);
    if existing.is_none() {
        out.push(NbOp::LspAdd {
            switch: switch.into(),
            name: name.into(),
        });
    }
    let want_opts: BTreeMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ok = existing.is_some_and(|p| {
        p.str(col::TYPE) == kind
            && p.map(col::OPTIONS) == want_opts
            && p.set(col::ADDRESSES) == addresses
    });
    if !ok {
        out.push(NbOp::Db(DbOp::Set {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            record: name.into(),
            columns: vec![
                ColVal::set(col::TYPE, Val::str(kind)),
                ColVal::set(col::OPTIONS, Val::str_map(options.iter().copied())),
                ColVal::set(col::ADDRESSES, Val::str_set(addresses.iter().copied())),
            ],
            if_exists: false,
        }));
    }
}

/// Every NB change that brings node `spec.node`'s gateway to `spec`.
pub fn gateway_ops(snap: &GwSnapshot, spec: &GatewaySpec) -> Vec<NbOp> {
    let mut out = Vec::new();
    for step in [
        router_ops,
        join_port_ops,
        external_side_ops,
        gateway_route_ops,
        cluster_route_ops,
        snat_ops,
        nodeport_lb_ops,
    ] {
        step(snap, spec, &mut out);
    }
    out
}

/// The router, bound to this chassis, with its options and ids.
fn router_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let node = spec.node.as_str();
    let gr = names::gateway_router(&spec.node);
    let join_ip = spec.join_ip.addr().to_string();
    let phys_ip = spec.physical_ip.addr().to_string();
    if snap.gr.is_none() {
        out.push(NbOp::LrAdd { name: gr.clone() });
    }
    let row = |col: &str| snap.gr.as_ref().map(|r| r.map(col)).unwrap_or_default();
    let want_opts = [
        ("chassis", spec.system_id.clone()),
        // Load-balanced traffic leaves with the join IP so replies come back here; read
        // back and re-derived on every run, so a changed join IP is followed.
        ("lb_force_snat_ip", join_ip.clone()),
    ];
    let opts = differing(&row(col::OPTIONS), &want_opts);
    if !opts.is_empty() {
        out.push(set_keys(nb::LOGICAL_ROUTER, &gr, col::OPTIONS, &opts));
    }
    let want_ext = [
        (names::EXT_PHYSICAL_IP, phys_ip.clone()),
        (names::EXT_NODE, node.to_string()),
    ];
    let ext = differing(&row(col::EXTERNAL_IDS), &want_ext);
    if !ext.is_empty() {
        out.push(set_keys(nb::LOGICAL_ROUTER, &gr, col::EXTERNAL_IDS, &ext));
    }
}

/// The router's port on the join switch and the switch's port back.
fn join_port_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let gr = names::gateway_router(&spec.node);
    let rtoj = names::rtoj(&gr);
    ensure_lrp(
        snap.lrps.get(&rtoj),
        &gr,
        &rtoj,
        &crate::ovn::addrs::mac_from_ip(spec.join_ip.addr()),
        spec.join_ip,
        &[],
        out,
    );
    ensure_lsp(
        snap,
        JOIN_SWITCH,
        &names::jtor(&gr),
        "router",
        &[("router-port", rtoj.as_str())],
        &["router"],
        out,
    );
}

/// The external switch, its uplink, and the router's port on it.
fn external_side_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let node = spec.node.as_str();
    let gr = names::gateway_router(&spec.node);
    let ext_sw = names::ext_switch(node);
    if snap.ext_switch.is_none() {
        out.push(NbOp::LsAdd {
            name: ext_sw.clone(),
        });
    }
    match &spec.uplink {
        Uplink::Localnet { port, network } => ensure_lsp(
            snap,
            &ext_sw,
            port,
            "localnet",
            &[("network_name", network.as_str())],
            &["unknown"],
            out,
        ),
        Uplink::Vif { port } => ensure_lsp(snap, &ext_sw, port, "", &[], &["unknown"], out),
    }
    let rtoe = rtoe(&gr);
    ensure_lrp(
        snap.lrps.get(&rtoe),
        &gr,
        &rtoe,
        &spec.mac,
        spec.physical_ip,
        &[(names::EXT_GATEWAY_PHYSICAL_IP, "yes".to_string())],
        out,
    );
    ensure_lsp(
        snap,
        &ext_sw,
        &etor(&gr),
        "router",
        &[("router-port", rtoe.as_str())],
        &["router"],
        out,
    );
}

/// The gateway router's routes (it is wholly ours: anything else is stale).
fn gateway_route_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let gr = names::gateway_router(&spec.node);
    let rtoe = rtoe(&gr);
    let mut want: Vec<RouteKey> = spec
        .cluster_subnets
        .iter()
        .map(|c| RouteKey {
            policy: "dst-ip",
            prefix: prefix_str(*c),
            nexthop: join_router_ip().addr().to_string(),
            port: String::new(),
        })
        .collect();
    if let Some(nh) = spec.nexthop {
        want.push(RouteKey {
            policy: "dst-ip",
            prefix: "0.0.0.0/0".into(),
            nexthop: nh.to_string(),
            port: rtoe.clone(),
        });
    }
    let have: Vec<(String, RouteKey)> = snap
        .gr
        .as_ref()
        .map(|r| r.set(col::STATIC_ROUTES))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| snap.routes.get(&u).map(|r| (u, RouteKey::of(r))))
        .collect();
    sync_routes(out, &gr, &have, &want, None, "gr");
}

/// The cluster router's routes for this node.
fn cluster_route_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let node = spec.node.as_str();
    let join_ip = spec.join_ip.addr().to_string();
    let cr_have: Vec<(String, RouteKey)> = snap
        .cluster_router
        .as_ref()
        .map(|r| r.set(col::STATIC_ROUTES))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| {
            let r = snap.routes.get(&u)?;
            (r.map_get(col::EXTERNAL_IDS, names::EXT_NODE).as_deref() == Some(node))
                .then(|| (u, RouteKey::of(r)))
        })
        .collect();
    let cr_want = vec![
        // Pods of this node leave the cluster through this node's gateway.
        RouteKey {
            policy: "src-ip",
            prefix: prefix_str(spec.node_subnet),
            nexthop: join_ip.clone(),
            port: String::new(),
        },
        // Replies to load-balanced traffic (source = this gateway's join IP) must go back to
        // this gateway, not to the gateway of the backend's node.
        RouteKey {
            policy: "dst-ip",
            prefix: join_ip.clone(),
            nexthop: join_ip.clone(),
            port: String::new(),
        },
    ];
    sync_routes(out, CLUSTER_ROUTER, &cr_have, &cr_want, Some(node), "cr");
}

/// SNAT of every cluster subnet to the node IP.
fn snat_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let gr = names::gateway_router(&spec.node);
    let phys_ip = spec.physical_ip.addr().to_string();
    let nat_have: Vec<(String, (String, String))> = snap
        .gr
        .as_ref()
        .map(|r| r.set(col::NAT))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| {
            let n = snap.nats.get(&u)?;
            (n.str(col::TYPE) == "snat")
                .then(|| (u, (n.str(col::EXTERNAL_IP), n.str(col::LOGICAL_IP))))
        })
        .collect();
    let nat_want: Vec<(String, String)> = spec
        .cluster_subnets
        .iter()
        .map(|c| (phys_ip.clone(), prefix_str(*c)))
        .collect();
    remove_refs(
        out,
        &gr,
        col::NAT,
        nat_have
            .iter()
            .filter(|(_, k)| !nat_want.contains(k))
            .map(|(u, _)| u.clone())
            .collect(),
    );
    for (i, (ext_ip, logical)) in nat_want.iter().enumerate() {
        if nat_have
            .iter()
            .any(|(_, k)| k == &(ext_ip.clone(), logical.clone()))
        {
            continue;
        }
        let id = format!("nat{i}");
        out.push(NbOp::Db(DbOp::Create {
            table: nb::NAT.into(),
            id: Some(id.clone()),
            columns: vec![
                ColVal::set(col::TYPE, Val::str("snat")),
                ColVal::set(col::EXTERNAL_IP, Val::str(ext_ip)),
                ColVal::set(col::LOGICAL_IP, Val::str(logical)),
            ],
        }));
        add_ref(out, &gr, col::NAT, &id);
    }
}

/// The gateway router's NodePort load balancers with -nodeport; without it, any left from an
/// earlier run are deleted.
fn nodeport_lb_ops(snap: &GwSnapshot, spec: &GatewaySpec, out: &mut Vec<NbOp>) {
    let gr = names::gateway_router(&spec.node);
    let attached = snap
        .gr
        .as_ref()
        .map(|r| r.set(col::LOAD_BALANCER))
        .unwrap_or_default();
    for p in [Proto::Tcp, Proto::Udp] {
        let (key, lower) = (names::ext_gateway_lb(p), p.lower());
        let mine: Vec<&Row> = snap
            .lbs
            .iter()
            .filter(|lb| lb.map_get(col::EXTERNAL_IDS, &key).as_deref() == Some(gr.as_str()))
            .collect();
        if !spec.nodeport {
            out.extend(mine.iter().map(|lb| NbOp::LbDel {
                lb: lb.uuid.clone(),
            }));
            continue;
        }
        match mine.first() {
            None => {
                let id = format!("lb{lower}");
                out.push(NbOp::Db(DbOp::Create {
                    table: nb::LOAD_BALANCER.into(),
                    id: Some(id.clone()),
                    columns: vec![
                        ColVal::set(col::NAME, Val::str(format!("{gr}-{lower}"))),
                        ColVal::set(col::PROTOCOL, Val::str(lower)),
                        ColVal::key(col::EXTERNAL_IDS, &key, Val::str(&gr)),
                    ],
                }));
                add_ref(out, &gr, col::LOAD_BALANCER, &id);
            }
            Some(lb) => {
                if lb.str(col::PROTOCOL) != lower {
                    out.push(NbOp::Db(DbOp::Set {
                        table: nb::LOAD_BALANCER.into(),
                        record: lb.uuid.clone(),
                        columns: vec![ColVal::set(col::PROTOCOL, Val::str(lower))],
                        if_exists: false,
                    }));
                }
                if !attached.contains(&lb.uuid) {
                    out.push(NbOp::Db(DbOp::Add {
                        table: nb::LOGICAL_ROUTER.into(),
                        record: gr.clone(),
                        column: col::LOAD_BALANCER.into(),
                        values: vec![Val::Uuid(lb.uuid.clone())],
                    }));
                }
            }
        }
    }
}

/// Removes the routes of `have` that are not wanted (and duplicates), creates the missing.
fn sync_routes(
    out: &mut Vec<NbOp>,
    router: &str,
    have: &[(String, RouteKey)],
    want: &[RouteKey],
    node: Option<&str>,
    id_prefix: &str,
) {
    let mut kept: Vec<&RouteKey> = Vec::new();
    let mut stale = Vec::new();
    for (u, k) in have {
        if want.contains(k) && !kept.contains(&k) {
            kept.push(k);
        } else {
            stale.push(u.clone());
        }
    }
    remove_refs(out, router, col::STATIC_ROUTES, stale);
    for (i, k) in want.iter().enumerate() {
        if kept.contains(&k) {
            continue;
        }
        let id = format!("{id_prefix}route{i}");
        out.push(k.create(&id, node));
        add_ref(out, router, col::STATIC_ROUTES, &id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovn::NbTxn;
    use crate::ovn::ovsdb::Datum;

    fn spec() -> GatewaySpec {
        GatewaySpec {
            node: "n1".into(),
            system_id: "chassis-1".into(),
            physical_ip: "172.31.0.1/24".parse().unwrap(),
            mac: "02:00:00:00:01:01".into(),
            nexthop: Some("172.31.0.100".parse().unwrap()),
            cluster_subnets: vec!["10.128.0.0/14".parse().unwrap()],
            node_subnet: "10.128.2.0/23".parse().unwrap(),
            join_ip: "100.64.0.3/16".parse().unwrap(),
            uplink: Uplink::Localnet {
                port: "breth1_n1".into(),
                network: PHYSNET.into(),
            },
            nodeport: true,
        }
    }

    fn render(ops: &[NbOp]) -> String {
        let t: NbTxn = ops.iter().cloned().collect();
        t.render().join(" ")
    }

    fn row(uuid: &str, cols: &[(&str, Datum)]) -> Row {
        Row {
            uuid: uuid.into(),
            columns: cols
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn s(v: &str) -> Datum {
        Datum::Str(v.into())
    }

    fn map(kv: &[(&str, &str)]) -> Datum {
        Datum::Map(kv.iter().map(|(k, v)| (s(k), s(v))).collect())
    }

    fn uuids(v: &[&str]) -> Datum {
        Datum::Set(v.iter().map(|u| Datum::Uuid(u.to_string())).collect())
    }

    /// The database as it is after `gateway_ops(empty)` ran.
    fn applied(sp: &GatewaySpec) -> GwSnapshot {
        let mut snap = GwSnapshot::default();
        let route = |u: &str, prefix: &str, nh: &str, port: &str, policy: &str, node: &str| {
            let mut c = vec![
                (col::IP_PREFIX, s(prefix)),
                (col::NEXTHOP, s(nh)),
                (col::OUTPUT_PORT, s(port)),
                (col::POLICY, s(policy)),
            ];
            if !node.is_empty() {
                c.push((col::EXTERNAL_IDS, map(&[("k8s-node", node)])));
            }
            row(u, &c)
        };
        for r in [
            route("r1", "10.128.0.0/14", "100.64.0.1", "", "", ""),
            route("r2", "0.0.0.0/0", "172.31.0.100", "rtoe-GR_n1", "", ""),
            route("r3", "10.128.2.0/23", "100.64.0.3", "", "src-ip", "n1"),
            route("r4", "100.64.0.3", "100.64.0.3", "", "dst-ip", "n1"),
            route("other", "10.128.4.0/23", "100.64.0.4", "", "src-ip", "n2"),
        ] {
            snap.routes.insert(r.uuid.clone(), r);
        }
        snap.nats.insert(
            "nat1".into(),
            row(
                "nat1",
                &[
                    (col::TYPE, s("snat")),
                    (col::EXTERNAL_IP, s("172.31.0.1")),
                    (col::LOGICAL_IP, s("10.128.0.0/14")),
                ],
            ),
        );
        snap.gr = Some(row(
            "gr",
            &[
                (col::NAME, s("GR_n1")),
                (
                    col::OPTIONS,
                    map(&[("chassis", "chassis-1"), ("lb_force_snat_ip", "100.64.0.3")]),
                ),
                (
                    col::EXTERNAL_IDS,
                    map(&[("physical_ip", "172.31.0.1"), ("k8s-node", "n1")]),
                ),
                (col::STATIC_ROUTES, uuids(&["r1", "r2"])),
                (col::NAT, uuids(&["nat1"])),
                (col::LOAD_BALANCER, uuids(&["lbt", "lbu"])),
            ],
        ));
        snap.cluster_router = Some(row(
            "cr",
            &[(col::STATIC_ROUTES, uuids(&["r3", "r4", "other"]))],
        ));
        snap.ext_switch = Some(row("ext", &[(col::NAME, s("ext_n1"))]));
        let lrp = |name: &str, mac: &str, net: &str, ext: &[(&str, &str)]| {
            row(
                name,
                &[
                    (col::NAME, s(name)),
                    (col::MAC, s(mac)),
                    (col::NETWORKS, s(net)),
                    (col::EXTERNAL_IDS, map(ext)),
                ],
            )
        };
        for p in [
            lrp("rtoj-GR_n1", "0a:58:64:40:00:03", "100.64.0.3/16", &[]),
            lrp(
                "rtoe-GR_n1",
                &sp.mac,
                "172.31.0.1/24",
                &[("gateway-physical-ip", "yes")],
            ),
        ] {
            snap.lrps.insert(p.str(col::NAME), p);
        }
        let lsp = |name: &str, ty: &str, opts: &[(&str, &str)], addr: &str| {
            row(
                name,
                &[
                    (col::NAME, s(name)),
                    (col::TYPE, s(ty)),
                    (col::OPTIONS, map(opts)),
                    (col::ADDRESSES, s(addr)),
                ],
            )
        };
        for p in [
            lsp(
                "jtor-GR_n1",
                "router",
                &[("router-port", "rtoj-GR_n1")],
                "router",
            ),
            lsp(
                "etor-GR_n1",
                "router",
                &[("router-port", "rtoe-GR_n1")],
                "router",
            ),
            lsp(
                "breth1_n1",
                "localnet",
                &[("network_name", "physnet")],
                "unknown",
            ),
        ] {
            snap.lsps.insert(p.str(col::NAME), p);
        }
        snap.lbs = vec![
            row(
                "lbt",
                &[
                    (col::PROTOCOL, s("tcp")),
                    (
                        col::EXTERNAL_IDS,
                        map(&[("TCP_lb_gateway_router", "GR_n1")]),
                    ),
                ],
            ),
            row(
                "lbu",
                &[
                    (col::PROTOCOL, s("udp")),
                    (
                        col::EXTERNAL_IDS,
                        map(&[("UDP_lb_gateway_router", "GR_n1")]),
                    ),
                ],
            ),
        ];
        snap
    }

    #[test]
    fn empty_database_gets_the_whole_gateway() {
        let ops = gateway_ops(&GwSnapshot::default(), &spec());
        let s = render(&ops);
        for want in [
            "-- --may-exist lr-add GR_n1 -- set Logical_Router GR_n1 options:\"chassis\"=\"chassis-1\" options:\"lb_force_snat_ip\"=\"100.64.0.3\"",
            "external_ids:\"physical_ip\"=\"172.31.0.1\" external_ids:\"k8s-node\"=\"n1\"",
            "lrp-add GR_n1 rtoj-GR_n1 0a:58:64:40:00:03 100.64.0.3/16",
            "lsp-add join jtor-GR_n1 -- set Logical_Switch_Port jtor-GR_n1 type=\"router\" options={\"router-port\"=\"rtoj-GR_n1\"} addresses=[\"router\"]",
            "ls-add ext_n1",
            "set Logical_Switch_Port breth1_n1 type=\"localnet\" options={\"network_name\"=\"physnet\"} addresses=[\"unknown\"]",
            "lrp-add GR_n1 rtoe-GR_n1 02:00:00:00:01:01 172.31.0.1/24",
            "options={\"router-port\"=\"rtoe-GR_n1\"}",
            "--id=@grroute0 create Logical_Router_Static_Route ip_prefix=\"10.128.0.0/14\" nexthop=\"100.64.0.1\" -- add Logical_Router GR_n1 static_routes @grroute0",
            "ip_prefix=\"0.0.0.0/0\" nexthop=\"172.31.0.100\" output_port=\"rtoe-GR_n1\"",
            "ip_prefix=\"10.128.2.0/23\" nexthop=\"100.64.0.3\" policy=\"src-ip\" external_ids:\"k8s-node\"=\"n1\" -- add Logical_Router ovn_cluster_router static_routes @crroute0",
            "ip_prefix=\"100.64.0.3\" nexthop=\"100.64.0.3\" external_ids:\"k8s-node\"=\"n1\"",
            "--id=@nat0 create NAT type=\"snat\" external_ip=\"172.31.0.1\" logical_ip=\"10.128.0.0/14\" -- add Logical_Router GR_n1 nat @nat0",
            "--id=@lbtcp create Load_Balancer name=\"GR_n1-tcp\" protocol=\"tcp\" external_ids:\"TCP_lb_gateway_router\"=\"GR_n1\"",
            "protocol=\"udp\" external_ids:\"UDP_lb_gateway_router\"=\"GR_n1\" -- add Logical_Router GR_n1 load_balancer @lbudp",
        ] {
            assert!(s.contains(want), "missing {want}\nin {s}");
        }
        let t: NbTxn = ops.into_iter().collect();
        t.validate().unwrap();
    }

    #[test]
    fn applied_gateway_needs_nothing() {
        let sp = spec();
        let ops = gateway_ops(&applied(&sp), &sp);
        assert!(ops.is_empty(), "{}", render(&ops));
    }

    #[test]
    fn changed_next_hop_node_ip_and_join_ip_are_rewritten() {
        let mut sp = spec();
        sp.nexthop = Some("172.31.0.254".parse().unwrap());
        sp.physical_ip = "172.31.0.9/24".parse().unwrap();
        let s = render(&gateway_ops(&applied(&spec()), &sp));
        assert!(
            s.contains("remove Logical_Router GR_n1 static_routes r2"),
            "{s}"
        );
        assert!(s.contains("nexthop=\"172.31.0.254\""), "{s}");
        assert!(s.contains("remove Logical_Router GR_n1 nat nat1"), "{s}");
        assert!(s.contains("external_ip=\"172.31.0.9\""), "{s}");
        assert!(
            s.contains("external_ids:\"physical_ip\"=\"172.31.0.9\""),
            "{s}"
        );
        assert!(s.contains("lrp-del rtoe-GR_n1"), "{s}");
        assert!(!s.contains("r1"), "{s}");

        let mut sp = spec();
        sp.join_ip = "100.64.0.9/16".parse().unwrap();
        let s = render(&gateway_ops(&applied(&spec()), &sp));
        assert!(
            s.contains("options:\"lb_force_snat_ip\"=\"100.64.0.9\""),
            "{s}"
        );
        assert!(
            s.contains("remove Logical_Router ovn_cluster_router static_routes r3 r4"),
            "{s}"
        );
        // Another node's route is never touched.
        assert!(!s.contains("other"), "{s}");
    }

    #[test]
    fn without_nodeport_no_gateway_load_balancers() {
        let mut sp = spec();
        sp.nodeport = false;
        let s = render(&gateway_ops(&GwSnapshot::default(), &sp));
        assert!(!s.contains(nb::LOAD_BALANCER), "{s}");
        let s = render(&gateway_ops(&applied(&spec()), &sp));
        assert_eq!(s, "-- --if-exists lb-del lbt -- --if-exists lb-del lbu");
    }

    #[test]
    fn spare_mode_uses_a_vif_port() {
        let mut sp = spec();
        sp.uplink = Uplink::Vif {
            port: "eth1_n1".into(),
        };
        let s = render(&gateway_ops(&GwSnapshot::default(), &sp));
        assert!(
            s.contains("lsp-add ext_n1 eth1_n1 -- set Logical_Switch_Port eth1_n1 type=\"\" options={} addresses=[\"unknown\"]"),
            "{s}"
        );
    }
}
