//! The "outside world" of gateway tests: a network namespace with a Linux bridge holding the
//! next-hop address, and one veth per attached chassis, whose chassis end is that chassis's
//! gateway NIC. Nothing else is ever addressed.

use crate::Chassis;
use crate::chassis::{kill_tracked, spawn_tracked};
use crate::proc::{self, CMD_TIMEOUT, Spawned};
use anyhow::{Context, Result, anyhow};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const BRIDGE: &str = "br0";

/// A namespace standing for the network beyond the nodes' gateway NICs. Dropping it kills
/// what it spawned and deletes the namespace (and with it the NICs' veth peers).
#[derive(Debug)]
pub struct Outside {
    netns: String,
    ip: Ipv4Addr,
    ports: AtomicU32,
    spawned: Mutex<Vec<Spawned>>,
}

impl Outside {
    /// Creates the namespace with `ip_cidr` (e.g. `172.31.0.100/24`) on its bridge.
    pub fn start(ip_cidr: &str) -> Result<Outside> {
        crate::sweep_dead();
        let ip: Ipv4Addr = ip_cidr
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad outside address {ip_cidr}"))?;
        let o = Outside {
            netns: crate::netns_name("outside"),
            ip,
            ports: AtomicU32::new(0),
            spawned: Mutex::new(Vec::new()),
        };
        o.boot(ip_cidr)
            .with_context(|| format!("creating the outside namespace {}", o.netns))?;
        Ok(o)
    }

    fn boot(&self, ip_cidr: &str) -> Result<()> {
        crate::netns_add(&self.netns)?;
        let ns = self.netns.as_str();
        for argv in [
            &["ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge"][..],
            &["ip", "-n", ns, "addr", "add", ip_cidr, "dev", BRIDGE],
            &["ip", "-n", ns, "link", "set", BRIDGE, "up"],
            // G4: TCP from a kernel stack into the userspace datapath needs full checksums.
            &[
                "ip", "netns", "exec", ns, "ethtool", "-K", BRIDGE, "tx", "off",
            ],
        ] {
            proc::run_argv(argv, CMD_TIMEOUT)?;
        }
        Ok(())
    }

    /// Gives `chassis` a gateway NIC `nic` with `node_cidr`, cabled to this namespace's
    /// bridge; with `default_route`, the chassis's default route goes via this namespace.
    /// G16: the chassis kernel is kept from answering what arrives on the NIC once it is an
    /// OVS port (`ip rule iif <nic> blackhole` ahead of the `local` table; `arp_ignore=1` is
    /// set chassis-wide).
    pub fn attach(
        &self,
        chassis: &Chassis,
        nic: &str,
        node_cidr: &str,
        default_route: bool,
    ) -> Result<()> {
        let peer = format!("o{}", self.ports.fetch_add(1, Ordering::Relaxed));
        let (ns, cns) = (self.netns.as_str(), chassis.netns());
        let gw = self.ip.to_string();
        let mut steps: Vec<Vec<&str>> = vec![
            vec![
                "ip", "link", "add", nic, "netns", cns, "type", "veth", "peer", "name", &peer,
                "netns", ns,
            ],
            vec!["ip", "-n", ns, "link", "set", &peer, "master", BRIDGE],
            vec!["ip", "-n", ns, "link", "set", &peer, "up"],
            vec![
                "ip", "netns", "exec", ns, "ethtool", "-K", &peer, "tx", "off",
            ],
            vec![
                "ip", "netns", "exec", cns, "ethtool", "-K", nic, "tx", "off",
            ],
            vec!["ip", "-n", cns, "link", "set", nic, "up"],
            vec!["ip", "-n", cns, "addr", "add", node_cidr, "dev", nic],
        ];
        if default_route {
            steps.push(vec![
                "ip", "-n", cns, "route", "add", "default", "via", &gw, "dev", nic,
            ]);
        }
        for argv in steps {
            proc::run_argv(&argv, CMD_TIMEOUT)
                .with_context(|| format!("attaching {nic} of chassis {}", chassis.name()))?;
        }
        // The blackhole rule must come before the `local` table (pref 0), or the kernel still
        // takes packets for the node IP and answers with RSTs: move `local` behind it.
        let rules = proc::run_argv(&["ip", "-n", cns, "rule", "show"], CMD_TIMEOUT)?;
        if rules
            .lines()
            .any(|l| l.starts_with("0:") && l.contains("lookup local"))
        {
            proc::run_argv(
                &[
                    "ip", "-n", cns, "rule", "add", "pref", "100", "lookup", "local",
                ],
                CMD_TIMEOUT,
            )?;
            proc::run_argv(
                &[
                    "ip", "-n", cns, "rule", "del", "pref", "0", "lookup", "local",
                ],
                CMD_TIMEOUT,
            )?;
        }
        proc::run_argv(
            &[
                "ip",
                "-n",
                cns,
                "rule",
                "add",
                "pref",
                "10",
                "iif",
                nic,
                "blackhole",
            ],
            CMD_TIMEOUT,
        )?;
        Ok(())
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The next-hop address the chassis NICs route through.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn cmd(&self, argv: &[&str]) -> Result<Command> {
        if argv.is_empty() {
            return Err(anyhow!("empty argv"));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).args(argv);
        Ok(c)
    }

    /// Runs argv inside the namespace (60 s deadline); the output whatever the status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        proc::run_output(&mut self.cmd(argv)?, Duration::from_secs(60))
    }

    /// Spawns a long-running process (e.g. a server) in the namespace; killed on Drop.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        spawn_tracked(&mut self.cmd(argv)?, &self.spawned)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        kill_tracked(&self.spawned);
        crate::netns_del(&self.netns);
    }
}
