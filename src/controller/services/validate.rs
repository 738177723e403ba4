//! Which addresses a Service may claim, as pure functions. A VIP on the cluster load balancer
//! captures traffic to that address from every pod (the CVE-2020-8554 class of hijack), so an
//! address of the cluster's own networks or a special-purpose address never becomes one.
//! Anything that programs a Service-supplied address as a VIP (externalIPs today,
//! LoadBalancer ingress IPs later) asks `forbidden_vip` first.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;

use super::endpoints::EpSet;

use crate::config::Config;
use crate::ovn::addrs::join_cidr;

/// The networks a Service-supplied address must stay out of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// Pod networks (`-cluster-subnet`); they hold every pod and every node's management
    /// address (`.2` of each node subnet) and gateway (`.1`).
    pub cluster: Vec<Ipv4Net>,
    /// `-service-cluster-ip-range`, when given.
    pub service: Option<Ipv4Net>,
    /// The join network between the cluster router and the gateway routers.
    pub join: Ipv4Net,
}

impl Reserved {
    pub fn from_config(cfg: &Config) -> Reserved {
        Reserved {
            cluster: cfg.cluster_subnets.iter().map(|c| c.cidr).collect(),
            service: cfg.service_cidr,
            join: join_cidr(),
        }
    }
}

impl Default for Reserved {
    /// Only the join network and the special ranges (no cluster networks known).
    fn default() -> Self {
        Reserved {
            cluster: Vec::new(),
            service: None,
            join: join_cidr(),
        }
    }
}

/// Why `ip` must not become a VIP for a Service, if it must not.
pub fn forbidden_vip(ip: Ipv4Addr, r: &Reserved) -> Option<String> {
    let special = if ip.octets()[0] == 0 {
        Some("in 0.0.0.0/8 (\"this network\")")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    };
    if let Some(s) = special {
        return Some(s.to_string());
    }
    if let Some(net) = r.cluster.iter().find(|n| n.contains(&ip)) {
        return Some(format!(
            "inside the cluster network {net} (pods, node management and gateway addresses)"
        ));
    }
    if let Some(net) = r.service.filter(|n| n.contains(&ip)) {
        return Some(format!("inside the service network {net}"));
    }
    if r.join.contains(&ip) {
        return Some(format!("inside the join network {}", r.join));
    }
    None
}

/// `svc` without the addresses it may not claim, and one message per dropped address. The
/// ClusterIP is the API server's choice from the service network, so only the other networks
/// and the special ranges apply to it (a server that does not validate could hand out any).
pub fn screen_service(key: &str, svc: &Service, r: &Reserved) -> (Service, Vec<String>) {
    let mut out = svc.clone();
    let mut msgs = Vec::new();
    let for_cluster_ip = Reserved {
        service: None,
        ..r.clone()
    };
    if let Some(spec) = out.spec.as_mut()
        && let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        && let Some(why) = forbidden_vip(ip, &for_cluster_ip)
    {
        msgs.push(format!(
            "service {key}: clusterIP {ip} is {why}; no ClusterIP VIPs are programmed"
        ));
        spec.cluster_ip = None;
    }
    if let Some(ips) = out.spec.as_mut().and_then(|s| s.external_ips.as_mut()) {
        ips.retain(|e| {
            // Unparsable addresses are left to the VIP planner, which reports them.
            let Ok(ip) = e.parse::<Ipv4Addr>() else {
                return true;
            };
            match forbidden_vip(ip, r) {
                Some(why) => {
                    msgs.push(format!(
                        "service {key}: externalIP {ip} is {why}; not programmed (reserved address)"
                    ));
                    false
                }
                None => true,
            }
        });
    }
    let is_lb = out.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if is_lb
        && let Some(ingress) = out
            .status
            .as_mut()
            .and_then(|s| s.load_balancer.as_mut())
            .and_then(|l| l.ingress.as_mut())
    {
        ingress.retain(|i| {
            let Some(ip) = i.ip.as_deref().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
                return true;
            };
            match forbidden_vip(ip, r) {
                Some(why) => {
                    msgs.push(format!(
                        "service {key}: LoadBalancer ingress IP {ip} is {why}; not programmed (reserved address)"
                    ));
                    false
                }
                None => true,
            }
        });
    }
    (out, msgs)
}

