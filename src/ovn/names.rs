//! Names of OVN and OVS objects. These are part of the external contract: existing clusters,
//! docs and tools (`ovn-nbctl show`, `ovn-trace` recipes) know them.

use super::Proto;

/// The distributed cluster router (the later, fixed name; the 2018 code used the master's host
/// name, which collided with the master's switch name in `ovn-sbctl lflow-list`).
pub const CLUSTER_ROUTER: &str = "ovn_cluster_router";
/// The switch joining the cluster router and every gateway router.
pub const JOIN_SWITCH: &str = "join";

/// `external_ids` keys other tools rely on.
pub const EXT_CLUSTER_ROUTER: &str = "k8s-cluster-router";
pub const EXT_CONNECT_TO_JOIN: &str = "connect_to_join";
pub const EXT_GATEWAY_IP: &str = "gateway_ip";
/// `external_ids` key the service controller finds gateway routers by: the router's physical
/// (node) address.
pub const EXT_PHYSICAL_IP: &str = "physical_ip";
/// `external_ids` key on a gateway router's port to the external switch.
pub const EXT_GATEWAY_PHYSICAL_IP: &str = "gateway-physical-ip";
/// Marks every NB row this controller owns for a node, so start-up sync finds them.
pub const EXT_NODE: &str = "k8s-node";

/// Load balancers the service controller makes for services that need per-load-balancer
/// options (session affinity, no SNAT): `k8s-service-lb=<proto>`, plus the affinity timeout,
/// `k8s-service-lb-skip-snat=yes` and, for a gateway router's, the router's name.
pub const EXT_SERVICE_LB: &str = "k8s-service-lb";
pub const EXT_SERVICE_LB_AFFINITY: &str = "k8s-service-lb-affinity";
pub const EXT_SERVICE_LB_SKIP_SNAT: &str = "k8s-service-lb-skip-snat";
pub const EXT_SERVICE_LB_GATEWAY: &str = "k8s-service-lb-gateway-router";
/// A node-local service load balancer (on that node's switch only): the node's name.
pub const EXT_SERVICE_LB_NODE: &str = "k8s-service-lb-node";

/// `external_ids` key (value `yes`) marking the cluster-wide load balancer of `p`:
/// `k8s-cluster-lb-tcp`.
pub fn ext_cluster_lb(p: Proto) -> String {
    format!("k8s-cluster-lb-{}", p.lower())
}

/// `external_ids` key whose value names the gateway router a load balancer of `p` belongs to:
/// `TCP_lb_gateway_router` (the service controller's contract with the node agent).
pub fn ext_gateway_lb(p: Proto) -> String {
    format!("{}_lb_gateway_router", p.upper())
}

/// Router port from the cluster router to the join switch.
pub fn rtoj(router: &str) -> String {
    format!("rtoj-{router}")
}

/// Switch port on the join switch facing `router`.
pub fn jtor(router: &str) -> String {
    format!("jtor-{router}")
}

/// The logical switch of a node.
pub fn node_switch(node: &str) -> String {
    node.to_string()
}

/// Cluster-router port towards a node switch.
pub fn rtos(node: &str) -> String {
    format!("rtos-{node}")
}

/// Node-switch port towards the cluster router.
pub fn stor(node: &str) -> String {
    format!("stor-{node}")
}

/// Logical port of a node's management interface.
pub fn mgmt_port(node: &str) -> String {
    format!("k8s-{node}")
}

/// OVS interface name of the management port: `k8s-` + the first 11 characters (IFNAMSIZ).
pub fn mgmt_iface(node: &str) -> String {
    let short: String = node.chars().take(11).collect();
    format!("k8s-{short}")
}

/// A node's gateway router.
pub fn gateway_router(node: &str) -> String {
    format!("GR_{node}")
}

/// A node's external switch.
pub fn ext_switch(node: &str) -> String {
    format!("ext_{node}")
}

/// Logical switch port of a pod.
pub fn pod_port(namespace: &str, pod: &str) -> String {
    format!("{namespace}_{pod}")
}

/// Logical switch port of the pod whose informer key is `namespace/pod`. Kubernetes names
/// cannot contain `/`, so the first one is the separator.
pub fn pod_port_of_key(key: &str) -> String {
    match key.split_once('/') {
        Some((namespace, pod)) => pod_port(namespace, pod),
        None => key.to_string(),
    }
}

