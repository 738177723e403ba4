//! Merging (built-in default < config file < command line) and validation (in the reference's
//! order, so the first error reported is the same, then the extensions), producing the final
//! [`Config`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use super::flags::Flags;
use super::ovn::parse_address;
use super::{
    ClusterSubnet, CniConfig, Config, ConfigError, GatewayConfig, KubernetesConfig, LoggingConfig,
    MasterHaConfig, OvnAuth, OvnDbConfig, OvnScheme,
};

/// One source of settings (file or command line); `None` = not given (empty / 0 never override).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Layer {
    pub mtu: Option<i64>,
    pub conntrack_zone: Option<i64>,
    pub encap_type: Option<String>,
    pub encap_ip: Option<String>,
    pub loglevel: Option<i64>,
    pub logfile: Option<String>,
    pub cni_conf_dir: Option<String>,
    pub cni_plugin: Option<String>,
    pub win_hnsnetwork_id: Option<String>,
    pub k8s_kubeconfig: Option<String>,
    pub k8s_apiserver: Option<String>,
    pub k8s_cacert: Option<String>,
    pub k8s_token: Option<String>,
    pub k8s_token_file: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub ha: HaLayer,
    pub nb: OvnLayer,
    pub sb: OvnLayer,
}

/// `[masterha]` / `-ha-election-*`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct HaLayer {
    pub lease_duration: Option<i64>,
    pub renew_deadline: Option<i64>,
    pub retry_period: Option<i64>,
    pub lease_namespace: Option<String>,
    pub lease_name: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct OvnLayer {
    pub address: Option<String>,
    pub client_privkey: Option<String>,
    pub client_cert: Option<String>,
    pub client_cacert: Option<String>,
    pub server_privkey: Option<String>,
    pub server_cert: Option<String>,
    pub server_cacert: Option<String>,
}

fn s(v: &Option<String>) -> Option<String> {
    v.clone().filter(|v| !v.is_empty())
}

fn i(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

impl Layer {
    pub(crate) fn from_flags(f: &Flags) -> Layer {
        let ovn = |a: &Option<String>,
                   cp: &Option<String>,
                   cc: &Option<String>,
                   cca: &Option<String>,
                   sp: &Option<String>,
                   sc: &Option<String>,
                   sca: &Option<String>| OvnLayer {
            address: s(a),
            client_privkey: s(cp),
            client_cert: s(cc),
            client_cacert: s(cca),
            server_privkey: s(sp),
            server_cert: s(sc),
            server_cacert: s(sca),
        };
        Layer {
            mtu: i(f.mtu),
            conntrack_zone: i(f.conntrack_zone),
            encap_type: s(&f.encap_type),
            encap_ip: s(&f.encap_ip),
            loglevel: i(f.loglevel),
            logfile: s(&f.logfile),
            cni_conf_dir: s(&f.cni_conf_dir),
            cni_plugin: s(&f.cni_plugin),
            win_hnsnetwork_id: s(&f.win_hnsnetwork_id),
            k8s_kubeconfig: s(&f.k8s_kubeconfig),
            k8s_apiserver: s(&f.k8s_apiserver),
            k8s_cacert: s(&f.k8s_cacert),
            k8s_token: s(&f.k8s_token),
            k8s_token_file: s(&f.k8s_token_file),
            metrics_bind_address: s(&f.metrics_bind_address),
            ha: HaLayer {
                lease_duration: i(f.ha_election_lease_duration),
                renew_deadline: i(f.ha_election_renew_deadline),
                retry_period: i(f.ha_election_retry_period),
                lease_namespace: s(&f.ha_election_lease_namespace),
                lease_name: s(&f.ha_election_lease_name),
            },
            nb: ovn(
                &f.nb_address,
                &f.nb_client_privkey,
                &f.nb_client_cert,
                &f.nb_client_cacert,
                &f.nb_server_privkey,
                &f.nb_server_cert,
                &f.nb_server_cacert,
            ),
            sb: ovn(
                &f.sb_address,
                &f.sb_client_privkey,
                &f.sb_client_cert,
                &f.sb_client_cacert,
                &f.sb_server_privkey,
                &f.sb_server_cert,
                &f.sb_server_cacert,
            ),
        }
    }
}

/// Where a merged value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Default,
    Flag,
    File,
}

/// A merged value plus enough context to name it in an error.
struct Setting<T> {
    value: T,
    origin: Origin,
    flag: &'static str,
    section: &'static str,
    key: &'static str,
}

struct Ctx<'a> {
    file: Option<&'a Path>,
}

