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
}
