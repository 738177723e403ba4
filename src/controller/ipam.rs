//! Pod addresses of one node subnet.
//!
//! Pure and single-owner: the node's worker task is the only writer, so one address can never
//! be handed to two pods however events are replayed.
//!
//! Allocation is lowest-free (a bitmap with a hint to the first word that may hold a free bit):
//! addresses stay dense and deterministic, and a freed address is reused by the next pod. The
//! address is only freed after the NB transaction deleting the old port succeeded, so no
//! logical port can still carry it when it is handed out again.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ovn::addrs::NodeAddrs;

/// Why an address cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    OutsideSubnet {
        ip: Ipv4Addr,
        subnet: Ipv4Net,
    },
    /// Network, gateway (.1), management port (.2) or broadcast.
    Reserved {
        ip: Ipv4Addr,
        what: &'static str,
    },
    InUse {
        ip: Ipv4Addr,
    },
    /// Two ports with one MAC on a switch break L2 lookup for both.
    MacInUse {
        mac: String,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::OutsideSubnet { ip, subnet } => {
                write!(f, "{ip} is outside the node subnet {subnet}")
            }
            ClaimError::Reserved { ip, what } => {
                write!(f, "{ip} is the subnet's {what} address")
            }
            ClaimError::InUse { ip } => write!(f, "{ip} is already used by another pod"),
            ClaimError::MacInUse { mac } => {
                write!(f, "MAC {mac} is already used by another pod on this node")
            }
        }
    }
}

impl std::error::Error for ClaimError {}

/// The pod addresses of one node subnet.
#[derive(Debug, Clone)]
pub struct Ipam {
    addrs: NodeAddrs,
    /// Bit `i` set: host offset `i` taken (reserved offsets are set from the start).
    bits: Vec<u64>,
    size: u32,
    /// No word before this one has a free bit.
    first_free_word: usize,
    used: u32,
    /// MAC of each held address, and its reverse: a MAC is unique on the node switch.
    mac_of: HashMap<Ipv4Addr, String>,
    ip_of_mac: HashMap<String, Ipv4Addr>,
}

impl Ipam {
    /// Host subnets shorter than /16 are not a node subnet the master hands out; they are
    /// capped so a bogus annotation cannot make us allocate a huge bitmap.
    pub fn new(subnet: Ipv4Net) -> Ipam {
        let subnet = subnet.trunc();
        let addrs = NodeAddrs::new(subnet);
        let host_bits = 32 - u32::from(subnet.prefix_len());
        let size: u32 = 1u32 << host_bits.min(16);
        let words = size.div_ceil(64) as usize;
        let mut ipam = Ipam {
            addrs,
            bits: vec![0; words],
            size,
            first_free_word: 0,
            used: 0,
            mac_of: HashMap::new(),
            ip_of_mac: HashMap::new(),
        };
        for off in [0, 1, 2, size.saturating_sub(1)] {
            if off < size {
                ipam.set(off);
            }
        }
        ipam.used = 0;
        ipam
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.addrs.subnet
    }

    pub fn addrs(&self) -> &NodeAddrs {
        &self.addrs
    }

    /// How many pod addresses the subnet has.
    pub fn capacity(&self) -> u32 {
        self.size.saturating_sub(4)
    }

    /// How many pod addresses are taken.
    pub fn used(&self) -> u32 {
        self.used
    }

    fn base(&self) -> u32 {
        u32::from(self.addrs.subnet.network())
    }

    fn offset(&self, ip: Ipv4Addr) -> Result<u32, ClaimError> {
        let off = u32::from(ip).wrapping_sub(self.base());
        if !self.addrs.subnet.contains(&ip) || off >= self.size {
            return Err(ClaimError::OutsideSubnet {
                ip,
                subnet: self.addrs.subnet,
            });
        }
        let what = match off {
            0 => Some("network"),
            1 => Some("gateway"),
            2 => Some("management port"),
            o if o == self.size - 1 => Some("broadcast"),
            _ => None,
        };
        match what {
            Some(what) => Err(ClaimError::Reserved { ip, what }),
            None => Ok(off),
        }
    }

    fn is_set(&self, off: u32) -> bool {
        self.bits[(off / 64) as usize] & (1u64 << (off % 64)) != 0
    }

    fn set(&mut self, off: u32) {
        self.bits[(off / 64) as usize] |= 1u64 << (off % 64);
        self.used += 1;
    }

    /// Whether `ip` could be claimed now.
    pub fn check(&self, ip: Ipv4Addr) -> Result<(), ClaimError> {
        let off = self.offset(ip)?;
        if self.is_set(off) {
            return Err(ClaimError::InUse { ip });
        }
        Ok(())
    }

