//! Who holds the leader-election Lease: a `holderIdentity` that names the master, the host, the
//! boot and the process, so that a master restarted on the same host can tell that the Lease's
//! holder is its own predecessor and that the predecessor is gone.
//!
//! Without that, a master killed with `kill -9` and restarted at once (systemd's
//! `Restart=always`, an operator's `nohup` loop) would wait a whole lease duration (60 s by
//! default) as the standby of a dead process. A random identity per process avoids mistaking a
//! live predecessor for ourselves but costs that wait; a bare node name (as client-go users often
//! do) skips the wait but lets a second live process on the same node write alongside the first.
//! Naming the process keeps both properties: the wait is skipped only when the holder is this
//! master on this host and its process no longer runs (or the host has rebooted since).
//!
//! The format is `<master>-<boot>.<pid>@<host>`: it starts with the master's name (what
//! `kubectl get lease` readers look for), and every part after it is free of the separators
//! that precede it, so parsing from the right is unambiguous.

use std::fmt;

/// This process as a Lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The `-init-master` node name, else the host name.
    pub master: String,
    /// The first 8 hex digits of the kernel's boot id: a reboot ends every process.
    pub boot: String,
    pub pid: u32,
    pub host: String,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}.{}@{}",
            self.master, self.boot, self.pid, self.host
        )
    }
}

impl Instance {
    /// Parse a `holderIdentity` written by [`Instance`]'s `Display`; `None` for anything else
    /// (another program's identity, or an older ovnkube's `<master>-<random>`).
    pub fn parse(s: &str) -> Option<Instance> {
        let (rest, host) = s.rsplit_once('@')?;
        let (master, proc_part) = rest.rsplit_once('-')?;
        let (boot, pid) = proc_part.split_once('.')?;
        let hex = |b: &str| b.len() == 8 && b.bytes().all(|c| c.is_ascii_hexdigit());
        if master.is_empty() || host.is_empty() || !hex(boot) {
            return None;
        }
        Some(Instance {
            master: master.to_string(),
            boot: boot.to_string(),
            pid: pid.parse().ok()?,
            host: host.to_string(),
        })
    }

    /// Is `holder` an earlier process of this master on this host that has ended? `running`
    /// answers whether a process with that PID is an ovnkube that still runs (only asked when
    /// the boot is the same). Anything we cannot vouch for is assumed alive: waiting out a
    /// Lease is slow, two writers are wrong.
    pub fn predecessor_gone(&self, holder: &str, running: impl Fn(u32) -> bool) -> bool {
        let Some(h) = Instance::parse(holder) else {
            return false;
        };
        if h.master != self.master || h.host != self.host {
            return false;
        }
        if h.boot != self.boot {
            // The host rebooted since that process wrote the Lease.
            return true;
        }
        // Our own PID on the same boot: the holder is not running any more (this PID was free
        // to be given to us).
        h.pid == self.pid || !running(h.pid)
    }
}

/// This process, read from the kernel. `master` is the `-init-master` name or the host name.
pub fn this_process(master: Option<&str>) -> Instance {
    let host = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into());
    let boot = read_trimmed("/proc/sys/kernel/random/boot_id")
        .map(|b| b.chars().filter(|c| *c != '-').take(8).collect::<String>())
        .filter(|b| b.len() == 8)
        // Without a boot id, a random one: a predecessor is then never recognised by boot
        // alone, only by its PID no longer running.
        .unwrap_or_else(|| format!("{:08x}", crate::util::retry::random_u64() as u32));
    Instance {
        master: master.map(str::to_string).unwrap_or_else(|| host.clone()),
        boot,
        pid: std::process::id(),
        host,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether `pid` is an ovnkube process that still runs: it exists and runs the same program as
/// this process (a PID reused by an unrelated program does not count).
pub fn ovnkube_running(pid: u32) -> bool {
    let comm = |p: &str| read_trimmed(&format!("/proc/{p}/comm"));
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        // The PID is gone (no /proc entry).
        (None, _) => false,
        // We cannot read our own name: do not claim the predecessor is gone.
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Instance {
        Instance {
            master: "ovn-master-1".into(),
            boot: "3fa2b1c0".into(),
            pid: 4242,
            host: "central-a".into(),
        }
    }

    #[test]
    fn display_and_parse_round_trip() {
        let s = me().to_string();
        assert_eq!(s, "ovn-master-1-3fa2b1c0.4242@central-a");
        assert_eq!(Instance::parse(&s), Some(me()));
        for bad in [
            "",
            "m1-3fa2b1c0",
            "m1-3fa2b1c0.12",
            "-3fa2b1c0.12@h",
            "m1-3fa2b1c0.12@",
            "m1-3fa2b1cz.12@h",
            "m1-3fa2b1c.12@h",
            "m1-3fa2b1c0.x@h",
            "m1-3fa2b1c0.-1@h",
        ] {
            assert_eq!(Instance::parse(bad), None, "{bad:?}");
        }
    }

    type Running = &'static dyn Fn(u32) -> bool;

    #[test]
    fn predecessor_gone_table() {
        let dead: Running = &|_| false;
        let alive: Running = &|_| true;
        let other = |f: fn(&mut Instance)| {
            let mut i = me();
            f(&mut i);
            i.to_string()
        };
        // (holder, running, want)
        let cases: Vec<(String, Running, bool)> = vec![
            // The same master on the same host and boot, its process ended: gone.
            (other(|i| i.pid = 17), dead, true),
            // ... still running: not gone (a second live process must stay standby).
            (other(|i| i.pid = 17), alive, false),
            // Our own PID: the holder cannot be running.
            (me().to_string(), alive, true),
            // The host rebooted since: gone, whatever runs under that PID now.
            (other(|i| i.boot = "00000001".into()), alive, true),
            // Another master, another host: never judged here, it expires.
            (other(|i| i.master = "ovn-master-2".into()), dead, false),
            (other(|i| i.host = "central-b".into()), dead, false),
            // Not our format (another program, an older ovnkube): assume alive.
            ("ovn-master-1-1a2b3c4d".to_string(), dead, false),
            ("ovn-master-1".to_string(), dead, false),
        ];
        for (holder, running, want) in cases {
            assert_eq!(
                me().predecessor_gone(&holder, running),
                want,
                "holder {holder}"
            );
        }
    }

    #[test]
    fn this_process_is_parseable_and_running() {
        let i = this_process(Some("m1"));
        assert_eq!(i.master, "m1");
        assert_eq!(Instance::parse(&i.to_string()), Some(i.clone()));
        assert!(ovnkube_running(std::process::id()));
        // PID 0 has no /proc entry.
        assert!(!ovnkube_running(0));
    }
}
