//! `-init-node NAME`: local OVS configuration, waiting
//! for the node's subnet, the management port, and the CNI config file.
//!
//! Order matters: the CNI config is written last, so kubelet reports the node Ready (and
//! pods get scheduled) only once everything else is in place.

pub mod credentials;
pub mod gateway;
pub mod gateway_flows;
pub mod gateway_plan;
pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::config::{Config, ConfigError, KubernetesConfig};
use crate::exec::Exec;
use crate::host::ip::{Ip, IpWrite};
use crate::kube::Informers;
use crate::kube::annotations::{HOST_SUBNET, NODE_MGMT_PORT_MAC, parse_host_subnet};
use crate::ovn::addrs::{NodeAddrs, mac_from_ip};
use crate::ovn::names::{BR_INT, EXT_BRIDGE_DATAPATH, EXT_K8S_TOKEN};
use crate::ovn::names::{mgmt_iface, node_switch};
use crate::ovn::schema::{col, nb, vs};
use crate::ovn::{ColVal, Nb, Query, Val, Vs, Vsctl};
use crate::util::retry::{self, Retrying};
use plan::CNI_CONF_FILE;
use tokio_util::sync::CancellationToken;

/// Overrides how long the node waits for its subnet (seconds); tests shorten it.
pub const SUBNET_TIMEOUT_ENV: &str = "OVNKUBE_NODE_SUBNET_TIMEOUT";
/// Five minutes, as upstream settled on after 30 s proved too short for a busy master (300
/// attempts of 1 s).
const DEFAULT_SUBNET_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(1);
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// A running node re-checks its NB objects this often (and soon after its switch reappears).
const RECHECK: Duration = Duration::from_secs(12);
/// How often a running node looks whether its switch is (still) there: one small read.
const SWITCH_POLL: Duration = Duration::from_secs(2);
/// The same while a repair is pending because the NB turned out to be a new database.
const REPAIR_POLL: Duration = Duration::from_millis(250);
/// How long a running node polls that quickly before falling back to `SWITCH_POLL`.
const REPAIR_WINDOW: Duration = Duration::from_secs(60);

/// What the node agent works with, built by the process wiring (`app.rs`).
#[derive(Clone)]
pub struct Agent {
    pub cfg: Arc<Config>,
    pub exec: Arc<dyn Exec>,
    pub nb: Arc<dyn Nb>,
    pub client: kube::Client,
    /// The process's shared watches (the NodePort flow watcher follows Services).
    pub informers: Informers,
}

/// Initialise node `node`. Returns once the CNI config is written; any failure is an error
/// (never a silent success).
pub async fn run(ctx: &Agent, node: &str, cancel: CancellationToken) -> Result<()> {
    let vs = Vsctl(crate::ovn::vs_ctl(ctx.exec.clone()));
    // The local OVS and the NB may be (re)starting: wait for them; configuration errors
    // (e.g. no encap IP) still end the process.
    let mut r = Retrying::new(
        format!("configuring Open vSwitch for node {node}"),
        retry::DEPENDENCY,
    );
    while let Err(e) = configure_ovs(ctx, &vs, node).await {
        r.failed(e, &cancel).await?;
    }
    r.succeeded();
    let subnet = wait_for_subnet(ctx, node, subnet_timeout(), cancel.clone()).await?;
    tracing::info!(%node, %subnet, "Node {node} ready for ovn initialization with subnet {subnet}");
    let mut r = Retrying::new(
        format!("creating the management port of node {node}"),
        retry::DEPENDENCY,
    );
    let mac = loop {
        let made = async {
            let mac = mgmt_port(ctx, &vs, node, subnet).await?;
            annotate_mgmt_mac(ctx, node, &mac).await?;
            anyhow::Ok(mac)
        };
        match made.await {
            Ok(mac) => break mac,
            Err(e) => r.failed(e, &cancel).await?,
        }
    };
    r.succeeded();
    let mut gw_spec = None;
    if ctx.cfg.gateway.init {
        // OVS, the NB (and ovn-northd's IPAM) may be restarting: wait for them; a bad
        // gateway flag is a configuration error and ends the process.
        let mut r = Retrying::new(
            format!("initialising the gateway of node {node}"),
            retry::DEPENDENCY,
        );
        let gw = loop {
            match gateway::init(ctx, node, subnet).await {
                Ok(gw) => break gw,
                Err(e) => r
                    .failed(e, &cancel)
                    .await
                    .with_context(|| format!("initialising the gateway of node {node}"))?,
            }
        };
        r.succeeded();
        // The process stays alive with -nodeport (app.rs); the flow watcher lives in it.
        if let (Some(f), true) = (gw.flows, ctx.cfg.nodeport) {
            tokio::spawn(f.run(ctx.informers.clone(), cancel.clone()));
        }
        gw_spec = Some(gw.spec);
    }
    let path = write_cni_conf(&ctx.cfg)?;
    tracing::info!(%node, path = %path.display(), "node initialised; CNI config written");
    // A process that stays alive (app.rs) keeps the NB objects it created in place, and the
    // plugin's credential copies current.
    if ctx.cfg.nodeport || ctx.cfg.ha {
        let copies = credentials::copies(&ctx.cfg);
        if !copies.is_empty() {
            tokio::spawn(credentials::refresh(
                copies,
                credentials::REFRESH,
                cancel.clone(),
            ));
        }
        let keeper = NbKeeper {
            ctx: ctx.clone(),
            node: node.to_string(),
            subnet,
            mac,
            gateway: gw_spec,
        };
        tokio::spawn(keeper.run(cancel));
    }
    Ok(())
}

