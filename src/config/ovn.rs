//! OVN database addresses: parsing of `-nb-address`/`-sb-address`, the auth objects and the
//! ovsdb connection strings derived from them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{OvnAuth, OvnEndpoint, OvnScheme};

impl OvnScheme {
    /// The ovsdb method name (`unix`, `tcp`, `ssl`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OvnScheme::Unix => "unix",
            OvnScheme::Tcp => "tcp",
            OvnScheme::Ssl => "ssl",
        }
    }
}

impl std::fmt::Display for OvnScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OvnEndpoint {
    fn target(&self, scheme: &OvnScheme) -> String {
        match self {
            OvnEndpoint::Unix(p) => format!("unix:{}", p.display()),
            // SocketAddr's Display brackets IPv6 hosts, which is what ovsdb expects.
            OvnEndpoint::Inet(sa) => format!("{scheme}:{sa}"),
        }
    }
}

/// Where the installed `ovn-nbctl`/`ovn-sbctl` look for the local databases when `OVN_RUNDIR`
/// is not set (today's Debian/Ubuntu packages).
pub const DEFAULT_OVN_RUNDIR: &str = "/var/run/ovn";

/// `unix:<rundir>/<stem>.sock`, the local database socket the installed tools use by default:
/// `rundir` is `$OVN_RUNDIR` (unset or empty: [`DEFAULT_OVN_RUNDIR`]); `stem` is `ovnnb_db`
/// or `ovnsb_db`.
pub fn local_db_socket(rundir: Option<&str>, stem: &str) -> String {
    let dir = rundir
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_OVN_RUNDIR);
    format!("unix:{}/{stem}.sock", dir.trim_end_matches('/'))
}

/// Certificates the database server presents for an `ssl:` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSsl {
    pub privkey: PathBuf,
    pub cert: PathBuf,
    pub cacert: PathBuf,
}

/// What ovnkube configures on a database server (over its local socket) for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSetup {
    /// A unix socket (or no address): the server needs no listener from us.
    Nothing,
    /// A list of cluster members. The `Connection` table is replicated to every member, so one
    /// member's address written there would make every member try to bind it: the operator
    /// configures each member's listener (e.g. `ovn-ctl --db-nb-addr=...`).
    Clustered { members: usize },
    /// Listen on `remote` (`ptcp:PORT:IP` / `pssl:PORT:IP`), with `ssl` certificates.
    Listen {
        remote: String,
        ssl: Option<ServerSsl>,
    },
}

impl ServerSetup {
    /// The `ovn-nbctl`/`ovn-sbctl` arguments (one transaction, so it applies all or nothing
    /// and can be retried as a whole); empty when there is nothing to configure.
    pub fn ctl_args(&self) -> Vec<String> {
        let ServerSetup::Listen { remote, ssl } = self else {
            return Vec::new();
        };
        let mut args = Vec::new();
        if let Some(s) = ssl {
            args.extend([
                "del-ssl".to_string(),
                "--".to_string(),
                "set-ssl".to_string(),
            ]);
            args.extend([&s.privkey, &s.cert, &s.cacert].map(|p| p.display().to_string()));
            args.push("--".to_string());
        }
        args.extend(["set-connection".to_string(), remote.clone()]);
        args
    }

    /// Whether the server must be told: `current` is what `get-connection` printed (one
    /// target per line, after the role for the SB). Writing
    /// the same connection again makes ovsdb-server reopen its listener under live clients,
    /// so an unchanged plain listener is left alone (ssl is always re-applied: the
    /// certificates may have changed on disk under the same names).
    pub fn needs_update(&self, current: &str) -> bool {
        match self {
            ServerSetup::Listen { remote, ssl: None } => {
                // `ovn-sbctl` prefixes each target with its role (`read-write role="" ptcp:...`).
                let targets: Vec<&str> = current
                    .lines()
                    .filter_map(|l| l.split_whitespace().last())
                    .collect();
                targets != [remote.as_str()]
            }
            ServerSetup::Listen { .. } => true,
            _ => false,
        }
    }
}

impl OvnAuth {
    /// A local-unix-socket auth object (the built-in default).
    pub fn local_unix() -> Self {
        OvnAuth {
            scheme: OvnScheme::Unix,
            endpoints: Vec::new(),
            privkey: None,
            cert: None,
            cacert: None,
        }
    }

