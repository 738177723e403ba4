//! A chassis ("node"): its own netns with ovsdb-server, ovs-vswitchd (netdev), br-int
//! and ovn-controller.

use crate::Central;
use crate::proc::{self, CMD_TIMEOUT, Spawned};
use anyhow::{Context, Result, anyhow, bail};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The Debian file the node's gateway code appends `--delete-transient-ports` to (so a NIC in
/// a bridge is released when OVS restarts).
const OVS_DEFAULTS: &str = "/etc/default/openvswitch-switch";

/// Options for [`Chassis::start`].
#[derive(Debug, Clone)]
pub struct ChassisOpts {
    /// Tunnel endpoint IP; `None` means 127.0.0.1 (fine for a single chassis, G7).
    pub encap_ip: Option<Ipv4Addr>,
    /// `geneve` (default) or `vxlan`.
    pub encap_type: String,
    /// Extra `Open_vSwitch` external_ids (e.g. `ovn-bridge-mappings`).
    pub external_ids: Vec<(String, String)>,
    /// How long to wait for the chassis to show up in the SB.
    pub register_timeout: Duration,
}

impl Default for ChassisOpts {
    fn default() -> Self {
        ChassisOpts {
            encap_ip: None,
            encap_type: "geneve".into(),
            external_ids: Vec::new(),
            register_timeout: Duration::from_secs(20),
        }
    }
}

/// One OVN chassis in its own network namespace. Dropping it stops its daemons (vswitchd
/// with `exit --cleanup`), deletes leftover taps and the netns, and removes its dir.
#[derive(Debug)]
pub struct Chassis {
    name: String,
    netns: String,
    dir: PathBuf,
    sb_sock: PathBuf,
    spawned: Mutex<Vec<Spawned>>,
}

impl Chassis {
    /// Starts a chassis with system-id `name`, connected to `central`'s SB over its unix
    /// socket (loopback TCP would not cross the netns, G8). Returns once the chassis is
    /// registered in the SB.
    pub fn start(central: &Central, name: &str, opts: ChassisOpts) -> Result<Chassis> {
        let ch = Chassis::start_ovs(central, name)?;
        ch.start_controller(&opts)?;
        Ok(ch)
    }

    /// netns + ovsdb-server + ovs-vswitchd + br-int, without ovn-controller.
    pub(crate) fn start_ovs(central: &Central, name: &str) -> Result<Chassis> {
        crate::sweep_dead();
        let dir = crate::new_private_dir()?;
        let ch = Chassis {
            name: name.to_string(),
            netns: crate::netns_name(name),
            dir,
            sb_sock: central.sb_sock(),
            spawned: Mutex::new(Vec::new()),
        };
        ch.boot_ovs()
            .with_context(|| format!("starting OVS for chassis {name} in {}", ch.dir.display()))?;
        Ok(ch)
    }

