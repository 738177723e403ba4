//! The pure part of `ovn-kube-util trace`: from resolved facts (pods, logical ports, router
//! MACs, load-balancer VIPs, ACLs) to the `ovn-trace` invocations, and from `ovn-trace`'s
//! output to a verdict an operator can act on. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

use crate::controller::policy_plan::{
    EXT_DIRECTION, EXT_NAMESPACE, EXT_OWNER, EXT_POLICY, EXT_RULE, OWNER_DENY, OWNER_MGMT,
    OWNER_POLICY,
};
use crate::ovn::Proto;

/// Source port of the traced connection (any ephemeral port; policies never match on it).
pub const SRC_PORT: u16 = 33333;
/// One `--ct=new` per conntrack action on the path (up to two per switch and one per router
/// crossed): the first packet of a connection is new in every zone. With fewer, later ct
/// actions see ovn-trace's default "established" state and judge a different packet.
pub const CT_NEW_FLAGS: usize = 8;

/// A logical port of a pod: what the trace starts from or should end at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `ns/pod`, for the operator.
    pub id: String,
    /// The logical switch port name.
    pub port: String,
    /// The logical switch (the node's) holding the port.
    pub switch: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// One `ovn-trace` run: a datapath, a microflow and the backend to pick at a load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub datapath: String,
    pub microflow: String,
    pub lb_dst: Option<SocketAddrV4>,
    /// The logical port the packet must reach to count as delivered (`None`: any port).
    pub expect: Option<String>,
    /// What this leg is, for the operator (`backend 10.1.1.5:8080 (y/b)`).
    pub label: Option<String>,
}

/// The destination after resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A pod's logical port.
    Pod(Endpoint),
    /// A load-balancer VIP with its backends; a backend is the pod owning that address, when
    /// one does.
    Vip {
        vip: SocketAddrV4,
        backends: Vec<(SocketAddrV4, Option<Endpoint>)>,
    },
    /// An address no pod or VIP holds.
    Ip(Ipv4Addr),
}

/// The microflow of the first packet of a connection from `src` to `dst_ip:port`.
pub fn microflow(
    src: &Endpoint,
    dst_mac: &str,
    dst_ip: Ipv4Addr,
    proto: Proto,
    port: u16,
) -> String {
    let l4 = match proto {
        Proto::Tcp => format!("tcp && tcp.src=={SRC_PORT} && tcp.dst=={port} && tcp.flags==2"),
        Proto::Udp => format!("udp && udp.src=={SRC_PORT} && udp.dst=={port}"),
        Proto::Sctp => format!("sctp && sctp.src=={SRC_PORT} && sctp.dst=={port}"),
    };
    format!(
        "inport==\"{}\" && eth.src=={} && eth.dst=={dst_mac} && ip4.src=={} && ip4.dst=={dst_ip} && ip.ttl==64 && {l4}",
        src.port, src.mac, src.ip
    )
}

/// The legs to trace. `router_mac` is the MAC of the cluster router's port on the source's
/// switch (the pod's gateway): what a pod sends to when the destination is not on its switch.
pub fn legs(
    src: &Endpoint,
    target: &Target,
    router_mac: &str,
    proto: Proto,
    port: u16,
) -> Vec<Leg> {
    let leg = |dst_mac: &str, ip: Ipv4Addr, lb_dst, expect: Option<&Endpoint>, label| Leg {
        datapath: src.switch.clone(),
        microflow: microflow(src, dst_mac, ip, proto, port),
        lb_dst,
        expect: expect.map(|e| e.port.clone()),
        label,
    };
    match target {
        Target::Pod(d) => {
            let mac = if d.switch == src.switch {
                d.mac.as_str()
            } else {
                router_mac
            };
            vec![leg(mac, d.ip, None, Some(d), None)]
        }
        Target::Vip { vip, backends } => backends
            .iter()
            .map(|(b, owner)| {
                let label = match owner {
                    Some(e) => format!("backend {b} ({})", e.id),
                    None => format!("backend {b}"),
                };
                leg(router_mac, *vip.ip(), Some(*b), owner.as_ref(), Some(label))
            })
            .collect(),
        Target::Ip(ip) => vec![leg(router_mac, *ip, None, None, None)],
    }
}

