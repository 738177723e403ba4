//! `ip` (iproute2) through the exec seam, in the current network namespace or, via
//! `nsenter --net=<path>`, in another one (a pod's). Reads use `ip -j` (JSON).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::exec::{Cmd, Exec, ExecError};

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// `ip` in one network namespace.
#[derive(Clone)]
pub struct Ip {
    exec: Arc<dyn Exec>,
    /// `None`: the namespace this process runs in; `Some(path)`: e.g. `/var/run/netns/x`.
    netns: Option<String>,
}

/// What we read back about a link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    pub ifname: String,
    #[serde(default)]
    pub ifindex: u32,
    /// A veth's peer's ifindex (in the peer's namespace).
    #[serde(default)]
    pub link_index: Option<u32>,
    /// Set when the peer lives in another network namespace.
    #[serde(default)]
    pub link_netnsid: Option<i32>,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
}

/// One IPv4 route as `ip -j -4 route show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dev: Option<String>,
}

/// One route of the main table as `ip -j -4 route show dev X` prints it: the fields needed
/// to re-create it on another device.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DevRoute {
    pub dst: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub prefsrc: Option<String>,
    #[serde(default)]
    pub metric: Option<u32>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl DevRoute {
    pub fn is_default(&self) -> bool {
        self.dst == "default" || self.dst == "0.0.0.0/0"
    }

    /// Routes the kernel makes for an address (they follow the address by themselves), and
    /// non-unicast routes (no device to move).
    pub fn moves(&self) -> bool {
        self.protocol.as_deref() != Some("kernel")
            && self.kind.as_deref().is_none_or(|k| k == "unicast")
    }

    /// `ip route replace ... dev <dev>` re-creating this route on `dev`.
    pub fn replace_args(&self, dev: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["route".into(), "replace".into(), self.dst.clone()];
        if let Some(gw) = &self.gateway {
            a.extend(["via".into(), gw.clone()]);
        }
        a.extend(["dev".into(), dev.into()]);
        if let Some(p) = &self.protocol {
            a.extend(["proto".into(), p.clone()]);
        }
        if let Some(s) = &self.scope {
            a.extend(["scope".into(), s.clone()]);
        }
        if let Some(s) = &self.prefsrc {
            a.extend(["src".into(), s.clone()]);
        }
        if let Some(m) = self.metric {
            a.extend(["metric".into(), m.to_string()]);
        }
        if self.flags.iter().any(|f| f == "onlink") {
            a.push("onlink".into());
        }
        a
    }
}

/// A change made with `ip`, as data: callers say what they want, [`Ip::apply`] runs it, and
/// the command line each one becomes is unit-tested here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpWrite {
    /// `ip link set dev DEV up`
    LinkUp { dev: String },
    /// `ip link set dev DEV address MAC`
    LinkAddress { dev: String, mac: String },
    /// `ip addr replace ADDR dev DEV`
    AddrReplace { dev: String, addr: Ipv4Net },
    /// `ip addr del ADDR dev DEV`
    AddrDel { dev: String, addr: Ipv4Net },
    /// `ip addr flush dev DEV`
    AddrFlush { dev: String },
    /// `ip route replace DST via VIA dev DEV` (`dst: None`: the default route).
    RouteVia {
        dst: Option<Ipv4Net>,
        via: Ipv4Addr,
        dev: String,
    },
    /// A veth pair: `host` in this namespace, `peer` (with its final name and MAC) created
    /// directly in the network namespace `netns`, both with `mtu`.
    Veth {
        host: String,
        peer: String,
        peer_mac: String,
        mtu: u32,
        netns: String,
    },
    /// Re-create `route` (read from another device) on `dev`.
    MoveRoute { route: DevRoute, dev: String },
}

impl IpWrite {
    pub fn link_up(dev: &str) -> Self {
        IpWrite::LinkUp { dev: dev.into() }
    }

    pub fn addr_replace(dev: &str, addr: Ipv4Net) -> Self {
        IpWrite::AddrReplace {
            dev: dev.into(),
            addr,
        }
    }

    pub fn addr_del(dev: &str, addr: Ipv4Net) -> Self {
        IpWrite::AddrDel {
            dev: dev.into(),
            addr,
        }
    }

    pub fn move_route(route: &DevRoute, dev: &str) -> Self {
        IpWrite::MoveRoute {
            route: route.clone(),
            dev: dev.into(),
        }
    }

