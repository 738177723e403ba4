//! A service's endpoints in one shape, whichever API published them.
//!
//! `discovery.k8s.io/v1` EndpointSlices are the source; core/v1 Endpoints are read only when the
//! API server does not serve EndpointSlices. Both become a list of [`EpGroup`]s (one per slice or
//! per Endpoints subset: a port list and the endpoints that serve it), so the VIP computation has
//! one input format. Slices of another address family (IPv6, FQDN) are left out here: they are a
//! normal part of a dual-stack cluster, not an error.

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of a group, as published (protocol unparsed; the VIP code reports bad ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpPort {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

/// One endpoint address and its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ep {
    pub ip: String,
    pub node: Option<String>,
    pub ready: bool,
    /// Serving but terminating: a backend only when a port has no ready endpoint.
    pub terminating_serving: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpGroup {
    pub ports: Vec<EpPort>,
    pub endpoints: Vec<Ep>,
}

/// Everything a service's endpoints say, in one shape.
pub type EpSet = Vec<EpGroup>;

/// `namespace/service` an EndpointSlice belongs to, from its service-name label.
pub fn slice_service_key(slice: &EndpointSlice) -> Option<String> {
    let ns = slice.metadata.namespace.as_deref()?;
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    (!svc.is_empty()).then(|| format!("{ns}/{svc}"))
}

/// The groups of all IPv4 slices of one service.
pub fn from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> EpSet {
    let mut out = EpSet::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(EpPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    // A slice port without a number means "all ports": not load-balanceable.
                    port: p.port?,
                })
            })
            .collect();
        let mut endpoints = Vec::new();
        for e in s.endpoints.iter().flatten() {
            let c = e.conditions.clone().unwrap_or_default();
            // The API says: nil `ready` and `serving` mean true, nil `terminating` means false.
            let terminating = c.terminating.unwrap_or(false);
            let ready = c.ready.unwrap_or(true) && !terminating;
            let serving = c.serving.unwrap_or(ready);
            for ip in &e.addresses {
                endpoints.push(Ep {
                    ip: ip.clone(),
                    node: e.node_name.clone(),
                    ready,
                    terminating_serving: terminating && serving,
                });
            }
        }
        out.push(EpGroup { ports, endpoints });
    }
    out
}

/// The groups of a core/v1 Endpoints object (the fallback when slices are not served).
pub fn from_endpoints(e: &Endpoints) -> EpSet {
    let ep = |a: &EndpointAddress, ready: bool| Ep {
        ip: a.ip.clone(),
        node: a.node_name.clone(),
        ready,
        terminating_serving: false,
    };
    e.subsets
        .iter()
        .flatten()
        .map(|s| EpGroup {
            ports: s
                .ports
                .iter()
                .flatten()
                .map(|p| EpPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.port,
                })
                .collect(),
            endpoints: s
                .addresses
                .iter()
                .flatten()
                .map(|a| ep(a, true))
                .chain(s.not_ready_addresses.iter().flatten().map(|a| ep(a, false)))
                .collect(),
        })
        .collect()
}

/// Which endpoints API to watch, from the API server's discovery answer: slices whenever
/// `discovery.k8s.io/v1` serves `endpointslices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Slices,
    Endpoints,
}

pub fn choose_source(discovery_v1_resources: Option<&[String]>) -> Source {
    match discovery_v1_resources {
        Some(r) if r.iter().any(|p| p == "endpointslices") => Source::Slices,
        _ => Source::Endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use kube::api::ObjectMeta;

    /// (address, ready, serving, terminating)
    type Cond<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    fn slice(family: &str, eps: Vec<Cond>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("ns".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: family.into(),
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some("all".into()),
                    port: None,
                    ..Default::default()
                },
            ]),
            endpoints: Some(
                eps.into_iter()
                    .map(|(ip, ready, serving, terminating)| Endpoint {
                        addresses: vec![ip.into()],
                        node_name: Some("n1".into()),
                        conditions: Some(EndpointConditions {
                            ready,
                            serving,
                            terminating,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn slice_conditions_become_ready_and_terminating_serving() {
        let s = slice(
            "IPv4",
            vec![
                ("10.0.0.1", Some(true), Some(true), Some(false)),
                ("10.0.0.2", None, None, None),
                ("10.0.0.3", Some(false), Some(true), Some(true)),
                ("10.0.0.4", Some(false), Some(false), Some(true)),
                ("10.0.0.5", Some(false), Some(false), Some(false)),
            ],
        );
        let g = from_slices([&s]);
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].ports,
            vec![EpPort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 8080
            }]
        );
        let got: Vec<(&str, bool, bool)> = g[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.as_str(), e.ready, e.terminating_serving))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.0.0.1", true, false),
                ("10.0.0.2", true, false),
                ("10.0.0.3", false, true),
                ("10.0.0.4", false, false),
                ("10.0.0.5", false, false),
            ]
        );
        assert_eq!(g[0].endpoints[0].node.as_deref(), Some("n1"));
        assert_eq!(slice_service_key(&s).as_deref(), Some("ns/web"));
    }

    #[test]
    fn other_address_families_are_left_out() {
        let v6 = slice("IPv6", vec![("fd00::1", Some(true), None, None)]);
        let fqdn = slice("FQDN", vec![("a.example", Some(true), None, None)]);
        assert!(from_slices([&v6, &fqdn]).is_empty());
    }

    #[test]
    fn slice_without_service_label_has_no_service() {
        let mut s = slice("IPv4", vec![]);
        s.metadata.labels = None;
        assert_eq!(slice_service_key(&s), None);
    }

    #[test]
    fn endpoints_ready_and_not_ready_addresses() {
        use k8s_openapi::api::core::v1::{
            EndpointAddress, EndpointPort as CorePort, EndpointSubset,
        };
        let e = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.1".into(),
                    node_name: Some("n2".into()),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.2".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![CorePort {
                    name: None,
                    port: 80,
                    protocol: None,
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        };
        let g = from_endpoints(&e);
        assert_eq!(g[0].ports[0].protocol, "TCP");
        assert_eq!(g[0].ports[0].name, "");
        assert!(g[0].endpoints[0].ready && g[0].endpoints[0].node.as_deref() == Some("n2"));
        assert!(!g[0].endpoints[1].ready && !g[0].endpoints[1].terminating_serving);
    }

    #[test]
    fn source_follows_discovery() {
        let served = vec!["endpointslices".to_string()];
        assert_eq!(choose_source(Some(&served)), Source::Slices);
        assert_eq!(choose_source(Some(&[])), Source::Endpoints);
        assert_eq!(choose_source(None), Source::Endpoints);
    }
}