/// Keeps the NB objects a running node owns (the management port's logical port and, with
/// `-init-gateways`, the gateway) as the init made them: if the NB database is lost or
/// someone deletes them, they come back without restarting the node. Each re-check is the
/// init's own read-diff-write, so a healthy system sees reads only, no NB transaction.
struct NbKeeper {
    ctx: Agent,
    node: String,
    subnet: Ipv4Net,
    mac: String,
    gateway: Option<gateway_plan::GatewaySpec>,
}

impl NbKeeper {
    async fn run(mut self, cancel: CancellationToken) {
        let mut since_check = Duration::ZERO;
        let mut switch_was_there = true;
        // A new NB database lost everything this node made: repair as soon as the master has
        // put the node switch back, not at the next period.
        let mut sig = self.ctx.nb.signals();
        let mut database = sig.borrow_and_update().database;
        let mut repair = false;
        // The quick polling of a pending repair is bounded; the period takes over after it.
        let mut repair_until = tokio::time::Instant::now();
        // Logged once while it keeps failing, and once when it works again.
        let mut outage = retry::Outage::new(format!(
            "re-checking the NB objects of node {} (every {RECHECK:?})",
            self.node
        ));
        loop {
            if repair && tokio::time::Instant::now() >= repair_until {
                repair = false;
            }
            let poll = if repair { REPAIR_POLL } else { SWITCH_POLL };
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                now = crate::ovn::signals::next_change(&mut sig) => {
                    if now.database != database {
                        database = now.database;
                        tracing::info!(node = %self.node, "new NB database: re-creating the node's NB objects once its switch is back");
                        repair = true;
                        repair_until = tokio::time::Instant::now() + REPAIR_WINDOW;
                    }
                    continue;
                }
                _ = cancel.cancelled() => return,
            }
            since_check += poll;
            let there = tokio::select! {
                r = self.switch_ready() => r,
                _ = cancel.cancelled() => return,
            };
            // The master just (re)created the switch: repair now rather than at the period.
            let due = repair || since_check >= RECHECK || (there && !switch_was_there);
            switch_was_there = there;
            if !due || !there {
                continue;
            }
            since_check = Duration::ZERO;
            tokio::select! {
                r = self.recheck() => match r {
                    Ok(()) => {
                        repair = false;
                        outage.succeeded()
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        outage.failed(1, &e);
                        tracing::debug!(
                            node = %self.node, error = %e,
                            "re-checking the node's NB objects failed; retrying in {RECHECK:?}"
                        );
                    }
                },
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Whether the node switch exists with this node's subnet (what the LSP needs).
    async fn switch_ready(&self) -> bool {
        match check_switch(self.ctx.nb.as_ref(), &self.node, self.subnet).await {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!(node = %self.node, "not re-checking the NB objects: {why}");
                false
            }
        }
    }

    async fn recheck(&mut self) -> Result<()> {
        let nb = self.ctx.nb.as_ref();
        let node = self.node.as_str();
        if ensure_mgmt_lsp(nb, node, &self.mac, self.subnet).await? {
            tracing::info!(
                %node, port = %crate::ovn::names::mgmt_port(node),
                "repaired the management port's logical port in the NB database"
            );
        }
        if let Some(spec) = self.gateway.as_mut() {
            let n = gateway::recheck(nb, spec)
                .await
                .with_context(|| format!("re-checking the gateway of node {node}"))?;
            if n > 0 {
                tracing::info!(
                    %node, ops = n, join_ip = %spec.join_ip,
                    "repaired gateway router {} in the NB database",
                    crate::ovn::names::gateway_router(node)
                );
            }
        }
        Ok(())
    }
}

/// Records the management port's MAC on the Node (`NODE_MGMT_PORT_MAC`), so the master can
/// own the port's logical switch port and re-create it after an NB loss without this agent.
/// Written only when it differs.
async fn annotate_mgmt_mac(ctx: &Agent, node: &str, mac: &str) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let current = tokio::time::timeout(API_TIMEOUT, api.get(node))
        .await
        .map_err(|_| anyhow::anyhow!("the Kubernetes API did not answer GET node {node} in time"))?
        .with_context(|| format!("reading node {node} to record its management port MAC"))?;
    let have = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_MGMT_PORT_MAC));
    if have.is_some_and(|v| v.eq_ignore_ascii_case(mac)) {
        return Ok(());
    }
    let patch = serde_json::json!({"metadata": {"annotations": {NODE_MGMT_PORT_MAC: mac}}});
    tokio::time::timeout(
        API_TIMEOUT,
        api.patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the Kubernetes API did not answer PATCH node {node} in time"))?
    .with_context(|| format!("annotating node {node} with {NODE_MGMT_PORT_MAC}={mac}"))?;
    tracing::info!(%node, %mac, "recorded the management port MAC on the node");
    Ok(())
}

