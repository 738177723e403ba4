//! The cluster-wide and per-node OVN topology the master owns, as pure functions from a
//! snapshot of the northbound database to the commands that bring it to the desired state.
//! Nothing is emitted when the database already matches, so a restart changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use ipnet::Ipv4Net;

use crate::ovn::addrs::{NodeAddrs, join_cidr, join_router_ip, mac_from_ip};
use crate::ovn::ensure::{differing, ensure_lrp, set_keys};
use crate::ovn::names::{self, CLUSTER_ROUTER, JOIN_SWITCH};
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, Nb, NbOp, Proto, Query, Row, Val};

/// What the master reads from the NB database.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub routers: HashMap<String, Row>,
    pub switches: HashMap<String, Row>,
    pub router_ports: HashMap<String, Row>,
    /// Router-type switch ports only (that is all the master owns).
    pub switch_ports: HashMap<String, Row>,
    /// Cluster load-balancer UUID per protocol.
    pub cluster_lbs: BTreeMap<String, String>,
    /// Every load balancer: uuid → external_ids.
    pub lbs: HashMap<String, BTreeMap<String, String>>,
    pub routes: HashMap<String, Row>,
    /// The management ports `k8s-<node>` asked for (see [`Snapshot::read_with_mgmt`]), by name.
    pub mgmt_ports: HashMap<String, Row>,
}

impl Snapshot {
    pub fn queries() -> Vec<Query> {
        vec![
            Query::list(
                nb::LOGICAL_ROUTER,
                &[
                    col::NAME,
                    col::EXTERNAL_IDS,
                    col::OPTIONS,
                    col::PORTS,
                    col::STATIC_ROUTES,
                ],
            ),
            Query::list(
                nb::LOGICAL_SWITCH,
                &[
                    col::NAME,
                    col::OTHER_CONFIG,
                    col::EXTERNAL_IDS,
                    col::LOAD_BALANCER,
                ],
            ),
            Query::list(
                nb::LOGICAL_ROUTER_PORT,
                &[col::NAME, col::MAC, col::NETWORKS, col::EXTERNAL_IDS],
            ),
            Query::find(
                nb::LOGICAL_SWITCH_PORT,
                &[
                    col::NAME,
                    col::TYPE,
                    col::OPTIONS,
                    col::ADDRESSES,
                    col::EXTERNAL_IDS,
                ],
                vec![ColVal::set(col::TYPE, "router")],
            ),
            Query::list(
                nb::LOAD_BALANCER,
                &[col::NAME, col::PROTOCOL, col::EXTERNAL_IDS],
            ),
            Query::list(
                nb::LOGICAL_ROUTER_STATIC_ROUTE,
                &[col::IP_PREFIX, col::NEXTHOP, col::POLICY, col::EXTERNAL_IDS],
            ),
        ]
    }

    pub fn from_tables(mut t: Vec<Vec<Row>>) -> Snapshot {
        let by_name = |rows: Vec<Row>| -> HashMap<String, Row> {
            rows.into_iter().map(|r| (r.str(col::NAME), r)).collect()
        };
        let routes = t.pop().unwrap_or_default();
        let lbs = t.pop().unwrap_or_default();
        let lsps = t.pop().unwrap_or_default();
        let lrps = t.pop().unwrap_or_default();
        let switches = t.pop().unwrap_or_default();
        let routers = t.pop().unwrap_or_default();
        let mut cluster_lbs = BTreeMap::new();
        for lb in &lbs {
            for p in Proto::ALL {
                if lb
                    .map_get(col::EXTERNAL_IDS, &names::ext_cluster_lb(p))
                    .as_deref()
                    == Some("yes")
                {
                    cluster_lbs
                        .entry(p.lower().to_string())
                        .or_insert(lb.uuid.clone());
                }
            }
        }
        Snapshot {
            routers: by_name(routers),
            switches: by_name(switches),
            router_ports: by_name(lrps),
            switch_ports: by_name(lsps),
            cluster_lbs,
            lbs: lbs
                .into_iter()
                .map(|r| (r.uuid.clone(), r.map(col::EXTERNAL_IDS)))
                .collect(),
            routes: routes.into_iter().map(|r| (r.uuid.clone(), r)).collect(),
            mgmt_ports: HashMap::new(),
        }
    }

    pub async fn read(nb: &dyn Nb) -> Result<Snapshot> {
        Snapshot::read_with_mgmt(nb, &[]).await
    }

