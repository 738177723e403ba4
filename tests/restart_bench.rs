//! `make bench`: a master restart at scale. `RESTART_BENCH_NODES` nodes (50),
//! `RESTART_BENCH_PODS` pods (10,000), `RESTART_BENCH_SERVICES` services with 10 endpoints
//! each from EndpointSlices (1,000) and `RESTART_BENCH_POLICIES` network policies (500), all
//! served by a first master. Then two restarts: one with nothing changed (NB transactions the
//! new master writes until every controller's initial sync is done and 3 s after: target 0),
//! and one with a pod created right after the new master is spawned (time from the spawn to
//! its annotation: target 2 s, so new work must not wait behind the full resync).
//! `RESTART_BENCH_LOGLEVEL` (4) is the masters' `-loglevel`: 5 shows where a restart spends
//! its time.

mod common;

use std::time::{Duration, Instant};

use common::pods::{annotated_count, rss_kib};
use common::{Daemon, Env, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use kube_sandbox::SandboxConfig;
use serde_json::json;

const ENDPOINTS: usize = 10;
const SERVICE_CIDR: &str = "172.20.0.0/16";
/// The first master programs everything from scratch; that is not what is measured.
const SERVE_WAIT: Duration = Duration::from_secs(1800);
/// The initial sync lines of the three controllers whose NB state a restart re-checks.
const SYNCED: [&str; 3] = [
    "initial pod sync done",
    "initial service sync done",
    "initial policy sync done",
];

fn var(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Pod `i` on node `i % nodes`, labelled into one of `groups` policy groups.
fn pod(i: usize, nodes: usize, groups: usize) -> Pod {
    from(json!({
        "metadata": {"name": format!("p{i:05}"), "namespace": "default",
                     "labels": {"group": format!("g{}", i % groups.max(1))}},
        "spec": {"nodeName": format!("node{:03}", i % nodes),
                 "containers": [{"name": "c", "image": "x"}]}
    }))
}

/// Creates `items` with at most 32 requests in flight.
async fn create_all<K>(api: &Api<K>, items: Vec<K>)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(items.into_iter().map(|o| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &o)
                .await
                .unwrap_or_else(|e| panic!("creating {}: {e}", o.name_any()));
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
}

/// Every object of the scale, created before the first master starts (its initial sync
/// programs them in one pass).
async fn populate(env: &Env, nodes: usize, pods: usize, services: usize, policies: usize) {
    let names: Vec<String> = (0..nodes).map(|i| format!("node{i:03}")).collect();
    env.create_nodes(names.iter()).await;
    let pod_api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    create_all(
        &pod_api,
        (0..pods).map(|i| pod(i, nodes, policies)).collect(),
    )
    .await;
    let svc_api: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), "default");
    create_all(
        &svc_api,
        (0..services)
            .map(|i| {
                from(json!({
                    "metadata": {"name": format!("svc{i}"), "namespace": "default"},
                    "spec": {"type": "ClusterIP", "ports": [
                        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
                }))
            })
            .collect(),
    )
    .await;
    let slice_api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), "default");
    create_all(
        &slice_api,
        (0..services)
            .map(|i| {
                let eps: Vec<_> = (0..ENDPOINTS)
                    .map(|e| {
                        json!({"addresses": [format!("10.{}.{}.{}", 129 + i / 250, i % 250, e + 1)],
                               "conditions": {"ready": true}})
                    })
                    .collect();
                from(json!({
                    "metadata": {"name": format!("svc{i}-a"), "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
                    "addressType": "IPv4",
                    "endpoints": eps,
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
                }))
            })
            .collect(),
    )
    .await;
    let pol_api: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(env.client.clone(), "default");
    create_all(
        &pol_api,
        (0..policies)
            .map(|i| {
                from(json!({
                    "metadata": {"name": format!("np{i}"), "namespace": "default"},
                    "spec": {"podSelector": {"matchLabels": {"group": format!("g{i}")}},
                             "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"podSelector": {"matchLabels":
                                 {"group": format!("g{}", (i + 1) % policies)}}}]}]}
                }))
            })
            .collect(),
    )
    .await;
}

/// The NB database file's size, once it has not grown for `quiet` (the master is idle).
fn settled_nb_size(env: &Env, quiet: Duration) -> u64 {
    let db = env.central.dir().join("ovnnb_db.db");
    let size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let mut last = (size(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = size();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return now;
        }
    }
}

