//! What the trace needs to know, read from the NB and the Kubernetes API, and the pure
//! decisions that turn names (`ns/pod`, `ns/service`, an IP) into trace endpoints, or into a
//! message naming the object that is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::plan::{Acl, Endpoint, Isolation, Target};
use crate::controller::pods_plan::{EXT_LOGICAL_SWITCH, EXT_POD_KEY, pod_annotation, pod_node};
use crate::controller::policy_model::compile;
use crate::controller::policy_plan::policy_pg;
use crate::kube::annotations::PodNetwork;
use crate::ovn::Proto;
use crate::ovn::names::{pod_port, rtos};
use crate::ovn::schema::{col, nb};
use crate::ovn::{Query, Row};

/// A logical switch port: name, uuid, first `"<mac> <ip>"` address, owning pod and its switch
/// (as the pod controller tags its ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lsp {
    pub uuid: String,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    pub pod: Option<String>,
    pub switch: Option<String>,
}

/// The NB, as far as a trace cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub lsps: BTreeMap<String, Lsp>,
    /// Logical router port name → MAC.
    pub router_macs: BTreeMap<String, String>,
    pub acls: Vec<Acl>,
    /// Port group name → member port uuids.
    pub pgs: BTreeMap<String, BTreeSet<String>>,
    /// VIP → backends on the cluster load balancer of each protocol.
    pub vips: BTreeMap<(Proto, SocketAddrV4), Vec<SocketAddrV4>>,
}

/// The NB queries [`Facts::from_tables`] reads (load balancers come from the service
/// controller's own reader).
pub fn queries() -> Vec<Query> {
    vec![
        Query::list(
            nb::LOGICAL_SWITCH_PORT,
            &[col::NAME, col::ADDRESSES, col::EXTERNAL_IDS],
        ),
        Query::list(nb::LOGICAL_ROUTER_PORT, &[col::NAME, col::MAC]),
        Query::list(
            nb::ACL,
            &[
                col::DIRECTION,
                col::PRIORITY,
                col::MATCH,
                col::ACTION,
                col::EXTERNAL_IDS,
            ],
        ),
        Query::list(nb::PORT_GROUP, &[col::NAME, col::PORTS]),
    ]
}

/// `"0a:58:0a:01:01:03 10.1.1.3"` → (MAC, IP).
fn parse_address(a: &str) -> (String, Option<Ipv4Addr>) {
    let mut it = a.split_whitespace();
    let mac = it.next().unwrap_or_default().to_ascii_lowercase();
    (mac, it.next().and_then(|ip| ip.parse().ok()))
}

impl Facts {
    /// From the tables of [`queries`] (in that order) and the cluster load balancers' VIPs.
    pub fn from_tables(
        t: &[Vec<Row>],
        vips: BTreeMap<(Proto, SocketAddrV4), Vec<SocketAddrV4>>,
    ) -> Facts {
        let table = |i: usize| t.get(i).map(Vec::as_slice).unwrap_or_default();
        let lsps = table(0)
            .iter()
            .map(|r| {
                let (mac, ip) = r
                    .set(col::ADDRESSES)
                    .first()
                    .map(|a| parse_address(a))
                    .unwrap_or_default();
                let lsp = Lsp {
                    uuid: r.uuid.clone(),
                    mac,
                    ip,
                    pod: r.map_get(col::EXTERNAL_IDS, EXT_POD_KEY),
                    switch: r.map_get(col::EXTERNAL_IDS, EXT_LOGICAL_SWITCH),
                };
                (r.str(col::NAME), lsp)
            })
            .collect();
        let router_macs = table(1)
            .iter()
            .map(|r| (r.str(col::NAME), r.str(col::MAC).to_ascii_lowercase()))
            .collect();
        let acls = table(2)
            .iter()
            .map(|r| Acl {
                uuid: r.uuid.clone(),
                direction: r.str(col::DIRECTION),
                priority: r.get(col::PRIORITY).and_then(|d| d.as_int()).unwrap_or(-1),
                matches: r.str(col::MATCH),
                action: r.str(col::ACTION),
                external_ids: r.map(col::EXTERNAL_IDS),
            })
            .collect();
        let pgs = table(3)
            .iter()
            .map(|r| (r.str(col::NAME), r.set(col::PORTS).into_iter().collect()))
            .collect();
        Facts {
            lsps,
            router_macs,
            acls,
            pgs,
            vips,
        }
    }

    fn lsp_with_ip(&self, ip: Ipv4Addr) -> Option<(&String, &Lsp)> {
        self.lsps.iter().find(|(_, l)| l.ip == Some(ip))
    }