    /// [`Snapshot::read`] plus the management ports of `nodes`. They are looked up by name:
    /// they are ordinary (untyped) ports, and listing those would read every pod's port.
    pub async fn read_with_mgmt(nb: &dyn Nb, nodes: &[String]) -> Result<Snapshot> {
        let mut queries = Snapshot::queries();
        let fixed = queries.len();
        queries.extend(nodes.iter().map(|n| {
            Query::find(
                nb::LOGICAL_SWITCH_PORT,
                &[col::NAME, col::ADDRESSES, col::EXTERNAL_IDS],
                vec![ColVal::set(col::NAME, Val::str(names::mgmt_port(n)))],
            )
        }));
        let mut tables = nb.query(&queries).await?;
        let mgmt = tables.split_off(fixed.min(tables.len()));
        let mut snap = Snapshot::from_tables(tables);
        snap.mgmt_ports = mgmt
            .into_iter()
            .flatten()
            .map(|r| (r.str(col::NAME), r))
            .collect();
        Ok(snap)
    }
}

/// Ensure a router-type switch port `name` on `switch` pointing at `router_port`, with `ext`
/// in its external_ids.
fn ensure_router_lsp(
    snap: &Snapshot,
    switch: &str,
    name: &str,
    router_port: &str,
    ext: &[(&str, String)],
    out: &mut Vec<NbOp>,
) {
    let existing = snap.switch_ports.get(name);
    if existing.is_none() {
        out.push(NbOp::LspAdd {
            switch: switch.into(),
            name: name.into(),
        });
    }
    let ok = existing.is_some_and(|p| {
        p.str(col::TYPE) == "router"
            && p.map_get(col::OPTIONS, "router-port").as_deref() == Some(router_port)
            && p.set(col::ADDRESSES) == ["router"]
    });
    if !ok {
        out.push(NbOp::Db(DbOp::Set {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            record: name.into(),
            columns: vec![
                ColVal::set(col::TYPE, "router"),
                ColVal::key(col::OPTIONS, "router-port", router_port),
                ColVal::set(col::ADDRESSES, Val::str_set(["router"])),
            ],
            if_exists: false,
        }));
    }
    let ext = differing(
        &existing
            .map(|p| p.map(col::EXTERNAL_IDS))
            .unwrap_or_default(),
        ext,
    );
    if !ext.is_empty() {
        out.push(set_keys(
            nb::LOGICAL_SWITCH_PORT,
            name,
            col::EXTERNAL_IDS,
            &ext,
        ));
    }
}

/// Whether the switch `sw` is the one the master made for `node`: marked `k8s-node=<node>`,
/// or unmarked (older releases did not mark it) but holding a node switch's configuration
/// under a name that is no infrastructure's.
fn owns_switch(sw: &Row, node: &str) -> bool {
    match sw.map_get(col::EXTERNAL_IDS, names::EXT_NODE) {
        Some(n) => n == node,
        None => {
            names::reserved_node_name(node).is_none()
                && sw.map_get(col::OTHER_CONFIG, "subnet").is_some()
                && sw
                    .map_get(col::EXTERNAL_IDS, names::EXT_GATEWAY_IP)
                    .is_some()
        }
    }
}

/// Whether `row` carries `external_ids:k8s-node=<node>`.
fn marked_for(row: &Row, node: &str) -> bool {
    row.map_get(col::EXTERNAL_IDS, names::EXT_NODE).as_deref() == Some(node)
}

/// Whether the router port `rtos-<node>` is ours for `node`. Only this controller uses the
/// `rtos-` names, so an unmarked one (older releases) is ours too.
fn owns_rtos(p: &Row, node: &str) -> bool {
    p.map_get(col::EXTERNAL_IDS, names::EXT_NODE)
        .is_none_or(|n| n == node)
}

/// Whether the switch port `stor-<node>` is ours: marked for the node, or unmarked and
/// pointing at the node's router port.
fn owns_stor(p: &Row, node: &str) -> bool {
    match p.map_get(col::EXTERNAL_IDS, names::EXT_NODE) {
        Some(n) => n == node,
        None => p.map_get(col::OPTIONS, "router-port") == Some(names::rtos(node)),
    }
}

/// Why the master must not create or change `node`'s OVN objects, if it must not: the name is
/// reserved for infrastructure, or an object with one of its names exists and belongs to
/// someone else. Empty when the node can be served.
pub fn node_conflicts(snap: &Snapshot, node: &str) -> Vec<String> {
    if let Some(why) = names::reserved_node_name(node) {
        return vec![format!("the node name {node:?} is {why}")];
    }
    let mut out = Vec::new();
    let sw = names::node_switch(node);
    if let Some(row) = snap.switches.get(&sw).filter(|r| !owns_switch(r, node)) {
        out.push(format!(
            "logical switch {sw} exists and is not this node's (external_ids:{}={:?})",
            names::EXT_NODE,
            row.map_get(col::EXTERNAL_IDS, names::EXT_NODE)
                .unwrap_or_default()
        ));
    }
    let rtos = names::rtos(node);
    if snap
        .router_ports
        .get(&rtos)
        .is_some_and(|r| !owns_rtos(r, node))
    {
        out.push(format!(
            "logical router port {rtos} exists and belongs to another node"
        ));
    }
    let stor = names::stor(node);
    if snap
        .switch_ports
        .get(&stor)
        .is_some_and(|r| !owns_stor(r, node))
    {
        out.push(format!(
            "logical switch port {stor} exists and is not this node's"
        ));
    }
    out
}

