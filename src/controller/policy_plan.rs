//! Pure decisions of the policy controller: from namespaces, plugged pods and compiled
//! policies to the NB objects that enforce them, grouped in "units" (one policy, the default
//! deny groups of one namespace, the node management addresses), and the NB commands that
//! turn what NB holds into that. No I/O; unit-tested.
//!
//! Objects (names are `names::hash_name` of a readable key, so they are valid OVN identifiers
//! and never start with a digit; `external_ids` carry the readable key):
//! - per policy a port group `hash("<ns>_<policy>")` with the pods the policy selects, and its
//!   allow ACLs (one per rule, plus one per resolved named-port number);
//! - per rule with pod peers an address set `hash("<ns>.<policy>.<ingress|egress>.<i>")` of
//!   the peers' IPs (named ports add `...<i>.<proto>.<port>` sets of the pods resolving it);
//! - per namespace `hash("<ns>_ingressDefaultDeny")` / `..._egressDefaultDeny` holding the pods
//!   isolated in that direction, with the drop ACL and the ARP/ND (and node) allows;
//! - one address set `hash("cluster.node-mgmt")` with every node's management IP.
//!
//! ACLs: ingress `to-lport` (`outport == @pg`); egress `from-lport` with
//! `options:apply-after-lb=true` (`inport == @pg`) so it judges the load-balanced backend, not
//! the service VIP. Default deny 1000; every allow 1001. ipBlock `except` is inline in the
//! rule's own match (`ip4.src == CIDR && ip4.src != {EXCEPT..}`), so it never overrides what
//! other rules or policies allow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::policy_model::{Compiled, Labels, Peer, PortMatch, Rule};
use crate::ovn::names::hash_name;
use crate::ovn::schema::{col, nb};
use crate::ovn::{ColVal, DbOp, NbOp, Proto, Query, Row, Val};

pub const PRIO_DENY: i64 = 1000;
pub const PRIO_ALLOW: i64 = 1001;

/// `external_ids` key marking every object this controller owns, and its values.
pub const EXT_OWNER: &str = "k8s-netpol";
pub const OWNER_POLICY: &str = "policy";
pub const OWNER_DENY: &str = "default-deny";
pub const OWNER_MGMT: &str = "node-mgmt";
pub const EXT_NAMESPACE: &str = "namespace";
pub const EXT_POLICY: &str = "policy";
pub const EXT_DIRECTION: &str = "direction";
pub const EXT_NAME: &str = "name";
pub const EXT_RULE: &str = "rule";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub fn word(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Dir::Ingress => "Ingress",
            Dir::Egress => "Egress",
        }
    }
    /// The match on the isolated pods' ports.
    fn port_side(self, pg: &str) -> String {
        match self {
            Dir::Ingress => format!("outport == @{pg}"),
            Dir::Egress => format!("inport == @{pg}"),
        }
    }
    /// The peer side's address field.
    fn peer_field(self) -> &'static str {
        match self {
            Dir::Ingress => "ip4.src",
            Dir::Egress => "ip4.dst",
        }
    }
}

pub fn policy_pg(ns: &str, policy: &str) -> String {
    hash_name(&format!("{ns}_{policy}"))
}

pub fn deny_pg(ns: &str, dir: Dir) -> String {
    hash_name(&format!("{ns}_{}DefaultDeny", dir.word()))
}

pub const MGMT_AS_KEY: &str = "cluster.node-mgmt";

pub fn mgmt_as() -> String {
    hash_name(MGMT_AS_KEY)
}

/// A pod the policies can see: it has a logical port (reported by the pod controller or found
/// in NB) and an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub ns: String,
    pub name: String,
    pub labels: Labels,
    /// Container ports: (name, protocol, number).
    pub named: Vec<(String, Proto, u16)>,
    pub port: String,
    pub ip: Ipv4Addr,
}

impl PodView {
    fn resolve(&self, proto: Proto, name: &str) -> Option<u16> {
        self.named
            .iter()
            .find(|(n, p, _)| n == name && *p == proto)
            .map(|(_, _, num)| *num)
    }
}

/// What the plan reads: namespaces with their labels and the plugged pods by namespace.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: BTreeMap<String, BTreeMap<String, PodView>>,
}

impl World {
    fn pods_in<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods.get(ns).into_iter().flat_map(|m| m.values())
    }

    fn all_pods(&self) -> impl Iterator<Item = &PodView> {
        self.pods.values().flat_map(|m| m.values())
    }

    /// Pods of `c`'s namespace its podSelector selects.
    pub fn selected<'a>(&'a self, c: &'a Compiled) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods_in(&c.ns)
            .filter(move |p| c.selector.matches(&p.labels))
    }

    /// Pods a pod peer of a policy in `ns` matches.
    fn peer_pods(&self, ns: &str, peer: &Peer) -> Vec<&PodView> {
        let Peer::Pods {
            ns: ns_sel,
            pods: pod_sel,
        } = peer
        else {
            return Vec::new();
        };
        let pod_ok = |p: &&PodView| pod_sel.as_ref().is_none_or(|s| s.matches(&p.labels));
        match ns_sel {
            None => self.pods_in(ns).filter(pod_ok).collect(),
            Some(sel) => self
                .namespaces
                .iter()
                .filter(|(_, l)| sel.matches(l))
                .flat_map(|(n, _)| self.pods_in(n))
                .filter(pod_ok)
                .collect(),
        }
    }

    /// Whether a change to the pods of namespace `ns` (labels `ns_labels`) can change `c`.
    pub fn touches(c: &Compiled, ns: &str, ns_labels: Option<&Labels>) -> bool {
        if c.ns == ns {
            return true;
        }
        let rules = c.ingress.iter().chain(c.egress.iter()).flatten();
        rules.flatten().any(|r| match &r.peers {
            // "All peers" with a named port resolves against every pod of the cluster.
            None => r
                .ports
                .iter()
                .flatten()
                .any(|p| matches!(p, PortMatch::Named { .. })),
            Some(peers) => peers.iter().any(|p| match p {
                Peer::Pods { ns: Some(sel), .. } => ns_labels.is_none_or(|l| sel.matches(l)),
                _ => false,
            }),
        })
    }
}