/// `Ok` when logical switch `node` exists with `subnet`; `Err` says what is not right.
async fn check_switch(nb: &dyn Nb, node: &str, subnet: Ipv4Net) -> Result<(), String> {
    let sw = node_switch(node);
    let rows = nb
        .query(&[Query::find(
            nb::LOGICAL_SWITCH,
            &[col::NAME, col::OTHER_CONFIG],
            vec![ColVal::set(col::NAME, Val::str(sw.as_str()))],
        )])
        .await
        .map_err(|e| format!("cannot read the NB database: {e:#}"))?;
    let Some(row) = rows.first().and_then(|t| t.first()) else {
        return Err(format!("logical switch {sw} is not in the NB database"));
    };
    match row.map_get(col::OTHER_CONFIG, "subnet") {
        Some(s) if s == subnet.to_string() => Ok(()),
        other => Err(format!(
            "logical switch {sw} has subnet {other:?}, this node was set up with {subnet}"
        )),
    }
}

/// Writes the management port's logical port when it is missing or differs. Returns whether
/// it wrote.
async fn ensure_mgmt_lsp(nb: &dyn Nb, node: &str, mac: &str, subnet: Ipv4Net) -> Result<bool> {
    let addrs = NodeAddrs::new(subnet);
    let port = crate::ovn::names::mgmt_port(node);
    let by_name = |t: &str, cols: &[&str], n: &str| {
        Query::find(t, cols, vec![ColVal::set(col::NAME, Val::str(n))])
    };
    let t = nb
        .query(&[
            by_name(nb::LOGICAL_SWITCH_PORT, &[col::NAME, col::ADDRESSES], &port),
            by_name(
                nb::LOGICAL_SWITCH,
                &[col::NAME, col::PORTS],
                &node_switch(node),
            ),
        ])
        .await
        .context("reading the management port's logical port from the NB database")?;
    let lsp = t.first().and_then(|r| r.first());
    let lsp_addrs = lsp.map(|r| r.set(col::ADDRESSES)).unwrap_or_default();
    let ports = t
        .get(1)
        .and_then(|r| r.first())
        .map(|r| r.set(col::PORTS))
        .unwrap_or_default();
    let want = plan::mgmt_lsp_address(mac, &addrs);
    if plan::mgmt_lsp_current(
        lsp.map(|r| (r.uuid.as_str(), &lsp_addrs[..])),
        &ports,
        &want,
    ) {
        return Ok(false);
    }
    nb.transact(&plan::mgmt_nb_txn(node, mac, &addrs))
        .await
        .with_context(|| format!("creating the management port's logical port on switch {node}"))?;
    Ok(true)
}

