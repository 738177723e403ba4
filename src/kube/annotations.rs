//! Annotation keys and value formats: part of the external contract (CNI plugins and tools
//! read them), so they are exactly the reference's.

use ipnet::Ipv4Net;

/// Node annotation holding the node's pod subnet, e.g. `192.168.1.0/24`.
pub const HOST_SUBNET: &str = "ovn_host_subnet";
/// Pod annotation with the pod's address, MAC and gateway.
pub const POD_NETWORK: &str = "ovn";

/// Parse a host-subnet annotation: an IPv4 CIDR written in network form.
pub fn parse_host_subnet(v: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = v
        .trim()
        .parse()
        .map_err(|e| format!("{HOST_SUBNET} {v:?} is not an IPv4 CIDR: {e}"))?;
    if net.trunc() != net {
        return Err(format!(
            "{HOST_SUBNET} {v:?} has host bits set (the network is {})",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Node annotation holding the MAC of the node's management port (`k8s-<node>`), written by
/// the node agent so the master can own that logical switch port. The name and the plain-MAC
/// value are upstream ovn-kubernetes'. The port it describes is always the annotated node's
/// own `k8s-<node>`: the value carries no port name, so a node cannot point it elsewhere.
pub const NODE_MGMT_PORT_MAC: &str = "k8s.ovn.org/node-mgmt-port-mac-address";

/// Parse a management-port MAC annotation. Anyone allowed to edit a Node can set it, so the
/// value is held to what a port address may be: a unicast, non-zero MAC in colon form
/// (normalised to lower case).
pub fn parse_mgmt_port_mac(v: &str) -> Result<String, String> {
    crate::controller::ipam::parse_mac(v.trim()).ok_or_else(|| {
        format!(
            "{NODE_MGMT_PORT_MAC} {v:?} is not a unicast, non-zero MAC address (aa:bb:cc:dd:ee:ff)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_subnet_values() {
        assert_eq!(
            parse_host_subnet("10.1.2.0/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert!(
            parse_host_subnet("10.1.2.5/24")
                .unwrap_err()
                .contains("host bits")
        );
        assert!(
            parse_host_subnet("banana")
                .unwrap_err()
                .contains("not an IPv4 CIDR")
        );
        assert!(parse_host_subnet("fd00::/64").is_err());
    }

    #[test]
    fn mgmt_port_mac_values() {
        for (v, want) in [
            ("0a:58:0a:01:03:02", Some("0a:58:0a:01:03:02")),
            (" 0A:58:0A:01:03:02\n", Some("0a:58:0a:01:03:02")),
            ("01:00:5e:00:00:01", None),
            ("ff:ff:ff:ff:ff:ff", None),
            ("00:00:00:00:00:00", None),
            ("0a:58:0a:01:03", None),
            ("0a:58:0a:01:03:02 10.1.3.2", None),
            ("k8s-other", None),
            ("", None),
        ] {
            match (parse_mgmt_port_mac(v), want) {
                (Ok(got), Some(w)) => assert_eq!(got, w, "{v:?}"),
                (Err(e), None) => assert!(e.contains(NODE_MGMT_PORT_MAC), "{v:?}: {e}"),
                (got, w) => panic!("{v:?}: got {got:?}, want {w:?}"),
            }
        }
    }
}