/// The cluster router, the join switch and its router port, and the cluster load balancers.
pub fn cluster_ops(snap: &Snapshot) -> Vec<NbOp> {
    let mut out = Vec::new();
    cluster_router_ops(snap, &mut out);
    join_switch_ops(snap, &mut out);
    let rtoj = names::rtoj(CLUSTER_ROUTER);
    let jip = join_router_ip();
    ensure_lrp(
        snap.router_ports.get(&rtoj),
        CLUSTER_ROUTER,
        &rtoj,
        &mac_from_ip(jip.addr()),
        jip,
        &[(names::EXT_CONNECT_TO_JOIN, "yes".to_string())],
        &mut out,
    );
    ensure_router_lsp(
        snap,
        JOIN_SWITCH,
        &names::jtor(CLUSTER_ROUTER),
        &rtoj,
        &[],
        &mut out,
    );
    cluster_lb_ops(snap, &mut out);
    out
}

/// The cluster router, marked as such.
fn cluster_router_ops(snap: &Snapshot, out: &mut Vec<NbOp>) {
    let router = snap.routers.get(CLUSTER_ROUTER);
    if router.is_none() {
        out.push(NbOp::LrAdd {
            name: CLUSTER_ROUTER.into(),
        });
    }
    let want = [(names::EXT_CLUSTER_ROUTER, "yes".to_string())];
    let ext = differing(
        &router.map(|r| r.map(col::EXTERNAL_IDS)).unwrap_or_default(),
        &want,
    );
    if !ext.is_empty() {
        out.push(set_keys(
            nb::LOGICAL_ROUTER,
            CLUSTER_ROUTER,
            col::EXTERNAL_IDS,
            &ext,
        ));
    }
}

/// The join switch with its IPAM settings, never marked as a node's.
fn join_switch_ops(snap: &Snapshot, out: &mut Vec<NbOp>) {
    let join = snap.switches.get(JOIN_SWITCH);
    if join.is_none() {
        out.push(NbOp::LsAdd {
            name: JOIN_SWITCH.into(),
        });
    }
    // OVN IPAM on the join switch hands out the gateway routers' join addresses (nodes ask
    // for one with a `dynamic` port; no lock, 65k addresses).
    let ipam = [
        ("subnet", join_cidr().to_string()),
        ("exclude_ips", join_router_ip().addr().to_string()),
    ];
    let ipam = differing(
        &join.map(|s| s.map(col::OTHER_CONFIG)).unwrap_or_default(),
        &ipam,
    );
    if !ipam.is_empty() {
        out.push(set_keys(
            nb::LOGICAL_SWITCH,
            JOIN_SWITCH,
            col::OTHER_CONFIG,
            &ipam,
        ));
    }
    // A node called `join` once marked the join switch as its own (a release that did not
    // refuse that name); unmark it so node cleanup can never match it.
    if join.is_some_and(|j| j.map_get(col::EXTERNAL_IDS, names::EXT_NODE).is_some()) {
        out.push(NbOp::Db(DbOp::Remove {
            table: nb::LOGICAL_SWITCH.into(),
            record: JOIN_SWITCH.into(),
            column: col::EXTERNAL_IDS.into(),
            values: vec![Val::str(names::EXT_NODE)],
            if_exists: false,
        }));
    }
}

/// The plain cluster load balancer of each protocol.
fn cluster_lb_ops(snap: &Snapshot, out: &mut Vec<NbOp>) {
    for p in Proto::ALL {
        let (proto, key) = (p.lower(), names::ext_cluster_lb(p));
        if !snap.cluster_lbs.contains_key(proto) {
            out.push(NbOp::Db(DbOp::Create {
                table: nb::LOAD_BALANCER.into(),
                id: None,
                columns: vec![
                    ColVal::set(col::NAME, format!("cluster-lb-{proto}")),
                    ColVal::key(col::EXTERNAL_IDS, &key, "yes"),
                    ColVal::set(col::PROTOCOL, proto),
                ],
            }));
        }
    }
}

/// The management port MAC the master programs for `node`, from its annotation: a MAC in the
/// range OVN derives from addresses (`0a:58:…`) must be the one of the node's own management
/// address, so a node annotation can never take the address of a pod or a router port on
/// the switch. `None` when there is no annotation.
pub fn mgmt_mac(annotation: Option<&str>, subnet: Ipv4Net) -> Option<Result<String, String>> {
    let v = annotation?;
    let checked = crate::kube::annotations::parse_mgmt_port_mac(v).and_then(|mac| {
        let own = mac_from_ip(NodeAddrs::new(subnet).mgmt.addr());
        let derived = own.get(..6).is_some_and(|p| mac.starts_with(p));
        if derived && mac != own {
            Err(format!(
                "{} {v:?} is the MAC of another address of subnet {subnet} (the management \
                 port's is {own})",
                crate::kube::annotations::NODE_MGMT_PORT_MAC
            ))
        } else {
            Ok(mac)
        }
    });
    Some(checked)
}

