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

    /// ovsdb server remote, e.g. `ptcp:6641` (listens on all addresses); `None` for unix.
    /// With a list of addresses (clustered DB) the first entry's port is used.
    pub fn server_target(&self) -> Option<String> {
        match (&self.scheme, self.endpoints.first()) {
            (OvnScheme::Unix, _) | (_, None) | (_, Some(OvnEndpoint::Unix(_))) => None,
            (scheme, Some(OvnEndpoint::Inet(sa))) => Some(format!("p{scheme}:{}", sa.port())),
        }
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

/// Parses an address value into its scheme and endpoints (messages as in the reference, §1.6).
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
