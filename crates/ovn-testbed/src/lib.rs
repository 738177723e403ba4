//! A real OVN/OVS test bed for integration tests.
//!
//! Nothing is mocked: [`Central`] runs the NB and SB `ovsdb-server`s and `ovn-northd`;
//! each [`Chassis`] runs its own `ovsdb-server`, `ovs-vswitchd` (userspace `netdev`
//! datapath) and `ovn-controller` inside a private network namespace; [`TestPod`]s are
//! network namespaces wired to a chassis's `br-int` with a veth pair; an [`Outside`] namespace
//! stands for the network beyond the chassis's gateway NICs. [`Pki`] makes certificates with
//! `ovs-pki` for databases served over SSL.
//!
//! Everything lives under a private directory (`$TMPDIR/ovn-testbed-<pid>-<n>`, or under
//! `$OVN_TESTBED_DIR`) and in namespaces named `otb<pid>x<n>-…`, so tests in one or several
//! processes run in parallel. Drop stops daemons by PID; leftovers of crashed test
//! processes are swept on the next start. `OVN_TESTBED_KEEP=1` keeps the directories
//! (logs, DBs) for debugging; daemons and namespaces are still removed.
//!
//! The recipes and gotchas (G1–G17) come from `shared/notes/ovn-sandbox/README.md`.

mod central;
mod chassis;
mod forward;
mod outside;
mod pki;
mod pod;
mod proc;

pub use central::{Central, Member, RAFT_MEMBERS};
pub use chassis::{Chassis, ChassisOpts, two_chassis};
pub use forward::Forwarder;
pub use outside::Outside;
pub use pki::Pki;
pub use pod::TestPod;
pub use proc::pid_alive;

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEEP_LOCK: Mutex<()> = Mutex::new(());

const DIR_PREFIX: &str = "ovn-testbed-";
const NETNS_PREFIX: &str = "otb";
const NETNS_DIR: &str = "/run/netns";
/// Marker file naming the netns a private dir owns (used by the sweeper).
const NETNS_MARKER: &str = "netns";
const KEEP_MARKER: &str = ".keep";

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn my_pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// A TCP address on loopback that no other test is likely to use: a loopback address
/// `127.A.B.C` unique to this process and call (the whole 127/8 is loopback on Linux), with a
/// port the kernel reported free on it. For giving ovnkube (or a test where TCP is the point)
/// a `tcp://` database address of its own; parallel tests never share one.
pub fn free_loopback_addr() -> Result<std::net::SocketAddr> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i32(my_pid());
    h.write_u64(next_id());
    let r = h.finish().to_le_bytes();
    // Avoid 127.0.0.x (commonly used by hand) and .0/.255 host bytes.
    let ip = std::net::Ipv4Addr::new(127, 1 + r[0] % 254, r[1], 1 + r[2] % 254);
    let l = std::net::TcpListener::bind((ip, 0))
        .with_context(|| format!("finding a free port on {ip}"))?;
    Ok(l.local_addr()?)
}

/// A network namespace name unique to this process and call: `otb<pid>x<n>-<prefix>`.
pub fn netns_name(prefix: &str) -> String {
    format!("{NETNS_PREFIX}{}x{}-{prefix}", my_pid(), next_id())
}