impl Ctx<'_> {
    /// `-mtu`, `[default] mtu in config file /x`, or `-mtu (default)`.
    fn label<T>(&self, st: &Setting<T>) -> String {
        match (&st.origin, self.file) {
            (Origin::Flag, _) => format!("-{}", st.flag),
            (Origin::File, Some(p)) => {
                format!("[{}] {} in config file {}", st.section, st.key, p.display())
            }
            _ => format!("-{} (default)", st.flag),
        }
    }

    fn invalid<T>(&self, st: &Setting<T>, shown: &str, why: &str) -> ConfigError {
        ConfigError::new(format!(
            "invalid value {} for {}: {why}",
            super::shown(shown),
            self.label(st)
        ))
    }
}

/// CLI over file; `None` if neither gives it.
fn pick<T: Clone>(
    cli: &Option<T>,
    file: &Option<T>,
    flag: &'static str,
    section: &'static str,
    key: &'static str,
) -> Option<Setting<T>> {
    let (value, origin) = match (cli, file) {
        (Some(v), _) => (v.clone(), Origin::Flag),
        (None, Some(v)) => (v.clone(), Origin::File),
        (None, None) => return None,
    };
    Some(Setting {
        value,
        origin,
        flag,
        section,
        key,
    })
}

/// CLI over file over a built-in default.
fn pick_or<T: Clone>(
    cli: &Option<T>,
    file: &Option<T>,
    default: T,
    flag: &'static str,
    section: &'static str,
    key: &'static str,
) -> Setting<T> {
    pick(cli, file, flag, section, key).unwrap_or(Setting {
        value: default,
        origin: Origin::Default,
        flag,
        section,
        key,
    })
}

/// Builds and validates the final configuration. The sections are checked in the reference's
/// order, so the first error reported is the same.
pub(crate) fn build(
    flags: &Flags,
    file: Option<(&Path, Layer)>,
    kube_defaults: Option<KubernetesConfig>,
) -> Result<Config, ConfigError> {
    let cli = Layer::from_flags(flags);
    let (file_path, fl) = match file {
        Some((p, l)) => (Some(p), l),
        None => (None, Layer::default()),
    };
    let ctx = Ctx { file: file_path };
    let defaults = Config::default();

    let core = build_core(&ctx, &cli, &fl, &defaults)?;
    let cni = build_cni(&ctx, &cli, &fl, &defaults.cni)?;
    let metrics_bind_address = build_metrics_bind(&ctx, &cli, &fl)?;
    let master_ha = build_master_ha(&ctx, &cli.ha, &fl.ha)?;
    // In a pod with nothing else configured, the service account is the default.
    let in_cluster = match kube_defaults {
        Some(_) => None,
        None => in_cluster_from(|k| std::env::var(k).ok(), Path::new(SERVICE_ACCOUNT_DIR)),
    };
    let kubernetes = build_kubernetes(
        &ctx,
        &cli,
        &fl,
        kube_defaults.unwrap_or_default(),
        in_cluster,
    )?;
    let ovn_north = build_ovn(&ctx, &cli.nb, &fl.nb, "nb", "ovnnorth", "northbound")?;
    let ovn_south = build_ovn(&ctx, &cli.sb, &fl.sb, "sb", "ovnsouth", "southbound")?;
    let only = build_ovnkube_only(flags, &defaults)?;

    Ok(Config {
        cluster_subnets: only.cluster_subnets,
        service_cidr: only.service_cidr,
        net_controller: flags.net_controller,
        init_master: only.init_master,
        init_node: only.init_node,
        remove_node: only.remove_node,
        pidfile: s(&flags.pidfile).map(PathBuf::from),
        gateway: GatewayConfig {
            init: flags.init_gateways,
            interface: s(&flags.gateway_interface),
            nexthop: only.nexthop,
            spare_interface: flags.gateway_spare_interface,
        },
        nodeport: flags.nodeport,
        ha: flags.ha,
        config_file: file_path.map(Path::to_path_buf),
        mtu: core.mtu,
        conntrack_zone: core.conntrack_zone,
        encap_type: core.encap_type,
        encap_ip: core.encap_ip,
        logging: core.logging,
        cni,
        kubernetes,
        ovn_north,
        ovn_south,
        metrics_bind_address,
        master_ha,
        cni_credentials_dir: only.cni_credentials_dir,
    })
}

/// The `[default]` and `[logging]` settings that have a file key, validated.
struct Core {
    mtu: u32,
    conntrack_zone: u32,
    encap_type: String,
    encap_ip: Option<IpAddr>,
    logging: LoggingConfig,
}

