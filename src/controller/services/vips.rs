//! Services and endpoints → load-balancer VIPs, as pure functions.
//!
//! Every event recomputes the full VIP set of one service and applies the difference, so port
//! changes, type changes, endpoint removal and protocol changes all converge. Endpoint ports are
//! matched to service ports by port name and protocol (how the Endpoints API links them), so
//! named target ports work. A port without ready endpoints gets no VIP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};

use crate::ovn::{ColVal, DbOp, NbOp, Val};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// A gateway router and its load balancers (made by the node's gateway init).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub router: String,
    pub physical_ip: Ipv4Addr,
    pub lbs: BTreeMap<Proto, String>,
}

/// The load balancers VIPs can go to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbTargets {
    /// Cluster-wide LB uuid per protocol (attached to every node switch).
    pub cluster: BTreeMap<Proto, String>,
    pub gateways: Vec<Gateway>,
}

impl LbTargets {
    /// Every LB uuid whose VIPs this controller owns.
    pub fn all_uuids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cluster.values().cloned().collect();
        for g in &self.gateways {
            v.extend(g.lbs.values().cloned());
        }
        v.sort();
        v.dedup();
        v
    }
}

/// (load balancer uuid, `"ip:port"`) → `"ip:port,ip:port"`.
pub type VipMap = BTreeMap<(String, String), String>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub vips: VipMap,
    /// Problems with this service's input, each naming the service and what is wrong.
    pub warnings: Vec<String>,
}

fn port_label(p: &ServicePort) -> String {
    match &p.name {
        Some(n) if !n.is_empty() => format!("port {n:?} ({})", p.port),
        _ => format!("port {}", p.port),
    }
}

/// Ready backends `ip:port` of service port `sp` (protocol `proto`), sorted.
fn backends(
    key: &str,
    sp: &ServicePort,
    proto: Proto,
    eps: &Endpoints,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let want_name = sp.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut matched_port = false;
    for subset in eps.subsets.iter().flatten() {
        let Some(ep) = subset.ports.iter().flatten().find(|ep| {
            ep.name.clone().unwrap_or_default() == want_name
                && Proto::parse(ep.protocol.as_deref().unwrap_or("TCP")) == Some(proto)
        }) else {
            continue;
        };
        matched_port = true;
        for a in subset.addresses.iter().flatten() {
            match a.ip.parse::<Ipv4Addr>() {
                Ok(ip) => out.push(format!("{ip}:{}", ep.port)),
                Err(_) => warnings.push(format!(
                    "service {key}: endpoint address {:?} is not an IPv4 address; skipped",
                    a.ip
                )),
            }
        }
    }
    let has_subsets = eps.subsets.as_ref().is_some_and(|s| !s.is_empty());
    if has_subsets && !matched_port {
        warnings.push(format!(
            "service {key}: {} ({}) matches no endpoint port; check its name and targetPort",
            port_label(sp),
            proto.upper()
        ));
    }
    out.sort();
    out.dedup();
    out
}

