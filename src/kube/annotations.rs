//! Annotation keys and value formats: part of the external contract (CNI plugins and tools
//! read them), so they are exactly the reference's.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ovn::addrs::{NodeAddrs, mac_from_ip, parse_mac};

/// Node annotation holding the node's pod subnet, e.g. `192.168.1.0/24`.
pub const HOST_SUBNET: &str = "ovn_host_subnet";
/// Pod annotation with the pod's address, MAC and gateway.
pub const POD_NETWORK: &str = "ovn";

/// A pod's network: what the `ovn` annotation says and what its logical port carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Lower case, unicast, non-zero (see [`parse_mac`]).
    pub mac: String,
    pub gateway: Ipv4Addr,
}

/// The `ovn` annotation's fields as written, before any check.
#[derive(serde::Deserialize)]
struct RawPodNetwork {
    ip_address: Option<String>,
    mac_address: Option<String>,
    gateway_ip: Option<String>,
}

impl RawPodNetwork {
    fn decode(value: &str) -> Result<RawPodNetwork, String> {
        serde_json::from_str(value).map_err(|e| format!("it is not the expected JSON: {e}"))
    }

    fn mac(&self) -> Result<String, String> {
        let mac = self
            .mac_address
            .as_deref()
            .ok_or("mac_address is missing")?;
        parse_mac(mac).ok_or_else(|| format!("mac_address {mac:?} is not a MAC address"))
    }
}

impl PodNetwork {
    /// A freshly allocated address: MAC derived from the IP, the node's gateway.
    pub fn new(ip: Ipv4Addr, addrs: &NodeAddrs) -> PodNetwork {
        PodNetwork {
            ip,
            prefix_len: addrs.subnet.prefix_len(),
            mac: mac_from_ip(ip),
            gateway: addrs.gateway.addr(),
        }
    }

    /// The address with its prefix length, as the pod's interface carries it.
    pub fn cidr(&self) -> Ipv4Net {
        // The prefix length comes from a parsed IPv4 prefix (at most 32), so this cannot fail;
        // the fallback keeps the address.
        Ipv4Net::new(self.ip, self.prefix_len).unwrap_or_else(|_| Ipv4Net::from(self.ip))
    }

    /// The annotation value, byte for byte the reference's format (CNI plugins and tools
    /// parse it; note the spaces after the commas and before the gateway value). Every field
    /// is an address or a checked MAC, so nothing needs JSON escaping.
    pub fn to_annotation(&self) -> String {
        format!(
            "{{\"ip_address\":\"{}/{}\", \"mac_address\":\"{}\", \"gateway_ip\": \"{}\"}}",
            self.ip, self.prefix_len, self.mac, self.gateway
        )
    }

    /// The logical port's `addresses` entry: `"<mac> <ip>"`.
    pub fn lsp_address(&self) -> String {
        format!("{} {}", self.mac, self.ip)
    }