    /// ovsdb client target, e.g. `tcp:1.2.3.4:6641`, `ssl:a:p,ssl:b:p` or `unix:/path`;
    /// `None` = the tool's default local socket.
    pub fn client_target(&self) -> Option<String> {
        if self.endpoints.is_empty() {
            return None;
        }
        Some(
            self.endpoints
                .iter()
                .map(|e| e.target(&self.scheme))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The passive remote the database server should listen on for this address, e.g.
    /// `ptcp:6641:192.168.33.11` (the given address only, not every address of the host).
    /// `None` for unix sockets and for lists of cluster members (see [`ServerSetup`]).
    fn listen_remote(&self) -> Option<String> {
        match (&self.scheme, self.endpoints.as_slice()) {
            (OvnScheme::Tcp | OvnScheme::Ssl, [OvnEndpoint::Inet(sa)]) => {
                let ip = match sa.ip() {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                };
                Some(format!("p{}:{}:{ip}", self.scheme, sa.port()))
            }
            _ => None,
        }
    }

    /// What ovnkube configures on the database server for this (server-side) address.
    pub fn server_setup(&self) -> ServerSetup {
        if matches!(self.scheme, OvnScheme::Tcp | OvnScheme::Ssl) && self.endpoints.len() > 1 {
            return ServerSetup::Clustered {
                members: self.endpoints.len(),
            };
        }
        let Some(remote) = self.listen_remote() else {
            return ServerSetup::Nothing;
        };
        let ssl = match (&self.scheme, &self.privkey, &self.cert, &self.cacert) {
            (OvnScheme::Ssl, Some(k), Some(c), Some(ca)) => Some(ServerSsl {
                privkey: k.clone(),
                cert: c.clone(),
                cacert: ca.clone(),
            }),
            _ => None,
        };
        ServerSetup::Listen { remote, ssl }
    }

    /// Extra ovn-nbctl/ovn-sbctl arguments for ssl; empty otherwise.
    pub fn ssl_args(&self) -> Vec<String> {
        if self.scheme != OvnScheme::Ssl {
            return Vec::new();
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match (path(&self.privkey), path(&self.cert), path(&self.cacert)) {
            (Some(k), Some(c), Some(ca)) => vec![
                format!("--private-key={k}"),
                format!("--certificate={c}"),
                format!("--bootstrap-ca-cert={ca}"),
            ],
            _ => Vec::new(),
        }
    }
}

/// Parses an address value into its scheme and endpoints (messages as in the reference, which
/// scripts and docs quote).
pub(crate) fn parse_address(value: &str) -> Result<(OvnScheme, Vec<OvnEndpoint>), String> {
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    if let Some(first) = entries.first()
        && first.to_ascii_lowercase().starts_with("unix:")
    {
        if entries.len() > 1 {
            return Err(format!(
                "failed to parse OVN DB URL {value:?}: a unix socket address cannot be part of a list"
            ));
        }
        let rest = &first["unix:".len()..];
        // unix:///path and unix:/path both mean /path.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(format!(
                "failed to parse OVN DB URL {value:?}: missing socket path (use unix:/path/to/db.sock)"
            ));
        }
        return Ok((
            OvnScheme::Unix,
            vec![OvnEndpoint::Unix(PathBuf::from(path))],
        ));
    }
    let mut scheme: Option<OvnScheme> = None;
    let mut endpoints = Vec::new();
    for entry in entries {
        let (s, ep) = parse_inet_url(entry)?;
        match &scheme {
            Some(prev) if *prev != s => {
                return Err(format!(
                    "OVN DB addresses {value:?} mix schemes {prev} and {s}; all entries must use the same scheme"
                ));
            }
            _ => scheme = Some(s),
        }
        endpoints.push(OvnEndpoint::Inet(ep));
    }
    match scheme {
        Some(s) => Ok((s, endpoints)),
        None => Err(format!(
            "failed to parse OVN DB URL {value:?}: empty address"
        )),
    }
}

/// `scheme://IP:PORT[/...]` with scheme tcp or ssl.
fn parse_inet_url(entry: &str) -> Result<(OvnScheme, SocketAddr), String> {
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err(format!(
            "failed to parse OVN DB URL {entry:?}: expected scheme://IP:PORT (e.g. tcp://1.2.3.4:6641)"
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!(
            "failed to parse OVN DB URL {entry:?}: invalid scheme {scheme:?}"
        ));
    }
    // An OVSDB address has no path: reject one rather than drop it silently.
    let hostport = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let extra = &rest[hostport.len()..];
    if !extra.is_empty() && extra != "/" {
        return Err(format!(
            "failed to parse OVN DB URL {entry:?}: unexpected {extra:?} after the port (an OVN DB address is scheme://IP:PORT)"
        ));
    }
    let (host, port) = split_host_port(hostport)
        .map_err(|e| format!("failed to parse OVN DB host/port {hostport:?}: {e}"))?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("OVN DB host {hostport:?} must be an IP address, not a DNS name"))?;
    let scheme = match scheme.as_str() {
        "tcp" => OvnScheme::Tcp,
        "ssl" => OvnScheme::Ssl,
        _ => {
            return Err(format!(
                "unknown OVN DB scheme {scheme:?} (use tcp, ssl or unix)"
            ));
        }
    };
    Ok((scheme, SocketAddr::new(ip, port)))
}