    /// The `ip` arguments.
    pub fn args(&self) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            IpWrite::LinkUp { dev } => v(&["link", "set", "dev", dev, "up"]),
            IpWrite::LinkAddress { dev, mac } => v(&["link", "set", "dev", dev, "address", mac]),
            IpWrite::AddrReplace { dev, addr } => {
                v(&["addr", "replace", &addr.to_string(), "dev", dev])
            }
            IpWrite::AddrDel { dev, addr } => v(&["addr", "del", &addr.to_string(), "dev", dev]),
            IpWrite::AddrFlush { dev } => v(&["addr", "flush", "dev", dev]),
            IpWrite::RouteVia { dst, via, dev } => {
                let dst = dst.map_or("default".to_string(), |d| d.to_string());
                v(&[
                    "route",
                    "replace",
                    &dst,
                    "via",
                    &via.to_string(),
                    "dev",
                    dev,
                ])
            }
            IpWrite::Veth {
                host,
                peer,
                peer_mac,
                mtu,
                netns,
            } => {
                let m = mtu.to_string();
                v(&[
                    "link", "add", host, "mtu", &m, "type", "veth", "peer", "name", peer,
                    "address", peer_mac, "mtu", &m, "netns", netns,
                ])
            }
            IpWrite::MoveRoute { route, dev } => route.replace_args(dev),
        }
    }
}

#[derive(Deserialize)]
struct AddrLink {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: String,
    #[serde(default)]
    prefixlen: u8,
}

impl Ip {
    pub fn host(exec: Arc<dyn Exec>) -> Self {
        Ip { exec, netns: None }
    }

    pub fn in_netns(exec: Arc<dyn Exec>, path: &str) -> Self {
        Ip {
            exec,
            netns: Some(path.to_string()),
        }
    }

    /// `program args` in this namespace (`nsenter --net=<path> program args` for another one).
    pub fn cmd(&self, program: &str, args: &[&str]) -> Cmd {
        let c = match &self.netns {
            None => Cmd::new(program),
            Some(p) => Cmd::new("nsenter")
                .arg(format!("--net={p}"))
                .arg("--")
                .arg(program),
        };
        c.args(args.iter().copied()).timeout(IP_TIMEOUT)
    }

    fn where_(&self) -> String {
        match &self.netns {
            None => "the host network namespace".into(),
            Some(p) => format!("network namespace {p}"),
        }
    }

    /// Run any program (e.g. `ethtool`) in this namespace.
    pub async fn run_prog(&self, program: &str, args: &[&str]) -> Result<String, ExecError> {
        Ok(self.exec.run(&self.cmd(program, args)).await?.stdout)
    }

    pub async fn run(&self, args: &[&str]) -> Result<String> {
        self.run_prog("ip", args)
            .await
            .with_context(|| format!("in {}", self.where_()))
    }

    /// The link named `dev`, or `None` if there is no such device.
    pub async fn link(&self, dev: &str) -> Result<Option<Link>> {
        match self
            .run_prog("ip", &["-j", "link", "show", "dev", dev])
            .await
        {
            Ok(out) => {
                let mut v: Vec<Link> = serde_json::from_str(&out)
                    .with_context(|| format!("parsing `ip -j link show dev {dev}`: {out}"))?;
                Ok(v.pop())
            }
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("in {}", self.where_())),
        }
    }

    /// Waits (polling) until `dev` exists, e.g. an OVS internal port vswitchd creates
    /// asynchronously after the transaction.
    pub async fn wait_link(&self, dev: &str, timeout: Duration) -> Result<Link> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.link(dev).await? {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "interface {dev} did not appear in {} within {timeout:?}; check that \
                     ovs-vswitchd is running and its log for errors about {dev}",
                    self.where_()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// IPv4 addresses on `dev` (empty if the device does not exist).
    pub async fn addrs(&self, dev: &str) -> Result<Vec<Ipv4Net>> {
        let out = match self
            .run_prog("ip", &["-j", "-4", "addr", "show", "dev", dev])
            .await
        {
            Ok(o) => o,
            Err(e) if is_no_device(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("in {}", self.where_())),
        };
        let links: Vec<AddrLink> = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j -4 addr show dev {dev}`: {out}"))?;
        Ok(links
            .into_iter()
            .flat_map(|l| l.addr_info)
            .filter(|a| a.family == "inet")
            .filter_map(|a| {
                let ip: Ipv4Addr = a.local.parse().ok()?;
                Ipv4Net::new(ip, a.prefixlen).ok()
            })
            .collect())
    }

    /// Make one change.
    pub async fn apply(&self, w: &IpWrite) -> Result<()> {
        let args = w.args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&argv).await.map(drop)
    }

    /// The IPv4 routes of the main table on `dev`, with what is needed to re-create them.
    pub async fn dev_routes(&self, dev: &str) -> Result<Vec<DevRoute>> {
        let out = self.run(&["-j", "-4", "route", "show", "dev", dev]).await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j -4 route show dev {dev}`: {out}"))
    }

    /// The IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let out = self.run(&["-j", "-4", "route", "show"]).await?;
        serde_json::from_str(&out).with_context(|| format!("parsing `ip -j -4 route show`: {out}"))
    }

    /// `ip link del dev`; a missing device is fine.
    pub async fn link_del(&self, dev: &str) -> Result<()> {
        match self.run_prog("ip", &["link", "del", "dev", dev]).await {
            Ok(_) => Ok(()),
            Err(e) if is_no_device(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("in {}", self.where_())),
        }
    }
}

