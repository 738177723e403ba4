//! `-init-gateways`: the node's gateway router, external switch and bridge, after the
//! management port, in the same `-init-node` process. It follows the later upstream gateway
//! rather than the 2018 one: a /16 join network, no src-ip routes on the cluster router, a
//! `localnet` external port, explicit load balancer protocols, any bridge name (found through
//! `external_ids:bridge-uplink`), and a re-run that completes what an earlier one left out.
//!
//! * The interface and next hop come from the flags, else from the IPv4 default route.
//! * Shared mode (default): the NIC's addresses and routes move to an OVS bridge
//!   (`host::nic::Host::nic_to_bridge`, transactional); the gateway router shares the node's IP and
//!   MAC and reaches the bridge through a `localnet` port (`ovn-bridge-mappings=physnet:<br>`,
//!   ovn-controller makes the patch ports); OpenFlow on the bridge splits the traffic between
//!   the host and OVN (`gateway_flows`).
//! * Spare mode (`-gateway-spare-interface`): the NIC is plugged into br-int and bound to a
//!   VIF port of the external switch; its IP is flushed (the host no longer uses it).
//! * The join address comes from OVN IPAM on the `join` switch (no lock that a dead node
//!   could leak; a /16, so 65k gateways): the node asks with a `dynamic` port `jtor-GR_<n>`,
//!   reads what northd assigned, then turns the port into the router port's peer — the
//!   router port's address stays reserved in IPAM from then on.
//! * The NB part is a diff (`gateway_plan`), so re-running the init changes nothing.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ipnet::Ipv4Net;

use super::Agent;
use super::gateway_flows::{BridgeFlows, patch_port};
use super::gateway_plan::{self, GatewaySpec, GwSnapshot, PHYSNET, Uplink};
use crate::config::ConfigError;
use crate::host::ip::IpWrite;
use crate::host::nic::{Host, pick_address};
use crate::ovn::addrs::join_cidr;
use crate::ovn::names::{self, JOIN_SWITCH};
use crate::ovn::names::{BR_INT, EXT_SYSTEM_ID};
use crate::ovn::schema::{col, nb, vs};
use crate::ovn::{ColVal, DbOp, Nb, NbOp, NbTxn, Query, Row, Val, Vs, VsOp, VsTxn};

/// `Open_vSwitch` external_ids key ovn-controller reads the provider bridges from.
pub const EXT_BRIDGE_MAPPINGS: &str = "ovn-bridge-mappings";
const IPAM_TIMEOUT: Duration = Duration::from_secs(30);
const PATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A gateway as `init` set it up.
pub struct GatewaySetup {
    /// What the NB part should look like; `recheck` keeps the NB at it.
    pub spec: GatewaySpec,
    /// Shared mode: the bridge's flows, for the NodePort flow watcher of a `-nodeport` node.
    pub flows: Option<BridgeFlows>,
}

/// A problem with the gateway flags or the host they name: retrying cannot fix it, so it ends
/// the process (every other failure of `init` is retried by the caller).
fn config_error(msg: String) -> anyhow::Error {
    anyhow::Error::new(ConfigError::new(msg))
}