/// The VIPs one service should have.
pub fn service_vips(
    key: &str,
    svc: &Service,
    eps: Option<&Endpoints>,
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
    let cluster_ip = match spec.cluster_ip.as_deref() {
        // Headless services are resolved by DNS, not load-balanced.
        None | Some("") | Some("None") => None,
        Some(s) => match s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                d.warnings.push(format!(
                    "service {key}: clusterIP {s:?} is not an IPv4 address; no ClusterIP VIPs"
                ));
                None
            }
        },
    };
    let mut external = Vec::new();
    for e in spec.external_ips.iter().flatten() {
        match e.parse::<Ipv4Addr>() {
            Ok(ip) => external.push(ip),
            Err(_) => d.warnings.push(format!(
                "service {key}: externalIP {e:?} is not an IPv4 address; skipped"
            )),
        }
    }
    let with_nodeports = nodeport && matches!(ty, "NodePort" | "LoadBalancer");
    if cluster_ip.is_none() && external.is_empty() && !with_nodeports {
        return d;
    }
    let Some(eps) = eps else {
        return d;
    };
    for sp in spec.ports.iter().flatten() {
        let proto = match sp.protocol.as_deref() {
            None | Some("") => {
                d.warnings.push(format!(
                    "service {key}: {} has no protocol; assuming TCP",
                    port_label(sp)
                ));
                Proto::Tcp
            }
            Some(p) => match Proto::parse(p) {
                Some(p) => p,
                None => {
                    d.warnings.push(format!(
                        "service {key}: {} has unsupported protocol {p:?}; skipped",
                        port_label(sp)
                    ));
                    continue;
                }
            },
        };
        if !(1..=65535).contains(&sp.port) {
            d.warnings.push(format!(
                "service {key}: {} is out of range; skipped",
                port_label(sp)
            ));
            continue;
        }
        let b = backends(key, sp, proto, eps, &mut d.warnings);
        if b.is_empty() {
            continue;
        }
        let b = b.join(",");
        let mut put = |lb: &String, vip: String| {
            d.vips.insert((lb.clone(), vip), b.clone());
        };
        if let Some(lb) = lbs.cluster.get(&proto) {
            if let Some(ip) = cluster_ip {
                put(lb, format!("{ip}:{}", sp.port));
            }
            for ip in &external {
                put(lb, format!("{ip}:{}", sp.port));
            }
        } else {
            d.warnings.push(format!(
                "service {key}: no cluster {} load balancer yet (is the master running?)",
                proto.upper()
            ));
        }
        for g in &lbs.gateways {
            let Some(lb) = g.lbs.get(&proto) else {
                continue;
            };
            for ip in &external {
                put(lb, format!("{ip}:{}", sp.port));
            }
            if with_nodeports && let Some(np) = sp.node_port.filter(|p| *p > 0) {
                put(lb, format!("{}:{np}", g.physical_ip));
            }
        }
    }
    d
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
                .push(ColVal::key("vips", vip, b.as_str()));
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
            table: "Load_Balancer".into(),
            record: lb.to_string(),
            column: "vips".into(),
            values,
            if_exists: true,
        }));
    }
    for (lb, columns) in sets {
        out.push(NbOp::Db(DbOp::Set {
            table: "Load_Balancer".into(),
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
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn lbs() -> LbTargets {
        LbTargets {
            cluster: [
                (Proto::Tcp, "ct".into()),
                (Proto::Udp, "cu".into()),
                (Proto::Sctp, "cs".into()),
            ]
            .into(),
            gateways: vec![
                Gateway {
                    router: "GR_a".into(),
                    physical_ip: "172.30.0.1".parse().unwrap(),
                    lbs: [(Proto::Tcp, "ga-t".into()), (Proto::Udp, "ga-u".into())].into(),
                },
                Gateway {
                    router: "GR_b".into(),
                    physical_ip: "172.30.0.2".parse().unwrap(),
                    lbs: [(Proto::Tcp, "gb-t".into())].into(),
                },
            ],
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
        let d = service_vips("ns/s", &s, Some(&e), &lbs(), true);
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
        let d = service_vips("ns/np", &s, Some(&e), &lbs(), true);
        assert_eq!(d.vips[&vip("ct", "10.96.0.11:80")], "10.1.0.6:80");
        assert_eq!(d.vips[&vip("ga-t", "172.30.0.1:30080")], "10.1.0.6:80");
        assert_eq!(d.vips[&vip("gb-t", "172.30.0.2:30080")], "10.1.0.6:80");
        // The reference's UDP bug: a UDP NodePort service got no ClusterIP VIP. Fixed.
        assert_eq!(d.vips[&vip("cu", "10.96.0.11:81")], "10.1.0.6:81");
        assert_eq!(d.vips[&vip("ga-u", "172.30.0.1:30081")], "10.1.0.6:81");
        assert_eq!(d.vips.len(), 5);
        // Without -nodeport only the ClusterIP VIPs.
        let d = service_vips("ns/np", &s, Some(&e), &lbs(), false);
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
                Some(&e),
                &lbs(),
                true
            )
            .vips
            .is_empty()
        );
        assert!(
            service_vips("a/x", &svc("ExternalName", "", p()), Some(&e), &lbs(), true)
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
            Some(&empty),
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
        let d = service_vips("ns/ext", &s, Some(&e), &lbs(), false);
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
        let d = service_vips("ns/bad", &s, Some(&e), &lbs(), true);
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
        targets.gateways[0].lbs.insert(Proto::Sctp, "ga-s".into());
        let d = service_vips("ns/sctp", &s, Some(&e), &targets, true);
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
        let d = service_vips("ns/r", &s, Some(&e), &lbs(), true);
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
}
