//! OpenFlow on the shared gateway bridge (the conntrack, ARP and NodePort flows), with
//! `ovs-ofctl`.
//!
//! In shared mode the host and the gateway router share the NIC's IP and MAC. The bridge
//! sorts arriving traffic: replies to connections the gateway router made (SNATed pod
//! traffic, committed to conntrack on the way out), NodePort traffic and traffic to a
//! Service's externalIPs / LoadBalancer ingress IPs (their ports only) go to the patch port
//! into OVN, whose gateway router load balancers hold those VIPs; everything else goes to the
//! host. ARP goes to both (they answer alike). Our flows
//! carry cookies, so they are found, checked and re-added (e.g. after vswitchd restarted)
//! without touching anyone else's.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServicePort};

use crate::controller::services::validate::{self, Reserved};
use crate::controller::services::vips;
use crate::exec::{Cmd, Exec};
use crate::kube::{Change, key};
use crate::ovn::schema::{col, vs};
use crate::ovn::{ColVal, Query, Val, Vs, Vsctl};
use tokio_util::sync::CancellationToken;

/// Cookie of the conntrack/ARP flows.
pub const COOKIE_BASE: u64 = 0x4f4b_4757_0001;
/// Cookie of the per-service flows (NodePorts, externalIPs, LoadBalancer ingress IPs).
pub const COOKIE_NODEPORT: u64 = 0x4f4b_4757_0002;
const OFCTL_TIMEOUT: Duration = Duration::from_secs(10);
const RESYNC: Duration = Duration::from_secs(10);

/// The patch port ovn-controller creates on the provider bridge for a localnet port.
pub fn patch_port(localnet_port: &str) -> String {
    format!("patch-{localnet_port}-to-br-int")
}

/// The conntrack and ARP flows, plus unicast ARP replies to both the host and OVN, since both
/// use the shared MAC.
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

/// Traffic a service asks the bridge to send into OVN: `<any node address>:<nodePort>`
/// (`ip` is `None`) or `<externalIP / LoadBalancer ingress IP>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceFlow {
    pub proto: String,
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
}

impl ServiceFlow {
    pub fn nodeport(proto: &str, port: u16) -> ServiceFlow {
        ServiceFlow {
            proto: proto.to_string(),
            ip: None,
            port,
        }
    }

    pub fn external(proto: &str, ip: Ipv4Addr, port: u16) -> ServiceFlow {
        ServiceFlow {
            proto: proto.to_string(),
            ip: Some(ip),
            port,
        }
    }

    /// The match, as `del-flows` takes it.
    fn matcher(&self, phys: i64) -> String {
        let mut m = format!("in_port={phys},{}", self.proto);
        if let Some(ip) = self.ip {
            m.push_str(&format!(",nw_dst={ip}"));
        }
        m.push_str(&format!(",tp_dst={}", self.port));
        m
    }

    /// The flow: new connections matching it go to OVN.
    pub fn flow(&self, phys: i64, patch: i64) -> String {
        format!(
            "cookie={COOKIE_NODEPORT:#x},priority=100,{},actions=output:{patch}",
            self.matcher(phys)
        )
    }
}

/// One flow per NodePort: new connections to `<node IP>:<nodePort>` go to OVN.
pub fn nodeport_flow(phys: i64, patch: i64, proto: &str, port: u16) -> String {
    ServiceFlow::nodeport(proto, port).flow(phys, patch)
}

/// The service flows in `ovs-ofctl dump-flows` output.
pub fn parse_service_flows(dump: &str) -> BTreeSet<ServiceFlow> {
    dump.lines()
        .filter_map(|l| {
            let proto = if l.contains("tcp") {
                "tcp"
            } else if l.contains("udp") {
                "udp"
            } else {
                return None;
            };
            let after = |key: &str| -> Option<String> {
                let rest = l.split(key).nth(1)?;
                Some(
                    rest.chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.')
                        .collect(),
                )
            };
            let port = after("tp_dst=")?.parse().ok()?;
            let ip = match after("nw_dst=") {
                Some(ip) => Some(ip.parse().ok()?),
                None => None,
            };
            Some(ServiceFlow {
                proto: proto.to_string(),
                ip,
                port,
            })
        })
        .collect()
}