/// Sets up the node's gateway. Every step is idempotent (the NB part is a diff, the NIC move
/// is crash-safe and resumes), so the caller retries the whole of it after a transient
/// failure; configuration problems come back as [`ConfigError`]s.
pub async fn init(ctx: &Agent, node: &str, subnet: Ipv4Net) -> Result<GatewaySetup> {
    let cfg = &ctx.cfg;
    let host = Host::new(ctx.exec.clone());
    let defaults = default_routes(&host).await?;
    let iface = gateway_interface(cfg.gateway.interface.as_deref(), &defaults, node)?;
    let system_id = system_id(&host).await?;
    if cfg.gateway.spare_interface {
        let nexthop = nexthop_for(cfg.gateway.nexthop, &defaults, &[&iface], node)?;
        let spec = spare(ctx, &host, node, subnet, &iface, nexthop, &system_id).await?;
        return Ok(GatewaySetup { spec, flows: None });
    }
    let up = host.resolve_uplink(&iface).await?;
    // The NIC stays a kernel device when it is in its bridge, so its absence is a bad flag
    // (checked after `resolve_uplink`: a bridge named as the interface is an OVS device that
    // vanishes while vswitchd restarts).
    if host.ip.link(&up.nic).await?.is_none() {
        return Err(no_such_interface(&iface, &up.nic, node));
    }
    let nexthop = nexthop_for(
        cfg.gateway.nexthop,
        &defaults,
        &[&iface, &up.nic, &up.bridge],
        node,
    )?;
    let bridge = host
        .nic_to_bridge(&up.nic)
        .await
        .with_context(|| format!("gateway of node {node}"))?;
    let addrs = host.ip.addrs(&bridge).await?;
    let physical_ip = pick_address(&addrs, Some(nexthop)).ok_or_else(|| {
        config_error(format!(
            "{bridge} does not have a ipv4 address (gateway interface {iface} of node {node}): \
             give {iface} the node's address"
        ))
    })?;
    let mac = mac_in_use(&host, &bridge).await?;
    set_bridge_mapping(&host, &bridge).await?;
    let port = format!("{bridge}_{node}");
    let uplink = Uplink::Localnet {
        port: port.clone(),
        network: PHYSNET.into(),
    };
    let found = HostSide {
        system_id: &system_id,
        physical_ip,
        mac: &mac,
        nexthop,
        uplink,
    };
    let spec = program_nb(ctx, node, subnet, found).await?;
    let flows = BridgeFlows {
        exec: ctx.exec.clone(),
        vs: host.vs.clone(),
        bridge: bridge.clone(),
        nic: up.nic.clone(),
        patch: patch_port(&port),
        zone: cfg.conntrack_zone,
        reserved: crate::controller::services::validate::Reserved::from_config(cfg),
    };
    flows.wait_ofports(PATCH_TIMEOUT).await?;
    flows.ensure_base().await?;
    tracing::info!(
        %node, mode = "shared", nic = %up.nic, %bridge, ip = %spec.physical_ip,
        %nexthop, join_ip = %spec.join_ip,
        "gateway router {} ready", names::gateway_router(node)
    );
    Ok(GatewaySetup {
        spec,
        flows: Some(flows),
    })
}

/// The gateway interface: `-gateway-interface`, else the device of the first default route.
fn gateway_interface(
    flag: Option<&str>,
    defaults: &[(String, Ipv4Addr)],
    node: &str,
) -> Result<String> {
    if let Some(i) = flag {
        return Ok(i.to_string());
    }
    defaults.first().map(|(dev, _)| dev.clone()).ok_or_else(|| {
        config_error(format!(
            "Failed to get default gateway interface: node {node} has no IPv4 default \
                 route with a gateway; pass -gateway-interface=<nic> and -gateway-nexthop=<ip>"
        ))
    })
}

/// Spare mode: the NIC is OVN's alone.
async fn spare(
    ctx: &Agent,
    host: &Host,
    node: &str,
    subnet: Ipv4Net,
    nic: &str,
    nexthop: Ipv4Addr,
    system_id: &str,
) -> Result<GatewaySpec> {
    let link = host
        .ip
        .link(nic)
        .await?
        .ok_or_else(|| no_such_interface(nic, nic, node))?;
    let addrs = host.ip.addrs(nic).await?;
    // A re-run finds the NIC flushed: the address is then the one the gateway router has.
    let physical_ip = match pick_address(&addrs, Some(nexthop)) {
        Some(a) => a,
        None => gateway_physical_ip(ctx.nb.as_ref(), node)
            .await?
            .ok_or_else(|| {
                config_error(format!(
                    "gateway interface {nic} of node {node} has no IPv4 address and no gateway \
                 router records one; give {nic} its address back and re-run"
                ))
            })?,
    };
    let port = format!("{nic}_{node}");
    let mut txn = VsTxn::new();
    txn.push(VsOp::AddPort {
        bridge: BR_INT.into(),
        port: nic.into(),
    })
    .push(VsOp::Db(DbOp::Set {
        table: vs::INTERFACE.into(),
        record: nic.into(),
        columns: vec![ColVal::key(col::EXTERNAL_IDS, "iface-id", Val::str(&port))],
        if_exists: false,
    }));
    host.vs
        .transact(&txn)
        .await
        .with_context(|| format!("plugging gateway interface {nic} into {BR_INT}"))?;
    let found = HostSide {
        system_id,
        physical_ip,
        mac: &link.address,
        nexthop,
        uplink: Uplink::Vif { port },
    };
    let spec = program_nb(ctx, node, subnet, found).await?;
    if !addrs.is_empty() {
        host.ip
            .apply(&IpWrite::AddrFlush { dev: nic.into() })
            .await
            .with_context(|| format!("flushing the addresses of gateway interface {nic}"))?;
    }
    tracing::info!(
        %node, mode = "spare", %nic, ip = %spec.physical_ip, %nexthop, join_ip = %spec.join_ip,
        "gateway router {} ready", names::gateway_router(node)
    );
    Ok(spec)
}

