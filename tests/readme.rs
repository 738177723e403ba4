//! The user's path is the test path: the README's master and node command lines ("Running
//! it"), read from README.md at test time and run verbatim (only names, addresses, ports and
//! file paths substituted; `sudo` dropped because tests run as root; under `nohup` with its
//! output in a file) against a stock central that listens on its unix sockets only. The master
//! must open the NB/SB TCP listeners itself; two nodes come up through those TCP addresses
//! (reached from their netns through loopback forwarders on the same port numbers), and a pod
//! on one node pings a pod on the other.

mod common;
mod nodebed;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use nodebed::{CLUSTER_SUBNET, NodeSide, SERVICE_CIDR, create_node};
use ovn_testbed::{Outside, two_chassis};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const NEXTHOP: &str = "172.31.0.100";

/// The two `sh` blocks of the README's "Running it" section, continuation lines joined:
/// (master, node).
fn readme_command_lines() -> (String, String) {
    let text = include_str!("../README.md");
    let start = text
        .find("## Running it")
        .expect("README.md has a \"Running it\" section");
    let blocks: Vec<String> = text[start..]
        .split("```sh")
        .skip(1)
        .take(2)
        .map(|b| b.split("```").next().unwrap_or("").replace("\\\n", " "))
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "two command blocks in README \"Running it\""
    );
    (blocks[0].trim().to_string(), blocks[1].trim().to_string())
}

/// The README line as an argv: substitutions applied, `nohup` kept, `sudo` dropped, the
/// shell's `2>&1 &` done by the spawner (output to a file, not waited for).
fn argv(line: &str, subs: &[(&str, String)]) -> Vec<String> {
    let mut line = line.to_string();
    for (from, to) in subs {
        assert!(line.contains(from), "README line has no {from:?}: {line}");
        line = line.replace(from, to);
    }
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[..3], ["nohup", "sudo", "ovnkube"], "{line}");
    assert_eq!(words[words.len() - 2..], ["2>&1", "&"], "{line}");
    words.truncate(words.len() - 2);
    words.remove(1);
    words[1] = env!("CARGO_BIN_EXE_ovnkube").to_string();
    assert!(
        !words.iter().any(|w| w.contains('$')),
        "unsubstituted variable in {words:?}"
    );
    words
}

/// `nohup <ovnkube ...>` in `dir` with its output in `dir/nohup.out`.
fn nohup(mut cmd: Command, dir: &Path) -> Command {
    let out = std::fs::File::create(dir.join("nohup.out")).unwrap();
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd
}

