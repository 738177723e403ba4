//! OVN central: NB + SB ovsdb-server and ovn-northd in a private directory.

use crate::proc::{self, CMD_TIMEOUT};
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";

/// Which of the two central databases.
#[derive(Clone, Copy)]
enum Db {
    Nb,
    Sb,
}

impl Db {
    fn stem(self) -> &'static str {
        match self {
            Db::Nb => "ovnnb_db",
            Db::Sb => "ovnsb_db",
        }
    }
    fn log(self) -> &'static str {
        match self {
            Db::Nb => "ovsdb-server-nb.log",
            Db::Sb => "ovsdb-server-sb.log",
        }
    }
}

/// NB + SB `ovsdb-server` and `ovn-northd`, listening on unix sockets in a private dir and
/// on `127.0.0.1:<free port>`. Dropping it stops the daemons and removes the dir.
#[derive(Debug)]
pub struct Central {
    dir: PathBuf,
    nb_port: u16,
    sb_port: u16,
}

impl Central {
    /// Starts NB, SB and northd; ready once `ovn-nbctl --wait=sb sync` succeeds.
    pub fn start() -> Result<Central> {
        crate::sweep_dead();
        let dir = crate::new_private_dir()?;
        // From here on Drop cleans up whatever did start.
        let mut c = Central {
            dir,
            nb_port: 0,
            sb_port: 0,
        };
        c.boot()
            .with_context(|| format!("starting OVN central in {}", c.dir.display()))?;
        Ok(c)
    }