/// `-gateway-interface` (or the NIC it resolves to) is not a device of this host.
fn no_such_interface(iface: &str, nic: &str, node: &str) -> anyhow::Error {
    let via = if iface == nic {
        String::new()
    } else {
        format!(" (its uplink {nic})")
    };
    config_error(format!(
        "gateway interface {iface}{via} of node {node} does not exist: check \
         -gateway-interface (`ip link` lists the host's interfaces)"
    ))
}

/// `(dev, gateway)` of every IPv4 default route, in table order.
async fn default_routes(host: &Host) -> Result<Vec<(String, Ipv4Addr)>> {
    let out = host
        .ip
        .run(&["-j", "-4", "route", "show", "default"])
        .await
        .context("Failed to get routing table in node")?;
    parse_default_routes(&out)
}

pub fn parse_default_routes(out: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<crate::host::ip::Route> = serde_json::from_str(out)
        .with_context(|| format!("parsing `ip -j -4 route show default`: {out}"))?;
    Ok(routes
        .into_iter()
        .filter_map(|r| Some((r.dev?, r.gateway?.parse().ok()?)))
        .collect())
}

/// `-gateway-nexthop`, else the gateway of the default route through the gateway interface
/// (or its bridge), else of the first default route.
fn nexthop_for(
    flag: Option<Ipv4Addr>,
    defaults: &[(String, Ipv4Addr)],
    devs: &[&str],
    node: &str,
) -> Result<Ipv4Addr> {
    if let Some(nh) = flag {
        return Ok(nh);
    }
    defaults
        .iter()
        .find(|(d, _)| devs.contains(&d.as_str()))
        .or(defaults.first())
        .map(|(_, gw)| *gw)
        .ok_or_else(|| {
            config_error(format!(
                "Failed to get default gateway interface: node {node} has no IPv4 default \
                 route to take the next hop from; pass -gateway-nexthop=<ip>"
            ))
        })
}

async fn system_id(host: &Host) -> Result<String> {
    let t = host
        .vs
        .query(&[Query::list(vs::OPEN_VSWITCH, &[col::EXTERNAL_IDS])])
        .await
        .context("reading the local Open vSwitch database")?;
    t.first()
        .and_then(|r| r.first())
        .and_then(|r| r.map_get(col::EXTERNAL_IDS, EXT_SYSTEM_ID))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "No system-id configured in the local host: set Open_vSwitch external_ids:system-id"
            )
        })
}

/// The MAC vswitchd gave the bridge (pinned to the NIC's by `other_config:hwaddr`).
async fn mac_in_use(host: &Host, bridge: &str) -> Result<String> {
    let t = host
        .vs
        .query(&[Query::find(
            vs::INTERFACE,
            &[col::NAME, col::MAC_IN_USE],
            vec![ColVal::set(col::NAME, Val::str(bridge))],
        )])
        .await?;
    let mac = t
        .first()
        .and_then(|r| r.first())
        .map(|r| r.str(col::MAC_IN_USE))
        .filter(|m| !m.is_empty());
    match mac {
        Some(m) => Ok(m),
        None => host
            .ip
            .link(bridge)
            .await?
            .map(|l| l.address)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow!("No mac_address found for the bridge-interface {bridge}")),
    }
}

