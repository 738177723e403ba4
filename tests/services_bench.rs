//! Service benchmarks (`make bench`, release build; benchmarks, not tests).
//!
//! * `bench_service_lb_layouts`: what the load-balancer layout costs OVN itself, without
//!   ovnkube: 1,000 services × 10 endpoints on 20 node switches as (a) one shared load balancer,
//!   (b) the same with `affinity_timeout` (what a per-affinity-setting LB holding 1,000 sticky
//!   services costs), (c) one load balancer per service attached to every switch, (d) one per
//!   service in a `Load_Balancer_Group`. Prints northd CPU and wall time to program the set,
//!   the logical-flow count, and northd CPU for one backend change at that scale.
//! * `bench_service_programming`: the real binary with 1,000 services × 10 endpoints published
//!   as EndpointSlices: time to program them all and northd CPU for it, endpoint change → VIP
//!   updated p50/p99 (seen on an OVSDB monitor of the NB), and a master restart with nothing
//!   changed: time to "initial service sync done" and NB writes (the NB database file must not
//!   grow).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube_sandbox::{Sandbox, SandboxConfig};
use ovn_testbed::Central;
use serde_json::json;

const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;
const SWITCHES: usize = 20;

fn var(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// northd's user+system CPU time so far.
fn northd_cpu(central: &Central) -> Duration {
    let pid = std::fs::read_to_string(central.dir().join("ovn-northd.pid")).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clk_tck())
}

