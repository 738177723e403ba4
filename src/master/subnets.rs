//! Node subnet allocation over one or more cluster CIDRs, each cut into host subnets of its
//! own length (`10.128.0.0/14/23`). Pure and in memory: the master rebuilds it from the node
//! annotations at every start, before it allocates anything.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::config::ClusterSubnet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetError {
    /// Not inside any `-cluster-subnet` entry.
    OutsideCluster(Ipv4Net),
    /// Inside an entry but not one of its host subnets (wrong length or not aligned).
    WrongShape { subnet: Ipv4Net, expected_len: u8 },
    /// Already held.
    InUse(Ipv4Net),
}

impl fmt::Display for SubnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubnetError::OutsideCluster(s) => write!(f, "{s} is outside the cluster subnet"),
            SubnetError::WrongShape {
                subnet,
                expected_len,
            } => write!(
                f,
                "{subnet} is not a /{expected_len} host subnet of the cluster subnet"
            ),
            SubnetError::InUse(s) => write!(f, "{s} is already allocated to another node"),
        }
    }
}

impl std::error::Error for SubnetError {}

#[derive(Debug, Clone)]
struct Range {
    base: u32,
    host_len: u8,
    count: u32,
    /// Index of this range's first subnet in the allocator's flat index space.
    offset: usize,
    cidr: Ipv4Net,
}

/// Next-fit allocator: scans from after the last allocation, so a freed subnet is reused only
/// after the others (fewer surprises for stale routes and caches).
#[derive(Debug, Clone)]
pub struct SubnetAllocator {
    ranges: Vec<Range>,
    used: Vec<bool>,
    next: usize,
    in_use: usize,
}

impl SubnetAllocator {
    pub fn new(cluster: &[ClusterSubnet]) -> Self {
        let mut ranges = Vec::new();
        let mut offset = 0usize;
        for c in cluster {
            let cidr = c.cidr.trunc();
            let host_len = c.host_prefix_len.max(cidr.prefix_len());
            let bits = u32::from(host_len - cidr.prefix_len());
            let count = 1u32.checked_shl(bits).unwrap_or(u32::MAX);
            ranges.push(Range {
                base: u32::from(cidr.network()),
                host_len,
                count,
                offset,
                cidr,
            });
            offset += count as usize;
        }
        SubnetAllocator {
            ranges,
            used: vec![false; offset],
            next: 0,
            in_use: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    pub fn allocated(&self) -> usize {
        self.in_use
    }

    fn index_of(&self, subnet: Ipv4Net) -> Result<usize, SubnetError> {
        let r = self
            .ranges
            .iter()
            .find(|r| r.cidr.contains(&subnet.network()))
            .ok_or(SubnetError::OutsideCluster(subnet))?;
        let addr = u32::from(subnet.addr());
        let step = 1u64 << (32 - u32::from(r.host_len));
        let rel = u64::from(addr - r.base);
        if subnet.prefix_len() != r.host_len || rel % step != 0 {
            return Err(SubnetError::WrongShape {
                subnet,
                expected_len: r.host_len,
            });
        }
        Ok(r.offset + (rel / step) as usize)
    }

    fn subnet_at(&self, idx: usize) -> Option<Ipv4Net> {
        let r = self
            .ranges
            .iter()
            .find(|r| idx >= r.offset && idx < r.offset + r.count as usize)?;
        let step = 1u64 << (32 - u32::from(r.host_len));
        let addr = u64::from(r.base) + (idx - r.offset) as u64 * step;
        Ipv4Net::new(Ipv4Addr::from(addr as u32), r.host_len).ok()
    }

    /// Check that `subnet` is one this allocator could hand out (shape only).
    pub fn check(&self, subnet: Ipv4Net) -> Result<(), SubnetError> {
        self.index_of(subnet).map(|_| ())
    }

    /// Mark an existing allocation (from an annotation) as used.
    pub fn mark_used(&mut self, subnet: Ipv4Net) -> Result<(), SubnetError> {
        let i = self.index_of(subnet)?;
        if self.used[i] {
            return Err(SubnetError::InUse(subnet));
        }
        self.used[i] = true;
        self.in_use += 1;
        Ok(())
    }

    pub fn allocate(&mut self) -> Option<Ipv4Net> {
        let n = self.used.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if !self.used[i] {
                self.used[i] = true;
                self.in_use += 1;
                self.next = (i + 1) % n;
                return self.subnet_at(i);
            }
        }
        None
    }

    /// Free a subnet; releasing one that is not held is a no-op.
    pub fn release(&mut self, subnet: Ipv4Net) {
        if let Ok(i) = self.index_of(subnet)
            && self.used[i]
        {
            self.used[i] = false;
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(s: &str, host: u8) -> ClusterSubnet {
        ClusterSubnet {
            cidr: s.parse().unwrap(),
            host_prefix_len: host,
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_host_subnets_in_order_and_exhausts() {
        let mut a = SubnetAllocator::new(&[cs("192.168.0.0/22", 24)]);
        assert_eq!(a.capacity(), 4);
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            [
                net("192.168.0.0/24"),
                net("192.168.1.0/24"),
                net("192.168.2.0/24"),
                net("192.168.3.0/24")
            ]
        );
        assert_eq!(a.allocate(), None);
        a.release(net("192.168.1.0/24"));
        assert_eq!(a.allocate(), Some(net("192.168.1.0/24")));
    }

    #[test]
    fn host_length_form_gives_23s() {
        let mut a = SubnetAllocator::new(&[cs("10.128.0.0/14", 23)]);
        assert_eq!(a.capacity(), 512);
        assert_eq!(a.allocate(), Some(net("10.128.0.0/23")));
        assert_eq!(a.allocate(), Some(net("10.128.2.0/23")));
    }

    #[test]
    fn several_cluster_entries_are_one_pool() {
        let mut a = SubnetAllocator::new(&[cs("10.0.0.0/23", 24), cs("10.9.0.0/24", 25)]);
        assert_eq!(a.capacity(), 4);
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            [
                net("10.0.0.0/24"),
                net("10.0.1.0/24"),
                net("10.9.0.0/25"),
                net("10.9.0.128/25")
            ]
        );
    }

    #[test]
    fn marks_existing_and_rejects_bad_ones() {
        let mut a = SubnetAllocator::new(&[cs("10.1.0.0/16", 24)]);
        a.mark_used(net("10.1.0.0/24")).unwrap();
        assert_eq!(
            a.mark_used(net("10.1.0.0/24")),
            Err(SubnetError::InUse(net("10.1.0.0/24")))
        );
        assert!(matches!(
            a.mark_used(net("10.2.0.0/24")),
            Err(SubnetError::OutsideCluster(_))
        ));
        assert!(matches!(
            a.mark_used(net("10.1.0.0/23")),
            Err(SubnetError::WrongShape { .. })
        ));
        assert!(matches!(
            a.mark_used(net("10.1.0.128/25")),
            Err(SubnetError::WrongShape { .. })
        ));
        // The used one is skipped.
        assert_eq!(a.allocate(), Some(net("10.1.1.0/24")));
        assert_eq!(a.allocated(), 2);
    }

    #[test]
    fn slash16_with_24s_holds_256() {
        let mut a = SubnetAllocator::new(&[cs("10.0.0.0/16", 24)]);
        let mut seen = std::collections::HashSet::new();
        while let Some(s) = a.allocate() {
            assert!(seen.insert(s));
        }
        assert_eq!(seen.len(), 256);
    }
}
