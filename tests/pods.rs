//! `-net-controller` pods end to end: the real binary (master + net-controller, as the guide
//! runs them), a real NB/SB/northd, the Kubernetes API stand-in. Checks pod annotations, the
//! logical ports in NB, and `ovn-trace` through the cluster router.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pods::{
    WAIT, annotations, bench_args, check_served, measure_pod_latency, pod, pod_ports,
    wait_annotated, wait_nodes_ready,
};
use common::{Env, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

async fn create_pods(env: &Env, pods: impl IntoIterator<Item = Pod>) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for p in pods {
        api.create(&PostParams::default(), &p).await.unwrap();
    }
}

async fn delete_pods(env: &Env, names: &[String]) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for n in names {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
}

/// Counts, per pod, how often its `ovn` annotation changed (as seen through a watch).
struct AnnotationWrites {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AnnotationWrites {
    fn start(env: &Env) -> AnnotationWrites {
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut last: HashMap<String, Option<String>> = HashMap::new();
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                let pods = match ev {
                    Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                    _ => continue,
                };
                for p in pods {
                    let v = p.annotations().get("ovn").cloned();
                    let prev = last.insert(p.name_any(), v.clone());
                    if v.is_some() && prev.flatten() != v {
                        *c.lock().unwrap().entry(p.name_any()).or_insert(0) += 1;
                    }
                }
            }
        });
        AnnotationWrites { counts, task }
    }

    fn get(&self) -> HashMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for AnnotationWrites {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pods_trace_delete_and_reuse() {
    let env = Env::start("pods100").await;
    let mut master = env.spawn("master", &env.master_args("10.5.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1", "n2"]).await;
    let subs = wait_nodes_ready(&env, &["n1", "n2"]).await;

    let names: Vec<String> = (0..50)
        .flat_map(|i| [format!("a{i:02}"), format!("b{i:02}")])
        .collect();
    let node_of = |n: &str| if n.starts_with('a') { "n1" } else { "n2" }.to_string();
    create_pods(
        &env,
        names.iter().map(|n| pod(n, Some(&node_of(n)), false, None)),
    )
    .await;
    let t0 = std::time::Instant::now();
    let anns = wait_annotated(&env, &names).await;
    eprintln!("100 pods annotated in {:?}", t0.elapsed());
    check_served(&env, &anns, &node_of, &subs);
    assert_eq!(pod_ports(&env).len(), 100);

    // ovn-trace: a00 on n1 → b00's IP on n2, through the cluster router.
    env.central.nbctl(&["--wait=sb", "sync"]).unwrap();
    let (a, b) = (&anns["a00"], &anns["b00"]);
    let rtos = &env.nb_rows("Logical_Router_Port")["rtos-n1"];
    let flow = format!(
        "inport==\"default_a00\" && eth.src=={} && eth.dst=={} && ip4.src=={} && ip4.dst=={} && ip.ttl==64 && icmp4.type==8",
        a.mac,
        rtos.str("mac"),
        a.ip,
        b.ip
    );
    let trace = env.central.trace("n1", &flow, &["--minimal"]).unwrap();
    assert!(trace.contains("output(\"default_b00\")"), "{trace}");
    let detailed = env.central.trace("n1", &flow, &[]).unwrap();
    assert!(detailed.contains("ovn_cluster_router"), "{detailed}");

    // Delete 10 pods of n1: ports gone; their addresses go to the next pods.
    let victims: Vec<String> = (10..20).map(|i| format!("a{i:02}")).collect();
    let freed: BTreeSet<Ipv4Addr> = victims.iter().map(|v| anns[v].ip).collect();
    delete_pods(&env, &victims).await;
    eventually("ports deleted", WAIT, || async {
        let ports = pod_ports(&env);
        victims
            .iter()
            .all(|v| !ports.contains_key(&format!("default_{v}")))
            .then_some(())
    })
    .await;
    let fresh: Vec<String> = (0..10).map(|i| format!("c{i:02}")).collect();
    create_pods(&env, fresh.iter().map(|n| pod(n, Some("n1"), false, None))).await;
    let fresh_anns = wait_annotated(&env, &fresh).await;
    let reused: BTreeSet<Ipv4Addr> = fresh_anns.values().map(|a| a.ip).collect();
    assert_eq!(reused, freed, "freed addresses are reused");
    let all = wait_annotated(
        &env,
        &names
            .iter()
            .filter(|n| !victims.contains(n))
            .chain(&fresh)
            .cloned()
            .collect::<Vec<_>>(),
    )
    .await;
    check_served(
        &env,
        &all,
        &|n| if n.starts_with('b') { "n2" } else { "n1" }.to_string(),
        &subs,
    );
    assert_eq!(pod_ports(&env).len(), 100);
    assert_eq!(master.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_creating_100_pods_annotates_each_once() {
    let env = Env::start("podcrash").await;
    // A crashed master's Lease blocks its successor for a lease duration: keep it short.
    let mut args = env.master_args("10.6.0.0/16");
    args.extend(
        [
            "-ha-election-lease-duration=4",
            "-ha-election-renew-deadline=3",
            "-ha-election-retry-period=1",
        ]
        .map(String::from),
    );
    let mut master = env.spawn("master", &args);
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1", "n2"]).await;
    let subs = wait_nodes_ready(&env, &["n1", "n2"]).await;
    let writes = AnnotationWrites::start(&env);

    let names: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
    let node_of = |n: &str| {
        let i: u32 = n[1..].parse().unwrap();
        if i.is_multiple_of(2) { "n1" } else { "n2" }.to_string()
    };
    let creator = {
        let client = env.client.clone();
        let pods: Vec<Pod> = names
            .iter()
            .map(|n| pod(n, Some(&node_of(n)), false, None))
            .collect();
        tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "default");
            for p in pods {
                api.create(&PostParams::default(), &p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Crash once some, not all, pods are served.
    eventually("some pods annotated", WAIT, || async {
        let n = annotations(&env).await.values().flatten().count();
        (n >= 10).then_some(())
    })
    .await;
    master.kill9();
    creator.await.unwrap();
    let served_before = annotations(&env).await.values().flatten().count();
    eprintln!("{served_before} of 100 pods annotated at the crash");
    // Two pods deleted while the controller is down: their ports must go at restart.
    let gone = vec!["p000".to_string(), "p001".to_string()];
    delete_pods(&env, &gone).await;

    let mut master = env.spawn("master2", &args);
    master.wait_log("initial pod sync done", WAIT);
    let live: Vec<String> = names
        .iter()
        .filter(|n| !gone.contains(n))
        .cloned()
        .collect();
    let anns = wait_annotated(&env, &live).await;
    check_served(&env, &anns, &node_of, &subs);
    // No orphan port: exactly the live pods have ports.
    let ports: BTreeSet<String> = pod_ports(&env).into_keys().collect();
    let want: BTreeSet<String> = live.iter().map(|n| format!("default_{n}")).collect();
    assert_eq!(ports, want);
    // Every pod annotated exactly once, across the crash.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = writes.get();
    for n in &live {
        assert_eq!(counts.get(n), Some(&1), "{n}: {counts:?}");
    }
    assert_eq!(master.terminate().code(), Some(0));

    // A restart with nothing changed leaves NB untouched.
    let before = env.nb_dump();
    let mut master = env.spawn("master3", &env.master_args("10.6.0.0/16"));
    master.wait_log("initial pod sync done", WAIT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(before, env.nb_dump(), "restart must not touch NB");
    assert_eq!(master.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_late_node_and_preset_annotations() {
    let env = Env::start("podmisc").await;
    let mut master = env.spawn("master", &env.master_args("10.7.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    // A pod whose node does not exist yet, and one not scheduled yet.
    create_pods(
        &env,
        [
            pod("early", Some("late"), false, None),
            pod("unscheduled", None, false, None),
        ],
    )
    .await;
    env.create_nodes(&["n1"]).await;
    let subs = wait_nodes_ready(&env, &["n1"]).await;
    let sub = subs["n1"];
    let ip = |n: u32| Ipv4Addr::from(u32::from(sub.network()) + n);
    let user = format!(
        "{{\"ip_address\":\"{}/24\", \"mac_address\":\"0a:00:00:00:00:c8\", \"gateway_ip\": \"{}\"}}",
        ip(200),
        ip(1)
    );
    let conflict = format!(
        "{{\"ip_address\":\"{}/24\", \"mac_address\":\"0a:00:00:00:00:c9\", \"gateway_ip\": \"{}\"}}",
        ip(200),
        ip(1)
    );
    create_pods(&env, [pod("user", Some("n1"), false, Some(&user))]).await;
    wait_annotated(&env, &["user".to_string()]).await;
    eventually("user port", WAIT, || async {
        pod_ports(&env).contains_key("default_user").then_some(())
    })
    .await;
    create_pods(
        &env,
        [
            pod("hostnet", Some("n1"), true, None),
            pod("conflict", Some("n1"), false, Some(&conflict)),
            pod("garbage", Some("n1"), false, Some("not json")),
            pod("plain", Some("n1"), false, None),
        ],
    )
    .await;
    let anns = wait_annotated(&env, &["plain".to_string(), "user".to_string()]).await;
    // The user's choice is honoured: port carries it, annotation untouched.
    let ports = pod_ports(&env);
    assert_eq!(
        ports["default_user"].set("addresses"),
        [format!("0a:00:00:00:00:c8 {}", ip(200))]
    );
    assert_eq!(
        annotations(&env).await["user"].as_deref(),
        Some(user.as_str())
    );
    assert_eq!(anns["plain"].ip, ip(3));
    assert_eq!(
        anns["plain"].mac,
        format!("0a:58:0a:07:{:02x}:03", ip(3).octets()[2])
    );

    // Conflicting and invalid annotations: error + Event, not served, not overwritten.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let bad: BTreeSet<String> = eventually("events for bad annotations", WAIT, || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let s: BTreeSet<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidPodNetworkAnnotation"))
            .filter_map(|e| e.regarding.as_ref().and_then(|r| r.name.clone()))
            .collect();
        (s.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(bad, ["conflict", "garbage"].map(String::from).into());
    let all = annotations(&env).await;
    assert_eq!(all["conflict"].as_deref(), Some(conflict.as_str()));
    assert_eq!(all["garbage"].as_deref(), Some("not json"));
    let log = master.log_text();
    assert!(log.contains("already used by another pod"), "{log}");
    assert!(log.contains("remove the annotation"), "{log}");

    // Late node: its pod is served once the subnet exists.
    env.create_nodes(&["late"]).await;
    let subs = wait_nodes_ready(&env, &["n1", "late"]).await;
    let early = wait_annotated(&env, &["early".to_string()]).await;
    assert!(subs["late"].contains(&early["early"].ip));

    // Host-network and unscheduled pods get nothing.
    let all = annotations(&env).await;
    assert_eq!(all["hostnet"], None);
    assert_eq!(all["unscheduled"], None);
    let ports = pod_ports(&env);
    for p in ["hostnet", "unscheduled", "conflict", "garbage"] {
        assert!(!ports.contains_key(&format!("default_{p}")), "{p}");
    }
    assert_eq!(ports.len(), 3, "{:?}", ports.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nb_outage_is_retried() {
    let mut env = Env::start("podnb").await;
    let mut master = env.spawn("master", &env.master_args("10.8.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1"]).await;
    let subs = wait_nodes_ready(&env, &["n1"]).await;
    master.wait_log("initial pod sync done", WAIT);
    create_pods(&env, [pod("first", Some("n1"), false, None)]).await;
    wait_annotated(&env, &["first".to_string()]).await;

    env.central.stop_nb();
    let names: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    create_pods(&env, names.iter().map(|n| pod(n, Some("n1"), false, None))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = annotations(&env).await;
    assert!(names.iter().all(|n| all[n].is_none()), "served without NB?");
    env.central.start_nb().unwrap();
    let anns = wait_annotated(&env, &names).await;
    check_served(&env, &anns, &|_| "n1".to_string(), &subs);
    assert!(master.log_text().contains("will retry"));
}

/// `make bench`: pods on `POD_BENCH_NODES` nodes (default 100), create→annotation latency
/// and throughput at `POD_BENCH_SIZES` pods (default 2,000, 10,000 and 20,000; a fresh cluster
/// for each). Pods are created at `POD_BENCH_RATE` pods/s (default 500) so latency is measured
/// under a steady load, not a backlog. Prints p50/p99, the master's RSS once every pod is
/// annotated and the machine's load, and writes each size's latency CDF as an SVG into
/// `POD_BENCH_PLOTS` (default `docs/bench/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_pod_annotation_latency() {
    let num = |key: &str, default: f64| -> f64 {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rate = num("POD_BENCH_RATE", 500.0);
    let nodes = num("POD_BENCH_NODES", 100.0) as usize;
    let sizes: Vec<usize> = std::env::var("POD_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![2000, 10000, 20000]);
    let plots = std::env::var("POD_BENCH_PLOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench"));
    let mut p99s = Vec::new();
    for n in sizes {
        let r = bench_once(n, nodes, rate).await;
        let (p50, p99) = (pct(&r.latencies_ms, 0.5), pct(&r.latencies_ms, 0.99));
        println!(
            "BENCH pods={n} nodes={nodes} offered={rate}/s  p50={p50:.1}ms  p99={p99:.1}ms  \
             p99(last 10%)={:.1}ms  max={:.1}ms  throughput={:.0} pods/s  master RSS={} MiB  \
             load: {}",
            r.tail_p99_ms,
            r.latencies_ms.last().copied().unwrap_or_default(),
            r.throughput,
            r.rss_kib / 1024,
            load()
        );
        let svg = plots.join(format!("pod-latency-{n}.svg"));
        let title = format!("create -> annotation, {n} pods on {nodes} nodes at {rate}/s");
        match write_cdf(&svg, &title, &r.latencies_ms) {
            Ok(()) => println!("BENCH latency CDF written to {}", svg.display()),
            Err(e) => println!("BENCH latency CDF not written to {}: {e:#}", svg.display()),
        }
        p99s.push((n, p99));
    }
    if let [(a, pa), .., (b, pb)] = p99s.as_slice() {
        println!("BENCH p99 growth {a} -> {b} pods: {:.2}x", pb / pa);
    }
}

/// One size's figures: every pod's latency (sorted), the p99 of the last tenth created, the
/// pods/s annotated, and the master's RSS once all are annotated.
struct BenchRun {
    latencies_ms: Vec<f64>,
    tail_p99_ms: f64,
    throughput: f64,
    rss_kib: u64,
}

use common::podbench::pct;

/// The load averages, to read noisy numbers by (this machine is shared).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The empirical CDF of `sorted_ms` as an SVG line chart (log-scaled latency axis, so that
/// the body and the tail are both readable).
fn write_cdf(path: &std::path::Path, title: &str, sorted_ms: &[f64]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lo = sorted_ms.first().copied().unwrap_or(0.1).max(0.1);
    let hi = sorted_ms.last().copied().unwrap_or(1.0).max(lo * 2.0);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of pods")
        .draw()?;
    let n = sorted_ms.len().max(1) as f64;
    // At most ~2,000 points: the curve stays readable and the file small at 20,000 pods.
    let step = (sorted_ms.len() / 2000).max(1);
    let points = sorted_ms
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i + 1 == sorted_ms.len())
        .map(|(i, ms)| (ms.max(lo), (i + 1) as f64 / n));
    chart.draw_series(LineSeries::new(points, &BLUE))?;
    for (q, color) in [(0.5, &GREEN), (0.99, &RED)] {
        let x = pct(sorted_ms, q).max(lo);
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, 1.0)], color))?
            .label(format!("p{:.0} {x:.1} ms", q * 100.0))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

async fn bench_once(n: usize, node_count: usize, rate: f64) -> BenchRun {
    let env = Env::start(&format!("bench{n}")).await;
    let args = bench_args(env.master_args("10.9.0.0/16"));
    let m = measure_pod_latency(&env, &args, node_count, n, rate).await;
    BenchRun {
        tail_p99_ms: m.latency.tail_p99_ms,
        latencies_ms: m.latency.sorted_ms,
        throughput: m.latency.throughput,
        rss_kib: m.rss_kib,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_subnet_reports_and_serves_when_room_appears_and_late_scheduling() {
    let env = Env::start("podfull").await;
    // /29 host subnets: .0 network, .1 gateway, .2 management, .7 broadcast -> 4 pod addresses.
    let mut master = env.spawn("master", &env.master_args("10.8.0.0/24/29"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["tiny"]).await;
    wait_nodes_ready(&env, &["tiny"]).await;
    let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    create_pods(
        &env,
        names.iter().map(|n| pod(n, Some("tiny"), false, None)),
    )
    .await;
    let first4: Vec<String> = names[..4].to_vec();
    let got = wait_annotated(&env, &first4).await;
    let ips: std::collections::BTreeSet<Ipv4Addr> = got.values().map(|a| a.ip).collect();
    assert_eq!(ips.len(), 4);
    assert!(
        ips.iter().all(|ip| (3..=6).contains(&ip.octets()[3])),
        "{ips:?}"
    );
    // The fifth: an error once, an Event, no annotation, no port.
    master.wait_log("no free address in subnet", WAIT);
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    eventually("PodSubnetFull event", WAIT, || async {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        evs.iter()
            .any(|e| {
                e.reason.as_deref() == Some("PodSubnetFull")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("f4")
            })
            .then_some(())
    })
    .await;
    assert_eq!(annotations(&env).await["f4"], None);
    assert!(!pod_ports(&env).contains_key("default_f4"));
    // Room appears: the waiting pod gets the freed address.
    delete_pods(&env, &["f1".to_string()]).await;
    let got4 = wait_annotated(&env, &["f4".to_string()]).await;
    assert_eq!(got4["f4"].ip, got["f1"].ip);
    assert_eq!(
        master
            .log_text()
            .matches("no free address in subnet")
            .count(),
        1
    );

    // A pod created unscheduled is served once the scheduler sets its node (a merge patch,
    // as the demo's scheduler stand-in does), without holding up other pods.
    delete_pods(&env, &["f2".to_string()]).await;
    create_pods(&env, [pod("later", None, false, None)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(annotations(&env).await["later"], None);
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    api.patch(
        "later",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"nodeName": "tiny"}})),
    )
    .await
    .unwrap();
    let later = wait_annotated(&env, &["later".to_string()]).await;
    assert_eq!(later["later"].ip, got["f2"].ip);
}