/// `ovn-trace` arguments (without the program): the SB database first, then the ct states,
/// the backend choice, the datapath and the microflow.
pub fn trace_args(db_args: &[String], leg: &Leg) -> Vec<String> {
    let mut v: Vec<String> = db_args.to_vec();
    v.extend(std::iter::repeat_n("--ct=new".to_string(), CT_NEW_FLAGS));
    if let Some(b) = leg.lb_dst {
        v.push(format!("--lb-dst={b}"));
    }
    v.push(leg.datapath.clone());
    v.push(leg.microflow.clone());
    v
}

/// The SB connection arguments as `ovn-trace` takes them: it has no `--bootstrap-ca-cert`
/// (which the ctl tools get for ssl), only `--ca-cert`.
pub fn trace_db_args(ctl_db_args: &[String]) -> Vec<String> {
    ctl_db_args
        .iter()
        .map(|a| match a.strip_prefix("--bootstrap-ca-cert=") {
            Some(ca) => format!("--ca-cert={ca}"),
            None => a.clone(),
        })
        .collect()
}

/// One logical flow the packet matched, as `ovn-trace` prints it:
/// ` 4. ls_out_acl (northd.c:6681): <match>, priority 2001, uuid 5a7d5d1b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub stage: String,
    pub matches: String,
    pub priority: i64,
}

fn parse_hit(line: &str) -> Option<Hit> {
    let l = line.trim_start();
    let (num, rest) = l.split_once(". ")?;
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (left, right) = rest.rsplit_once(", priority ")?;
    let priority = right.split(',').next()?.trim().parse().ok()?;
    let stage_end = left.find([' ', ':']).unwrap_or(left.len());
    let stage = left[..stage_end].to_string();
    // The stage may be followed by its source location in parentheses.
    let after = &left[stage_end..];
    let matches = match after.strip_prefix(" (") {
        Some(s) => s.split_once("): ")?.1,
        None => after.strip_prefix(": ")?,
    };
    Some(Hit {
        stage,
        matches: matches.to_string(),
        priority,
    })
}

/// What a trace shows: the flows matched, in order, and the logical ports output to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traced {
    pub hits: Vec<Hit>,
    pub outputs: Vec<String>,
}

/// Parse `ovn-trace`'s detailed output.
pub fn parse_trace(text: &str) -> Traced {
    let mut t = Traced::default();
    for line in text.lines() {
        if let Some(h) = parse_hit(line) {
            t.hits.push(h);
        }
        // `/* output to "x_b", type "" */`
        if let Some(rest) = line.split("/* output to \"").nth(1)
            && let Some((port, _)) = rest.split_once('"')
        {
            t.outputs.push(port.to_string());
        }
    }
    t
}

/// An ACL as the NB holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    pub uuid: String,
    pub direction: String,
    pub priority: i64,
    pub matches: String,
    pub action: String,
    pub external_ids: BTreeMap<String, String>,
}

/// Offset northd adds to an ACL's priority in its logical flow.
const ACL_LFLOW_OFFSET: i64 = 1000;

/// The NB ACL a flow of an ACL stage was generated from: its match appears verbatim (in
/// parentheses) in the flow's match; the longest such match wins (a drop's `outport == @pg`
/// is part of the ARP allow's `outport == @pg && (arp || nd)`).
pub fn acl_of<'a>(hit: &Hit, acls: &'a [Acl]) -> Option<&'a Acl> {
    if !hit.stage.contains("acl") {
        return None;
    }
    acls.iter()
        .filter(|a| hit.matches.contains(&format!("({})", a.matches)) || hit.matches == a.matches)
        .max_by_key(|a| {
            (
                a.priority + ACL_LFLOW_OFFSET == hit.priority,
                a.matches.len(),
            )
        })
}