    fn boot_ovs(&self) -> Result<()> {
        // Marker first, so the sweeper can find the netns if we die half-way.
        std::fs::write(self.dir.join(crate::NETNS_MARKER), &self.netns)?;
        crate::netns_add(&self.netns)?;
        // G16: keep the kernel from answering ARP (via the host-side pod veths) for
        // addresses that are not on the incoming port.
        self.run_checked(&["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"])?;
        let db = self.dir.join("conf.db");
        proc::run(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&db)
                .arg(OVS_SCHEMA),
            CMD_TIMEOUT,
        )?;
        self.start_ovsdb()?;
        self.vsctl(&["--no-wait", "init"])?;
        let log = self.dir.join("ovs-vswitchd.log");
        proc::start_daemon(
            self.netns_cmd("ovs-vswitchd")
                .args(["--detach", "--no-chdir"])
                .arg(format!("--pidfile={}", self.path("ovs-vswitchd.pid")))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!("--unixctl={}", self.path("ovs-vswitchd.ctl")))
                .arg(format!("unix:{}", self.path("db.sock"))),
            &self.dir,
            "ovs-vswitchd",
            &log,
        )?;
        // G10: a bridge without datapath_type=netdev fails while vsctl exits 0.
        self.vsctl(&[
            "--",
            "--may-exist",
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
        ])
        .map_err(|e| self.with_log(e, "ovs-vswitchd.log"))?;
        self.check_bridge("br-int")?;
        Ok(())
    }

    /// (Re)starts the chassis's OVS ovsdb-server on its database file and socket.
    pub fn start_ovsdb(&self) -> Result<()> {
        let log = self.dir.join("ovsdb-server.log");
        proc::start_daemon(
            self.netns_cmd("ovsdb-server")
                .args(["--detach", "--no-chdir"])
                .arg(format!("--pidfile={}", self.path("ovsdb-server.pid")))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!("--unixctl={}", self.path("ovsdb-server.ctl")))
                .arg(format!("--remote=punix:{}", self.path("db.sock")))
                .arg(self.dir.join("conf.db")),
            &self.dir,
            "ovsdb-server",
            &log,
        )
    }

    /// Stops the chassis's OVS ovsdb-server (database kept), e.g. to test start-up while
    /// the local OVS is not up yet; vswitchd and ovn-controller reconnect after
    /// [`Chassis::start_ovsdb`].
    pub fn stop_ovsdb(&self) {
        proc::kill_pidfile(&self.dir.join("ovsdb-server.pid"), &self.dir);
        let _ = std::fs::remove_file(self.dir.join("db.sock"));
    }

    /// Fails (with the vswitchd log) if a bridge's datapath did not come up.
    pub(crate) fn check_bridge(&self, br: &str) -> Result<()> {
        let err = self.vsctl(&["get", "interface", br, "error"])?;
        let err = err.trim();
        if !err.is_empty() && err != "[]" {
            return Err(self.with_log(anyhow!("bridge {br}: {err}"), "ovs-vswitchd.log"));
        }
        Ok(())
    }

    fn with_log(&self, e: anyhow::Error, log: &str) -> anyhow::Error {
        anyhow!(
            "{e:#}\n{log} tail:\n{}",
            proc::log_tail(&self.dir.join(log), 20)
        )
    }

    pub(crate) fn start_controller(&self, opts: &ChassisOpts) -> Result<()> {
        let encap_ip = opts.encap_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let mut args = vec![
            "set".to_string(),
            "open_vswitch".into(),
            ".".into(),
            format!("external_ids:system-id={}", self.name),
            format!("external_ids:hostname={}", self.name),
            format!("external_ids:ovn-remote=unix:{}", self.sb_sock.display()),
            format!("external_ids:ovn-encap-type={}", opts.encap_type),
            format!("external_ids:ovn-encap-ip={encap_ip}"),
            "external_ids:ovn-bridge=br-int".into(),
        ];
        for (k, v) in &opts.external_ids {
            args.push(format!("external_ids:{k}=\"{v}\""));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args)?;
        let log = self.dir.join("ovn-controller.log");
        // G2: no --unixctl in 23.03; its ctl socket is $OVN_RUNDIR/ovn-controller.<pid>.ctl.
        proc::start_daemon(
            self.netns_cmd("ovn-controller")
                .args(["--detach", "--no-chdir"])
                .arg(format!("--pidfile={}", self.path("ovn-controller.pid")))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!("unix:{}", self.path("db.sock"))),
            &self.dir,
            "ovn-controller",
            &log,
        )?;
        let deadline = Instant::now() + opts.register_timeout;
        loop {
            let out = proc::run(
                Command::new("ovn-sbctl")
                    .arg(format!("--db=unix:{}", self.sb_sock.display()))
                    .args([
                        "--timeout=10",
                        "--bare",
                        "--columns=name",
                        "find",
                        "chassis",
                    ])
                    .arg(format!("name={}", self.name)),
                Duration::from_secs(15),
            )?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "chassis {} not registered in SB after {:?}; ovn-controller log tail:\n{}",
                    self.name,
                    opts.register_timeout,
                    proc::log_tail(&log, 20)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// `ip netns exec NS prog` with the chassis env.
    fn netns_cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, prog]);
        c.envs(self.env());
        c
    }

    fn run_checked(&self, argv: &[&str]) -> Result<String> {
        let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty argv"))?;
        proc::run(self.netns_cmd(prog).args(args), CMD_TIMEOUT)
    }

    /// The chassis name (= system-id).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The network namespace the daemons (and br-int's taps, host-side pod veths) live in.
    pub fn netns(&self) -> &str {
        &self.netns
    }
    /// OVS_RUNDIR = OVN_RUNDIR: db.sock, ctl sockets, pidfiles, logs.
    pub fn rundir(&self) -> &Path {
        &self.dir
    }
    /// `unix:/…/db.sock` of this chassis's Open_vSwitch DB.
    pub fn ovs_db(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }
    /// Absolute path of ovs-vswitchd's control socket (for `ovs-appctl -t`, G3).
    pub fn vswitchd_ctl(&self) -> PathBuf {
        self.dir.join("ovs-vswitchd.ctl")
    }
    /// PIDs of ovsdb-server, ovs-vswitchd and ovn-controller.
    pub fn pids(&self) -> Vec<i32> {
        ["ovsdb-server.pid", "ovs-vswitchd.pid", "ovn-controller.pid"]
            .iter()
            .filter_map(|f| proc::read_pid(&self.dir.join(f)))
            .collect()
    }

    /// Environment for programs acting on this chassis (ovs-vsctl/ovs-appctl/ovn-appctl
    /// without --db/-t find its sockets).
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.display().to_string();
        let mut v: Vec<(String, String)> = [
            "OVS_RUNDIR",
            "OVN_RUNDIR",
            "OVS_LOGDIR",
            "OVN_LOGDIR",
            "OVS_DBDIR",
            "OVS_SYSCONFDIR",
        ]
        .iter()
        .map(|k| (k.to_string(), d.clone()))
        .collect();
        v.push((
            "OVN_SB_DB".into(),
            format!("unix:{}", self.sb_sock.display()),
        ));
        v
    }

    /// `ovs-vsctl --db=unix:<db.sock> --timeout=10 <args>`; returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        proc::run(
            Command::new("ovs-vsctl")
                .envs(self.env())
                .arg(format!("--db={}", self.ovs_db()))
                .arg("--timeout=10")
                .args(args),
            Duration::from_secs(15),
        )
    }

    /// `ovs-appctl -t <vswitchd ctl> <args>`; returns stdout.
    pub fn appctl(&self, args: &[&str]) -> Result<String> {
        proc::run(
            Command::new("ovs-appctl")
                .envs(self.env())
                .arg("-t")
                .arg(self.vswitchd_ctl())
                .arg("--timeout=10")
                .args(args),
            Duration::from_secs(15),
        )
    }

    /// Runs argv inside the chassis netns with [`Chassis::env`] (60 s deadline).
    /// Returns the output whatever the exit status.
    pub fn run_in_netns(&self, argv: &[&str]) -> Result<Output> {
        let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty argv"))?;
        proc::run_output(self.netns_cmd(prog).args(args), Duration::from_secs(60))
    }

    /// An `ip netns exec <chassis> argv…` command with [`Chassis::env`], to configure
    /// freely; not tracked, so the caller must reap what it spawns.
    pub fn command(&self, argv: &[&str]) -> Result<Command> {
        let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty argv"))?;
        let mut c = self.netns_cmd(prog);
        c.args(args);
        Ok(c)
    }

    /// Forwards `127.0.0.1:<port_in_netns>` inside the chassis netns to `target` as seen
    /// from the caller's netns (e.g. an API server on the root netns's loopback). Port 0
    /// picks a free port ([`Forwarder::addr`]). Stopped on Drop.
    pub fn forward_tcp(
        &self,
        port_in_netns: u16,
        target: std::net::SocketAddr,
    ) -> Result<crate::Forwarder> {
        crate::Forwarder::start(&self.netns, port_in_netns, target)
    }

    /// Like [`Chassis::command`], but also in a private mount namespace in which
    /// `/etc/default/openvswitch-switch` is a copy kept in the chassis dir (G17): gateway code
    /// under test edits that file (`--delete-transient-ports`), the host's stays untouched.
    pub fn gateway_command(&self, argv: &[&str]) -> Result<Command> {
        self.host_command::<&Path, &Path>(argv, &[])
    }

    /// [`Chassis::gateway_command`] with more host files or directories replaced inside the
    /// private mount namespace: each `(source, target)` is bind-mounted over the existing
    /// `target` (e.g. a per-node `/etc/hosts` or `/etc/openvswitch`), so a process run with
    /// the guide's default paths sees this node's files and the host's stay untouched.
    pub fn host_command<S: AsRef<Path>, D: AsRef<Path>>(
        &self,
        argv: &[&str],
        binds: &[(S, D)],
    ) -> Result<Command> {
        if argv.is_empty() {
            bail!("empty argv");
        }
        let copy = self.dir.join("openvswitch-switch.default");
        if !copy.exists() {
            let text = std::fs::read(OVS_DEFAULTS).unwrap_or_default();
            std::fs::write(&copy, text).with_context(|| format!("creating {}", copy.display()))?;
        }
        for (src, dst) in binds {
            let (src, dst) = (src.as_ref(), dst.as_ref());
            if !src.exists() || !dst.exists() {
                bail!(
                    "bind mount {} over {}: both must exist",
                    src.display(),
                    dst.display()
                );
            }
        }
        // Paths travel as arguments ($0, then pairs after the count), never inside the script.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "if [ -e {OVS_DEFAULTS} ]; then mount --bind \"$0\" {OVS_DEFAULTS} || exit 1; fi; \
                 n=$1; shift; while [ \"$n\" -gt 0 ]; do mount --bind \"$1\" \"$2\" || exit 1; \
                 shift 2; n=$((n-1)); done; exec \"$@\""
            ))
            .arg(&copy)
            .arg(binds.len().to_string());
        for (src, dst) in binds {
            c.arg(src.as_ref()).arg(dst.as_ref());
        }
        c.args(["ip", "netns", "exec", &self.netns])
            .args(argv)
            .envs(self.env());
        Ok(c)
    }

    /// Spawns `cmd` (e.g. from [`Chassis::host_command`], with its output redirected) and
    /// tracks it like [`Chassis::spawn_in_netns`].
    pub fn spawn_tracked(&self, cmd: &mut Command) -> Result<Child> {
        spawn_tracked(cmd, &self.spawned)
    }

    /// [`Chassis::gateway_command`], spawned and tracked like [`Chassis::spawn_in_netns`].
    pub fn spawn_gateway(&self, argv: &[&str]) -> Result<Child> {
        spawn_tracked(&mut self.gateway_command(argv)?, &self.spawned)
    }

    /// Spawns a long-running process in the chassis netns. The caller owns the child;
    /// Drop of the chassis still kills it if it is left running.
    pub fn spawn_in_netns(&self, argv: &[&str]) -> Result<Child> {
        let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty argv"))?;
        spawn_tracked(self.netns_cmd(prog).args(args), &self.spawned)
    }
}

