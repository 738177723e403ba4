//! Node-side test bed shared by `tests/node.rs` and `tests/cni.rs`: a chassis whose netns
//! reaches the Kubernetes API stand-in through a forwarder, `ovnkube -init-node` and the CNI
//! plugin run inside that netns (the userspace vswitchd opens ports by name in its own
//! netns), pods as network namespaces the test creates.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use ovn_testbed::{Chassis, Forwarder};
use serde_json::Value;

use crate::common::Env;

pub const CLUSTER_SUBNET: &str = "10.128.0.0/16";
pub const SERVICE_CIDR: &str = "172.16.1.0/24";

/// The master's flags without `-net-controller`: these tests set the pods' `ovn` annotation
/// and logical ports themselves, so they don't depend on the pod controller.
pub fn master_args(env: &Env) -> Vec<String> {
    env.master_args(CLUSTER_SUBNET)
        .into_iter()
        .filter(|a| a != "-net-controller")
        .collect()
}

pub fn empty_config(env: &Env) -> PathBuf {
    let p = env.dir.join("ovn_k8s.conf");
    if !p.exists() {
        std::fs::write(&p, "# empty: flags only\n").unwrap();
    }
    p
}

pub async fn create_node(env: &Env, name: &str) {
    let api: Api<Node> = Api::all(env.client.clone());
    let n = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &n).await.unwrap();
}

/// One Kubernetes node = one chassis + what the node process needs inside its netns.
pub struct NodeSide {
    pub name: String,
    pub chassis: Chassis,
    pub fwd: Forwarder,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub cni_dir: PathBuf,
    /// `ovn-k8s-cni-overlay` → the `ovnkube` binary (argv[0] dispatch, as `make install`).
    pub plugin: PathBuf,
}

impl NodeSide {
    pub fn new(env: &Env, chassis: Chassis) -> NodeSide {
        let name = chassis.name().to_string();
        let fwd = chassis.forward_tcp(0, env.sandbox.addr()).unwrap();
        let dir = env.dir.join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig.yaml");
        std::fs::write(&kubeconfig, kube_sandbox::kubeconfig_yaml(&fwd.http_url())).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let plugin = bin.join("ovn-k8s-cni-overlay");
        let _ = std::fs::remove_file(&plugin);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ovnkube"), &plugin).unwrap();
        NodeSide {
            name,
            chassis,
            fwd,
            cni_dir: dir.join("net.d"),
            dir,
            kubeconfig,
            plugin,
        }
    }

    pub fn node_args(&self, env: &Env, encap_ip: &str) -> Vec<String> {
        vec![
            format!("-init-node={}", self.name),
            format!("-k8s-kubeconfig={}", self.kubeconfig.display()),
            format!("-nb-address=unix:{}", env.central.nb_sock().display()),
            format!("-sb-address=unix:{}", env.central.sb_sock().display()),
            format!("-cluster-subnet={CLUSTER_SUBNET}"),
            format!("-service-cluster-ip-range={SERVICE_CIDR}"),
            format!("-encap-ip={encap_ip}"),
            format!("-cni-conf-dir={}", self.cni_dir.display()),
            format!("-config-file={}", empty_config(env).display()),
            "-loglevel=5".into(),
            format!("-logfile={}", self.dir.join("node.log").display()),
        ]
    }

    /// Runs `ovnkube -init-node` inside the chassis netns to completion.
    pub fn init_node(
        &self,
        args: &[String],
        extra_env: &[(&str, &str)],
        timeout: Duration,
    ) -> (ExitStatus, String) {
        let mut argv = vec![env!("CARGO_BIN_EXE_ovnkube").to_string()];
        argv.extend(args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut cmd = self.chassis.command(&argv).unwrap();
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = run_with_timeout(cmd, None, timeout);
        let log = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        (out.0, format!("{log}\n--- stderr ---\n{}", out.2))
    }

    /// The CNI config the node wrote.
    pub fn cni_conf(&self) -> Value {
        let p = self.cni_dir.join("10-ovn-kubernetes.conf");
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Runs the plugin as a runtime would: `CNI_*` env, config on stdin, inside the chassis
    /// netns. Returns (exit status, stdout JSON or Null, stderr).
    pub fn cni(&self, vars: &[(&str, &str)], stdin: &str) -> (ExitStatus, Value, String) {
        let plugin = self.plugin.display().to_string();
        let mut cmd = self.chassis.command(&[&plugin]).unwrap();
        for k in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("CNI_PATH", self.plugin.parent().unwrap());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let (status, stdout, stderr) =
            run_with_timeout(cmd, Some(stdin.as_bytes()), Duration::from_secs(60));
        let v = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {stdout}\n{stderr}"))
        };
        (status, v, stderr)
    }
}

/// Spawn, feed stdin, wait with a deadline (killed by PID on timeout); (status, stdout, stderr).
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Dropping the pipe closes it: the child sees EOF.
    if let (Some(mut si), Some(data)) = (child.stdin.take(), stdin) {
        let _ = si.write_all(data);
    }
    // Read pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().unwrap();
            let e = te.join().unwrap_or_default();
            panic!("command timed out after {timeout:?} ({s}); stderr:\n{e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        to.join().unwrap_or_default(),
        te.join().unwrap_or_default(),
    )
}

