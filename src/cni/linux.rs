//! ADD/DEL/CHECK/STATUS/GC on Linux: veth pairs with `ip`, the br-int port with `ovs-vsctl`,
//! the pod's network from its `ovn` annotation. Every external command goes through the exec
//! seam; in-pod commands run under `nsenter --net=<CNI_NETNS>` (any netns path works).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::types::{AddResult, CniEnv, CniError, Command, NetConf, PrevResult, code, version_info};
use crate::config::{self, Config, DEFAULT_CONFIG_FILE, Invocation, KubernetesConfig};
use crate::exec::{Exec, RealExec};
use crate::host::ip::{Ip, IpWrite, Link};
use crate::kube::annotations::{POD_NETWORK, PodNetwork};
use crate::ovn::names::{
    BR_INT, EXT_K8S_API_SERVER, EXT_K8S_CA, EXT_K8S_TOKEN, EXT_K8S_TOKEN_FILE, fnv1a64, pod_port,
};
use crate::ovn::{ColVal, DbOp, Query, Val, Vs, VsOp, VsTxn, Vsctl};

/// How long ADD waits for the pod's `ovn` annotation (the reference gave up after ~21 s).
const ANNOTATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Re-reading the pod while its annotation is missing: 250 ms doubling to 2 s.
const ANNOTATION_POLL: crate::util::retry::Policy =
    crate::util::retry::Policy::new(Duration::from_millis(250), Duration::from_secs(2));
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// One ADD: the pod, its network (from the annotation) and where it goes.
struct Attachment<'a> {
    env: &'a CniEnv,
    netns: &'a str,
    host_if: &'a str,
    ns: &'a str,
    pod: &'a str,
    pn: &'a PodNetwork,
    mtu: u32,
}

/// The br-int port of an attachment: `host_if` joins br-int carrying the logical port's
/// iface-id, and every other interface still carrying it (`holders`: older sandboxes of the
/// same pod) loses it, in one transaction.
fn port_txn(a: &Attachment<'_>, lp: &str, holders: &[String]) -> VsTxn {
    let mut txn = VsTxn::new();
    for old in holders.iter().filter(|h| h.as_str() != a.host_if) {
        txn.push(VsOp::Db(DbOp::Remove {
            table: "Interface".into(),
            record: old.clone(),
            column: "external_ids".into(),
            values: vec![Val::str("iface-id")],
            if_exists: true,
        }));
    }
    txn.push(VsOp::AddPort {
        bridge: BR_INT.into(),
        port: a.host_if.into(),
    })
    .push(VsOp::Db(DbOp::Set {
        table: "Interface".into(),
        record: a.host_if.into(),
        columns: vec![
            ColVal::key("external_ids", "iface-id", Val::str(lp)),
            ColVal::key("external_ids", "attached_mac", Val::str(a.pn.mac.as_str())),
            ColVal::key(
                "external_ids",
                "ip_address",
                Val::str(a.pn.cidr().to_string()),
            ),
            ColVal::key(
                "external_ids",
                "sandbox",
                Val::str(a.env.container_id.as_str()),
            ),
        ],
        if_exists: false,
    }));
    txn
}

/// What is wrong with the ids of an attachment's br-int port: the logical port it is bound
/// to (`lp`, when the pod is known) and the sandbox that owns it.
fn port_id_problems(
    host_if: &str,
    ids: &BTreeMap<String, String>,
    lp: Option<&str>,
    sandbox: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(lp) = lp
        && ids.get("iface-id").map(String::as_str) != Some(lp)
    {
        problems.push(format!(
            "OVS port {host_if} has iface-id {:?}, expected {lp:?}",
            ids.get("iface-id")
        ));
    }
    if ids.get("sandbox").map(String::as_str) != Some(sandbox) {
        problems.push(format!(
            "OVS port {host_if} belongs to sandbox {:?}, not {sandbox}",
            ids.get("sandbox")
        ));
    }
    problems
}

/// The br-int side of a pod's veth: `ovn` and 12 hex digits of a hash of the WHOLE container
/// id and interface name. Never a prefix of the id: two ids sharing their first 15 characters
/// must not share an interface, and an id must not be able to name an existing host interface.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let h = fnv1a64(format!("{container_id}/{ifname}").as_bytes());
    format!("ovn{:012x}", h & 0xffff_ffff_ffff)
}

