//! A "pod": a netns wired to a chassis's br-int with a veth pair (no CNI involved).

use crate::Chassis;
use crate::chassis::{kill_tracked, spawn_tracked};
use crate::proc::{self, CMD_TIMEOUT, Spawned};
use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::Duration;

/// A network namespace whose `eth0` is a veth peered with a port on `br-int` of a chassis
/// (`external_ids:iface-id=<iface_id>`). veth rather than an internal port: internal ports
/// moved into a netns break when vswitchd restarts (G5). Drop deletes the port and netns.
#[derive(Debug)]
pub struct TestPod {
    name: String,
    netns: String,
    host_if: String,
    ovs_db: String,
    ovs_dir: PathBuf,
    spawned: Mutex<Vec<Spawned>>,
}

impl TestPod {
    /// Creates the pod netns with `eth0` (`mac`, `ip_cidr`, MTU 1400 to leave room for
    /// tunnel headers (G6), default route via `gw` unless empty, TX checksum offload off (G4)).
    pub fn create(
        chassis: &Chassis,
        name: &str,
        iface_id: &str,
        mac: &str,
        ip_cidr: &str,
        gw: &str,
    ) -> Result<TestPod> {
        let mut host_if = format!("v{}{}", crate::next_id(), name);
        host_if.truncate(15); // IFNAMSIZ - 1
        let pod = TestPod {
            name: name.to_string(),
            netns: crate::netns_name(name),
            host_if,
            ovs_db: chassis.ovs_db(),
            ovs_dir: chassis.rundir().to_path_buf(),
            spawned: Mutex::new(Vec::new()),
        };
        pod.wire(chassis, iface_id, mac, ip_cidr, gw)
            .with_context(|| format!("creating test pod {name} on chassis {}", chassis.name()))?;
        Ok(pod)
    }

    fn wire(&self, ch: &Chassis, iface_id: &str, mac: &str, ip_cidr: &str, gw: &str) -> Result<()> {
        crate::netns_add(&self.netns)?;
        // Created directly inside both namespaces, so "eth0" never clashes with the host.
        proc::run_argv(
            &[
                "ip",
                "link",
                "add",
                &self.host_if,
                "netns",
                ch.netns(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &self.netns,
            ],
            CMD_TIMEOUT,
        )?;
        let ns = self.netns.as_str();
        proc::run_argv(
            &["ip", "-n", ns, "link", "set", "eth0", "address", mac],
            CMD_TIMEOUT,
        )?;
        proc::run_argv(
            &["ip", "-n", ns, "link", "set", "eth0", "mtu", "1400"],
            CMD_TIMEOUT,
        )?;
        proc::run_argv(
            &["ip", "-n", ns, "addr", "add", ip_cidr, "dev", "eth0"],
            CMD_TIMEOUT,
        )?;
        proc::run_argv(&["ip", "-n", ns, "link", "set", "eth0", "up"], CMD_TIMEOUT)?;
        if !gw.is_empty() {
            proc::run_argv(
                &["ip", "-n", ns, "route", "add", "default", "via", gw],
                CMD_TIMEOUT,
            )?;
        }
        // G4: veth TX checksum offload leaves TCP checksums partial; the userspace
        // datapath forwards them as-is and the receiver drops them.
        proc::run_argv(
            &[
                "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off",
            ],
            CMD_TIMEOUT,
        )?;
        proc::run_argv(
            &["ip", "-n", ch.netns(), "link", "set", &self.host_if, "up"],
            CMD_TIMEOUT,
        )?;
        ch.vsctl(&[
            "add-port",
            "br-int",
            &self.host_if,
            "--",
            "set",
            "interface",
            &self.host_if,
            &format!("external_ids:iface-id={iface_id}"),
        ])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn netns(&self) -> &str {
        &self.netns
    }
    /// The br-int side of the veth (in the chassis netns).
    pub fn host_ifname(&self) -> &str {
        &self.host_if
    }

    fn cmd(&self, argv: &[&str]) -> Result<Command> {
        if argv.is_empty() {
            return Err(anyhow!("empty argv"));
        }
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).args(argv);
        Ok(c)
    }

    /// An `ip netns exec <pod> argv…` command to configure freely (pipes etc.); not tracked,
    /// so the caller must reap what it spawns.
    pub fn command(&self, argv: &[&str]) -> Result<Command> {
        self.cmd(argv)
    }

    /// Runs argv inside the pod netns (60 s deadline); returns the output whatever the status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        proc::run_output(&mut self.cmd(argv)?, Duration::from_secs(60))
    }

    /// Spawns a long-running process in the pod netns (e.g. a server). The caller owns
    /// the child; Drop of the pod still kills it if it is left running.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        spawn_tracked(&mut self.cmd(argv)?, &self.spawned)
    }
}

impl Drop for TestPod {
    fn drop(&mut self) {
        kill_tracked(&self.spawned);
        if self.ovs_dir.join("db.sock").exists() {
            let _ = proc::run(
                Command::new("ovs-vsctl")
                    .arg(format!("--db={}", self.ovs_db))
                    .args([
                        "--timeout=5",
                        "--if-exists",
                        "del-port",
                        "br-int",
                        &self.host_if,
                    ]),
                Duration::from_secs(8),
            );
        }
        // Deleting the netns destroys eth0 and with it the host-side peer.
        crate::netns_del(&self.netns);
    }
}