/// Maps the provider network to the bridge, keeping other mappings.
async fn set_bridge_mapping(host: &Host, bridge: &str) -> Result<()> {
    let t = host
        .vs
        .query(&[Query::list(vs::OPEN_VSWITCH, &[col::EXTERNAL_IDS])])
        .await?;
    let cur = t
        .first()
        .and_then(|r| r.first())
        .and_then(|r| r.map_get(col::EXTERNAL_IDS, EXT_BRIDGE_MAPPINGS))
        .unwrap_or_default();
    let want = merge_mapping(&cur, PHYSNET, bridge);
    if want == cur {
        return Ok(());
    }
    let mut txn = VsTxn::new();
    txn.push(VsOp::Db(DbOp::Set {
        table: vs::OPEN_VSWITCH.into(),
        record: ".".into(),
        columns: vec![ColVal::key(
            col::EXTERNAL_IDS,
            EXT_BRIDGE_MAPPINGS,
            Val::str(&want),
        )],
        if_exists: false,
    }));
    host.vs
        .transact(&txn)
        .await
        .with_context(|| format!("setting {EXT_BRIDGE_MAPPINGS}={want}"))?;
    Ok(())
}

/// `net1:br1,physnet:brold` + (physnet, breth1) → `net1:br1,physnet:breth1`.
pub fn merge_mapping(cur: &str, network: &str, bridge: &str) -> String {
    let mut v: Vec<String> = cur
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && m.split(':').next() != Some(network))
        .map(str::to_string)
        .collect();
    v.push(format!("{network}:{bridge}"));
    v.join(",")
}

/// The physical IP the gateway router of `node` records (`rtoe-GR_<node>`'s network).
async fn gateway_physical_ip(nb: &dyn Nb, node: &str) -> Result<Option<Ipv4Net>> {
    let gr = names::gateway_router(node);
    let t = nb
        .query(&[Query::find(
            nb::LOGICAL_ROUTER_PORT,
            &[col::NAME, col::NETWORKS],
            vec![ColVal::set(col::NAME, Val::str(gateway_plan::rtoe(&gr)))],
        )])
        .await?;
    Ok(t.first()
        .and_then(|r| r.first())
        .and_then(|r| r.set(col::NETWORKS).first().and_then(|n| n.parse().ok())))
}

/// What the host side of a gateway init found (or made): the NB part is programmed from it.
struct HostSide<'a> {
    system_id: &'a str,
    physical_ip: Ipv4Net,
    mac: &'a str,
    nexthop: Ipv4Addr,
    uplink: Uplink,
}

async fn program_nb(
    ctx: &Agent,
    node: &str,
    subnet: Ipv4Net,
    found: HostSide<'_>,
) -> Result<GatewaySpec> {
    let nb = ctx.nb.as_ref();
    let join_ip = ensure_join_ip(nb, node).await?;
    let HostSide {
        system_id,
        physical_ip,
        mac,
        nexthop,
        uplink,
    } = found;
    let spec = GatewaySpec {
        node: node.into(),
        system_id: system_id.into(),
        physical_ip,
        mac: mac.into(),
        nexthop: Some(nexthop),
        cluster_subnets: ctx.cfg.cluster_subnets.iter().map(|c| c.cidr).collect(),
        node_subnet: subnet,
        join_ip,
        uplink,
        nodeport: ctx.cfg.nodeport,
    };
    if apply_nb(nb, &spec).await? == 0 {
        tracing::info!(%node, "gateway router already up to date in the NB database");
    }
    Ok(spec)
}