/// The name older releases gave the host side (the first 15 characters of the id), still
/// looked at so pods attached before an upgrade are torn down and kept by GC. Only ever
/// removed when OVS proves it is ours.
fn legacy_host_ifname(container_id: &str, ifname: &str) -> Option<String> {
    (ifname == "eth0" && container_id.len() >= 15 && container_id.is_ascii())
        .then(|| container_id[..15].to_string())
}

/// The host interface names an attachment may have, newest scheme first.
fn host_ifnames(container_id: &str, ifname: &str) -> Vec<String> {
    let mut v = vec![host_ifname(container_id, ifname)];
    v.extend(legacy_host_ifname(container_id, ifname));
    v
}

/// What exists under a host interface name, read before anything is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The OVS Interface of that name: `None` when there is none, else its
    /// `external_ids:sandbox` (`Some(None)` when the row has no such key).
    pub ovs_row: Option<Option<String>>,
    /// A host link of that name exists.
    pub link: bool,
    /// The host link is a veth whose peer is `CNI_IFNAME` in the target namespace.
    pub peer_in_pod: bool,
}

/// What may be removed: only what is provably this attachment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    pub ovs_port: bool,
    pub link: bool,
}

/// An OVS row is ours when ADD stamped it with this container id; a link is ours when its OVS
/// row is, or (no OVS row: an ADD that failed before the port was added) when its veth peer is
/// the pod interface. Anything else with the same name belongs to someone else.
pub fn removal(found: &Found, container_id: &str) -> Removal {
    let ovs_ours = matches!(&found.ovs_row, Some(Some(s)) if s == container_id);
    let link_ours = ovs_ours || (found.ovs_row.is_none() && found.peer_in_pod);
    Removal {
        ovs_port: ovs_ours,
        link: found.link && link_ours,
    }
}

/// Whether `peer` (read in the pod's namespace) is the other end of `host` (read in ours).
fn is_veth_peer(host: &Link, peer: &Link) -> bool {
    host.link_netnsid.is_some()
        && host.link_index == Some(peer.ifindex)
        && peer.link_index == Some(host.ifindex)
        && peer.ifindex != 0
}

/// Whether `netns` is the namespace this process runs in or PID 1's (the host's): a pod is
/// never either, and configuring it would rewrite the node's own interfaces and routes.
fn is_host_netns(netns: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(netns)?;
    let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
    for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        if let Ok(m) = std::fs::metadata(own)
            && id(&m) == id(&target)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub async fn dispatch(
    env: &CniEnv,
    conf: &NetConf,
    version: &str,
) -> Result<Option<Value>, CniError> {
    let exec: Arc<dyn Exec> = Arc::new(RealExec::new(4));
    let vs = Vsctl(crate::ovn::vs_ctl(exec.clone()));
    let cfg = match load_config(&vs, conf).await {
        Ok(c) => {
            // A pod's network must not fail over the plugin's log file: warn, log to stderr.
            if let Err(e) = crate::util::logging::init(c.logging.level, c.logging.file.as_deref()) {
                eprintln!("{}: warning: {e}", super::PLUGIN_NAME);
                let _ = crate::util::logging::init(c.logging.level, None);
            }
            c
        }
        Err(e) if env.command == Command::Add => return Err(e),
        // DEL/CHECK/GC/STATUS need nothing from it; don't fail a teardown over a config typo.
        Err(e) => {
            eprintln!(
                "{}: warning: {e}; continuing with defaults",
                super::PLUGIN_NAME
            );
            Config::default()
        }
    };
    let p = Plugin {
        host: Ip::host(exec.clone()),
        exec,
        vs,
        cfg,
    };
    match env.command {
        Command::Add => p.add(env, conf, version).await.map(Some),
        Command::Del => p.del(env).await.map(|()| None),
        Command::Check => p.check(env, conf).await.map(|()| None),
        Command::Status => p.status().await.map(|()| None),
        Command::Gc => p.gc(conf).await.map(|()| None),
        Command::Version => Ok(Some(version_info())),
    }
}

/// The common configuration with the Kubernetes defaults read from OVS (what `-init-node`
/// wrote; they replace the built-in defaults), then the config file named by the network config.
async fn load_config(vs: &Vsctl, conf: &NetConf) -> Result<Config, CniError> {
    let defaults = match kube_defaults_from_ovs(vs).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "{}: warning: cannot read the Kubernetes settings from OVS: {e:#}",
                super::PLUGIN_NAME
            );
            KubernetesConfig::default()
        }
    };
    let args: Vec<String> = conf
        .config_file_path
        .iter()
        .map(|p| format!("-config-file={}", p.display()))
        .collect();
    match config::parse_args_with(args, Path::new(DEFAULT_CONFIG_FILE), Some(defaults)) {
        Ok(Invocation::Run(c)) => Ok(*c),
        Ok(_) => Err(CniError::new(
            code::INVALID_CONFIG,
            "unexpected configuration",
        )),
        Err(e) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("invalid ovnkube configuration: {e}"),
        )),
    }
}

