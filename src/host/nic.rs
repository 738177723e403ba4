//! A NIC's IPv4 addresses and routes moved onto an OVS bridge and back: what the gateway init
//! and `ovn-kube-util nics-to-bridge NIC...` / `bridges-to-nic BRIDGE...` (`cli::util`) do.
//!
//! Moving is transactional: if any step fails, everything found on the NIC and the bridge is
//! put back on the NIC and the NIC leaves the bridge, so a node is never left off the
//! network. It is also crash-safe and re-runnable: addresses are first ADDED to the
//! destination, routes are then moved with `ip route replace` (an IPv4 route's identity does
//! not include its device, so it moves atomically), and only then are the addresses deleted
//! from the source. Whatever point a killed run reached, the next run finds the rest on the
//! NIC and finishes the move.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::ip::{DevRoute, Ip, IpWrite};
use crate::exec::Exec;
use crate::ovn::names::{BR_INT, EXT_BRIDGE_DATAPATH};
use crate::ovn::{ColVal, DbOp, Query, Row, Val, Vs, VsOp, VsTxn, Vsctl};

/// `Bridge` external_ids key naming the NIC a bridge was made for, so the gateway finds its
/// bridge whatever it is called (the reference required `br<nic>`).
pub const EXT_BRIDGE_UPLINK: &str = "bridge-uplink";
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// `Bridge` external_ids key holding what is still to move onto it (JSON of [`PendingMove`]).
pub const EXT_PENDING_MOVE: &str = "ovnkube-pending-move";

/// Addresses and routes a NIC had when it was plugged into its bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PendingMove {
    pub addrs: Vec<Ipv4Net>,
    pub routes: Vec<DevRoute>,
}

impl PendingMove {
    fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.routes.iter().all(|r| !r.moves())
    }

    /// Adds what is not there yet (a route is identified by destination and metric, as the
    /// kernel does).
    fn merge(&mut self, addrs: Vec<Ipv4Net>, routes: Vec<DevRoute>) {
        for a in addrs {
            if !self.addrs.contains(&a) {
                self.addrs.push(a);
            }
        }
        for r in routes.into_iter().filter(DevRoute::moves) {
            if !self
                .routes
                .iter()
                .any(|x| x.dst == r.dst && x.metric == r.metric)
            {
                self.routes.push(r);
            }
        }
    }
}

/// Routes to move, in order: specific routes first, default routes last (they may need a
/// gateway that a specific route makes reachable).
fn routes_to_move(routes: &[DevRoute]) -> Vec<&DevRoute> {
    let (mut v, d): (Vec<&DevRoute>, Vec<&DevRoute>) = routes
        .iter()
        .filter(|r| r.moves())
        .partition(|r| !r.is_default());
    v.extend(d);
    v
}

/// Host networking and the local OVS database, through the exec seam.
#[derive(Clone)]
pub struct Host {
    pub ip: Ip,
    pub vs: Vsctl,
    /// Where `etc/os-release` and `etc/default/…` are read (`/`; unit tests point it elsewhere).
    pub root: std::path::PathBuf,
}

/// Where a gateway interface's traffic ends up: the NIC and its bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicBridge {
    pub nic: String,
    pub bridge: String,
}

impl Host {
    pub fn new(exec: Arc<dyn Exec>) -> Host {
        Host {
            ip: Ip::host(exec.clone()),
            vs: Vsctl(crate::ovn::vs_ctl(exec)),
            root: "/".into(),
        }
    }

    pub async fn dev_routes(&self, dev: &str) -> Result<Vec<DevRoute>> {
        self.ip.dev_routes(dev).await
    }

    async fn bridges(&self) -> Result<Vec<Row>> {
        let t = self
            .vs
            .query(&[Query::list(
                "Bridge",
                &["name", "external_ids", "datapath_type", "ports"],
            )])
            .await
            .context("reading the bridges of the local Open vSwitch database")?;
        Ok(t.into_iter().next().unwrap_or_default())
    }

