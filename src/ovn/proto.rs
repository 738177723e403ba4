//! The layer-4 protocols of services and network policies: Kubernetes spells them `TCP`,
//! OVN (load balancer `protocol`, match fields, `<PROTO>_lb_gateway_router` keys) spells them
//! in its own case.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// OVN's spelling: the load balancer `protocol` and the match field prefix (`tcp.dst`).
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Kubernetes' spelling (`TCP`).
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// Exactly Kubernetes' spelling, as the API server validates service and endpoint ports;
    /// `None` for anything else.
    pub fn parse(s: &str) -> Option<Proto> {
        Proto::ALL.into_iter().find(|p| p.upper() == s)
    }

    /// Kubernetes' spelling in any case: network policy ports are read leniently (`tcp` is
    /// taken as `TCP`), as the policy controller always has.
    pub fn parse_any_case(s: &str) -> Option<Proto> {
        Proto::ALL
            .into_iter()
            .find(|p| p.upper().eq_ignore_ascii_case(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for (s, exact, any) in [
            ("TCP", Some(Proto::Tcp), Some(Proto::Tcp)),
            ("UDP", Some(Proto::Udp), Some(Proto::Udp)),
            ("SCTP", Some(Proto::Sctp), Some(Proto::Sctp)),
            ("tcp", None, Some(Proto::Tcp)),
            ("Sctp", None, Some(Proto::Sctp)),
            ("ICMP", None, None),
            ("", None, None),
        ] {
            assert_eq!(Proto::parse(s), exact, "{s:?}");
            assert_eq!(Proto::parse_any_case(s), any, "{s:?}");
        }
        let lower: Vec<&str> = Proto::ALL.iter().map(|p| p.lower()).collect();
        assert_eq!(lower, ["tcp", "udp", "sctp"]);
    }
}