/// `(proto, port)` of the NodePort flows in `ovs-ofctl dump-flows` output.
pub fn parse_nodeport_flows(dump: &str) -> BTreeSet<(String, u16)> {
    parse_service_flows(dump)
        .into_iter()
        .filter(|f| f.ip.is_none())
        .map(|f| (f.proto, f.port))
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
            let Some(proto) = flow_proto(p) else { continue };
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

/// The bridge's protocol keyword for a service port (TCP and UDP; SCTP has no gateway LB).
fn flow_proto(p: &ServicePort) -> Option<&'static str> {
    match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        _ => None,
    }
}

/// Every flow the services ask for: their NodePorts, and each port of their externalIPs and
/// LoadBalancer ingress IPs. The addresses pass the same screening as the VIPs the service
/// controller programs (the cluster's networks in `reserved`, then the special ranges), so a
/// refused address never pulls traffic into OVN.
pub fn wanted_flows<'a>(
    svcs: impl IntoIterator<Item = (&'a str, &'a Service)>,
    reserved: &Reserved,
) -> BTreeSet<ServiceFlow> {
    let mut out = BTreeSet::new();
    for (key, s) in svcs {
        out.extend(
            wanted_nodeports([s])
                .into_iter()
                .map(|(proto, port)| ServiceFlow::nodeport(&proto, port)),
        );
        let (screened, _) = validate::screen_service(key, s, reserved);
        // The service controller reports refused addresses; the node only leaves them out.
        let ips = vips::external_addresses(key, &screened, &mut Vec::new());
        for p in screened.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let (Some(proto), Ok(port)) = (flow_proto(p), u16::try_from(p.port)) else {
                continue;
            };
            if port == 0 {
                continue;
            }
            for ip in &ips {
                out.insert(ServiceFlow::external(proto, *ip, port));
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
    /// The cluster's networks: no service address inside them gets a flow.
    pub reserved: Reserved,
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
                vs::INTERFACE,
                &[col::NAME, col::OFPORT],
                vec![ColVal::set(col::NAME, Val::str(n))],
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
                .and_then(|r| r.get(col::OFPORT).and_then(|d| d.as_int()))
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

    /// Brings the service flows to `want` (stale ones deleted, missing ones added).
    pub async fn sync_flows(&self, want: &BTreeSet<ServiceFlow>) -> Result<()> {
        let (phys, patch) = self.ensure_base().await?;
        let dump = self.dump(COOKIE_NODEPORT).await?;
        let have = parse_service_flows(&dump);
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
        for f in have.difference(want) {
            if stale_port {
                break;
            }
            self.ofctl(&[
                "--strict",
                "del-flows",
                &self.bridge,
                &format!(
                    "cookie={COOKIE_NODEPORT:#x}/-1,priority=100,{}",
                    f.matcher(phys)
                ),
            ])
            .await?;
            tracing::info!(bridge = %self.bridge, proto = %f.proto, ip = ?f.ip, port = f.port, "service flow removed");
        }
        for f in want {
            if !stale_port && have.contains(f) {
                continue;
            }
            self.ofctl(&["add-flow", &self.bridge, &f.flow(phys, patch)])
                .await?;
            tracing::info!(bridge = %self.bridge, proto = %f.proto, ip = ?f.ip, port = f.port, "service flow added");
        }
        Ok(())
    }

    /// The service flow watcher of a `-nodeport` node: a Service watch plus a periodic
    /// re-check (flows vanish when vswitchd restarts). Errors are logged and retried.
    pub async fn run(self, informers: crate::kube::Informers, cancel: CancellationToken) {
        let mut svcs = informers.watch::<Service>();
        // The wanted flows are computed from the shared cache; the stream says when to.
        let store = svcs.store();
        let mut synced = false;
        let mut applied: Option<BTreeSet<ServiceFlow>> = None;
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            let force = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => true,
                ch = svcs.next() => {
                    match ch {
                        Some(Change::Synced) => synced = true,
                        Some(_) => {}
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
            let mut all: Vec<(String, Arc<Service>)> = store
                .list()
                .into_iter()
                .map(|s| (key(s.as_ref()), s))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            let want = wanted_flows(
                all.iter().map(|(k, s)| (k.as_str(), s.as_ref())),
                &self.reserved,
            );
            if !force && applied.as_ref() == Some(&want) {
                continue;
            }
            match self.sync_flows(&want).await {
                Ok(()) => applied = Some(want),
                Err(e) => {
                    applied = None;
                    tracing::warn!(bridge = %self.bridge, error = %format!("{e:#}"), "syncing service flows failed; will retry");
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

    #[test]
    fn external_and_load_balancer_addresses_get_flows_unless_refused() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        let reserved = Reserved {
            cluster: vec!["10.128.0.0/14".parse().unwrap()],
            service: Some("172.16.1.0/24".parse().unwrap()),
            ..Reserved::default()
        };
        let svc = |ty: &str, ext: Vec<&str>, ingress: Vec<&str>| Service {
            spec: Some(ServiceSpec {
                type_: Some(ty.into()),
                external_ips: Some(ext.into_iter().map(String::from).collect()),
                ports: Some(vec![
                    ServicePort {
                        protocol: Some("TCP".into()),
                        port: 80,
                        node_port: (ty != "ClusterIP").then_some(30080),
                        ..Default::default()
                    },
                    ServicePort {
                        protocol: Some("SCTP".into()),
                        port: 90,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .into_iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let render = |svcs: &[(&str, Service)]| -> Vec<String> {
            wanted_flows(svcs.iter().map(|(k, s)| (*k, s)), &reserved)
                .into_iter()
                .map(|f| f.matcher(1))
                .collect()
        };
        // (case, services, flows)
        type Case<'a> = (&'a str, Vec<(&'a str, Service)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "externalIP of a ClusterIP service: its port only",
                vec![("a", svc("ClusterIP", vec!["192.0.2.10"], vec![]))],
                vec!["in_port=1,tcp,nw_dst=192.0.2.10,tp_dst=80"],
            ),
            (
                "LoadBalancer: NodePort and ingress IP",
                vec![("b", svc("LoadBalancer", vec![], vec!["198.51.100.7"]))],
                vec![
                    "in_port=1,tcp,tp_dst=30080",
                    "in_port=1,tcp,nw_dst=198.51.100.7,tp_dst=80",
                ],
            ),
            (
                "ingress IPs of a non-LoadBalancer service are ignored",
                vec![("c", svc("NodePort", vec![], vec!["198.51.100.7"]))],
                vec!["in_port=1,tcp,tp_dst=30080"],
            ),
            (
                "refused: pod network, service range, loopback, not an address",
                vec![(
                    "d",
                    svc(
                        "LoadBalancer",
                        vec!["10.128.3.4", "127.0.0.1", "bogus"],
                        vec!["172.16.1.9", "224.0.0.1"],
                    ),
                )],
                vec!["in_port=1,tcp,tp_dst=30080"],
            ),
        ];
        for (case, svcs, want) in cases {
            let mut want: Vec<String> = want.into_iter().map(String::from).collect();
            want.sort();
            let mut got = render(&svcs);
            got.sort();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn service_flows_round_trip_through_a_dump() {
        let flows = [
            ServiceFlow::nodeport("tcp", 30080),
            ServiceFlow::external("udp", "192.0.2.10".parse().unwrap(), 53),
        ];
        assert_eq!(
            flows[1].flow(1, 2),
            "cookie=0x4f4b47570002,priority=100,in_port=1,udp,nw_dst=192.0.2.10,tp_dst=53,actions=output:2"
        );
        // As ovs-ofctl prints them back.
        let dump = " cookie=0x4f4b47570002, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=100,tcp,in_port=1,tp_dst=30080 actions=output:2\n cookie=0x4f4b47570002, duration=1.0s, table=0, n_packets=0, n_bytes=0, priority=100,udp,in_port=1,nw_dst=192.0.2.10,tp_dst=53 actions=output:2\n";
        let got = parse_service_flows(dump);
        assert_eq!(got, flows.into_iter().collect());
        assert_eq!(parse_nodeport_flows(dump).len(), 1);
    }
}