/// Reads the gateway's NB objects and writes what differs from `spec`, in one transaction
/// (none when nothing differs). Returns the number of operations written.
async fn apply_nb(nb: &dyn Nb, spec: &GatewaySpec) -> Result<usize> {
    let node = spec.node.as_str();
    let tables = nb
        .query(&GwSnapshot::queries(node, spec.uplink.port()))
        .await
        .with_context(|| format!("reading the gateway of node {node} from the NB database"))?;
    let ops = gateway_plan::gateway_ops(&GwSnapshot::from_tables(tables), spec);
    if ops.is_empty() {
        return Ok(0);
    }
    let n = ops.len();
    let txn: NbTxn = ops.into_iter().collect();
    nb.transact(&txn).await.with_context(|| {
        format!(
            "creating gateway router {} in the NB database",
            names::gateway_router(node)
        )
    })?;
    Ok(n)
}

/// The periodic re-check of a running node: brings the gateway's NB objects back to `spec`
/// if they were lost or changed. The join address is read back (or, when the join port is
/// gone, asked from OVN IPAM again) first, so `lb_force_snat_ip` and the cluster-router
/// routes follow it. Returns the number of operations written (0: nothing was wrong).
pub async fn recheck(nb: &dyn Nb, spec: &mut GatewaySpec) -> Result<usize> {
    let join_ip = ensure_join_ip(nb, &spec.node).await?;
    if join_ip != spec.join_ip {
        tracing::info!(
            node = %spec.node, old = %spec.join_ip, new = %join_ip,
            "gateway router {} has a new join address", names::gateway_router(&spec.node)
        );
        spec.join_ip = join_ip;
    }
    apply_nb(nb, spec).await
}