/// A readable ACL, named by the object it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AclRef {
    /// `NetworkPolicy x/allow-web (Ingress rule 0)`, `default deny (Ingress) of namespace x`.
    pub name: String,
    pub action: String,
    /// The NetworkPolicy (`ns/name`) the ACL enforces, for policy ACLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// For a default deny: the policies isolating the pod in that direction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub isolated_by: Vec<String>,
    #[serde(rename = "match")]
    pub matches: String,
    pub uuid: String,
}

/// Who isolates which pod: `(logical port, "Ingress"|"Egress")` → policies (`ns/name`).
pub type Isolation = BTreeMap<(String, String), BTreeSet<String>>;

/// Name an ACL: by its NetworkPolicy, or as a namespace's default deny with the policies that
/// isolate the pod it judged (`port`: the destination for ingress, the source for egress).
pub fn describe(acl: &Acl, iso: &Isolation, src: &str, dst: Option<&str>) -> AclRef {
    let get = |k: &str| acl.external_ids.get(k).cloned().unwrap_or_default();
    let dir = get(EXT_DIRECTION);
    let mut r = AclRef {
        name: String::new(),
        action: acl.action.clone(),
        policy: None,
        isolated_by: Vec::new(),
        matches: acl.matches.clone(),
        uuid: acl.uuid.clone(),
    };
    match acl.external_ids.get(EXT_OWNER).map(String::as_str) {
        Some(OWNER_POLICY) => {
            let p = format!("{}/{}", get(EXT_NAMESPACE), get(EXT_POLICY));
            r.name = format!("NetworkPolicy {p} ({dir} rule {})", get(EXT_RULE));
            r.policy = Some(p);
        }
        Some(OWNER_DENY) => {
            let port = if dir == "Egress" { Some(src) } else { dst };
            r.isolated_by = port
                .and_then(|p| iso.get(&(p.to_string(), dir.clone())))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            r.name = format!("default deny ({dir}) of namespace {}", get(EXT_NAMESPACE));
            if !r.isolated_by.is_empty() {
                r.name.push_str(&format!(
                    ", the pod being isolated by NetworkPolicy {}",
                    r.isolated_by.join(", ")
                ));
            }
        }
        Some(OWNER_MGMT) => r.name = "node management allow".into(),
        _ => {
            r.name = format!(
                "ACL {} ({} priority {}: {})",
                short(&acl.uuid),
                acl.direction,
                acl.priority,
                acl.matches
            )
        }
    }
    r
}

fn short(uuid: &str) -> &str {
    uuid.get(..8).unwrap_or(uuid)
}

/// The outcome of one leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub delivered: bool,
    /// The logical ports the packet was output to (the last one is where it ended).
    pub output_to: Vec<String>,
    /// The ACL that dropped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_by: Option<AclRef>,
    /// The ACLs that allowed it on the way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_by: Vec<AclRef>,
    /// For a drop not caused by an ACL: the last flow the packet matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_flow: Option<String>,
    /// What was traced, to run `ovn-trace DATAPATH 'MICROFLOW'` by hand for the whole path.
    pub datapath: String,
    pub microflow: String,
}

fn is_drop(action: &str) -> bool {
    matches!(action, "drop" | "reject")
}