    fn boot(&mut self) -> Result<()> {
        for (db, schema) in [(Db::Nb, NB_SCHEMA), (Db::Sb, SB_SCHEMA)] {
            let file = self.dir.join(format!("{}.db", db.stem()));
            proc::run(
                Command::new("ovsdb-tool")
                    .arg("create")
                    .arg(&file)
                    .arg(schema),
                CMD_TIMEOUT,
            )?;
        }
        self.nb_port = self.start_db(Db::Nb, 0)?;
        self.sb_port = self.start_db(Db::Sb, 0)?;
        let log = self.dir.join("ovn-northd.log");
        proc::start_daemon(
            self.daemon_cmd("ovn-northd")
                .arg(format!(
                    "--pidfile={}",
                    self.dir.join("ovn-northd.pid").display()
                ))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!(
                    "--unixctl={}",
                    self.dir.join("ovn-northd.ctl").display()
                ))
                .arg(format!("--ovnnb-db={}", self.nb_db()))
                .arg(format!("--ovnsb-db={}", self.sb_db())),
            &self.dir,
            "ovn-northd",
            &log,
        )?;
        self.nbctl(&["--wait=sb", "sync"]).map_err(|e| {
            anyhow!(
                "{e:#}\nnorthd log tail:\n{}",
                proc::log_tail(&self.dir.join("ovn-northd.log"), 20)
            )
        })?;
        Ok(())
    }

    fn daemon_cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        // G1/G2: without these the daemons fall back to /var/run/openvswitch.
        for k in [
            "OVS_RUNDIR",
            "OVN_RUNDIR",
            "OVS_LOGDIR",
            "OVN_LOGDIR",
            "OVS_DBDIR",
        ] {
            c.env(k, &self.dir);
        }
        c.args(["--detach", "--no-chdir"]);
        c
    }

    /// Starts one ovsdb-server. `port` 0 lets the kernel pick a free port atomically; the
    /// chosen port is read back from the log ("listening on port N"), so there is no
    /// bind-close-rebind race with parallel tests.
    fn start_db(&self, db: Db, port: u16) -> Result<u16> {
        let stem = db.stem();
        let log = self.dir.join(db.log());
        let log_len = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        proc::start_daemon(
            self.daemon_cmd("ovsdb-server")
                .arg(format!(
                    "--pidfile={}",
                    self.dir.join(format!("{stem}.pid")).display()
                ))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!(
                    "--unixctl={}",
                    self.dir.join(format!("{stem}.ctl")).display()
                ))
                .arg(format!(
                    "--remote=punix:{}",
                    self.dir.join(format!("{stem}.sock")).display()
                ))
                .arg(format!("--remote=ptcp:{port}:127.0.0.1"))
                .arg(self.dir.join(format!("{stem}.db"))),
            &self.dir,
            &format!("ovsdb-server-{stem}"),
            &log,
        )?;
        // The ptcp listener is opened during start-up, before the launcher exits. Only an
        // ephemeral port is logged ("listening on port N"); a failed fixed port logs
        // "listen failed" while ovsdb-server keeps running, so check both explicitly.
        let text = fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(&text[(log_len as usize).min(text.len())..]).into_owned();
        let fail = |why: &str| {
            anyhow!(
                "ovsdb-server {stem}: {why} on 127.0.0.1:{port}; log tail:\n{}",
                proc::log_tail(&log, 20)
            )
        };
        if new.contains("listen failed") || new.contains("Address already in use") {
            return Err(fail("TCP listen failed"));
        }
        if port == 0 {
            return new
                .lines()
                .filter_map(|l| l.split("listening on port ").nth(1))
                .filter_map(|p| p.trim().parse::<u16>().ok())
                .next_back()
                .ok_or_else(|| fail("no port logged"));
        }
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_secs(2),
        )
        .map_err(|e| fail(&format!("connect: {e}")))?;
        Ok(port)
    }

    /// The private directory holding DBs, sockets, pidfiles and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn nb_sock(&self) -> PathBuf {
        self.dir.join("ovnnb_db.sock")
    }
    pub fn sb_sock(&self) -> PathBuf {
        self.dir.join("ovnsb_db.sock")
    }
    /// `unix:/…/ovnnb_db.sock` (works from any netns).
    pub fn nb_db(&self) -> String {
        format!("unix:{}", self.nb_sock().display())
    }
    /// `unix:/…/ovnsb_db.sock` (works from any netns).
    pub fn sb_db(&self) -> String {
        format!("unix:{}", self.sb_sock().display())
    }
    /// NB TCP listener on loopback (root netns only, G8).
    pub fn nb_tcp(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.nb_port))
    }
    /// SB TCP listener on loopback (root netns only, G8).
    pub fn sb_tcp(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.sb_port))
    }
    /// `tcp:127.0.0.1:PORT` for the NB.
    pub fn nb_tcp_db(&self) -> String {
        format!("tcp:{}", self.nb_tcp())
    }
    /// `tcp:127.0.0.1:PORT` for the SB.
    pub fn sb_tcp_db(&self) -> String {
        format!("tcp:{}", self.sb_tcp())
    }

    /// PIDs of the running daemons (NB, SB, northd), for tests that check cleanup.
    pub fn pids(&self) -> Vec<i32> {
        ["ovnnb_db.pid", "ovnsb_db.pid", "ovn-northd.pid"]
            .iter()
            .filter_map(|f| proc::read_pid(&self.dir.join(f)))
            .collect()
    }

    /// `ovn-nbctl --db=<unix> --timeout=10 <args>`; returns stdout.
    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        proc::run(
            Command::new("ovn-nbctl")
                .arg(format!("--db={}", self.nb_db()))
                .arg("--timeout=10")
                .args(args),
            Duration::from_secs(15),
        )
    }

    /// `ovn-sbctl --db=<unix> --timeout=10 <args>`; returns stdout.
    pub fn sbctl(&self, args: &[&str]) -> Result<String> {
        proc::run(
            Command::new("ovn-sbctl")
                .arg(format!("--db={}", self.sb_db()))
                .arg("--timeout=10")
                .args(args),
            Duration::from_secs(15),
        )
    }

    /// `ovn-trace --db=<sb unix> <extra…> <datapath> <microflow>`; returns stdout.
    /// Needs only the SB (no chassis). Use `--ct=new` in `extra` for a connection's first packet.
    /// ovn-trace reports bad datapaths and microflows on stdout with exit status 0; a real
    /// trace starts with the `# <flow>` header, so anything else is returned as an error.
    pub fn trace(&self, datapath: &str, microflow: &str, extra: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ovn-trace");
        cmd.arg(format!("--db={}", self.sb_db()))
            .args(extra)
            .arg(datapath)
            .arg(microflow);
        let line = proc::cmdline(&cmd);
        let out = proc::run(&mut cmd, Duration::from_secs(30))?;
        let first = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with('#') {
            bail!("`{line}` did not trace: {}", out.trim());
        }
        Ok(out)
    }

    /// Stops the NB ovsdb-server (DB file kept), e.g. to test "NB unavailable" handling.
    pub fn stop_nb(&mut self) {
        proc::kill_pidfile(&self.dir.join("ovnnb_db.pid"), &self.dir);
        let _ = fs::remove_file(self.nb_sock());
    }

    /// Restarts the NB ovsdb-server on the same unix socket and TCP port.
    pub fn start_nb(&mut self) -> Result<()> {
        if proc::read_pid(&self.dir.join("ovnnb_db.pid")).is_some_and(|p| proc::owns(p, &self.dir))
        {
            return Ok(());
        }
        // Same port as before so TCP clients can reconnect; retry while it is still busy.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.start_db(Db::Nb, self.nb_port) {
                Ok(_) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    // Port not free yet: stop the half-started server and retry.
                    proc::kill_pidfile(&self.dir.join("ovnnb_db.pid"), &self.dir);
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e.context("restarting NB ovsdb-server")),
            }
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        crate::stop_dir_daemons(&self.dir);
        crate::remove_private_dir(&self.dir);
    }
}
