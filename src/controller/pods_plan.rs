//! Pure decisions of the pod controller: which switch a pod belongs to, the NB commands of a
//! pod port, what a restart finds (stale ports, addresses to keep). No I/O; unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::ipam::{Ipam, parse_lsp_address};
use crate::kube::annotations::{POD_NETWORK, PodNetwork};
use crate::ovn::names::pod_port;
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, NbOp, Query, Row, Val};

/// `external_ids` keys on pod ports.
pub const EXT_POD: &str = "pod";
pub const EXT_NAMESPACE: &str = "namespace";
pub const EXT_LOGICAL_SWITCH: &str = "logical_switch";
/// `<ns>/<name>`, so the port can be traced back to its pod without parsing its name.
pub const EXT_POD_KEY: &str = "k8s.ovn.org/pod";

/// The switch (node) of a pod the controller serves; `None` for host-network pods and pods
/// not scheduled yet (they wait for the update that sets `spec.nodeName`).
pub fn pod_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    spec.node_name.as_deref().filter(|n| !n.is_empty())
}

pub fn pod_ns(pod: &Pod) -> String {
    pod.namespace().unwrap_or_else(|| "default".to_string())
}

/// The pod's `ovn` annotation, if any.
pub fn pod_annotation(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(POD_NETWORK)
        .map(String::as_str)
}

/// Create (or fix) the port of a pod with static addresses, in one transaction with the rest.
/// `dynamic_addresses` is cleared so a port once made by northd's IPAM carries only ours.
/// `port_security` holds the same MAC and IP: a pod that sends with another pod's MAC or IP
/// (or answers ARP for it) has its packets dropped at its own port.
pub fn port_ops(node: &str, ns: &str, name: &str, net: &PodNetwork) -> Vec<NbOp> {
    let port = pod_port(ns, name);
    vec![
        NbOp::LspAdd {
            switch: node.to_string(),
            name: port.clone(),
        },
        NbOp::LspSetAddresses {
            name: port.clone(),
            addresses: vec![net.lsp_address()],
        },
        NbOp::Db(DbOp::Set {
            table: nb::LOGICAL_SWITCH_PORT.into(),
            record: port,
            columns: vec![
                ColVal::key(col::EXTERNAL_IDS, EXT_NAMESPACE, ns),
                ColVal::key(col::EXTERNAL_IDS, EXT_POD, "true"),
                ColVal::key(col::EXTERNAL_IDS, EXT_LOGICAL_SWITCH, node),
                ColVal::key(col::EXTERNAL_IDS, EXT_POD_KEY, format!("{ns}/{name}")),
                ColVal::set(col::DYNAMIC_ADDRESSES, Val::Set(Vec::new())),
                ColVal::set(col::PORT_SECURITY, Val::str_set([net.lsp_address()])),
            ],
            if_exists: false,
        }),
    ]
}

pub fn delete_ops(port: &str) -> Vec<NbOp> {
    vec![NbOp::LspDel {
        name: port.to_string(),
    }]
}

/// A pod port as read from NB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRow {
    pub name: String,
    pub switch: String,
    pub addresses: Vec<String>,
    pub dynamic: Vec<String>,
    pub port_security: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

impl PortRow {
    /// Every port this controller ever made carries `external_ids:pod=true`: one query finds
    /// them all at restart.
    pub fn query() -> Query {
        Query::find(
            nb::LOGICAL_SWITCH_PORT,
            &[
                col::NAME,
                col::ADDRESSES,
                col::DYNAMIC_ADDRESSES,
                col::PORT_SECURITY,
                col::EXTERNAL_IDS,
            ],
            vec![ColVal::key(col::EXTERNAL_IDS, EXT_POD, "true")],
        )
    }