/// Judge one traced leg.
pub fn judge(leg: &Leg, t: &Traced, acls: &[Acl], iso: &Isolation, src_port: &str) -> Outcome {
    let delivered = match &leg.expect {
        Some(p) => t.outputs.iter().any(|o| o == p),
        None => !t.outputs.is_empty(),
    };
    let dst = leg.expect.as_deref();
    let mut seen = BTreeSet::new();
    let mut judged: Vec<&Acl> = Vec::new();
    for h in &t.hits {
        if let Some(a) = acl_of(h, acls)
            && seen.insert(a.uuid.clone())
        {
            judged.push(a);
        }
    }
    let dropped_by = (!delivered)
        .then(|| judged.iter().rev().find(|a| is_drop(&a.action)))
        .flatten()
        .map(|a| describe(a, iso, src_port, dst));
    let allowed_by = judged
        .iter()
        .filter(|a| !is_drop(&a.action))
        .map(|a| describe(a, iso, src_port, dst))
        .collect();
    let last_flow = (!delivered && dropped_by.is_none())
        .then(|| t.hits.last().map(|h| format!("{}: {}", h.stage, h.matches)))
        .flatten();
    Outcome {
        path: leg.label.clone(),
        delivered,
        output_to: t.outputs.clone(),
        dropped_by,
        allowed_by,
        last_flow,
        datapath: leg.datapath.clone(),
        microflow: leg.microflow.clone(),
    }
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub port: u16,
    /// `delivered`, `dropped` or `missing`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// What is missing, when the trace could not even start (no logical port, no VIP, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    pub paths: Vec<Outcome>,
}

impl Report {
    /// A report for a trace that could not run because an object is missing.
    pub fn missing(src: &str, dst: &str, proto: Proto, port: u16, what: String) -> Report {
        Report {
            src: src.into(),
            dst: dst.into(),
            protocol: proto.lower().into(),
            port,
            verdict: "missing".into(),
            vip: None,
            missing: Some(what),
            paths: Vec::new(),
        }
    }

    /// Delivered only when every path (every backend of a VIP) is.
    pub fn from_paths(
        src: &str,
        dst: &str,
        proto: Proto,
        port: u16,
        vip: Option<SocketAddrV4>,
        paths: Vec<Outcome>,
    ) -> Report {
        let ok = !paths.is_empty() && paths.iter().all(|p| p.delivered);
        Report {
            src: src.into(),
            dst: dst.into(),
            protocol: proto.lower().into(),
            port,
            verdict: if ok { "delivered" } else { "dropped" }.into(),
            vip: vip.map(|v| v.to_string()),
            missing: None,
            paths,
        }
    }

    pub fn delivered(&self) -> bool {
        self.verdict == "delivered"
    }

    /// The short text verdict, one line per path.
    pub fn text(&self) -> String {
        let mut head = format!(
            "{} -> {} {}/{}",
            self.src, self.dst, self.protocol, self.port
        );
        if let Some(v) = &self.vip {
            head.push_str(&format!(" via load-balancer VIP {v}"));
        }
        if let Some(m) = &self.missing {
            return format!("{head}: cannot trace: {m}\n");
        }
        if self.paths.len() == 1 && self.paths[0].path.is_none() {
            return format!("{head}: {}\n", outcome_text(&self.paths[0]));
        }
        let mut s = format!("{head}: {}\n", self.verdict);
        for p in &self.paths {
            s.push_str(&format!(
                "  {}: {}\n",
                p.path.as_deref().unwrap_or("path"),
                outcome_text(p)
            ));
        }
        s
    }
}