    /// Take a specific address (an existing annotation or port).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), ClaimError> {
        self.check(ip)?;
        let off = self.offset(ip)?;
        self.set(off);
        Ok(())
    }

    /// Take a specific address with its MAC: both must be free on this node.
    pub fn reserve_with_mac(&mut self, ip: Ipv4Addr, mac: &str) -> Result<(), ClaimError> {
        let mac = mac.to_ascii_lowercase();
        if self.ip_of_mac.contains_key(&mac) {
            return Err(ClaimError::MacInUse { mac });
        }
        self.reserve(ip)?;
        self.hold_mac(ip, mac);
        Ok(())
    }

    fn hold_mac(&mut self, ip: Ipv4Addr, mac: String) {
        self.ip_of_mac.insert(mac.clone(), ip);
        self.mac_of.insert(ip, mac);
    }

    /// The lowest free address whose derived MAC no other pod holds, taken with that MAC.
    pub fn allocate_with_mac(&mut self) -> Option<(Ipv4Addr, String)> {
        let mut skipped = Vec::new();
        let found = loop {
            let Some(ip) = self.allocate() else {
                break None;
            };
            let mac = crate::ovn::addrs::mac_from_ip(ip);
            if self.ip_of_mac.contains_key(&mac) {
                // A pre-set annotation took this address's MAC: skip the address.
                skipped.push(ip);
                continue;
            }
            self.hold_mac(ip, mac.clone());
            break Some((ip, mac));
        };
        for ip in skipped {
            self.release(ip);
        }
        found
    }

    /// The lowest free address, taken; `None` when the subnet is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        while self.first_free_word < self.bits.len() {
            let w = self.bits[self.first_free_word];
            if w != u64::MAX {
                let off = self.first_free_word as u32 * 64 + (!w).trailing_zeros();
                if off >= self.size {
                    return None;
                }
                self.set(off);
                return Some(Ipv4Addr::from(self.base() + off));
            }
            self.first_free_word += 1;
        }
        None
    }

    /// Give an address back. Reserved or foreign addresses are ignored.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let Ok(off) = self.offset(ip) else { return };
        if let Some(mac) = self.mac_of.remove(&ip) {
            self.ip_of_mac.remove(&mac);
        }
        if self.is_set(off) {
            self.bits[(off / 64) as usize] &= !(1u64 << (off % 64));
            self.used -= 1;
            self.first_free_word = self.first_free_word.min((off / 64) as usize);
        }
    }
}

/// Parse a logical port `addresses` entry `"<mac> <ip>"`.
pub fn parse_lsp_address(s: &str) -> Option<(String, Ipv4Addr)> {
    let mut it = s.split_whitespace();
    let mac = crate::ovn::addrs::parse_mac(it.next()?)?;
    let ip = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((mac, ip))
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
    fn never_hands_out_network_gateway_management_or_broadcast() {
        let mut a = Ipam::new(net("10.1.2.0/29"));
        assert_eq!(a.capacity(), 4);
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            ["10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"].map(ip)
        );
        assert_eq!(a.used(), 4);
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn lowest_free_reuses_released_addresses() {
        let mut a = Ipam::new(net("10.1.2.0/24"));
        let ips: Vec<_> = (0..100).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ips[0], ip("10.1.2.3"));
        assert_eq!(ips[99], ip("10.1.2.102"));
        a.release(ips[10]);
        a.release(ips[70]);
        assert_eq!(a.used(), 98);
        assert_eq!(a.allocate(), Some(ips[10]));
        assert_eq!(a.allocate(), Some(ips[70]));
        assert_eq!(a.allocate(), Some(ip("10.1.2.103")));
        // Releasing twice or releasing a reserved/foreign address changes nothing.
        a.release(ips[5]);
        a.release(ips[5]);
        a.release(ip("10.1.2.1"));
        a.release(ip("10.9.9.9"));
        assert_eq!(a.used(), 100);
    }

    #[test]
    fn full_subnet_then_room_after_release() {
        let mut a = Ipam::new(net("10.1.2.0/24"));
        let all: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(all.len(), 252);
        assert_eq!(*all.last().unwrap(), ip("10.1.2.254"));
        assert_eq!(a.allocate(), None);
        a.release(ip("10.1.2.77"));
        assert_eq!(a.allocate(), Some(ip("10.1.2.77")));
    }

    #[test]
    fn reserve_checks_subnet_reserved_and_conflicts() {
        let mut a = Ipam::new(net("10.1.2.0/24"));
        assert_eq!(a.reserve(ip("10.1.2.50")), Ok(()));
        assert_eq!(
            a.reserve(ip("10.1.2.50")),
            Err(ClaimError::InUse {
                ip: ip("10.1.2.50")
            })
        );
        for (s, what) in [
            ("10.1.2.0", "network"),
            ("10.1.2.1", "gateway"),
            ("10.1.2.2", "management port"),
            ("10.1.2.255", "broadcast"),
        ] {
            assert_eq!(
                a.reserve(ip(s)),
                Err(ClaimError::Reserved { ip: ip(s), what })
            );
        }
        assert!(matches!(
            a.reserve(ip("10.1.3.5")),
            Err(ClaimError::OutsideSubnet { .. })
        ));
        // Allocation skips what was reserved.
        let mut b = Ipam::new(net("10.1.2.0/24"));
        b.reserve(ip("10.1.2.3")).unwrap();
        assert_eq!(b.allocate(), Some(ip("10.1.2.4")));
    }

    #[test]
    fn larger_subnets_work_across_words() {
        let mut a = Ipam::new(net("10.128.0.0/23"));
        assert_eq!(a.capacity(), 508);
        let all: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(all.len(), 508);
        assert_eq!(all[253], ip("10.128.1.0"));
        assert_eq!(*all.last().unwrap(), ip("10.128.1.254"));
    }

    #[test]
    fn lsp_addresses() {
        assert_eq!(
            parse_lsp_address("0a:58:0a:01:00:05 10.1.0.5"),
            Some(("0a:58:0a:01:00:05".into(), ip("10.1.0.5")))
        );
        assert_eq!(parse_lsp_address("dynamic"), None);
        assert_eq!(
            parse_lsp_address("0a:58:0a:01:00:05 10.1.0.5 10.1.0.6"),
            None
        );
    }
}