/// The management port `k8s-<node>` on the node switch, with the MAC the node reported and
/// the node's management address, marked as the node's.
fn ensure_mgmt_lsp(snap: &Snapshot, node: &str, subnet: Ipv4Net, mac: &str, out: &mut Vec<NbOp>) {
    let sw = names::node_switch(node);
    let port = names::mgmt_port(node);
    let want = format!("{mac} {}", NodeAddrs::new(subnet).mgmt.addr());
    let existing = snap.mgmt_ports.get(&port);
    // A port of that name on another switch makes `lsp-add` fail, which is reported and
    // retried like any failed node sync; the master never moves it.
    if existing.is_none() {
        out.push(NbOp::LspAdd {
            switch: sw,
            name: port.clone(),
        });
    }
    if existing.is_none_or(|p| p.set(col::ADDRESSES) != [want.clone()]) {
        out.push(NbOp::LspSetAddresses {
            name: port.clone(),
            addresses: vec![want],
        });
    }
    let mark = [(names::EXT_NODE, node.to_string())];
    let ext = differing(
        &existing
            .map(|p| p.map(col::EXTERNAL_IDS))
            .unwrap_or_default(),
        &mark,
    );
    if !ext.is_empty() {
        out.push(set_keys(
            nb::LOGICAL_SWITCH_PORT,
            &port,
            col::EXTERNAL_IDS,
            &ext,
        ));
    }
}

/// The switch, router port and router-type switch port of one node, and its management
/// port's logical port when the node reported the port's MAC (`mgmt_mac`, validated).
pub fn node_ops(snap: &Snapshot, node: &str, subnet: Ipv4Net, mgmt_mac: Option<&str>) -> Vec<NbOp> {
    let a = NodeAddrs::new(subnet);
    let sw = names::node_switch(node);
    let mut out = Vec::new();
    let existing = snap.switches.get(&sw);
    if existing.is_none() {
        out.push(NbOp::LsAdd { name: sw.clone() });
    }
    let other = [
        ("subnet", a.subnet.to_string()),
        ("exclude_ips", a.mgmt.addr().to_string()),
    ];
    let other = differing(
        &existing
            .map(|s| s.map(col::OTHER_CONFIG))
            .unwrap_or_default(),
        &other,
    );
    if !other.is_empty() {
        out.push(set_keys(nb::LOGICAL_SWITCH, &sw, col::OTHER_CONFIG, &other));
    }
    let ext = [
        (names::EXT_GATEWAY_IP, a.gateway.to_string()),
        (names::EXT_NODE, node.to_string()),
    ];
    let ext = differing(
        &existing
            .map(|s| s.map(col::EXTERNAL_IDS))
            .unwrap_or_default(),
        &ext,
    );
    if !ext.is_empty() {
        out.push(set_keys(nb::LOGICAL_SWITCH, &sw, col::EXTERNAL_IDS, &ext));
    }
    let rtos = names::rtos(node);
    ensure_lrp(
        snap.router_ports.get(&rtos),
        CLUSTER_ROUTER,
        &rtos,
        &mac_from_ip(a.gateway.addr()),
        a.gateway,
        &[(names::EXT_NODE, node.to_string())],
        &mut out,
    );
    ensure_router_lsp(
        snap,
        &sw,
        &names::stor(node),
        &rtos,
        &[(names::EXT_NODE, node.to_string())],
        &mut out,
    );
    let have_lbs: BTreeSet<String> = existing
        .map(|s| s.set(col::LOAD_BALANCER).into_iter().collect())
        .unwrap_or_default();
    for uuid in snap.cluster_lbs.values() {
        if !have_lbs.contains(uuid) {
            out.push(NbOp::LsLbAdd {
                switch: sw.clone(),
                lb: uuid.clone(),
            });
        }
    }
    if let Some(mac) = mgmt_mac {
        ensure_mgmt_lsp(snap, node, subnet, mac, &mut out);
    }
    out
}