/// Why a node called `node` must not get OVN objects, if it must not: its switch would take the
/// name of infrastructure (the join switch, the cluster router, another node's gateway router
/// or external switch; switches and routers share one datapath namespace in the southbound
/// database and in `ovn-trace`), or the name reads as a UUID, which `ovn-nbctl` resolves to
/// whatever row has that UUID. Management port names (`k8s-<node>`) are switch *ports*, a
/// namespace a switch name cannot reach, so node names like `k8s-worker-1` stay usable.
pub fn reserved_node_name(node: &str) -> Option<String> {
    let why = if node.is_empty() {
        "an empty name".to_string()
    } else if node == JOIN_SWITCH {
        "the name of the cluster join switch".to_string()
    } else if node == CLUSTER_ROUTER {
        "the name of the cluster router".to_string()
    } else if node.starts_with("GR_") || node.starts_with("ext_") {
        format!("the name of another node's gateway router or external switch ({node})")
    } else if looks_like_uuid(node) {
        "a UUID, which ovn-nbctl would resolve to an existing row".to_string()
    } else {
        return None;
    };
    Some(why)
}

fn looks_like_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Address-set name: "a" + decimal FNV-1a 64 of `s`. OVN identifiers must not start with a digit.
pub fn hash_name(s: &str) -> String {
    format!("a{}", fnv1a64(s.as_bytes()))
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The integration bridge ovn-controller programs (node agent and CNI plugin).
pub const BR_INT: &str = "br-int";

/// `Open_vSwitch` external_ids keys of the contract (written by the node agent, read by ovn-controller and the CNI plugin).
pub const EXT_OVN_REMOTE: &str = "ovn-remote";
pub const EXT_OVN_NB: &str = "ovn-nb";
pub const EXT_ENCAP_TYPE: &str = "ovn-encap-type";
pub const EXT_ENCAP_IP: &str = "ovn-encap-ip";
pub const EXT_SYSTEM_ID: &str = "system-id";
pub const EXT_K8S_API_SERVER: &str = "k8s-api-server";
pub const EXT_K8S_CA: &str = "k8s-ca-certificate";
pub const EXT_K8S_TOKEN: &str = "k8s-api-token";
/// The node's token file (`-k8s-token-file`), which the CNI plugin re-reads as the node does.
pub const EXT_K8S_TOKEN_FILE: &str = "k8s-api-token-file";
/// ovn-controller's own key for the datapath type of the br-int it creates.
pub const EXT_BRIDGE_DATAPATH: &str = "ovn-bridge-datapath-type";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_set_names_match_the_reference_vectors() {
        assert_eq!(hash_name(""), "a14695981039346656037");
        assert_eq!(hash_name("default"), "a16982411286042166782");
        assert_eq!(hash_name("kube-system"), "a16097492053868589918");
        assert_eq!(
            hash_name("default.allow-web.ingress.0"),
            "a7988710721545222109"
        );
        assert_eq!(
            hash_name("default.allow-web.egress.0"),
            "a13323479928004501701"
        );
    }

    #[test]
    fn management_interface_is_truncated_to_ifnamsiz() {
        // The reference text shows a 16-character name, which Linux would reject (IFNAMSIZ).
        assert_eq!(mgmt_iface("kube-worker-node-1"), "k8s-kube-worker");
        assert_eq!(mgmt_port("kube-worker-node-1"), "k8s-kube-worker-node-1");
        assert!(mgmt_iface("a-very-long-node-name-indeed").len() <= 15);
    }

    #[test]
    fn node_names_that_would_take_over_infrastructure() {
        for (name, refused) in [
            ("join", true),
            ("ovn_cluster_router", true),
            ("GR_n1", true),
            ("ext_n1", true),
            ("", true),
            ("0b3a2c4e-1f2d-4c5b-9a8e-7d6c5b4a3f21", true),
            ("0B3A2C4E-1F2D-4C5B-9A8E-7D6C5B4A3F21", true),
            ("n1", false),
            ("joiner", false),
            ("k8s-worker-1", false),
            ("gr-n1", false),
            ("0b3a2c4e-1f2d-4c5b-9a8e-7d6c5b4a3f2", false),
            ("worker.example.com", false),
        ] {
            assert_eq!(reserved_node_name(name).is_some(), refused, "{name:?}");
        }
    }

    #[test]
    fn topology_names() {
        assert_eq!(rtoj(CLUSTER_ROUTER), "rtoj-ovn_cluster_router");
        assert_eq!(jtor(&gateway_router("n1")), "jtor-GR_n1");
        assert_eq!(rtos("n1"), "rtos-n1");
        assert_eq!(stor("n1"), "stor-n1");
        assert_eq!(ext_switch("n1"), "ext_n1");
        assert_eq!(pod_port("default", "web"), "default_web");
        assert_eq!(pod_port_of_key("default/web"), "default_web");
        assert_eq!(ext_cluster_lb(Proto::Sctp), "k8s-cluster-lb-sctp");
        assert_eq!(ext_gateway_lb(Proto::Udp), "UDP_lb_gateway_router");
    }
}