    /// The CNI plugin's reading: the value must carry all three fields, the address with its
    /// prefix length; the plugin has no node subnet to hold them to (the controller did).
    pub fn parse(value: &str) -> Result<PodNetwork, String> {
        let raw = RawPodNetwork::decode(value)?;
        let get = |v: &Option<String>, k: &str| {
            v.clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("key {k:?} missing or empty"))
        };
        let ip: Ipv4Net = get(&raw.ip_address, "ip_address")?
            .parse()
            .map_err(|e| format!("ip_address is not an IPv4 CIDR: {e}"))?;
        let mac = raw.mac()?;
        let gateway: Ipv4Addr = get(&raw.gateway_ip, "gateway_ip")?
            .parse()
            .map_err(|e| format!("gateway_ip is not an IPv4 address: {e}"))?;
        Ok(PodNetwork {
            ip: ip.addr(),
            prefix_len: ip.prefix_len(),
            mac,
            gateway,
        })
    }

    /// The controller's reading, for a pod on a node with `addrs`: the address must be in the
    /// node subnet (a bare address takes the subnet's length) and a gateway, if given, must be
    /// the node's. Older writers left the gateway out, so it is optional. The checks that need
    /// other pods (address already used) are the allocator's.
    pub fn parse_for_node(value: &str, addrs: &NodeAddrs) -> Result<PodNetwork, String> {
        let raw = RawPodNetwork::decode(value)?;
        let ip_s = raw.ip_address.as_deref().ok_or("ip_address is missing")?;
        let (ip, len) = match ip_s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (ip_s, None),
        };
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("ip_address {ip_s:?} is not an IPv4 address"))?;
        let want_len = addrs.subnet.prefix_len();
        if let Some(len) = len
            && len.parse::<u8>().ok() != Some(want_len)
        {
            return Err(format!(
                "ip_address {ip_s:?} does not have the node subnet's prefix length /{want_len}"
            ));
        }
        if !addrs.subnet.contains(&ip) {
            return Err(format!(
                "ip_address {ip} is outside the node subnet {}",
                addrs.subnet
            ));
        }
        let mac = raw.mac()?;
        let gateway = addrs.gateway.addr();
        if let Some(gw) = raw.gateway_ip
            && gw.parse::<Ipv4Addr>().ok() != Some(gateway)
        {
            return Err(format!(
                "gateway_ip {gw:?} is not the node's gateway {gateway}"
            ));
        }
        Ok(PodNetwork {
            ip,
            prefix_len: want_len,
            mac,
            gateway,
        })
    }
}

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
    parse_mac(v.trim()).ok_or_else(|| {
        format!(
            "{NODE_MGMT_PORT_MAC} {v:?} is not a unicast, non-zero MAC address (aa:bb:cc:dd:ee:ff)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn annotation_is_byte_exact() {
        let addrs = NodeAddrs::new(net("192.168.2.0/24"));
        let p = PodNetwork::new(ip("192.168.2.3"), &addrs);
        assert_eq!(
            p.to_annotation(),
            r#"{"ip_address":"192.168.2.3/24", "mac_address":"0a:58:c0:a8:02:03", "gateway_ip": "192.168.2.1"}"#
        );
        assert_eq!(p.lsp_address(), "0a:58:c0:a8:02:03 192.168.2.3");
        assert_eq!(
            PodNetwork::parse_for_node(&p.to_annotation(), &addrs),
            Ok(p)
        );
    }

    #[test]
    fn annotations_from_users_and_old_versions() {
        let addrs = NodeAddrs::new(net("192.168.2.0/24"));
        // The reference's own example (northd MAC), compact JSON, no gateway: accepted.
        let ok = PodNetwork::parse_for_node(
            r#"{"ip_address":"192.168.2.3/24","mac_address":"0A:00:00:00:00:03"}"#,
            &addrs,
        )
        .unwrap();
        assert_eq!(ok.mac, "0a:00:00:00:00:03");
        assert_eq!(ok.gateway, ip("192.168.2.1"));
        for (bad, why) in [
            ("nope", "expected JSON"),
            (
                r#"{"mac_address":"0a:00:00:00:00:03"}"#,
                "ip_address is missing",
            ),
            (
                r#"{"ip_address":"192.168.3.3/24","mac_address":"0a:00:00:00:00:03"}"#,
                "outside the node subnet",
            ),
            (
                r#"{"ip_address":"192.168.2.3/16","mac_address":"0a:00:00:00:00:03"}"#,
                "prefix length",
            ),
            (
                r#"{"ip_address":"x/24","mac_address":"0a:00:00:00:00:03"}"#,
                "not an IPv4",
            ),
            (
                r#"{"ip_address":"192.168.2.3/24"}"#,
                "mac_address is missing",
            ),
            (
                r#"{"ip_address":"192.168.2.3/24","mac_address":"zz"}"#,
                "not a MAC",
            ),
            (
                r#"{"ip_address":"192.168.2.3/24","mac_address":"01:00:00:00:00:03"}"#,
                "not a MAC",
            ),
            (
                r#"{"ip_address":"192.168.2.3/24","mac_address":"0a:00:00:00:00:03","gateway_ip":"192.168.2.9"}"#,
                "not the node's gateway",
            ),
        ] {
            let e = PodNetwork::parse_for_node(bad, &addrs).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

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
