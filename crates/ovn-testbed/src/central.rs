//! OVN central: NB + SB ovsdb-server and ovn-northd in a private directory, started the way
//! the Debian `ovn-central` package starts them (`ovn-ctl start_northd`): each database on its
//! unix socket plus the `db:` remotes that take listeners and certificates from the database
//! itself. Nothing listens on TCP until someone writes a `Connection` row (`set-connection`),
//! as on a stock install: that is ovnkube's job (or a test's, where TCP is the point).

use crate::proc::{self, CMD_TIMEOUT};
use anyhow::{Context, Result, anyhow, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    /// The schema and its global table, as in `--remote=db:OVN_Northbound,NB_Global,connections`.
    fn schema(self) -> (&'static str, &'static str) {
        match self {
            Db::Nb => ("OVN_Northbound", "NB_Global"),
            Db::Sb => ("OVN_Southbound", "SB_Global"),
        }
    }
}

/// NB + SB `ovsdb-server` and `ovn-northd`, listening on unix sockets in a private dir (which
/// is also their `OVN_RUNDIR`: `ovn-nbctl` run with `OVN_RUNDIR=<dir>` finds them by default).
/// Dropping it stops the daemons and removes the dir.
#[derive(Debug)]
pub struct Central {
    dir: PathBuf,
}

impl Central {
    /// Starts NB, SB and northd; ready once `ovn-nbctl --wait=sb sync` succeeds.
    pub fn start() -> Result<Central> {
        crate::sweep_dead();
        let dir = crate::new_private_dir()?;
        // From here on Drop cleans up whatever did start.
        let mut c = Central { dir };
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
        self.start_db(Db::Nb)?;
        self.start_db(Db::Sb)?;
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

    /// Starts one ovsdb-server with `ovn-ctl`'s arguments: the unix socket, listeners and
    /// certificates from the database (`db:` remotes), no TCP listener of its own.
    fn start_db(&self, db: Db) -> Result<()> {
        let stem = db.stem();
        let (schema, global) = db.schema();
        let log = self.dir.join(db.log());
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
                .arg(format!("--remote=db:{schema},{global},connections"))
                .arg(format!("--private-key=db:{schema},SSL,private_key"))
                .arg(format!("--certificate=db:{schema},SSL,certificate"))
                .arg(format!("--ca-cert=db:{schema},SSL,ca_cert"))
                .arg(format!("--ssl-protocols=db:{schema},SSL,ssl_protocols"))
                .arg(format!("--ssl-ciphers=db:{schema},SSL,ssl_ciphers"))
                .arg(self.dir.join(format!("{stem}.db"))),
            &self.dir,
            &format!("ovsdb-server-{stem}"),
            &log,
        )?;
        Ok(())
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
    /// The `OVN_RUNDIR` under which the installed tools (and ovnkube's server-side setup)
    /// find this central's databases by default: `<dir>/ovnnb_db.sock`, `<dir>/ovnsb_db.sock`.
    pub fn ovn_rundir(&self) -> &Path {
        &self.dir
    }

    /// The passive remotes the NB server currently listens on (`get-connection`), e.g.
    /// `["ptcp:6641:127.1.2.3"]`; empty on a fresh central.
    pub fn nb_connections(&self) -> Result<Vec<String>> {
        Ok(self
            .nbctl(&["get-connection"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The passive remotes the SB server currently listens on (without the role that
    /// `ovn-sbctl get-connection` prints first).
    pub fn sb_connections(&self) -> Result<Vec<String>> {
        Ok(self
            .sbctl(&["get-connection"])?
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(str::to_string)
            .collect())
    }

    /// Makes the NB and SB listen on `pssl:` on fresh loopback addresses with `pki`'s server
    /// certificate, trusting `pki`'s CA for client certificates, the way an operator does on a
    /// Debian central (`ovn-nbctl set-ssl … -- set-connection pssl:PORT:IP`, likewise
    /// `ovn-sbctl`); returns the NB and SB addresses once both accept connections. For tests
    /// of the client side only: ovnkube's master sets these listeners up itself from its
    /// `-nb-server-*`/`-sb-server-*` flags.
    pub fn listen_ssl(&self, pki: &crate::Pki) -> Result<(SocketAddr, SocketAddr)> {
        let (nb, sb) = (crate::free_loopback_addr()?, crate::free_loopback_addr()?);
        let files =
            [pki.server_key(), pki.server_cert(), pki.ca_cert()].map(|p| p.display().to_string());
        for (addr, ctl) in [(nb, Db::Nb), (sb, Db::Sb)] {
            let remote = format!("pssl:{}:{}", addr.port(), addr.ip());
            let mut args = vec!["set-ssl"];
            args.extend(files.iter().map(String::as_str));
            args.extend(["--", "set-connection", remote.as_str()]);
            match ctl {
                Db::Nb => self.nbctl(&args)?,
                Db::Sb => self.sbctl(&args)?,
            };
        }
        for addr in [nb, sb] {
            wait_listening(addr)?;
        }
        Ok((nb, sb))
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
        let _ = std::fs::remove_file(self.nb_sock());
    }

    /// Restarts the NB ovsdb-server on the same unix socket; it reopens whatever listeners
    /// its `Connection` table names.
    pub fn start_nb(&mut self) -> Result<()> {
        if proc::read_pid(&self.dir.join("ovnnb_db.pid")).is_some_and(|p| proc::owns(p, &self.dir))
        {
            return Ok(());
        }
        self.start_db(Db::Nb).context("restarting NB ovsdb-server")
    }

    /// Replaces the NB database with an empty one, as an operator's restore-from-empty does:
    /// stop the NB server, put a fresh `ovsdb-tool create` of the NB schema in place of its
    /// database file, start it again. Everything in the NB is gone, listeners included
    /// (they live in its `Connection` table); ovn-northd reconnects and writes a new
    /// `NB_Global` row, so clients that remember the old row can tell it is a new database.
    pub fn wipe_nb(&mut self) -> Result<()> {
        self.stop_nb();
        let file = self.dir.join(format!("{}.db", Db::Nb.stem()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
        proc::run(
            Command::new("ovsdb-tool")
                .arg("create")
                .arg(&file)
                .arg(NB_SCHEMA),
            CMD_TIMEOUT,
        )
        .context("creating an empty NB database")?;
        self.start_nb()
    }
}

/// Waits until something accepts TCP connections on `addr` (a listener just configured).
fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("nothing listens on {addr} 10 s after set-connection");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for Central {
    fn drop(&mut self) {
        crate::stop_dir_daemons(&self.dir);
        crate::remove_private_dir(&self.dir);
    }
}