/// `[default]` numbers and encap, `[logging]`; checked in the order mtu, conntrack zone, log
/// level, encap type, encap IP.
fn build_core(
    ctx: &Ctx<'_>,
    cli: &Layer,
    fl: &Layer,
    defaults: &Config,
) -> Result<Core, ConfigError> {
    let mtu = match pick(&cli.mtu, &fl.mtu, "mtu", "default", "mtu") {
        None => defaults.mtu,
        Some(st) => in_range(ctx, &st, 576, 65535)?,
    };
    let ct = pick(
        &cli.conntrack_zone,
        &fl.conntrack_zone,
        "conntrack-zone",
        "default",
        "conntrack-zone",
    );
    let conntrack_zone = match ct {
        None => defaults.conntrack_zone,
        Some(st) => in_range(ctx, &st, 1, 65535)?,
    };
    let level = match pick(
        &cli.loglevel,
        &fl.loglevel,
        "loglevel",
        "logging",
        "loglevel",
    ) {
        None => defaults.logging.level,
        Some(st) => log_level(ctx, &st)?,
    };
    let encap_type = pick_or(
        &cli.encap_type,
        &fl.encap_type,
        defaults.encap_type.clone(),
        "encap-type",
        "default",
        "encap-type",
    );
    if !ENCAP_TYPES.contains(&encap_type.value.as_str()) {
        return Err(ctx.invalid(
            &encap_type,
            &encap_type.value,
            "must be geneve, vxlan or stt (the tunnel types OVN supports)",
        ));
    }
    let encap_ip = match pick(
        &cli.encap_ip,
        &fl.encap_ip,
        "encap-ip",
        "default",
        "encap-ip",
    ) {
        None => None,
        Some(st) => Some(IpAddr::V4(
            parse_unicast_v4(&st.value).map_err(|why| ctx.invalid(&st, &st.value, why))?,
        )),
    };
    let file = pick(&cli.logfile, &fl.logfile, "logfile", "logging", "logfile")
        .map(|st| PathBuf::from(st.value));
    Ok(Core {
        mtu,
        conntrack_zone,
        encap_type: encap_type.value,
        encap_ip,
        logging: LoggingConfig { level, file },
    })
}

/// A log level from 1 (fatal) up; levels above debug (5) mean debug, as in the reference.
fn log_level(ctx: &Ctx<'_>, st: &Setting<i64>) -> Result<u8, ConfigError> {
    if st.value < 1 {
        return Err(ctx.invalid(
            st,
            &st.value.to_string(),
            "must be between 1 (fatal) and 5 (debug)",
        ));
    }
    Ok(u8::try_from(st.value.min(5)).unwrap_or(5))
}

/// `[cni]`: the plugin is a name in the CNI bin directory, never a path.
fn build_cni(
    ctx: &Ctx<'_>,
    cli: &Layer,
    fl: &Layer,
    defaults: &CniConfig,
) -> Result<CniConfig, ConfigError> {
    let conf_dir = pick_or(
        &cli.cni_conf_dir,
        &fl.cni_conf_dir,
        defaults.conf_dir.display().to_string(),
        "cni-conf-dir",
        "cni",
        "conf-dir",
    );
    let plugin = pick_or(
        &cli.cni_plugin,
        &fl.cni_plugin,
        defaults.plugin.clone(),
        "cni-plugin",
        "cni",
        "plugin",
    );
    if plugin.value.contains('/') {
        return Err(ctx.invalid(
            &plugin,
            &plugin.value,
            "must be a plugin name (a file in the CNI bin directory), not a path",
        ));
    }
    let win_hnsnetwork_id = pick(
        &cli.win_hnsnetwork_id,
        &fl.win_hnsnetwork_id,
        "win-hnsnetwork-id",
        "cni",
        "win-hnsnetwork-id",
    )
    .map(|st| st.value);
    Ok(CniConfig {
        conf_dir: PathBuf::from(conf_dir.value),
        plugin: plugin.value,
        win_hnsnetwork_id,
    })
}

/// `-metrics-bind-address`: an IP:PORT socket address when given.
fn build_metrics_bind(
    ctx: &Ctx<'_>,
    cli: &Layer,
    fl: &Layer,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let Some(st) = pick(
        &cli.metrics_bind_address,
        &fl.metrics_bind_address,
        "metrics-bind-address",
        "default",
        "metrics-bind-address",
    ) else {
        return Ok(None);
    };
    st.value
        .parse::<std::net::SocketAddr>()
        .map(Some)
        .map_err(|_| {
            ctx.invalid(
                &st,
                &st.value,
                "must be IP:PORT, e.g. 127.0.0.1:9409 or [::]:9409",
            )
        })
}

/// The settings only ovnkube's command line has (no config-file keys), validated.
struct OvnkubeOnly {
    cluster_subnets: Vec<ClusterSubnet>,
    service_cidr: Option<Ipv4Net>,
    nexthop: Option<Ipv4Addr>,
    cni_credentials_dir: Option<PathBuf>,
    init_master: Option<String>,
    init_node: Option<String>,
    remove_node: Option<String>,
}