/// `eps` without ports outside 1-65535, and one message per dropped port.
pub fn screen_endpoints(key: &str, eps: &EpSet) -> (EpSet, Vec<String>) {
    let mut out = eps.clone();
    let mut msgs = Vec::new();
    for group in &mut out {
        group.ports.retain(|p| {
            let ok = (1..=65535).contains(&p.port);
            if !ok {
                msgs.push(format!(
                    "service {key}: endpoint port {:?} ({}) is outside 1-65535; ignored",
                    p.name, p.port
                ));
            }
            ok
        });
    }
    (out, msgs)
}

#[cfg(test)]
mod tests {
    use super::super::endpoints::{EpGroup, EpPort};
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn reserved() -> Reserved {
        Reserved {
            cluster: vec!["10.128.0.0/14".parse().unwrap()],
            service: Some("172.30.0.0/16".parse().unwrap()),
            join: join_cidr(),
        }
    }

    #[test]
    fn addresses_a_service_may_and_may_not_claim() {
        let r = reserved();
        for (ip, want) in [
            ("0.0.0.0", Some("0.0.0.0/8")),
            ("0.1.2.3", Some("0.0.0.0/8")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("169.254.169.254", Some("link-local")),
            ("255.255.255.255", Some("broadcast")),
            ("10.128.1.5", Some("cluster network 10.128.0.0/14")),
            ("10.128.1.2", Some("node management")),
            ("10.131.255.254", Some("cluster network")),
            ("172.30.0.10", Some("service network 172.30.0.0/16")),
            ("100.64.0.1", Some("join network 100.64.0.0/16")),
            ("100.64.255.255", Some("join network")),
            ("10.132.0.1", None),
            ("100.65.0.1", None),
            ("203.0.113.10", None),
            ("192.168.1.1", None),
            ("1.1.1.1", None),
            ("223.255.255.255", None),
        ] {
            let got = forbidden_vip(ip.parse().unwrap(), &r);
            match want {
                None => assert_eq!(got, None, "{ip}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{ip}: {got:?}"
                ),
            }
        }
        // Without a configured service network only that check is skipped.
        let r = Reserved {
            service: None,
            ..reserved()
        };
        assert_eq!(forbidden_vip("172.30.0.10".parse().unwrap(), &r), None);
        assert!(forbidden_vip("127.0.0.1".parse().unwrap(), &Reserved::default()).is_some());
    }

    #[test]
    fn screening_drops_only_the_forbidden_external_ips() {
        let svc = Service {
            spec: Some(ServiceSpec {
                external_ips: Some(
                    [
                        "10.128.1.5",
                        "203.0.113.10",
                        "0.0.0.0",
                        "banana",
                        "127.0.0.1",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (out, msgs) = screen_service("default/evil", &svc, &reserved());
        assert_eq!(
            out.spec.unwrap().external_ips.unwrap(),
            ["203.0.113.10", "banana"]
        );
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("service default/evil: externalIP 10.128.1.5 is inside"));
        let plain = Service::default();
        assert_eq!(screen_service("a/b", &plain, &reserved()).1.len(), 0);
        // A ClusterIP from a server that does not validate: only the service network is fine.
        let with_cip = |ip: &str| Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (out, msgs) = screen_service("a/b", &with_cip("172.30.0.10"), &reserved());
        assert!(msgs.is_empty());
        assert_eq!(out.spec.unwrap().cluster_ip.as_deref(), Some("172.30.0.10"));
        for bad in ["10.128.1.5", "127.0.0.1", "100.64.0.1", "0.0.0.0"] {
            let (out, msgs) = screen_service("a/b", &with_cip(bad), &reserved());
            assert_eq!(out.spec.unwrap().cluster_ip, None, "{bad}");
            assert!(msgs[0].contains(&format!("clusterIP {bad} is")), "{msgs:?}");
        }
        let (_, msgs) = screen_service("a/b", &with_cip("None"), &reserved());
        assert!(msgs.is_empty());
    }

    #[test]
    fn endpoint_ports_outside_the_port_range_are_dropped() {
        let port = |name: &str, port: i32| EpPort {
            name: name.into(),
            protocol: "TCP".into(),
            port,
        };
        let eps = vec![EpGroup {
            ports: vec![
                port("zero", 0),
                port("ok", 8080),
                port("big", 65536),
                port("neg", -1),
                port("max", 65535),
            ],
            endpoints: Vec::new(),
        }];
        let (out, msgs) = screen_endpoints("default/x", &eps);
        let kept: Vec<i32> = out[0].ports.iter().map(|p| p.port).collect();
        assert_eq!(kept, [8080, 65535]);
        assert_eq!(msgs.len(), 3);
        assert!(
            msgs[0].contains("\"zero\" (0) is outside 1-65535"),
            "{msgs:?}"
        );
    }
}