fn subnet_timeout() -> Duration {
    std::env::var(SUBNET_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_SUBNET_TIMEOUT)
}

/// Step 1: the Open_vSwitch external_ids, in one transaction.
async fn configure_ovs(ctx: &Agent, vs: &Vsctl, node: &str) -> Result<()> {
    let rows = vs
        .query(&[Query::list(vs::OPEN_VSWITCH, &[col::EXTERNAL_IDS])])
        .await
        .context("reading the local Open vSwitch database: is ovsdb-server running?")?;
    let existing: BTreeMap<String, String> = rows
        .first()
        .and_then(|t| t.first())
        .map(|r| r.map(col::EXTERNAL_IDS))
        .unwrap_or_default();
    let encap_ip = encap_ip(&ctx.cfg, node).await?;
    let api_server = api_server_url(&ctx.cfg.kubernetes).await?;
    // The copies exist before OVS points the plugin at them.
    credentials::sync(&credentials::copies(&ctx.cfg))?;
    let txn = plan::external_ids_txn(&ctx.cfg, node, encap_ip, &api_server, &existing);
    txn.validate()?;
    vs.transact(&txn)
        .await
        .context("error setting OVS external IDs")?;
    write_token(ctx.cfg.kubernetes.token.as_deref()).await?;
    // The token is a secret: log which keys were written, never their values.
    tracing::info!(
        %node, %encap_ip, api_server = %api_server,
        "set Open_vSwitch external_ids (ovn-encap-*, k8s-*{}{})",
        if ctx.cfg.ovn_south.client.client_target().is_some() { ", ovn-remote" } else { "" },
        if ctx.cfg.ovn_north.client.client_target().is_some() { ", ovn-nb" } else { "" },
    );
    Ok(())
}

/// `external_ids:k8s-api-token` through an OVSDB connection to the local Open vSwitch
/// database, never on a command line (any local user can read `/proc/PID/cmdline`).
async fn write_token(token: Option<&str>) -> Result<()> {
    let Some(ops) = plan::token_ops(token) else {
        return Ok(());
    };
    let remote = crate::ovn::jsonrpc::Remote::local_ovs();
    let client = crate::ovn::jsonrpc::Client::start(remote.clone(), API_TIMEOUT);
    client
        .transact("Open_vSwitch", ops)
        .await
        .with_context(|| {
            format!(
                "writing external_ids:{} to the Open vSwitch database at {remote} (is \
                 ovsdb-server running? OVS_RUNDIR selects its directory)",
                EXT_K8S_TOKEN
            )
        })?;
    Ok(())
}

/// `-encap-ip`, else the first non-loopback IPv4 address the node name resolves to.
async fn encap_ip(cfg: &Config, node: &str) -> Result<IpAddr> {
    if let Some(ip) = cfg.encap_ip {
        return Ok(ip);
    }
    let found = tokio::net::lookup_host((node, 0))
        .await
        .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>());
    let addrs = found.as_deref().unwrap_or_default();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .copied()
        .ok_or_else(|| {
            let what = match &found {
                Ok(v) if v.is_empty() => "resolves to no address".to_string(),
                Ok(v) => format!(
                    "resolves only to {}",
                    v.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => format!("does not resolve ({e})"),
            };
            anyhow::Error::new(ConfigError::new(format!(
                "cannot determine the tunnel (encap) IP of node {node}: its name {what}, and a \
                 non-loopback IPv4 address is needed; pass -encap-ip=<node IP>"
            )))
        })
}