    /// The MAC a pod on `node` sends off-switch traffic to.
    pub fn router_mac(&self, node: &str) -> Result<String, String> {
        self.router_macs.get(&rtos(node)).cloned().ok_or_else(|| {
            format!(
                "no logical router port {} in the NB: the master has not set up node {node}",
                rtos(node)
            )
        })
    }
}

/// A pod's trace endpoint: the API object (scheduled, annotated) and its NB logical port.
pub fn pod_endpoint(id: &str, pod: Option<&Pod>, facts: &Facts) -> Result<Endpoint, String> {
    let (ns, name) = id
        .split_once('/')
        .ok_or_else(|| format!("{id:?} is not NAMESPACE/NAME"))?;
    let pod = pod.ok_or_else(|| format!("no pod {id} in the Kubernetes API"))?;
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Err(format!(
            "pod {id} uses the host network: OVN does not carry its traffic (trace from or to a pod on the pod network)"
        ));
    }
    let node = pod_node(pod)
        .ok_or_else(|| format!("pod {id} is not scheduled to a node yet"))?
        .to_string();
    let ann = pod_annotation(pod).ok_or_else(|| {
        format!("pod {id} has no ovn annotation: the net-controller has not served it")
    })?;
    PodNetwork::parse(ann).map_err(|e| format!("pod {id} has an unusable ovn annotation: {e}"))?;
    let port = pod_port(ns, name);
    let lsp = facts.lsps.get(&port).ok_or_else(|| {
        format!("no logical switch port {port} in the NB for pod {id} (the net-controller has not created it)")
    })?;
    let ip = lsp
        .ip
        .ok_or_else(|| format!("logical switch port {port} has no IPv4 address"))?;
    Ok(Endpoint {
        id: id.to_string(),
        port,
        switch: node,
        mac: lsp.mac.clone(),
        ip,
    })
}

/// The endpoint of the pod port holding `ip`, if any, from the NB alone.
fn endpoint_by_ip(ip: Ipv4Addr, facts: &Facts) -> Option<Endpoint> {
    let (port, lsp) = facts.lsp_with_ip(ip)?;
    Some(Endpoint {
        id: lsp.pod.clone()?,
        port: port.clone(),
        switch: lsp.switch.clone()?,
        mac: lsp.mac.clone(),
        ip,
    })
}

/// A service's VIP for `proto`/`port` on the cluster load balancer, with its backends.
pub fn service_target(
    id: &str,
    svc: &Service,
    proto: Proto,
    port: u16,
    facts: &Facts,
) -> Result<Target, String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ip = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or_else(|| format!("service {id} has no cluster IP (headless or ExternalName): trace one of its pods instead"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("service {id} has the cluster IP {ip:?}, not an IPv4 address"))?;
    let ports = spec.ports.unwrap_or_default();
    let has = ports.iter().any(|p| {
        p.port == i32::from(port) && p.protocol.as_deref().unwrap_or("TCP") == proto.upper()
    });
    if !has {
        let list: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}", p.protocol.as_deref().unwrap_or("TCP"), p.port))
            .collect();
        return Err(format!(
            "service {id} has no {} port {port} (it has {})",
            proto.upper(),
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        ));
    }
    let vip = SocketAddrV4::new(ip, port);
    vip_target(vip, proto, facts).ok_or_else(|| {
        format!(
            "no VIP {vip} on the cluster {} load balancer for service {id}: the service has no ready endpoints, \
             or the net-controller has not programmed it",
            proto.upper()
        )
    })
}

fn vip_target(vip: SocketAddrV4, proto: Proto, facts: &Facts) -> Option<Target> {
    let backends = facts.vips.get(&(proto, vip))?;
    Some(Target::Vip {
        vip,
        backends: backends
            .iter()
            .map(|b| (*b, endpoint_by_ip(*b.ip(), facts)))
            .collect(),
    })
}

/// A bare IP: a pod's port, a VIP, or an address outside the cluster's pods.
pub fn ip_target(ip: Ipv4Addr, proto: Proto, port: u16, facts: &Facts) -> Target {
    if let Some(e) = endpoint_by_ip(ip, facts) {
        return Target::Pod(e);
    }
    vip_target(SocketAddrV4::new(ip, port), proto, facts).unwrap_or(Target::Ip(ip))
}

/// `"10.1.1.3:8080,10.1.2.4:8080"` → backends.
pub fn parse_backends(v: &str) -> Vec<SocketAddrV4> {
    v.split(',').filter_map(|b| b.trim().parse().ok()).collect()
}

