//! The operator's surface of a running ovnkube: `/metrics` scraped over HTTP and parsed by the
//! Prometheus project's OpenMetrics parser, `/healthz` and `/readyz`, a rotated token file, and
//! the dist/k8s ClusterRole checked against every API call the roles and the CNI plugin made.

mod common;
mod k8sdist;
mod nodebed;

use std::collections::BTreeMap;
use std::io::Write;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, Env, eventually, free_port, http_get};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use nodebed::{CLUSTER_SUBNET, NodeSide, SERVICE_CIDR, create_node};
use ovn_testbed::{Chassis, ChassisOpts};

const WAIT: Duration = Duration::from_secs(90);

/// Samples by `name{labels}` as the Prometheus project's OpenMetrics parser reads `text`
/// (python3-prometheus-client, strict: any format error fails the test).
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with python3-prometheus-client) is needed to parse /metrics");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    parse_openmetrics(&body)
}

fn master_args(env: &Env, extra: &[String]) -> Vec<String> {
    let cfg = env.dir.join("empty.conf");
    std::fs::write(&cfg, "# flags only\n").unwrap();
    let mut a = vec![
        "-net-controller".to_string(),
        "-init-master=master".into(),
        format!("-cluster-subnet={CLUSTER_SUBNET}"),
        format!("-service-cluster-ip-range={SERVICE_CIDR}"),
        format!("-nb-address={}", env.central.nb_db()),
        format!("-sb-address={}", env.central.sb_db()),
        "-loglevel=5".into(),
        format!("-config-file={}", cfg.display()),
    ];
    a.extend(extra.iter().cloned());
    a
}

fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("pause".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create_pod_and_wait_annotation(client: &kube::Client, name: &str, node: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &pod(name, node))
        .await
        .unwrap();
    eventually(&format!("pod {name} annotated"), WAIT, || async {
        let p = api.get(name).await.ok()?;
        p.metadata.annotations?.get("ovn").cloned()
    })
    .await
}

/// `Some(status and log)` once the daemon has exited.
fn exit_report(daemon: &mut Daemon) -> Option<String> {
    let st = daemon.child.try_wait().ok().flatten()?;
    Some(format!("({st}):\n{}", daemon.log_text()))
}

