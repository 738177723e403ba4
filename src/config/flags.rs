//! Command-line declarations (clap derive) and the Go `flag`-style argv normaliser.
//!
//! clap cannot parse single-dash long flags (`-init-master=x` becomes the short cluster `-i -n …`),
//! so argv is first rewritten into `--name=value` form using the clap `Command`'s own metadata,
//! following Go's `flag.Parse` rules (booleans never take a separate value, non-booleans take the
//! next argument verbatim, even `-1`) except one: ovnkube takes no arguments, so a positional
//! argument is an error naming it instead of silently ending parsing (`-nodeport false -ha`
//! would otherwise drop `-ha`). The only positional accepted is the `help`/`h` command.

use std::ffi::OsString;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use super::ConfigError;

/// The 44 entries of `ovnkube -h`, in the reference's order (the help text is rendered from this).
#[derive(Parser, Debug, Default, Clone, PartialEq)]
#[command(
    name = "ovnkube",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
pub(crate) struct Flags {
    #[arg(
        long,
        help = "Cluster wide IP subnet to use (default: \"11.11.0.0/16\")"
    )]
    pub cluster_subnet: Option<String>,
    #[arg(
        long,
        help = "A CIDR notation IP range from which k8s assigns service cluster IPs. This should be the same as the one provided for kube-apiserver \"-service-cluster-ip-range\" option."
    )]
    pub service_cluster_ip_range: Option<String>,
    #[arg(
        long,
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "Flag to start the central controller that watches pods/services/policies"
    )]
    pub net_controller: bool,
    #[arg(long, help = "initialize master, requires the hostname as argument")]
    pub init_master: Option<String>,
    #[arg(
        long,
        help = "initialize node, requires the name that node is registered with in kubernetes cluster"
    )]
    pub init_node: Option<String>,
    #[arg(
        long,
        help = "Remove a node from the OVN cluster, requires the name that the node is registered with in the kubernetes cluster"
    )]
    pub remove_node: Option<String>,
    #[arg(long, help = "Name of file that will hold the ovnkube pid (optional)")]
    pub pidfile: Option<String>,
    #[arg(
        long,
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "initialize a gateway in the minion. Only useful with \"init-node\""
    )]
    pub init_gateways: bool,
    #[arg(
        long,
        help = "The interface in minions that will be the gateway interface. If none specified, then the node's interface on which the default gateway is configured will be used as the gateway interface. Only useful with \"init-gateways\""
    )]
    pub gateway_interface: Option<String>,
    #[arg(
        long,
        help = "The external default gateway which is used as a next hop by OVN gateway.  This is many times just the default gateway of the node in question. If not specified, the default gatewayconfigured in the node is used. Only useful with \"init-gateways\""
    )]
    pub gateway_nexthop: Option<String>,
    #[arg(
        long,
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "If true, assumes that \"gateway-interface\" provided can be exclusively used for the OVN gateway.  When true, only OVNrelated traffic can flow through this interface"
    )]
    pub gateway_spare_interface: bool,
    #[arg(
        long,
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "Setup nodeport based ingress on gateways."
    )]
    pub nodeport: bool,
    #[arg(
        long,
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "HA option to reconstruct OVN database after failover"
    )]
    pub ha: bool,
    #[arg(
        long,
        help = "configuration file path (default: /etc/openvswitch/ovn_k8s.conf)"
    )]
    pub config_file: Option<String>,
    #[arg(long, value_parser = parse_int_flag, help = "MTU value used for the overlay networks (default: 1400)")]
    pub mtu: Option<i64>,
    #[arg(
        long,
        value_parser = parse_int_flag,
        help = "For gateway nodes, the conntrack zone used for conntrack flow rules (default: 64000)"
    )]
    pub conntrack_zone: Option<i64>,
    #[arg(
        long,
        help = "The encapsulation protocol to use to transmit packets between hypervisors (default: geneve)"
    )]
    pub encap_type: Option<String>,
    #[arg(
        long,
        help = "The IP address of the encapsulation endpoint (default: Node IP address resolved from Node hostname)"
    )]
    pub encap_ip: Option<String>,
    #[arg(
        long,
        value_parser = parse_int_flag,
        help = "log verbosity and level: 5=debug, 4=info, 3=warn, 2=error, 1=fatal (default: 4)"
    )]
    pub loglevel: Option<i64>,
    #[arg(long, help = "path of a file to direct log output to")]
    pub logfile: Option<String>,
    #[arg(
        long,
        help = "the CNI config directory in which to write the overlay CNI config file (default: /etc/cni/net.d)"
    )]
    pub cni_conf_dir: Option<String>,
    #[arg(
        long,
        help = "the name of the CNI plugin (default: ovn-k8s-cni-overlay)"
    )]
    pub cni_plugin: Option<String>,
    #[arg(
        long,
        help = "the ID of the HNS network to which containers will be attached (default: not set)"
    )]
    pub win_hnsnetwork_id: Option<String>,
    #[arg(
        long,
        help = "absolute path to the Kubernetes kubeconfig file (not required if the -k8s-apiserver, -k8s-cacert, and -k8s-token are given)"
    )]
    pub k8s_kubeconfig: Option<String>,
    #[arg(
        long,
        help = "URL of the Kubernetes API server (not required if -k8s-kubeconfig is given) (default: http://localhost:8080)"
    )]
    pub k8s_apiserver: Option<String>,
    #[arg(
        long,
        help = "the absolute path to the Kubernetes API CA certificate (not required if -k8s-kubeconfig is given)"
    )]
    pub k8s_cacert: Option<String>,
    #[arg(
        long,
        help = "the Kubernetes API authentication token (not required if -k8s-kubeconfig is given)"
    )]
    pub k8s_token: Option<String>,
    #[arg(
        long,
        help = "IP address and port of the OVN northbound API (eg, ssl://1.2.3.4:6641).  Leave empty to use a local unix socket."
    )]
    pub nb_address: Option<String>,
    #[arg(
        long,
        help = "Private key that the OVN northbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-privkey.pem)"
    )]
    pub nb_server_privkey: Option<String>,
    #[arg(
        long,
        help = "Server certificate that the OVN northbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-cert.pem)"
    )]
    pub nb_server_cert: Option<String>,
    #[arg(
        long,
        help = "CA certificate that the OVN northbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-ca.cert)"
    )]
    pub nb_server_cacert: Option<String>,
    #[arg(
        long,
        help = "Private key that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-privkey.pem)"
    )]
    pub nb_client_privkey: Option<String>,
    #[arg(
        long,
        help = "Client certificate that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-cert.pem)"
    )]
    pub nb_client_cert: Option<String>,
    #[arg(
        long,
        help = "CA certificate that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnnb-ca.cert)"
    )]
    pub nb_client_cacert: Option<String>,
    #[arg(
        long,
        help = "IP address and port of the OVN southbound API (eg, ssl://1.2.3.4:6642).  Leave empty to use a local unix socket."
    )]
    pub sb_address: Option<String>,
    #[arg(
        long,
        help = "Private key that the OVN southbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-privkey.pem)"
    )]
    pub sb_server_privkey: Option<String>,
    #[arg(
        long,
        help = "Server certificate that the OVN southbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-cert.pem)"
    )]
    pub sb_server_cert: Option<String>,
    #[arg(
        long,
        help = "CA certificate that the OVN southbound API should use for securing the API.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-ca.cert)"
    )]
    pub sb_server_cacert: Option<String>,
    #[arg(
        long,
        help = "Private key that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-privkey.pem)"
    )]
    pub sb_client_privkey: Option<String>,
    #[arg(
        long,
        help = "Client certificate that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-cert.pem)"
    )]
    pub sb_client_cert: Option<String>,
    #[arg(
        long,
        help = "CA certificate that the client should use for talking to the OVN database.  Leave empty to use local unix socket. (default: /etc/openvswitch/ovnsb-ca.cert)"
    )]
    pub sb_client_cacert: Option<String>,
    // Extensions (not in the 2018 reference): `hide` keeps them out of the reference listing;
    // `-h` shows them in a section of their own.
    #[arg(
        long,
        hide = true,
        help = "IP:PORT on which to serve /metrics (Prometheus), /healthz and /readyz over HTTP (default: off)"
    )]
    pub metrics_bind_address: Option<String>,
    #[arg(
        long,
        hide = true,
        help = "file holding the Kubernetes API bearer token, re-read when it changes (projected service-account tokens rotate)"
    )]
    pub k8s_token_file: Option<String>,
    #[arg(
        long,
        hide = true,
        value_parser = parse_int_flag,
        help = "master leader election: seconds a standby waits after the last renewal before taking over the lease (default: 60)"
    )]
    pub ha_election_lease_duration: Option<i64>,
    #[arg(
        long,
        hide = true,
        value_parser = parse_int_flag,
        help = "master leader election: seconds the leader keeps writing without a successful renewal; must be less than the lease duration (default: 30)"
    )]
    pub ha_election_renew_deadline: Option<i64>,
    #[arg(
        long,
        hide = true,
        value_parser = parse_int_flag,
        help = "master leader election: seconds between renewals and between a standby's polls; must be less than the renew deadline (default: 20)"
    )]
    pub ha_election_retry_period: Option<i64>,
    #[arg(
        long,
        hide = true,
        help = "namespace of the leader-election Lease (default: kube-system, which every cluster has)"
    )]
    pub ha_election_lease_namespace: Option<String>,
    #[arg(
        long,
        hide = true,
        help = "name of the leader-election Lease (default: ovn-kubernetes-master; ovn-kubernetes-net-controller for -net-controller without -init-master)"
    )]
    pub ha_election_lease_name: Option<String>,
    #[arg(
        long,
        hide = true,
        help = "absolute host directory into which -init-node copies the API token file and CA certificate (mode 0600, refreshed when they change) and which it publishes to the CNI plugin in OVS instead of the originals; for a node agent in a pod (default: off)"
    )]
    pub cni_credentials_dir: Option<String>,
    #[arg(
        long = "help", alias = "h",
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "show help"
    )]
    pub help: bool,
    #[arg(
        long = "version", alias = "v",
        action = ArgAction::Set, num_args = 0..=1, require_equals = true,
        default_missing_value = "true", default_value = "false", value_parser = parse_go_bool,
        help = "print the version"
    )]
    pub version: bool,
}