/// One ACL as the plan wants it; the identity used for diffs is every column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclSpec {
    pub direction: String,
    pub priority: i64,
    pub matches: String,
    pub action: String,
    pub after_lb: bool,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgSpec {
    pub external_ids: BTreeMap<String, String>,
    pub ports: BTreeSet<String>,
    pub acls: BTreeSet<AclSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsSpec {
    pub external_ids: BTreeMap<String, String>,
    pub addresses: BTreeSet<String>,
}

/// The NB objects of one unit, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    pub pgs: BTreeMap<String, PgSpec>,
    pub sets: BTreeMap<String, AsSpec>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.pgs.is_empty() && self.sets.is_empty()
    }
    pub fn acl_count(&self) -> usize {
        self.pgs.values().map(|p| p.acls.len()).sum()
    }
}

/// What owns a group of objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    /// `<ns>/<name>`
    Policy(String, String),
    /// The default-deny groups of a namespace.
    Deny(String),
    Mgmt,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Policy(ns, n) => write!(f, "policy {ns}/{n}"),
            Unit::Deny(ns) => write!(f, "default deny of namespace {ns}"),
            Unit::Mgmt => write!(f, "node management addresses"),
        }
    }
}

fn ids(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one_or_any(mut parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        format!("({})", parts.join(" || "))
    }
}

fn port_clause(p: &PortMatch) -> Option<String> {
    match p {
        PortMatch::Any(proto) => Some(proto.lower().to_string()),
        PortMatch::Range { proto, from, to } if from == to => {
            Some(format!("{}.dst == {from}", proto.lower()))
        }
        PortMatch::Range { proto, from, to } => Some(format!(
            "({0}.dst >= {from} && {0}.dst <= {to})",
            proto.lower()
        )),
        PortMatch::Named { .. } => None,
    }
}

fn block_clause(field: &str, cidr: &ipnet::Ipv4Net, except: &[ipnet::Ipv4Net]) -> String {
    if except.is_empty() {
        return format!("{field} == {cidr}");
    }
    let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
    format!("({field} == {cidr} && {field} != {{{}}})", ex.join(", "))
}

/// The objects of one policy.
pub fn policy_objects(c: &Compiled, w: &World) -> Objects {
    let pg = policy_pg(&c.ns, &c.name);
    let mut out = Objects::default();
    let selected: Vec<&PodView> = w.selected(c).collect();
    let mut acls = BTreeSet::new();
    for (dir, rules) in [(Dir::Ingress, &c.ingress), (Dir::Egress, &c.egress)] {
        for (i, rule) in rules.iter().flatten().enumerate() {
            // A rule that was not understood allows nothing (reported at compile time).
            let Ok(rule) = rule else { continue };
            let at = RuleAt { dir, i, rule };
            rule_objects(c, w, &pg, at, &selected, &mut acls, &mut out);
        }
    }
    out.pgs.insert(
        pg,
        PgSpec {
            external_ids: ids(&[
                (EXT_OWNER, OWNER_POLICY),
                (EXT_NAMESPACE, &c.ns),
                (EXT_POLICY, &c.name),
            ]),
            ports: selected.iter().map(|p| p.port.clone()).collect(),
            acls,
        },
    );
    out
}

/// One rule of a policy: its direction, its index among that direction's rules, and itself.
struct RuleAt<'a> {
    dir: Dir,
    i: usize,
    rule: &'a Rule,
}

/// The address sets and ACLs of one rule: one ACL for its numeric ports (or for no ports at
/// all), and one address set and ACL per named-port number.
fn rule_objects(
    c: &Compiled,
    w: &World,
    pg: &str,
    at: RuleAt<'_>,
    selected: &[&PodView],
    acls: &mut BTreeSet<AclSpec>,
    out: &mut Objects,
) {
    let RuleAt { dir, i, rule } = at;
    let key = format!("{}.{}.{}.{i}", c.ns, c.name, dir.word());
    let mut peer_pods: BTreeMap<String, &PodView> = BTreeMap::new();
    let peers_clause = match &rule.peers {
        None => None,
        Some(peers) => {
            let set_name = hash_name(&key);
            let parts = peer_parts(&c.ns, w, dir.peer_field(), peers, &mut peer_pods, &set_name);
            if peers.iter().any(|p| matches!(p, Peer::Pods { .. })) {
                out.sets.insert(
                    set_name,
                    AsSpec {
                        external_ids: rule_set_ids(c, &key),
                        addresses: peer_pods.values().map(|p| p.ip.to_string()).collect(),
                    },
                );
            }
            // Only peers that can match nothing: the rule allows nothing.
            if parts.is_empty() {
                return;
            }
            Some(one_or_any(parts))
        }
    };
    let r = RuleAcl {
        c,
        dir,
        pg,
        rule: i.to_string(),
        peers_clause,
    };
    let ports = rule.ports.as_deref();
    if let Some(extra) = numeric_ports_clause(ports) {
        acls.insert(r.acl(extra));
    }

    // Named ports, resolved on the destination pods: the selected pods for ingress, the peer
    // pods (or every pod, for "all peers") for egress. One address set and ACL per number.
    let named = named_ports(ports);
    if named.is_empty() {
        return;
    }
    let dests: Vec<&PodView> = match dir {
        Dir::Ingress => selected.to_vec(),
        Dir::Egress if rule.peers.is_none() => w.all_pods().collect(),
        Dir::Egress => peer_pods.values().copied().collect(),
    };
    for ((proto, num), ips) in named_port_groups(&dests, &named) {
        let k = format!("{key}.{}.{num}", proto.lower());
        let name = hash_name(&k);
        out.sets.insert(
            name.clone(),
            AsSpec {
                external_ids: rule_set_ids(c, &k),
                addresses: ips,
            },
        );
        acls.insert(r.acl(vec![
            format!("ip4.dst == ${name}"),
            format!("{}.dst == {num}", proto.lower()),
        ]));
    }
}

