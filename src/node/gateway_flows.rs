//! OpenFlow on the shared gateway bridge (reference §7.5, §7.6), with `ovs-ofctl`.
//!
//! In shared mode the host and the gateway router share the NIC's IP and MAC. The bridge
//! sorts arriving traffic: replies to connections the gateway router made (SNATed pod
//! traffic, committed to conntrack on the way out) and NodePort traffic go to the patch port
//! into OVN; everything else goes to the host. ARP goes to both (they answer alike). Our flows
//! carry cookies, so they are found, checked and re-added (e.g. after vswitchd restarted)
//! without touching anyone else's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::watcher;

use crate::exec::{Cmd, Exec};
use crate::kube::{Change, informer, key};
use crate::ovn::{ColVal, Query, Val, Vs, Vsctl};
use crate::util::cancel::CancelToken;

/// Cookie of the conntrack/ARP flows.
pub const COOKIE_BASE: u64 = 0x4f4b_4757_0001;
/// Cookie of the per-NodePort flows.
pub const COOKIE_NODEPORT: u64 = 0x4f4b_4757_0002;
const OFCTL_TIMEOUT: Duration = Duration::from_secs(10);
const RESYNC: Duration = Duration::from_secs(10);

/// The patch port ovn-controller creates on the provider bridge for a localnet port.
pub fn patch_port(localnet_port: &str) -> String {
    format!("patch-{localnet_port}-to-br-int")
}

/// The conntrack and ARP flows (§7.5, plus unicast ARP replies to both the host and OVN,
/// since both use the shared MAC).
pub fn base_flows(phys: i64, patch: i64, zone: u32) -> Vec<String> {
    let c = format!("cookie={COOKIE_BASE:#x}");
    vec![
        format!("{c},priority=100,in_port={patch},ip,actions=ct(commit,zone={zone}),output:{phys}"),
        format!("{c},priority=50,in_port={phys},ip,actions=ct(zone={zone},table=1)"),
        format!("{c},priority=100,table=1,ct_state=+trk+est,actions=output:{patch}"),
        format!("{c},priority=100,table=1,ct_state=+trk+rel,actions=output:{patch}"),
        format!("{c},priority=0,table=1,actions=output:LOCAL"),
        format!("{c},priority=10,in_port={phys},arp,actions=output:{patch},output:LOCAL"),
    ]
}

/// One flow per NodePort (§7.6): new connections to `<node IP>:<nodePort>` go to OVN.
pub fn nodeport_flow(phys: i64, patch: i64, proto: &str, port: u16) -> String {
    format!(
        "cookie={COOKIE_NODEPORT:#x},priority=100,in_port={phys},{proto},tp_dst={port},actions=output:{patch}"
    )
}

