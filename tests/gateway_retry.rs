//! `-init-gateways` at start-up on a real chassis: the gateway init waits for what it depends
//! on (the master's join switch, the NB database, the node's OVS database) with the shared
//! backoff and completes once they are back, while a bad gateway flag ends the node at once with exit 1 and a message
//! naming the interface.

mod common;
mod gwbed;
mod nodebed;

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use common::{Daemon, Env, eventually};
use gwbed::*;
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts, Outside};

const GW_WHAT: &str = "initialising the gateway of node n1";

/// The master has given `n1` its subnet and created its switch.
async fn master_with_n1(env: &Env, name: &str) -> Daemon {
    let mut master = env.spawn(name, &master_args(env));
    master.wait_log("initial node sync done", WAIT);
    create_node(env, "n1").await;
    node_subnet(env, "n1").await;
    eventually("switch n1", WAIT, || async {
        env.nb_rows("Logical_Switch")
            .contains_key("n1")
            .then_some(())
    })
    .await;
    master
}

/// Waits for the node process to exit; panics with its log on timeout.
fn wait_exit(ns: &NodeSide, child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "node did not finish within {timeout:?}:\n{}",
            node_log(ns)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// WARN lines about the gateway init in the node's log.
fn gateway_warns(ns: &NodeSide) -> usize {
    node_log(ns)
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(GW_WHAT))
        .count()
}

fn wait_warns(ns: &NodeSide, child: &mut Child, n: usize) {
    let deadline = Instant::now() + WAIT;
    while gateway_warns(ns) < n {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("node exited ({st}) instead of retrying:\n{}", node_log(ns));
        }
        assert!(
            Instant::now() < deadline,
            "no retry of the gateway init:\n{}",
            node_log(ns)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_init_waits_for_the_join_switch_the_nb_and_ovs() {
    let mut env = Env::start("gw-retry").await;
    let mut master = master_with_n1(&env, "master").await;
    // The join switch is the master's: without the master it stays missing, so the node's
    // gateway init starts with a dependency that is not there yet.
    assert_eq!(master.terminate().code(), Some(0));
    nb(&env, &["ls-del", "join"]);
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let out = Outside::start(OUTSIDE).unwrap();
    out.attach(&ch, "eth1", "172.31.0.1/24", true).unwrap();
    let ns = NodeSide::new(&env, ch);
    let mut node = NodeProc(spawn_node(
        &env,
        &ns,
        "172.30.0.1",
        &[],
        &["-init-gateways"],
    ));
    blocking(|| wait_warns(&ns, &mut node.0, 1));
    assert!(
        node_log(&ns).contains("join does not exist"),
        "{}",
        node_log(&ns)
    );

    // Then the NB itself goes away for a while, and the node's OVS database too: still
    // waiting (each new error is one more WARN), not exiting.
    env.central.stop_nb();
    blocking(|| wait_warns(&ns, &mut node.0, 2));
    ns.chassis.stop_ovsdb();
    blocking(|| wait_warns(&ns, &mut node.0, 3));
    assert!(
        node_log(&ns).contains("reading the local Open vSwitch database"),
        "{}",
        node_log(&ns)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(node.0.try_wait().unwrap().is_none(), "{}", node_log(&ns));
    ns.chassis.start_ovsdb().unwrap();
    env.central.start_nb().unwrap();
    let _master = master_with_n1_again(&env).await;

    let st = blocking(|| wait_exit(&ns, &mut node.0, Duration::from_secs(180)));
    let log = node_log(&ns);
    assert!(st.success(), "node init failed ({st}):\n{log}");
    assert!(log.contains("gateway router GR_n1 ready"), "{log}");
    assert!(log.contains("CNI config written"), "{log}");
    // Logged per change of the error (join missing, NB down, ...), not per attempt.
    let warns = gateway_warns(&ns);
    eprintln!("gateway init: {warns} WARN lines over the outages");
    assert!((3..=8).contains(&warns), "{warns} WARN lines:\n{log}");
    // What an operator checks: the gateway router is bound to the chassis and has its join
    // address from OVN IPAM.
    assert_eq!(
        nb(&env, &["get", "Logical_Router", "GR_n1", "options:chassis"]),
        "n1"
    );
    let join = nb(
        &env,
        &["get", "Logical_Router_Port", "rtoj-GR_n1", "networks"],
    );
    assert!(join.contains("100.64."), "{join}");
}

/// The master started again (it recreates the join switch), once n1's switch is back.
async fn master_with_n1_again(env: &Env) -> Daemon {
    let mut master = env.spawn("master2", &master_args(env));
    master.wait_log("initial node sync done", WAIT);
    eventually("switch join", WAIT, || async {
        env.nb_rows("Logical_Switch")
            .contains_key("join")
            .then_some(())
    })
    .await;
    master
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_gateway_interface_is_a_start_up_error_naming_it() {
    let env = Env::start("gw-badif").await;
    let _master = master_with_n1(&env, "master").await;
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, ch);
    let t0 = Instant::now();
    let mut node = NodeProc(spawn_node(
        &env,
        &ns,
        "172.30.0.1",
        &[],
        &["-init-gateways", "-gateway-interface=nosuch0"],
    ));
    let st = blocking(|| wait_exit(&ns, &mut node.0, Duration::from_secs(120)));
    let log = node_log(&ns);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("gateway interface nosuch0 of node n1 does not exist"),
        "{log}"
    );
    assert!(!log.contains("retrying with backoff"), "{log}");
    eprintln!("bad interface reported after {:?}", t0.elapsed());
}
