//! Clustered (raft) NB and SB: the master + net-controller given the three members of each as
//! an operator writes them (`-nb-address=tcp://A,tcp://B,tcp://C`), against real 3-member
//! clusters on loopback. The NB leader is killed with SIGKILL during a pod storm; a list whose
//! first member is down at start still serves.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::pods::{
    WAIT, annotations, bench_args, check_served, measure_pod_latency, pod, pod_ports,
    wait_annotated, wait_nodes_ready,
};
use common::{Env, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

/// The log line of the NB client each time it settles on a member.
const USING_LEADER: &str = "OVSDB cluster member is connected and the leader; using it";

fn node_of(n: &str) -> String {
    let i: u32 = n[1..].parse().unwrap();
    if i.is_multiple_of(2) { "n1" } else { "n2" }.to_string()
}

/// Creates the pods one by one, `gap` apart, in a task.
fn create_in_background(env: &Env, names: &[String], gap: Duration) -> tokio::task::JoinHandle<()> {
    let client = env.client.clone();
    let pods: Vec<Pod> = names
        .iter()
        .map(|n| pod(n, Some(&node_of(n)), false, None))
        .collect();
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        for p in pods {
            api.create(&PostParams::default(), &p).await.unwrap();
            tokio::time::sleep(gap).await;
        }
    })
}