/// The namespaces of the pods at either end of the trace.
pub fn namespaces(src: &Endpoint, target: &Target) -> BTreeSet<String> {
    let ends: Vec<&Endpoint> = match target {
        Target::Pod(e) => vec![e],
        Target::Vip { backends, .. } => backends.iter().filter_map(|(_, e)| e.as_ref()).collect(),
        Target::Ip(_) => Vec::new(),
    };
    std::iter::once(src)
        .chain(ends)
        .filter_map(|e| e.id.split_once('/').map(|(ns, _)| ns.to_string()))
        .collect()
}

/// Which policies isolate which logical port in which direction: a policy isolates the pods
/// it selects (its port group's members) for each of its policy types.
pub fn isolation(policies: &[NetworkPolicy], facts: &Facts) -> Isolation {
    let by_uuid: BTreeMap<&str, &str> = facts
        .lsps
        .iter()
        .map(|(name, l)| (l.uuid.as_str(), name.as_str()))
        .collect();
    let mut out = Isolation::new();
    for np in policies {
        let c = compile(np);
        let Some(members) = facts.pgs.get(&policy_pg(&c.ns, &c.name)) else {
            continue;
        };
        for (dir, on) in [
            ("Ingress", c.ingress.is_some()),
            ("Egress", c.egress.is_some()),
        ] {
            if !on {
                continue;
            }
            for m in members {
                if let Some(port) = by_uuid.get(m.as_str()) {
                    out.entry((port.to_string(), dir.to_string()))
                        .or_default()
                        .insert(c.key());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovn::ovsdb::parse_tables;
    use serde_json::json;

    fn facts() -> Facts {
        let out = r#"{"data":[[["uuid","u1"],"x_a",["set",["0a:58:0a:1e:01:03 10.30.1.3"]],["map",[["k8s.ovn.org/pod","x/a"],["logical_switch","n1"]]]],[["uuid","u2"],"y_b",["set",["0a:58:0a:1e:02:04 10.30.2.4"]],["map",[["k8s.ovn.org/pod","y/b"],["logical_switch","n2"]]]],[["uuid","u3"],"stor-n1",["set",["router"]],["map",[]]]],"headings":["_uuid","name","addresses","external_ids"]}
{"data":[[["uuid","r1"],"rtos-n1","0A:58:0a:1e:01:01"]],"headings":["_uuid","name","mac"]}
{"data":[[["uuid","acl1"],"to-lport",1000,"outport == @pg","drop",["map",[["k8s-netpol","default-deny"]]]]],"headings":["_uuid","direction","priority","match","action","external_ids"]}
{"data":[[["uuid","pg1"],"PGNAME",["set",[["uuid","u1"]]]]],"headings":["_uuid","name","ports"]}
"#;
        let out = out.replace("PGNAME", &policy_pg("x", "deny"));
        let t = parse_tables(&out).unwrap();
        let vip: SocketAddrV4 = "172.16.1.10:80".parse().unwrap();
        let vips = [(
            (Proto::Tcp, vip),
            parse_backends("10.30.2.4:8080, 10.99.0.1:8080"),
        )]
        .into();
        Facts::from_tables(&t, vips)
    }

    fn pod(ns: &str, name: &str, node: Option<&str>, ann: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                "annotations": ann.map(|a| json!({"ovn": a})).unwrap_or(json!({}))},
            "spec": {"containers": [], "nodeName": node},
        }))
        .unwrap()
    }

    fn host_pod() -> Pod {
        let mut p = pod("x", "a", Some("n1"), None);
        if let Some(s) = p.spec.as_mut() {
            s.host_network = Some(true);
        }
        p
    }

    const ANN: &str = r#"{"ip_address":"10.30.1.3/24", "mac_address":"0a:58:0a:1e:01:03", "gateway_ip": "10.30.1.1"}"#;

    #[test]
    fn nb_rows_become_facts() {
        let f = facts();
        assert_eq!(f.lsps["x_a"].ip, Some([10, 30, 1, 3].into()));
        assert_eq!(f.lsps["x_a"].pod.as_deref(), Some("x/a"));
        assert_eq!(f.lsps["stor-n1"].ip, None);
        assert_eq!(f.router_mac("n1").unwrap(), "0a:58:0a:1e:01:01");
        assert!(f.router_mac("n9").unwrap_err().contains("rtos-n9"));
        assert_eq!(f.acls[0].priority, 1000);
        assert_eq!(f.acls[0].action, "drop");
    }

    #[test]
    fn pods_resolve_or_name_what_is_missing() {
        let f = facts();
        let ok = pod("x", "a", Some("n1"), Some(ANN));
        let e = pod_endpoint("x/a", Some(&ok), &f).unwrap();
        assert_eq!((e.port.as_str(), e.switch.as_str()), ("x_a", "n1"));
        assert_eq!(e.mac, "0a:58:0a:1e:01:03");
        let cases: Vec<(&str, Option<Pod>, &str)> = vec![
            ("x-a", None, "not NAMESPACE/NAME"),
            ("x/a", None, "no pod x/a in the Kubernetes API"),
            ("x/a", Some(pod("x", "a", None, Some(ANN))), "not scheduled"),
            ("x/a", Some(host_pod()), "uses the host network"),
            (
                "x/a",
                Some(pod("x", "a", Some("n1"), None)),
                "no ovn annotation",
            ),
            (
                "x/a",
                Some(pod("x", "a", Some("n1"), Some("junk"))),
                "unusable ovn annotation",
            ),
            (
                "x/z",
                Some(pod("x", "z", Some("n1"), Some(ANN))),
                "no logical switch port x_z",
            ),
        ];
        for (id, p, want) in cases {
            let err = pod_endpoint(id, p.as_ref(), &f).unwrap_err();
            assert!(err.contains(want), "{id}: {err}");
        }
    }

    fn svc(ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "y"},
            "spec": {"clusterIP": ip, "ports": ports}}))
        .unwrap()
    }

    #[test]
    fn services_resolve_to_their_vip_and_backends() {
        let f = facts();
        let s = svc("172.16.1.10", json!([{"port": 80, "protocol": "TCP"}]));
        match service_target("y/web", &s, Proto::Tcp, 80, &f).unwrap() {
            Target::Vip { vip, backends } => {
                assert_eq!(vip.to_string(), "172.16.1.10:80");
                assert_eq!(backends.len(), 2);
                assert_eq!(backends[0].1.as_ref().map(|e| e.id.as_str()), Some("y/b"));
                assert_eq!(backends[1].1, None);
            }
            other => panic!("{other:?}"),
        }
        let cases = [
            (
                svc("None", json!([{"port": 80}])),
                Proto::Tcp,
                80,
                "no cluster IP",
            ),
            (
                svc("172.16.1.10", json!([{"port": 80}])),
                Proto::Udp,
                80,
                "no UDP port 80 (it has TCP/80)",
            ),
            (
                svc("172.16.1.11", json!([{"port": 80}])),
                Proto::Tcp,
                80,
                "no VIP 172.16.1.11:80",
            ),
        ];
        for (s, proto, port, want) in cases {
            let err = service_target("y/web", &s, proto, port, &f).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn ips_are_pods_vips_or_outside() {
        let f = facts();
        assert!(matches!(
            ip_target([10, 30, 2, 4].into(), Proto::Tcp, 80, &f),
            Target::Pod(e) if e.id == "y/b" && e.switch == "n2"
        ));
        assert!(matches!(
            ip_target([172, 16, 1, 10].into(), Proto::Tcp, 80, &f),
            Target::Vip { .. }
        ));
        assert_eq!(
            ip_target([172, 16, 1, 10].into(), Proto::Udp, 80, &f),
            Target::Ip([172, 16, 1, 10].into())
        );
    }

    #[test]
    fn namespaces_of_both_ends() {
        let f = facts();
        let src = pod_endpoint("x/a", Some(&pod("x", "a", Some("n1"), Some(ANN))), &f).unwrap();
        let vip = ip_target([172, 16, 1, 10].into(), Proto::Tcp, 80, &f);
        assert_eq!(
            namespaces(&src, &vip),
            ["x".to_string(), "y".to_string()].into()
        );
        assert_eq!(
            namespaces(&src, &Target::Ip([1, 1, 1, 1].into())),
            ["x".to_string()].into()
        );
    }

    #[test]
    fn isolation_follows_policy_types_and_port_groups() {
        let f = facts();
        let np = |types: serde_json::Value| -> NetworkPolicy {
            serde_json::from_value(json!({"metadata": {"name": "deny", "namespace": "x"},
                "spec": {"podSelector": {}, "policyTypes": types}}))
            .unwrap()
        };
        let iso = isolation(&[np(json!(["Ingress"]))], &f);
        assert_eq!(
            iso.get(&("x_a".to_string(), "Ingress".to_string()))
                .map(|s| s.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["x/deny".to_string()])
        );
        assert!(!iso.contains_key(&("x_a".to_string(), "Egress".to_string())));
        let iso = isolation(&[np(json!(["Egress"]))], &f);
        assert!(iso.contains_key(&("x_a".to_string(), "Egress".to_string())));
    }
}