fn wait_file_has(path: &Path, needle: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{} exited ({st}) before {needle:?}:\n{text}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second free port on the NB's loopback address, for the SB (the README gives both the
/// same `$CENTRAL_IP`).
fn free_port_on(ip: std::net::IpAddr, not: u16) -> u16 {
    loop {
        let p = TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p != not {
            return p;
        }
    }
}

/// What the guide's node hosts have, in the node's private mount namespace: `/etc/hosts`
/// resolving the node name to its address, and the default config file
/// `/etc/openvswitch/ovn_k8s.conf` (here only pointing the CNI config at the test's dir).
fn node_binds(ns: &NodeSide) -> [(PathBuf, &'static Path); 2] {
    [
        (ns.dir.join("hosts"), Path::new("/etc/hosts")),
        (
            ns.dir.join("etc-openvswitch"),
            Path::new("/etc/openvswitch"),
        ),
    ]
}

fn write_node_files(ns: &NodeSide, ip: &str) {
    std::fs::write(
        ns.dir.join("hosts"),
        format!("127.0.0.1 localhost\n{ip} {}\n", ns.name),
    )
    .unwrap();
    let etc_ovs = ns.dir.join("etc-openvswitch");
    std::fs::create_dir_all(&etc_ovs).unwrap();
    std::fs::write(
        etc_ovs.join("ovn_k8s.conf"),
        format!("[cni]\nconf-dir={}\n", ns.cni_dir.display()),
    )
    .unwrap();
}

/// A pod's network namespace, deleted on drop.
struct Sandbox {
    netns: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A pod as a user creates it (no annotation); the master's pod controller gives it an
/// address, then the runtime's CNI ADD (the plugin, inside the node's netns) wires it.
async fn pod(env: &Env, ns: &NodeSide, name: &str) -> (Sandbox, String) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let p = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(ns.name.clone()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    api.create(&PostParams::default(), &p).await.unwrap();
    let ann: Value = eventually("the pod's ovn annotation", WAIT, || async {
        let p = api.get(name).await.ok()?;
        serde_json::from_str(p.annotations().get("ovn")?).ok()
    })
    .await;
    let netns = ovn_testbed::netns_name(name);
    let ok = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap();
    assert!(ok.success());
    let sb = Sandbox { netns };
    let path = format!("/var/run/netns/{}", sb.netns);
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={name}"
    );
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", name),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args.as_str()),
    ];
    // As a runtime runs it: on the node's host, which has the node's config file.
    let conf = ns.cni_conf().to_string();
    let plugin = ns.plugin.display().to_string();
    let mut cmd = ns
        .chassis
        .host_command(&[&plugin], &node_binds(ns))
        .unwrap();
    cmd.env("CNI_PATH", ns.plugin.parent().unwrap()).envs(vars);
    let (st, out, err) = tokio::task::block_in_place(|| {
        nodebed::run_with_timeout(cmd, Some(conf.as_bytes()), Duration::from_secs(60))
    });
    assert!(st.success(), "CNI ADD {name}: {out}\n{err}");
    let ip = ann["ip_address"]
        .as_str()
        .and_then(|c| c.split('/').next())
        .unwrap()
        .to_string();
    (sb, ip)
}

fn ping(from: &Sandbox, ip: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.netns,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            ip,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_command_lines_bring_up_two_nodes_and_pods_ping() {
    let (master_line, node_line) = readme_command_lines();
    let env = Env::start("readme").await;
    // No TCP listener before the master runs: it has to open them itself.
    assert!(env.central.nb_connections().unwrap().is_empty());
    assert!(env.central.sb_connections().unwrap().is_empty());
    let nb: SocketAddr = env.nb_addr;
    let sb = SocketAddr::new(nb.ip(), free_port_on(nb.ip(), nb.port()));
    let common_subs = |central: &str, log: &Path| {
        vec![
            ("$CENTRAL_IP:6631", format!("{central}:{}", nb.port())),
            ("$CENTRAL_IP:6632", format!("{central}:{}", sb.port())),
            ("$CLUSTER_IP_SUBNET", CLUSTER_SUBNET.to_string()),
            ("$SERVICE_IP_SUBNET", SERVICE_CIDR.to_string()),
            (
                "/var/log/openvswitch/ovnkube.log",
                log.display().to_string(),
            ),
        ]
    };

    // The master, in a directory holding kubeconfig.yaml (the line's relative path), with the
    // central's directory as OVN_RUNDIR (/var/run/ovn on a real host).
    let mdir = env.dir.join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::copy(&env.kubeconfig, mdir.join("kubeconfig.yaml")).unwrap();
    let mlog = mdir.join("ovnkube.log");
    let mut subs = common_subs(&nb.ip().to_string(), &mlog);
    subs.push(("$NODE_NAME", "master".to_string()));
    let margv = argv(&master_line, &subs);
    let mut cmd = Command::new(&margv[0]);
    cmd.args(&margv[1..])
        .env("OVN_RUNDIR", env.central.ovn_rundir());
    let mut master = common::Daemon {
        child: nohup(cmd, &mdir).spawn().unwrap(),
        log: mlog.clone(),
    };
    master.wait_log("initial node sync done", WAIT);
    let listen = |a: SocketAddr| vec![format!("ptcp:{}:{}", a.port(), a.ip())];
    assert_eq!(env.central.nb_connections().unwrap(), listen(nb));
    assert_eq!(env.central.sb_connections().unwrap(), listen(sb));

    // Two nodes: chassis with a gateway NIC (eth1) cabled to an "outside" next hop.
    create_node(&env, "n1").await;
    create_node(&env, "n2").await;
    let (ca, cb) = two_chassis(&env.central, "n1", "n2").unwrap();
    let out = Outside::start(&format!("{NEXTHOP}/24")).unwrap();
    out.attach(&ca, "eth1", "172.31.0.1/24", true).unwrap();
    out.attach(&cb, "eth1", "172.31.0.2/24", true).unwrap();
    let mut nodes = Vec::new();
    let mut children = Vec::new();
    let mut fwds = Vec::new();
    for (i, ch) in [ca, cb].into_iter().enumerate() {
        let ns = NodeSide::new(&env, ch);
        // The node reaches the central's TCP addresses on its own loopback, same ports.
        for a in [nb, sb] {
            fwds.push(ns.chassis.forward_tcp(a.port(), a).unwrap());
        }
        write_node_files(&ns, &format!("172.30.0.{}", i + 1));
        let log = ns.dir.join("ovnkube.log");
        let mut subs = common_subs("127.0.0.1", &log);
        subs.extend([
            ("$NODE_NAME", ns.name.clone()),
            ("enp0s9", "eth1".to_string()),
            ("$NEXTHOP", NEXTHOP.to_string()),
            ("$TOKEN", "sandbox-dummy-token".to_string()),
        ]);
        let nargv = argv(&node_line, &subs);
        let nargv: Vec<&str> = nargv.iter().map(String::as_str).collect();
        let cmd = ns.chassis.host_command(&nargv, &node_binds(&ns)).unwrap();
        let mut cmd = nohup(cmd, &ns.dir);
        let mut child = ns.chassis.spawn_tracked(&mut cmd).unwrap();
        wait_file_has(&log, "CNI config written", &mut child);
        children.push(child);
        nodes.push(ns);
    }

    // Pods on each node, addressed by the master, wired by the CNI plugin; they ping.
    let (p1, ip1) = pod(&env, &nodes[0], "p1").await;
    let (p2, ip2) = pod(&env, &nodes[1], "p2").await;
    let deadline = Instant::now() + WAIT;
    while !(ping(&p1, &ip2) && ping(&p2, &ip1)) {
        if Instant::now() > deadline {
            let logs: BTreeMap<String, String> = nodes
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        std::fs::read_to_string(n.dir.join("ovnkube.log")).unwrap_or_default(),
                    )
                })
                .collect();
            panic!("{ip1} <-> {ip2} do not ping; node logs: {logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // The nodes went through TCP: ovn-controller's remote is the tcp address, and the master
    // and nodes are still running.
    for n in &nodes {
        let remote = n
            .chassis
            .vsctl(&["get", "open_vswitch", ".", "external_ids:ovn-remote"])
            .unwrap();
        assert_eq!(
            remote.trim().trim_matches('"'),
            format!("tcp:127.0.0.1:{}", sb.port())
        );
    }
    assert!(master.child.try_wait().unwrap().is_none(), "master exited");
    for c in &mut children {
        assert!(c.try_wait().unwrap().is_none(), "a node exited");
    }
    for c in &mut children {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    drop((p1, p2));
}