/// ovnkube-only flags; always parsed, never a panic.
fn build_ovnkube_only(flags: &Flags, defaults: &Config) -> Result<OvnkubeOnly, ConfigError> {
    let cluster_subnets = match s(&flags.cluster_subnet) {
        None => defaults.cluster_subnets.clone(),
        Some(v) => parse_cluster_subnets(&v)?,
    };
    let service_cidr = match s(&flags.service_cluster_ip_range) {
        None => None,
        Some(v) => Some(parse_service_cidr(&v, &cluster_subnets)?),
    };
    let nexthop = match s(&flags.gateway_nexthop) {
        None => None,
        Some(v) => Some(v.parse::<Ipv4Addr>().map_err(|_| {
            ConfigError::new(format!(
                "invalid value {v:?} for flag -gateway-nexthop: must be an IPv4 address"
            ))
        })?),
    };
    let cni_credentials_dir = match s(&flags.cni_credentials_dir) {
        None => None,
        Some(v) => Some(credentials_dir(&v)?),
    };
    Ok(OvnkubeOnly {
        cluster_subnets,
        service_cidr,
        nexthop,
        cni_credentials_dir,
        init_master: node_name_flag(&flags.init_master, "init-master")?,
        init_node: node_name_flag(&flags.init_node, "init-node")?,
        remove_node: node_name_flag(&flags.remove_node, "remove-node")?,
    })
}

/// `-cni-credentials-dir`: an absolute host path with no `..` component.
fn credentials_dir(v: &str) -> Result<PathBuf, ConfigError> {
    if Path::new(v).is_absolute() && !v.split('/').any(|c| c == "..") {
        return Ok(PathBuf::from(v));
    }
    Err(ConfigError::new(format!(
        "invalid value {} for flag -cni-credentials-dir: must be an absolute path without '..' (a host directory such as /var/run/ovn-kubernetes/credentials)",
        super::shown(v)
    )))
}

/// `-ha-election-*` / `[masterha]`: whole positive seconds, renew deadline < lease duration
/// (the leader stops writing before a standby may take over) and retry period < renew
/// deadline (a renewal can fail and be retried before the deadline).
fn build_master_ha(ctx: &Ctx, cli: &HaLayer, fl: &HaLayer) -> Result<MasterHaConfig, ConfigError> {
    let d = MasterHaConfig::default();
    let lease = ha_secs(
        ctx,
        pick_or(
            &cli.lease_duration,
            &fl.lease_duration,
            d.lease_duration.as_secs() as i64,
            "ha-election-lease-duration",
            "masterha",
            "election-lease-duration",
        ),
    )?;
    let renew = ha_secs(
        ctx,
        pick_or(
            &cli.renew_deadline,
            &fl.renew_deadline,
            d.renew_deadline.as_secs() as i64,
            "ha-election-renew-deadline",
            "masterha",
            "election-renew-deadline",
        ),
    )?;
    let retry = ha_secs(
        ctx,
        pick_or(
            &cli.retry_period,
            &fl.retry_period,
            d.retry_period.as_secs() as i64,
            "ha-election-retry-period",
            "masterha",
            "election-retry-period",
        ),
    )?;
    check_ha_order(ctx, &lease, &renew, &retry)?;
    let namespace = pick_or(
        &cli.lease_namespace,
        &fl.lease_namespace,
        d.lease_namespace.clone(),
        "ha-election-lease-namespace",
        "masterha",
        "election-lease-namespace",
    );
    let name = pick(
        &cli.lease_name,
        &fl.lease_name,
        "ha-election-lease-name",
        "masterha",
        "election-lease-name",
    );
    check_lease_names(ctx, &namespace, name.as_ref())?;
    Ok(MasterHaConfig {
        lease_duration: lease.1,
        renew_deadline: renew.1,
        retry_period: retry.1,
        lease_namespace: namespace.value,
        lease_name: name.map(|st| st.value),
    })
}

/// One `-ha-election-*` duration: a whole number of seconds, at most a day.
fn ha_secs(ctx: &Ctx, st: Setting<i64>) -> Result<(Setting<i64>, Duration), ConfigError> {
    if st.value <= 0 || st.value > 86_400 {
        return Err(ctx.invalid(
            &st,
            &st.value.to_string(),
            "must be a whole number of seconds between 1 and 86400",
        ));
    }
    let v = Duration::from_secs(st.value as u64);
    Ok((st, v))
}