/// The `external_ids` of an address set a rule owns, named `k`.
fn rule_set_ids(c: &Compiled, k: &str) -> BTreeMap<String, String> {
    ids(&[
        (EXT_OWNER, OWNER_POLICY),
        (EXT_NAMESPACE, &c.ns),
        (EXT_POLICY, &c.name),
        (EXT_NAME, k),
    ])
}

/// What every ACL of one rule shares.
struct RuleAcl<'a> {
    c: &'a Compiled,
    dir: Dir,
    pg: &'a str,
    /// The rule's index among its direction's rules.
    rule: String,
    /// The peers as one match clause; `None` = anyone.
    peers_clause: Option<String>,
}

impl RuleAcl<'_> {
    /// An allow ACL of the rule: the port side, the peers, then `extra`, all required.
    fn acl(&self, extra: Vec<String>) -> AclSpec {
        let mut m = vec![self.dir.port_side(self.pg)];
        m.extend(self.peers_clause.clone());
        m.extend(extra);
        AclSpec {
            direction: match self.dir {
                Dir::Ingress => "to-lport".into(),
                Dir::Egress => "from-lport".into(),
            },
            priority: PRIO_ALLOW,
            matches: m.join(" && "),
            action: "allow-related".into(),
            after_lb: self.dir == Dir::Egress,
            external_ids: ids(&[
                (EXT_OWNER, OWNER_POLICY),
                (EXT_NAMESPACE, &self.c.ns),
                (EXT_POLICY, &self.c.name),
                (EXT_DIRECTION, self.dir.title()),
                (EXT_RULE, &self.rule),
            ]),
        }
    }
}

/// The extra clauses of the rule's one numeric-port ACL: none when the rule has no ports (every
/// port), one OR of the numeric ports when it has some, and no ACL (`None`) when it has only
/// named ports.
fn numeric_ports_clause(ports: Option<&[PortMatch]>) -> Option<Vec<String>> {
    let Some(ports) = ports else {
        return Some(Vec::new());
    };
    let plain: Vec<String> = ports.iter().filter_map(port_clause).collect();
    if plain.is_empty() {
        return None;
    }
    Some(vec![one_or_any(plain)])
}

/// The rule's named ports, as (protocol, name).
fn named_ports(ports: Option<&[PortMatch]>) -> Vec<(Proto, &str)> {
    ports
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            PortMatch::Named { proto, name } => Some((*proto, name.as_str())),
            _ => None,
        })
        .collect()
}

/// The match clauses of a rule's peers (`field == $set` for the pod peers, one per ipBlock),
/// collecting the pod peers into `peer_pods`. The pod-peer clause names the rule's address set
/// (see `rule_objects`), present only when a peer selects pods.
fn peer_parts<'w>(
    ns: &str,
    w: &'w World,
    field: &str,
    peers: &[Peer],
    peer_pods: &mut BTreeMap<String, &'w PodView>,
    set_name: &str,
) -> Vec<String> {
    let mut parts = Vec::new();
    if peers.iter().any(|p| matches!(p, Peer::Pods { .. })) {
        for p in peers {
            for pod in w.peer_pods(ns, p) {
                peer_pods.insert(pod.port.clone(), pod);
            }
        }
        parts.push(format!("{field} == ${set_name}"));
    }
    for p in peers {
        if let Peer::Block { cidr, except } = p {
            parts.push(block_clause(field, cidr, except));
        }
    }
    parts
}

/// The addresses of `dests` per (protocol, number) their named ports resolve to.
fn named_port_groups(
    dests: &[&PodView],
    named: &[(Proto, &str)],
) -> BTreeMap<(Proto, u16), BTreeSet<String>> {
    let mut groups: BTreeMap<(Proto, u16), BTreeSet<String>> = BTreeMap::new();
    for pod in dests {
        for (proto, name) in named {
            if let Some(num) = pod.resolve(*proto, name) {
                groups
                    .entry((*proto, num))
                    .or_default()
                    .insert(pod.ip.to_string());
            }
        }
    }
    groups
}