async fn kube_defaults_from_ovs(vs: &Vsctl) -> Result<KubernetesConfig> {
    let rows = vs
        .query(&[Query::list("Open_vSwitch", &["external_ids"])])
        .await?;
    let ids: BTreeMap<String, String> = rows
        .first()
        .and_then(|t| t.first())
        .map(|r| r.map("external_ids"))
        .unwrap_or_default();
    let get = |k: &str| ids.get(k).filter(|v| !v.is_empty()).cloned();
    let mut k = KubernetesConfig::default();
    if let Some(s) = get(EXT_K8S_API_SERVER) {
        k.apiserver = s;
    }
    k.cacert = get(EXT_K8S_CA).map(Into::into);
    k.token = get(EXT_K8S_TOKEN);
    k.token_file = get(EXT_K8S_TOKEN_FILE).map(Into::into);
    Ok(k)
}

struct Plugin {
    exec: Arc<dyn Exec>,
    vs: Vsctl,
    host: Ip,
    cfg: Config,
}

impl Plugin {
    async fn add(&self, env: &CniEnv, conf: &NetConf, version: &str) -> Result<Value, CniError> {
        let (ns, pod) = env.pod()?;
        let netns = env.netns.clone().unwrap_or_default();
        match is_host_netns(Path::new(&netns)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!("network namespace {netns} (CNI_NETNS) does not exist"),
                ));
            }
            Err(e) => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("network namespace {netns} (CNI_NETNS) cannot be read: {e}"),
                ));
            }
            Ok(true) => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!(
                        "CNI_NETNS {netns} is the host's own network namespace, not a pod's; \
                         refusing to configure it"
                    ),
                ));
            }
            Ok(false) => {}
        }
        let client = crate::kube::client::build(&self.cfg.kubernetes)
            .await
            .map_err(|e| {
                CniError::new(
                    code::GENERIC,
                    format!("cannot create the Kubernetes client: {e:#}"),
                )
                .with_details(
                    "the API server comes from OVS external_ids:k8s-api-server (written by \
                     ovnkube -init-node) or the config file",
                )
            })?;
        let pn = wait_pod_network(&client, &ns, &pod).await?;
        let mtu = conf.mtu.unwrap_or(self.cfg.mtu);
        let host_if = host_ifname(&env.container_id, &env.ifname);
        let attachment = Attachment {
            env,
            netns: &netns,
            host_if: &host_if,
            ns: &ns,
            pod: &pod,
            pn: &pn,
            mtu,
        };
        match self.plumb(&attachment).await {
            Ok(r) => {
                tracing::info!(
                    pod = %format!("{ns}/{pod}"), container = %env.container_id,
                    host_if = %host_if, ip = %pn.cidr(), mac = %pn.mac, "pod network attached"
                );
                Ok(r.to_json(version))
            }
            Err(e) => {
                // No half-plumbed pod left behind.
                if let Err(ce) = self.unplug(env).await {
                    tracing::warn!("cleanup after a failed ADD: {ce:#}");
                }
                Err(CniError::generic(&e.context(format!(
                    "attaching pod {ns}/{pod} (container {}) to {BR_INT}",
                    env.container_id
                ))))
            }
        }
    }

    async fn plumb(&self, a: &Attachment<'_>) -> Result<AddResult> {
        // A retried ADD starts from nothing, so it ends exactly like a first one.
        self.unplug(a.env).await?;
        self.veth(a).await?;
        let lp = pod_port(a.ns, a.pod);
        // Only the newest sandbox of a pod may carry its iface-id (later upstream fix).
        let rows = self
            .vs
            .query(&[Query::find(
                "Interface",
                &["name"],
                vec![ColVal::key(
                    "external_ids",
                    "iface-id",
                    Val::str(lp.as_str()),
                )],
            )])
            .await?;
        let holders: Vec<String> = rows.iter().flatten().map(|r| r.str("name")).collect();
        self.vs
            .transact(&port_txn(a, &lp, &holders))
            .await
            .with_context(|| format!("adding port {} to {BR_INT}", a.host_if))?;
        let host_mac = self
            .host
            .link(a.host_if)
            .await?
            .map(|l| l.address)
            .unwrap_or_default();
        Ok(AddResult {
            host_if: a.host_if.into(),
            host_mac,
            pod_if: a.env.ifname.clone(),
            pod_mac: a.pn.mac.clone(),
            sandbox: a.netns.into(),
            ip: a.pn.cidr(),
            gateway: a.pn.gateway,
            mtu: a.mtu,
        })
    }

    /// The veth pair, the pod end configured inside the pod's namespace.
    async fn veth(&self, a: &Attachment<'_>) -> Result<()> {
        let ifname = a.env.ifname.as_str();
        // The pod end is created directly inside the pod's netns with its final name and
        // MAC, so nothing named CNI_IFNAME ever exists on the host.
        self.host
            .apply(&IpWrite::Veth {
                host: a.host_if.into(),
                peer: ifname.into(),
                peer_mac: a.pn.mac.clone(),
                mtu: a.mtu,
                netns: a.netns.into(),
            })
            .await
            .context("creating the veth pair")?;
        let in_pod = Ip::in_netns(self.exec.clone(), a.netns);
        in_pod
            .apply(&IpWrite::addr_replace(ifname, a.pn.cidr()))
            .await
            .context("setting the pod address")?;
        in_pod
            .apply(&IpWrite::link_up(ifname))
            .await
            .context("bringing the pod interface up")?;
        in_pod
            .apply(&IpWrite::RouteVia {
                dst: None,
                via: a.pn.gateway,
                dev: ifname.into(),
            })
            .await
            .context("adding the pod's default route")?;
        // G4: with OVS's userspace datapath, TCP segments with partial (offloaded) checksums
        // are forwarded as-is and dropped by the receiver. Harmless with the kernel datapath.
        if let Err(e) = in_pod
            .run_prog("ethtool", &["-K", ifname, "tx", "off"])
            .await
        {
            tracing::warn!(
                "could not turn off TX checksum offload on {ifname} (TCP breaks with OVS's \
                 userspace datapath; install ethtool): {e}"
            );
        }
        self.host
            .apply(&IpWrite::link_up(a.host_if))
            .await
            .context("bringing the host end up")
    }

    /// Remove this attachment's br-int port and veth (its pod end goes with it), under every
    /// name it may have, but only what is provably ours (see [`removal`]). Missing is fine.
    async fn unplug(&self, env: &CniEnv) -> Result<()> {
        for name in host_ifnames(&env.container_id, &env.ifname) {
            let found = self.found(&name, env).await?;
            let r = removal(&found, &env.container_id);
            if (found.link && !r.link) || (found.ovs_row.is_some() && !r.ovs_port) {
                tracing::warn!(
                    container = %env.container_id, interface = %name, ?found,
                    "not removing interface {name}: it is not provably this container's"
                );
            }
            if r.ovs_port {
                let mut txn = VsTxn::new();
                txn.push(VsOp::DelPort {
                    bridge: None,
                    port: name.clone(),
                });
                self.vs
                    .transact(&txn)
                    .await
                    .with_context(|| format!("removing port {name} from OVS"))?;
            }
            if r.link {
                self.host.link_del(&name).await?;
            }
        }
        Ok(())
    }

    /// What exists under host interface `name`: its OVS row, the link, and whether the link's
    /// veth peer is the pod interface in `CNI_NETNS`.
    async fn found(&self, name: &str, env: &CniEnv) -> Result<Found> {
        let rows = self
            .vs
            .query(&[Query::find(
                "Interface",
                &["name", "external_ids"],
                vec![ColVal::set("name", Val::str(name))],
            )])
            .await
            .with_context(|| format!("reading OVS interface {name}"))?;
        let ovs_row = rows
            .first()
            .and_then(|t| t.first())
            .map(|r| r.map_get("external_ids", "sandbox"));
        let link = self.host.link(name).await?;
        let mut peer_in_pod = false;
        if let (Some(l), Some(netns)) = (&link, env.netns.as_deref())
            && l.link_netnsid.is_some()
            && Path::new(netns).exists()
        {
            let in_pod = Ip::in_netns(self.exec.clone(), netns);
            if let Ok(Some(peer)) = in_pod.link(&env.ifname).await {
                peer_in_pod = is_veth_peer(l, &peer);
            }
        }
        Ok(Found {
            ovs_row,
            link: link.is_some(),
            peer_in_pod,
        })
    }

    async fn del(&self, env: &CniEnv) -> Result<(), CniError> {
        self.unplug(env).await.map_err(|e| {
            CniError::generic(&e.context(format!(
                "removing the network of container {}",
                env.container_id
            )))
        })?;
        tracing::info!(container = %env.container_id, "pod network detached");
        Ok(())
    }

    /// CHECK: the interfaces, addresses, routes and OVS port ADD made are all still there.
    async fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
        let prev = conf.prev_result.as_ref().ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "CHECK needs the previous result (prevResult) in the network configuration",
            )
        })?;
        let prev = PrevResult::parse(prev, &env.ifname)?;
        // A pod attached before an upgrade still has its old host name.
        let mut host_if = host_ifname(&env.container_id, &env.ifname);
        for name in host_ifnames(&env.container_id, &env.ifname) {
            if matches!(self.host.link(&name).await, Ok(Some(_))) {
                host_if = name;
                break;
            }
        }
        let netns = env.netns.clone().unwrap_or_default();
        let mut problems = self.host_side_problems(env, &host_if).await;
        problems.extend(self.pod_side_problems(env, &prev, &netns).await);
        if problems.is_empty() {
            return Ok(());
        }
        Err(CniError::new(
            code::GENERIC,
            format!(
                "CHECK failed for container {} ({}): {}",
                env.container_id,
                env.ifname,
                problems.join("; ")
            ),
        ))
    }

    /// CHECK on the host: the host end is up and its br-int port is this sandbox's.
    async fn host_side_problems(&self, env: &CniEnv, host_if: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self.host.link(host_if).await {
            Ok(Some(l)) if !l.is_up() => problems.push(format!("host interface {host_if} is down")),
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("host interface {host_if} is missing")),
            Err(e) => problems.push(format!("cannot read host interface {host_if}: {e:#}")),
        }
        let rows = self
            .vs
            .query(&[Query::find(
                "Interface",
                &["name", "external_ids"],
                vec![ColVal::set("name", Val::str(host_if))],
            )])
            .await;
        match rows.as_ref().map(|t| t.first().and_then(|r| r.first())) {
            Ok(None) => problems.push(format!("OVS port {host_if} is missing from {BR_INT}")),
            Ok(Some(row)) => {
                let lp = env.pod().ok().map(|(ns, pod)| pod_port(&ns, &pod));
                problems.extend(port_id_problems(
                    host_if,
                    &row.map("external_ids"),
                    lp.as_deref(),
                    &env.container_id,
                ));
            }
            Err(e) => problems.push(format!("cannot read OVS: {e:#}")),
        }
        problems
    }

    /// CHECK inside the pod: its interface is up with the MAC, addresses and default routes
    /// of the previous result.
    async fn pod_side_problems(&self, env: &CniEnv, prev: &PrevResult, netns: &str) -> Vec<String> {
        let ifname = env.ifname.as_str();
        if !Path::new(netns).exists() {
            return vec![format!("network namespace {netns} does not exist")];
        }
        let mut problems = Vec::new();
        let mut fail = |p: String| problems.push(p);
        let in_pod = Ip::in_netns(self.exec.clone(), netns);
        match in_pod.link(ifname).await {
            Ok(Some(l)) => {
                if !l.is_up() {
                    fail(format!("{ifname} is down in {netns}"));
                }
                if let Some(m) = &prev.pod_mac
                    && !l.address.eq_ignore_ascii_case(m)
                {
                    fail(format!("{ifname} has MAC {}, expected {m}", l.address));
                }
            }
            Ok(None) => fail(format!("{ifname} is missing in {netns}")),
            Err(e) => fail(format!("cannot read {ifname} in {netns}: {e:#}")),
        }
        match in_pod.addrs(ifname).await {
            Ok(have) => {
                for (net, _) in &prev.ips {
                    if !have.contains(net) {
                        fail(format!("address {net} is missing on {ifname} in {netns}"));
                    }
                }
            }
            Err(e) => fail(format!("cannot read the addresses in {netns}: {e:#}")),
        }
        match in_pod.routes().await {
            Ok(routes) => {
                for gw in prev.ips.iter().filter_map(|(_, g)| *g) {
                    let gw_s = gw.to_string();
                    let ok = routes.iter().any(|r| {
                        (r.dst == "default" || r.dst == "0.0.0.0/0")
                            && r.gateway.as_deref() == Some(gw_s.as_str())
                            && r.dev.as_deref() == Some(ifname)
                    });
                    if !ok {
                        fail(format!(
                            "default route via {gw} on {ifname} is missing in {netns}"
                        ));
                    }
                }
            }
            Err(e) => fail(format!("cannot read the routes in {netns}: {e:#}")),
        }
        problems
    }

    /// STATUS: ready when OVS answers and the node init created br-int and the management port.
    async fn status(&self) -> Result<(), CniError> {
        let rows = self
            .vs
            .query(&[
                Query::find(
                    "Bridge",
                    &["name"],
                    vec![ColVal::set("name", Val::str(BR_INT))],
                ),
                Query::list("Interface", &["name", "type", "external_ids"]),
            ])
            .await
            .map_err(|e| {
                CniError::new(
                    code::NOT_AVAILABLE,
                    format!("Open vSwitch is not reachable: {e:#}"),
                )
            })?;
        if rows.first().is_none_or(|t| t.is_empty()) {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "OVS bridge {BR_INT} does not exist: the node is not initialised yet (ovnkube -init-node)"
                ),
            ));
        }
        let mgmt = rows.get(1).into_iter().flatten().any(|r| {
            r.str("type") == "internal"
                && r.map_get("external_ids", "iface-id")
                    .is_some_and(|i| i.starts_with("k8s-"))
        });
        if !mgmt {
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "no management port (k8s-<node>) on {BR_INT}: the node is not initialised yet (ovnkube -init-node)"
                ),
            ));
        }
        Ok(())
    }

    /// GC: remove our ports (those with `external_ids:sandbox`) whose attachment the runtime
    /// no longer lists.
    async fn gc(&self, conf: &NetConf) -> Result<(), CniError> {
        let Some(valid) = &conf.valid_attachments else {
            tracing::warn!("GC without cni.dev/valid-attachments: nothing removed");
            return Ok(());
        };
        let keep: BTreeSet<String> = valid
            .iter()
            .flat_map(|a| host_ifnames(&a.container_id, &a.ifname))
            .collect();
        let rows = self
            .vs
            .query(&[Query::list("Interface", &["name", "external_ids"])])
            .await
            .map_err(|e| CniError::generic(&e.context("GC: listing OVS interfaces")))?;
        let stale: Vec<String> = rows
            .iter()
            .flatten()
            .filter(|r| r.map_get("external_ids", "sandbox").is_some())
            .map(|r| r.str("name"))
            .filter(|n| !keep.contains(n))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let mut txn = VsTxn::new();
        for n in &stale {
            txn.push(VsOp::DelPort {
                bridge: None,
                port: n.clone(),
            });
        }
        self.vs
            .transact(&txn)
            .await
            .map_err(|e| CniError::generic(&e.context("GC: removing stale OVS ports")))?;
        for n in &stale {
            if let Err(e) = self.host.link_del(n).await {
                tracing::warn!("GC: removing veth {n}: {e:#}");
            }
        }
        tracing::info!(removed = ?stale, "GC removed stale attachments");
        Ok(())
    }
}