fn base_dir() -> PathBuf {
    std::env::var_os("OVN_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn keep_dirs() -> bool {
    std::env::var("OVN_TESTBED_KEEP").is_ok_and(|v| v == "1")
}

/// Creates a fresh private directory `<base>/ovn-testbed-<pid>-<n>`.
fn new_private_dir() -> Result<PathBuf> {
    let base = base_dir();
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let pid = my_pid();
    loop {
        let dir = base.join(format!("{DIR_PREFIX}{pid}-{}", next_id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                // Unix socket paths are limited to 108 bytes; canonicalize so they're absolute (G3).
                return fs::canonicalize(&dir)
                    .with_context(|| format!("canonicalizing {}", dir.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

/// Removes a private dir, or marks it kept when `OVN_TESTBED_KEEP=1`.
fn remove_private_dir(dir: &Path) {
    if keep_dirs() {
        let _ = fs::write(dir.join(KEEP_MARKER), b"");
        eprintln!("ovn-testbed: keeping {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(dir);
    }
}

fn ip(args: &[&str]) -> Result<String> {
    proc::run(Command::new("ip").args(args), proc::CMD_TIMEOUT)
}

fn netns_add(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes leftover tap devices first: a persistent netdev-datapath tap would otherwise
/// move to the ROOT netns when its namespace goes away (G9).
fn netns_del(ns: &str) {
    if !Path::new(NETNS_DIR).join(ns).exists() {
        return;
    }
    if let Ok(out) = ip(&["-n", ns, "tuntap", "show"]) {
        for line in out.lines() {
            if let Some((dev, _)) = line.split_once(':') {
                let _ = ip(&["-n", ns, "link", "del", dev.trim()]);
            }
        }
    }
    // A concurrent sweeper may have deleted it meanwhile; only report real failures.
    if let Err(e) = ip(&["netns", "del", ns])
        && Path::new(NETNS_DIR).join(ns).exists()
    {
        eprintln!("ovn-testbed: {e:#}");
    }
}

/// Stops everything a private dir's pidfiles name (only PIDs whose cmdline contains the dir).
fn stop_dir_daemons(dir: &Path) {
    // ovn-controller first so it doesn't react to vswitchd going away.
    proc::kill_pidfile(&dir.join("ovn-controller.pid"), dir);
    // vswitchd with `exit --cleanup` so its persistent taps are removed (G9).
    let vs_pid = dir.join("ovs-vswitchd.pid");
    let vs_ctl = dir.join("ovs-vswitchd.ctl");
    if let Some(pid) = proc::read_pid(&vs_pid).filter(|p| proc::owns(*p, dir))
        && vs_ctl.exists()
    {
        let _ = proc::run(
            Command::new("ovs-appctl").arg("-t").arg(&vs_ctl).args([
                "--timeout=10",
                "exit",
                "--cleanup",
            ]),
            Duration::from_secs(12),
        );
        proc::wait_gone(pid, Duration::from_secs(5));
    }
    let ordered = [
        "ovs-vswitchd.pid",
        "ovsdb-server.pid",
        "ovn-northd.pid",
        "ovnsb_db.pid",
        "ovnnb_db.pid",
    ];
    for f in ordered {
        proc::kill_pidfile(&dir.join(f), dir);
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                proc::kill_pidfile(&e.path(), dir);
            }
        }
    }
}

fn pid_in_name(rest: &str, sep: char) -> Option<i32> {
    rest.split(sep).next()?.parse().ok()
}

/// Cleans up after test processes that died without running Drop (SIGKILL, abort,
/// harness timeout): their daemons, namespaces and private dirs.
fn sweep_dead() {
    let Ok(_g) = SWEEP_LOCK.lock() else { return };
    let me = my_pid();
    let dead = |pid: i32| pid != me && !proc::pid_alive(pid);
    if let Ok(rd) = fs::read_dir(base_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(DIR_PREFIX)
                .and_then(|r| pid_in_name(r, '-'))
            else {
                continue;
            };
            if !dead(pid) || !e.path().is_dir() {
                continue;
            }
            let dir = e.path();
            stop_dir_daemons(&dir);
            if let Ok(ns) = fs::read_to_string(dir.join(NETNS_MARKER)) {
                netns_del(ns.trim());
            }
            if !dir.join(KEEP_MARKER).exists() {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
    // Namespaces whose dir is already gone (e.g. pods).
    if let Ok(rd) = fs::read_dir(NETNS_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix(NETNS_PREFIX)
                .and_then(|r| pid_in_name(r, 'x'))
                && dead(pid)
            {
                netns_del(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_are_unique_and_parseable() {
        let a = netns_name("p");
        let b = netns_name("p");
        assert_ne!(a, b);
        let pid = pid_in_name(a.strip_prefix(NETNS_PREFIX).unwrap(), 'x').unwrap();
        assert_eq!(pid, my_pid());
    }
}