/// Clock ticks per second of /proc times.
fn clk_tck() -> f64 {
    let o = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn wait_sb(central: &Central) {
    central
        .nbctl(&["--wait=sb", "--timeout=600", "sync"])
        .unwrap();
}

fn lflows(central: &Central) -> usize {
    central
        .sbctl(&["--bare", "--columns=_uuid", "list", "Logical_Flow"])
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn vip(i: usize) -> String {
    format!("172.20.{}.{}:80", i / 250, i % 250 + 1)
}

/// Service `i`'s ten backends, generation `generation` (a change gives new addresses).
fn backends(i: usize, generation: usize) -> String {
    (0..ENDPOINTS)
        .map(|e| {
            format!(
                "10.{}.{}.{}:8080",
                128 + generation,
                i / 25,
                (i % 25) * 10 + e + 1
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Shared,
    SharedAffinity,
    PerService,
    PerServiceGroup,
}

/// Programs the full set in `layout`; returns the name or uuid of the LB holding service 0.
fn program(central: &Central, layout: Layout, n: usize) -> String {
    let switches: Vec<String> = (0..SWITCHES).map(|i| format!("sw{i}")).collect();
    let mut args: Vec<String> = Vec::new();
    for s in &switches {
        args.extend(["--", "ls-add", s].map(String::from));
    }
    let run = |args: &[String]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        central.nbctl(&a).unwrap()
    };
    run(&args);
    match layout {
        Layout::Shared | Layout::SharedAffinity => {
            let mut create = vec![
                "--".to_string(),
                "create".into(),
                "Load_Balancer".into(),
                "name=shared".into(),
                "protocol=tcp".into(),
            ];
            if matches!(layout, Layout::SharedAffinity) {
                create.push("options:affinity_timeout=10800".into());
            }
            run(&create);
            for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
                let mut a = vec![
                    "--".to_string(),
                    "set".into(),
                    "Load_Balancer".into(),
                    "shared".into(),
                ];
                for i in chunk {
                    a.push(format!("vips:\"{}\"=\"{}\"", vip(*i), backends(*i, 0)));
                }
                run(&a);
            }
            let mut a = Vec::new();
            for s in &switches {
                a.extend(["--", "ls-lb-add", s, "shared"].map(String::from));
            }
            run(&a);
            "shared".into()
        }
        Layout::PerService | Layout::PerServiceGroup => {
            let group = matches!(layout, Layout::PerServiceGroup).then(|| {
                run(&[
                    "create".into(),
                    "Load_Balancer_Group".into(),
                    "name=cluster".into(),
                ])
                .trim()
                .to_string()
            });
            for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
                let mut a = Vec::new();
                let mut ids = Vec::new();
                for i in chunk {
                    let id = format!("lb{i}");
                    a.extend([
                        "--".to_string(),
                        format!("--id=@{id}"),
                        "create".into(),
                        "Load_Balancer".into(),
                        format!("name=svc{i}"),
                        "protocol=tcp".into(),
                        format!("vips:\"{}\"=\"{}\"", vip(*i), backends(*i, 0)),
                    ]);
                    ids.push(format!("@{id}"));
                }
                match &group {
                    Some(g) => {
                        a.extend(
                            ["--", "add", "Load_Balancer_Group", g, "load_balancer"]
                                .map(String::from),
                        );
                        a.extend(ids.iter().cloned());
                    }
                    None => {
                        for s in &switches {
                            a.extend(
                                ["--", "add", "Logical_Switch", s, "load_balancer"]
                                    .map(String::from),
                            );
                            a.extend(ids.iter().cloned());
                        }
                    }
                }
                run(&a);
            }
            if let Some(g) = &group {
                let mut a = Vec::new();
                for s in &switches {
                    a.extend(
                        ["--", "add", "Logical_Switch", s, "load_balancer_group", g]
                            .map(String::from),
                    );
                }
                run(&a);
            }
            "svc0".into()
        }
    }
}

/// `make bench`: OVN's cost of each load-balancer layout (northd CPU, logical flows).
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn bench_service_lb_layouts() {
    let n = var("SVC_BENCH_SERVICES", SERVICES);
    let mut rows = Vec::new();
    for layout in [
        Layout::Shared,
        Layout::SharedAffinity,
        Layout::PerService,
        Layout::PerServiceGroup,
    ] {
        let central = Central::start().expect("OVN central");
        wait_sb(&central);
        let base_flows = lflows(&central);
        let cpu0 = northd_cpu(&central);
        let t0 = Instant::now();
        let lb = program(&central, layout, n);
        wait_sb(&central);
        let wall = t0.elapsed();
        let cpu = northd_cpu(&central) - cpu0;
        let flows = lflows(&central) - base_flows;
        // One backend change at this scale, five times.
        let mut change = Vec::new();
        for generation in 1..=5 {
            let c0 = northd_cpu(&central);
            let t = Instant::now();
            central
                .nbctl(&[
                    "set",
                    "Load_Balancer",
                    &lb,
                    &format!("vips:\"{}\"=\"{}\"", vip(0), backends(0, generation)),
                ])
                .unwrap();
            wait_sb(&central);
            change.push((northd_cpu(&central) - c0, t.elapsed()));
        }
        let cpu_change = change.iter().map(|c| c.0).sum::<Duration>() / 5;
        let wall_change = change.iter().map(|c| c.1).sum::<Duration>() / 5;
        rows.push(format!(
            "BENCH lb-layout {layout:?}: {n} services x {ENDPOINTS} endpoints on {SWITCHES} switches: \
             programmed in {:.2}s wall, northd CPU {:.2}s, {flows} logical flows; \
             one backend change: northd CPU {:.0} ms, {:.0} ms until SB",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu_change.as_secs_f64() * 1e3,
            wall_change.as_secs_f64() * 1e3,
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    println!("{}", rows.join("\n"));
}

/// Seconds of the day of a log line's `2026-12-03T07:01:59.880360Z` timestamp.
fn log_secs(line: &str) -> f64 {
    let t = line.get(11..26).unwrap_or("00:00:00.000000");
    let f: Vec<f64> = t.split(':').map(|x| x.parse().unwrap_or(0.0)).collect();
    f.first().unwrap_or(&0.0) * 3600.0 + f.get(1).unwrap_or(&0.0) * 60.0 + f.get(2).unwrap_or(&0.0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Service `i`'s slice; endpoint 0 is `first` (changed to trigger an update).
fn slice(i: usize, first: &str) -> EndpointSlice {
    let mut ips = vec![first.to_string()];
    ips.extend((1..ENDPOINTS).map(|e| format!("10.{}.{}.{}", 129 + i / 250, i % 250, e + 1)));
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc{i}-a"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// Lines of an `ovsdb-client monitor` of the NB Load_Balancer vips, with their arrival time.
struct Monitor {
    child: std::process::Child,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(central: &Central) -> Monitor {
        let mut child = Command::new("ovsdb-client")
            .args([
                "monitor",
                &central.nb_db(),
                "OVN_Northbound",
                "Load_Balancer",
                "vips",
                "--format=json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Monitor { child, rx }
    }

    /// The arrival time of the first line containing `needle`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, l)) if l.contains(needle) => return t,
                Ok(_) => {}
                Err(_) => panic!("no NB update containing {needle} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `make bench`: the real binary, 1,000 services × 10 endpoints from EndpointSlices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_service_programming() {
    let n = var("SVC_BENCH_SERVICES", SERVICES);
    let changes = var("SVC_BENCH_CHANGES", 500);
    let central = Central::start().expect("OVN central");
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        SandboxConfig {
            mirror_endpoints: false,
            service_cidr: "172.20.0.0/16".into(),
            ..SandboxConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = central.dir().join("test-svcbench");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig.yaml");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let client = kube::Client::try_from(kube::Config::new(sandbox.url().parse().unwrap())).unwrap();
    let env = Env {
        central,
        // Unused: the master below is given the central's unix sockets.
        nb_addr: ovn_testbed::free_loopback_addr().unwrap(),
        sb_addr: ovn_testbed::free_loopback_addr().unwrap(),
        sandbox,
        dir,
        kubeconfig,
        client,
    };
    let args: Vec<String> = env
        .master_args("10.40.0.0/14")
        .into_iter()
        .map(|a| {
            if a.starts_with("-nb-address=") {
                format!("-nb-address={}", env.central.nb_db())
            } else if a.starts_with("-sb-address=") {
                format!("-sb-address={}", env.central.sb_db())
            } else if a.starts_with("-service-cluster-ip-range=") {
                "-service-cluster-ip-range=172.20.0.0/16".into()
            } else if a.starts_with("-loglevel") {
                "-loglevel=4".into()
            } else {
                a
            }
        })
        .collect();
    let mut master = env.spawn("master", &args);
    master.wait_log("initial service sync done", Duration::from_secs(60));
    let nodes: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    env.create_nodes(nodes.iter()).await;
    eventually("node switches", Duration::from_secs(60), || async {
        let sw = env
            .central
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
            .ok()?;
        nodes
            .iter()
            .all(|n| sw.lines().any(|l| l.trim() == n))
            .then_some(())
    })
    .await;
    env.central.nbctl(&["--wait=sb", "sync"]).unwrap();

    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), "default");
    let cpu0 = northd_cpu(&env.central);
    let t0 = Instant::now();
    let mut ips = BTreeMap::new();
    for i in 0..n {
        let s = svcs
            .create(&PostParams::default(), &service(i))
            .await
            .unwrap();
        ips.insert(i, s.spec.unwrap().cluster_ip.unwrap());
        slices
            .create(
                &PostParams::default(),
                &slice(i, &format!("10.128.0.{}", i % 250 + 1)),
            )
            .await
            .unwrap();
    }
    let created = t0.elapsed();
    let count_vips = || {
        env.nb_table("Load_Balancer")
            .iter()
            .map(|r| r.map("vips").len())
            .sum::<usize>()
    };
    eventually("every VIP programmed", Duration::from_secs(600), || async {
        (count_vips() >= n).then_some(())
    })
    .await;
    let programmed = t0.elapsed();
    env.central
        .nbctl(&["--wait=sb", "--timeout=600", "sync"])
        .unwrap();
    let northd_full = northd_cpu(&env.central) - cpu0;
    let flows = lflows(&env.central);

    // Endpoint change -> VIP updated, seen on an NB monitor.
    let mon = Monitor::start(&env.central);
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    let mut at = Vec::new();
    let loop_start = Instant::now();
    for k in 0..changes {
        let i = (k * 7919) % n;
        let marker = format!("10.250.{}.{}", k / 250, k % 250 + 1);
        let mut s = slice(i, &marker);
        s.metadata.resource_version = slices
            .get(&format!("svc{i}-a"))
            .await
            .unwrap()
            .metadata
            .resource_version;
        let t = Instant::now();
        slices
            .replace(&format!("svc{i}-a"), &PostParams::default(), &s)
            .await
            .unwrap();
        let seen = mon.wait_for(&format!("{marker}:8080"), Duration::from_secs(30));
        lat.push(seen.saturating_duration_since(t));
        at.push(t.duration_since(loop_start).as_millis());
    }
    let slow: Vec<(u128, u128)> = lat
        .iter()
        .enumerate()
        .filter(|(_, d)| d.as_millis() >= 20)
        .map(|(i, d)| (at[i], d.as_millis()))
        .collect();
    eprintln!("changes >= 20 ms (ms since the first change, latency ms): {slow:?}");
    let (p50, p90, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.9), pct(&mut lat, 0.99));

    // Restart with nothing changed: no NB write at all (the database file does not grow).
    env.central.nbctl(&["--wait=sb", "sync"]).unwrap();
    master.terminate();
    let db = env.central.dir().join("ovnnb_db.db");
    let before_size = std::fs::metadata(&db).unwrap().len();
    let before = env.nb_dump();
    let t1 = Instant::now();
    let mut master = env.spawn("master2", &args);
    master.wait_log("initial service sync done", Duration::from_secs(60));
    let restart = t1.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let after_size = std::fs::metadata(&db).unwrap().len();
    let log = master.log_text();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    let sync_line = line("initial service sync done");
    // From the controller's start (endpoints source chosen) to its sync, by log timestamps.
    let reconcile = log_secs(&sync_line) - log_secs(&line("service endpoints source chosen"));
    assert_eq!(before, env.nb_dump(), "the restart changed the NB");
    let report = format!(
        "BENCH services: {n} services x {ENDPOINTS} endpoints (EndpointSlices), 10 nodes: \
         API creates {:.1}s; all VIPs in NB {:.1}s after the first create; northd CPU {:.1}s for the full set; \
         {flows} logical flows\n\
         BENCH services: endpoint change -> VIP updated ({changes} changes): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms\n\
         BENCH services: master restart, nothing changed: all services reconciled {:.2}s after the controller started \
         ({:.2}s after spawn); NB file {} -> {} bytes ({} writes); {sync_line}",
        created.as_secs_f64(),
        programmed.as_secs_f64(),
        northd_full.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        reconcile,
        restart.as_secs_f64(),
        before_size,
        after_size,
        if after_size == before_size {
            "0"
        } else {
            "some"
        },
    );
    println!("{report}");
    eprintln!("{report}");
    assert_eq!(after_size, before_size, "the restart wrote to the NB");
}