/// Wait (bounded, logged) for the pod's `ovn` annotation, written by the net-controller.
async fn wait_pod_network(
    client: &kube::Client,
    ns: &str,
    pod: &str,
) -> Result<PodNetwork, CniError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = tokio::time::Instant::now();
    // A poll, not a retry of a failure, but paced (and jittered) by the shared backoff.
    let mut poll = crate::util::retry::Backoff::new(ANNOTATION_POLL);
    loop {
        let why = match tokio::time::timeout(API_TIMEOUT, api.get_opt(pod)).await {
            Err(_) => "the Kubernetes API did not answer in time".to_string(),
            Ok(Err(e)) => format!("cannot read the pod: {e}"),
            Ok(Ok(None)) => "the pod does not exist".to_string(),
            Ok(Ok(Some(p))) => match p.annotations().get(POD_NETWORK) {
                None => format!("no {POD_NETWORK:?} annotation yet"),
                Some(a) => {
                    return PodNetwork::parse(a).map_err(|e| {
                        CniError::new(
                            code::GENERIC,
                            format!(
                                "pod {ns}/{pod}: invalid {POD_NETWORK:?} annotation {a:?}: {e}"
                            ),
                        )
                    });
                }
            },
        };
        if start.elapsed() >= ANNOTATION_TIMEOUT {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "pod {ns}/{pod}: timed out after {ANNOTATION_TIMEOUT:?} waiting for its \
                     {POD_NETWORK:?} annotation: {why}"
                ),
            )
            .with_details("the annotation is written by ovnkube -net-controller; is it running?"));
        }
        tracing::info!(pod = %format!("{ns}/{pod}"), "waiting for the pod annotation: {why}");
        tokio::time::sleep(poll.failed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_wrong_port_ids() {
        let ids = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = ids(&[("iface-id", "default_web"), ("sandbox", "c1")]);
        assert!(port_id_problems("ovn1", &ok, Some("default_web"), "c1").is_empty());
        // Pod unknown (no CNI_ARGS): only the sandbox is checked.
        assert!(port_id_problems("ovn1", &ok, None, "c1").is_empty());
        let p = port_id_problems("ovn1", &ok, Some("default_db"), "c2");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("iface-id Some(\"default_web\"), expected \"default_db\""));
        assert!(p[1].contains("belongs to sandbox Some(\"c1\"), not c2"));
        let p = port_id_problems("ovn1", &ids(&[]), Some("default_web"), "c1");
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn the_newest_sandbox_takes_the_iface_id_from_older_ones() {
        let env = CniEnv {
            command: Command::Add,
            container_id: "c2".into(),
            netns: Some("/var/run/netns/p".into()),
            ifname: "eth0".into(),
            args: BTreeMap::new(),
        };
        let pn = PodNetwork {
            ip: "10.1.0.5".parse().unwrap(),
            prefix_len: 24,
            mac: "0a:58:0a:01:00:05".into(),
            gateway: "10.1.0.1".parse().unwrap(),
        };
        let a = Attachment {
            env: &env,
            netns: "/var/run/netns/p",
            host_if: "ovnnew",
            ns: "default",
            pod: "web",
            pn: &pn,
            mtu: 1400,
        };
        let render = |holders: &[&str]| {
            let h: Vec<String> = holders.iter().map(|s| s.to_string()).collect();
            port_txn(&a, "default_web", &h).render().join(" ")
        };
        let add = "-- --may-exist add-port br-int ovnnew -- set Interface ovnnew \
                   external_ids:\"iface-id\"=\"default_web\" \
                   external_ids:\"attached_mac\"=\"0a:58:0a:01:00:05\" \
                   external_ids:\"ip_address\"=\"10.1.0.5/24\" \
                   external_ids:\"sandbox\"=\"c2\"";
        assert_eq!(render(&[]), add);
        // A re-run holder (this very interface) is left alone; an older sandbox loses its id.
        assert_eq!(render(&["ovnnew"]), add);
        assert_eq!(
            render(&["ovnold", "ovnnew"]),
            format!("-- --if-exists remove Interface ovnold external_ids \"iface-id\" {add}")
        );
    }

    #[test]
    fn host_interface_names_hash_the_whole_id() {
        let long = "0123456789abcdef0123456789abcdef";
        // Two ids sharing their first 15 (and more) characters.
        let twin = "0123456789abcdef0123456789abcdeX";
        assert_ne!(host_ifname(long, "eth0"), host_ifname(twin, "eth0"));
        assert_ne!(host_ifname(long, "eth0"), &long[..15]);
        for (id, ifn) in [
            ("a", "eth0"),
            (long, "net1"),
            (long, "eth0"),
            ("abc.def_g-h", "eth0"),
        ] {
            let n = host_ifname(id, ifn);
            assert_eq!(n.len(), 15, "{n}");
            assert!(n.starts_with("ovn"), "{n}");
            assert!(n[3..].chars().all(|c| c.is_ascii_hexdigit()), "{n}");
        }
        assert_ne!(host_ifname("a", "eth0"), host_ifname("b", "eth0"));
        assert_ne!(host_ifname("a", "eth0"), host_ifname("a", "net1"));
        assert_eq!(host_ifname("a", "eth0"), host_ifname("a", "eth0"));
        assert_eq!(
            host_ifnames(long, "eth0"),
            [host_ifname(long, "eth0"), long[..15].to_string()]
        );
        assert_eq!(host_ifnames(long, "net1").len(), 1);
        assert_eq!(host_ifnames("short", "eth0").len(), 1);
    }

    #[test]
    fn only_provably_owned_interfaces_are_removed() {
        let id = "c1";
        let f = |ovs_row: Option<Option<&str>>, link, peer_in_pod| Found {
            ovs_row: ovs_row.map(|s| s.map(String::from)),
            link,
            peer_in_pod,
        };
        let r = |ovs_port, link| Removal { ovs_port, link };
        let cases = [
            ("nothing there", f(None, false, false), r(false, false)),
            (
                "our OVS port and veth",
                f(Some(Some("c1")), true, false),
                r(true, true),
            ),
            (
                "our OVS port, veth gone",
                f(Some(Some("c1")), false, false),
                r(true, false),
            ),
            (
                "another sandbox's port",
                f(Some(Some("c2")), true, true),
                r(false, false),
            ),
            (
                "a port without sandbox",
                f(Some(None), true, true),
                r(false, false),
            ),
            (
                "half-made ADD: veth to the pod",
                f(None, true, true),
                r(false, true),
            ),
            (
                "a host interface of that name",
                f(None, true, false),
                r(false, false),
            ),
        ];
        for (what, found, want) in cases {
            assert_eq!(removal(&found, id), want, "{what}");
        }
    }

    #[test]
    fn veth_peers_match_both_ways() {
        let l = |ifindex, link_index: Option<u32>, nsid: Option<i32>| Link {
            ifname: "x".into(),
            ifindex,
            link_index,
            link_netnsid: nsid,
            address: String::new(),
            mtu: 1500,
            flags: vec![],
        };
        assert!(is_veth_peer(
            &l(7, Some(2), Some(0)),
            &l(2, Some(7), Some(0))
        ));
        // Same indices but the host link's peer is in our own namespace.
        assert!(!is_veth_peer(&l(7, Some(2), None), &l(2, Some(7), Some(0))));
        assert!(!is_veth_peer(
            &l(7, Some(2), Some(0)),
            &l(2, Some(8), Some(0))
        ));
        assert!(!is_veth_peer(
            &l(7, Some(3), Some(0)),
            &l(2, Some(7), Some(0))
        ));
        // A dummy has no peer at all.
        assert!(!is_veth_peer(&l(7, None, None), &l(2, None, None)));
    }

    #[test]
    fn the_host_namespace_is_recognised() {
        assert!(is_host_netns(Path::new("/proc/self/ns/net")).unwrap());
        assert!(is_host_netns(Path::new("/proc/thread-self/ns/net")).unwrap());
        // PID 1's namespace is the host's even when the plugin runs elsewhere; where it cannot
        // be read (a sandbox), ADD refuses it as unreadable. Either way it is never a pod's.
        assert!(!matches!(
            is_host_netns(Path::new("/proc/1/ns/net")),
            Ok(false)
        ));
        assert!(is_host_netns(Path::new("/nonexistent/ns")).is_err());
        // Not a namespace at all, and certainly not ours.
        assert!(!is_host_netns(Path::new("/proc/self/ns/mnt")).unwrap());
    }
}
