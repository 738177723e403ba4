//! The CNI protocol: environment, network config, errors and versioned results (pure).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{Value, json};

/// Versions whose result layout we produce (0.1.0/0.2.0 had a different, obsolete one).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// What the plugin itself speaks (VERSION, errors before a config is read).
pub const PLUGIN_VERSION: &str = "1.1.0";

/// CNI spec error codes (1–99 are reserved by the spec; 100+ are ours).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Everything else (the reference's code).
    pub const GENERIC: u32 = 100;
}

/// A CNI error: printed as JSON on stdout, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }

    /// From an internal error: the message is the whole context chain.
    pub fn generic(e: &anyhow::Error) -> Self {
        CniError::new(code::GENERIC, format!("{e:#}"))
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// The `CNI_*` environment, validated for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    /// `CNI_ARGS` pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: BTreeMap<String, String>,
}

impl CniEnv {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let Some(cmd) = nonempty("CNI_COMMAND") else {
            return Err(missing(&["CNI_COMMAND"]));
        };
        let command = match cmd.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                )
                .with_details("expected ADD, DEL, CHECK, VERSION, STATUS or GC"));
            }
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            _ => &[],
        };
        let absent: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| nonempty(k).is_none())
            .collect();
        if !absent.is_empty() {
            return Err(missing(&absent));
        }
        let container_id = nonempty("CNI_CONTAINERID").unwrap_or_default();
        let ifname = nonempty("CNI_IFNAME").unwrap_or_default();
        if !required.is_empty() {
            check_container_id(&container_id)?;
            check_ifname(&ifname)?;
        }
        let args = match nonempty("CNI_ARGS") {
            Some(a) => parse_args(&a)?,
            None => BTreeMap::new(),
        };
        Ok(CniEnv {
            command,
            container_id,
            netns: nonempty("CNI_NETNS"),
            ifname,
            args,
        })
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`.
    pub fn pod(&self) -> Result<(String, String), CniError> {
        let get = |k: &str| self.args.get(k).filter(|v| !v.is_empty()).cloned();
        match (get("K8S_POD_NAMESPACE"), get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) => {
                // These go into the API URL path and OVN names: `../` must never get there.
                crate::kube::names::check_namespaced(&ns, &name).map_err(|why| {
                    CniError::new(
                        code::INVALID_ENV,
                        format!("CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME: {why}"),
                    )
                })?;
                Ok((ns, name))
            }
            _ => Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS must name the pod: K8S_POD_NAMESPACE and K8S_POD_NAME are required",
            )),
        }
    }
}

fn missing(vars: &[&str]) -> CniError {
    CniError::new(code::INVALID_ENV, "required environment variables missing")
        .with_details(format!("not set: {}", vars.join(", ")))
}

/// The spec: alphanumeric first, then alphanumerics, `_`, `.` or `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!("invalid CNI_CONTAINERID {id:?}"),
        )
        .with_details("it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"))
    }
}

/// A Linux interface name: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn check_ifname(n: &str) -> Result<(), CniError> {
    let ok = !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(
            CniError::new(code::INVALID_ENV, format!("invalid CNI_IFNAME {n:?}")).with_details(
                "an interface name has 1 to 15 characters, without '/', ':' or spaces",
            ),
        )
    }
}

/// `K1=V1;K2=V2` (empty elements are tolerated).
fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut m = BTreeMap::new();
    for el in s.split(';').filter(|e| !e.is_empty()) {
        match el.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.contains('=') => {
                m.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS: invalid pair {el:?} (expected KEY=VALUE)"),
                ));
            }
        }
    }
    Ok(m)
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (the fields we use; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "configFilePath", default)]
    pub config_file_path: Option<PathBuf>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Decode and check the version against the command (CHECK needs 0.4.0+, GC and STATUS
    /// 1.1.0+). Returns the config and its version.
    pub fn parse(stdin: &[u8], cmd: Command) -> Result<(NetConf, String), CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("failed to decode the network configuration on stdin: {e}"),
            )
        })?;
        let Some(v) = conf.cni_version.clone().filter(|v| !v.is_empty()) else {
            return Err(incompatible("(none)", cmd));
        };
        let min = match cmd {
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
            _ => "0.3.0",
        };
        if !SUPPORTED_VERSIONS.contains(&v.as_str()) || version_lt(&v, min) {
            return Err(incompatible(&v, cmd));
        }
        if conf.name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration: \"name\" is missing",
            ));
        }
        Ok((conf, v))
    }
}