/// Spawns with null stdin and remembers the PID for cleanup on Drop.
pub(crate) fn spawn_tracked(cmd: &mut Command, list: &Mutex<Vec<Spawned>>) -> Result<Child> {
    let line = proc::cmdline(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning `{line}`"))?;
    if let Ok(mut l) = list.lock() {
        l.push(Spawned::new(child.id()));
    }
    Ok(child)
}

pub(crate) fn kill_tracked(list: &Mutex<Vec<Spawned>>) {
    let v = match list.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for s in v {
        s.kill();
    }
}

impl Drop for Chassis {
    fn drop(&mut self) {
        kill_tracked(&self.spawned);
        // SIGTERM (not `exit`) so ovn-controller never blocks on a dead SB.
        crate::stop_dir_daemons(&self.dir);
        // Drop our SB row so a chassis restarted under the same name starts clean.
        if self.sb_sock.exists() {
            let _ = proc::run(
                Command::new("ovn-sbctl")
                    .arg(format!("--db=unix:{}", self.sb_sock.display()))
                    .args(["--timeout=5", "--if-exists", "chassis-del", &self.name]),
                Duration::from_secs(8),
            );
        }
        crate::netns_del(&self.netns);
        crate::remove_private_dir(&self.dir);
    }
}

/// Two chassis joined by a veth underlay (two-node.sh recipe): in each, br-phy (netdev)
/// holds the underlay port and the encap IP 172.30.0.{1,2}/24 on its internal port (G7);
/// geneve runs between them. The addresses exist only inside the chassis namespaces.
pub fn two_chassis(central: &Central, a: &str, b: &str) -> Result<(Chassis, Chassis)> {
    let ca = Chassis::start_ovs(central, a)?;
    let cb = Chassis::start_ovs(central, b)?;
    // Interface names are per-netns, so fixed names can't clash between test beds.
    proc::run(
        Command::new("ip").args([
            "link", "add", "ul0", "netns", &ca.netns, "type", "veth", "peer", "name", "ul0",
            "netns", &cb.netns,
        ]),
        CMD_TIMEOUT,
    )?;
    let mut ips = Vec::new();
    for (n, ch) in [(1u8, &ca), (2u8, &cb)] {
        let ip = Ipv4Addr::new(172, 30, 0, n);
        ch.run_checked(&["ip", "link", "set", "ul0", "up"])?;
        ch.vsctl(&[
            "--",
            "--may-exist",
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            &format!("other-config:hwaddr=02:00:00:00:00:0{n}"),
            "--",
            "--may-exist",
            "add-port",
            "br-phy",
            "ul0",
        ])?;
        ch.check_bridge("br-phy")?;
        // The br-phy tap appears asynchronously after the vsctl transaction.
        wait_link(ch, "br-phy")?;
        ch.run_checked(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "br-phy"])?;
        ch.run_checked(&["ip", "link", "set", "br-phy", "up"])?;
        ips.push(ip);
    }
    for (ch, ip) in [(&ca, ips[0]), (&cb, ips[1])] {
        ch.start_controller(&ChassisOpts {
            encap_ip: Some(ip),
            ..ChassisOpts::default()
        })?;
    }
    Ok((ca, cb))
}

fn wait_link(ch: &Chassis, dev: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ch.run_in_netns(&["ip", "link", "show", dev])?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{dev} did not appear in netns {}; ovs-vswitchd log tail:\n{}",
                ch.netns,
                proc::log_tail(&ch.dir.join("ovs-vswitchd.log"), 20)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}
