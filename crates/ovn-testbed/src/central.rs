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
    /// `Some` for [`Central::start_raft`]: the addresses of each database's members.
    raft: Option<Raft>,
}

/// The number of members of each clustered database.
pub const RAFT_MEMBERS: usize = 3;

/// One member of a clustered database: where its raft peers and its clients reach it.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub raft: SocketAddr,
    pub client: SocketAddr,
}

#[derive(Debug)]
struct Raft {
    nb: Vec<Member>,
    sb: Vec<Member>,
}

impl Raft {
    fn members(&self, db: Db) -> &[Member] {
        match db {
            Db::Nb => &self.nb,
            Db::Sb => &self.sb,
        }
    }
}

impl Central {
    /// Starts NB, SB and northd; ready once `ovn-nbctl --wait=sb sync` succeeds.
    pub fn start() -> Result<Central> {
        crate::sweep_dead();
        let dir = crate::new_private_dir()?;
        // From here on Drop cleans up whatever did start.
        let mut c = Central { dir, raft: None };
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
        self.start_northd()
    }

    /// ovn-northd on this central's NB and SB (every member, for clusters); ready once
    /// `ovn-nbctl --wait=sb sync` succeeds.
    fn start_northd(&mut self) -> Result<()> {
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
    /// `unix:/…/ovnnb_db.sock` (works from any netns); for a cluster, every member's socket
    /// as a list (the tools find the leader).
    pub fn nb_db(&self) -> String {
        self.db_target(Db::Nb)
    }
    /// `unix:/…/ovnsb_db.sock` (works from any netns); a list for a cluster.
    pub fn sb_db(&self) -> String {
        self.db_target(Db::Sb)
    }

    fn db_target(&self, db: Db) -> String {
        match &self.raft {
            None => format!(
                "unix:{}",
                self.dir.join(format!("{}.sock", db.stem())).display()
            ),
            Some(r) => (0..r.members(db).len())
                .map(|i| format!("unix:{}", self.member_file(db, i, "sock").display()))
                .collect::<Vec<_>>()
                .join(","),
        }
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
        let mut files: Vec<PathBuf> = ["ovnnb_db.pid", "ovnsb_db.pid", "ovn-northd.pid"]
            .iter()
            .map(|f| self.dir.join(f))
            .collect();
        if let Some(r) = &self.raft {
            for db in [Db::Nb, Db::Sb] {
                files.extend((0..r.members(db).len()).map(|i| self.member_file(db, i, "pid")));
            }
        }
        files.iter().filter_map(|f| proc::read_pid(f)).collect()
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

/// Clustered databases: each of NB and SB as a 3-member raft cluster on loopback, every member
/// with its own unix socket and a TCP listener for clients (the way a clustered `ovn-central`
/// runs with `--db-nb-cluster-local-addr` and friends), and northd given the member lists.
impl Central {
    /// Starts both clusters and northd; ready once `ovn-nbctl --wait=sb sync` succeeds over
    /// the member list (so both clusters have elected a leader).
    ///
    /// A central whose clusters fail to form is started once more from scratch (a new
    /// directory, new addresses), the first failure printed: formation happens before any
    /// ovnkube runs, so it is the test bed's own start, and it was seen failing rarely on a
    /// loaded machine without a cause that could be captured.
    pub fn start_raft() -> Result<Central> {
        Central::start_raft_once().or_else(|first| {
            eprintln!(
                "ovn-testbed: the clustered central did not start; starting it again from scratch: {first:#}"
            );
            Central::start_raft_once()
        })
    }

    fn start_raft_once() -> Result<Central> {
        crate::sweep_dead();
        let dir = crate::new_private_dir()?;
        let members = || -> Result<Vec<Member>> {
            (0..RAFT_MEMBERS)
                .map(|_| {
                    Ok(Member {
                        raft: crate::free_loopback_addr()?,
                        client: crate::free_loopback_addr()?,
                    })
                })
                .collect()
        };
        let raft = Raft {
            nb: members()?,
            sb: members()?,
        };
        let mut c = Central {
            dir,
            raft: Some(raft),
        };
        c.boot_raft()
            .with_context(|| format!("starting clustered OVN central in {}", c.dir.display()))?;
        Ok(c)
    }

    fn boot_raft(&mut self) -> Result<()> {
        for (db, schema) in [(Db::Nb, NB_SCHEMA), (Db::Sb, SB_SCHEMA)] {
            let members = self.raft_members(db)?.to_vec();
            let (name, _) = db.schema();
            let first = format!("tcp:{}", members[0].raft);
            for (i, m) in members.iter().enumerate() {
                let file = self.member_file(db, i, "db");
                let mut cmd = Command::new("ovsdb-tool");
                if i == 0 {
                    cmd.arg("create-cluster").arg(&file).arg(schema).arg(&first);
                } else {
                    cmd.arg("join-cluster")
                        .arg(&file)
                        .arg(name)
                        .arg(format!("tcp:{}", m.raft))
                        .arg(&first);
                }
                proc::run(&mut cmd, CMD_TIMEOUT)?;
                self.start_member(db, i)?;
            }
        }
        // northd's first sync has a 10 s budget: give it formed clusters.
        for db in [Db::Nb, Db::Sb] {
            self.wait_formed(db, Duration::from_secs(60))?;
        }
        self.start_northd()
    }

    fn raft_members(&self, db: Db) -> Result<&[Member]> {
        match &self.raft {
            Some(r) => Ok(r.members(db)),
            None => bail!("this central's databases are not clustered (use Central::start_raft)"),
        }
    }

    /// `<dir>/ovnnb_db-<i>.<ext>`: one member's database, socket, pidfile, control socket.
    fn member_file(&self, db: Db, i: usize, ext: &str) -> PathBuf {
        self.dir.join(format!("{}-{i}.{ext}", db.stem()))
    }

    /// Starts member `i` of `db` on its database file (created or joined already).
    fn start_member(&self, db: Db, i: usize) -> Result<()> {
        let m = self.raft_members(db)?[i];
        let (schema, global) = db.schema();
        let stem = format!("{}-{i}", db.stem());
        let log = self.dir.join(format!("ovsdb-server-{stem}.log"));
        proc::start_daemon(
            self.daemon_cmd("ovsdb-server")
                .arg(format!(
                    "--pidfile={}",
                    self.member_file(db, i, "pid").display()
                ))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!(
                    "--unixctl={}",
                    self.member_file(db, i, "ctl").display()
                ))
                .arg(format!(
                    "--remote=punix:{}",
                    self.member_file(db, i, "sock").display()
                ))
                .arg(format!(
                    "--remote=ptcp:{}:{}",
                    m.client.port(),
                    m.client.ip()
                ))
                .arg(format!("--remote=db:{schema},{global},connections"))
                .arg(self.member_file(db, i, "db")),
            &self.dir,
            &format!("ovsdb-server-{stem}"),
            &log,
        )
    }

    /// The NB members' client addresses as an operator writes them for ovnkube:
    /// `tcp://A,tcp://B,tcp://C` (in member order).
    pub fn nb_address_list(&self) -> Result<String> {
        self.address_list(Db::Nb)
    }

    /// The SB members' client addresses, `tcp://A,tcp://B,tcp://C`.
    pub fn sb_address_list(&self) -> Result<String> {
        self.address_list(Db::Sb)
    }

    fn address_list(&self, db: Db) -> Result<String> {
        Ok(self
            .raft_members(db)?
            .iter()
            .map(|m| format!("tcp://{}", m.client))
            .collect::<Vec<_>>()
            .join(","))
    }

    /// The NB members (raft and client addresses), in member order.
    pub fn nb_members(&self) -> Result<Vec<Member>> {
        Ok(self.raft_members(Db::Nb)?.to_vec())
    }

    /// The index of the NB member that currently is the raft leader (`cluster/status` of
    /// each running member); waits up to `timeout` for an election to finish.
    pub fn nb_leader(&self, timeout: Duration) -> Result<usize> {
        self.leader(Db::Nb, timeout)
    }

    fn leader(&self, db: Db, timeout: Duration) -> Result<usize> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            for i in 0..self.raft_members(db)?.len() {
                if self.cluster_status(db, i, "Role").as_deref() == Some("leader") {
                    return Ok(i);
                }
            }
            if std::time::Instant::now() >= deadline {
                bail!("no {} raft leader within {timeout:?}", db.schema().0);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every member of `db` has joined its cluster and one of them leads.
    fn wait_formed(&self, db: Db, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let n = self.raft_members(db)?.len();
        while (0..n)
            .any(|i| self.cluster_status(db, i, "Status").as_deref() != Some("cluster member"))
        {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the {} members did not all join within {timeout:?}",
                    db.schema().0
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.leader(db, timeout).map(|_| ())
    }

    /// A `field:` line of `ovs-appctl cluster/status` of one member (e.g. `Role`, `Status`);
    /// `None` when it does not answer.
    fn cluster_status(&self, db: Db, i: usize, field: &str) -> Option<String> {
        let ctl = self.member_file(db, i, "ctl");
        if !ctl.exists() {
            return None;
        }
        let out = proc::run(
            Command::new("ovs-appctl")
                .arg("-t")
                .arg(&ctl)
                .arg("--timeout=5")
                .arg("cluster/status")
                .arg(db.schema().0),
            Duration::from_secs(7),
        )
        .ok()?;
        let prefix = format!("{field}:");
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .map(|r| r.trim().to_string())
    }

    /// The PID of NB member `i`, when it runs.
    pub fn nb_member_pid(&self, i: usize) -> Option<i32> {
        proc::read_pid(&self.member_file(Db::Nb, i, "pid")).filter(|p| proc::owns(*p, &self.dir))
    }

    /// SIGKILL of NB member `i` (a crash: it leaves its pidfile, socket and lock behind, as
    /// a crashed server does); returns the PID killed.
    pub fn kill9_nb_member(&self, i: usize) -> Result<i32> {
        let pid = self
            .nb_member_pid(i)
            .with_context(|| format!("NB member {i} is not running"))?;
        proc::kill9(pid);
        Ok(pid)
    }

    /// Kills the current NB leader with SIGKILL; returns its index.
    pub fn kill9_nb_leader(&self) -> Result<usize> {
        let i = self.nb_leader(Duration::from_secs(10))?;
        self.kill9_nb_member(i)?;
        Ok(i)
    }

    /// Starts NB member `i` again on its database file; it rejoins the cluster as a follower
    /// and catches up from the leader.
    pub fn restart_nb_member(&self, i: usize) -> Result<()> {
        if self.nb_member_pid(i).is_some() {
            return Ok(());
        }
        // Clear what the crash left behind, so the new server starts as on a clean boot.
        let _ = std::fs::remove_file(self.member_file(Db::Nb, i, "sock"));
        let _ = std::fs::remove_file(self.member_file(Db::Nb, i, "pid"));
        self.start_member(Db::Nb, i)
            .with_context(|| format!("restarting NB member {i}"))
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        crate::stop_dir_daemons(&self.dir);
        crate::remove_private_dir(&self.dir);
    }
}