fn incompatible(v: &str, cmd: Command) -> CniError {
    let supported = match cmd {
        Command::Check => &SUPPORTED_VERSIONS[2..],
        Command::Status | Command::Gc => &SUPPORTED_VERSIONS[4..],
        _ => SUPPORTED_VERSIONS,
    };
    CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("incompatible CNI versions: the config has cniVersion {v}"),
    )
    .with_details(format!(
        "{cmd:?} supports cniVersion {}",
        supported.join(", ")
    ))
}

fn version_lt(a: &str, b: &str) -> bool {
    let p = |s: &str| -> Vec<u32> { s.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    p(a) < p(b)
}

/// The VERSION answer.
pub fn version_info() -> Value {
    json!({"cniVersion": PLUGIN_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// What ADD did, rendered per requested version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub host_if: String,
    pub host_mac: String,
    pub pod_if: String,
    pub pod_mac: String,
    pub sandbox: String,
    pub ip: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl AddResult {
    pub fn to_json(&self, version: &str) -> Value {
        let v11 = version == "1.1.0";
        let mut host = json!({"name": self.host_if, "mac": self.host_mac});
        let mut pod = json!({"name": self.pod_if, "mac": self.pod_mac, "sandbox": self.sandbox});
        if v11 {
            // `mtu` on interfaces is new in 1.1.
            host["mtu"] = json!(self.mtu);
            pod["mtu"] = json!(self.mtu);
        }
        let mut ip = json!({
            "interface": 1,
            "address": self.ip.to_string(),
            "gateway": self.gateway.to_string(),
        });
        if version.starts_with("0.") {
            // 0.3.x/0.4.0 carry the IP family; 1.0 dropped it.
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [host, pod],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway.to_string()}],
            "dns": {},
        })
    }
}

/// What CHECK compares against: the addresses and MAC of a previous result (any version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrevResult {
    pub ips: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    pub pod_mac: Option<String>,
}