/// The API server URL the CNI plugin should use: the kubeconfig's cluster (when one is
/// given) or `-k8s-apiserver`.
async fn api_server_url(k: &KubernetesConfig) -> Result<String> {
    let Some(path) = &k.kubeconfig else {
        return Ok(k.apiserver.clone());
    };
    // A kubeconfig that cannot be read or loaded is a configuration error.
    let config_err = |what: &str, e: &dyn std::fmt::Display| {
        anyhow::Error::new(ConfigError::new(format!(
            "{what} kubeconfig {}: {e}",
            path.display()
        )))
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| config_err("reading", &e))?;
    let c = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| config_err("loading", &e))?;
    Ok(c.cluster_url.to_string().trim_end_matches('/').to_string())
}

/// Step 2: wait until the master has given the node a subnet (annotation) AND created its
/// logical switch with that subnet. Success is an explicit value, never "the loop ended".
async fn wait_for_subnet(
    ctx: &Agent,
    node: &str,
    timeout: Duration,
    cancel: CancellationToken,
) -> Result<Ipv4Net> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let start = tokio::time::Instant::now();
    let mut attempt = 0u32;
    let mut last_reason = String::new();
    loop {
        attempt += 1;
        let reason = match check_subnet(&api, ctx.nb.as_ref(), node).await {
            Ok(subnet) => return Ok(subnet),
            Err(why) => why,
        };
        let waited = start.elapsed();
        if waited >= timeout {
            bail!(
                "node {node} got no subnet within {timeout:?} ({attempt} attempts): {reason}. \
                 Check that the master (ovnkube -init-master) is running and sees node {node}"
            );
        }
        // Log when the situation changes and every 10 attempts, not every second.
        if reason != last_reason || attempt.is_multiple_of(10) {
            tracing::info!(
                %node, attempt, waited_s = waited.as_secs(), timeout_s = timeout.as_secs(),
                "waiting for the node's subnet: {reason}"
            );
        }
        last_reason = reason;
        tokio::select! {
            _ = tokio::time::sleep(POLL.min(timeout.saturating_sub(waited))) => {}
            _ = cancel.cancelled() => bail!("stopped while waiting for the subnet of node {node}"),
        }
    }
}

/// One check; `Err` says what is still missing.
async fn check_subnet(api: &Api<Node>, nb: &dyn Nb, node: &str) -> Result<Ipv4Net, String> {
    let got = tokio::time::timeout(API_TIMEOUT, api.get_opt(node))
        .await
        .map_err(|_| format!("the Kubernetes API did not answer GET node {node} in time"))?;
    let obj = match got {
        Ok(Some(n)) => n,
        Ok(None) => return Err(format!("node {node} does not exist in the Kubernetes API")),
        Err(e) => {
            return Err(format!(
                "cannot read node {node} from the Kubernetes API: {e}"
            ));
        }
    };
    let ann = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HOST_SUBNET))
        .ok_or_else(|| format!("node {node} has no {HOST_SUBNET} annotation yet"))?;
    let subnet = parse_host_subnet(ann)?;
    let sw = node_switch(node);
    let rows = nb
        .query(&[Query::find(
            nb::LOGICAL_SWITCH,
            &[col::NAME, col::OTHER_CONFIG],
            vec![ColVal::set(col::NAME, Val::str(sw.as_str()))],
        )])
        .await
        .map_err(|e| format!("cannot read the NB database: {e:#}"))?;
    let Some(row) = rows.first().and_then(|t| t.first()) else {
        return Err(format!(
            "logical switch {sw} (subnet {subnet}) is not in the NB database yet"
        ));
    };
    match row.map_get(col::OTHER_CONFIG, "subnet") {
        Some(s) if s == subnet.to_string() => Ok(subnet),
        other => Err(format!(
            "logical switch {sw} has subnet {other:?}, the annotation says {subnet}"
        )),
    }
}