/// iproute2's ways of saying "no such interface".
pub fn is_no_device(e: &ExecError) -> bool {
    let s = e.stderr();
    s.contains("does not exist") || s.contains("Cannot find device") || s.contains("No such device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_as_command_lines() {
        let net: Ipv4Net = "10.1.0.5/24".parse().unwrap();
        let gw: Ipv4Addr = "10.1.0.1".parse().unwrap();
        for (w, want) in [
            (IpWrite::link_up("eth0"), "link set dev eth0 up"),
            (
                IpWrite::LinkAddress {
                    dev: "k8s-n1".into(),
                    mac: "0a:58:0a:01:00:02".into(),
                },
                "link set dev k8s-n1 address 0a:58:0a:01:00:02",
            ),
            (
                IpWrite::addr_replace("eth0", net),
                "addr replace 10.1.0.5/24 dev eth0",
            ),
            (
                IpWrite::addr_del("eth0", net),
                "addr del 10.1.0.5/24 dev eth0",
            ),
            (
                IpWrite::AddrFlush { dev: "eth1".into() },
                "addr flush dev eth1",
            ),
            (
                IpWrite::RouteVia {
                    dst: None,
                    via: gw,
                    dev: "eth0".into(),
                },
                "route replace default via 10.1.0.1 dev eth0",
            ),
            (
                IpWrite::RouteVia {
                    dst: Some("172.16.0.0/16".parse().unwrap()),
                    via: gw,
                    dev: "k8s-n1".into(),
                },
                "route replace 172.16.0.0/16 via 10.1.0.1 dev k8s-n1",
            ),
            (
                IpWrite::Veth {
                    host: "abc".into(),
                    peer: "eth0".into(),
                    peer_mac: "0a:58:0a:01:00:05".into(),
                    mtu: 1400,
                    netns: "/var/run/netns/p".into(),
                },
                "link add abc mtu 1400 type veth peer name eth0 address 0a:58:0a:01:00:05 mtu 1400 netns /var/run/netns/p",
            ),
        ] {
            assert_eq!(w.args().join(" "), want);
        }
    }
    use crate::exec::{FakeExec, FakeReply};

    #[tokio::test]
    async fn reads_links_addrs_and_routes_from_json() {
        let f = FakeExec::strict();
        f.expect(
            "nsenter --net=/var/run/netns/p -- ip -j link show dev eth0",
            FakeReply::Ok(
                r#"[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","UP"],"mtu":1400,"address":"0a:58:0a:01:00:05"}]"#
                    .into(),
            ),
        );
        f.expect(
            "nsenter --net=/var/run/netns/p -- ip -j -4 addr show dev eth0",
            FakeReply::Ok(
                r#"[{"ifname":"eth0","addr_info":[{"family":"inet","local":"10.1.0.5","prefixlen":24}]}]"#
                    .into(),
            ),
        );
        f.expect(
            "nsenter --net=/var/run/netns/p -- ip -j -4 route show",
            FakeReply::Ok(
                r#"[{"dst":"default","gateway":"10.1.0.1","dev":"eth0"},{"dst":"10.1.0.0/24","dev":"eth0"}]"#
                    .into(),
            ),
        );
        f.expect(
            "nsenter --net=/var/run/netns/p -- ip -j link show dev nope",
            FakeReply::Fail {
                stderr: "Device \"nope\" does not exist.".into(),
            },
        );
        let ip = Ip::in_netns(f.clone(), "/var/run/netns/p");
        let l = ip.link("eth0").await.unwrap().unwrap();
        assert!(l.is_up());
        assert_eq!(l.mtu, 1400);
        assert_eq!(
            ip.addrs("eth0").await.unwrap(),
            vec!["10.1.0.5/24".parse::<Ipv4Net>().unwrap()]
        );
        let r = ip.routes().await.unwrap();
        assert_eq!(r[0].gateway.as_deref(), Some("10.1.0.1"));
        assert!(ip.link("nope").await.unwrap().is_none());
        assert!(f.all_called());
    }
}