/// The default-deny groups of namespace `ns`, from the policies of that namespace.
pub fn deny_objects<'a>(
    ns: &str,
    policies: impl IntoIterator<Item = &'a Compiled>,
    w: &World,
) -> Objects {
    let mut members: BTreeMap<Dir, BTreeSet<String>> = BTreeMap::new();
    for c in policies.into_iter().filter(|c| c.ns == ns) {
        for (dir, on) in [
            (Dir::Ingress, c.ingress.is_some()),
            (Dir::Egress, c.egress.is_some()),
        ] {
            if on {
                members
                    .entry(dir)
                    .or_default()
                    .extend(w.selected(c).map(|p| p.port.clone()));
            }
        }
    }
    let mut out = Objects::default();
    for (dir, ports) in members {
        let pg = deny_pg(ns, dir);
        let side = dir.port_side(&pg);
        let acl = |prio: i64, matches: String, action: &str| AclSpec {
            direction: match dir {
                Dir::Ingress => "to-lport".into(),
                Dir::Egress => "from-lport".into(),
            },
            priority: prio,
            matches,
            action: action.into(),
            after_lb: dir == Dir::Egress,
            external_ids: ids(&[
                (EXT_OWNER, OWNER_DENY),
                (EXT_NAMESPACE, ns),
                (EXT_DIRECTION, dir.title()),
            ]),
        };
        let mut acls = BTreeSet::from([
            acl(PRIO_DENY, side.clone(), "drop"),
            // Address resolution keeps working for isolated pods.
            acl(PRIO_ALLOW, format!("{side} && (arp || nd)"), "allow"),
        ]);
        if dir == Dir::Ingress {
            // Kubelet probes come from the node's management port.
            acls.insert(acl(
                PRIO_ALLOW,
                format!("{side} && ip4.src == ${}", mgmt_as()),
                "allow-related",
            ));
        }
        out.pgs.insert(
            pg,
            PgSpec {
                external_ids: ids(&[
                    (EXT_OWNER, OWNER_DENY),
                    (EXT_NAMESPACE, ns),
                    (EXT_DIRECTION, dir.title()),
                ]),
                ports,
                acls,
            },
        );
    }
    out
}

/// The address set of every node's management IP (empty sets are kept: deny ACLs refer to it).
pub fn mgmt_objects(ips: impl IntoIterator<Item = Ipv4Addr>) -> Objects {
    let mut out = Objects::default();
    out.sets.insert(
        mgmt_as(),
        AsSpec {
            external_ids: ids(&[(EXT_OWNER, OWNER_MGMT), (EXT_NAME, MGMT_AS_KEY)]),
            addresses: ips.into_iter().map(|ip| ip.to_string()).collect(),
        },
    );
    out
}

/// Queries for everything the controller may own (filtered by `external_ids` on reading).
pub fn nb_queries() -> Vec<Query> {
    vec![
        Query::list(
            nb::PORT_GROUP,
            &[col::NAME, col::PORTS, col::ACLS, col::EXTERNAL_IDS],
        ),
        Query::list(
            nb::ADDRESS_SET,
            &[col::NAME, col::ADDRESSES, col::EXTERNAL_IDS],
        ),
        Query::list(
            nb::ACL,
            &[
                col::DIRECTION,
                col::PRIORITY,
                col::MATCH,
                col::ACTION,
                col::OPTIONS,
                col::EXTERNAL_IDS,
            ],
        ),
        Query::list(nb::LOGICAL_SWITCH_PORT, &[col::NAME]),
    ]
}

/// What NB holds, grouped by unit, from [`nb_queries`] results. Port group members are
/// port UUIDs in the DB; `port_names` maps them back to names.
pub fn parse_nb(pgs: &[Row], sets: &[Row], acls: &[Row], lsps: &[Row]) -> BTreeMap<Unit, Objects> {
    let port_names: BTreeMap<&str, String> = lsps
        .iter()
        .map(|r| (r.uuid.as_str(), r.str(col::NAME)))
        .collect();
    let acl_by_uuid: BTreeMap<&str, AclSpec> = acls
        .iter()
        .map(|r| {
            (
                r.uuid.as_str(),
                AclSpec {
                    direction: r.str(col::DIRECTION),
                    priority: r.get(col::PRIORITY).and_then(|d| d.as_int()).unwrap_or(-1),
                    matches: r.str(col::MATCH),
                    action: r.str(col::ACTION),
                    after_lb: r.map_get(col::OPTIONS, "apply-after-lb").as_deref() == Some("true"),
                    external_ids: r.map(col::EXTERNAL_IDS),
                },
            )
        })
        .collect();
    let mut out: BTreeMap<Unit, Objects> = BTreeMap::new();
    for r in pgs {
        let ext = r.map(col::EXTERNAL_IDS);
        let Some(unit) = unit_of(&ext) else { continue };
        let spec = PgSpec {
            ports: r
                .set(col::PORTS)
                .iter()
                .map(|u| {
                    port_names
                        .get(u.as_str())
                        .cloned()
                        .unwrap_or_else(|| u.clone())
                })
                .collect(),
            acls: r
                .set(col::ACLS)
                .iter()
                .filter_map(|u| acl_by_uuid.get(u.as_str()).cloned())
                .collect(),
            external_ids: ext,
        };
        out.entry(unit)
            .or_default()
            .pgs
            .insert(r.str(col::NAME), spec);
    }
    for r in sets {
        let ext = r.map(col::EXTERNAL_IDS);
        let Some(unit) = unit_of(&ext) else { continue };
        let spec = AsSpec {
            addresses: r.set(col::ADDRESSES).into_iter().collect(),
            external_ids: ext,
        };
        out.entry(unit)
            .or_default()
            .sets
            .insert(r.str(col::NAME), spec);
    }
    out
}

fn unit_of(ext: &BTreeMap<String, String>) -> Option<Unit> {
    let get = |k: &str| ext.get(k).cloned().unwrap_or_default();
    match ext.get(EXT_OWNER)?.as_str() {
        OWNER_POLICY => Some(Unit::Policy(get(EXT_NAMESPACE), get(EXT_POLICY))),
        OWNER_DENY => Some(Unit::Deny(get(EXT_NAMESPACE))),
        OWNER_MGMT => Some(Unit::Mgmt),
        _ => None,
    }
}