/// Retry period < renew deadline < lease duration.
fn check_ha_order(
    ctx: &Ctx,
    (_, lease_duration): &(Setting<i64>, Duration),
    (renew_st, renew_deadline): &(Setting<i64>, Duration),
    (retry_st, retry_period): &(Setting<i64>, Duration),
) -> Result<(), ConfigError> {
    if renew_deadline >= lease_duration {
        return Err(ctx.invalid(
            renew_st,
            &renew_st.value.to_string(),
            &format!(
                "must be less than the lease duration ({}s), or a standby could take over while the leader still writes",
                lease_duration.as_secs()
            ),
        ));
    }
    if retry_period >= renew_deadline {
        return Err(ctx.invalid(
            retry_st,
            &retry_st.value.to_string(),
            &format!(
                "must be less than the renew deadline ({}s), so a failed renewal is retried before the deadline",
                renew_deadline.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A namespace is a DNS label; a Lease name a DNS subdomain.
fn check_lease_names(
    ctx: &Ctx,
    namespace: &Setting<String>,
    name: Option<&Setting<String>>,
) -> Result<(), ConfigError> {
    if !is_node_name(&namespace.value)
        || namespace.value.len() > 63
        || namespace.value.contains('.')
    {
        return Err(ctx.invalid(
            namespace,
            &namespace.value,
            "must be a namespace name (at most 63 lower-case letters, digits and '-')",
        ));
    }
    if let Some(st) = name.filter(|st| !is_node_name(&st.value)) {
        return Err(ctx.invalid(
            st,
            &st.value,
            "must be a Kubernetes object name (lower-case letters, digits, '-' and '.')",
        ));
    }
    Ok(())
}

/// The tunnel types OVN's `ovn-encap-type` accepts.
const ENCAP_TYPES: [&str; 3] = ["geneve", "vxlan", "stt"];

/// An address another host can send tunnel packets to: IPv4, not 0.0.0.0, broadcast or multicast.
fn parse_unicast_v4(v: &str) -> Result<Ipv4Addr, &'static str> {
    let ip: IpAddr = v
        .parse()
        .map_err(|_| "must be the IPv4 address of this node's tunnel endpoint")?;
    let IpAddr::V4(ip) = ip else {
        return Err("must be an IPv4 address (OVN tunnels here are IPv4 only)");
    };
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err("must be a unicast IPv4 address (not 0.0.0.0, broadcast or multicast)");
    }
    Ok(ip)
}

/// Kubernetes node names are DNS-1123 subdomains: at most 253 characters of lower-case
/// letters, digits, `-` and `.`, each dot-separated label starting and ending with a letter
/// or digit.
pub(crate) fn is_node_name(v: &str) -> bool {
    v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `-init-master`, `-init-node`, `-remove-node`: empty means not given; anything else must be a
/// node name (so `-init-master -net-controller` is caught rather than naming a master
/// "-net-controller").
fn node_name_flag(v: &Option<String>, flag: &str) -> Result<Option<String>, ConfigError> {
    let Some(name) = s(v) else {
        return Ok(None);
    };
    if is_node_name(&name) {
        return Ok(Some(name));
    }
    let hint = if name.starts_with('-') {
        format!("; did you forget the node name after -{flag}?")
    } else {
        String::new()
    };
    Err(ConfigError::new(format!(
        "invalid value {name:?} for flag -{flag}: not a Kubernetes node name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit){hint}"
    )))
}

fn in_range(ctx: &Ctx<'_>, st: &Setting<i64>, lo: u32, hi: u32) -> Result<u32, ConfigError> {
    u32::try_from(st.value)
        .ok()
        .filter(|v| (lo..=hi).contains(v))
        .ok_or_else(|| {
            ctx.invalid(
                st,
                &st.value.to_string(),
                &format!("must be between {lo} and {hi}"),
            )
        })
}

/// Where a pod's service-account token, CA and namespace are mounted.
pub(crate) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The in-cluster configuration, if this process runs in a pod: `KUBERNETES_SERVICE_HOST`
/// and `KUBERNETES_SERVICE_PORT` set (as the kubelet does) and the service-account token and
/// CA present in `sa_dir`. The token is used as a file, so rotation is followed.
pub(crate) fn in_cluster_from(
    env: impl Fn(&str) -> Option<String>,
    sa_dir: &Path,
) -> Option<KubernetesConfig> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
    port.parse::<u16>().ok()?;
    let (token, ca) = (sa_dir.join("token"), sa_dir.join("ca.crt"));
    if !token.is_file() || !ca.is_file() {
        return None;
    }
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host,
    };
    Some(KubernetesConfig {
        kubeconfig: None,
        apiserver: format!("https://{host}:{port}"),
        cacert: Some(ca),
        token: None,
        token_file: Some(token),
    })
}

/// `[kubernetes]` / `-k8s-*`, merged over `base`; when none of them is given and the process
/// runs in a pod, the in-cluster configuration.
fn build_kubernetes(
    ctx: &Ctx<'_>,
    cli: &Layer,
    fl: &Layer,
    base: KubernetesConfig,
    in_cluster: Option<KubernetesConfig>,
) -> Result<KubernetesConfig, ConfigError> {
    let k = KubeSettings::pick(cli, fl, &base);
    if let (true, Some(ic)) = (k.nothing_given(), in_cluster) {
        return Ok(ic);
    }
    k.check_files(ctx)?;
    k.check_apiserver(ctx)?;
    Ok(KubernetesConfig {
        kubeconfig: k.kubeconfig.map(|st| PathBuf::from(st.value)),
        apiserver: k.apiserver.value,
        cacert: k.cacert.map(|st| PathBuf::from(st.value)),
        token: k.token.map(|st| st.value),
        token_file: k.token_file.map(|st| PathBuf::from(st.value)),
    })
}

/// The merged `[kubernetes]` settings, before validation.
struct KubeSettings {
    kubeconfig: Option<Setting<String>>,
    cacert: Option<Setting<String>>,
    apiserver: Setting<String>,
    token: Option<Setting<String>>,
    token_file: Option<Setting<String>>,
}

impl KubeSettings {
    /// CLI over file over `base` (what the caller's defaults say).
    fn pick(cli: &Layer, fl: &Layer, base: &KubernetesConfig) -> KubeSettings {
        let base_path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let field = |c: &Option<String>,
                     f: &Option<String>,
                     d: Option<String>,
                     flag: &'static str,
                     key: &'static str| {
            pick(c, f, flag, "kubernetes", key).or(d.map(|value| Setting {
                value,
                origin: Origin::Default,
                flag,
                section: "kubernetes",
                key,
            }))
        };
        KubeSettings {
            kubeconfig: field(
                &cli.k8s_kubeconfig,
                &fl.k8s_kubeconfig,
                base_path(&base.kubeconfig),
                "k8s-kubeconfig",
                "kubeconfig",
            ),
            cacert: field(
                &cli.k8s_cacert,
                &fl.k8s_cacert,
                base_path(&base.cacert),
                "k8s-cacert",
                "cacert",
            ),
            apiserver: pick_or(
                &cli.k8s_apiserver,
                &fl.k8s_apiserver,
                base.apiserver.clone(),
                "k8s-apiserver",
                "kubernetes",
                "apiserver",
            ),
            token: field(
                &cli.k8s_token,
                &fl.k8s_token,
                base.token.clone(),
                "k8s-token",
                "token",
            ),
            token_file: field(
                &cli.k8s_token_file,
                &fl.k8s_token_file,
                base_path(&base.token_file),
                "k8s-token-file",
                "token-file",
            ),
        }
    }

    /// Nothing but built-in defaults: the in-cluster configuration may take over.
    fn nothing_given(&self) -> bool {
        self.kubeconfig.is_none()
            && matches!(self.apiserver.origin, Origin::Default)
            && self.cacert.is_none()
            && self.token.is_none()
            && self.token_file.is_none()
    }

    /// The token file, kubeconfig and CA certificate exist (checked in that order).
    fn check_files(&self, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
        if let Some(st) = &self.token_file
            && !Path::new(&st.value).is_file()
        {
            return Err(ConfigError::new(format!(
                "{}: kubernetes token file {:?} not found",
                ctx.label(st),
                st.value
            )));
        }
        if let Some(st) = &self.kubeconfig
            && !Path::new(&st.value).exists()
        {
            return Err(ConfigError::new(format!(
                "{}: kubernetes kubeconfig file {:?} not found",
                ctx.label(st),
                st.value
            )));
        }
        if let Some(st) = &self.cacert
            && !Path::new(&st.value).exists()
        {
            return Err(ConfigError::new(format!(
                "{}: kubernetes CA certificate file {:?} not found",
                ctx.label(st),
                st.value
            )));
        }
        Ok(())
    }

    /// The API server is an http(s) URL with a host; https needs a CA certificate.
    fn check_apiserver(&self, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
        let apiserver = &self.apiserver;
        let invalid = |e: String| {
            ConfigError::new(format!(
                "{}: kubernetes API server address {:?} invalid: {e}",
                ctx.label(apiserver),
                apiserver.value
            ))
        };
        let scheme = apiserver_scheme(&apiserver.value).map_err(&invalid)?;
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::new(format!(
                "{}: kubernetes API server URL scheme {scheme:?} invalid (use http:// or https://)",
                ctx.label(apiserver)
            )));
        }
        check_apiserver_host(&apiserver.value).map_err(invalid)?;
        if scheme == "https" && self.cacert.is_none() {
            return Err(ConfigError::new(format!(
                "{}: kubernetes API server {:?} scheme requires a CA certificate (set -k8s-cacert)",
                ctx.label(apiserver),
                apiserver.value
            )));
        }
        Ok(())
    }
}