/// The gateway router's join address: the one its join port has, else the one OVN IPAM
/// assigned to the `dynamic` port `jtor-GR_<node>` (requested here when needed).
async fn ensure_join_ip(nb: &dyn Nb, node: &str) -> Result<Ipv4Net> {
    let gr = names::gateway_router(node);
    let (rtoj, jtor) = (names::rtoj(&gr), names::jtor(&gr));
    let by_name = |t: &str, cols: &[&str], n: &str| {
        Query::find(t, cols, vec![ColVal::set(col::NAME, Val::str(n))])
    };
    let deadline = tokio::time::Instant::now() + IPAM_TIMEOUT;
    let mut asked = false;
    loop {
        let t = nb
            .query(&[
                by_name(nb::LOGICAL_ROUTER_PORT, &[col::NAME, col::NETWORKS], &rtoj),
                by_name(
                    nb::LOGICAL_SWITCH_PORT,
                    &[col::NAME, col::TYPE, col::ADDRESSES, col::DYNAMIC_ADDRESSES],
                    &jtor,
                ),
                by_name(
                    nb::LOGICAL_SWITCH,
                    &[col::NAME, col::OTHER_CONFIG],
                    JOIN_SWITCH,
                ),
            ])
            .await
            .context("reading the join port from the NB database")?;
        let first = |i: usize| t.get(i).and_then(|r| r.first());
        let dynamic = match join_ip_state(first(0), first(1), first(2))? {
            JoinIp::Assigned(ip) => return Ok(ip),
            JoinIp::Waiting { dynamic } => dynamic,
        };
        if !dynamic && !asked {
            nb.transact(&request_join_ip(&jtor))
                .await
                .with_context(|| format!("asking OVN IPAM for a join address ({jtor})"))?;
            asked = true;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "OVN did not assign a join address to {jtor} within {IPAM_TIMEOUT:?}: check \
                 that ovn-northd is running, and that {} is not exhausted",
                join_cidr()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the NB says about a gateway router's join address.
#[derive(Debug, PartialEq)]
enum JoinIp {
    /// On the router port, or assigned by OVN IPAM to the switch port.
    Assigned(Ipv4Net),
    /// None yet; `dynamic`: the switch port already asks OVN IPAM for one.
    Waiting { dynamic: bool },
}

/// The join address from the router port `rtoj`, the switch port `jtor` and the join switch
/// rows (each absent when not found). An address outside the join network (or its network
/// address) is no join address. A missing join switch, or one without IPAM, is an error.
fn join_ip_state(rtoj: Option<&Row>, jtor: Option<&Row>, join: Option<&Row>) -> Result<JoinIp> {
    let in_join = |ip: Ipv4Addr| {
        (join_cidr().contains(&ip) && ip != join_cidr().network())
            .then(|| Ipv4Net::new(ip, join_cidr().prefix_len()).ok())
            .flatten()
    };
    if let Some(ip) = rtoj
        .and_then(|p| p.set(col::NETWORKS).first().cloned())
        .and_then(|n| n.parse::<Ipv4Net>().ok())
        .and_then(|n| in_join(n.addr()))
    {
        return Ok(JoinIp::Assigned(ip));
    }
    if let Some(ip) = jtor
        .map(|p| p.str(col::DYNAMIC_ADDRESSES))
        .and_then(|d| d.split_whitespace().last().and_then(|a| a.parse().ok()))
        .and_then(in_join)
    {
        return Ok(JoinIp::Assigned(ip));
    }
    let Some(join) = join else {
        bail!("logical switch {JOIN_SWITCH} does not exist: is ovnkube -init-master running?");
    };
    if join.map_get(col::OTHER_CONFIG, "subnet").is_none() {
        bail!(
            "logical switch {JOIN_SWITCH} has no other_config:subnet, so OVN cannot assign \
             join addresses: restart ovnkube -init-master (this version sets it)"
        );
    }
    let dynamic =
        jtor.is_some_and(|p| p.str(col::TYPE).is_empty() && p.set(col::ADDRESSES) == ["dynamic"]);
    Ok(JoinIp::Waiting { dynamic })
}

/// Makes `jtor` a plain switch port on the join switch that asks OVN IPAM for an address.
fn request_join_ip(jtor: &str) -> NbTxn {
    let mut txn = NbTxn::new();
    txn.push(NbOp::LspAdd {
        switch: JOIN_SWITCH.into(),
        name: jtor.to_string(),
    })
    .push(NbOp::Db(DbOp::Set {
        table: nb::LOGICAL_SWITCH_PORT.into(),
        record: jtor.to_string(),
        columns: vec![
            ColVal::set(col::TYPE, Val::str("")),
            ColVal::set(col::OPTIONS, Val::Map(Vec::new())),
            ColVal::set(col::ADDRESSES, Val::str_set(["dynamic"])),
        ],
        if_exists: false,
    }));
    txn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_detection() {
        let out = r#"[{"dst":"default","gateway":"172.31.0.100","dev":"eth1","flags":[]},{"dst":"default","dev":"tun0","flags":[]}]"#;
        let d = parse_default_routes(out).unwrap();
        assert_eq!(
            d,
            vec![("eth1".to_string(), "172.31.0.100".parse().unwrap())]
        );
        assert!(parse_default_routes("").unwrap().is_empty());
        let e = nexthop_for(None, &[], &["eth1"], "n1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Failed to get default gateway interface"), "{e}");
        assert!(e.contains("-gateway-nexthop"), "{e}");
        assert!(crate::util::retry::is_config_error(
            &nexthop_for(None, &[], &["eth1"], "n1").unwrap_err()
        ));
        let two = vec![
            ("eth0".to_string(), "10.0.0.1".parse().unwrap()),
            ("breth1".to_string(), "172.31.0.100".parse().unwrap()),
        ];
        assert_eq!(
            nexthop_for(None, &two, &["eth1", "breth1"], "n1")
                .unwrap()
                .to_string(),
            "172.31.0.100"
        );
        assert_eq!(
            nexthop_for(Some("1.2.3.4".parse().unwrap()), &two, &[], "n1")
                .unwrap()
                .to_string(),
            "1.2.3.4"
        );
    }

    #[test]
    fn a_missing_interface_is_a_configuration_error_naming_it() {
        for (iface, nic, want) in [
            (
                "eth9",
                "eth9",
                "gateway interface eth9 of node n1 does not exist",
            ),
            (
                "breth9",
                "eth9",
                "gateway interface breth9 (its uplink eth9) of node n1 does not exist",
            ),
        ] {
            let e = no_such_interface(iface, nic, "n1");
            assert!(crate::util::retry::is_config_error(&e), "{e:#}");
            assert!(e.to_string().contains(want), "{e:#}");
        }
    }

    #[test]
    fn bridge_mappings_are_merged() {
        assert_eq!(merge_mapping("", "physnet", "breth1"), "physnet:breth1");
        assert_eq!(
            merge_mapping("a:br0,physnet:brold", "physnet", "breth1"),
            "a:br0,physnet:breth1"
        );
    }

    fn row(cols: &[(&str, crate::ovn::ovsdb::Datum)]) -> Row {
        Row {
            uuid: "u".into(),
            columns: cols
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn join_ip_state_table() {
        use crate::ovn::ovsdb::Datum;
        let st = |v: &str| Datum::Str(v.into());
        let set = |v: &[&str]| Datum::Set(v.iter().map(|x| st(x)).collect());
        let net = |v: &str| v.parse::<Ipv4Net>().unwrap();
        let with_subnet = row(&[(
            col::OTHER_CONFIG,
            Datum::Map(vec![(st("subnet"), st("100.64.0.0/16"))]),
        )]);
        let no_subnet = row(&[(col::OTHER_CONFIG, Datum::Map(Vec::new()))]);
        let lrp = |n: &str| row(&[(col::NETWORKS, set(&[n]))]);
        let lsp = |ty: &str, addrs: &[&str], dynamic: &str| {
            row(&[
                (col::TYPE, st(ty)),
                (col::ADDRESSES, set(addrs)),
                (col::DYNAMIC_ADDRESSES, st(dynamic)),
            ])
        };
        let waiting = |dynamic| Ok(JoinIp::Waiting { dynamic });
        type Case = (
            &'static str,
            Option<Row>,
            Option<Row>,
            Option<Row>,
            Result<JoinIp, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "router port address wins",
                Some(lrp("100.64.0.5/16")),
                Some(lsp("", &["dynamic"], "0a:58:64:40:00:07 100.64.0.7")),
                None,
                Ok(JoinIp::Assigned(net("100.64.0.5/16"))),
            ),
            (
                "router port outside the join network is ignored",
                Some(lrp("10.0.0.5/24")),
                Some(lsp("", &["dynamic"], "0a:58:64:40:00:07 100.64.0.7")),
                None,
                Ok(JoinIp::Assigned(net("100.64.0.7/16"))),
            ),
            (
                "the network address is no join address",
                Some(lrp("100.64.0.0/16")),
                None,
                Some(with_subnet.clone()),
                waiting(false),
            ),
            (
                "IPAM-assigned switch port address",
                None,
                Some(lsp("", &["dynamic"], "0a:58:64:40:00:09 100.64.0.9")),
                None,
                Ok(JoinIp::Assigned(net("100.64.0.9/16"))),
            ),
            (
                "dynamic port without an address yet",
                None,
                Some(lsp("", &["dynamic"], "")),
                Some(with_subnet.clone()),
                waiting(true),
            ),
            (
                "router-type port is not a dynamic request",
                None,
                Some(lsp("router", &["router"], "")),
                Some(with_subnet.clone()),
                waiting(false),
            ),
            (
                "no port at all",
                None,
                None,
                Some(with_subnet.clone()),
                waiting(false),
            ),
            ("no join switch", None, None, None, Err("does not exist")),
            (
                "join switch without IPAM",
                None,
                None,
                Some(no_subnet),
                Err("has no other_config:subnet"),
            ),
        ];
        for (what, rtoj, jtor, join, want) in cases {
            let got = join_ip_state(rtoj.as_ref(), jtor.as_ref(), join.as_ref());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{what}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{what}: {e}"),
                (g, w) => panic!("{what}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn gateway_interface_from_flag_or_default_route() {
        let defaults = vec![("eth1".to_string(), "172.31.0.100".parse().unwrap())];
        assert_eq!(
            gateway_interface(Some("br0"), &defaults, "n1").unwrap(),
            "br0"
        );
        assert_eq!(gateway_interface(None, &defaults, "n1").unwrap(), "eth1");
        let e = gateway_interface(None, &[], "n1").unwrap_err();
        assert!(e.downcast_ref::<ConfigError>().is_some(), "{e}");
        assert!(
            e.to_string().contains("pass -gateway-interface=<nic>"),
            "{e}"
        );
    }
}