impl PrevResult {
    pub fn parse(v: &Value, ifname: &str) -> Result<PrevResult, CniError> {
        let bad = |what: &str| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("invalid prevResult in the network configuration: {what}"),
            )
        };
        let ifaces = v
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pod_idx = ifaces.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
        });
        let pod_mac = pod_idx
            .and_then(|i| ifaces[i].get("mac"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let mut ips = Vec::new();
        for ip in v
            .get("ips")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"ips\" list"))?
        {
            // Only the addresses of our interface (or unattributed ones) are ours to check.
            if let (Some(want), Some(idx)) = (pod_idx, ip.get("interface").and_then(Value::as_u64))
                && idx as usize != want
            {
                continue;
            }
            let addr = ip
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an ips entry has no \"address\""))?;
            let Ok(net) = addr.parse::<Ipv4Net>() else {
                continue; // IPv6 or foreign: not ours.
            };
            let gw = ip
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok());
            ips.push((net, gw));
        }
        Ok(PrevResult { ips, pod_mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::annotations::PodNetwork;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn environment_validation() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.details.contains("CNI_COMMAND"));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.details.contains("CNI_NETNS, CNI_IFNAME"), "{e:?}");
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;",
            ),
        ])
        .unwrap();
        assert_eq!(ok.pod().unwrap(), ("default".into(), "web".into()));
        for (ns, name) in [
            ("default", "../../pods/x"),
            ("..", "web"),
            ("default", "web/status"),
            ("Default", "web"),
            ("default", "web%2F.."),
        ] {
            let e = env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0"),
                (
                    "CNI_ARGS",
                    &format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
                ),
            ])
            .unwrap()
            .pod()
            .unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{ns}/{name}");
            assert!(e.msg.contains("K8S_POD_NAMESPACE/K8S_POD_NAME"), "{e}");
        }
        let bad_args = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ]);
        assert_eq!(bad_args.unwrap_err().code, 4);
        for bad in ["-x", "a b", ""] {
            let r = env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", bad),
                ("CNI_IFNAME", "eth0"),
            ]);
            assert_eq!(r.unwrap_err().code, 4, "{bad:?}");
        }
        let r = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "a-very-long-ifname"),
        ]);
        assert_eq!(r.unwrap_err().code, 4);
        // VERSION needs nothing else.
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn config_versions() {
        let p = |s: &str, c| NetConf::parse(s.as_bytes(), c);
        assert_eq!(p("{", Command::Add).unwrap_err().code, 6);
        assert_eq!(p(r#"{"name":"n"}"#, Command::Add).unwrap_err().code, 1);
        assert_eq!(
            p(r#"{"cniVersion":"0.2.0","name":"n"}"#, Command::Add)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            p(r#"{"cniVersion":"0.3.1","name":"n"}"#, Command::Check)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            p(r#"{"cniVersion":"1.0.0","name":"n"}"#, Command::Gc)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            p(r#"{"cniVersion":"1.0.0"}"#, Command::Add)
                .unwrap_err()
                .code,
            7
        );
        for v in SUPPORTED_VERSIONS {
            let (c, ver) = p(
                &format!(r#"{{"cniVersion":"{v}","name":"n","mtu":1300}}"#),
                Command::Add,
            )
            .unwrap();
            assert_eq!(&ver, v);
            assert_eq!(c.mtu, Some(1300));
        }
        let (c, _) = p(
            r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            Command::Gc,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
    }

    #[test]
    fn pod_annotation() {
        let p = PodNetwork::parse(
            r#"{"ip_address":"10.1.0.5/24", "mac_address":"0A:58:0a:01:00:05", "gateway_ip": "10.1.0.1"}"#,
        )
        .unwrap();
        assert_eq!(p.cidr().to_string(), "10.1.0.5/24");
        assert_eq!(p.mac, "0a:58:0a:01:00:05");
        assert!(PodNetwork::parse(r#"{"ip_address":"10.1.0.5/24"}"#).is_err());
        assert!(
            PodNetwork::parse(
                r#"{"ip_address":"10.1.0.5/24","mac_address":"zz","gateway_ip":"10.1.0.1"}"#
            )
            .is_err()
        );
        // The plugin has no node subnet: a bare address or a missing gateway is not enough.
        for bad in [
            r#"{"ip_address":"10.1.0.5","mac_address":"0a:58:0a:01:00:05","gateway_ip":"10.1.0.1"}"#,
            r#"{"ip_address":"10.1.0.5/24","mac_address":"0a:58:0a:01:00:05"}"#,
            r#"{"ip_address":"","mac_address":"0a:58:0a:01:00:05","gateway_ip":"10.1.0.1"}"#,
        ] {
            assert!(PodNetwork::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_per_version() {
        let r = AddResult {
            host_if: "h".into(),
            host_mac: "02:00:00:00:00:01".into(),
            pod_if: "eth0".into(),
            pod_mac: "0a:58:0a:01:00:05".into(),
            sandbox: "/var/run/netns/p".into(),
            ip: "10.1.0.5/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            mtu: 1400,
        };
        let v = r.to_json("0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert!(v["interfaces"][0].get("mtu").is_none());
        let v = r.to_json("1.0.0");
        assert!(v["ips"][0].get("version").is_none());
        let v = r.to_json("1.1.0");
        assert_eq!(v["interfaces"][1]["mtu"], 1400);
        assert_eq!(v["ips"][0]["interface"], 1);
        let prev = PrevResult::parse(&v, "eth0").unwrap();
        assert_eq!(
            prev.ips,
            vec![(
                "10.1.0.5/24".parse().unwrap(),
                Some("10.1.0.1".parse().unwrap())
            )]
        );
        assert_eq!(prev.pod_mac.as_deref(), Some("0a:58:0a:01:00:05"));
    }

    #[test]
    fn errors_render_as_cni_json() {
        let e = CniError::new(4, "m").with_details("d");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion":"1.0.0","code":4,"msg":"m","details":"d"})
        );
    }
}