fn outcome_text(o: &Outcome) -> String {
    if o.delivered {
        let to = o.output_to.last().map(String::as_str).unwrap_or("?");
        let mut s = format!("delivered to logical port {to}");
        let policies: Vec<&str> = o
            .allowed_by
            .iter()
            .filter(|a| a.policy.is_some())
            .map(|a| a.name.as_str())
            .collect();
        if !policies.is_empty() {
            s.push_str(&format!(", allowed by {}", policies.join(" and ")));
        }
        return s;
    }
    match (&o.dropped_by, &o.last_flow) {
        (Some(a), _) => format!("dropped by {}", a.name),
        (None, Some(f)) => format!(
            "dropped (no ACL involved); last logical flow matched: {f}; whole path: ovn-trace {} '{}'",
            o.datapath, o.microflow
        ),
        (None, None) => format!(
            "dropped before any logical flow matched; whole path: ovn-trace {} '{}'",
            o.datapath, o.microflow
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, port: &str, sw: &str, mac: &str, ip: [u8; 4]) -> Endpoint {
        Endpoint {
            id: id.into(),
            port: port.into(),
            switch: sw.into(),
            mac: mac.into(),
            ip: ip.into(),
        }
    }

    fn xa() -> Endpoint {
        ep("x/a", "x_a", "n1", "0a:58:0a:1e:01:03", [10, 30, 1, 3])
    }

    const RMAC: &str = "0a:58:0a:1e:01:01";

    #[test]
    fn legs_address_the_pod_or_its_gateway() {
        let same = ep("x/b", "x_b", "n1", "0a:58:0a:1e:01:04", [10, 30, 1, 4]);
        let other = ep("y/c", "y_c", "n2", "0a:58:0a:1e:02:03", [10, 30, 2, 3]);
        let vip: SocketAddrV4 = "172.16.1.10:80".parse().unwrap();
        let b1: SocketAddrV4 = "10.30.2.3:8080".parse().unwrap();
        let b2: SocketAddrV4 = "10.99.0.1:8080".parse().unwrap();
        // Per leg: eth.dst, ip4.dst, --lb-dst, the port it must reach.
        type Want<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: Vec<(Target, Vec<Want>)> = vec![
            (
                Target::Pod(same.clone()),
                vec![("0a:58:0a:1e:01:04", "10.30.1.4", None, Some("x_b"))],
            ),
            (
                Target::Pod(other.clone()),
                vec![(RMAC, "10.30.2.3", None, Some("y_c"))],
            ),
            (
                Target::Vip {
                    vip,
                    backends: vec![(b1, Some(other.clone())), (b2, None)],
                },
                vec![
                    (RMAC, "172.16.1.10", Some("10.30.2.3:8080"), Some("y_c")),
                    (RMAC, "172.16.1.10", Some("10.99.0.1:8080"), None),
                ],
            ),
            (
                Target::Ip([192, 0, 2, 1].into()),
                vec![(RMAC, "192.0.2.1", None, None)],
            ),
        ];
        for (target, want) in cases {
            let got = legs(&xa(), &target, RMAC, Proto::Tcp, 80);
            assert_eq!(got.len(), want.len(), "{target:?}");
            for (g, (mac, ip, lb, expect)) in got.iter().zip(want) {
                assert_eq!(g.datapath, "n1");
                assert!(
                    g.microflow.contains(&format!("eth.dst=={mac} ")),
                    "{}",
                    g.microflow
                );
                assert!(
                    g.microflow.contains(&format!("ip4.dst=={ip} ")),
                    "{}",
                    g.microflow
                );
                assert_eq!(g.lb_dst.map(|b| b.to_string()).as_deref(), lb);
                assert_eq!(g.expect.as_deref(), expect);
            }
        }
    }

    #[test]
    fn microflow_and_arguments() {
        let f = microflow(&xa(), RMAC, [10, 30, 2, 3].into(), Proto::Udp, 81);
        assert_eq!(
            f,
            "inport==\"x_a\" && eth.src==0a:58:0a:1e:01:03 && eth.dst==0a:58:0a:1e:01:01 && \
             ip4.src==10.30.1.3 && ip4.dst==10.30.2.3 && ip.ttl==64 && udp && udp.src==33333 && udp.dst==81"
        );
        assert!(
            microflow(&xa(), RMAC, [10, 30, 2, 3].into(), Proto::Tcp, 80)
                .ends_with("tcp && tcp.src==33333 && tcp.dst==80 && tcp.flags==2")
        );
        let leg = Leg {
            datapath: "n1".into(),
            microflow: "M".into(),
            lb_dst: Some("10.1.1.1:8080".parse().unwrap()),
            expect: None,
            label: None,
        };
        let args = trace_args(&["--db=unix:/sb.sock".into()], &leg);
        assert_eq!(args[0], "--db=unix:/sb.sock");
        assert_eq!(
            args.iter().filter(|a| *a == "--ct=new").count(),
            CT_NEW_FLAGS
        );
        assert_eq!(
            &args[args.len() - 3..],
            ["--lb-dst=10.1.1.1:8080", "n1", "M"]
        );
    }

    #[test]
    fn ssl_arguments_for_ovn_trace() {
        let ctl: Vec<String> = [
            "--private-key=/k",
            "--certificate=/c",
            "--bootstrap-ca-cert=/ca",
            "--db=ssl:1.2.3.4:6642",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            trace_db_args(&ctl),
            [
                "--private-key=/k",
                "--certificate=/c",
                "--ca-cert=/ca",
                "--db=ssl:1.2.3.4:6642"
            ]
        );
        assert_eq!(trace_db_args(&["--db=unix:/sb".into()]), ["--db=unix:/sb"]);
    }

    #[test]
    fn flow_lines_parse() {
        let cases = [
            (
                " 4. ls_out_acl (northd.c:6681): !ct.new && (outport == @a1 && ip4.src == $a2), priority 2001, uuid 5a7d5d1b",
                Some((
                    "ls_out_acl",
                    "!ct.new && (outport == @a1 && ip4.src == $a2)",
                    2001,
                )),
            ),
            (
                "        11. ls_in_acl_after_lb: (inport == @a3), priority 2000, uuid 0badc0de",
                Some(("ls_in_acl_after_lb", "(inport == @a3)", 2000)),
            ),
            ("    next;", None),
            ("ingress(dp=\"n1\", inport=\"x_a\")", None),
            ("12. drop;", None),
        ];
        for (line, want) in cases {
            let got = parse_hit(line);
            assert_eq!(
                got.as_ref()
                    .map(|h| (h.stage.as_str(), h.matches.as_str(), h.priority)),
                want,
                "{line}"
            );
        }
    }

    fn acl(uuid: &str, prio: i64, m: &str, action: &str, ids: &[(&str, &str)]) -> Acl {
        Acl {
            uuid: uuid.into(),
            direction: "to-lport".into(),
            priority: prio,
            matches: m.into(),
            action: action.into(),
            external_ids: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn acls() -> Vec<Acl> {
        vec![
            acl(
                "d0000000-1",
                1000,
                "outport == @deny",
                "drop",
                &[
                    ("k8s-netpol", "default-deny"),
                    ("namespace", "x"),
                    ("direction", "Ingress"),
                ],
            ),
            acl(
                "d0000000-2",
                1001,
                "outport == @deny && (arp || nd)",
                "allow",
                &[
                    ("k8s-netpol", "default-deny"),
                    ("namespace", "x"),
                    ("direction", "Ingress"),
                ],
            ),
            acl(
                "a0000000-1",
                1001,
                "outport == @pol && ip4.src == $peers",
                "allow-related",
                &[
                    ("k8s-netpol", "policy"),
                    ("namespace", "x"),
                    ("policy", "from-y"),
                    ("direction", "Ingress"),
                    ("rule", "0"),
                ],
            ),
        ]
    }

    const HEADER: &str = "# tcp,reg14=0x1,vlan_tci=0x0000\n\ningress(dp=\"n1\", inport=\"y_a\")\n";

    fn trace(lines: &[&str]) -> Traced {
        parse_trace(&format!("{HEADER}{}\n", lines.join("\n")))
    }

    #[test]
    fn verdicts_name_the_acl_and_its_policy() {
        let leg = Leg {
            datapath: "n1".into(),
            microflow: String::new(),
            lb_dst: None,
            expect: Some("x_a".into()),
            label: None,
        };
        let iso: Isolation = [(
            ("x_a".to_string(), "Ingress".to_string()),
            ["x/deny-ingress".to_string(), "x/from-y".to_string()].into(),
        )]
        .into();
        // Dropped by the namespace's default deny.
        let dropped = trace(&[
            " 4. ls_out_acl (northd.c:1): (outport == @deny), priority 2000, uuid 1",
            "    /* drop */",
        ]);
        let o = judge(&leg, &dropped, &acls(), &iso, "y_a");
        assert!(!o.delivered);
        let by = o.dropped_by.clone().unwrap();
        assert_eq!(by.uuid, "d0000000-1");
        assert_eq!(by.isolated_by, ["x/deny-ingress", "x/from-y"]);
        assert_eq!(
            outcome_text(&o),
            "dropped by default deny (Ingress) of namespace x, the pod being isolated by \
             NetworkPolicy x/deny-ingress, x/from-y"
        );
        // Delivered through a policy's allow.
        let allowed = trace(&[
            " 4. ls_out_acl (northd.c:1): ct.new && (outport == @pol && ip4.src == $peers), priority 2001, uuid 2",
            "    next;",
            " 9. ls_out_check_port_sec (northd.c:2): 1, priority 0, uuid 3",
            "    output;",
            "    /* output to \"x_a\", type \"\" */",
        ]);
        let o = judge(&leg, &allowed, &acls(), &iso, "y_a");
        assert!(o.delivered);
        assert_eq!(
            outcome_text(&o),
            "delivered to logical port x_a, allowed by NetworkPolicy x/from-y (Ingress rule 0)"
        );
        // Output elsewhere is not delivered; no ACL: the last flow is reported.
        let lost = trace(&[
            " 3. lr_in_ip_routing (northd.c:4): 1, priority 0, uuid 4",
            "    drop;",
        ]);
        let o = judge(&leg, &lost, &acls(), &iso, "y_a");
        assert!(!o.delivered && o.dropped_by.is_none());
        assert_eq!(o.last_flow.as_deref(), Some("lr_in_ip_routing: 1"));
    }

    #[test]
    fn the_longest_matching_acl_wins() {
        let h = Hit {
            stage: "ls_out_acl".into(),
            matches: "(outport == @deny && (arp || nd))".into(),
            priority: 2001,
        };
        assert_eq!(
            acl_of(&h, &acls()).map(|a| a.uuid.as_str()),
            Some("d0000000-2")
        );
        let not_acl = Hit {
            stage: "ls_out_lb".into(),
            ..h
        };
        assert_eq!(acl_of(&not_acl, &acls()), None);
    }

    #[test]
    fn reports_render() {
        let missing = Report::missing(
            "x/a",
            "y/web",
            Proto::Tcp,
            80,
            "service y/web has no VIP 172.16.1.10:80 on the cluster TCP load balancer".into(),
        );
        assert_eq!(missing.verdict, "missing");
        assert!(
            missing
                .text()
                .contains("cannot trace: service y/web has no VIP")
        );
        let ok = Outcome {
            path: Some("backend 10.1.1.1:8080 (y/b)".into()),
            delivered: true,
            output_to: vec!["y_b".into()],
            dropped_by: None,
            allowed_by: Vec::new(),
            last_flow: None,
            datapath: "n1".into(),
            microflow: "M".into(),
        };
        let bad = Outcome {
            path: Some("backend 10.1.1.2:8080 (y/c)".into()),
            delivered: false,
            output_to: Vec::new(),
            dropped_by: None,
            allowed_by: Vec::new(),
            last_flow: None,
            datapath: "n1".into(),
            microflow: "M".into(),
        };
        let vip = Some("172.16.1.10:80".parse().unwrap());
        let r = Report::from_paths("x/a", "y/web", Proto::Tcp, 80, vip, vec![ok.clone(), bad]);
        assert_eq!(r.verdict, "dropped");
        assert_eq!(
            r.text(),
            "x/a -> y/web tcp/80 via load-balancer VIP 172.16.1.10:80: dropped\n  \
             backend 10.1.1.1:8080 (y/b): delivered to logical port y_b\n  \
             backend 10.1.1.2:8080 (y/c): dropped before any logical flow matched; whole path: \
             ovn-trace n1 'M'\n"
        );
        let r = Report::from_paths("x/a", "y/web", Proto::Tcp, 80, vip, vec![ok]);
        assert!(r.delivered());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["verdict"], "delivered");
        assert_eq!(j["paths"][0]["output_to"][0], "y_b");
        assert!(
            Report::from_paths("x/a", "y/web", Proto::Tcp, 80, vip, vec![]).verdict == "dropped"
        );
    }
}