    pub fn from_row(r: &Row) -> PortRow {
        let external_ids = r.map(col::EXTERNAL_IDS);
        PortRow {
            name: r.str(col::NAME),
            switch: external_ids
                .get(EXT_LOGICAL_SWITCH)
                .cloned()
                .unwrap_or_default(),
            addresses: r.set(col::ADDRESSES),
            dynamic: r.set(col::DYNAMIC_ADDRESSES),
            port_security: r.set(col::PORT_SECURITY),
            external_ids,
        }
    }

    /// The `(mac, ip)` the port carries, when it is one static address.
    pub fn static_address(&self) -> Option<(String, Ipv4Addr)> {
        match self.addresses.as_slice() {
            [one] => parse_lsp_address(one),
            _ => None,
        }
    }

    /// Whether the port already is exactly what [`port_ops`] would make.
    pub fn matches(&self, node: &str, ns: &str, name: &str, net: &PodNetwork) -> bool {
        let ext = |k: &str| self.external_ids.get(k).map(String::as_str);
        self.switch == node
            && self.addresses == [net.lsp_address()]
            && self.dynamic.is_empty()
            && self.port_security == [net.lsp_address()]
            && ext(EXT_NAMESPACE) == Some(ns)
            && ext(EXT_POD) == Some("true")
            && ext(EXT_POD_KEY) == Some(&format!("{ns}/{name}"))
    }
}

/// Ports of pods that no longer exist (or are no longer served, or now live on another
/// switch). `expected` maps port name → node of every served pod.
pub fn stale_ports(ports: &[PortRow], expected: &HashMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = ports
        .iter()
        .filter(|p| expected.get(&p.name) != Some(&p.switch))
        .map(|p| p.name.clone())
        .collect();
    out.sort();
    out
}

/// Where a pod's port stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// No port (as far as we know).
    Absent,
    /// The port carries exactly the pod's address and ids.
    Synced,
    /// A port may exist but must be (re)written: differs, or a transaction failed midway.
    Dirty,
}

/// The controller's view of one pod of a node.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Latest state; `None` once deleted (the entry lives until its port is gone).
    pub pod: Option<Arc<Pod>>,
    /// The address held in the node's allocator for this pod.
    pub net: Option<PodNetwork>,
    pub port: PortState,
    /// The pod's annotation equals `net`.
    pub annotated: bool,
    /// resourceVersion our own patch produced (older events must not trigger a re-patch).
    pub patched_rv: Option<u64>,
    /// Why the pod is not served (invalid annotation, subnet full); reported once.
    pub blocked: Option<Blocked>,
    /// The pod was re-created with another address: remove the old port before serving.
    pub redo: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Its annotation cannot be honoured. `retry_on_release`: the address is taken by another
    /// pod, so it may become valid when an address is released.
    BadAnnotation {
        value: String,
        why: String,
        retry_on_release: bool,
    },
    SubnetFull,
}

impl Entry {
    pub fn new(pod: Arc<Pod>) -> Entry {
        Entry {
            pod: Some(pod),
            net: None,
            port: PortState::Absent,
            annotated: false,
            patched_rv: None,
            blocked: None,
            redo: false,
        }
    }
}

/// The NB was replaced by an empty database: every port we believe written must be written
/// again, with the address the pod already has (it keeps its IP, and its annotation stays).
/// Returns the keys to work on, sorted.
pub fn after_new_database(entries: &mut HashMap<String, Entry>) -> Vec<String> {
    let mut todo: Vec<String> = entries
        .iter_mut()
        .filter(|(_, e)| e.pod.is_some() && e.net.is_some() && e.port == PortState::Synced)
        .map(|(k, e)| {
            e.port = PortState::Dirty;
            k.clone()
        })
        .collect();
    todo.sort();
    todo
}

/// What claiming an address for a pod decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// From its annotation (kept, never rewritten).
    Annotated(PodNetwork),
    /// Newly allocated (to be annotated).
    Allocated(PodNetwork),
    Rejected {
        value: String,
        why: String,
        retry_on_release: bool,
    },
    Full,
}

