//! The master's memory after a pod storm: one shared watch per kind, trimmed objects. Pods are
//! created the way a real cluster holds them (the `kubectl apply` annotation, volumes,
//! environment, a status; field ownership too, although the API stand-in drops
//! `managedFields`, so that part of the saving is not measured here), the master with
//! `-net-controller` serves all of them, and its resident set size is read from /proc.
//!
//! Also a plain correctness check that runs by default: every controller that shares the pod
//! and node watches still does its job (annotations for pods that existed before the master
//! started and for pods created after).

mod common;

use std::time::Duration;

use common::pods::annotated_count;
use common::{Env, eventually};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Pod, PodCondition, PodSpec, PodStatus, Volume, VolumeMount,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

const WAIT: Duration = Duration::from_secs(120);

/// A pod as a real cluster holds it: most of its bytes are things no controller reads.
fn realistic_pod(name: &str, node: &str) -> Pod {
    let fields: serde_json::Value = serde_json::json!({
        "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                        "f:labels": {".": {}, "f:app": {}}},
        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
            ".": {}, "f:env": {".": {}, "k:{\"name\":\"VAR0\"}": {".": {}, "f:name": {}, "f:value": {}}},
            "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {".": {}},
            "f:resources": {}, "f:terminationMessagePath": {}, "f:volumeMounts": {".": {}}}},
            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
            "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {},
            "f:volumes": {".": {}}}
    });
    let managed = (0..3)
        .map(|i| {
            let manager = ["kubectl-client-side-apply", "kube-scheduler", "kubelet"][i];
            serde_json::from_value(serde_json::json!({
                "manager": manager,
                "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            }))
            .unwrap()
        })
        .collect();
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/team/app:1.2.3"}]}})
    .to_string();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            annotations: Some(
                [(
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    applied,
                )]
                .into(),
            ),
            managed_fields: Some(managed),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            volumes: Some(
                (0..3)
                    .map(|i| Volume {
                        name: format!("vol{i}"),
                        ..Default::default()
                    })
                    .collect(),
            ),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/team/app:1.2.3".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                env: Some(
                    (0..10)
                        .map(|i| EnvVar {
                            name: format!("VAR{i}"),
                            value: Some(format!("value-of-variable-{i}-for-the-application")),
                            ..Default::default()
                        })
                        .collect(),
                ),
                volume_mounts: Some(
                    (0..3)
                        .map(|i| VolumeMount {
                            name: format!("vol{i}"),
                            mount_path: format!("/var/run/app/vol{i}"),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(
                ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
                    .iter()
                    .map(|t| PodCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

async fn create(env: &Env, names: &[String], nodes: &[String]) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, n) in names.iter().enumerate() {
        let (api, slots) = (api.clone(), slots.clone());
        let p = realistic_pod(n, &nodes[i % nodes.len()]);
        tasks.spawn(async move {
            let _s = slots.acquire().await.unwrap();
            api.create(&PostParams::default(), &p).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The master under test; `OVNKUBE_BIN` runs another build of it (to compare two builds on the
/// same storm), the one of this checkout otherwise.
fn spawn_master(env: &Env) -> common::Daemon {
    let Ok(bin) = std::env::var("OVNKUBE_BIN") else {
        return env.spawn("master", &env.master_args_unix("10.9.0.0/16"));
    };
    let log = env.dir.join("master.log");
    let mut args = env.master_args_unix("10.9.0.0/16");
    args.push(format!("-logfile={}", log.display()));
    let child = std::process::Command::new(bin)
        .env("OVN_RUNDIR", env.central.ovn_rundir())
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn OVNKUBE_BIN");
    common::Daemon { child, log }
}

async fn storm(name: &str, before: usize, after: usize) -> (Env, common::Daemon) {
    let env = Env::start(name).await;
    let nodes: Vec<String> = (0..20).map(|i| format!("node{i:02}")).collect();
    env.create_nodes(&nodes).await;
    let early: Vec<String> = (0..before).map(|i| format!("early{i:05}")).collect();
    create(&env, &early, &nodes).await;
    let mut master = spawn_master(&env);
    master.wait_log("initial pod sync done", WAIT);
    let late: Vec<String> = (0..after).map(|i| format!("late{i:05}")).collect();
    create(&env, &late, &nodes).await;
    let total = before + after;
    eventually("every pod annotated", Duration::from_secs(900), || async {
        (annotated_count(&env).await == total).then_some(())
    })
    .await;
    (env, master)
}

/// Pods that existed before the master started and pods created after are all served while
/// the pods, policy and master controllers share one pod watch and one node watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_sharing_watches_serve_early_and_late_pods() {
    let (env, mut master) = storm("shared-watch", 30, 30).await;
    // One watch per kind although three controllers follow nodes and two follow pods.
    let log = master.log_text();
    let started = |kind: &str| {
        log.lines()
            .filter(|l| l.contains("shared watch started") && l.contains(&format!("kind={kind}")))
            .count()
    };
    assert_eq!((started("Pod"), started("Node")), (1, 1), "{log}");
    assert!(!log.contains("shared watch ended"), "{log}");
    let ports = env.nb_table("Logical_Switch_Port");
    let pod_ports = ports
        .iter()
        .filter(|r| r.str("name").starts_with("default_"))
        .count();
    assert_eq!(pod_ports, 60);
    master.terminate();
}

/// `POD_STORM` pods (default 5,000) over 20 nodes; prints the master's RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, prints the master's RSS after a pod storm"]
async fn bench_master_rss_after_pod_storm() {
    let n: usize = std::env::var("POD_STORM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (_env, mut master) = storm("rss-storm", 0, n).await;
    let idle = rss_kib(master.child.id());
    // Let queued work drain so the number is the steady state, not a burst.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = rss_kib(master.child.id());
    println!("BENCH master RSS after {n} pods: {idle} KiB (settled {settled} KiB)");
    master.terminate();
}
