//! Shared harness for black-box tests: a real OVN central, the in-process Kubernetes API
//! stand-in, and the real `ovnkube` binary as a child process (killed by PID on drop).

#![allow(dead_code)]

pub mod fixture;
pub mod outage_objects;
pub mod podbench;
pub mod pods;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube_sandbox::{Sandbox, SandboxConfig};
use ovn_testbed::Central;
use ovnkube::ovn::Row;
use ovnkube::ovn::ovsdb::parse_tables;

pub struct Env {
    pub central: Central,
    /// The `tcp://` NB and SB addresses the master is given (a loopback address of this test's
    /// own); the master opens these listeners itself, over the central's local sockets.
    pub nb_addr: std::net::SocketAddr,
    pub sb_addr: std::net::SocketAddr,
    pub sandbox: Sandbox,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

impl Env {
    pub async fn start(name: &str) -> Env {
        Env::start_with(name, SandboxConfig::default()).await
    }

    /// [`Env::start`] with an API stand-in configured by `cfg`.
    pub async fn start_with(name: &str, cfg: SandboxConfig) -> Env {
        let central = Central::start().expect("OVN central");
        Env::start_on(name, central, cfg).await
    }

    /// [`Env::start`] on clustered NB and SB databases ([`Central::start_raft`]); the
    /// master's addresses are then the member lists (see [`Env::master_args_raft`]).
    pub async fn start_raft(name: &str) -> Env {
        let central = Central::start_raft().expect("clustered OVN central");
        Env::start_on(name, central, SandboxConfig::default()).await
    }

    /// [`Env::master_args`] with the NB and SB given as the clustered central's member lists,
    /// `tcp://A,tcp://B,tcp://C`, as an operator writes them.
    pub fn master_args_raft(&self, cluster_subnet: &str) -> Vec<String> {
        let nb = self.central.nb_address_list().expect("a clustered central");
        let sb = self.central.sb_address_list().expect("a clustered central");
        self.master_args(cluster_subnet)
            .into_iter()
            .map(|a| {
                if a.starts_with("-nb-address=") {
                    format!("-nb-address={nb}")
                } else if a.starts_with("-sb-address=") {
                    format!("-sb-address={sb}")
                } else {
                    a
                }
            })
            .collect()
    }

    async fn start_on(name: &str, central: Central, cfg: SandboxConfig) -> Env {
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .expect("kube-sandbox");
        let dir = central.dir().join(format!("test-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig.yaml");
        sandbox.write_kubeconfig(&kubeconfig).unwrap();
        let url: http::Uri = sandbox.url().parse().unwrap();
        let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
        Env {
            nb_addr: ovn_testbed::free_loopback_addr().unwrap(),
            sb_addr: ovn_testbed::free_loopback_addr().unwrap(),
            central,
            sandbox,
            dir,
            kubeconfig,
            client,
        }
    }

    /// [`Env::master_args`] with the NB/SB given as the central's unix sockets (how a stock
    /// Debian central serves them), for tests whose point is not the TCP listeners.
    pub fn master_args_unix(&self, cluster_subnet: &str) -> Vec<String> {
        self.master_args(cluster_subnet)
            .into_iter()
            .map(|a| {
                if a.starts_with("-nb-address=") {
                    format!("-nb-address={}", self.central.nb_db())
                } else if a.starts_with("-sb-address=") {
                    format!("-sb-address={}", self.central.sb_db())
                } else {
                    a
                }
            })
            .collect()
    }

    /// The master's flags as the guide gives them, against this test bed.
    pub fn master_args(&self, cluster_subnet: &str) -> Vec<String> {
        vec![
            format!("-k8s-kubeconfig={}", self.kubeconfig.display()),
            "-net-controller".into(),
            "-init-master=master".into(),
            format!("-cluster-subnet={cluster_subnet}"),
            "-service-cluster-ip-range=172.16.1.0/24".into(),
            "-nodeport".into(),
            format!("-nb-address=tcp://{}", self.nb_addr),
            format!("-sb-address=tcp://{}", self.sb_addr),
            "-loglevel=5".into(),
            format!("-config-file={}", self.empty_config().display()),
        ]
    }

    fn empty_config(&self) -> PathBuf {
        let p = self.dir.join("ovn_k8s.conf");
        if !p.exists() {
            std::fs::write(&p, "# empty: flags only\n").unwrap();
        }
        p
    }

    /// Runs `ovnkube args -logfile=<dir>/<name>.log` with `OVN_RUNDIR` at the central's
    /// directory, as on a host running the stock central (where it is `/var/run/ovn`).
    pub fn spawn(&self, name: &str, args: &[String]) -> Daemon {
        let log = self.dir.join(format!("{name}.log"));
        let mut all = args.to_vec();
        all.push(format!("-logfile={}", log.display()));
        let child = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
            .env("OVN_RUNDIR", self.central.ovn_rundir())
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ovnkube");
        Daemon { child, log }
    }

    /// All rows of an NB table.
    pub fn nb_table(&self, table: &str) -> Vec<Row> {
        let out = self
            .central
            .nbctl(&["--format=json", "list", table])
            .unwrap();
        parse_tables(&out).unwrap().remove(0)
    }

    /// All rows of an NB table, by name.
    pub fn nb_rows(&self, table: &str) -> BTreeMap<String, Row> {
        self.nb_table(table)
            .into_iter()
            .map(|r| (r.str("name"), r))
            .collect()
    }

    /// Kubernetes Node objects with just a name, as a kubelet would register them.
    pub async fn create_nodes<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        let api: Api<Node> = Api::all(self.client.clone());
        for n in names {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(n.as_ref().to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &node).await.unwrap();
        }
    }

    /// Every row of the tables the controller writes, for before/after comparisons.
    pub fn nb_dump(&self) -> String {
        nb_dump(&self.central)
    }
}

/// A running `ovnkube`; killed (SIGKILL, by PID) on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`; panics with the log on timeout or early exit.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ovnkube exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {needle:?} in the log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id() as i32, 15);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ovnkube did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Opens an NB TCP listener on a fresh loopback address with ovnkube's own server-side
/// setup (over the central's local socket, as the master does), for tests of the client
/// layers where TCP is the point; returns the address.
pub async fn open_nb_tcp(central: &Central) -> std::net::SocketAddr {
    use ovnkube::config::{OvnAuth, OvnEndpoint, OvnScheme};
    let addr = ovn_testbed::free_loopback_addr().unwrap();
    let auth = OvnAuth {
        scheme: OvnScheme::Tcp,
        endpoints: vec![OvnEndpoint::Inet(addr)],
        privkey: None,
        cert: None,
        cacert: None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let rundir = central.ovn_rundir().display().to_string();
    ovnkube::master::configure_server(
        std::sync::Arc::new(ovnkube::exec::RealExec::default()),
        &ovnkube::master::NB_SERVER,
        &auth,
        Some(&rundir),
        &cancel,
    )
    .await
    .unwrap();
    addr
}

/// Every row of the NB tables ovnkube writes, for before/after comparisons.
pub fn nb_dump(central: &Central) -> String {
    let mut s = String::new();
    for t in [
        "Logical_Switch",
        "Logical_Switch_Port",
        "Logical_Router",
        "Logical_Router_Port",
        "Logical_Router_Static_Route",
        "NAT",
        "Load_Balancer",
        "ACL",
        "Address_Set",
        "Port_Group",
    ] {
        s.push_str(&central.nbctl(&["--format=json", "list", t]).unwrap());
    }
    s
}

/// Poll `f` until it returns Some, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A free loopback port (bound and released; the daemon binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.1: (status code, body); `None` while
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}