/// Claim an address for `pod` in `ipam`: its annotation if it has one, else the lowest free.
pub fn claim(ipam: &mut Ipam, pod: &Pod) -> Claim {
    let addrs = *ipam.addrs();
    if let Some(v) = pod_annotation(pod) {
        let net = match PodNetwork::parse_for_node(v, &addrs) {
            Ok(n) => n,
            Err(why) => {
                return Claim::Rejected {
                    value: v.to_string(),
                    why,
                    retry_on_release: false,
                };
            }
        };
        return match ipam.reserve_with_mac(net.ip, &net.mac) {
            Ok(()) => Claim::Annotated(net),
            Err(e) => Claim::Rejected {
                value: v.to_string(),
                retry_on_release: matches!(
                    e,
                    super::ipam::ClaimError::InUse { .. }
                        | super::ipam::ClaimError::MacInUse { .. }
                ),
                why: e.to_string(),
            },
        };
    }
    match ipam.allocate_with_mac() {
        Some((ip, mac)) => Claim::Allocated(PodNetwork {
            mac,
            ..PodNetwork::new(ip, &addrs)
        }),
        None => Claim::Full,
    }
}

/// The state of one node rebuilt at start-up, before any new allocation.
#[derive(Debug)]
pub struct Rebuilt {
    pub ipam: Ipam,
    pub entries: HashMap<String, Entry>,
    /// Keys to work on, oldest pod first.
    pub todo: Vec<String>,
}

fn creation_order(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            pod_ns(p),
            p.name_any(),
        )
    });
}

