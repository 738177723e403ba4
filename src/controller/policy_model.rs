//! NetworkPolicy objects turned into a validated, typed model: label selectors, peers, ports.
//! Pure; every user string that could reach an OVN match is parsed here into numbers,
//! networks or enums, so the plan never formats a raw label value or name into a match.
//!
//! Bad input is reported per rule and fails closed: a rule that cannot be understood allows
//! nothing (dropping only the bad port or peer could widen the rule to "all ports/peers"),
//! while the policy still isolates the pods it selects. A policy whose own `podSelector` cannot
//! be understood selects every pod of its namespace and allows nothing.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::ovn::Proto;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SelOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: SelOp,
    pub values: BTreeSet<String>,
}

/// A parsed `LabelSelector`: `matchLabels` and `matchExpressions`, all ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub labels: Labels,
    pub reqs: Vec<Requirement>,
}

impl Selector {
    /// The empty selector: matches everything.
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn parse(s: &LabelSelector) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for r in s.match_expressions.iter().flatten() {
            let op = match r.operator.as_str() {
                "In" => SelOp::In,
                "NotIn" => SelOp::NotIn,
                "Exists" => SelOp::Exists,
                "DoesNotExist" => SelOp::DoesNotExist,
                other => {
                    return Err(format!(
                        "label selector on key {:?} has the invalid operator {other:?} \
                         (valid: In, NotIn, Exists, DoesNotExist)",
                        r.key
                    ));
                }
            };
            let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
            match op {
                SelOp::In | SelOp::NotIn if values.is_empty() => {
                    return Err(format!(
                        "label selector on key {:?} with operator {:?} needs at least one value",
                        r.key, r.operator
                    ));
                }
                SelOp::Exists | SelOp::DoesNotExist if !values.is_empty() => {
                    return Err(format!(
                        "label selector on key {:?} with operator {:?} must not have values",
                        r.key, r.operator
                    ));
                }
                _ => {}
            }
            reqs.push(Requirement {
                key: r.key.clone(),
                op,
                values,
            });
        }
        Ok(Selector {
            labels: s.match_labels.clone().unwrap_or_default(),
            reqs,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.reqs.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.op {
                    SelOp::In => have.is_some_and(|v| r.values.contains(v)),
                    SelOp::NotIn => have.is_none_or(|v| !r.values.contains(v)),
                    SelOp::Exists => have.is_some(),
                    SelOp::DoesNotExist => have.is_none(),
                }
            })
    }
}

