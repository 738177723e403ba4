//! `make demo`: the whole system on an embedded local sandbox.
//!
//! A private OVN central, two OVS "nodes" (userspace datapath, each in its own network
//! namespace, geneve between them), the Kubernetes API stand-in, the `ovnkube` master and one
//! `ovnkube` node process per node started with the guide's flags, and the real `kubectl`
//! creating the guide's sample workloads. Stand-ins for the scheduler, the endpoints
//! controller and the kubelet (which runs the real CNI plugin) fill in what the sandbox lacks.
//! Then it checks what a user would: pod IPs, pod↔pod ping across nodes, the ClusterIP, the
//! session affinity (20 requests from one client reach one backend), the NodePort from an "outside" namespace on the nodes' gateway NICs, and the NB summary. Exits non-zero if any step fails; cleans up everything, also on Ctrl-C.
//!
//! `ovnkube-demo [--keep] [--state-dir DIR]` runs it; with `--keep` it stays up until
//! `ovnkube-demo stop [--state-dir DIR]` (SIGTERM to the PID in DIR/demo.pid).

mod standins;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig};
use ovn_testbed::{Central, Chassis, Forwarder, Outside};
use tokio::sync::Mutex;

const CLUSTER_SUBNET: &str = "10.128.0.0/14/23";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const NODES: [&str; 2] = ["node1", "node2"];
const STEPS: usize = 15;
/// The "outside world" (a namespace on the nodes' gateway NICs) and the nodes' IPs on it.
const OUTSIDE: &str = "172.31.0.100/24";
const NODE_IPS: [&str; 2] = ["172.31.0.1", "172.31.0.2"];

struct Progress {
    n: usize,
    label: String,
    start: Instant,
}

impl Progress {
    fn begin(n: usize, label: &str) -> Progress {
        print!("[{n:>2}/{STEPS}] {label:<58} ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        Progress {
            n,
            label: label.to_string(),
            start: Instant::now(),
        }
    }

    fn ok(self, detail: &str) {
        println!(
            "ok ({:.1} s){}",
            self.start.elapsed().as_secs_f64(),
            if detail.is_empty() {
                String::new()
            } else {
                format!("  {detail}")
            }
        );
    }
}

/// Everything the demo started; dropping it tears all of it down (children first).
struct World {
    dir: PathBuf,
    children: Vec<Child>,
    kubelets: Vec<Arc<standins::Kubelet>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    forwarders: Vec<Forwarder>,
    sandbox: Option<Sandbox>,
    outside: Option<Outside>,
    chassis: Vec<Arc<Chassis>>,
    central: Option<Central>,
}

impl World {
    async fn teardown(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for k in self.kubelets.drain(..) {
            k.teardown().await;
        }
        for mut c in self.children.drain(..) {
            // SIGTERM first so ovnkube removes its pid file and stops cleanly.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.forwarders.clear();
        if let Some(s) = self.sandbox.take() {
            s.shutdown().await;
        }
        self.outside.take();
        self.chassis.clear();
        self.central.take();
    }
}

/// A free loopback port for the master's metrics listener.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The body of a plain-HTTP GET (the metrics listener speaks HTTP/1.1).
fn http_get(url: &str) -> Result<String> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s =
        std::net::TcpStream::connect(host).with_context(|| format!("connecting to {url}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("reading {url}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP response from {url}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{url}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

fn ovnkube_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("ovnkube");
    if !p.exists() {
        bail!(
            "{} not found: run `cargo build --bins` (make demo does)",
            p.display()
        );
    }
    Ok(p)
}

/// `ovn-kube-util trace ARGS` (the ovnkube binary under its utility name); its verdict text.
fn util_trace(ovnkube: &Path, args: &[String]) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let out = Command::new(ovnkube)
        .arg0("ovn-kube-util")
        .arg("trace")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ovn-kube-util trace")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "ovn-kube-util trace {}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn log_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path)
        .map(|s| s.contains(needle))
        .unwrap_or(false)
}

