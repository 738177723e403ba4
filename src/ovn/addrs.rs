//! Addresses derived from a node subnet, and MACs derived from IPs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A stable MAC derived from an IPv4 address (`0a:58:` + the address), so router ports keep
/// their MAC across restarts and re-creation.
pub fn mac_from_ip(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
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