/// Result of the Go-style command-line scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub flags: Flags,
    /// Go's `flag.Args()[0]`, if any (urfave/cli treats `help`/`h` there as the help command).
    pub first_positional: Option<String>,
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("must be one of true, false, 1, 0, t, f (use -name or -name=false)".to_string()),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` as used by `flag.Int`: optional sign, then decimal,
/// `0x` hex, `0o`/leading-`0` octal or `0b` binary.
pub(crate) fn parse_go_int(s: &str) -> Result<i64, String> {
    let bad = || "must be an integer".to_string();
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let magnitude =
        i128::from_str_radix(digits, radix).map_err(|_| "value out of range".to_string())?;
    let signed = if neg { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| "value out of range".to_string())
}

/// An int flag's value: empty means "not given", as 0 does and as an empty key in the config
/// file does (the environment files of the systemd units leave values empty).
pub(crate) fn parse_int_flag(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    parse_go_int(s)
}

/// The error for an argument that is not a flag.
fn stray_argument(arg: &str, prev_bool_flag: Option<&str>) -> ConfigError {
    let hint = match prev_bool_flag {
        Some(flag) => format!(
            "; a boolean flag takes its value after '=' (write -{flag}={arg}, not -{flag} {arg})"
        ),
        None => String::new(),
    };
    ConfigError::new(format!(
        "unexpected argument {arg:?}: ovnkube takes only flags{hint} (see ovnkube -h)"
    ))
}

/// Parses argv (without argv[0]) with Go `flag` semantics.
pub(crate) fn parse_command_line<I, T>(args: I) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = Flags::command();
    cmd.build();
    let norm = normalize(&cmd, args.into_iter().map(Into::into).collect())?;
    // clap parses values in argv order, so a bad value before the first syntax error wins, as in Go.
    let matches = cmd
        .try_get_matches_from_mut(&norm.argv)
        .map_err(|e| clap_error(&e))?;
    if let Some(err) = norm.pending {
        return Err(err);
    }
    let flags = Flags::from_arg_matches(&matches).map_err(|e| clap_error(&e))?;
    Ok(Parsed {
        flags,
        first_positional: norm.first_positional,
    })
}

struct Normalized {
    argv: Vec<String>,
    pending: Option<ConfigError>,
    first_positional: Option<String>,
}

/// Rewrites Go-style argv into clap's `--name=value` form, stopping where Go's parser stops.
fn normalize(cmd: &clap::Command, args: Vec<OsString>) -> Result<Normalized, ConfigError> {
    let mut out = Normalized {
        argv: Vec::new(),
        pending: None,
        first_positional: None,
    };
    let mut it = args.into_iter().peekable();
    // The previous argument, when it was a boolean flag without `=` (for the stray-value hint).
    let mut prev_bool: Option<String> = None;
    while let Some(raw) = it.next() {
        let Some(s) = raw.to_str() else {
            out.pending = Some(ConfigError::new(format!(
                "argument {:?} is not valid UTF-8",
                raw.to_string_lossy()
            )));
            return Ok(out);
        };
        if s == "--" {
            // Nothing may follow: everything after `--` would be a positional argument.
            if let Some(next) = it.next() {
                out.pending = Some(stray_argument(&next.to_string_lossy(), None));
            }
            return Ok(out);
        }
        if s.len() < 2 || !s.starts_with('-') {
            // A trailing `help` / `h` is urfave/cli's help command (`ovnkube help`).
            if it.peek().is_none() && matches!(s, "help" | "h") {
                out.first_positional = Some(s.to_string());
            } else {
                out.pending = Some(stray_argument(s, prev_bool.as_deref()));
            }
            return Ok(out);
        }
        prev_bool = None;
        let (long, name, value, is_bool) = match known_flag(cmd, s) {
            Ok(f) => f,
            Err(e) => {
                out.pending = Some(e);
                return Ok(out);
            }
        };
        let value = match (value, is_bool) {
            (Some(v), _) => Some(v.to_string()),
            (None, true) => {
                prev_bool = Some(name.to_string());
                None
            }
            (None, false) => match separate_value(name, it.next()) {
                Ok(v) => Some(v),
                Err(e) => {
                    out.pending = Some(e);
                    return Ok(out);
                }
            },
        };
        out.argv.push(match value {
            Some(v) => format!("--{long}={v}"),
            None => format!("--{long}"),
        });
    }
    Ok(out)
}

/// One `-name[=value]` / `--name[=value]` argument of a defined flag: its long name, the name
/// as written, the `=` value if any, and whether it is a boolean (takes no separate value).
fn known_flag<'a>(
    cmd: &'a clap::Command,
    s: &'a str,
) -> Result<(&'a str, &'a str, Option<&'a str>, bool), ConfigError> {
    let body = s.strip_prefix("--").unwrap_or(&s[1..]);
    if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
        return Err(ConfigError::new(format!(
            "bad flag syntax: {s} (see ovnkube -h)"
        )));
    }
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    let Some(arg) = cmd.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    }) else {
        return Err(ConfigError::new(format!(
            "flag provided but not defined: -{name} (see ovnkube -h)"
        )));
    };
    let long = arg.get_long().unwrap_or(name);
    let is_bool = arg.get_num_args().is_some_and(|r| r.min_values() == 0);
    Ok((long, name, value, is_bool))
}

/// The value of a non-boolean flag written as `-name value`: the next argument.
fn separate_value(name: &str, next: Option<OsString>) -> Result<String, ConfigError> {
    let Some(next) = next else {
        return Err(ConfigError::new(format!(
            "flag needs an argument: -{name} (see ovnkube -h)"
        )));
    };
    match next.to_str() {
        Some(v) => Ok(v.to_string()),
        None => Err(ConfigError::new(format!(
            "invalid value {:?} for flag -{name}: not valid UTF-8",
            next.to_string_lossy()
        ))),
    }
}

/// Turns a clap error into our one-line, Go-flavoured message.
fn clap_error(e: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let ctx = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if e.kind() == ErrorKind::ValueValidation || e.kind() == ErrorKind::InvalidValue {
        // InvalidArg looks like "--mtu <MTU>"; keep just the name.
        let flag = ctx(ContextKind::InvalidArg).unwrap_or_default();
        let flag = flag
            .split(['=', ' ', '['])
            .next()
            .unwrap_or_default()
            .trim_start_matches('-')
            .to_string();
        let value = ctx(ContextKind::InvalidValue).unwrap_or_default();
        let reason = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "invalid value".to_string());
        return ConfigError::new(format!(
            "invalid value {} for flag -{flag}: {reason}",
            super::shown(&value)
        ));
    }
    // Anything else means the normaliser let through something clap rejects; keep the first line.
    let text = e.to_string();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("command line error")
        .trim_start_matches("error: ")
        .to_string();
    ConfigError::new(format!("{line} (see ovnkube -h)"))
}