fn kubectl(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--cache-dir={}",
            dir.join("kubectl-cache").display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl (install it: apt-get install kubectl)")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

async fn run_demo(w: &mut World, keep: bool) -> Result<()> {
    let ovnkube = ovnkube_binary()?;
    let dir = w.dir.clone();
    std::fs::create_dir_all(&dir)?;
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vagrant/manifests");

    let p = Progress::begin(1, "OVN central: NB and SB ovsdb-server, ovn-northd");
    let central = Central::start().map_err(|e| p.fail_ref(e))?;
    p.ok(&central.dir().display().to_string());
    // A stock central listens on its unix sockets only: the master opens these TCP
    // listeners itself (over the local sockets under OVN_RUNDIR), as on a real host.
    let nb_tcp = ovn_testbed::free_loopback_addr()?;
    let sb_tcp = ovn_testbed::free_loopback_addr()?;
    let ovn_rundir = central.ovn_rundir().to_path_buf();
    w.central = Some(central);

    let p = Progress::begin(2, "two nodes: OVS (userspace) + ovn-controller, geneve");
    let (c1, c2) =
        ovn_testbed::two_chassis(w.central.as_ref().context("central")?, NODES[0], NODES[1])
            .map_err(|e| p.fail_ref(e))?;
    // Each node's gateway NIC eth1 is cabled to an "outside" namespace (its default route).
    let outside = Outside::start(OUTSIDE).map_err(|e| p.fail_ref(e))?;
    for (ch, ip) in [(&c1, NODE_IPS[0]), (&c2, NODE_IPS[1])] {
        outside
            .attach(ch, "eth1", &format!("{ip}/24"), true)
            .map_err(|e| p.fail_ref(e))?;
    }
    w.outside = Some(outside);
    w.chassis = vec![Arc::new(c1), Arc::new(c2)];
    p.ok(&format!(
        "netns {} and {}; outside {}",
        w.chassis[0].netns(),
        w.chassis[1].netns(),
        OUTSIDE
    ));

    let p = Progress::begin(3, "Kubernetes API (kube-sandbox)");
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse()?,
        SandboxConfig {
            service_cidr: SERVICE_CIDR.into(),
            // The endpoints stand-in publishes EndpointSlices; nothing is mirrored, so the
            // services work only through slices.
            mirror_endpoints: false,
            ..SandboxConfig::default()
        },
    )
    .await
    .map_err(|e| p.fail_ref(e))?;
    let kubeconfig = dir.join("kubeconfig.yaml");
    sandbox.write_kubeconfig(&kubeconfig)?;
    let api_addr = sandbox.addr();
    let url: http::Uri = sandbox.url().parse()?;
    let client = kube::Client::try_from(kube::Config::new(url))?;
    p.ok(&sandbox.url());
    w.sandbox = Some(sandbox);

    let p = Progress::begin(4, "ovnkube master (-init-master -net-controller -nodeport)");
    let empty_conf = dir.join("ovn_k8s.conf");
    std::fs::write(&empty_conf, "# the demo passes everything as flags\n")?;
    let master_log = dir.join("ovnkube-master.log");
    let metrics_url = format!("http://127.0.0.1:{}/metrics", free_port()?);
    let master = Command::new(&ovnkube)
        .env("OVN_RUNDIR", &ovn_rundir)
        .args([
            format!("-k8s-kubeconfig={}", kubeconfig.display()),
            "-net-controller".into(),
            "-init-master=master".into(),
            format!("-cluster-subnet={CLUSTER_SUBNET}"),
            format!("-service-cluster-ip-range={SERVICE_CIDR}"),
            "-nodeport".into(),
            format!("-nb-address=tcp://{nb_tcp}"),
            format!("-sb-address=tcp://{sb_tcp}"),
            "-loglevel=4".into(),
            format!("-logfile={}", master_log.display()),
            format!("-config-file={}", empty_conf.display()),
            format!(
                "-metrics-bind-address={}",
                metrics_url
                    .trim_start_matches("http://")
                    .trim_end_matches("/metrics")
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the master")?;
    w.children.push(master);
    wait_for(
        "the master's cluster topology",
        Duration::from_secs(30),
        || log_has(&master_log, "cluster topology ready"),
    )
    .map_err(|e| p.fail_ref(e))?;
    p.ok(&master_log.display().to_string());

    let p = Progress::begin(
        5,
        "nodes register; ovnkube -init-node -init-gateways on each",
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let plugin_dir = dir.join("cni-bin");
    std::fs::create_dir_all(&plugin_dir)?;
    let plugin = plugin_dir.join("ovn-k8s-cni-overlay");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(&ovnkube, &plugin)?;
    let sandboxes = Arc::new(Mutex::new(HashMap::new()));
    for (i, name) in NODES.iter().enumerate() {
        nodes
            .create(
                &PostParams::default(),
                &Node {
                    metadata: ObjectMeta {
                        name: Some((*name).into()),
                        labels: Some(
                            [("kubernetes.io/hostname".to_string(), (*name).to_string())].into(),
                        ),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| p.fail_ref(e.into()))?;
        let ch = w.chassis[i].clone();
        let fwd = ch.forward_tcp(0, api_addr).map_err(|e| p.fail_ref(e))?;
        let ndir = dir.join(name);
        std::fs::create_dir_all(&ndir)?;
        let nkc = ndir.join("kubeconfig.yaml");
        std::fs::write(&nkc, kube_sandbox::kubeconfig_yaml(&fwd.http_url()))?;
        w.forwarders.push(fwd);
        // As on the guide's hosts, the node reaches the central over TCP (the listeners the
        // master opened): here through its own loopback, on the same port numbers.
        for a in [nb_tcp, sb_tcp] {
            let f = ch.forward_tcp(a.port(), a).map_err(|e| p.fail_ref(e))?;
            w.forwarders.push(f);
        }
        let cni_dir = ndir.join("cni");
        let log = ndir.join("ovnkube-node.log");
        let args = [
            format!("-k8s-kubeconfig={}", nkc.display()),
            format!("-init-node={name}"),
            "-init-gateways".into(),
            "-nodeport".into(),
            format!("-nb-address=tcp://127.0.0.1:{}", nb_tcp.port()),
            format!("-sb-address=tcp://127.0.0.1:{}", sb_tcp.port()),
            "-k8s-token=demo".into(),
            format!("-cluster-subnet={CLUSTER_SUBNET}"),
            format!("-service-cluster-ip-range={SERVICE_CIDR}"),
            format!("-encap-ip=172.30.0.{}", i + 1),
            format!("-cni-conf-dir={}", cni_dir.display()),
            "-loglevel=4".into(),
            format!("-logfile={}", log.display()),
            format!("-config-file={}", empty_conf.display()),
        ];
        let mut argv = vec![ovnkube.display().to_string()];
        argv.extend(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Own mount namespace: the gateway init edits /etc/default/openvswitch-switch (G17).
        let child = ch.spawn_gateway(&argv).map_err(|e| p.fail_ref(e))?;
        w.children.push(child);
        let kubelet = Arc::new(standins::Kubelet {
            node: (*name).into(),
            chassis: ch,
            plugin: plugin.clone(),
            cni_conf: cni_dir.join("10-ovn-kubernetes.conf"),
            client: client.clone(),
            sandboxes: sandboxes.clone(),
            prefix: format!("demo{}", std::process::id()),
        });
        w.kubelets.push(kubelet);
    }
    for name in NODES {
        let conf = dir.join(name).join("cni/10-ovn-kubernetes.conf");
        let log = dir.join(name).join("ovnkube-node.log");
        wait_for(
            &format!("{name} to be ready (its CNI config)"),
            Duration::from_secs(60),
            || conf.exists(),
        )
        .map_err(|e| {
            p.fail_ref(anyhow::anyhow!(
                "{e}; node log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        })?;
    }
    p.ok("CNI config written on both nodes");

    let p = Progress::begin(6, "stand-ins: scheduler, endpoints controller, kubelets");
    w.tasks.push(tokio::spawn(standins::scheduler(
        client.clone(),
        NODES.iter().map(|s| s.to_string()).collect(),
    )));
    w.tasks
        .push(tokio::spawn(standins::endpoints_controller(client.clone())));
    for k in &w.kubelets {
        let k = k.clone();
        w.tasks.push(tokio::spawn(async move { k.run().await }));
    }
    p.ok("");

    let p = Progress::begin(7, "kubectl create -f: 2 web pods, ClusterIP + NodePort");
    let mut files = Vec::new();
    for f in [
        "apache-pod.yaml",
        "nginx-pod.yaml",
        "apache-e-w.yaml",
        "apache-n-s.yaml",
    ] {
        files.push("-f".to_string());
        files.push(manifests.join(f).display().to_string());
    }
    let mut args = vec!["create"];
    args.extend(files.iter().map(String::as_str));
    let out = kubectl(&dir, &kubeconfig, &args).map_err(|e| p.fail_ref(e))?;
    p.ok(&format!("{} objects created", out.lines().count()));

    let p = Progress::begin(8, "pods scheduled, annotated, wired by the CNI plugin");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let list = pods.list(&ListParams::default()).await?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()).is_some())
            .collect();
        if ready.len() == 2 {
            break ready;
        }
        if Instant::now() > deadline {
            return Err(p.fail_ref(anyhow::anyhow!(
                "pods not running after 60 s; see {}",
                master_log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    p.ok("");
    println!(
        "         {:<12} {:<8} {:<16} annotation ovn",
        "POD", "NODE", "IP"
    );
    for pod in &running {
        println!(
            "         {:<12} {:<8} {:<16} {}",
            pod.name_any(),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            pod.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            pod.annotations().get("ovn").cloned().unwrap_or_default()
        );
    }

    let sbs = w.kubelets[0].sandboxes.clone();
    let (a, b) = {
        let s = sbs.lock().await;
        let mut v: Vec<(String, String, String)> = s
            .values()
            .map(|x| (x.netns.clone(), x.ip.clone(), x.node.clone()))
            .collect();
        v.sort_by(|x, y| x.2.cmp(&y.2));
        if v.len() != 2 || v[0].2 == v[1].2 {
            bail!("expected one pod on each node, got {v:?}");
        }
        (v[0].clone(), v[1].clone())
    };

    let p = Progress::begin(9, "ping pod -> pod across nodes (geneve)");
    let mut last = String::new();
    let ok = (0..10).any(|_| {
        match standins::run(&[
            "ip", "netns", "exec", &a.0, "ping", "-c", "2", "-W", "1", &b.1,
        ]) {
            Ok(out) => {
                last = out
                    .lines()
                    .rev()
                    .find(|l| l.contains("rtt"))
                    .unwrap_or("")
                    .to_string();
                true
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        }
    });
    if !ok {
        return Err(p.fail_ref(anyhow::anyhow!(
            "{} ({}) cannot ping {}: {last}",
            a.0,
            a.2,
            b.1
        )));
    }
    p.ok(&format!("{} -> {}: {last}", a.1, b.1));

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let e_w = svcs.get("apacheservice").await?;
    let cip = e_w
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("apacheservice has no clusterIP")?;
    let port = e_w
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.port)
        .unwrap_or(8800);
    let p = Progress::begin(10, "curl the ClusterIP from a pod (OVN load balancer)");
    let url = format!("http://{cip}:{port}/");
    let fetch = format!(
        "import urllib.request;print(urllib.request.urlopen('{url}',timeout=3).read().decode().strip())"
    );
    let mut answers = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.len() < 2 && Instant::now() < deadline {
        if let Ok(out) = standins::run(&["ip", "netns", "exec", &a.0, "python3", "-c", &fetch]) {
            answers.insert(out.trim().to_string());
        }
    }
    if answers.is_empty() {
        return Err(p.fail_ref(anyhow::anyhow!("no answer from {url}")));
    }
    p.ok(&format!(
        "{url} -> {}",
        answers.into_iter().collect::<Vec<_>>().join(" | ")
    ));

    let p = Progress::begin(11, "sessionAffinity ClientIP: 20 requests, one backend");
    let sticky = sticky_service(&e_w);
    let sticky = svcs
        .create(&PostParams::default(), &sticky)
        .await
        .map_err(|e| p.fail_ref(e.into()))?;
    let sip = sticky
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .context("apache-sticky has no clusterIP")?;
    let url = format!("http://{sip}:{port}/");
    let fetch20 = format!(
        "import urllib.request\nfor _ in range(20): print(urllib.request.urlopen('{url}',timeout=3).read().decode().strip())"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        match standins::run(&["ip", "netns", "exec", &a.0, "python3", "-c", &fetch20]) {
            Ok(out) if out.lines().count() == 20 => break out,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            Ok(out) => return Err(p.fail_ref(anyhow::anyhow!("{url}: partial answers {out:?}"))),
            Err(e) => return Err(p.fail_ref(e.context(format!("no answer from {url}")))),
        }
    };
    let distinct: std::collections::BTreeSet<&str> = got.lines().map(str::trim).collect();
    if distinct.len() != 1 {
        return Err(p.fail_ref(anyhow::anyhow!(
            "{url}: one client reached {} backends: {distinct:?}",
            distinct.len()
        )));
    }
    p.ok(&format!(
        "{url} -> 20 x {}",
        distinct.into_iter().next().unwrap_or_default()
    ));

    let p = Progress::begin(12, "NodePort from an outside namespace");
    let n_s = svcs.get("apacheexternal").await?;
    let node_port = n_s
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.node_port)
        .context("apacheexternal has no nodePort")
        .map_err(|e| p.fail_ref(e))?;
    let outside_ns = w.outside.as_ref().context("outside")?.netns().to_string();
    let mut got = Vec::new();
    for ip in NODE_IPS {
        let url = format!("http://{ip}:{node_port}/");
        let fetch = format!(
            "import urllib.request;print(urllib.request.urlopen('{url}',timeout=3).read().decode().strip())"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let answer = loop {
            match standins::run(&["ip", "netns", "exec", &outside_ns, "python3", "-c", &fetch]) {
                Ok(out) if !out.trim().is_empty() => break out.trim().to_string(),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Ok(_) => return Err(p.fail_ref(anyhow::anyhow!("empty answer from {url}"))),
                Err(e) => return Err(p.fail_ref(e.context(format!("no answer from {url}")))),
            }
        };
        got.push(format!("{url} -> {answer}"));
    }
    p.ok(&got.join(" | "));

    let p = Progress::begin(13, "ovn-nbctl show");
    let c = w.central.as_ref().context("central")?;
    let show = c.nbctl(&["show"]).map_err(|e| p.fail_ref(e))?;
    let count = |w: &str| {
        show.lines()
            .filter(|l| l.trim_start().starts_with(w))
            .count()
    };
    p.ok(&format!(
        "{} switches, {} routers, {} switch ports, {} router ports",
        count("switch "),
        count("router "),
        count("port ")
            - show
                .lines()
                .filter(|l| l.trim_start().starts_with("port ") && l.contains("rto"))
                .count(),
        show.lines()
            .filter(|l| l.trim_start().starts_with("port ") && l.contains("rto"))
            .count()
    ));

    let p = Progress::begin(14, "the master's /metrics (Prometheus)");
    let text = http_get(&metrics_url).map_err(|e| p.fail_ref(e))?;
    let sample = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    p.ok(&metrics_url);
    println!(
        "         pods annotated {} (latency sum {} s), NB transactions {}, leader {}",
        sample("ovnkube_master_pod_creation_latency_seconds_count"),
        sample("ovnkube_master_pod_creation_latency_seconds_sum"),
        sample("ovnkube_nb_transaction_duration_seconds_count{result=\"ok\"}"),
        sample("ovnkube_master_leader"),
    );

    let p = Progress::begin(15, "ovn-kube-util trace: pod -> ClusterIP service");
    let src = sbs
        .lock()
        .await
        .iter()
        .find(|(_, s)| s.netns == a.0)
        .map(|(k, _)| k.clone())
        .context("the first pod's name")?;
    let verdict = util_trace(
        &ovnkube,
        &[
            "--src".into(),
            src,
            "--dst".into(),
            "default/apacheservice".into(),
            "--tcp".into(),
            port.to_string(),
            format!("-k8s-kubeconfig={}", kubeconfig.display()),
            format!("-nb-address={}", c.nb_db()),
            format!("-sb-address={}", c.sb_db()),
            format!("-config-file={}", empty_conf.display()),
        ],
    )
    .map_err(|e| p.fail_ref(e))?;
    p.ok("");
    print!("{verdict}");

    if keep {
        let envf = dir.join("demo.env");
        std::fs::write(
            &envf,
            format!(
                // The installed ovn-nbctl/ovn-sbctl find the central's sockets by default.
                "export KUBECONFIG={}\nexport OVN_RUNDIR={}\n",
                kubeconfig.display(),
                ovn_rundir.display()
            ),
        )?;
        println!();
        println!("The demo keeps running. Try:");
        println!("  source {}", envf.display());
        println!("  kubectl get pods,svc,endpointslices -o wide");
        println!("  ovn-nbctl show");
        println!("  curl -s {metrics_url}");
        println!("  ip netns exec {} ping {}", a.0, b.1);
        println!("  logs: {}", dir.display());
        println!("Stop it with: make demo-stop");
        std::fs::write(dir.join("READY"), "")?;
        shutdown_signal().await;
    }
    Ok(())
}

trait FailRef {
    fn fail_ref(&self, e: anyhow::Error) -> anyhow::Error;
}

impl FailRef for Progress {
    fn fail_ref(&self, e: anyhow::Error) -> anyhow::Error {
        println!("FAILED");
        anyhow::anyhow!("step {} ({}) failed: {e:#}", self.n, self.label)
    }
}

/// `apache-sticky`: `svc`'s selector and ports with `sessionAffinity: ClientIP`.
fn sticky_service(svc: &Service) -> Service {
    let mut spec = svc.spec.clone().unwrap_or_default();
    spec.cluster_ip = None;
    spec.cluster_ips = None;
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
        client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
            timeout_seconds: Some(600),
        }),
    });
    Service {
        metadata: ObjectMeta {
            name: Some("apache-sticky".into()),
            namespace: svc.namespace(),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn stop(dir: &Path) -> Result<()> {
    let pidf = dir.join("demo.pid");
    let pid = std::fs::read_to_string(&pidf)
        .with_context(|| format!("no running demo ({} missing)", pidf.display()))?;
    let pid = pid.trim();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.contains("ovnkube-demo") {
        let _ = std::fs::remove_file(&pidf);
        bail!("the demo (pid {pid}) is not running");
    }
    Command::new("kill").arg(pid).status()?;
    wait_for("the demo to stop", Duration::from_secs(60), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })?;
    println!("demo stopped");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().any(|a| a == "--keep");
    let dir = args
        .iter()
        .position(|a| a == "--state-dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ovnkube-demo"));
    if args.first().map(String::as_str) == Some("stop") {
        return match stop(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ovnkube-demo: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    // A fresh state dir: a CNI config left by an earlier run would make a node look ready.
    if let Ok(pid) = std::fs::read_to_string(dir.join("demo.pid"))
        && std::fs::read_to_string(format!("/proc/{}/cmdline", pid.trim()))
            .is_ok_and(|c| c.contains("ovnkube-demo"))
    {
        eprintln!(
            "ovnkube-demo: a demo is already running (pid {}); stop it with `make demo-stop`",
            pid.trim()
        );
        return ExitCode::from(1);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("demo.pid"), std::process::id().to_string());
    let started = Instant::now();
    let mut world = World {
        dir: dir.clone(),
        children: Vec::new(),
        kubelets: Vec::new(),
        tasks: Vec::new(),
        forwarders: Vec::new(),
        sandbox: None,
        outside: None,
        chassis: Vec::new(),
        central: None,
    };
    let result = tokio::select! {
        r = run_demo(&mut world, keep) => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    print!("cleaning up ... ");
    world.teardown().await;
    println!("done");
    let _ = std::fs::remove_file(dir.join("demo.pid"));
    match result {
        Ok(()) => {
            println!("demo passed in {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo FAILED: {e:#}");
            eprintln!("logs are in {}", dir.display());
            ExitCode::from(1)
        }
    }
}