/// Go's `net.SplitHostPort` plus a numeric port check.
fn split_host_port(hp: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("address {hp}: missing ']' in address"));
        };
        let Some(p) = after.strip_prefix(':') else {
            return Err(format!("address {hp}: missing port in address"));
        };
        (h, p)
    } else {
        let Some((h, p)) = hp.rsplit_once(':') else {
            return Err(format!("address {hp}: missing port in address"));
        };
        if h.contains(':') {
            return Err(format!("address {hp}: too many colons in address"));
        }
        (h, p)
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("address {hp}: invalid port {port:?} (must be 1-65535)"))?;
    Ok((host, port))
}

#[cfg(test)]
mod server_tests {
    use super::*;

    fn auth(value: &str, certs: bool) -> OvnAuth {
        let (scheme, endpoints) = parse_address(value).unwrap();
        let p = |s: &str| certs.then(|| PathBuf::from(s));
        OvnAuth {
            scheme,
            endpoints,
            privkey: p("/k.pem"),
            cert: p("/c.pem"),
            cacert: p("/ca.pem"),
        }
    }

    #[test]
    fn local_socket_follows_ovn_rundir() {
        for (rundir, want) in [
            (None, "unix:/var/run/ovn/ovnnb_db.sock"),
            (Some(""), "unix:/var/run/ovn/ovnnb_db.sock"),
            (Some("/tmp/c"), "unix:/tmp/c/ovnnb_db.sock"),
            (Some("/tmp/c/"), "unix:/tmp/c/ovnnb_db.sock"),
        ] {
            assert_eq!(local_db_socket(rundir, "ovnnb_db"), want, "{rundir:?}");
        }
    }

    #[test]
    fn server_setup_per_address_form() {
        let listen = |remote: &str, ssl: bool| ServerSetup::Listen {
            remote: remote.into(),
            ssl: ssl.then(|| ServerSsl {
                privkey: "/k.pem".into(),
                cert: "/c.pem".into(),
                cacert: "/ca.pem".into(),
            }),
        };
        for (value, certs, want, args) in [
            (
                "tcp://10.0.0.5:6631",
                false,
                listen("ptcp:6631:10.0.0.5", false),
                "set-connection ptcp:6631:10.0.0.5",
            ),
            (
                "tcp://[fd00::1]:6641",
                false,
                listen("ptcp:6641:[fd00::1]", false),
                "set-connection ptcp:6641:[fd00::1]",
            ),
            (
                "ssl://10.0.0.5:6632",
                true,
                listen("pssl:6632:10.0.0.5", true),
                "del-ssl -- set-ssl /k.pem /c.pem /ca.pem -- set-connection pssl:6632:10.0.0.5",
            ),
            (
                "tcp://10.0.0.5:6641,tcp://10.0.0.6:6641,tcp://10.0.0.7:6641",
                false,
                ServerSetup::Clustered { members: 3 },
                "",
            ),
            (
                "unix:/var/run/ovn/ovnnb_db.sock",
                false,
                ServerSetup::Nothing,
                "",
            ),
        ] {
            let got = auth(value, certs).server_setup();
            assert_eq!(got, want, "{value}");
            assert_eq!(got.ctl_args().join(" "), args, "{value}");
        }
        assert_eq!(OvnAuth::local_unix().server_setup(), ServerSetup::Nothing);
    }

    #[test]
    fn an_unchanged_plain_listener_is_left_alone() {
        let tcp = auth("tcp://10.0.0.5:6631", false).server_setup();
        for (current, needed) in [
            ("ptcp:6631:10.0.0.5\n", false),
            ("", true),
            ("ptcp:6631\n", true),
            ("ptcp:6631:10.0.0.5\nptcp:6699\n", true),
            ("read-write role=\"\" ptcp:6631:10.0.0.5\n", false),
            ("read-write role=\"\" ptcp:6631:10.0.0.6\n", true),
        ] {
            assert_eq!(tcp.needs_update(current), needed, "{current:?}");
        }
        let ssl = auth("ssl://10.0.0.5:6631", true).server_setup();
        assert!(ssl.needs_update("pssl:6631:10.0.0.5\n"));
        assert!(!ServerSetup::Clustered { members: 2 }.needs_update(""));
    }
}