async fn wait_ready(port: u16, daemon: &mut Daemon) -> String {
    eventually("/readyz 200", WAIT, || {
        let exited = exit_report(daemon);
        async move {
            if let Some(e) = exited {
                panic!("ovnkube exited {e}");
            }
            match http_get(port, "/readyz") {
                Some((200, body)) => Some(body),
                _ => None,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_over_http_parse_and_count_pod_creation_latency() {
    let env = Env::start("metrics").await;
    let port = free_port();
    let mut args = master_args(&env, &[format!("-metrics-bind-address=127.0.0.1:{port}")]);
    args.insert(0, format!("-k8s-kubeconfig={}", env.kubeconfig.display()));
    let mut master = env.spawn("master", &args);

    // Before the initial sync the listener may answer 503 on /readyz; once synced it is 200
    // and names every role.
    env.create_nodes(["n1"]).await;
    let ready = wait_ready(port, &mut master).await;
    for role in [
        "master: ready",
        "pods: ready",
        "network policies: ready",
        "services: ready",
    ] {
        assert!(ready.contains(role), "{ready}");
    }
    let (code, health) = http_get(port, "/healthz").unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    // The node switch exists once the master processed n1; then a pod is served.
    eventually("node switch n1", WAIT, || async {
        env.nb_rows("Logical_Switch")
            .contains_key("n1")
            .then_some(())
    })
    .await;
    let before = scrape(port);
    let count = "ovnkube_master_pod_creation_latency_seconds_count";
    assert_eq!(before.get(count), Some(&0.0), "{before:#?}");
    assert_eq!(before.get("ovnkube_master_leader"), Some(&1.0));
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("ovnkube_master_build_info{")
                && k.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && k.contains("rustc=\"rustc ")),
        "{before:#?}"
    );
    assert!(before["ovnkube_master_ready_duration_seconds"] > 0.0);
    for r in [
        "pods",
        "nodes",
        "services",
        "endpointslices",
        "networkpolicies",
        "namespaces",
    ] {
        let k = format!("ovnkube_master_sync_duration_seconds{{resource_name=\"{r}\"}}");
        assert!(before.contains_key(&k), "{k} missing: {before:#?}");
    }
    assert_eq!(
        before.get("ovnkube_master_watched_objects{resource_name=\"nodes\"}"),
        Some(&1.0)
    );
    // The master's topology was written through the metered NB backend.
    let txns = "ovnkube_nb_transaction_duration_seconds_count{result=\"ok\"}";
    assert!(
        before.get(txns).copied().unwrap_or(0.0) >= 1.0,
        "{before:#?}"
    );
    assert!(before.contains_key("ovnkube_nb_disconnects_total"));

    create_pod_and_wait_annotation(&env.client, "p1", "n1").await;
    let after = eventually("the latency histogram to count the pod", WAIT, || async {
        let m = scrape(port);
        (m.get(count) == Some(&1.0)).then_some(m)
    })
    .await;
    let sum = after["ovnkube_master_pod_creation_latency_seconds_sum"];
    assert!((0.0..60.0).contains(&sum), "latency {sum}");
    // The +Inf bucket holds every observation; the buckets are cumulative.
    assert_eq!(
        after.get("ovnkube_master_pod_creation_latency_seconds_bucket{le=\"+Inf\"}"),
        Some(&1.0)
    );
    assert!(
        after[txns] > before[txns],
        "the pod's port was an NB transaction"
    );
    assert_eq!(
        after.get("ovnkube_master_watched_objects{resource_name=\"pods\"}"),
        Some(&1.0)
    );
    // The master counts NB rows (the pod's port is a Logical_Switch_Port).
    eventually("NB row counts", WAIT, || async {
        let m = scrape(port);
        let lsp = m.get("ovnkube_master_nb_objects{table=\"Logical_Switch_Port\"}")?;
        (*lsp >= 1.0 && m.contains_key("ovnkube_master_nb_objects{table=\"ACL\"}")).then_some(())
    })
    .await;

    // Losing the NB connection is counted; the process stays alive and ready.
    let mut env = env;
    env.central.stop_nb();
    let disconnects = "ovnkube_nb_disconnects_total";
    eventually("the NB disconnect to be counted", WAIT, || async {
        (scrape(port).get(disconnects).copied().unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    env.central.start_nb().unwrap();
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    assert!(master.terminate().success());
}

/// A client of the test itself, with a token the sandbox always accepts.
fn admin_client(env: &Env) -> kube::Client {
    let url: http::Uri = env.sandbox.url().parse().unwrap();
    let mut c = kube::Config::new(url);
    c.auth_info = serde_json::from_value(serde_json::json!({"token": "test-admin"})).unwrap();
    kube::Client::try_from(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let env = Env::start("token-rotation").await;
    let token = env.dir.join("token");
    // With a trailing newline, as `echo $TOKEN > file` writes it.
    std::fs::write(&token, "token-one\n").unwrap();
    env.sandbox.require_tokens(&["test-admin", "token-one"]);
    let admin = admin_client(&env);
    let args = master_args(
        &env,
        &[
            format!("-k8s-apiserver={}", env.sandbox.url()),
            format!("-k8s-token-file={}", token.display()),
        ],
    );
    let mut master = env.spawn("master", &args);
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some("n1".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    create_pod_and_wait_annotation(&admin, "p1", "n1").await;
    assert_eq!(env.sandbox.rejected_requests(), 0);

    // Rotate: the file gets a new token and the old one stops working at once, as when the
    // kubelet replaces a projected token and the old one expires.
    let tmp = env.dir.join("token.new");
    std::fs::write(&tmp, "token-two\n").unwrap();
    std::fs::rename(&tmp, &token).unwrap();
    env.sandbox.require_tokens(&["test-admin", "token-two"]);
    // Annotating the new pod needs a request made with the new token.
    let api: Api<Pod> = Api::namespaced(admin.clone(), "default");
    api.create(&PostParams::default(), &pod("p2", "n1"))
        .await
        .unwrap();
    eventually(
        "p2 annotated with the rotated token",
        Duration::from_secs(180),
        || {
            let exited = exit_report(&mut master);
            let api = &api;
            async move {
                if let Some(e) = exited {
                    panic!("ovnkube exited {e}");
                }
                let p = api.get("p2").await.ok()?;
                p.metadata.annotations?.get("ovn").cloned()
            }
        },
    )
    .await;
    let log = master.log_text();
    assert!(
        !log.contains("token-one") && !log.contains("token-two"),
        "a token was logged"
    );
    assert!(master.terminate().success());
}

/// Runs `ovnkube` inside the chassis netns as a long-running process (killed on drop).
fn spawn_in_chassis(ns: &NodeSide, args: &[String], envs: &[(&str, &str)]) -> Daemon {
    let log = ns.dir.join("node.log");
    let mut argv = vec![env!("CARGO_BIN_EXE_ovnkube").to_string()];
    argv.extend(args.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut cmd = ns.chassis.command(&argv).unwrap();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon { child, log }
}

/// GET inside the chassis netns (the node agent's loopback listener lives there).
fn http_get_in_chassis(ns: &NodeSide, port: u16, path: &str) -> Option<(u16, String)> {
    let script = format!(
        "import urllib.request, urllib.error, sys\n\
         try:\n    r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=10)\n    code, body = r.status, r.read()\n\
         except urllib.error.HTTPError as e:\n    code, body = e.code, e.read()\n\
         sys.stdout.write(str(code) + '\\n' + body.decode())\n"
    );
    let out = ns
        .chassis
        .command(&["/usr/bin/python3", "-c", &script])
        .ok()?
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (code, body) = text.split_once('\n')?;
    Some((code.parse().ok()?, body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_role_covers_every_api_call_of_every_role_and_the_cni_plugin() {
    let env = Env::start("rbac").await;
    let mut args = master_args(&env, &[]);
    args.insert(0, format!("-k8s-kubeconfig={}", env.kubeconfig.display()));
    let _master = env.spawn("master", &args);
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);

    // The node agent stays running (-nodeport), serves metrics in its netns and receives the
    // plugin's request durations on a socket in the test's directory.
    let sock = ns.dir.join("cni-metrics.sock");
    let sock_s = sock.display().to_string();
    let metrics_port = free_port();
    let mut node_args = ns.node_args(&env, "127.0.0.1");
    node_args.push("-nodeport".into());
    node_args.push(format!("-metrics-bind-address=127.0.0.1:{metrics_port}"));
    let sock_env = [(ovnkube::metrics::CNI_METRICS_SOCKET_ENV, sock_s.as_str())];
    let mut node = spawn_in_chassis(&ns, &node_args, &sock_env);
    eventually("node ready", WAIT, || {
        let exited = exit_report(&mut node);
        let ns = &ns;
        async move {
            if let Some(e) = exited {
                panic!("node agent exited {e}");
            }
            let r =
                tokio::task::block_in_place(|| http_get_in_chassis(ns, metrics_port, "/readyz"));
            matches!(r, Some((200, ref b)) if b.contains("node: ready")).then_some(())
        }
    })
    .await;
    assert!(
        Path::new(&sock).exists(),
        "the node agent listens on {sock_s}"
    );

    // A pod the net-controller annotates, wired by the plugin as a runtime would.
    create_pod_and_wait_annotation(&env.client, "p1", "n1").await;
    let netns = ovn_testbed::netns_name("rbac-p1");
    assert!(
        Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap()
            .success()
    );
    struct DelNs(String);
    impl Drop for DelNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = DelNs(netns.clone());
    let path = format!("/var/run/netns/{netns}");
    let conf = ns.cni_conf().to_string();
    let cni_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;\
                    K8S_POD_INFRA_CONTAINER_ID=rbac-p1-container";
    for cmd in ["ADD", "DEL"] {
        let mut vars = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "rbac-p1-container"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", cni_args),
        ];
        vars.extend(sock_env);
        let (st, out, err) = tokio::task::block_in_place(|| ns.cni(&vars, &conf));
        assert!(st.success(), "{cmd}: {out}\n{err}");
    }
    // The plugin's two requests reached the node agent's histogram.
    let m = eventually("CNI durations on the node's /metrics", WAIT, || async {
        let (code, body) =
            tokio::task::block_in_place(|| http_get_in_chassis(&ns, metrics_port, "/metrics"))?;
        assert_eq!(code, 200);
        let m = parse_openmetrics(&body);
        let n = |c: &str| {
            m.get(&format!(
                "ovnkube_node_cni_request_duration_seconds_count{{command=\"{c}\"}}"
            ))
            .copied()
        };
        (n("ADD") == Some(1.0) && n("DEL") == Some(1.0)).then_some(m)
    })
    .await;
    assert!(m["ovnkube_node_cni_request_duration_seconds_sum{command=\"ADD\"}"] > 0.0);

    // A pod ovnkube cannot serve (an unusable annotation) makes it post an Event.
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let mut bad = pod("bad", "n1");
    bad.metadata.annotations = Some([("ovn".to_string(), "not json".to_string())].into());
    api.create(&PostParams::default(), &bad).await.unwrap();
    eventually("an Event about the bad pod", WAIT, || async {
        let calls = env.sandbox.api_calls();
        calls
            .iter()
            .any(|c| c.verb == "create" && c.resource == "events")
            .then_some(())
    })
    .await;

    // Every (verb, group, resource) the sandbox served to ovnkube is granted by the role.
    // The test's own creates are not ovnkube's and are left out (its reads of pods and nodes
    // are calls ovnkube makes too, so they stay in).
    let test_calls = [("create", "", "nodes"), ("create", "", "pods")];
    let role = k8sdist::cluster_role();
    let calls = env.sandbox.api_calls();
    eprintln!("API calls served during the run:");
    for c in &calls {
        eprintln!("  {} {}/{}", c.verb, c.group, c.resource);
    }
    let mut missing = Vec::new();
    for c in &calls {
        let own = test_calls
            .iter()
            .any(|(v, g, r)| *v == c.verb && *g == c.group && *r == c.resource);
        if !own && !k8sdist::allows(&role, &c.verb, &c.group, &c.resource) {
            missing.push(format!("{} {}/{}", c.verb, c.group, c.resource));
        }
    }
    assert!(
        missing.is_empty(),
        "dist/k8s/01-rbac.yaml does not allow: {missing:?}"
    );
    // The run did exercise each role's calls (so the check above had something to check).
    for (verb, resource) in [
        ("watch", "nodes"),
        ("patch", "nodes"),
        ("watch", "pods"),
        ("patch", "pods"),
        ("watch", "services"),
        ("watch", "endpointslices"),
        ("watch", "namespaces"),
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.verb == verb && c.resource == resource),
            "no {verb} {resource} seen: {calls:?}"
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.verb == "watch" && c.resource == "networkpolicies")
    );
    let _ = node.terminate();
}

#[test]
fn the_openmetrics_parser_really_rejects_bad_text() {
    // The parser is strict: a missing "# EOF" is an error. If this failed, the scrape tests
    // above would prove nothing.
    let ok = parse_openmetrics("# TYPE a gauge\na 1\n# EOF\n");
    assert_eq!(ok.get("a"), Some(&1.0));
    let st = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nlist(p('# TYPE a gauge\\na 1\\n'))",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_and_cni_plugin_authenticate_with_the_token_file() {
    let env = Env::start("node-token-file").await;
    // The master keeps its kubeconfig's token; the node and the plugin only have the file.
    env.sandbox
        .require_tokens(&["test-admin", "sandbox-dummy-token", "tok-5f3a9c"]);
    let admin = admin_client(&env);
    let mut args = master_args(&env, &[]);
    args.insert(0, format!("-k8s-kubeconfig={}", env.kubeconfig.display()));
    let _master = env.spawn("master", &args);
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes
        .create(
            &PostParams::default(),
            &Node {
                metadata: ObjectMeta {
                    name: Some("n1".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let token = ns.dir.join("token");
    std::fs::write(&token, "tok-5f3a9c\n").unwrap();
    let node_args: Vec<String> = ns
        .node_args(&env, "127.0.0.1")
        .into_iter()
        .filter(|a| !a.starts_with("-k8s-kubeconfig="))
        .chain([
            format!("-k8s-apiserver={}", ns.fwd.http_url()),
            format!("-k8s-token-file={}", token.display()),
        ])
        .collect();
    let (st, log) =
        tokio::task::block_in_place(|| ns.init_node(&node_args, &[], Duration::from_secs(90)));
    assert!(st.success(), "{log}");
    assert!(!log.contains("tok-5f3a9c"), "the token was logged");

    // The plugin finds the API server and the token file in OVS and reads the pod with it.
    create_pod_and_wait_annotation(&admin, "p1", "n1").await;
    let netns = ovn_testbed::netns_name("tokf-p1");
    assert!(
        Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap()
            .success()
    );
    struct DelNs(String);
    impl Drop for DelNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = DelNs(netns.clone());
    let path = format!("/var/run/netns/{netns}");
    let conf = ns.cni_conf().to_string();
    let rejected_before = env.sandbox.rejected_requests();
    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "tokf-p1-container"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=tokf-p1-container",
        ),
    ];
    let (st, out, err) = tokio::task::block_in_place(|| ns.cni(&vars, &conf));
    assert!(st.success(), "ADD: {out}\n{err}");
    assert_eq!(env.sandbox.rejected_requests(), rejected_before);
}
