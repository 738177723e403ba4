//! Addresses derived from a node subnet, and MACs derived from IPs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A stable MAC derived from an IPv4 address (`0a:58:` + the address), so router ports keep
/// their MAC across restarts and re-creation.
pub fn mac_from_ip(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// A unicast MAC in colon form, normalised to lower case; `None` otherwise.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    let first = u8::from_str_radix(parts[0], 16).ok()?;
    if first & 1 != 0 {
        // Multicast/broadcast MACs cannot be a port address.
        return None;
    }
    if parts.iter().all(|p| *p == "00") {
        // The all-zero MAC is no station's address.
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// The join network between the cluster router and the gateway routers (the later /16, so more
/// than 253 gateways fit).
pub fn join_cidr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 16).unwrap_or_default()
}

/// The cluster router's address on the join switch: the join network's first host.
pub fn join_router_ip() -> Ipv4Net {
    let net = join_cidr();
    Ipv4Net::new(
        Ipv4Addr::from(u32::from(net.network()) + 1),
        net.prefix_len(),
    )
    .unwrap_or(net)
}

/// Addresses derived from a node subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAddrs {
    pub subnet: Ipv4Net,
    /// `.1`: the cluster router's port on the node switch; the pods' gateway.
    pub gateway: Ipv4Net,
    /// `.2`: the node's management port.
    pub mgmt: Ipv4Net,
}

impl NodeAddrs {
    pub fn new(subnet: Ipv4Net) -> Self {
        let base = u32::from(subnet.network());
        let len = subnet.prefix_len();
        let at = |n: u32| Ipv4Net::new(Ipv4Addr::from(base + n), len).unwrap_or(subnet);
        NodeAddrs {
            subnet: subnet.trunc(),
            gateway: at(1),
            mgmt: at(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        let a = NodeAddrs::new("192.168.2.0/24".parse().unwrap());
        assert_eq!(a.gateway.to_string(), "192.168.2.1/24");
        assert_eq!(a.mgmt.to_string(), "192.168.2.2/24");
        assert_eq!(
            mac_from_ip("10.128.2.1".parse().unwrap()),
            "0a:58:0a:80:02:01"
        );
    }
}