/// Every NB object that belongs to `node` (switch, router ports, gateway router, external
/// switch, join port, its routes on the cluster router, its gateway load balancers), and only
/// those: each is checked against its ownership mark in `snap`, which the caller reads fresh
/// (node processes create gateway objects concurrently). A reserved name owns nothing.
pub fn node_cleanup_ops(snap: &Snapshot, node: &str) -> Vec<NbOp> {
    if names::reserved_node_name(node).is_some() {
        return Vec::new();
    }
    let gr = names::gateway_router(node);
    let mut out = Vec::new();
    let sw = names::node_switch(node);
    // Deleting the switch deletes its ports with it, the management port `k8s-<node>` too.
    if snap.switches.get(&sw).is_some_and(|r| owns_switch(r, node)) {
        out.push(NbOp::LsDel { name: sw });
    }
    let rtos = names::rtos(node);
    if snap
        .router_ports
        .get(&rtos)
        .is_some_and(|r| owns_rtos(r, node))
    {
        out.push(NbOp::LrpDel { name: rtos });
    }
    // The node's gateway init marks its router; the join port and external switch it makes
    // with the router belong to the node when the router does.
    let gr_owned = snap.routers.get(&gr).is_some_and(|r| marked_for(r, node));
    if gr_owned {
        out.push(NbOp::LrDel { name: gr.clone() });
    }
    let jtor = names::jtor(&gr);
    if snap
        .switch_ports
        .get(&jtor)
        .is_some_and(|r| gr_owned || marked_for(r, node))
    {
        out.push(NbOp::LspDel { name: jtor });
    }
    let ext = names::ext_switch(node);
    if snap
        .switches
        .get(&ext)
        .is_some_and(|r| gr_owned || marked_for(r, node))
    {
        out.push(NbOp::LsDel { name: ext });
    }
    if let Some(cr) = snap.routers.get(CLUSTER_ROUTER) {
        let mut mine: Vec<&String> = cr
            .set(col::STATIC_ROUTES)
            .iter()
            .filter_map(|u| snap.routes.get_key_value(u).map(|(k, _)| k))
            .filter(|u| {
                snap.routes
                    .get(*u)
                    .and_then(|r| r.map_get(col::EXTERNAL_IDS, names::EXT_NODE))
                    .as_deref()
                    == Some(node)
            })
            .collect();
        mine.sort();
        if !mine.is_empty() {
            out.push(NbOp::Db(DbOp::Remove {
                table: nb::LOGICAL_ROUTER.into(),
                record: CLUSTER_ROUTER.into(),
                column: col::STATIC_ROUTES.into(),
                values: mine.into_iter().map(|u| Val::Uuid(u.clone())).collect(),
                if_exists: true,
            }));
        }
    }
    let mut lbs: Vec<&String> = snap
        .lbs
        .iter()
        .filter(|(_, ext)| {
            Proto::ALL
                .iter()
                .any(|p| ext.get(&names::ext_gateway_lb(*p)) == Some(&gr))
        })
        .map(|(u, _)| u)
        .collect();
    lbs.sort();
    out.extend(lbs.into_iter().map(|u| NbOp::LbDel { lb: u.clone() }));
    out
}