/// Step 3: the management port `k8s-<node>` (OVS internal interface + LSP), its address,
/// MAC and routes. Every step is idempotent, so re-running the node init is safe. Returns
/// the port's MAC.
async fn mgmt_port(ctx: &Agent, vs: &Vsctl, node: &str, subnet: Ipv4Net) -> Result<String> {
    let addrs = NodeAddrs::new(subnet);
    let mac = mac_from_ip(addrs.mgmt.addr());
    let iface = mgmt_iface(node);
    let rows = vs
        .query(&[
            Query::find(
                vs::BRIDGE,
                &[col::NAME, col::DATAPATH_TYPE],
                vec![ColVal::set(col::NAME, Val::str(BR_INT))],
            ),
            Query::list(vs::OPEN_VSWITCH, &[col::EXTERNAL_IDS]),
        ])
        .await
        .context("reading br-int from the local Open vSwitch database")?;
    let br = rows.first().and_then(|t| t.first());
    // A new br-int gets the datapath type ovn-controller would give it (G15: a userspace-only
    // vswitchd cannot open a `system` bridge, and ovs-vsctl would not say so).
    let wanted_dp = rows
        .get(1)
        .and_then(|t| t.first())
        .and_then(|r| r.map_get(col::EXTERNAL_IDS, EXT_BRIDGE_DATAPATH));
    let txn = plan::mgmt_vs_txn(node, ctx.cfg.mtu, &mac, br.is_some(), wanted_dp.as_deref());
    vs.transact(&txn)
        .await
        .with_context(|| format!("creating the management port {iface} on {BR_INT}"))?;

    ctx.nb
        .transact(&plan::mgmt_nb_txn(node, &mac, &addrs))
        .await
        .with_context(|| format!("creating the management port's logical port on switch {node}"))?;

    // vswitchd creates the internal interface asynchronously after the transaction.
    let ip = Ip::host(ctx.exec.clone());
    let link = ip
        .wait_link(&iface, Duration::from_secs(20))
        .await
        .with_context(|| format!("management port {iface}"))?;
    let ctxmsg = || format!("configuring management port {iface}");
    if !link.address.eq_ignore_ascii_case(&mac) {
        ip.apply(&IpWrite::LinkAddress {
            dev: iface.clone(),
            mac: mac.clone(),
        })
        .await
        .with_context(ctxmsg)?;
    }
    ip.apply(&IpWrite::link_up(&iface))
        .await
        .with_context(ctxmsg)?;
    for stale in ip
        .addrs(&iface)
        .await?
        .into_iter()
        .filter(|a| *a != addrs.mgmt)
    {
        ip.apply(&IpWrite::addr_del(&iface, stale))
            .await
            .with_context(ctxmsg)?;
    }
    ip.apply(&IpWrite::addr_replace(&iface, addrs.mgmt))
        .await
        .with_context(ctxmsg)?;
    let gw = addrs.gateway.addr().to_string();
    for dst in plan::mgmt_routes(&ctx.cfg) {
        ip.apply(&IpWrite::RouteVia {
            dst: Some(dst),
            via: addrs.gateway.addr(),
            dev: iface.clone(),
        })
        .await
        .with_context(|| format!("routing {dst} via {gw} on management port {iface}"))?;
    }
    tracing::info!(
        %node, %iface, %mac, address = %addrs.mgmt, gateway = %gw,
        "management port configured"
    );
    Ok(mac)
}

/// Step 4: the CNI config, written atomically (exclusive temp file + rename). Returns
/// its path.
pub fn write_cni_conf(cfg: &Config) -> Result<std::path::PathBuf> {
    let dir = &cfg.cni.conf_dir;
    let path = dir.join(CNI_CONF_FILE);
    let text = plan::cni_conf(cfg);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the CNI config directory {}", dir.display()))?;
    crate::util::files::write_atomic(&path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing the CNI config {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Invocation, parse_args_with};
    use std::path::Path;

    #[test]
    fn cni_conf_is_written_atomically_and_only_when_changed() {
        let dir = std::env::temp_dir().join(format!("ovnkube-cniconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = [
            "-init-node=n1".to_string(),
            format!("-cni-conf-dir={}", dir.join("net.d").display()),
        ];
        let Invocation::Run(cfg) = parse_args_with(args, Path::new("/nonexistent"), None).unwrap()
        else {
            panic!()
        };
        let p = write_cni_conf(&cfg).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"cniVersion\":\"1.1.0\""), "{text}");
        // A longer stale file is replaced whole (the reference did not truncate).
        std::fs::write(&p, format!("{text}{}", " ".repeat(100))).unwrap();
        write_cni_conf(&cfg).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        let names: Vec<_> = std::fs::read_dir(dir.join("net.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp file left behind: {names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