/// Every pod annotated, each with exactly one logical port and an IP of its own.
async fn assert_all_served(
    env: &Env,
    names: &[String],
    subs: &std::collections::BTreeMap<String, ipnet::Ipv4Net>,
) {
    let anns = wait_annotated(env, names).await;
    // Also refuses a duplicate IP and checks each pod's port.
    check_served(env, &anns, &|n: &str| node_of(n), subs);
    let ports: Vec<String> = pod_ports(env).into_keys().collect();
    let want: BTreeSet<String> = names.iter().map(|n| format!("default_{n}")).collect();
    assert_eq!(
        ports.len(),
        want.len(),
        "one logical port per pod: {ports:?}"
    );
    assert_eq!(ports.into_iter().collect::<BTreeSet<_>>(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nb_leader_killed_during_a_pod_storm_loses_no_pod() {
    let env = Env::start_raft("raft-storm").await;
    let mut master = env.spawn("master", &env.master_args_raft("10.7.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    master.wait_log(USING_LEADER, WAIT);
    env.create_nodes(&["n1", "n2"]).await;
    let subs = wait_nodes_ready(&env, &["n1", "n2"]).await;

    let names: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    let creator = create_in_background(&env, &names, Duration::from_millis(10));
    eventually("some pods annotated", WAIT, || async {
        let n = annotations(&env).await.values().flatten().count();
        (n >= 20).then_some(())
    })
    .await;
    let killed = env.central.kill9_nb_leader().unwrap();
    let killed_addr = env.central.nb_members().unwrap()[killed].client.to_string();
    let served_at_kill = annotations(&env).await.values().flatten().count();
    eprintln!("killed NB leader {killed} ({killed_addr}) with {served_at_kill} of 150 pods served");
    assert!(
        served_at_kill < names.len(),
        "the kill must land during the storm"
    );
    creator.await.unwrap();
    assert_all_served(&env, &names, &subs).await;

    // The log shows the move: the connection to the killed leader was lost, and the client
    // settled on another member, which is the cluster's leader now.
    let log = master.log_text();
    let lost = log
        .lines()
        .any(|l| l.contains("OVSDB connection lost") && l.contains(&killed_addr));
    assert!(lost, "no lost connection to {killed_addr} logged:\n{log}");
    let using: Vec<&str> = log.lines().filter(|l| l.contains(USING_LEADER)).collect();
    let last = using.last().expect("a leader was used");
    assert!(
        using.len() >= 2,
        "no move to a new leader logged: {using:#?}"
    );
    assert!(
        !last.contains(&killed_addr),
        "still on the killed member: {last}"
    );
    let leader = env.central.nb_leader(Duration::from_secs(10)).unwrap();
    let leader_addr = env.central.nb_members().unwrap()[leader].client.to_string();
    assert!(
        last.contains(&leader_addr),
        "{last} is not the leader {leader_addr}"
    );
    // The new leader resumed the NB replica's monitor from the last transaction (raft keeps
    // the history) instead of sending every row again.
    assert!(
        log.contains("NB replica resumed"),
        "the replica was downloaded again:\n{log}"
    );
    // Same cluster, same NB_Global row: a new leader is not a new database.
    assert!(
        !log.contains("the NB database was replaced"),
        "a leader change was taken for a new database:\n{log}"
    );

    // The killed member comes back as a follower and the cluster keeps serving.
    env.central.restart_nb_member(killed).unwrap();
    let more: Vec<String> = (150..160).map(|i| format!("p{i:03}")).collect();
    create_in_background(&env, &more, Duration::ZERO)
        .await
        .unwrap();
    let all: Vec<String> = names.iter().chain(&more).cloned().collect();
    assert_all_served(&env, &all, &subs).await;
    assert_eq!(master.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_listed_nb_member_down_at_start() {
    let env = Env::start_raft("raft-first-down").await;
    env.central.kill9_nb_member(0).unwrap();
    // The other two elect a leader (if member 0 was it) before the master comes up or not:
    // either way the master must find it.
    let mut master = env.spawn("master", &env.master_args_raft("10.8.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1", "n2"]).await;
    let subs = wait_nodes_ready(&env, &["n1", "n2"]).await;
    let names: Vec<String> = (0..10).map(|i| format!("p{i:03}")).collect();
    create_in_background(&env, &names, Duration::ZERO)
        .await
        .unwrap();
    assert_all_served(&env, &names, &subs).await;
    let first = env.central.nb_members().unwrap()[0].client.to_string();
    let log = master.log_text();
    let on_first = log
        .lines()
        .any(|l| l.contains(USING_LEADER) && l.contains(&first));
    assert!(!on_first, "used the member that is down:\n{log}");
    assert_eq!(master.terminate().code(), Some(0));
}

/// `make bench`: pod create → annotation latency on the clustered NB next to a standalone
/// one (same load: `RAFT_BENCH_PODS` pods, default 1000, at `POD_BENCH_RATE`/s, default
/// 200), then the failover gap: the NB leader killed with SIGKILL, one pod created at once,
/// the time until it is annotated (`RAFT_BENCH_KILLS` times, default 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_raft_pod_latency_and_failover_gap() {
    let env_num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env_num("RAFT_BENCH_PODS", 1000.0) as usize;
    let rate = env_num("POD_BENCH_RATE", 200.0);
    let kills = env_num("RAFT_BENCH_KILLS", 5.0) as usize;
    for clustered in [false, true] {
        let env = if clustered {
            Env::start_raft("bench-raft").await
        } else {
            Env::start("bench-standalone").await
        };
        let args = if clustered {
            bench_args(env.master_args_raft("10.9.0.0/16"))
        } else {
            bench_args(env.master_args("10.9.0.0/16"))
        };
        let l = measure_pod_latency(&env, &args, 50, n, rate).await.latency;
        let (p50, p99, tail99, out) = (l.p50_ms, l.p99_ms, l.tail_p99_ms, l.throughput);
        let nb = if clustered { "raft-3" } else { "standalone" };
        println!(
            "BENCH nb={nb} pods={n} offered={rate}/s  p50={p50:.1}ms  p99={p99:.1}ms  \
             p99(last 10%)={tail99:.1}ms  throughput={out:.0} pods/s"
        );
    }
    let gaps = failover_gaps(kills).await;
    let mut sorted = gaps.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!(
        "BENCH raft NB leader kill -9 -> next pod annotated: median={:.0}ms max={:.0}ms all={:?}",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        gaps.iter().map(|g| g.round()).collect::<Vec<_>>()
    );
}

/// Each round: kill the NB leader, create one pod at once, time its annotation (ms); then
/// bring the killed member back and wait until the cluster has a leader again.
async fn failover_gaps(kills: usize) -> Vec<f64> {
    let env = Env::start_raft("bench-failover").await;
    let mut master = env.spawn("master", &env.master_args_raft("10.9.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1", "n2"]).await;
    wait_nodes_ready(&env, &["n1", "n2"]).await;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let mut gaps = Vec::new();
    for k in 0..kills {
        // The previous round's pod, served on the current leader: the client is on it.
        let warm = format!("p{:03}", 2 * k);
        api.create(
            &PostParams::default(),
            &pod(&warm, Some(&node_of(&warm)), false, None),
        )
        .await
        .unwrap();
        wait_annotated(&env, std::slice::from_ref(&warm)).await;
        let killed = env.central.kill9_nb_leader().unwrap();
        let t0 = std::time::Instant::now();
        let name = format!("p{:03}", 2 * k + 1);
        api.create(
            &PostParams::default(),
            &pod(&name, Some(&node_of(&name)), false, None),
        )
        .await
        .unwrap();
        wait_annotated(&env, std::slice::from_ref(&name)).await;
        gaps.push(t0.elapsed().as_secs_f64() * 1000.0);
        env.central.restart_nb_member(killed).unwrap();
        env.central.nb_leader(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(master.terminate().code(), Some(0));
    gaps
}