/// Allocates `--id=@...` symbols unique within one transaction.
#[derive(Default)]
pub struct Ids(usize);

impl Ids {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("acl{}", self.0)
    }
}

fn acl_create(a: &AclSpec, id: &str) -> NbOp {
    let mut columns = vec![
        ColVal::set(col::DIRECTION, a.direction.as_str()),
        ColVal::set(col::PRIORITY, a.priority),
        ColVal::set(col::MATCH, a.matches.as_str()),
        ColVal::set(col::ACTION, a.action.as_str()),
        ColVal::set(col::EXTERNAL_IDS, Val::str_map(&a.external_ids)),
    ];
    if a.after_lb {
        columns.push(ColVal::set(
            col::OPTIONS,
            Val::str_map([("apply-after-lb", "true")]),
        ));
    }
    NbOp::Db(DbOp::Create {
        table: nb::ACL.into(),
        id: Some(id.into()),
        columns,
    })
}

fn set_acls(pg: &str, acls: &BTreeSet<AclSpec>, ids_: &mut Ids, ops: &mut Vec<NbOp>) {
    if acls.is_empty() {
        ops.push(NbOp::Db(DbOp::Clear {
            table: nb::PORT_GROUP.into(),
            record: pg.into(),
            column: col::ACLS.into(),
            if_exists: false,
        }));
        return;
    }
    let mut refs = Vec::new();
    for a in acls {
        let id = ids_.next();
        ops.push(acl_create(a, &id));
        refs.push(Val::Ref(id));
    }
    // Replacing the set lets OVSDB garbage-collect the ACLs no longer referenced.
    ops.push(NbOp::Db(DbOp::Set {
        table: nb::PORT_GROUP.into(),
        record: pg.into(),
        columns: vec![ColVal::set(col::ACLS, Val::Set(refs))],
        if_exists: false,
    }));
}

fn set_ports(pg: &str, ports: &BTreeSet<String>) -> NbOp {
    if ports.is_empty() {
        NbOp::Db(DbOp::Clear {
            table: nb::PORT_GROUP.into(),
            record: pg.into(),
            column: col::PORTS.into(),
            if_exists: false,
        })
    } else {
        NbOp::PgSetPorts {
            name: pg.into(),
            ports: ports.iter().cloned().collect(),
        }
    }
}

/// The commands that turn `cur` (what NB holds for a unit) into `want`. Empty when equal.
pub fn diff_ops(cur: &Objects, want: &Objects, ids_: &mut Ids) -> Vec<NbOp> {
    let mut ops = Vec::new();
    // Address sets first: ACLs created below may refer to them.
    for (name, w) in &want.sets {
        ops.extend(address_set_op(name, cur.sets.get(name), w));
    }
    for (name, w) in &want.pgs {
        port_group_ops(name, cur.pgs.get(name), w, ids_, &mut ops);
    }
    for name in cur.pgs.keys().filter(|n| !want.pgs.contains_key(*n)) {
        // Not `pg-del --if-exists`: ovn-nbctl 23.03 has no such option. Its ACLs go with it
        // (ACL rows are not roots).
        ops.push(NbOp::Db(DbOp::Destroy {
            table: nb::PORT_GROUP.into(),
            record: name.clone(),
            if_exists: true,
        }));
    }
    for name in cur.sets.keys().filter(|n| !want.sets.contains_key(*n)) {
        ops.push(NbOp::Db(DbOp::Destroy {
            table: nb::ADDRESS_SET.into(),
            record: name.clone(),
            if_exists: true,
        }));
    }
    ops
}

/// The command that makes address set `name` (now `cur`) what `w` says, if any.
fn address_set_op(name: &str, cur: Option<&AsSpec>, w: &AsSpec) -> Option<NbOp> {
    let Some(c) = cur else {
        return Some(NbOp::Db(DbOp::Create {
            table: nb::ADDRESS_SET.into(),
            id: None,
            columns: vec![
                ColVal::set(col::NAME, name),
                ColVal::set(col::EXTERNAL_IDS, Val::str_map(&w.external_ids)),
                ColVal::set(col::ADDRESSES, Val::str_set(&w.addresses)),
            ],
        }));
    };
    let mut columns = Vec::new();
    if c.addresses != w.addresses {
        columns.push(ColVal::set(col::ADDRESSES, Val::str_set(&w.addresses)));
    }
    if c.external_ids != w.external_ids {
        columns.push(ColVal::set(
            col::EXTERNAL_IDS,
            Val::str_map(&w.external_ids),
        ));
    }
    if columns.is_empty() {
        return None;
    }
    Some(NbOp::Db(DbOp::Set {
        table: nb::ADDRESS_SET.into(),
        record: name.to_string(),
        columns,
        if_exists: false,
    }))
}

/// The commands that make port group `name` (now `cur`) what `w` says: created with its ports,
/// then its `external_ids` and ACLs; or each part that differs replaced.
fn port_group_ops(
    name: &str,
    cur: Option<&PgSpec>,
    w: &PgSpec,
    ids_: &mut Ids,
    ops: &mut Vec<NbOp>,
) {
    let set_ids = || {
        NbOp::Db(DbOp::Set {
            table: nb::PORT_GROUP.into(),
            record: name.to_string(),
            columns: vec![ColVal::set(
                col::EXTERNAL_IDS,
                Val::str_map(&w.external_ids),
            )],
            if_exists: false,
        })
    };
    let Some(c) = cur else {
        ops.push(NbOp::PgAdd {
            name: name.to_string(),
            ports: w.ports.iter().cloned().collect(),
        });
        ops.push(set_ids());
        if !w.acls.is_empty() {
            set_acls(name, &w.acls, ids_, ops);
        }
        return;
    };
    if c.external_ids != w.external_ids {
        ops.push(set_ids());
    }
    if c.ports != w.ports {
        ops.push(set_ports(name, &w.ports));
    }
    if c.acls != w.acls {
        set_acls(name, &w.acls, ids_, ops);
    }
}