/// One `ports` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol (`port` omitted).
    Any(Proto),
    /// `port` (and `endPort`): `from..=to`.
    Range { proto: Proto, from: u16, to: u16 },
    /// A named port, resolved per destination pod from its container ports.
    Named { proto: Proto, name: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`; both present = both must match (AND).
    /// `ns: None` = the policy's own namespace.
    Pods {
        ns: Option<Selector>,
        pods: Option<Selector>,
    },
    /// `ipBlock`: the CIDR minus the `except` networks.
    Block { cidr: Ipv4Net, except: Vec<Ipv4Net> },
}

/// One ingress or egress rule. `None` means "all" (field omitted or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortMatch>>,
}

/// A rule that was understood, or why not (it then allows nothing).
pub type RuleSlot = Result<Rule, String>;

/// A policy as the plan uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub ns: String,
    pub name: String,
    pub selector: Selector,
    /// `Some` when the policy isolates ingress (policyTypes), with its rules.
    pub ingress: Option<Vec<RuleSlot>>,
    pub egress: Option<Vec<RuleSlot>>,
    /// Everything wrong with the policy, for the log and the Event.
    pub problems: Vec<String>,
}

impl Compiled {
    pub fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

/// A valid IANA service name as Kubernetes requires for named ports.
fn valid_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn port_num(v: i32, what: &str) -> Result<u16, String> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("{what} {v} is not a port number (1-65535)"))
}

pub fn parse_port(p: &NetworkPolicyPort) -> Result<PortMatch, String> {
    let proto = match p.protocol.as_deref() {
        None => Proto::Tcp,
        Some(s) => Proto::parse_any_case(s)
            .ok_or_else(|| format!("protocol {s:?} is not supported (valid: TCP, UDP, SCTP)"))?,
    };
    match &p.port {
        None => {
            if let Some(e) = p.end_port {
                return Err(format!("endPort {e} is set without a port"));
            }
            Ok(PortMatch::Any(proto))
        }
        Some(IntOrString::Int(n)) => {
            let from = port_num(*n, "port")?;
            let to = match p.end_port {
                None => from,
                Some(e) => {
                    let to = port_num(e, "endPort")?;
                    if to < from {
                        return Err(format!("endPort {e} is lower than port {n}"));
                    }
                    to
                }
            };
            Ok(PortMatch::Range { proto, from, to })
        }
        Some(IntOrString::String(s)) => {
            if let Some(e) = p.end_port {
                return Err(format!("endPort {e} is set with the named port {s:?}"));
            }
            if !valid_port_name(s) {
                return Err(format!(
                    "port {s:?} is neither a number nor a valid port name"
                ));
            }
            Ok(PortMatch::Named {
                proto,
                name: s.clone(),
            })
        }
    }
}

fn parse_v4_net(s: &str, what: &str) -> Result<Option<Ipv4Net>, String> {
    match s.trim().parse::<IpNet>() {
        Ok(IpNet::V4(n)) => Ok(Some(n.trunc())),
        // An IPv6 block cannot match anything in an IPv4 cluster; not an error.
        Ok(IpNet::V6(_)) => Ok(None),
        Err(_) => Err(format!("{what} {s:?} is not a valid CIDR")),
    }
}

/// Parse one peer; `Ok(None)` for a peer that can match nothing here (an IPv6 block).
pub fn parse_peer(p: &NetworkPolicyPeer) -> Result<Option<Peer>, String> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err("a peer sets ipBlock together with a selector".into());
        }
        let Some(cidr) = parse_v4_net(&b.cidr, "ipBlock cidr")? else {
            return Ok(None);
        };
        let mut except = Vec::new();
        for e in b.except.iter().flatten() {
            // An IPv6 except inside an IPv4 block cannot exist; reject it like the API does.
            let Some(n) = parse_v4_net(e, "ipBlock except")? else {
                return Err(format!(
                    "ipBlock except {e:?} is not inside cidr {}",
                    b.cidr
                ));
            };
            if !cidr.contains(&n) {
                return Err(format!(
                    "ipBlock except {e:?} is not inside cidr {}",
                    b.cidr
                ));
            }
            except.push(n);
        }
        except.sort();
        except.dedup();
        return Ok(Some(Peer::Block { cidr, except }));
    }
    let ns = p
        .namespace_selector
        .as_ref()
        .map(Selector::parse)
        .transpose()
        .map_err(|e| format!("namespaceSelector: {e}"))?;
    let pods = p
        .pod_selector
        .as_ref()
        .map(Selector::parse)
        .transpose()
        .map_err(|e| format!("podSelector: {e}"))?;
    if ns.is_none() && pods.is_none() {
        return Err("a peer sets none of podSelector, namespaceSelector, ipBlock".into());
    }
    Ok(Some(Peer::Pods { ns, pods }))
}

fn parse_rule(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
) -> RuleSlot {
    let peers = match peers {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => {
            let mut out = Vec::new();
            for (j, p) in v.iter().enumerate() {
                out.extend(parse_peer(p).map_err(|e| format!("peer {j}: {e}"))?);
            }
            // All peers unmatchable stays Some(empty): nothing, never "all".
            Some(out)
        }
    };
    let ports = match ports {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(
            v.iter()
                .enumerate()
                .map(|(j, p)| parse_port(p).map_err(|e| format!("port {j}: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Rule { peers, ports })
}

/// Turn a NetworkPolicy into the model; never fails (problems are recorded, fail closed).
pub fn compile(np: &NetworkPolicy) -> Compiled {
    let ns = np.namespace().unwrap_or_else(|| "default".to_string());
    let name = np.name_any();
    let mut problems = Vec::new();
    let spec = np.spec.clone().unwrap_or_default();

    let (mut ingress_on, mut egress_on) = (false, false);
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            for t in types {
                match t.as_str() {
                    "Ingress" => ingress_on = true,
                    "Egress" => egress_on = true,
                    other => problems.push(format!(
                        "policyTypes entry {other:?} is not Ingress or Egress; ignored"
                    )),
                }
            }
        }
        // The API default: Ingress, plus Egress when there are egress rules.
        _ => {
            ingress_on = true;
            egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
    }

    let mut ingress: Vec<RuleSlot> = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| parse_rule(r.from.as_ref(), r.ports.as_ref()))
        .collect();
    let mut egress: Vec<RuleSlot> = spec
        .egress
        .iter()
        .flatten()
        .map(|r| parse_rule(r.to.as_ref(), r.ports.as_ref()))
        .collect();

    let selector = match spec.pod_selector.as_ref().map(Selector::parse) {
        None => Selector::everything(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            problems.push(format!(
                "podSelector: {e}; failing closed: the policy isolates every pod of namespace \
                 {ns} and allows nothing"
            ));
            let why = || Err("the policy's podSelector is invalid".to_string());
            ingress.iter_mut().for_each(|r| *r = why());
            egress.iter_mut().for_each(|r| *r = why());
            Selector::everything()
        }
    };
    for (dir, rules) in [("ingress", &ingress), ("egress", &egress)] {
        for (i, r) in rules.iter().enumerate() {
            if let Err(e) = r
                && e != "the policy's podSelector is invalid"
            {
                problems.push(format!(
                    "{dir} rule {i}: {e}; the rule allows nothing (fail closed)"
                ));
            }
        }
    }
    Compiled {
        ns,
        name,
        selector,
        ingress: ingress_on.then_some(ingress),
        egress: egress_on.then_some(egress),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{
        IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicySpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::api::ObjectMeta;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selector_semantics() {
        let s = Selector::parse(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["a", "b"]),
                expr("env", "NotIn", &["prod"]),
                expr("team", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        })
        .unwrap();
        let ok = labels(&[("app", "web"), ("tier", "a"), ("team", "x")]);
        assert!(s.matches(&ok));
        let mut l = ok.clone();
        l.insert("env".into(), "prod".into());
        assert!(!s.matches(&l));
        l.insert("env".into(), "dev".into());
        assert!(s.matches(&l));
        let mut l = ok.clone();
        l.insert("legacy".into(), "".into());
        assert!(!s.matches(&l));
        let mut l = ok.clone();
        l.remove("team");
        assert!(!s.matches(&l));
        let mut l = ok;
        l.insert("tier".into(), "c".into());
        assert!(!s.matches(&l));
        assert!(Selector::everything().matches(&Labels::new()));
    }

    #[test]
    fn selector_errors_name_the_problem() {
        let e = Selector::parse(&LabelSelector {
            match_expressions: Some(vec![expr("k", "Equals", &["v"])]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("invalid operator \"Equals\""), "{e}");
        assert!(
            Selector::parse(&LabelSelector {
                match_expressions: Some(vec![expr("k", "In", &[])]),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Selector::parse(&LabelSelector {
                match_expressions: Some(vec![expr("k", "Exists", &["v"])]),
                ..Default::default()
            })
            .is_err()
        );
    }

    fn port(proto: Option<&str>, p: Option<IntOrString>, end: Option<i32>) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: proto.map(String::from),
            port: p,
            end_port: end,
        }
    }

    #[test]
    fn ports() {
        use IntOrString::*;
        assert_eq!(
            parse_port(&port(None, Some(Int(80)), None)),
            Ok(PortMatch::Range {
                proto: Proto::Tcp,
                from: 80,
                to: 80
            })
        );
        assert_eq!(
            parse_port(&port(Some("UDP"), None, None)),
            Ok(PortMatch::Any(Proto::Udp))
        );
        assert_eq!(
            parse_port(&port(Some("SCTP"), Some(Int(1000)), Some(2000))),
            Ok(PortMatch::Range {
                proto: Proto::Sctp,
                from: 1000,
                to: 2000
            })
        );
        assert_eq!(
            parse_port(&port(None, Some(String("http".into())), None)),
            Ok(PortMatch::Named {
                proto: Proto::Tcp,
                name: "http".into()
            })
        );
        for (bad, why) in [
            (port(Some("ICMP"), Some(Int(80)), None), "protocol \"ICMP\""),
            (port(None, Some(Int(0)), None), "not a port number"),
            (port(None, Some(Int(70000)), None), "not a port number"),
            (port(None, Some(Int(90)), Some(80)), "lower than port"),
            (port(None, None, Some(80)), "without a port"),
            (
                port(None, Some(String("a\"b".into())), None),
                "valid port name",
            ),
            (
                port(None, Some(String("http".into())), Some(9)),
                "named port",
            ),
        ] {
            let e = parse_port(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    fn block(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.into(),
                except: Some(except.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn peers() {
        assert_eq!(
            parse_peer(&block("10.0.0.0/8", &["10.1.0.0/16"])),
            Ok(Some(Peer::Block {
                cidr: "10.0.0.0/8".parse().unwrap(),
                except: vec!["10.1.0.0/16".parse().unwrap()]
            }))
        );
        assert_eq!(parse_peer(&block("fd00::/64", &[])), Ok(None));
        assert!(parse_peer(&block("10.0.0.0/33", &[])).is_err());
        assert!(parse_peer(&block("banana", &[])).is_err());
        assert!(parse_peer(&block("10.0.0.0/8", &["11.0.0.0/16"])).is_err());
        assert!(parse_peer(&NetworkPolicyPeer::default()).is_err());
    }

    fn policy(spec: NetworkPolicySpec) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("x".into()),
                ..Default::default()
            },
            spec: Some(spec),
        }
    }

    #[test]
    fn policy_types_default_and_bad_rules_fail_closed() {
        let c = compile(&policy(NetworkPolicySpec::default()));
        assert_eq!(c.ingress, Some(vec![]));
        assert_eq!(c.egress, None);
        assert!(c.problems.is_empty());

        let c = compile(&policy(NetworkPolicySpec {
            egress: Some(vec![NetworkPolicyEgressRule::default()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![block("300.0.0.0/8", &[])]),
                    ..Default::default()
                },
                NetworkPolicyIngressRule::default(),
            ]),
            ..Default::default()
        }));
        let ing = c.ingress.as_ref().unwrap();
        assert!(ing[0].is_err());
        assert_eq!(
            ing[1],
            Ok(Rule {
                peers: None,
                ports: None
            })
        );
        assert_eq!(c.egress.as_ref().map(Vec::len), Some(1));
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0].contains("ingress rule 0: peer 0: ipBlock cidr \"300.0.0.0/8\""));

        // An invalid podSelector: every pod of the namespace, nothing allowed.
        let c = compile(&policy(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_expressions: Some(vec![expr("a", "Like", &["b"])]),
                ..Default::default()
            }),
            ingress: Some(vec![NetworkPolicyIngressRule::default()]),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ..Default::default()
        }));
        assert_eq!(c.selector, Selector::everything());
        assert!(c.ingress.as_ref().unwrap()[0].is_err());
        assert_eq!(c.egress, Some(vec![]));
        assert!(c.problems[0].contains("failing closed"), "{:?}", c.problems);
    }
}
