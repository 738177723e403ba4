//! The CNI plugin as a runtime drives it: results checked against the CNI spec's result
//! schema for every version asked, VERSION/STATUS/GC, and CNI error objects for bad input.

mod common;
mod nodebed;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Env;
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn is_cidr(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<ipnet::IpNet>().is_ok())
}

fn is_ip(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Structural checks of the CNI spec's result schema for `version` (required fields, types,
/// no fields the version does not define).
fn validate_result(r: &Value, version: &str) -> Result<(), String> {
    let top: BTreeSet<&str> = ["cniVersion", "interfaces", "ips", "routes", "dns"].into();
    if !keys(r).is_subset(&top) {
        return Err(format!("unknown top-level keys: {:?}", keys(r)));
    }
    if r["cniVersion"] != version {
        return Err(format!("cniVersion {} != {version}", r["cniVersion"]));
    }
    let mut iface_keys: BTreeSet<&str> = ["name", "mac", "sandbox"].into();
    if version == "1.1.0" {
        iface_keys.extend(["mtu", "socketPath", "pciID"]);
    }
    let ifaces = r["interfaces"]
        .as_array()
        .ok_or("interfaces is not a list")?;
    for i in ifaces {
        if !keys(i).is_subset(&iface_keys) {
            return Err(format!(
                "interface keys {:?} not allowed in {version}",
                keys(i)
            ));
        }
        if !i["name"].is_string() {
            return Err(format!("interface without a name: {i}"));
        }
        for k in ["mac", "sandbox"] {
            if i.get(k).is_some_and(|x| !x.is_string()) {
                return Err(format!("interface {k} is not a string: {i}"));
            }
        }
        if i.get("mtu").is_some_and(|m| !m.is_u64()) {
            return Err(format!("interface mtu is not an integer: {i}"));
        }
    }
    let ips = r["ips"].as_array().ok_or("ips is not a list")?;
    if ips.is_empty() {
        return Err("no ips".into());
    }
    for ip in ips {
        let mut allowed: BTreeSet<&str> = ["address", "gateway", "interface"].into();
        if version.starts_with("0.") {
            allowed.insert("version");
            if !matches!(ip["version"].as_str(), Some("4" | "6")) {
                return Err(format!("{version} needs ips[].version \"4\"/\"6\": {ip}"));
            }
        }
        if !keys(ip).is_subset(&allowed) {
            return Err(format!("ip keys {:?} not allowed in {version}", keys(ip)));
        }
        if !is_cidr(&ip["address"]) {
            return Err(format!("ips[].address is not a CIDR: {ip}"));
        }
        if ip.get("gateway").is_some_and(|g| !is_ip(g)) {
            return Err(format!("ips[].gateway is not an IP: {ip}"));
        }
        if let Some(idx) = ip.get("interface") {
            let n = idx.as_u64().ok_or("ips[].interface is not an integer")?;
            if n as usize >= ifaces.len() {
                return Err(format!("ips[].interface {n} out of range"));
            }
            if !ifaces[n as usize]["sandbox"].is_string() {
                return Err("ips[].interface does not point at the sandbox interface".into());
            }
        }
    }
    for rt in r["routes"].as_array().ok_or("routes is not a list")? {
        if !keys(rt).is_subset(&["dst", "gw"].into()) || !is_cidr(&rt["dst"]) {
            return Err(format!("bad route {rt}"));
        }
        if rt.get("gw").is_some_and(|g| !is_ip(g)) {
            return Err(format!("route gw is not an IP: {rt}"));
        }
    }
    let dns = &r["dns"];
    if !dns.is_object()
        || !keys(dns).is_subset(&["nameservers", "domain", "search", "options"].into())
    {
        return Err(format!("bad dns {dns}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_follow_the_schema_of_each_version_and_status_gc_work() {
    let t0 = Instant::now();
    let env = Env::start("cni-versions").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let conf11 =
        json!({"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"});

    // STATUS before the node is initialised: not available (code 50).
    let (st, out, _) = blocking(|| ns.cni(&[("CNI_COMMAND", "STATUS")], &conf11.to_string()));
    assert_eq!(st.code(), Some(1), "{out}");
    assert_eq!(out["code"], 50, "{out}");

    let (st, log) = blocking(|| {
        ns.init_node(
            &ns.node_args(&env, "127.0.0.1"),
            &[],
            Duration::from_secs(90),
        )
    });
    assert!(st.success(), "{log}");
    let base = ns.cni_conf();
    let (st, out, err) = blocking(|| ns.cni(&[("CNI_COMMAND", "STATUS")], &base.to_string()));
    assert!(st.success(), "STATUS: {out} {err}");
    assert_eq!(out, Value::Null);

    // VERSION.
    let (st, out, _) =
        blocking(|| ns.cni(&[("CNI_COMMAND", "VERSION")], "{\"cniVersion\":\"1.1.0\"}"));
    assert!(st.success());
    let sv: BTreeSet<&str> = out["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(sv, VERSIONS.into());

    // One pod per version; every result validates for the version asked.
    let subnet = node_subnet(&env, "n1").await;
    let mut pods = Vec::new();
    for (i, v) in VERSIONS.iter().enumerate() {
        let pod = PodNs::create(&env, "n1", &subnet, &format!("v{i}"), 20 + i as u32).await;
        let (path, args) = (pod.netns_path(), pod.cni_args());
        let conf = conf_with(&base, v, &[]);
        let (st, out, err) = blocking(|| ns.cni(&vars("ADD", &pod, &path, &args), &conf));
        assert!(st.success(), "ADD {v}: {out}\n{err}");
        if let Err(e) = validate_result(&out, v) {
            panic!("result for {v} does not follow the schema: {e}\n{out:#}");
        }
        assert_eq!(out["ips"][0]["address"], pod.cidr.as_str());
        assert_eq!(out["ips"][0]["gateway"], pod.gw.as_str());
        assert_eq!(out["interfaces"][1]["mac"], pod.mac.as_str());
        assert_eq!(out["interfaces"][1]["sandbox"], path.as_str());
        let host = out["interfaces"][0]["name"].as_str().unwrap().to_string();
        pods.push((pod, host, out));
    }
    // The validator itself rejects what a version does not define.
    let (_, _, r11) = &pods[4];
    assert!(validate_result(r11, "0.4.0").is_err());
    let (_, _, r03) = &pods[0];
    assert!(
        validate_result(
            &{
                let mut x = r03.clone();
                x["cniVersion"] = json!("1.0.0");
                x
            },
            "1.0.0"
        )
        .is_err()
    );

    // CHECK (0.4.0+) against the previous result of the same pod.
    let (pod, _, prev) = &pods[2];
    let (path, args) = (pod.netns_path(), pod.cni_args());
    let conf = conf_with(&base, "0.4.0", &[("prevResult", prev.clone())]);
    let (st, out, err) = blocking(|| ns.cni(&vars("CHECK", pod, &path, &args), &conf));
    assert!(st.success(), "CHECK: {out} {err}");

    // GC keeps the listed attachment and removes the others' ports and veths.
    let (keep, keep_host, _) = &pods[0];
    let gc_conf = conf_with(
        &base,
        "1.1.0",
        &[(
            "cni.dev/valid-attachments",
            json!([{"containerID": keep.container_id, "ifname": "eth0"}]),
        )],
    );
    let (st, out, err) = blocking(|| ns.cni(&[("CNI_COMMAND", "GC")], &gc_conf));
    assert!(st.success(), "GC: {out} {err}");
    let ports = ns.chassis.vsctl(&["list-ports", "br-int"]).unwrap();
    assert!(ports.lines().any(|l| l == keep_host), "{ports}");
    for (_, host, _) in &pods[1..] {
        assert!(
            !ports.lines().any(|l| l == host),
            "{host} survived GC: {ports}"
        );
        let o = ns
            .chassis
            .run_in_netns(&["ip", "link", "show", host])
            .unwrap();
        assert!(!o.status.success(), "veth {host} survived GC");
    }
    assert!(
        ports.lines().any(|l| l == "k8s-n1"),
        "GC must not touch the management port"
    );
    eprintln!("schema/status/gc test done in {:?}", t0.elapsed());
}

/// A plugin link in a private dir (removed on drop), run in the caller's netns: these cases
/// fail before the plugin touches OVS or the network.
struct Plugin(PathBuf);

impl Plugin {
    fn new() -> Plugin {
        let dir = std::env::temp_dir().join(format!("cni-bad-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ovn-k8s-cni-overlay");
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ovnkube"), &p).unwrap();
        Plugin(p)
    }

    fn run(&self, vars: &[(&str, &str)], stdin: &str) -> (Option<i32>, Value, String) {
        let mut cmd = Command::new(&self.0);
        for (k, _) in std::env::vars() {
            if k.starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(vars.iter().copied());
        let (st, out, err) = run_with_timeout(cmd, Some(stdin.as_bytes()), Duration::from_secs(30));
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {out:?} {err}"));
        (st.code(), v, err)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(d) = self.0.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u64, &'a str);

#[test]
fn bad_input_gives_cni_error_objects_and_exit_1() {
    let p = Plugin::new();
    let full = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/var/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=x"),
    ];
    let good = r#"{"cniVersion":"1.0.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay"}"#;
    // (what, env, stdin, expected code, text the message must contain)
    let cases: Vec<Case> = vec![
        ("malformed stdin", full.to_vec(), "{not json", 6, "decode"),
        ("no CNI_COMMAND", full[1..].to_vec(), good, 4, "environment"),
        (
            "ADD without CNI_NETNS",
            full.iter()
                .filter(|(k, _)| *k != "CNI_NETNS")
                .copied()
                .collect(),
            good,
            4,
            "environment",
        ),
        (
            "unknown command",
            [("CNI_COMMAND", "FROB")]
                .into_iter()
                .chain(full[1..].iter().copied())
                .collect(),
            good,
            4,
            "FROB",
        ),
        (
            "unsupported version",
            full.to_vec(),
            r#"{"cniVersion":"0.2.0","name":"ovn-kubernetes","type":"x"}"#,
            1,
            "incompatible",
        ),
        (
            "CHECK on 0.3.1",
            [("CNI_COMMAND", "CHECK")]
                .into_iter()
                .chain(full[1..].iter().copied())
                .collect(),
            r#"{"cniVersion":"0.3.1","name":"ovn-kubernetes","type":"x"}"#,
            1,
            "incompatible",
        ),
        (
            "invalid container id",
            [
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "-bad id"),
                ("CNI_IFNAME", "eth0"),
            ]
            .to_vec(),
            good,
            4,
            "CNI_CONTAINERID",
        ),
    ];
    let traversal = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/var/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../pods/kube-system/x",
        ),
    ];
    let traversal_ns = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/var/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=..;K8S_POD_NAME=x"),
    ];
    let huge = format!("{good}{}", " ".repeat(2 << 20));
    let endless_conf = r#"{"cniVersion":"1.0.0","name":"ovn-kubernetes","type":"ovn-k8s-cni-overlay","configFilePath":"/dev/zero"}"#;
    let cases: Vec<Case> = cases
        .into_iter()
        .chain([
            (
                "path traversal in K8S_POD_NAME",
                traversal.to_vec(),
                good,
                4,
                "K8S_POD_NAME",
            ),
            (
                "path traversal in K8S_POD_NAMESPACE",
                traversal_ns.to_vec(),
                good,
                4,
                "namespace",
            ),
            (
                "configFilePath /dev/zero",
                full.to_vec(),
                endless_conf,
                7,
                "larger than 1048576 bytes",
            ),
            (
                "stdin over 1 MiB",
                full.to_vec(),
                huge.as_str(),
                5,
                "larger than",
            ),
        ])
        .collect();
    for (what, vars, stdin, code, needle) in cases {
        let (status, out, err) = p.run(&vars, stdin);
        assert_eq!(status, Some(1), "{what}: {out} {err}");
        assert_eq!(out["code"], code, "{what}: {out}");
        assert!(out["cniVersion"].is_string(), "{what}: {out}");
        let text = format!("{} {}", out["msg"], out["details"]);
        assert!(
            out["msg"].is_string() && text.contains(needle),
            "{what}: {out}"
        );
        assert!(
            !err.is_empty(),
            "{what}: the error is also logged to stderr"
        );
    }
    // VERSION needs no config.
    let (status, out, _) = p.run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(status, Some(0));
    assert_eq!(out["cniVersion"], "1.1.0");
}

/// The chassis netns as the plugin sees it: link names and IPv4 routes.
fn host_state(ns: &NodeSide) -> (BTreeSet<String>, String) {
    let o = ns
        .chassis
        .run_in_netns(&["ip", "-j", "link", "show"])
        .unwrap();
    let links: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let names = links
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect();
    let r = ns
        .chassis
        .run_in_netns(&["ip", "-4", "route", "show"])
        .unwrap();
    (names, String::from_utf8_lossy(&r.stdout).into_owned())
}

fn link_exists(ns: &NodeSide, name: &str) -> bool {
    let o = ns
        .chassis
        .run_in_netns(&["ip", "link", "show", "dev", name])
        .unwrap();
    o.status.success()
}

/// Attacks through the CNI environment, each against a real chassis: the plugin's own netns
/// as CNI_NETNS, container ids that spell an existing host interface or share a prefix, and
/// a DEL for a name that a foreign interface already holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cni_environment_cannot_touch_the_host_or_other_pods() {
    let env = Env::start("cni-hostile").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let (st, log) = blocking(|| {
        ns.init_node(
            &ns.node_args(&env, "127.0.0.1"),
            &[],
            Duration::from_secs(90),
        )
    });
    assert!(st.success(), "{log}");
    let conf = conf_with(&ns.cni_conf(), "1.0.0", &[]);
    let subnet = node_subnet(&env, "n1").await;

    // 1. CNI_NETNS = the plugin's own namespace: refused, nothing on the host changes.
    let pod = PodNs::create(&env, "n1", &subnet, "selfns", 30).await;
    let before = host_state(&ns);
    let args = pod.cni_args();
    for netns in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
        let (st, out, err) = blocking(|| ns.cni(&vars("ADD", &pod, netns, &args), &conf));
        assert_eq!(st.code(), Some(1), "{netns}: {out} {err}");
        assert_eq!(out["code"], 4, "{netns}: {out}");
        assert!(
            out["msg"]
                .as_str()
                .unwrap()
                .contains("host's own network namespace"),
            "{out}"
        );
    }
    assert_eq!(host_state(&ns), before, "the host namespace was modified");

    // 2. A host interface named like the old prefix scheme (the container id's first 15
    //    characters) survives ADD and DEL of that container. (Foreign interfaces are veth
    //    pairs inside the chassis netns: the test machine may lack the dummy module.)
    blocking(|| {
        let o = ns
            .chassis
            .run_in_netns(&[
                "ip",
                "link",
                "add",
                "victimiface0123",
                "type",
                "veth",
                "peer",
                "name",
                "victimpeer",
            ])
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    });
    let mut v = PodNs::create(&env, "n1", &subnet, "victim", 31).await;
    v.container_id = format!("victimiface0123{}", "4".repeat(49));
    let (path, args) = (v.netns_path(), v.cni_args());
    let (st, out, err) = blocking(|| ns.cni(&vars("ADD", &v, &path, &args), &conf));
    assert!(st.success(), "ADD: {out} {err}");
    assert_ne!(out["interfaces"][0]["name"], "victimiface0123");
    let (st, out, err) = blocking(|| ns.cni(&vars("DEL", &v, &path, &args), &conf));
    assert!(st.success(), "DEL: {out} {err}");
    assert!(
        link_exists(&ns, "victimiface0123"),
        "DEL removed a foreign interface"
    );
    assert!(!link_exists(
        &ns,
        &ovnkube::cni::host_ifname(&v.container_id, "eth0")
    ));

    // 3. A foreign interface that already holds the name our scheme gives a container is
    //    not ours either: DEL (and a failing ADD's cleanup) leave it alone.
    let ghost = format!("ghost{}", "0".repeat(59));
    let ghost_if = ovnkube::cni::host_ifname(&ghost, "eth0");
    blocking(|| {
        let o = ns
            .chassis
            .run_in_netns(&[
                "ip",
                "link",
                "add",
                &ghost_if,
                "type",
                "veth",
                "peer",
                "name",
                "ghostpeer",
            ])
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    });
    let mut g = PodNs::create(&env, "n1", &subnet, "ghost", 32).await;
    g.container_id = ghost.clone();
    let (path, args) = (g.netns_path(), g.cni_args());
    let (st, out, _) = blocking(|| ns.cni(&vars("ADD", &g, &path, &args), &conf));
    assert_eq!(
        st.code(),
        Some(1),
        "ADD over a foreign interface must fail: {out}"
    );
    let (st, out, err) = blocking(|| ns.cni(&vars("DEL", &g, &path, &args), &conf));
    assert!(st.success(), "DEL: {out} {err}");
    assert!(
        link_exists(&ns, &ghost_if),
        "a foreign {ghost_if} was deleted"
    );

    // 4. Two containers whose ids share their first 15 (here 63) characters: both attach,
    //    reach each other, and deleting one leaves the other working.
    let prefix = "twin0123456789abcdef".repeat(4);
    let mut a = PodNs::create(&env, "n1", &subnet, "twina", 33).await;
    let mut b = PodNs::create(&env, "n1", &subnet, "twinb", 34).await;
    a.container_id = format!("{}a", &prefix[..63]);
    b.container_id = format!("{}b", &prefix[..63]);
    let mut hosts = Vec::new();
    for p in [&a, &b] {
        let (path, args) = (p.netns_path(), p.cni_args());
        let (st, out, err) = blocking(|| ns.cni(&vars("ADD", p, &path, &args), &conf));
        assert!(st.success(), "ADD {}: {out} {err}", p.name);
        hosts.push(out["interfaces"][0]["name"].as_str().unwrap().to_string());
    }
    assert_ne!(hosts[0], hosts[1]);
    blocking(|| {
        a.wait_ping(&b.ip, Duration::from_secs(60));
        b.wait_ping(&a.ip, Duration::from_secs(60));
    });
    let (path, args) = (a.netns_path(), a.cni_args());
    let (st, out, err) = blocking(|| ns.cni(&vars("DEL", &a, &path, &args), &conf));
    assert!(st.success(), "DEL a: {out} {err}");
    assert!(!link_exists(&ns, &hosts[0]));
    assert!(
        link_exists(&ns, &hosts[1]),
        "DEL of a removed b's interface"
    );
    blocking(|| b.wait_ping(&b.gw, Duration::from_secs(60)));
    let ports = ns.chassis.vsctl(&["list-ports", "br-int"]).unwrap();
    assert!(ports.lines().any(|l| l == hosts[1]), "{ports}");

    // 5. A pod attached by an older release (host name = the id's first 15 characters, OVS
    //    row stamped with the container id) is still torn down by DEL.
    let mut old = PodNs::create(&env, "n1", &subnet, "legacy", 35).await;
    old.container_id = format!("legacyattach{}", "7".repeat(52));
    let legacy_if = old.container_id[..15].to_string();
    blocking(|| {
        let o = ns
            .chassis
            .run_in_netns(&[
                "ip",
                "link",
                "add",
                &legacy_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &old.netns_path(),
            ])
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        ns.chassis
            .vsctl(&[
                "add-port",
                "br-int",
                &legacy_if,
                "--",
                "set",
                "Interface",
                &legacy_if,
                &format!("external_ids:sandbox={}", old.container_id),
            ])
            .unwrap();
    });
    let (path, args) = (old.netns_path(), old.cni_args());
    let (st, out, err) = blocking(|| ns.cni(&vars("DEL", &old, &path, &args), &conf));
    assert!(st.success(), "DEL legacy: {out} {err}");
    assert!(
        !link_exists(&ns, &legacy_if),
        "the legacy veth survived DEL"
    );
    let ports = ns.chassis.vsctl(&["list-ports", "br-int"]).unwrap();
    assert!(!ports.lines().any(|l| l == legacy_if), "{ports}");

    let _ = blocking(|| {
        ns.chassis
            .run_in_netns(&["ip", "link", "del", "victimiface0123"])
            .and_then(|_| ns.chassis.run_in_netns(&["ip", "link", "del", &ghost_if]))
    });
}