/// A pod sandbox: a network namespace (deleted on Drop) plus its Kubernetes object with the
/// `ovn` annotation and its logical switch port, which the tests create themselves.
pub struct PodNs {
    pub netns: String,
    pub name: String,
    pub ip: String,
    pub cidr: String,
    pub mac: String,
    pub gw: String,
    pub container_id: String,
    children: Vec<std::process::Child>,
}

impl PodNs {
    /// `host` is the offset in the node subnet (e.g. 10 → `.10`).
    pub async fn create(env: &Env, node: &str, subnet: &str, name: &str, host: u32) -> PodNs {
        let net: ipnet::Ipv4Net = subnet.parse().unwrap();
        let base = u32::from(net.network());
        let ip = std::net::Ipv4Addr::from(base + host);
        let gw = std::net::Ipv4Addr::from(base + 1);
        let mac = ovnkube::ovn::addrs::mac_from_ip(ip);
        let cidr = format!("{ip}/{}", net.prefix_len());
        let ann =
            format!(r#"{{"ip_address":"{cidr}", "mac_address":"{mac}", "gateway_ip": "{gw}"}}"#);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                annotations: Some([("ovn".to_string(), ann)].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        api.create(&PostParams::default(), &pod).await.unwrap();
        let lp = format!("default_{name}");
        env.central
            .nbctl(&[
                "--may-exist",
                "lsp-add",
                node,
                &lp,
                "--",
                "lsp-set-addresses",
                &lp,
                &format!("{mac} {ip}"),
            ])
            .unwrap();
        let netns = ovn_testbed::netns_name(name);
        let st = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(st.success());
        PodNs {
            netns,
            name: name.into(),
            ip: ip.to_string(),
            cidr,
            mac,
            gw: gw.to_string(),
            // Longer than 15 characters, like a real runtime's (exercises truncation).
            container_id: format!("{:0<64}", format!("{name}-{host}-")),
            children: Vec::new(),
        }
    }

    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns)
    }

    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            self.name, self.container_id
        )
    }

    pub fn exec(&self, argv: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .output()
            .unwrap()
    }

    pub fn spawn(&mut self, argv: &[&str]) {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(c);
    }

    /// Ping `ip` until it answers (flows take a moment to be installed).
    pub fn wait_ping(&self, ip: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(&["ping", "-c", "1", "-W", "1", ip]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} cannot ping {ip}: {}{}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// The CNI env for `cmd` on `pod`.
pub fn vars<'a>(
    cmd: &'a str,
    pod: &'a PodNs,
    netns: &'a str,
    args: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ]
}

/// The node's CNI config with `cniVersion` replaced (and extra keys merged in).
pub fn conf_with(base: &Value, version: &str, extra: &[(&str, Value)]) -> String {
    let mut v = base.clone();
    v["cniVersion"] = Value::String(version.into());
    for (k, x) in extra {
        v[*k] = x.clone();
    }
    v.to_string()
}

/// Wait until the node has its subnet annotation; returns it.
pub async fn node_subnet(env: &Env, node: &str) -> String {
    crate::common::eventually(
        "node subnet annotation",
        Duration::from_secs(30),
        || async {
            let api: Api<Node> = Api::all(env.client.clone());
            let n = api.get(node).await.ok()?;
            n.metadata.annotations?.get("ovn_host_subnet").cloned()
        },
    )
    .await
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