/// Rebuild a node's allocator: annotations first (the durable truth), then the addresses of
/// ports whose pod has no annotation yet (a crash between port and annotation: reuse the
/// address, never hand out a second one), then everything else gets new addresses later.
/// `ports` holds this node's pod ports by port name.
pub fn rebuild(
    subnet: Ipv4Net,
    mut pods: Vec<Arc<Pod>>,
    ports: &HashMap<String, PortRow>,
) -> Rebuilt {
    creation_order(&mut pods);
    let mut ipam = Ipam::new(subnet);
    let addrs = *ipam.addrs();
    let mut entries = HashMap::new();
    let mut todo = Vec::new();
    let node_of = |p: &Pod| pod_node(p).unwrap_or_default().to_string();
    // Pass 1: annotations.
    for p in pods.iter().filter(|p| pod_annotation(p).is_some()) {
        let key = crate::kube::key(p.as_ref());
        let mut e = Entry::new(p.clone());
        match claim(&mut ipam, p) {
            Claim::Annotated(net) => {
                let (node, ns, name) = (node_of(p), pod_ns(p), p.name_any());
                let port = ports.get(&pod_port(&ns, &name));
                e.port = match port {
                    Some(r) if r.matches(&node, &ns, &name, &net) => PortState::Synced,
                    Some(_) => PortState::Dirty,
                    None => PortState::Absent,
                };
                e.annotated = true;
                e.net = Some(net);
            }
            Claim::Rejected {
                value,
                why,
                retry_on_release,
            } => {
                e.blocked = Some(Blocked::BadAnnotation {
                    value,
                    why,
                    retry_on_release,
                });
            }
            Claim::Allocated(_) | Claim::Full => {}
        }
        if e.port != PortState::Synced || e.blocked.is_some() {
            todo.push(key.clone());
        }
        entries.insert(key, e);
    }
    // Pass 2: ports of pods without an annotation.
    for p in pods.iter().filter(|p| pod_annotation(p).is_none()) {
        let key = crate::kube::key(p.as_ref());
        let mut e = Entry::new(p.clone());
        let (node, ns, name) = (node_of(p), pod_ns(p), p.name_any());
        if let Some(r) = ports.get(&pod_port(&ns, &name))
            && let Some((mac, ip)) = r.static_address()
            && ipam.reserve_with_mac(ip, &mac).is_ok()
        {
            let net = PodNetwork {
                ip,
                prefix_len: addrs.subnet.prefix_len(),
                mac,
                gateway: addrs.gateway.addr(),
            };
            e.port = if r.matches(&node, &ns, &name, &net) {
                PortState::Synced
            } else {
                PortState::Dirty
            };
            e.net = Some(net);
        } else if ports.contains_key(&pod_port(&ns, &name)) {
            // Unusable address on the port: it is rewritten with a new one.
            e.port = PortState::Dirty;
        }
        todo.push(key.clone());
        entries.insert(key, e);
    }
    Rebuilt {
        ipam,
        entries,
        todo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_rewrites_served_ports_with_their_addresses() {
        let net = |ip: &str| PodNetwork {
            ip: ip.parse().unwrap(),
            mac: "0a:58:0a:01:00:05".into(),
            prefix_len: 24,
            gateway: "10.1.0.1".parse().unwrap(),
        };
        let entry = |ann: Option<&str>, net: Option<PodNetwork>, port, alive: bool| {
            let mut e = Entry::new(pod("p", Some("n1"), ann, 0));
            e.net = net;
            e.port = port;
            if !alive {
                e.pod = None;
            }
            e
        };
        // (key, entry, rewritten?, port state afterwards)
        let cases = [
            (
                "ns/served",
                entry(None, Some(net("10.1.0.5")), PortState::Synced, true),
                true,
                PortState::Dirty,
            ),
            (
                "ns/pending",
                entry(None, Some(net("10.1.0.6")), PortState::Dirty, true),
                false,
                PortState::Dirty,
            ),
            (
                "ns/unclaimed",
                entry(None, None, PortState::Absent, true),
                false,
                PortState::Absent,
            ),
            (
                "ns/deleting",
                entry(None, Some(net("10.1.0.7")), PortState::Synced, false),
                false,
                PortState::Synced,
            ),
        ];
        let mut entries: HashMap<String, Entry> = cases
            .iter()
            .map(|(k, e, _, _)| (k.to_string(), e.clone()))
            .collect();
        let todo = after_new_database(&mut entries);
        let want: Vec<String> = cases
            .iter()
            .filter(|c| c.2)
            .map(|c| c.0.to_string())
            .collect();
        assert_eq!(todo, want);
        for (k, _, _, port) in &cases {
            assert_eq!(entries[*k].port, *port, "{k}");
        }
        // The address is kept: nothing is re-allocated.
        assert_eq!(entries["ns/served"].net, Some(net("10.1.0.5")));
    }
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: Option<&str>, ann: Option<&str>, age: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                annotations: ann.map(|a| [(POD_NETWORK.to_string(), a.to_string())].into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap(),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn subnet() -> Ipv4Net {
        "10.1.2.0/24".parse().unwrap()
    }

    fn net(ip: &str) -> PodNetwork {
        PodNetwork::new(
            ip.parse().unwrap(),
            &crate::ovn::addrs::NodeAddrs::new(subnet()),
        )
    }

    fn port(name: &str, switch: &str, addr: &str, key: &str) -> PortRow {
        PortRow {
            name: name.into(),
            switch: switch.into(),
            addresses: vec![addr.into()],
            dynamic: vec![],
            port_security: vec![addr.into()],
            external_ids: [
                (EXT_POD, "true"),
                (EXT_NAMESPACE, "ns"),
                (EXT_LOGICAL_SWITCH, switch),
                (EXT_POD_KEY, key),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    #[test]
    fn which_pods_are_served() {
        assert_eq!(pod_node(&pod("a", Some("n1"), None, 0)), Some("n1"));
        assert_eq!(pod_node(&pod("a", None, None, 0)), None);
        assert_eq!(pod_node(&pod("a", Some(""), None, 0)), None);
        let mut hn = (*pod("a", Some("n1"), None, 0)).clone();
        hn.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(pod_node(&hn), None);
    }

    #[test]
    fn one_port_in_one_batch_with_ids() {
        let mut t = crate::ovn::NbTxn::new();
        t.extend(port_ops("n1", "ns", "web", &net("10.1.2.3")));
        assert_eq!(
            t.render().join(" "),
            "-- --may-exist lsp-add n1 ns_web \
             -- lsp-set-addresses ns_web 0a:58:0a:01:02:03 10.1.2.3 \
             -- set Logical_Switch_Port ns_web external_ids:\"namespace\"=\"ns\" \
             external_ids:\"pod\"=\"true\" external_ids:\"logical_switch\"=\"n1\" \
             external_ids:\"k8s.ovn.org/pod\"=\"ns/web\" dynamic_addresses=[] \
             port_security=[\"0a:58:0a:01:02:03 10.1.2.3\"]"
        );
        assert!(t.validate().is_ok());
        let r = port("ns_web", "n1", "0a:58:0a:01:02:03 10.1.2.3", "ns/web");
        assert!(r.matches("n1", "ns", "web", &net("10.1.2.3")));
        assert!(!r.matches("n1", "ns", "web", &net("10.1.2.4")));
        assert!(!r.matches("n2", "ns", "web", &net("10.1.2.3")));
        // A port without port security (made by an older release) is rewritten.
        let open = PortRow {
            port_security: vec![],
            ..r
        };
        assert!(!open.matches("n1", "ns", "web", &net("10.1.2.3")));
    }

    #[test]
    fn a_preset_mac_must_be_unicast_non_zero_and_unique_on_the_node() {
        let mut ipam = Ipam::new(subnet());
        let ann = |ip: &str, mac: &str| {
            format!(r#"{{"ip_address":"{ip}/24","mac_address":"{mac}","gateway_ip":"10.1.2.1"}}"#)
        };
        let take = |ipam: &mut Ipam, name: &str, v: Option<String>| {
            let p = pod(name, Some("n1"), None, 0);
            let mut p = (*p).clone();
            if let Some(v) = v {
                p.metadata.annotations = Some([(POD_NETWORK.to_string(), v)].into());
            }
            claim(ipam, &p)
        };
        assert!(matches!(
            take(&mut ipam, "a", Some(ann("10.1.2.10", "0a:58:0a:01:02:0a"))),
            Claim::Annotated(_)
        ));
        for (mac, why) in [
            ("0a:58:0a:01:02:0a", "already used by another pod"),
            ("0A:58:0A:01:02:0A", "already used by another pod"),
            ("00:00:00:00:00:00", "not a MAC address"),
            ("01:00:5e:00:00:01", "not a MAC address"),
            ("ff:ff:ff:ff:ff:ff", "not a MAC address"),
        ] {
            match take(&mut ipam, "b", Some(ann("10.1.2.11", mac))) {
                Claim::Rejected { why: w, .. } => assert!(w.contains(why), "{mac}: {w}"),
                other => panic!("{mac}: {other:?}"),
            }
        }
        // An annotation that took the MAC an address would derive: that address is skipped
        // by allocation (and stays free for later).
        let mut ipam = Ipam::new(subnet());
        assert!(matches!(
            take(&mut ipam, "a", Some(ann("10.1.2.10", "0a:58:0a:01:02:03"))),
            Claim::Annotated(_)
        ));
        match take(&mut ipam, "c", None) {
            Claim::Allocated(n) => {
                assert_eq!(
                    (n.ip.to_string(), n.mac.as_str()),
                    ("10.1.2.4".into(), "0a:58:0a:01:02:04")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(ipam.check("10.1.2.3".parse().unwrap()).is_ok());
        // Releasing an address frees its MAC too.
        ipam.release("10.1.2.10".parse().unwrap());
        assert!(matches!(
            take(&mut ipam, "d", Some(ann("10.1.2.12", "0a:58:0a:01:02:03"))),
            Claim::Annotated(_)
        ));
    }

    #[test]
    fn stale_ports_are_gone_pods_and_moved_pods_only() {
        let ports = vec![
            port("ns_a", "n1", "0a:58:0a:01:02:03 10.1.2.3", "ns/a"),
            port("ns_b", "n1", "0a:58:0a:01:02:04 10.1.2.4", "ns/b"),
            port("ns_c", "n1", "0a:58:0a:01:02:05 10.1.2.5", "ns/c"),
        ];
        let expected: HashMap<String, String> = [("ns_a", "n1"), ("ns_c", "n2")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(stale_ports(&ports, &expected), ["ns_b", "ns_c"]);
    }

    #[test]
    fn rebuild_prefers_annotations_then_ports_then_allocates() {
        let ann = |ip: &str| net(ip).to_annotation();
        let pods = vec![
            // Annotated, port matches: nothing to do.
            pod("a", Some("n1"), Some(&ann("10.1.2.3")), 0),
            // Annotated, no port: port to create, annotation kept.
            pod("b", Some("n1"), Some(&ann("10.1.2.9")), 1),
            // Crash after the port, before the annotation: reuse the port's address.
            pod("c", Some("n1"), None, 2),
            // Port claims an address an annotation holds: the annotation wins.
            pod("d", Some("n1"), None, 3),
            // Younger pod with a conflicting annotation: rejected.
            pod("e", Some("n1"), Some(&ann("10.1.2.3")), 4),
            // Nothing at all.
            pod("f", Some("n1"), None, 5),
            // Garbage.
            pod("g", Some("n1"), Some("garbage"), 6),
        ];
        let ports: HashMap<String, PortRow> = [
            port("ns_a", "n1", "0a:58:0a:01:02:03 10.1.2.3", "ns/a"),
            port("ns_c", "n1", "0a:58:0a:01:02:04 10.1.2.4", "ns/c"),
            port("ns_d", "n1", "0a:58:0a:01:02:09 10.1.2.9", "ns/d"),
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
        let mut r = rebuild(subnet(), pods, &ports);
        let e = |k: &str| r.entries[&format!("ns/{k}")].clone();
        assert_eq!(e("a").port, PortState::Synced);
        assert!(e("a").annotated);
        assert_eq!(e("b").port, PortState::Absent);
        assert_eq!(e("b").net, Some(net("10.1.2.9")));
        assert!(e("b").annotated);
        assert_eq!(e("c").net, Some(net("10.1.2.4")));
        assert_eq!(e("c").port, PortState::Synced);
        assert!(!e("c").annotated);
        assert_eq!(e("d").net, None);
        assert_eq!(e("d").port, PortState::Dirty);
        assert!(matches!(
            e("e").blocked,
            Some(Blocked::BadAnnotation {
                retry_on_release: true,
                ..
            })
        ));
        assert!(matches!(
            e("g").blocked,
            Some(Blocked::BadAnnotation {
                retry_on_release: false,
                ..
            })
        ));
        assert_eq!(r.todo, ["ns/b", "ns/e", "ns/g", "ns/c", "ns/d", "ns/f"]);
        assert_eq!(r.ipam.used(), 3);
        // New allocations skip everything rebuilt.
        assert_eq!(r.ipam.allocate(), Some("10.1.2.5".parse().unwrap()));
    }

    #[test]
    fn claims() {
        let mut ipam = Ipam::new(subnet());
        let user = net("10.1.2.77").to_annotation();
        assert_eq!(
            claim(&mut ipam, &pod("u", Some("n1"), Some(&user), 0)),
            Claim::Annotated(net("10.1.2.77"))
        );
        assert_eq!(
            claim(&mut ipam, &pod("x", Some("n1"), None, 0)),
            Claim::Allocated(net("10.1.2.3"))
        );
        let gw = r#"{"ip_address":"10.1.2.1/24","mac_address":"0a:00:00:00:00:01"}"#;
        match claim(&mut ipam, &pod("g", Some("n1"), Some(gw), 0)) {
            Claim::Rejected { why, .. } => assert!(why.contains("gateway"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