/// `(proto, port)` of the NodePort flows in `ovs-ofctl dump-flows` output.
pub fn parse_nodeport_flows(dump: &str) -> BTreeSet<(String, u16)> {
    dump.lines()
        .filter_map(|l| {
            let proto = if l.contains("tcp") {
                "tcp"
            } else if l.contains("udp") {
                "udp"
            } else {
                return None;
            };
            let rest = l.split("tp_dst=").nth(1)?;
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((proto.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// The `(proto, nodePort)` pairs the services ask for (TCP and UDP; SCTP has no gateway LB).
pub fn wanted_nodeports<'a>(
    svcs: impl IntoIterator<Item = &'a Service>,
) -> BTreeSet<(String, u16)> {
    let mut out = BTreeSet::new();
    for s in svcs {
        let Some(spec) = &s.spec else { continue };
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => "tcp",
                "UDP" => "udp",
                _ => continue,
            };
            if let Some(np) = p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
            {
                out.insert((proto.to_string(), np));
            }
        }
    }
    out
}

/// The flows of one shared gateway bridge.
#[derive(Clone)]
pub struct BridgeFlows {
    pub exec: Arc<dyn Exec>,
    pub vs: Vsctl,
    pub bridge: String,
    pub nic: String,
    pub patch: String,
    pub zone: u32,
}

impl BridgeFlows {
    async fn ofctl(&self, args: &[&str]) -> Result<String> {
        let cmd = Cmd::new("ovs-ofctl")
            .args(args.iter().copied())
            .timeout(OFCTL_TIMEOUT);
        Ok(self.exec.run(&cmd).await?.stdout)
    }

    /// OpenFlow port numbers of the NIC and of the patch port (`None` until both exist).
    async fn ofports(&self) -> Result<Option<(i64, i64)>> {
        let q = |n: &str| {
            Query::find(
                "Interface",
                &["name", "ofport"],
                vec![ColVal::set("name", Val::str(n))],
            )
        };
        let t = self
            .vs
            .query(&[q(&self.nic), q(&self.patch)])
            .await
            .context("reading OpenFlow port numbers")?;
        let port = |i: usize| {
            t.get(i)
                .and_then(|r| r.first())
                .and_then(|r| r.get("ofport").and_then(|d| d.as_int()))
                .filter(|p| *p > 0)
        };
        Ok(port(0).zip(port(1)))
    }

    /// Waits until ovn-controller has patched the bridge to br-int.
    pub async fn wait_ofports(&self, timeout: Duration) -> Result<(i64, i64)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.ofports().await? {
                return Ok(p);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "patch port {} on bridge {} did not appear within {timeout:?}: check that \
                     ovn-controller runs on this node and that external_ids:ovn-bridge-mappings \
                     maps {} to {}",
                    self.patch,
                    self.bridge,
                    super::gateway_plan::PHYSNET,
                    self.bridge
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn dump(&self, cookie: u64) -> Result<String> {
        self.ofctl(&[
            "--no-names",
            "dump-flows",
            &self.bridge,
            &format!("cookie={cookie:#x}/-1"),
        ])
        .await
        .with_context(|| format!("reading the flows of bridge {}", self.bridge))
    }

    /// (Re)installs the conntrack/ARP flows when they are missing or name other ports.
    pub async fn ensure_base(&self) -> Result<(i64, i64)> {
        let (phys, patch) = self
            .ofports()
            .await?
            .ok_or_else(|| anyhow!("{} or {} has no OpenFlow port", self.nic, self.patch))?;
        let want = base_flows(phys, patch, self.zone);
        let dump = self.dump(COOKIE_BASE).await?;
        let n = dump.lines().filter(|l| l.contains("cookie=")).count();
        let ports_ok =
            dump.contains(&format!("in_port={phys}")) && dump.contains(&format!("output:{patch}"));
        if n != want.len() || !ports_ok {
            self.ofctl(&[
                "del-flows",
                &self.bridge,
                &format!("cookie={COOKIE_BASE:#x}/-1"),
            ])
            .await?;
            for f in &want {
                self.ofctl(&["add-flow", &self.bridge, f])
                    .await
                    .with_context(|| format!("adding a flow to bridge {}", self.bridge))?;
            }
            tracing::info!(bridge = %self.bridge, phys, patch, zone = self.zone, "gateway bridge flows installed");
        }
        Ok((phys, patch))
    }

    /// Brings the NodePort flows to `want` (stale ones deleted, missing ones added).
    pub async fn sync_nodeports(&self, want: &BTreeSet<(String, u16)>) -> Result<()> {
        let (phys, patch) = self.ensure_base().await?;
        let dump = self.dump(COOKIE_NODEPORT).await?;
        let have = parse_nodeport_flows(&dump);
        let stale_port = !dump.lines().filter(|l| l.contains("cookie=")).all(|l| {
            l.contains(&format!("in_port={phys}")) && l.contains(&format!("output:{patch}"))
        });
        if stale_port {
            self.ofctl(&[
                "del-flows",
                &self.bridge,
                &format!("cookie={COOKIE_NODEPORT:#x}/-1"),
            ])
            .await?;
        }
        for (proto, port) in have.difference(want) {
            if stale_port {
                break;
            }
            self.ofctl(&[
                "del-flows",
                &self.bridge,
                &format!("cookie={COOKIE_NODEPORT:#x}/-1,in_port={phys},{proto},tp_dst={port}"),
            ])
            .await?;
            tracing::info!(bridge = %self.bridge, %proto, port, "NodePort flow removed");
        }
        for (proto, port) in want {
            if !stale_port && have.contains(&(proto.clone(), *port)) {
                continue;
            }
            self.ofctl(&[
                "add-flow",
                &self.bridge,
                &nodeport_flow(phys, patch, proto, *port),
            ])
            .await?;
            tracing::info!(bridge = %self.bridge, %proto, port, "NodePort flow added");
        }
        Ok(())
    }

    /// The NodePort flow watcher of a `-nodeport` node: a Service watch plus a periodic
    /// re-check (flows vanish when vswitchd restarts). Errors are logged and retried.
    pub async fn run(self, client: kube::Client, mut cancel: CancelToken) {
        let mut svcs = informer(Api::<Service>::all(client), watcher::Config::default()).boxed();
        let mut all: BTreeMap<String, Arc<Service>> = BTreeMap::new();
        let mut synced = false;
        let mut applied: Option<BTreeSet<(String, u16)>> = None;
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            let force = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => true,
                ch = svcs.next() => {
                    match ch {
                        Some(Change::Apply { new, .. }) => { all.insert(key(new.as_ref()), new); }
                        Some(Change::Delete(old)) => { all.remove(&key(old.as_ref())); }
                        Some(Change::Synced) => synced = true,
                        None => {
                            tracing::warn!("service watch of the NodePort flow watcher ended");
                            return;
                        }
                    }
                    false
                }
            };
            if !synced {
                continue;
            }
            let want = wanted_nodeports(all.values().map(|s| s.as_ref()));
            if !force && applied.as_ref() == Some(&want) {
                continue;
            }
            match self.sync_nodeports(&want).await {
                Ok(()) => applied = Some(want),
                Err(e) => {
                    applied = None;
                    tracing::warn!(bridge = %self.bridge, error = %format!("{e:#}"), "syncing NodePort flows failed; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

    #[test]
    fn flows_and_their_parsing() {
        let b = base_flows(1, 2, 64000);
        assert_eq!(
            b[0],
            "cookie=0x4f4b47570001,priority=100,in_port=2,ip,actions=ct(commit,zone=64000),output:1"
        );
        assert_eq!(
            b[4],
            "cookie=0x4f4b47570001,priority=0,table=1,actions=output:LOCAL"
        );
        let f = nodeport_flow(1, 2, "tcp", 30080);
        assert_eq!(
            f,
            "cookie=0x4f4b47570002,priority=100,in_port=1,tcp,tp_dst=30080,actions=output:2"
        );
        let dump = " cookie=0x4f4b47570002, duration=3.1s, table=0, n_packets=0, n_bytes=0, priority=100,tcp,in_port=1,tp_dst=30080 actions=output:2\n cookie=0x4f4b47570002, duration=3.1s, table=0, n_packets=0, n_bytes=0, priority=100,udp,in_port=1,tp_dst=31000 actions=output:2\n";
        let got = parse_nodeport_flows(dump);
        assert!(got.contains(&("tcp".to_string(), 30080)));
        assert!(got.contains(&("udp".to_string(), 31000)));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn nodeports_of_services() {
        let svc = |ty: &str, ports: Vec<(&str, Option<i32>)>| Service {
            spec: Some(ServiceSpec {
                type_: Some(ty.into()),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(p, np)| ServicePort {
                            protocol: Some(p.into()),
                            port: 80,
                            node_port: np,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let all = [
            svc(
                "NodePort",
                vec![
                    ("TCP", Some(30080)),
                    ("UDP", Some(30081)),
                    ("SCTP", Some(30082)),
                ],
            ),
            svc("ClusterIP", vec![("TCP", None)]),
            svc("LoadBalancer", vec![("TCP", Some(30090))]),
            svc("NodePort", vec![("TCP", None)]),
        ];
        let w = wanted_nodeports(all.iter());
        let w: Vec<String> = w.into_iter().map(|(p, n)| format!("{p}/{n}")).collect();
        assert_eq!(w, ["tcp/30080", "tcp/30090", "udp/30081"]);
    }
}
