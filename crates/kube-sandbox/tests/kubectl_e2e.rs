//! Drives the real kubectl against the `kube-sandbox` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{ChildGuard, Kubectl, TempDir, spawn_sandbox_binary};
use serde_json::{Value, json};

fn setup() -> (common::SandboxProcess, Kubectl, TempDir) {
    let sb = spawn_sandbox_binary();
    let work = TempDir::new("kubectl");
    let k = Kubectl::new(&sb.kubeconfig, &work.path().join("cache"));
    (sb, k, work)
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn kubectl_pod_lifecycle() {
    let (_sb, k, dir) = setup();
    let pod = write(
        &dir,
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    ports: [{containerPort: 80}]\n",
    );
    assert!(k.run(&["create", "-f", &pod]).contains("pod/p1 created"));
    let again = k.try_run(&["create", "-f", &pod]);
    assert!(
        !again.ok && again.stderr.contains("AlreadyExists"),
        "{}",
        again.stderr
    );
    assert!(k.run(&["get", "pods"]).contains("p1"));
    let list = k.json(&["get", "pods"]);
    assert_eq!(list["items"][0]["metadata"]["name"], "p1");
    let p = k.json(&["get", "pod", "p1"]);
    assert_eq!(p["kind"], "Pod");
    assert_eq!(p["metadata"]["namespace"], "default");
    assert!(p["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        p["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    k.run(&["annotate", "pod", "p1", "ovn/x=1"]);
    k.run(&["label", "pod", "p1", "tier=front"]);
    k.run(&[
        "patch",
        "pod",
        "p1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    k.run(&[
        "patch",
        "pod",
        "p1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/annotations/a~1b","value":"2"}]"#,
    ]);
    // Default (strategic): containers merge by name, ports by containerPort.
    k.run(&["patch", "pod", "p1", "-p", r#"{"spec":{"containers":[{"name":"c","image":"nginx:2","ports":[{"containerPort":443}]}]}}"#]);
    let p = k.json(&["get", "pod", "p1"]);
    assert_eq!(
        p["metadata"]["annotations"],
        json!({"ovn/x": "1", "a/b": "2"})
    );
    assert_eq!(
        p["metadata"]["labels"],
        json!({"app": "web", "tier": "front", "m": "1"})
    );
    assert_eq!(p["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(
        p["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80}, {"containerPort": 443}])
    );
    assert_eq!(p["metadata"]["generation"], 2);

    // Label selectors through kubectl.
    assert!(
        k.run(&[
            "get",
            "pods",
            "-l",
            "tier in (front,back),app",
            "-o",
            "name"
        ])
        .contains("pod/p1")
    );
    assert!(
        !k.run(&["get", "pods", "-l", "tier!=front", "-o", "name"])
            .contains("pod/p1")
    );
    let bad = k.try_run(&["get", "pods", "-l", "tier in (", "-o", "name"]);
    assert!(!bad.ok);

    // Client-side apply: create, then update.
    let applied = write(
        &dir,
        "p2.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p2\n  annotations: {v: \"1\"}\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    assert!(k.run(&["apply", "-f", &applied]).contains("pod/p2 created"));
    std::fs::write(
        &applied,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p2\n  annotations: {v: \"2\"}\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    )
    .unwrap();
    assert!(
        k.run(&["apply", "-f", &applied])
            .contains("pod/p2 configured")
    );
    assert!(
        k.run(&["apply", "-f", &applied])
            .contains("pod/p2 unchanged")
    );
    let p2 = k.json(&["get", "pod", "p2"]);
    assert_eq!(p2["metadata"]["annotations"]["v"], "2");
    assert!(
        p2["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Server-side apply: create then update.
    let ssa = write(
        &dir,
        "p3.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p3","labels":{"v":"1"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#,
    );
    assert!(
        k.run(&["apply", "--server-side", "-f", &ssa])
            .contains("serverside-applied")
    );
    std::fs::write(&ssa, r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p3","labels":{"v":"2"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#).unwrap();
    k.run(&["apply", "--server-side", "-f", &ssa]);
    assert_eq!(
        k.json(&["get", "pod", "p3"])["metadata"]["labels"]["v"],
        "2"
    );

    assert!(k.run(&["delete", "pod", "p1"]).contains("deleted"));
    let gone = k.try_run(&["get", "pod", "p1"]);
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );
    let gone = k.try_run(&["delete", "pod", "p1"]);
    assert!(
        !gone.ok && gone.stderr.contains("not found"),
        "{}",
        gone.stderr
    );
    k.run(&["delete", "-f", &applied]);
    assert_eq!(
        k.json(&["get", "pods"])["items"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn kubectl_services_nodes_namespaces_netpols() {
    let (_sb, k, dir) = setup();
    // Namespaces, with a pod inside that goes away with the namespace.
    let ns = write(
        &dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
    );
    k.run(&["create", "-f", &ns]);
    let n = k.json(&["get", "namespace", "team-a"]);
    assert_eq!(n["status"]["phase"], "Active");
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    let pod = write(
        &dir,
        "pod.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"team-a"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#,
    );
    k.run(&["create", "-f", &pod]);
    let missing = k.try_run(&["create", "-f", &pod, "-n", "nope"]);
    assert!(!missing.ok);
    k.run(&["label", "ns", "team-a", "env=dev"]);
    assert!(
        k.run(&["get", "ns", "-l", "env=dev", "-o", "name"])
            .contains("namespace/team-a")
    );
    k.run(&["delete", "ns", "team-a"]);
    assert!(!k.try_run(&["get", "pod", "p", "-n", "team-a"]).ok);
    let forbidden = k.try_run(&["delete", "ns", "default"]);
    assert!(
        !forbidden.ok && forbidden.stderr.contains("Forbidden"),
        "{}",
        forbidden.stderr
    );

    // Services: cluster IP and node ports allocated, defaults filled.
    let svc = write(
        &dir,
        "svc.json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"type":"NodePort","selector":{"app":"web"},"ports":[{"name":"http","port":80}]}}"#,
    );
    k.run(&["create", "-f", &svc]);
    let s = k.json(&["get", "svc", "web"]);
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    let np = s["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np));
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    k.run(&["annotate", "svc", "web", "x=y"]);
    k.run(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"port":80,"targetPort":8080}]}}"#,
    ]);
    let s2 = k.json(&["get", "svc", "web"]);
    assert_eq!(s2["spec"]["clusterIP"], s["spec"]["clusterIP"]);
    assert_eq!(s2["spec"]["ports"][0]["nodePort"], np);
    assert_eq!(s2["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(s2["spec"]["ports"][0]["name"], "http");
    let svc2 = write(
        &dir,
        "svc2.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  selector: {app: api}\n  ports:\n  - port: 443\n",
    );
    k.run(&["apply", "-f", &svc2]);
    k.run(&["apply", "-f", &svc2]);
    k.run(&["apply", "--server-side", "-f", &svc2]);
    assert_ne!(
        k.json(&["get", "svc", "api"])["spec"]["clusterIP"],
        s["spec"]["clusterIP"]
    );
    k.run(&["delete", "svc", "web", "api"]);

    // Nodes (cluster-scoped).
    let node = write(
        &dir,
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {zone: a}\n",
    );
    k.run(&["create", "-f", &node]);
    k.run(&[
        "annotate",
        "node",
        "node1",
        "k8s.ovn.org/node-subnets={\"default\":\"10.244.0.0/24\"}",
    ]);
    k.run(&["label", "node", "node1", "zone=b", "--overwrite"]);
    k.run(&[
        "patch",
        "node",
        "node1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/podCIDR","value":"10.244.0.0/24"}]"#,
    ]);
    let nd = k.json(&["get", "node", "node1"]);
    assert!(nd["metadata"].get("namespace").is_none());
    assert_eq!(nd["metadata"]["labels"]["zone"], "b");
    assert_eq!(nd["spec"]["podCIDR"], "10.244.0.0/24");
    assert!(
        k.run(&["get", "nodes", "-o", "name"])
            .contains("node/node1")
    );
    k.run(&["apply", "--server-side", "-f", &node]);
    k.run(&["delete", "node", "node1"]);
    assert!(
        k.json(&["get", "nodes"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Network policies: apply twice, json patch, server-side apply, delete.
    let netpol = write(
        &dir,
        "np.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: 80}]\n",
    );
    assert!(k.run(&["apply", "-f", &netpol]).contains("created"));
    std::fs::write(
        &netpol,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: 81}]\n",
    )
    .unwrap();
    assert!(k.run(&["apply", "-f", &netpol]).contains("configured"));
    let p = k.json(&["get", "networkpolicy", "deny"]);
    assert_eq!(p["spec"]["ingress"], json!([{"ports": [{"port": 81}]}]));
    k.run(&[
        "patch",
        "netpol",
        "deny",
        "--type=merge",
        "-p",
        r#"{"spec":{"policyTypes":["Ingress"]}}"#,
    ]);
    k.run(&[
        "patch",
        "netpol",
        "deny",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/podSelector","value":{}}]"#,
    ]);
    let p = k.json(&["get", "netpol", "deny"]);
    assert_eq!(p["spec"]["podSelector"], json!({}));
    assert_eq!(p["spec"]["policyTypes"], json!(["Ingress"]));
    let ssa = write(
        &dir,
        "np2.json",
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"allow"},"spec":{"podSelector":{}}}"#,
    );
    k.run(&["apply", "--server-side", "-f", &ssa]);
    let all: Value = k.json(&["get", "networkpolicies"]);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    k.run(&["delete", "netpol", "deny", "allow"]);
}

/// kubectl's generators send protobuf bodies (`application/vnd.kubernetes.protobuf`).
#[test]
fn kubectl_generators_send_protobuf() {
    let (_sb, k, _dir) = setup();
    assert!(
        k.run(&["create", "namespace", "foo"])
            .contains("namespace/foo created")
    );
    let n = k.json(&["get", "ns", "foo"]);
    assert_eq!(n["metadata"]["name"], "foo");
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "foo"
    );
    assert_eq!(n["status"]["phase"], "Active");
    let again = k.try_run(&["create", "namespace", "foo"]);
    assert!(
        !again.ok && again.stderr.contains("AlreadyExists"),
        "{}",
        again.stderr
    );
    let dry = k.run(&["create", "ns", "bar", "--dry-run=server", "-o", "name"]);
    assert!(dry.contains("namespace/bar"), "{dry}");
    assert!(!k.try_run(&["get", "ns", "bar"]).ok);

    assert!(
        k.run(&[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            "foo"
        ])
        .contains("service/web created")
    );
    let s = k.json(&["get", "svc", "web", "-n", "foo"]);
    assert_eq!(s["metadata"]["namespace"], "foo");
    assert_eq!(s["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );

    assert!(
        k.run(&[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:8080",
            "--tcp=443"
        ])
        .contains("service/np created")
    );
    let s = k.json(&["get", "svc", "np"]);
    assert_eq!(s["metadata"]["labels"], json!({"app": "np"}));
    assert_eq!(s["spec"]["type"], "NodePort");
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    let ports = s["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    for (p, (port, target)) in ports.iter().zip([(80, 8080), (443, 443)]) {
        assert_eq!(p["port"], port);
        assert_eq!(p["targetPort"], target);
        assert_eq!(p["protocol"], "TCP");
        let np = p["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&np), "{p}");
    }
    assert_ne!(ports[0]["nodePort"], ports[1]["nodePort"]);

    let ext = k.run(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=db.example.com",
    ]);
    assert!(ext.contains("service/ext created"), "{ext}");
    let s = k.json(&["get", "svc", "ext"]);
    assert_eq!(s["spec"]["type"], "ExternalName");
    assert_eq!(s["spec"]["externalName"], "db.example.com");
}

#[test]
fn kubectl_get_watch_sees_new_objects() {
    let (_sb, k, _dir) = setup();
    k.run(&["get", "pods"]); // warm the discovery cache
    let mut child = k
        .command(&["get", "pods", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give the watch time to start, then create.
    std::thread::sleep(Duration::from_millis(700));
    k.run(&["run", "w1", "--image=busybox", "--restart=Never"]);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no watch output");
    assert_eq!(line.trim(), "pod/w1");
    k.run(&["label", "pod", "w1", "x=y"]);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no watch output for update");
    assert_eq!(line.trim(), "pod/w1");
    drop(guard);
}

#[test]
fn binary_exits_cleanly_on_sigterm() {
    let mut sb = spawn_sandbox_binary();
    let kc = std::fs::read_to_string(&sb.kubeconfig).unwrap();
    assert!(kc.contains(&format!("server: {}", sb.url)) && kc.contains("current-context: sandbox"));
    let pid = sb.guard.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut child = sb.guard.0.take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kube-sandbox did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