/// Node names that the NB database holds objects for.
pub fn nodes_in_nb(snap: &Snapshot) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, sw) in &snap.switches {
        if let Some(n) = sw.map_get(col::EXTERNAL_IDS, names::EXT_NODE) {
            out.insert(n);
        } else if owns_switch(sw, name) {
            // Switches made by older releases carry no node id; their configuration marks them.
            out.insert(name.clone());
        }
    }
    for name in snap.router_ports.keys() {
        if let Some(n) = name.strip_prefix("rtos-") {
            out.insert(n.to_string());
        }
    }
    for name in snap.routers.keys() {
        if let Some(n) = name.strip_prefix("GR_") {
            out.insert(n.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovn::NbTxn;
    use crate::ovn::ovsdb::Datum;

    fn row(name: &str, cols: &[(&str, Datum)]) -> Row {
        let mut r = Row {
            uuid: format!("uuid-{name}"),
            columns: Default::default(),
        };
        r.columns.insert(col::NAME.into(), Datum::Str(name.into()));
        for (k, v) in cols {
            r.columns.insert((*k).into(), v.clone());
        }
        r
    }

    fn map(kv: &[(&str, &str)]) -> Datum {
        Datum::Map(
            kv.iter()
                .map(|(k, v)| (Datum::Str((*k).into()), Datum::Str((*v).into())))
                .collect(),
        )
    }

    fn render(ops: Vec<NbOp>) -> String {
        let t: NbTxn = ops.into_iter().collect();
        t.render().join(" ")
    }

    #[test]
    fn empty_database_gets_the_whole_cluster_topology() {
        let s = render(cluster_ops(&Snapshot::default()));
        assert!(s.starts_with("-- --may-exist lr-add ovn_cluster_router -- set Logical_Router ovn_cluster_router external_ids:\"k8s-cluster-router\"=\"yes\""), "{s}");
        assert!(s.contains("-- --may-exist ls-add join -- set Logical_Switch join other_config:\"subnet\"=\"100.64.0.0/16\" other_config:\"exclude_ips\"=\"100.64.0.1\""), "{s}");
        assert!(s.contains(
            "lrp-add ovn_cluster_router rtoj-ovn_cluster_router 0a:58:64:40:00:01 100.64.0.1/16"
        ));
        assert!(s.contains("lsp-add join jtor-ovn_cluster_router"));
        assert!(s.contains("options:\"router-port\"=\"rtoj-ovn_cluster_router\""));
        for p in ["tcp", "udp", "sctp"] {
            assert!(
                s.contains(&format!(
                    "external_ids:\"k8s-cluster-lb-{p}\"=\"yes\" protocol=\"{p}\""
                )),
                "{p}: {s}"
            );
        }
    }

    fn synced_snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.routers.insert(
            CLUSTER_ROUTER.into(),
            row(
                CLUSTER_ROUTER,
                &[(col::EXTERNAL_IDS, map(&[("k8s-cluster-router", "yes")]))],
            ),
        );
        s.switches.insert(
            "join".into(),
            row(
                "join",
                &[(
                    col::OTHER_CONFIG,
                    map(&[("subnet", "100.64.0.0/16"), ("exclude_ips", "100.64.0.1")]),
                )],
            ),
        );
        s.router_ports.insert(
            "rtoj-ovn_cluster_router".into(),
            row(
                "rtoj-ovn_cluster_router",
                &[
                    (col::MAC, Datum::Str("0a:58:64:40:00:01".into())),
                    (col::NETWORKS, Datum::Str("100.64.0.1/16".into())),
                    (col::EXTERNAL_IDS, map(&[("connect_to_join", "yes")])),
                ],
            ),
        );
        s.switch_ports.insert(
            "jtor-ovn_cluster_router".into(),
            row(
                "jtor-ovn_cluster_router",
                &[
                    (col::TYPE, Datum::Str("router".into())),
                    (
                        col::OPTIONS,
                        map(&[("router-port", "rtoj-ovn_cluster_router")]),
                    ),
                    (col::ADDRESSES, Datum::Str("router".into())),
                ],
            ),
        );
        for p in ["tcp", "udp", "sctp"] {
            s.cluster_lbs.insert(p.into(), format!("lb-{p}"));
        }
        s
    }

    #[test]
    fn synced_database_needs_nothing() {
        assert!(cluster_ops(&synced_snapshot()).is_empty());
    }

    #[test]
    fn node_topology_and_its_idempotence() {
        let mut snap = synced_snapshot();
        let subnet: Ipv4Net = "10.1.3.0/24".parse().unwrap();
        let s = render(node_ops(&snap, "n1", subnet, None));
        assert!(s.contains("-- --may-exist ls-add n1 -- set Logical_Switch n1 other_config:\"subnet\"=\"10.1.3.0/24\" other_config:\"exclude_ips\"=\"10.1.3.2\""), "{s}");
        assert!(s.contains("external_ids:\"gateway_ip\"=\"10.1.3.1/24\""));
        assert!(s.contains("lrp-add ovn_cluster_router rtos-n1 0a:58:0a:01:03:01 10.1.3.1/24"));
        assert!(s.contains("lsp-add n1 stor-n1"));
        assert!(s.contains("set Logical_Switch_Port stor-n1 external_ids:\"k8s-node\"=\"n1\""));
        assert!(s.contains("ls-lb-add n1 lb-tcp") && s.contains("ls-lb-add n1 lb-udp"));

        snap.switches.insert(
            "n1".into(),
            row(
                "n1",
                &[
                    (
                        col::OTHER_CONFIG,
                        map(&[("subnet", "10.1.3.0/24"), ("exclude_ips", "10.1.3.2")]),
                    ),
                    (
                        col::EXTERNAL_IDS,
                        map(&[("gateway_ip", "10.1.3.1/24"), ("k8s-node", "n1")]),
                    ),
                    (
                        col::LOAD_BALANCER,
                        Datum::Set(vec![
                            Datum::Uuid("lb-tcp".into()),
                            Datum::Uuid("lb-udp".into()),
                            Datum::Uuid("lb-sctp".into()),
                        ]),
                    ),
                ],
            ),
        );
        snap.router_ports.insert(
            "rtos-n1".into(),
            row(
                "rtos-n1",
                &[
                    (col::MAC, Datum::Str("0a:58:0a:01:03:01".into())),
                    (col::NETWORKS, Datum::Str("10.1.3.1/24".into())),
                    (col::EXTERNAL_IDS, map(&[("k8s-node", "n1")])),
                ],
            ),
        );
        snap.switch_ports.insert(
            "stor-n1".into(),
            row(
                "stor-n1",
                &[
                    (col::TYPE, Datum::Str("router".into())),
                    (col::OPTIONS, map(&[("router-port", "rtos-n1")])),
                    (col::ADDRESSES, Datum::Str("router".into())),
                    (col::EXTERNAL_IDS, map(&[("k8s-node", "n1")])),
                ],
            ),
        );
        assert!(node_ops(&snap, "n1", subnet, None).is_empty());

        // A changed subnet re-creates the router port with the new address.
        let s = render(node_ops(&snap, "n1", "10.1.9.0/24".parse().unwrap(), None));
        assert!(s.contains("-- --if-exists lrp-del rtos-n1 -- --may-exist lrp-add ovn_cluster_router rtos-n1 0a:58:0a:01:09:01 10.1.9.1/24"), "{s}");
        assert!(s.contains("other_config:\"subnet\"=\"10.1.9.0/24\""));
    }

    #[test]
    fn cleanup_removes_only_that_nodes_objects() {
        let mut snap = synced_snapshot();
        // n1's switch as an older release made it: unmarked, with a node switch's settings.
        snap.switches.insert(
            "n1".into(),
            row(
                "n1",
                &[
                    (col::OTHER_CONFIG, map(&[("subnet", "10.1.3.0/24")])),
                    (col::EXTERNAL_IDS, map(&[("gateway_ip", "10.1.3.1/24")])),
                ],
            ),
        );
        snap.switches.insert(
            "n2".into(),
            row("n2", &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n2")]))]),
        );
        snap.switches.insert("ext_n1".into(), row("ext_n1", &[]));
        snap.routers.insert(
            "GR_n1".into(),
            row("GR_n1", &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n1")]))]),
        );
        snap.router_ports
            .insert("rtos-n1".into(), row("rtos-n1", &[]));
        snap.switch_ports
            .insert("jtor-GR_n1".into(), row("jtor-GR_n1", &[]));
        let mut r1 = row("r1", &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n1")]))]);
        r1.uuid = "route-1".into();
        let mut r2 = row("r2", &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n2")]))]);
        r2.uuid = "route-2".into();
        snap.routes.insert("route-1".into(), r1);
        snap.routes.insert("route-2".into(), r2);
        snap.routers
            .get_mut(CLUSTER_ROUTER)
            .unwrap()
            .columns
            .insert(
                col::STATIC_ROUTES.into(),
                Datum::Set(vec![
                    Datum::Uuid("route-1".into()),
                    Datum::Uuid("route-2".into()),
                ]),
            );
        snap.lbs.insert(
            "glb".into(),
            [("TCP_lb_gateway_router".to_string(), "GR_n1".to_string())].into(),
        );
        snap.lbs.insert(
            "glb2".into(),
            [("TCP_lb_gateway_router".to_string(), "GR_n2".to_string())].into(),
        );
        let s = render(node_cleanup_ops(&snap, "n1"));
        assert_eq!(
            s,
            "-- --if-exists ls-del n1 -- --if-exists lrp-del rtos-n1 -- --if-exists lr-del GR_n1 \
             -- --if-exists lsp-del jtor-GR_n1 -- --if-exists ls-del ext_n1 \
             -- --if-exists remove Logical_Router ovn_cluster_router static_routes route-1 \
             -- --if-exists lb-del glb"
        );
        // Without the router's mark, the gateway objects are not provably n1's: kept.
        snap.routers.insert("GR_n1".into(), row("GR_n1", &[]));
        let s = render(node_cleanup_ops(&snap, "n1"));
        assert!(!s.contains("GR_n1 ") && !s.contains("ext_n1"), "{s}");
        assert!(s.contains("ls-del n1 ") && s.contains("lb-del glb"), "{s}");
        assert_eq!(
            nodes_in_nb(&snap),
            ["n1", "n2"].iter().map(|s| s.to_string()).collect()
        );
    }

    #[test]
    fn a_node_named_like_infrastructure_is_refused_and_owns_nothing() {
        let mut snap = synced_snapshot();
        // As the 2018-style attack left it: the join switch marked for a node called `join`.
        snap.switches
            .get_mut("join")
            .unwrap()
            .columns
            .insert(col::EXTERNAL_IDS.into(), map(&[("k8s-node", "join")]));
        let join_uuid = snap.switches["join"].uuid.clone();
        for name in ["join", "ovn_cluster_router", "GR_n1", "ext_n1"] {
            assert!(!node_conflicts(&snap, name).is_empty(), "{name}");
            assert!(node_cleanup_ops(&snap, name).is_empty(), "{name}");
        }
        let uuid = "0b3a2c4e-1f2d-4c5b-9a8e-7d6c5b4a3f21";
        assert!(
            node_conflicts(&snap, uuid)[0].contains("UUID"),
            "{join_uuid}"
        );
        assert!(!nodes_in_nb(&snap).is_empty());
        // The cluster sync takes the mark off the join switch again.
        let s = render(cluster_ops(&snap));
        assert_eq!(s, "-- remove Logical_Switch join external_ids \"k8s-node\"");
    }

    #[test]
    fn objects_of_someone_else_block_a_node_instead_of_being_taken_over() {
        let mut snap = synced_snapshot();
        // An operator's switch that happens to have the node's name.
        snap.switches.insert(
            "web".into(),
            row(
                "web",
                &[(col::OTHER_CONFIG, map(&[("mcast_snoop", "true")]))],
            ),
        );
        let c = node_conflicts(&snap, "web");
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].contains("logical switch web exists"), "{c:?}");
        assert!(node_cleanup_ops(&snap, "web").is_empty());
        // Another node's marks.
        snap.switches.insert(
            "n1".into(),
            row("n1", &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n9")]))]),
        );
        snap.router_ports.insert(
            "rtos-n1".into(),
            row(
                "rtos-n1",
                &[(col::EXTERNAL_IDS, map(&[("k8s-node", "n9")]))],
            ),
        );
        snap.switch_ports.insert(
            "stor-n1".into(),
            row(
                "stor-n1",
                &[(col::OPTIONS, map(&[("router-port", "rtos-n9")]))],
            ),
        );
        assert_eq!(node_conflicts(&snap, "n1").len(), 3);
        assert!(node_cleanup_ops(&snap, "n1").is_empty());
        // The node's own objects are no conflict.
        assert!(node_conflicts(&snap, "n9").is_empty() || snap.switches.contains_key("n9"));
        assert!(node_conflicts(&snap, "n2").is_empty());
    }

    #[test]
    fn the_management_port_mac_annotation_is_hostile_input() {
        let subnet: Ipv4Net = "10.1.3.0/24".parse().unwrap();
        for (v, want) in [
            (None, None),
            // The node agent's own: derived from the management address .2.
            (Some("0a:58:0a:01:03:02"), Some(Ok("0a:58:0a:01:03:02"))),
            // A NIC's own MAC, outside OVN's derived range.
            (Some("52:54:00:12:34:56"), Some(Ok("52:54:00:12:34:56"))),
            // The router port's (.1) and a pod's (.5) derived MACs are not the node's to take.
            (Some("0a:58:0a:01:03:01"), Some(Err("another address"))),
            (Some("0a:58:0a:01:03:05"), Some(Err("another address"))),
            (Some("ff:ff:ff:ff:ff:ff"), Some(Err("unicast"))),
            (Some("00:00:00:00:00:00"), Some(Err("non-zero"))),
            (Some("k8s-n2"), Some(Err("not a unicast"))),
        ] {
            let got = mgmt_mac(v, subnet);
            match (&got, want) {
                (None, None) => {}
                (Some(Ok(m)), Some(Ok(w))) => assert_eq!(m, w, "{v:?}"),
                (Some(Err(e)), Some(Err(w))) => assert!(e.contains(w), "{v:?}: {e}"),
                _ => panic!("{v:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_master_owns_the_management_port_and_rewrites_only_what_differs() {
        let snap = synced_snapshot();
        let subnet: Ipv4Net = "10.1.3.0/24".parse().unwrap();
        let mac = "0a:58:0a:01:03:02";
        let s = render(node_ops(&snap, "n1", subnet, Some(mac)));
        assert!(
            s.contains("-- --may-exist lsp-add n1 k8s-n1 -- lsp-set-addresses k8s-n1 0a:58:0a:01:03:02 10.1.3.2 -- set Logical_Switch_Port k8s-n1 external_ids:\"k8s-node\"=\"n1\""),
            "{s}"
        );
        // Without the annotation the master leaves the port to the node agent.
        assert!(!render(node_ops(&snap, "n1", subnet, None)).contains("k8s-n1"));

        let mut snap = snap;
        let port = |addrs: &str, ext: &[(&str, &str)]| {
            row(
                "k8s-n1",
                &[
                    (col::ADDRESSES, Datum::Str(addrs.into())),
                    (col::EXTERNAL_IDS, map(ext)),
                ],
            )
        };
        // As the node agent made it: right address, no mark.
        snap.mgmt_ports
            .insert("k8s-n1".into(), port("0a:58:0a:01:03:02 10.1.3.2", &[]));
        let s = render(node_ops(&snap, "n1", subnet, Some(mac)));
        assert!(
            !s.contains("lsp-add n1 k8s-n1") && !s.contains("lsp-set-addresses k8s-n1"),
            "{s}"
        );
        assert!(
            s.contains("set Logical_Switch_Port k8s-n1 external_ids:\"k8s-node\"=\"n1\""),
            "{s}"
        );
        // Someone changed its address: only the address is written.
        snap.mgmt_ports.insert(
            "k8s-n1".into(),
            port("0a:58:0a:01:03:02 10.1.3.77", &[("k8s-node", "n1")]),
        );
        let s = render(node_ops(&snap, "n1", subnet, Some(mac)));
        assert!(
            s.contains("lsp-set-addresses k8s-n1 0a:58:0a:01:03:02 10.1.3.2"),
            "{s}"
        );
        assert!(
            !s.contains("lsp-add n1 k8s-n1") && !s.contains("set Logical_Switch_Port k8s-n1"),
            "{s}"
        );
        // In place: nothing (the node switch itself is still missing in this snapshot).
        snap.mgmt_ports.insert(
            "k8s-n1".into(),
            port("0a:58:0a:01:03:02 10.1.3.2", &[("k8s-node", "n1")]),
        );
        assert!(!render(node_ops(&snap, "n1", subnet, Some(mac))).contains("k8s-n1 "));
    }
}
