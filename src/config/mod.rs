//! ovnkube configuration: Go-style command line (the 2018 reference's 44 flags), the
//! `ovn_k8s.conf` INI file, precedence (built-in default < file < command line) and validation.

mod file;
mod flags;
mod help;
mod ovn;
mod roles;
mod validate;

pub use roles::{
    CertFile, ROLE_FLAGS, auth_cert_files, cert_files, check_cert_files, check_runnable,
    require_role,
};

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

pub use ovn::{DEFAULT_OVN_RUNDIR, ServerSetup, ServerSsl, local_db_socket};

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// Where the config file is looked for when `-config-file` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/openvswitch/ovn_k8s.conf";

/// Built-in `-cluster-subnet` (evaluated at compile time, so it cannot fail at run time).
const DEFAULT_CLUSTER_SUBNET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(11, 11, 0, 0), 16);

/// The git commit this binary was built from (build.rs), or "unknown".
pub const GIT_COMMIT: &str = env!("OVNKUBE_GIT_COMMIT");

/// What `-v` prints.
pub const VERSION_TEXT: &str = concat!(
    "ovnkube version ",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OVNKUBE_GIT_COMMIT"),
    ")"
);

/// Outcome of command-line parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// `-h`/`-help`/`--help` (or the `help` command): print this and exit 0.
    Help(String),
    /// `-v`/`-version`/`--version`: print this and exit 0.
    Version(String),
    Run(Box<Config>),
}