/// The scheme of a URL the way Go's `url.Parse` sees it (lower-cased; "" when there is none).
fn apiserver_scheme(v: &str) -> Result<String, String> {
    let is_scheme = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    };
    let Some(colon) = v.find(':') else {
        return Ok(String::new());
    };
    let candidate = &v[..colon];
    if candidate.contains('/') {
        return Ok(String::new());
    }
    if candidate.is_empty() {
        return Err("missing protocol scheme".to_string());
    }
    if !is_scheme(candidate) {
        return Err("first path segment in URL cannot contain colon".to_string());
    }
    Ok(candidate.to_ascii_lowercase())
}

/// `http(s)://[user@]host[:port][/path]`: a host is required and the port must be numeric.
fn check_apiserver_host(v: &str) -> Result<(), String> {
    let Some((_, rest)) = v.split_once("://") else {
        return Err("expected scheme://host[:port]".to_string());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some((h, after)) = inner.split_once(']') else {
            return Err("missing ']' in host".to_string());
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 host {h:?}"));
        }
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if let Some(p) = port
        && !p.is_empty()
        && p.parse::<u16>().is_err()
    {
        return Err(format!("invalid port {p:?}"));
    }
    Ok(())
}

fn build_ovn(
    ctx: &Ctx<'_>,
    cli: &OvnLayer,
    fl: &OvnLayer,
    dir: &'static str,
    section: &'static str,
    long: &'static str,
) -> Result<OvnDbConfig, ConfigError> {
    let (addr_flag, flags) = if dir == "nb" {
        (
            "nb-address",
            [
                "nb-client-privkey",
                "nb-client-cert",
                "nb-client-cacert",
                "nb-server-privkey",
                "nb-server-cert",
                "nb-server-cacert",
            ],
        )
    } else {
        (
            "sb-address",
            [
                "sb-client-privkey",
                "sb-client-cert",
                "sb-client-cacert",
                "sb-server-privkey",
                "sb-server-cert",
                "sb-server-cacert",
            ],
        )
    };
    let address = pick(&cli.address, &fl.address, addr_flag, section, "address");
    // ssl addresses get default cert paths for both client and server of the direction, so a
    // bare `ssl:` address works with the conventional key locations.
    let ssl = address
        .as_ref()
        .is_some_and(|a| a.value.trim().to_ascii_lowercase().starts_with("ssl"));
    let default = |suffix: &str| ssl.then(|| format!("/etc/openvswitch/ovn{dir}-{suffix}"));
    let resolve = |c: &Option<String>, f: &Option<String>, d: Option<String>| {
        c.clone().or_else(|| f.clone()).or(d).map(PathBuf::from)
    };
    let client = [
        resolve(
            &cli.client_privkey,
            &fl.client_privkey,
            default("privkey.pem"),
        ),
        resolve(&cli.client_cert, &fl.client_cert, default("cert.pem")),
        resolve(&cli.client_cacert, &fl.client_cacert, default("ca.cert")),
    ];
    let server = [
        resolve(
            &cli.server_privkey,
            &fl.server_privkey,
            default("privkey.pem"),
        ),
        resolve(&cli.server_cert, &fl.server_cert, default("cert.pem")),
        resolve(&cli.server_cacert, &fl.server_cacert, default("ca.cert")),
    ];
    let client = build_auth(ctx, &address, client, long, "client", &flags[0..3])?;
    let server = build_auth(ctx, &address, server, long, "server", &flags[3..6])?;
    Ok(OvnDbConfig { client, server })
}

fn build_auth(
    ctx: &Ctx<'_>,
    address: &Option<Setting<String>>,
    [privkey, cert, cacert]: [Option<PathBuf>; 3],
    long: &str,
    role: &str,
    cert_flags: &[&str],
) -> Result<OvnAuth, ConfigError> {
    let who = format!("OVN {long} {role}");
    let any_cert = privkey.is_some() || cert.is_some() || cacert.is_some();
    let perhaps_ssl = |shown: &str| {
        ConfigError::new(format!(
            "{who}: certificate or key given; perhaps you mean to use the 'ssl' scheme? (address is {shown})"
        ))
    };
    let Some(addr) = address else {
        if any_cert {
            return Err(perhaps_ssl("empty, i.e. the local unix socket"));
        }
        return Ok(OvnAuth::local_unix());
    };
    let (scheme, endpoints) = parse_address(addr.value.trim())
        .map_err(|e| ConfigError::new(format!("{}: {e}", ctx.label(addr))))?;
    match scheme {
        OvnScheme::Ssl if privkey.is_none() || cert.is_none() || cacert.is_none() => {
            return Err(ConfigError::new(format!(
                "{who}: must specify private key, certificate, and CA certificate for 'ssl' scheme (set -{}, -{} and -{})",
                cert_flags[0], cert_flags[1], cert_flags[2]
            )));
        }
        OvnScheme::Tcp | OvnScheme::Unix if any_cert => {
            return Err(perhaps_ssl(&format!("{:?}", addr.value)));
        }
        _ => {}
    }
    Ok(OvnAuth {
        scheme,
        endpoints,
        privkey,
        cert,
        cacert,
    })
}

/// `CIDR[/hostPrefixLen][,...]`, e.g. `10.128.0.0/14/23`; host length defaults to 24.
pub(crate) fn parse_cluster_subnets(v: &str) -> Result<Vec<ClusterSubnet>, ConfigError> {
    let fail = |why: String| ConfigError::new(format!("invalid -cluster-subnet {v:?}: {why}"));
    let mut out: Vec<ClusterSubnet> = Vec::new();
    for entry in v.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(fail("empty entry in the comma-separated list".to_string()));
        }
        let parts: Vec<&str> = entry.split('/').collect();
        let (cidr_text, host) = match parts.as_slice() {
            [_, _] => (entry, None),
            [a, b, h] => (&entry[..a.len() + 1 + b.len()], Some(*h)),
            _ => {
                return Err(fail(format!(
                    "entry {entry:?} must be CIDR or CIDR/hostPrefixLength (e.g. 10.128.0.0/14/23)"
                )));
            }
        };
        let net: IpNet = cidr_text
            .parse()
            .map_err(|_| fail(format!("{cidr_text:?} is not a valid CIDR")))?;
        let IpNet::V4(net) = net else {
            return Err(fail(format!(
                "{cidr_text:?} is not IPv4 (only IPv4 is supported)"
            )));
        };
        let cidr = net.trunc();
        let host_prefix_len = match host {
            None => 24,
            Some(h) => h.parse::<u8>().map_err(|_| {
                fail(format!(
                    "host prefix length {h:?} in {entry:?} is not a number"
                ))
            })?,
        };
        if host_prefix_len <= cidr.prefix_len() {
            return Err(fail(format!(
                "host prefix length /{host_prefix_len} must be longer than the network prefix /{} of {cidr}",
                cidr.prefix_len()
            )));
        }
        if host_prefix_len > 30 {
            return Err(fail(format!(
                "host prefix length /{host_prefix_len} is too long (at most /30)"
            )));
        }
        if let Some(other) = out.iter().find(|o| overlaps(&o.cidr, &cidr)) {
            return Err(fail(format!("{cidr} overlaps {}", other.cidr)));
        }
        out.push(ClusterSubnet {
            cidr,
            host_prefix_len,
        });
    }
    Ok(out)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(crate) fn parse_service_cidr(
    v: &str,
    cluster: &[ClusterSubnet],
) -> Result<Ipv4Net, ConfigError> {
    let fail =
        |why: String| ConfigError::new(format!("invalid -service-cluster-ip-range {v:?}: {why}"));
    let net: IpNet = v
        .trim()
        .parse()
        .map_err(|_| fail("not a valid CIDR (e.g. 172.16.1.0/24)".to_string()))?;
    let IpNet::V4(net) = net else {
        return Err(fail("not IPv4 (only IPv4 is supported)".to_string()));
    };
    let net = net.trunc();
    if let Some(c) = cluster.iter().find(|c| overlaps(&c.cidr, &net)) {
        return Err(fail(format!(
            "overlaps the cluster subnet {}; pick a range outside -cluster-subnet",
            c.cidr
        )));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Unreachable through parse_args since ssl addresses get default cert paths.
    #[test]
    fn ssl_requires_key_cert_and_ca() {
        let ctx = Ctx { file: None };
        let addr = Some(Setting {
            value: "ssl://1.2.3.4:6641".to_string(),
            origin: Origin::Flag,
            flag: "nb-address",
            section: "ovnnorth",
            key: "address",
        });
        let flags = ["nb-client-privkey", "nb-client-cert", "nb-client-cacert"];
        let e = build_auth(
            &ctx,
            &addr,
            [Some("/k".into()), None, Some("/ca".into())],
            "northbound",
            "client",
            &flags,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OVN northbound client: must specify private key, certificate, and CA certificate for 'ssl' scheme (set -nb-client-privkey, -nb-client-cert and -nb-client-cacert)"
        );
        let ok = build_auth(
            &ctx,
            &addr,
            [Some("/k".into()), Some("/c".into()), Some("/ca".into())],
            "northbound",
            "client",
            &flags,
        )
        .unwrap();
        assert_eq!(ok.client_target().as_deref(), Some("ssl:1.2.3.4:6641"));
    }

    #[test]
    fn credentials_dir_must_be_absolute_without_dotdot() {
        let cases = [
            ("/var/run/ovn-kubernetes/credentials", true),
            ("/", true),
            ("/a/..b/c", true),
            ("relative/dir", false),
            ("/var/../etc", false),
            ("/var/run/..", false),
        ];
        for (v, ok) in cases {
            match credentials_dir(v) {
                Ok(p) => assert!(ok && p == Path::new(v), "{v}: accepted"),
                Err(e) => {
                    assert!(!ok, "{v}: {e}");
                    assert!(
                        e.to_string().starts_with(&format!(
                            "invalid value {} for flag -cni-credentials-dir: must be an absolute path",
                            crate::config::shown(v)
                        )),
                        "{e}"
                    );
                }
            }
        }
    }
}