/// Splits `work` into batches in order, starting a new one when the next item's `len` commands
/// would take the batch over `max` (an item larger than `max` gets a batch of its own). Never
/// splits an item, so a unit's commands are applied together or not at all.
pub fn whole_unit_batches<W>(work: Vec<W>, len: impl Fn(&W) -> usize, max: usize) -> Vec<Vec<W>> {
    let mut batches: Vec<Vec<W>> = vec![Vec::new()];
    let mut n = 0;
    for w in work {
        let l = len(&w);
        if n > 0 && n + l > max {
            batches.push(Vec::new());
            n = 0;
        }
        n += l;
        if let Some(b) = batches.last_mut() {
            b.push(w);
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::policy_model::{Selector, compile};
    use crate::ovn::NbTxn;
    use k8s_openapi::api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::api::ObjectMeta;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Namespaces x, y, z (label ns=<name>), pods a, b, c (label pod=<name>), a/b/c serve
    /// named port "serve-80" on 80 (c: on 81).
    fn world() -> World {
        let mut w = World::default();
        for (n, ns) in ["x", "y", "z"].iter().enumerate() {
            w.namespaces.insert(ns.to_string(), labels(&[("ns", ns)]));
            for (m, pod) in ["a", "b", "c"].iter().enumerate() {
                let num = if *pod == "c" { 81 } else { 80 };
                w.pods.entry(ns.to_string()).or_default().insert(
                    pod.to_string(),
                    PodView {
                        ns: ns.to_string(),
                        name: pod.to_string(),
                        labels: labels(&[("pod", pod)]),
                        named: vec![("serve-80".into(), Proto::Tcp, num)],
                        port: format!("{ns}_{pod}"),
                        ip: Ipv4Addr::new(10, 0, n as u8, m as u8 + 10),
                    },
                );
            }
        }
        w
    }

    fn sel(kv: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(kv)),
            ..Default::default()
        }
    }

    fn np(ns: &str, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(spec),
        }
    }

    fn acl_matches(o: &Objects) -> Vec<String> {
        o.pgs
            .values()
            .flat_map(|p| p.acls.iter().map(|a| a.matches.clone()))
            .collect()
    }

    #[test]
    fn ingress_from_pod_and_namespace_and_both() {
        let w = world();
        let peer = |ns: Option<LabelSelector>, pods: Option<LabelSelector>| NetworkPolicyPeer {
            namespace_selector: ns,
            pod_selector: pods,
            ..Default::default()
        };
        let c = compile(&np(
            "x",
            "p",
            NetworkPolicySpec {
                pod_selector: Some(sel(&[("pod", "a")])),
                ingress: Some(vec![
                    NetworkPolicyIngressRule {
                        from: Some(vec![peer(None, Some(sel(&[("pod", "b")])))]),
                        ..Default::default()
                    },
                    NetworkPolicyIngressRule {
                        from: Some(vec![peer(
                            Some(sel(&[("ns", "y")])),
                            Some(sel(&[("pod", "c")])),
                        )]),
                        ..Default::default()
                    },
                    NetworkPolicyIngressRule {
                        from: Some(vec![
                            peer(Some(sel(&[("ns", "z")])), None),
                            peer(None, Some(sel(&[("pod", "c")]))),
                        ]),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
        ));
        let o = policy_objects(&c, &w);
        let pg = policy_pg("x", "p");
        assert_eq!(o.pgs[&pg].ports, BTreeSet::from(["x_a".to_string()]));
        let set = |i: usize| &o.sets[&hash_name(&format!("x.p.ingress.{i}"))].addresses;
        assert_eq!(set(0), &BTreeSet::from(["10.0.0.11".to_string()]));
        // AND: only y/c.
        assert_eq!(set(1), &BTreeSet::from(["10.0.1.12".to_string()]));
        // OR: all of z, plus x/c.
        assert_eq!(
            set(2),
            &["10.0.0.12", "10.0.2.10", "10.0.2.11", "10.0.2.12"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        let m = acl_matches(&o);
        assert_eq!(m.len(), 3);
        assert!(m.contains(&format!(
            "outport == @{pg} && ip4.src == ${}",
            hash_name("x.p.ingress.0")
        )));
        let a = o.pgs[&pg].acls.iter().next().unwrap();
        assert_eq!(
            (
                a.direction.as_str(),
                a.priority,
                a.action.as_str(),
                a.after_lb
            ),
            ("to-lport", PRIO_ALLOW, "allow-related", false)
        );
    }

    #[test]
    fn ip_blocks_ports_and_named_ports() {
        let w = world();
        let ports = vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(80)),
                ..Default::default()
            },
            NetworkPolicyPort {
                protocol: Some("UDP".into()),
                port: Some(IntOrString::Int(5000)),
                end_port: Some(5010),
            },
            NetworkPolicyPort {
                port: Some(IntOrString::String("serve-80".into())),
                ..Default::default()
            },
        ];
        let c = compile(&np(
            "x",
            "p",
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "10.0.0.0/16".into(),
                                except: Some(vec!["10.0.1.0/24".into(), "10.0.2.12/32".into()]),
                            }),
                            ..Default::default()
                        },
                        NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "192.168.0.0/16".into(),
                                except: None,
                            }),
                            ..Default::default()
                        },
                    ]),
                    ports: Some(ports),
                }]),
                ..Default::default()
            },
        ));
        let o = policy_objects(&c, &w);
        let pg = policy_pg("x", "p");
        let peers = "((ip4.src == 10.0.0.0/16 && ip4.src != {10.0.1.0/24, 10.0.2.12/32}) || ip4.src == 192.168.0.0/16)";
        let n80 = hash_name("x.p.ingress.0.tcp.80");
        let n81 = hash_name("x.p.ingress.0.tcp.81");
        let want: BTreeSet<String> = [
            format!(
                "outport == @{pg} && {peers} && (tcp.dst == 80 || (udp.dst >= 5000 && udp.dst <= 5010))"
            ),
            format!("outport == @{pg} && {peers} && ip4.dst == ${n80} && tcp.dst == 80"),
            format!("outport == @{pg} && {peers} && ip4.dst == ${n81} && tcp.dst == 81"),
        ]
        .into();
        assert_eq!(acl_matches(&o).into_iter().collect::<BTreeSet<_>>(), want);
        assert_eq!(
            o.sets[&n80].addresses,
            BTreeSet::from(["10.0.0.10".into(), "10.0.0.11".into()])
        );
        assert_eq!(o.sets[&n81].addresses, BTreeSet::from(["10.0.0.12".into()]));
    }

    #[test]
    fn egress_after_lb_and_default_deny() {
        let w = world();
        let c = compile(&np(
            "y",
            "e",
            NetworkPolicySpec {
                pod_selector: Some(sel(&[("pod", "a")])),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(sel(&[("ns", "x")])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![NetworkPolicyPort {
                        port: Some(IntOrString::String("serve-80".into())),
                        ..Default::default()
                    }]),
                }]),
                policy_types: Some(vec!["Egress".into()]),
                ..Default::default()
            },
        ));
        let o = policy_objects(&c, &w);
        let acls: Vec<&AclSpec> = o.pgs.values().flat_map(|p| p.acls.iter()).collect();
        assert_eq!(acls.len(), 2, "{acls:?}");
        assert!(
            acls.iter()
                .all(|a| a.direction == "from-lport" && a.after_lb)
        );
        let n80 = hash_name("y.e.egress.0.tcp.80");
        assert_eq!(
            o.sets[&n80].addresses,
            BTreeSet::from(["10.0.0.10".into(), "10.0.0.11".into()])
        );
        let d = deny_objects("y", [&c], &w);
        assert_eq!(d.pgs.len(), 1);
        let pg = deny_pg("y", Dir::Egress);
        assert_eq!(d.pgs[&pg].ports, BTreeSet::from(["y_a".to_string()]));
        let drop = d.pgs[&pg].acls.iter().find(|a| a.action == "drop").unwrap();
        assert_eq!(drop.matches, format!("inport == @{pg}"));
        assert_eq!(drop.priority, PRIO_DENY);
        assert!(drop.after_lb);
        // Ingress deny has the node-management allow.
        let c2 = compile(&np("y", "i", NetworkPolicySpec::default()));
        let d = deny_objects("y", [&c, &c2], &w);
        let ing = &d.pgs[&deny_pg("y", Dir::Ingress)];
        assert_eq!(ing.ports.len(), 3);
        assert!(
            ing.acls
                .iter()
                .any(|a| a.matches.ends_with(&format!("ip4.src == ${}", mgmt_as())))
        );
        // Not isolated anywhere once the policies are gone.
        assert!(deny_objects("y", [], &w).is_empty());
    }

    #[test]
    fn unmatchable_peers_and_bad_rules_allow_nothing() {
        let w = world();
        let c = compile(&np(
            "x",
            "p",
            NetworkPolicySpec {
                ingress: Some(vec![
                    NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "fd00::/64".into(),
                                except: None,
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                    NetworkPolicyIngressRule {
                        ports: Some(vec![NetworkPolicyPort {
                            protocol: Some("ICMP".into()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
        ));
        let o = policy_objects(&c, &w);
        assert_eq!(o.acl_count(), 0);
        assert_eq!(o.pgs.values().next().unwrap().ports.len(), 3);
        assert_eq!(c.problems.len(), 1);
    }

    #[test]
    fn hostile_labels_never_reach_a_match() {
        let mut w = world();
        let evil = "\" || 1 || \"$x\\";
        w.namespaces
            .insert("x".into(), labels(&[("ns", "x"), ("evil", evil)]));
        let mut c = compile(&np("x", "p", NetworkPolicySpec::default()));
        c.selector = Selector::parse(&sel(&[("evil", evil)])).unwrap();
        c.ingress = Some(vec![Ok(Rule {
            peers: Some(vec![Peer::Pods {
                ns: Some(Selector::parse(&sel(&[("evil", evil)])).unwrap()),
                pods: None,
            }]),
            ports: None,
        })]);
        let o = policy_objects(&c, &w);
        for m in acl_matches(&o) {
            assert!(
                !m.contains("evil") && !m.contains('"') && !m.contains('\\'),
                "{m}"
            );
        }
        let mut ids_ = Ids::default();
        let t: NbTxn = diff_ops(&Objects::default(), &o, &mut ids_)
            .into_iter()
            .collect();
        t.validate().unwrap();
    }

    #[test]
    fn diff_is_empty_when_equal_and_minimal_otherwise() {
        let w = world();
        let c = compile(&np(
            "x",
            "p",
            NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(sel(&[("pod", "b")])),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ));
        let want = policy_objects(&c, &w);
        let mut ids_ = Ids::default();
        let create = diff_ops(&Objects::default(), &want, &mut ids_);
        let t: NbTxn = create.clone().into_iter().collect();
        let argv = t.render().join(" ");
        assert!(argv.contains("create Address_Set name=\"a"), "{argv}");
        assert!(argv.contains("--id=@acl1 create ACL direction=\"to-lport\" priority=1001"));
        assert!(argv.contains("acls=[@acl1]"), "{argv}");
        assert!(diff_ops(&want, &want, &mut ids_).is_empty());

        // A peer pod leaves: only the address set changes.
        let mut w2 = w.clone();
        w2.pods.get_mut("x").unwrap().remove("b");
        let want2 = policy_objects(&c, &w2);
        let ops = diff_ops(&want, &want2, &mut ids_);
        assert_eq!(ops.len(), 2, "{ops:?}");
        let t: NbTxn = ops.into_iter().collect();
        let argv = t.render().join(" ");
        assert!(argv.contains("set Address_Set"), "{argv}");
        assert!(argv.contains("pg-set-ports"), "{argv}");

        // Deleted: port group and address set go.
        let ops = diff_ops(&want, &Objects::default(), &mut ids_);
        assert_eq!(ops.len(), 2);
        assert!(
            matches!(&ops[0], NbOp::Db(DbOp::Destroy { table, .. }) if table == nb::PORT_GROUP)
        );
    }

    #[test]
    fn parse_nb_groups_owned_rows_and_ignores_the_rest() {
        use crate::ovn::ovsdb::parse_tables;
        let pg = policy_pg("x", "p");
        let out = format!(
            r#"{{"data":[[["uuid","pg1"],"{pg}",["set",[["uuid","l1"]]],["set",[["uuid","acl1"]]],["map",[["k8s-netpol","policy"],["namespace","x"],["policy","p"]]]],[["uuid","pg2"],"other",["set",[]],["set",[]],["map",[]]]],"headings":["_uuid","name","ports","acls","external_ids"]}}
{{"data":[[["uuid","as1"],"a1",["set",["10.0.0.1"]],["map",[["k8s-netpol","node-mgmt"]]]]],"headings":["_uuid","name","addresses","external_ids"]}}
{{"data":[[["uuid","acl1"],"to-lport",1001,"outport == @{pg}","allow-related",["map",[]],["map",[]]]],"headings":["_uuid","direction","priority","match","action","options","external_ids"]}}
{{"data":[[["uuid","l1"],"x_a"]],"headings":["_uuid","name"]}}
"#
        );
        let t = parse_tables(&out).unwrap();
        let m = parse_nb(&t[0], &t[1], &t[2], &t[3]);
        assert_eq!(m.len(), 2);
        let o = &m[&Unit::Policy("x".into(), "p".into())];
        assert_eq!(o.pgs[&pg].ports, BTreeSet::from(["x_a".to_string()]));
        assert_eq!(o.pgs[&pg].acls.iter().next().unwrap().priority, 1001);
        assert_eq!(m[&Unit::Mgmt].sets["a1"].addresses.len(), 1);
    }

    #[test]
    fn touches() {
        let c = compile(&np(
            "x",
            "p",
            NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(sel(&[("ns", "y")])),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ));
        assert!(World::touches(&c, "x", None));
        assert!(World::touches(&c, "y", Some(&labels(&[("ns", "y")]))));
        assert!(!World::touches(&c, "z", Some(&labels(&[("ns", "z")]))));
    }

    #[test]
    fn whole_unit_batches_table() {
        // (commands per unit, max) -> batches as commands per unit
        type Case<'a> = (&'a [usize], usize, &'a [&'a [usize]]);
        let cases: &[Case] = &[
            (&[], 10, &[&[]]),
            (&[3, 3, 3], 10, &[&[3, 3, 3]]),
            (&[4, 4, 4], 10, &[&[4, 4], &[4]]),
            (&[5, 5], 10, &[&[5, 5]]),
            (&[12, 1], 10, &[&[12], &[1]]),
            (&[1, 12, 1], 10, &[&[1], &[12], &[1]]),
        ];
        for (work, max, want) in cases {
            let got = whole_unit_batches(work.to_vec(), |w| *w, *max);
            let want: Vec<Vec<usize>> = want.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, want, "{work:?} max {max}");
        }
    }

    #[test]
    fn numeric_ports_clause_table() {
        let tcp80 = PortMatch::Range {
            proto: Proto::Tcp,
            from: 80,
            to: 80,
        };
        let udp = PortMatch::Any(Proto::Udp);
        let named = PortMatch::Named {
            proto: Proto::Tcp,
            name: "http".into(),
        };
        type Case = (Option<Vec<PortMatch>>, Option<Vec<&'static str>>);
        let cases: Vec<Case> = vec![
            (None, Some(vec![])),
            (Some(vec![tcp80.clone()]), Some(vec!["tcp.dst == 80"])),
            (
                Some(vec![tcp80.clone(), udp.clone(), named.clone()]),
                Some(vec!["(tcp.dst == 80 || udp)"]),
            ),
            (Some(vec![named.clone()]), None),
            (Some(vec![]), None),
        ];
        for (ports, want) in cases {
            let got = numeric_ports_clause(ports.as_deref());
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{ports:?}");
            let names = named_ports(ports.as_deref());
            let want_named = ports
                .iter()
                .flatten()
                .filter(|p| matches!(p, PortMatch::Named { .. }))
                .count();
            assert_eq!(names.len(), want_named, "{ports:?}");
        }
    }
}