/// A configuration error; `Display` is a single line naming the flag/key and the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A bad value as error messages show it: quoted, and cut after 80 characters (with its full
/// length) so a huge value cannot turn one error into a megabyte of log.
pub fn shown(v: &str) -> String {
    const MAX: usize = 80;
    match v.char_indices().nth(MAX) {
        None => format!("{v:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &v[..cut], v.len()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cluster_subnets: Vec<ClusterSubnet>,
    /// `-service-cluster-ip-range`, normalised to the network address.
    pub service_cidr: Option<Ipv4Net>,
    pub net_controller: bool,
    pub init_master: Option<String>,
    pub init_node: Option<String>,
    pub remove_node: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub gateway: GatewayConfig,
    pub nodeport: bool,
    pub ha: bool,
    /// The config file actually read, if any.
    pub config_file: Option<PathBuf>,
    pub mtu: u32,
    pub conntrack_zone: u32,
    pub encap_type: String,
    pub encap_ip: Option<IpAddr>,
    pub logging: LoggingConfig,
    pub cni: CniConfig,
    pub kubernetes: KubernetesConfig,
    pub ovn_north: OvnDbConfig,
    pub ovn_south: OvnDbConfig,
    /// `-metrics-bind-address` (`[default] metrics-bind-address`): where `/metrics`,
    /// `/healthz` and `/readyz` are served; `None` = off.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `-ha-election-*` (`[masterha]`): the master roles' leader election.
    pub master_ha: MasterHaConfig,
    /// `-cni-credentials-dir`: where the node agent copies the token file and CA for the CNI
    /// plugin on the host.
    pub cni_credentials_dir: Option<PathBuf>,
}

/// Leader election of the master roles on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterHaConfig {
    pub lease_duration: std::time::Duration,
    pub renew_deadline: std::time::Duration,
    pub retry_period: std::time::Duration,
    pub lease_namespace: String,
    /// `None`: the default for the roles this process runs (`election::lease_name`).
    pub lease_name: Option<String>,
}

impl Default for MasterHaConfig {
    /// Today's ovn-kubernetes defaults.
    fn default() -> Self {
        MasterHaConfig {
            lease_duration: std::time::Duration::from_secs(60),
            renew_deadline: std::time::Duration::from_secs(30),
            retry_period: std::time::Duration::from_secs(20),
            lease_namespace: "kube-system".into(),
            lease_name: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSubnet {
    /// Network form (host bits cleared).
    pub cidr: Ipv4Net,
    /// Prefix length of each node's subnet (24 unless given as `CIDR/hostLen`).
    pub host_prefix_len: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    pub init: bool,
    pub interface: Option<String>,
    pub nexthop: Option<Ipv4Addr>,
    pub spare_interface: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// 1=fatal … 5=debug (values above 5 are clamped to 5).
    pub level: u8,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub plugin: String,
    pub win_hnsnetwork_id: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub kubeconfig: Option<PathBuf>,
    pub apiserver: String,
    pub cacert: Option<PathBuf>,
    pub token: Option<String>,
    /// `-k8s-token-file` (`[kubernetes] token-file`), or the service-account token in a pod:
    /// re-read while running, so rotated tokens are picked up.
    pub token_file: Option<PathBuf>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            apiserver: "http://localhost:8080".to_string(),
            cacert: None,
            token: None,
            token_file: None,
        }
    }
}

// The token is a secret: never let it reach a log line through `{:?}`.
impl std::fmt::Debug for KubernetesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesConfig")
            .field("kubeconfig", &self.kubeconfig)
            .field("apiserver", &self.apiserver)
            .field("cacert", &self.cacert)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnDbConfig {
    pub client: OvnAuth,
    pub server: OvnAuth,
}

impl Default for OvnDbConfig {
    fn default() -> Self {
        OvnDbConfig {
            client: OvnAuth::local_unix(),
            server: OvnAuth::local_unix(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvnAuth {
    pub scheme: OvnScheme,
    /// Empty = the tool's default local unix socket.
    pub endpoints: Vec<OvnEndpoint>,
    pub privkey: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvnScheme {
    Unix,
    Tcp,
    Ssl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvnEndpoint {
    Unix(PathBuf),
    Inet(SocketAddr),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_subnets: vec![ClusterSubnet {
                cidr: DEFAULT_CLUSTER_SUBNET,
                host_prefix_len: 24,
            }],
            service_cidr: None,
            net_controller: false,
            init_master: None,
            init_node: None,
            remove_node: None,
            pidfile: None,
            gateway: GatewayConfig::default(),
            nodeport: false,
            ha: false,
            config_file: None,
            mtu: 1400,
            conntrack_zone: 64000,
            encap_type: "geneve".to_string(),
            encap_ip: None,
            logging: LoggingConfig {
                level: 4,
                file: None,
            },
            cni: CniConfig {
                conf_dir: PathBuf::from("/etc/cni/net.d"),
                plugin: "ovn-k8s-cni-overlay".to_string(),
                win_hnsnetwork_id: None,
            },
            kubernetes: KubernetesConfig::default(),
            ovn_north: OvnDbConfig::default(),
            ovn_south: OvnDbConfig::default(),
            metrics_bind_address: None,
            master_ha: MasterHaConfig::default(),
            cni_credentials_dir: None,
        }
    }
}

/// What `-h` prints.
pub fn help_text() -> String {
    help::render()
}

/// Parses `args` (without argv[0]); reads `-config-file` or, if present, [`DEFAULT_CONFIG_FILE`].
pub fn parse_args<I, T>(args: I) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    parse_args_with(args, Path::new(DEFAULT_CONFIG_FILE), None)
}

/// Same as [`parse_args`] with an explicit default config-file path.
pub fn parse_args_with_default_file<I, T>(
    args: I,
    default_file: &Path,
) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    parse_args_with(args, default_file, None)
}

/// Same, and `kube_defaults` (if given) replaces the built-in Kubernetes defaults before the
/// file and command line are applied (e.g. values read from OVS for the CNI plugin).
pub fn parse_args_with<I, T>(
    args: I,
    default_file: &Path,
    kube_defaults: Option<KubernetesConfig>,
) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let parsed = flags::parse_command_line(args)?;
    let f = &parsed.flags;
    // urfave/cli checks help before version; `ovnkube help` / `ovnkube h` is its help command.
    if f.help || matches!(parsed.first_positional.as_deref(), Some("help" | "h")) {
        return Ok(Invocation::Help(help_text()));
    }
    if f.version {
        return Ok(Invocation::Version(VERSION_TEXT.to_string()));
    }
    let file = match f.config_file.as_deref().filter(|p| !p.is_empty()) {
        Some(explicit) => {
            let path = PathBuf::from(explicit);
            let text = file::read_config_file(&path).map_err(|e| {
                ConfigError::new(format!(
                    "config file {explicit} (from -config-file) cannot be read: {e}"
                ))
            })?;
            Some((path, text))
        }
        None => match file::read_config_file(default_file) {
            Ok(text) => Some((default_file.to_path_buf(), text)),
            // A missing default file is fine; anything else about it is not.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::new(format!(
                    "config file {} cannot be read: {e} (fix it or pass -config-file)",
                    default_file.display()
                )));
            }
        },
    };
    let file = match file {
        Some((path, text)) => {
            let layer = file::parse_file(&path, &text)?;
            Some((path, layer))
        }
        None => None,
    };
    let cfg = validate::build(
        f,
        file.as_ref().map(|(p, l)| (p.as_path(), l.clone())),
        kube_defaults,
    )?;
    Ok(Invocation::Run(Box::new(cfg)))
}