    /// The bridge a gateway interface means: `iface` itself when it is an OVS bridge (its NIC
    /// is its `bridge-uplink`, else the name without `br`), a bridge tagged
    /// `bridge-uplink=<iface>`, else `br<iface>` (made by [`Host::nic_to_bridge`]).
    pub async fn resolve_uplink(&self, iface: &str) -> Result<NicBridge> {
        let bridges = self.bridges().await?;
        if let Some(b) = bridges.iter().find(|b| b.str("name") == iface) {
            let nic = match b.map_get("external_ids", EXT_BRIDGE_UPLINK) {
                Some(n) => n,
                None => iface
                    .strip_prefix("br")
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow!(
                            "gateway interface {iface} is an OVS bridge not a physical device, \
                         and it names no uplink: tag it with `ovs-vsctl br-set-external-id \
                         {iface} {EXT_BRIDGE_UPLINK} <nic>` or pass the NIC as \
                         -gateway-interface"
                        )
                    })?,
            };
            return Ok(NicBridge {
                nic,
                bridge: iface.to_string(),
            });
        }
        let bridge = bridges
            .iter()
            .find(|b| b.map_get("external_ids", EXT_BRIDGE_UPLINK).as_deref() == Some(iface))
            .map(|b| b.str("name"))
            .unwrap_or_else(|| format!("br{iface}"));
        Ok(NicBridge {
            nic: iface.to_string(),
            bridge,
        })
    }

    /// The datapath type new bridges must take: br-int's, else the one ovn-controller would
    /// give br-int (G15: a userspace-only vswitchd cannot open a `system` bridge).
    async fn datapath_type(&self) -> Result<Option<String>> {
        let t = self
            .vs
            .query(&[
                Query::find(
                    "Bridge",
                    &["datapath_type"],
                    vec![ColVal::set("name", Val::str(BR_INT))],
                ),
                Query::list("Open_vSwitch", &["external_ids"]),
            ])
            .await
            .context("reading br-int's datapath type")?;
        let from_br = t
            .first()
            .and_then(|r| r.first())
            .map(|r| r.str("datapath_type"))
            .filter(|d| !d.is_empty());
        let from_ovs = t
            .get(1)
            .and_then(|r| r.first())
            .and_then(|r| r.map_get("external_ids", EXT_BRIDGE_DATAPATH))
            .filter(|d| !d.is_empty());
        Ok(from_br.or(from_ovs))
    }

    /// `vswitchd` reports a bridge it could not create only in the Interface's `error`
    /// column (G10: ovs-vsctl exits 0).
    async fn interface_error(&self, name: &str) -> Result<Option<String>> {
        let t = self
            .vs
            .query(&[Query::find(
                "Interface",
                &["name", "error"],
                vec![ColVal::set("name", Val::str(name))],
            )])
            .await?;
        Ok(t.first()
            .and_then(|r| r.first())
            .map(|r| r.str("error"))
            .filter(|e| !e.is_empty()))
    }

    /// `nics-to-bridge` for one NIC; returns the bridge. On failure the NIC keeps (or gets
    /// back) its addresses and routes and leaves the bridge.
    ///
    /// What is to move is read BEFORE the NIC becomes an OVS port (plugging it may bounce the
    /// link, and the kernel then drops its routes) and stored on the bridge
    /// (`external_ids:ovnkube-pending-move`) in the same transaction that plugs it in, so a
    /// run killed at any point is finished by the next one; the key goes once all moved.
    pub async fn nic_to_bridge(&self, nic: &str) -> Result<String> {
        let link = self
            .ip
            .link(nic)
            .await?
            .ok_or_else(|| anyhow!("network interface {nic} does not exist"))?;
        let NicBridge { bridge, .. } = self.resolve_uplink(nic).await?;
        let bridges = self.bridges().await?;
        let existing = bridges.iter().find(|b| b.str("name") == bridge);
        let existed = existing.is_some();
        let mut pending = existing
            .and_then(|b| b.map_get("external_ids", EXT_PENDING_MOVE))
            .and_then(|j| serde_json::from_str::<PendingMove>(&j).ok())
            .unwrap_or_default();
        pending.merge(self.ip.addrs(nic).await?, self.dev_routes(nic).await?);
        // A bridge left half-done may lose its routes when the transaction below changes it
        // (a MAC change bounces the device): remember them too.
        if existed && self.ip.link(&bridge).await?.is_some() {
            pending.merge(
                self.ip.addrs(&bridge).await?,
                self.dev_routes(&bridge).await?,
            );
        }
        let dp = self.datapath_type().await?;
        let res = async {
            let mut txn = bridge_txn(&bridge, nic, &link.address, if existed { None } else { dp });
            if !pending.is_empty() {
                txn.push(VsOp::BrSetExternalId {
                    bridge: bridge.clone(),
                    key: EXT_PENDING_MOVE.into(),
                    value: serde_json::to_string(&pending)?,
                });
            }
            self.vs
                .transact(&txn)
                .await
                .with_context(|| format!("creating OVS bridge {bridge} with port {nic}"))?;
            if let Some(e) = self.interface_error(&bridge).await? {
                bail!("ovs-vswitchd could not create bridge {bridge}: {e}");
            }
            ensure_transient_port_cleanup(&self.root);
            self.ip.wait_link(&bridge, LINK_TIMEOUT).await?;
            self.move_inner(nic, &bridge, &pending, false).await?;
            if !pending.is_empty() {
                self.clear_pending(&bridge).await?;
            }
            Ok(())
        }
        .await;
        match res {
            Ok(()) => Ok(bridge),
            Err(e) => {
                let undo = self.undo_bridge(nic, &bridge, !existed, &pending).await;
                let restored = match undo {
                    Ok(()) => format!("{nic} has its addresses and routes back"),
                    Err(u) => format!(
                        "restoring {nic} failed too ({u:#}): check its addresses and routes, \
                         then run `{} bridges-to-nic {bridge}`",
                        crate::cli::util::UTIL_NAME
                    ),
                };
                Err(e.context(format!(
                    "moving {nic} into OVS bridge {bridge} failed; {restored}"
                )))
            }
        }
    }

    async fn clear_pending(&self, bridge: &str) -> Result<()> {
        let mut txn = VsTxn::new();
        txn.push(VsOp::Db(DbOp::Remove {
            table: "Bridge".into(),
            record: bridge.into(),
            column: "external_ids".into(),
            values: vec![Val::str(EXT_PENDING_MOVE)],
            if_exists: true,
        }));
        self.vs
            .transact(&txn)
            .await
            .with_context(|| format!("clearing external_ids:{EXT_PENDING_MOVE} of {bridge}"))?;
        Ok(())
    }

    /// Rollback of [`Host::nic_to_bridge`]: everything on the bridge (and what was to move)
    /// goes back to the NIC (best effort: every step is tried), the NIC leaves the bridge, a
    /// bridge we created goes away.
    async fn undo_bridge(
        &self,
        nic: &str,
        bridge: &str,
        created: bool,
        pending: &PendingMove,
    ) -> Result<()> {
        let mut errors = Vec::new();
        let from = if self.ip.link(bridge).await.ok().flatten().is_some() {
            bridge
        } else {
            // No bridge device: only put back what was to move.
            nic
        };
        if let Err(e) = self.move_inner(from, nic, pending, true).await {
            errors.push(format!("{e:#}"));
        }
        let mut txn = VsTxn::new();
        txn.push(VsOp::DelPort {
            bridge: Some(bridge.into()),
            port: nic.into(),
        });
        if created {
            txn.push(VsOp::DelBr {
                name: bridge.into(),
            });
        }
        if let Err(e) = self.vs.transact(&txn).await {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }

    /// `bridges-to-nic` for one bridge: its addresses and routes go back to its NIC, the
    /// bridge is deleted (with the reference's br-int patch port).
    pub async fn bridge_to_nic(&self, bridge: &str) -> Result<String> {
        let bridges = self.bridges().await?;
        let b = bridges
            .iter()
            .find(|b| b.str("name") == bridge)
            .ok_or_else(|| anyhow!("{bridge} is not an OVS bridge"))?;
        let nic = match b.map_get("external_ids", EXT_BRIDGE_UPLINK) {
            Some(n) => n,
            None => bridge
                .strip_prefix("br")
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    anyhow!(
                        "cannot tell the NIC of bridge {bridge}: it has no \
                         external_ids:{EXT_BRIDGE_UPLINK} and its name does not start with br"
                    )
                })?,
        };
        self.ip.link(&nic).await?.ok_or_else(|| {
            anyhow!("network interface {nic} (the NIC of {bridge}) does not exist")
        })?;
        self.move_ip_config(bridge, &nic).await?;
        let mut txn = VsTxn::new();
        txn.push(VsOp::DelBr {
            name: bridge.into(),
        })
        .push(VsOp::DelPort {
            bridge: Some(BR_INT.into()),
            port: format!("k8s-patch-{BR_INT}-{bridge}"),
        });
        // A missing br-int is fine: --if-exists only covers the port, so ask first.
        let has_br_int = self
            .bridges()
            .await?
            .iter()
            .any(|b| b.str("name") == BR_INT);
        if !has_br_int {
            txn.ops.truncate(1);
        }
        self.vs
            .transact(&txn)
            .await
            .with_context(|| format!("deleting OVS bridge {bridge}"))?;
        Ok(nic)
    }

    /// Moves every IPv4 address and (non-kernel) route of `from` to `to`, stopping at the
    /// first failure.
    pub async fn move_ip_config(&self, from: &str, to: &str) -> Result<()> {
        self.move_inner(from, to, &PendingMove::default(), false)
            .await
    }

    /// Moves what is on `from` plus what `extra` remembers. With `keep_going`, every step is
    /// tried and the failures are reported together (rollback).
    async fn move_inner(
        &self,
        from: &str,
        to: &str,
        extra: &PendingMove,
        keep_going: bool,
    ) -> Result<()> {
        let on_from = if from == to {
            Vec::new()
        } else {
            self.ip.addrs(from).await?
        };
        let mut all = extra.clone();
        let cur_routes = if from == to {
            Vec::new()
        } else {
            self.dev_routes(from).await?
        };
        all.merge(on_from.clone(), cur_routes);
        let addrs: Vec<Ipv4Net> = all.addrs.clone();
        let routes = all.routes.clone();
        let mut errors: Vec<String> = Vec::new();
        let mut step = |r: Result<()>, what: String| -> Result<()> {
            match r {
                Ok(_) => Ok(()),
                Err(e) if keep_going => {
                    errors.push(format!("{what}: {e:#}"));
                    Ok(())
                }
                Err(e) => Err(e.context(what)),
            }
        };
        for a in &addrs {
            let s = a.to_string();
            step(
                self.ip.apply(&IpWrite::addr_replace(to, *a)).await,
                format!("adding {s} to {to}"),
            )?;
        }
        step(
            self.ip.apply(&IpWrite::link_up(to)).await,
            format!("setting {to} up"),
        )?;
        for r in routes_to_move(&routes) {
            step(
                self.ip.apply(&IpWrite::move_route(r, to)).await,
                format!("moving route {} from {from} to {to}", r.dst),
            )?;
        }
        for a in &on_from {
            let s = a.to_string();
            step(
                self.ip.apply(&IpWrite::addr_del(from, *a)).await,
                format!("removing {s} from {from}"),
            )?;
        }
        if !addrs.is_empty() {
            tracing::info!(
                %from, %to,
                addresses = %addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
                routes = routes_to_move(&routes).len(),
                "moved IPv4 addresses and routes"
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }
}

/// The bridge for `nic` in one transaction: standalone (NORMAL switching for
/// the host's own traffic), the NIC's MAC pinned so the host keeps its MAC, the NIC as a
/// transient port (deleted when OVS restarts with `--delete-transient-ports`), and the
/// `bridge-uplink` tag. `datapath_type` only for a bridge we create.
pub fn bridge_txn(bridge: &str, nic: &str, mac: &str, datapath_type: Option<String>) -> VsTxn {
    let mut txn = VsTxn::new();
    txn.push(VsOp::AddBr {
        name: bridge.into(),
    })
    .push(VsOp::BrSetExternalId {
        bridge: bridge.into(),
        key: "bridge-id".into(),
        value: bridge.into(),
    })
    .push(VsOp::BrSetExternalId {
        bridge: bridge.into(),
        key: EXT_BRIDGE_UPLINK.into(),
        value: nic.into(),
    });
    let mut cols = vec![
        ColVal::set("fail_mode", Val::str("standalone")),
        ColVal::key("other_config", "hwaddr", Val::str(mac)),
    ];
    if let Some(dp) = datapath_type {
        cols.push(ColVal::set("datapath_type", Val::str(dp)));
    }
    txn.push(VsOp::Db(DbOp::Set {
        table: "Bridge".into(),
        record: bridge.into(),
        columns: cols,
        if_exists: false,
    }))
    .push(VsOp::AddPort {
        bridge: bridge.into(),
        port: nic.into(),
    })
    .push(VsOp::Db(DbOp::Set {
        table: "Port".into(),
        record: nic.into(),
        columns: vec![ColVal::key("other_config", "transient", Val::str("true"))],
        if_exists: false,
    }));
    txn
}

/// Make OVS delete transient ports when it restarts, so a NIC is not left in a
/// bridge by a crashed node. Best effort: logged, never fatal.
fn ensure_transient_port_cleanup(root: &std::path::Path) {
    let os = std::fs::read_to_string(root.join("etc/os-release")).unwrap_or_default();
    let name = os
        .lines()
        .find_map(|l| l.strip_prefix("NAME="))
        .map(|n| n.trim_matches('"').to_string())
        .unwrap_or_default();
    let (path, text) = if ["Fedora", "Red Hat", "CentOS"]
        .iter()
        .any(|p| name.contains(p))
    {
        (
            "etc/default/openvswitch",
            "OPTIONS=--delete-transient-ports",
        )
    } else if ["Debian", "Ubuntu"].iter().any(|p| name.contains(p)) {
        (
            "etc/default/openvswitch-switch",
            "OVS_CTL_OPTS=\"$OVS_CTL_OPTS --delete-transient-ports\"",
        )
    } else {
        tracing::info!(os = %name, "unknown platform: not configuring --delete-transient-ports");
        return;
    };
    let path = root.join(path);
    let path = path.display().to_string();
    let Ok(cur) = std::fs::read_to_string(&path) else {
        tracing::info!(%path, "not present: not configuring --delete-transient-ports");
        return;
    };
    if cur.contains("--delete-transient-ports") {
        return;
    }
    let sep = if cur.is_empty() || cur.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let res = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{sep}{text}\n").as_bytes()));
    match res {
        Ok(()) => tracing::info!(%path, "added --delete-transient-ports"),
        Err(e) => tracing::warn!(%path, "cannot add --delete-transient-ports: {e}"),
    }
}

/// The node's IPv4 address among `addrs`: the one on the next hop's subnet, else the last
/// one listed (the reference's choice).
pub fn pick_address(addrs: &[Ipv4Net], nexthop: Option<Ipv4Addr>) -> Option<Ipv4Net> {
    nexthop
        .and_then(|nh| addrs.iter().find(|a| a.contains(&nh)))
        .or(addrs.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{FakeExec, FakeReply};

    const ADDR_ETH1: &str = r#"[{"ifname":"eth1","addr_info":[{"family":"inet","local":"172.31.0.1","prefixlen":24}]}]"#;
    const ROUTES_ETH1: &str = r#"[{"dst":"default","gateway":"172.31.0.100","flags":[]},{"dst":"172.31.0.0/24","protocol":"kernel","scope":"link","prefsrc":"172.31.0.1","flags":[]},{"dst":"198.51.100.0/24","gateway":"172.31.0.100","protocol":"static","metric":5,"flags":["onlink"]}]"#;

    fn vsctl_json(headings: &[&str], rows: &str) -> String {
        format!(
            r#"{{"data":{rows},"headings":{}}}"#,
            serde_json::to_string(headings).unwrap()
        )
    }

    #[test]
    fn routes_move_specific_first_and_keep_their_attributes() {
        let routes: Vec<DevRoute> = serde_json::from_str(ROUTES_ETH1).unwrap();
        let m = routes_to_move(&routes);
        assert_eq!(
            m.len(),
            2,
            "the kernel's connected route follows the address"
        );
        assert_eq!(
            m[0].replace_args("breth1").join(" "),
            "route replace 198.51.100.0/24 via 172.31.0.100 dev breth1 proto static metric 5 onlink"
        );
        assert_eq!(
            m[1].replace_args("breth1").join(" "),
            "route replace default via 172.31.0.100 dev breth1"
        );
    }

    #[test]
    fn node_address_is_on_the_next_hop_subnet() {
        let a: Vec<Ipv4Net> = vec![
            "10.9.0.5/24".parse().unwrap(),
            "172.31.0.1/24".parse().unwrap(),
            "192.0.2.1/24".parse().unwrap(),
        ];
        assert_eq!(
            pick_address(&a, Some("172.31.0.100".parse().unwrap())),
            Some(a[1])
        );
        assert_eq!(pick_address(&a, None), Some(a[2]));
        assert_eq!(pick_address(&[], None), None);
    }

    fn pending_json() -> String {
        let routes: Vec<DevRoute> = serde_json::from_str(ROUTES_ETH1).unwrap();
        serde_json::to_string(&PendingMove {
            addrs: vec!["172.31.0.1/24".parse().unwrap()],
            routes: routes.into_iter().filter(DevRoute::moves).collect(),
        })
        .unwrap()
    }

    fn script_common(f: &FakeExec) {
        f.expect(
            "ip -j link show dev eth1",
            FakeReply::Ok(
                r#"[{"ifname":"eth1","address":"02:00:00:00:01:01","mtu":1500,"flags":["UP"]}]"#
                    .into(),
            ),
        );
        let bridges = vsctl_json(
            &["_uuid", "name", "external_ids", "datapath_type", "ports"],
            r#"[[["uuid","b1"],"br-int",["map",[]],"netdev",["set",[]]]]"#,
        );
        for _ in 0..2 {
            f.expect(
                "ovs-vsctl --timeout=15 --format=json -- --columns=_uuid,name,external_ids,datapath_type,ports list Bridge",
                FakeReply::Ok(bridges.clone()),
            );
        }
        // What is to move is read before the NIC is plugged in.
        f.expect(
            "ip -j -4 addr show dev eth1",
            FakeReply::Ok(ADDR_ETH1.into()),
        );
        f.expect(
            "ip -j -4 route show dev eth1",
            FakeReply::Ok(ROUTES_ETH1.into()),
        );
        f.expect(
            "ovs-vsctl --timeout=15 --format=json -- --columns=_uuid,datapath_type find Bridge 'name=\"br-int\"' -- --columns=_uuid,external_ids list Open_vSwitch",
            FakeReply::Ok(format!(
                "{}\n{}",
                vsctl_json(&["_uuid", "datapath_type"], r#"[[["uuid","b1"],"netdev"]]"#),
                vsctl_json(&["_uuid", "external_ids"], r#"[[["uuid","o"],["map",[]]]]"#)
            )),
        );
        let plug = crate::exec::Cmd::new("ovs-vsctl")
            .arg("--timeout=15")
            .args(
                "-- --may-exist add-br breth1 -- br-set-external-id breth1 bridge-id breth1 -- br-set-external-id breth1 bridge-uplink eth1 -- set Bridge breth1"
                    .split(' '),
            )
            .args([
                "fail_mode=\"standalone\"",
                "other_config:\"hwaddr\"=\"02:00:00:00:01:01\"",
                "datapath_type=\"netdev\"",
            ])
            .args("-- --may-exist add-port breth1 eth1 -- set Port eth1".split(' '))
            .arg("other_config:\"transient\"=\"true\"")
            .args(["--", "br-set-external-id", "breth1", "ovnkube-pending-move"])
            .arg(pending_json())
            .cmdline();
        f.expect(&plug, FakeReply::Ok(String::new()));
        f.expect(
            "ovs-vsctl --timeout=15 --format=json -- --columns=_uuid,name,error find Interface 'name=\"breth1\"'",
            FakeReply::Ok(vsctl_json(
                &["_uuid", "name", "error"],
                r#"[[["uuid","i"],"breth1",["set",[]]]]"#,
            )),
        );
        f.expect(
            "ip -j link show dev breth1",
            FakeReply::Ok(r#"[{"ifname":"breth1","address":"02:00:00:00:01:01"}]"#.into()),
        );
        // Plugging the NIC in bounced it: the kernel dropped its routes. They still move.
        f.expect(
            "ip -j -4 addr show dev eth1",
            FakeReply::Ok(ADDR_ETH1.into()),
        );
        f.expect("ip -j -4 route show dev eth1", FakeReply::Ok("[]".into()));
        f.expect(
            "ip addr replace 172.31.0.1/24 dev breth1",
            FakeReply::Ok(String::new()),
        );
        f.expect("ip link set dev breth1 up", FakeReply::Ok(String::new()));
        f.expect(
            "ip route replace 198.51.100.0/24 via 172.31.0.100 dev breth1 proto static metric 5 onlink",
            FakeReply::Ok(String::new()),
        );
    }

    #[tokio::test]
    async fn nic_moves_into_a_new_bridge_add_first_delete_last() {
        let f = FakeExec::strict();
        script_common(&f);
        f.expect(
            "ip route replace default via 172.31.0.100 dev breth1",
            FakeReply::Ok(String::new()),
        );
        f.expect(
            "ip addr del 172.31.0.1/24 dev eth1",
            FakeReply::Ok(String::new()),
        );
        f.expect(
            "ovs-vsctl --timeout=15 -- --if-exists remove Bridge breth1 external_ids '\"ovnkube-pending-move\"'",
            FakeReply::Ok(String::new()),
        );
        let mut h = Host::new(f.clone());
        h.root = "/nonexistent".into();
        assert_eq!(h.nic_to_bridge("eth1").await.unwrap(), "breth1");
        assert!(f.all_called(), "{:?}", f.calls().last());
    }

    #[tokio::test]
    async fn a_failing_step_gives_the_nic_everything_back() {
        let f = FakeExec::strict();
        script_common(&f);
        f.expect(
            "ip route replace default via 172.31.0.100 dev breth1",
            FakeReply::Fail {
                stderr: "Error: Nexthop has invalid gateway.".into(),
            },
        );
        // Rollback: what is on the bridge and what was to move go back to the NIC (also the
        // routes the bounce took away); the NIC leaves OVS.
        f.expect(
            "ip -j link show dev breth1",
            FakeReply::Ok(r#"[{"ifname":"breth1"}]"#.into()),
        );
        f.expect(
            "ip -j -4 addr show dev breth1",
            FakeReply::Ok(ADDR_ETH1.replace("eth1", "breth1")),
        );
        f.expect(
            "ip -j -4 route show dev breth1",
            FakeReply::Ok(r#"[{"dst":"198.51.100.0/24","gateway":"172.31.0.100","protocol":"static","metric":5,"flags":["onlink"]}]"#.into()),
        );
        f.expect(
            "ip addr replace 172.31.0.1/24 dev eth1",
            FakeReply::Ok(String::new()),
        );
        f.expect("ip link set dev eth1 up", FakeReply::Ok(String::new()));
        f.expect(
            "ip route replace 198.51.100.0/24 via 172.31.0.100 dev eth1 proto static metric 5 onlink",
            FakeReply::Ok(String::new()),
        );
        f.expect(
            "ip route replace default via 172.31.0.100 dev eth1",
            FakeReply::Ok(String::new()),
        );
        f.expect(
            "ip addr del 172.31.0.1/24 dev breth1",
            FakeReply::Ok(String::new()),
        );
        f.expect(
            "ovs-vsctl --timeout=15 -- --if-exists del-port breth1 eth1 -- --if-exists del-br breth1",
            FakeReply::Ok(String::new()),
        );
        let mut h = Host::new(f.clone());
        h.root = "/nonexistent".into();
        let e = format!("{:#}", h.nic_to_bridge("eth1").await.unwrap_err());
        assert!(
            e.contains(
                "moving eth1 into OVS bridge breth1 failed; eth1 has its addresses and routes back"
            ),
            "{e}"
        );
        assert!(
            e.contains("moving route default from eth1 to breth1"),
            "{e}"
        );
        assert!(e.contains("Nexthop has invalid gateway"), "{e}");
        assert!(f.all_called(), "{:?}", f.calls().last());
    }
}
