//! The node's own NB objects after the NB is lost: a running `ovnkube -init-node
//! -init-gateways -nodeport` (which stays alive) puts back its gateway (`GR_<node>`, join port, `ext_<node>`, routes, NAT, load balancers) once the
//! restarted master has rebuilt the node switch (and, from the node's MAC annotation, the
//! management port's logical port) — without a node restart. And a healthy node
//! makes no NB transaction at all while it re-checks.
//!
//! The node runs with `OVNKUBE_NB_BACKEND=exec`, so every NB transaction it makes is an
//! `ovn-nbctl` command in its debug log (reads are `--format=json`), which the test counts.

mod common;
mod gwbed;
mod nodebed;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, eventually};
use gwbed::*;
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts, Outside};

const NODE_IP: &str = "172.31.0.1";
const REPAIR: Duration = Duration::from_secs(40);

/// `ovn-nbctl` that reads a failure as empty output: this test loses the NB on purpose.
fn nb(env: &Env, args: &[&str]) -> String {
    nbctl(env, args, true)
}

/// The NB transactions the node made so far (`ovn-nbctl` runs that are not reads).
fn nb_writes(ns: &NodeSide) -> Vec<String> {
    node_log(ns)
        .lines()
        .filter(|l| l.contains("cmd=ovn-nbctl") && !l.contains("--format=json"))
        .filter(|l| !l.contains("exec failed"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_rebuilds_its_nb_objects_after_the_nb_is_lost() {
    let t0 = Instant::now();
    let mut env = Env::start("restore-node").await;
    let args = env.master_args(CLUSTER_SUBNET);
    let mut master = env.spawn("master", &args);
    master.wait_log("initial service sync done", WAIT);
    create_node(&env, "n1").await;
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ch, "eth1", &format!("{NODE_IP}/24"), true)
        .unwrap();
    let n1 = NodeSide::new(&env, ch);
    let mut node = NodeProc(spawn_node(
        &env,
        &n1,
        "127.0.0.1",
        &["OVNKUBE_NB_BACKEND=exec"],
        GATEWAY_FLAGS,
    ));
    blocking(|| wait_init(&n1, &mut node.0, 1));
    eprintln!("gateway up after {:?}", t0.elapsed());

    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let mgmt_ip = std::net::Ipv4Addr::from(base + 2);
    let mgmt = format!("{} {mgmt_ip}", ovnkube::ovn::addrs::mac_from_ip(mgmt_ip));
    let join_before = eventually("the node's objects", WAIT, || async {
        node_objects_ok(&env, NODE_IP, &subnet, &mgmt).ok()
    })
    .await;

    // A pod with SNAT egress, and a NodePort service backed by it.
    let (p1, pod_ip) = pod(&env, &n1.chassis, "n1", &subnet, "p1", 10);
    let mut echo = out.spawn(&["python3", "-c", &server(9000, "")]).unwrap();
    let egress = |what: &str| egress(what, NODE_IP, &String::new, &p1);
    blocking(|| egress("pod p1 -> outside (SNAT)"));
    create_nodeport(&env, &pod_ip).await;
    let vip = format!("{NODE_IP}:{NODE_PORT}");
    eventually("the NodePort VIP on GR_n1", WAIT, || async {
        gr_vips(&env, true).contains(&vip).then_some(())
    })
    .await;

    // Nothing broken: the node re-checks (reads) but writes nothing, over 20 s.
    let writes = nb_writes(&n1);
    // The filter sees the init's own transactions (so it would see a re-check's).
    assert!(
        writes
            .iter()
            .any(|w| w.contains("lsp-add") && w.contains("k8s-n1")),
        "{writes:#?}"
    );
    let reads = |log: &str| log.matches("k8s-n1").count();
    let (reads0, dump0) = (reads(&node_log(&n1)), env.nb_dump());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = node_log(&n1);
    let new_writes: Vec<_> = nb_writes(&n1).into_iter().skip(writes.len()).collect();
    assert!(
        new_writes.is_empty(),
        "a healthy node wrote to the NB: {new_writes:#?}"
    );
    assert!(
        reads(&log) > reads0,
        "the node did not re-check its objects in 20 s:\n{log}"
    );
    assert_eq!(
        dump0,
        env.nb_dump(),
        "the NB changed while nothing was broken"
    );
    assert!(!log.contains("repaired"), "{log}");
    eprintln!("quiet window OK after {:?}", t0.elapsed());

    // The NB is lost while the master is down; only the master is restarted.
    assert_eq!(master.terminate().code(), Some(0));
    wipe_nb(&mut env, |env| {
        nb(env, &["--bare", "--columns=name", "list", "Logical_Switch"]).is_empty()
    });
    let lost = Instant::now();
    let mut master = env.spawn("master2", &args);
    master.wait_log("initial service sync done", WAIT);
    let join_after = eventually("master's and node's objects back", REPAIR, || async {
        node_objects_ok(&env, NODE_IP, &subnet, &mgmt).ok()
    })
    .await;
    eprintln!(
        "rebuilt {:?} after the wipe (join {join_before} -> {join_after})",
        lost.elapsed()
    );
    let log = node_log(&n1);
    assert!(log.contains("repaired gateway router GR_n1"), "{log}");
    // The management port's logical port is back (`node_objects_ok`): the master re-creates
    // it from the node's MAC annotation with the switch, so the node usually finds it in place
    // and has nothing to repair.
    assert!(
        matches!(node.0.try_wait(), Ok(None)),
        "the node process must keep running"
    );

    // The paths work again: the service controller refills the gateway's LB; the pod's own
    // port (the pod controller's job, made by hand here) put back, SNAT egress works.
    eventually("the NodePort VIP back on GR_n1", WAIT, || async {
        gr_vips(&env, true).contains(&vip).then_some(())
    })
    .await;
    pod_lsp(&env, "n1", "p1", pod_ip.parse().unwrap());
    blocking(|| egress("pod p1 -> outside (SNAT) after the rebuild"));

    // Someone deletes the join port while its address is taken: the node asks OVN IPAM
    // again, and everything derived from the join address follows the new one.
    nb(
        &env,
        &[
            "lrp-del",
            "rtoj-GR_n1",
            "--",
            "lsp-del",
            "jtor-GR_n1",
            "--",
            "lsp-add",
            "join",
            "squatter",
            "--",
            "lsp-set-addresses",
            "squatter",
            &format!("0a:58:00:00:00:01 {join_after}"),
        ],
    );
    let join_new = eventually(
        "the gateway back with a new join address",
        REPAIR,
        || async {
            node_objects_ok(&env, NODE_IP, &subnet, &mgmt)
                .ok()
                .filter(|j| *j != join_after)
        },
    )
    .await;
    eprintln!("join port re-created: {join_after} -> {join_new}");
    blocking(|| egress("pod p1 -> outside (SNAT) after the new join address"));

    // Respects SIGTERM.
    let _ = Command::new("kill").arg(node.0.id().to_string()).status();
    let st = blocking(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = node.0.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(st.is_some(), "the node did not stop on SIGTERM");
    let _ = echo.kill();
    let _ = echo.wait();
    drop(master);
    eprintln!("restore-node test done in {:?}", t0.elapsed());
}