/// Transactions appended to the NB database file after byte `from` (each is one record).
fn nb_records_since(env: &Env, from: u64) -> usize {
    let db = env.central.dir().join("ovnnb_db.db");
    let bytes = std::fs::read(&db).unwrap_or_default();
    // Compaction rewrites the file smaller, and what was appended can no longer be told apart.
    assert!(
        bytes.len() as u64 >= from,
        "the NB database was compacted during the measurement; run again"
    );
    let tail = &bytes[from as usize..];
    String::from_utf8_lossy(tail).matches("OVSDB JSON ").count()
}

fn wait_synced(master: &mut Daemon) {
    for line in SYNCED {
        master.wait_log(line, SERVE_WAIT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_master_restart_at_scale() {
    let nodes = var("RESTART_BENCH_NODES", 50);
    let pods = var("RESTART_BENCH_PODS", 10_000);
    let services = var("RESTART_BENCH_SERVICES", 1_000);
    let policies = var("RESTART_BENCH_POLICIES", 500);
    let env = Env::start_with(
        "restart-bench",
        SandboxConfig {
            mirror_endpoints: false,
            service_cidr: SERVICE_CIDR.into(),
            // The first master's initial lists are older than the objects' history otherwise.
            history_limit: 100_000,
            ..SandboxConfig::default()
        },
    )
    .await;
    let args: Vec<String> = env
        .master_args_unix("10.0.0.0/9")
        .into_iter()
        .map(|a| {
            if a.starts_with("-service-cluster-ip-range=") {
                format!("-service-cluster-ip-range={SERVICE_CIDR}")
            } else if a.starts_with("-loglevel") {
                format!("-loglevel={}", var("RESTART_BENCH_LOGLEVEL", 4))
            } else {
                a
            }
        })
        .collect();
    let t = Instant::now();
    populate(&env, nodes, pods, services, policies).await;
    let created = t.elapsed();
    let t = Instant::now();
    let mut master = env.spawn("master-1", &args);
    wait_synced(&mut master);
    eventually("every pod annotated", SERVE_WAIT, || async {
        (annotated_count(&env).await >= pods).then_some(())
    })
    .await;
    let served = t.elapsed();
    let t = Instant::now();
    settled_nb_size(&env, Duration::from_secs(3));
    println!(
        "BENCH restart: {nodes} nodes, {pods} pods, {services} services x {ENDPOINTS} endpoints, \
         {policies} policies: created in {:.1}s, served by the first master in {:.1}s \
         (NB idle {:.1}s later)",
        created.as_secs_f64(),
        served.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // The count below sees writes: the first master's are all in the file.
    assert!(
        nb_records_since(&env, 0) > 0,
        "no NB transaction found in the file"
    );

    // 1. Nothing changed: the new master re-checks everything and writes nothing.
    assert_eq!(master.terminate().code(), Some(0));
    let before = settled_nb_size(&env, Duration::from_secs(1));
    let t = Instant::now();
    let mut master = env.spawn("master-2", &args);
    wait_synced(&mut master);
    let synced = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let writes = nb_records_since(&env, before);
    let rss = rss_kib(master.child.id());
    println!(
        "BENCH restart, nothing changed: every controller synced {:.2}s after the spawn; \
         {writes} NB transactions (target 0); master RSS {} MiB",
        synced.as_secs_f64(),
        rss / 1024
    );

    // 2. A new pod right after the spawn: served without waiting for the resync.
    assert_eq!(master.terminate().code(), Some(0));
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let t = Instant::now();
    let mut master = env.spawn("master-3", &args);
    let mut fresh = pod(pods, nodes, policies);
    fresh.metadata.name = Some("fresh".into());
    api.create(&PostParams::default(), &fresh).await.unwrap();
    let created_at = t.elapsed();
    let annotated_at = eventually("the new pod annotated", SERVE_WAIT, || async {
        let p = api.get("fresh").await.ok()?;
        p.annotations().contains_key("ovn").then(|| t.elapsed())
    })
    .await;
    wait_synced(&mut master);
    let synced = t.elapsed();
    println!(
        "BENCH restart + new pod: created {:.2}s after the spawn, annotated {:.2}s after the \
         spawn (target 2 s), every controller synced {:.2}s after the spawn; load: {}",
        created_at.as_secs_f64(),
        annotated_at.as_secs_f64(),
        synced.as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    assert_eq!(master.terminate().code(), Some(0));
    assert_eq!(
        writes, 0,
        "the restart with nothing changed wrote to the NB"
    );
}
