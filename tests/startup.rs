//! Start-up never dies on a transient dependency: the NB ovsdb-server of a stock central is
//! restarted while the master (the README's flags, `tcp://` addresses it opens itself) is
//! starting, at a different moment each time; every start must come up and none may exit.

mod common;
mod nodebed;

use std::time::{Duration, Instant};

use common::Env;

const STARTS: usize = 50;
/// Log lines marking the phases of the master's start-up ("" = right after the spawn).
const PHASES: [&str; 5] = [
    "",
    "NB backend",
    "database server listener configured db=\"NB\"",
    "database server listener configured db=\"SB\"",
    "cluster topology ready",
];

/// Waits for `needle` in the daemon's log; `Err` with the exit status if it exited first.
fn up_or_exit(d: &mut common::Daemon, needle: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if d.log_text().contains(needle) {
            return Ok(());
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            return Err(format!("exited ({st}):\n{}", d.log_text()));
        }
        if Instant::now() > deadline {
            return Err(format!("not up after {timeout:?}:\n{}", d.log_text()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_survives_nb_restarts_during_start_up() {
    let mut env = Env::start("startup").await;
    env.create_nodes(["n1", "n2"]).await;
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut restarted_before_up = 0;
    // Starts in which a start-up step failed on the restart and was retried.
    let mut retried = 0;
    for i in 0..STARTS {
        let mut m = env.spawn(&format!("master-{i}"), &env.master_args("10.9.0.0/16"));
        // Restart at each phase of start-up in turn: at once, once the NB client exists,
        // after each server's listener setup, once the topology is written.
        let phase = PHASES[i % PHASES.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !m.log_text().contains(phase) && Instant::now() < deadline {
            if let Ok(Some(_)) = m.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !m.log_text().contains("initial node sync done") {
            restarted_before_up += 1;
        }
        env.central.stop_nb();
        env.central.start_nb().unwrap();
        let res = up_or_exit(&mut m, "initial node sync done", Duration::from_secs(60));
        if let Err(why) = res {
            failures.push(format!("start {i}: {why}"));
            continue;
        }
        if m.log_text().contains("failed; retrying with backoff") {
            retried += 1;
        }
        let st = m.terminate();
        if !st.success() {
            failures.push(format!("start {i}: SIGTERM exit {st}:\n{}", m.log_text()));
        }
    }
    let took = t0.elapsed();
    eprintln!(
        "{STARTS} starts, {restarted_before_up} with the NB restarted before the master was up, \
         {retried} retried a start-up step, {took:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The restarts must really hit start-up, or the test proves little.
    assert!(
        restarted_before_up >= STARTS * 3 / 4,
        "{restarted_before_up}"
    );
    assert!(retried > 0, "no start-up step ever had to be retried");
    // The master opened the listeners once; restarts kept them (the Connection table).
    assert_eq!(
        env.central.nb_connections().unwrap(),
        [format!("ptcp:{}:{}", env.nb_addr.port(), env.nb_addr.ip())]
    );
}

/// A clustered (comma-separated) address list: the master writes no member's address into
/// the replicated Connection table, says so at INFO, and keeps running (waiting for the
/// listeners the operator configures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clustered_address_lists_leave_the_connection_table_alone() {
    let env = Env::start("clustered").await;
    let members = |n: usize| {
        (0..n)
            .map(|_| format!("tcp://{}", ovn_testbed::free_loopback_addr().unwrap()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let args: Vec<String> = env
        .master_args("10.9.0.0/16")
        .into_iter()
        .map(|a| {
            if a.starts_with("-nb-address=") {
                format!("-nb-address={}", members(3))
            } else if a.starts_with("-sb-address=") {
                format!("-sb-address={}", members(3))
            } else {
                a
            }
        })
        .collect();
    let mut m = env.spawn("master", &args);
    m.wait_log("clustered SB address list", Duration::from_secs(60));
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("clustered NB address list"))
        .unwrap_or_else(|| panic!("no INFO line for the NB:\n{log}"));
    assert!(line.contains("INFO"), "{line}");
    // Still running a moment later (waiting for the NB), and nothing was written.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        m.child.try_wait().unwrap().is_none(),
        "exited:\n{}",
        m.log_text()
    );
    assert!(env.central.nb_connections().unwrap().is_empty());
    assert!(env.central.sb_connections().unwrap().is_empty());
    assert!(!m.log_text().contains("set-connection"), "{}", m.log_text());
}

/// The node's local OVS database is down when `ovnkube -init-node` starts: the node waits for
/// it (with the shared backoff) instead of exiting, and finishes once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_waits_for_its_ovs_at_start_up() {
    use ovn_testbed::{Chassis, ChassisOpts};
    let env = Env::start("node-ovs").await;
    let mut master = env.spawn("master", &nodebed::master_args(&env));
    master.wait_log("initial node sync done", Duration::from_secs(60));
    nodebed::create_node(&env, "n1").await;
    let ch = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = nodebed::NodeSide::new(&env, ch);
    ns.chassis.stop_ovsdb();
    let args = ns.node_args(&env, "127.0.0.1");
    let (st, log) = std::thread::scope(|s| {
        let init = s.spawn(|| ns.init_node(&args, &[], Duration::from_secs(120)));
        // Down long enough for several attempts to fail.
        let log_path = ns.dir.join("node.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("retrying with backoff")
        {
            assert!(Instant::now() < deadline, "the node never retried");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
        ns.chassis.start_ovsdb().unwrap();
        init.join().unwrap()
    });
    assert!(st.success(), "node init failed ({st}):\n{log}");
    assert!(
        log.contains("configuring Open vSwitch for node n1"),
        "{log}"
    );
    assert!(log.contains("CNI config written"), "{log}");
    let warns = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("configuring Open vSwitch"))
        .count();
    assert_eq!(warns, 1, "one WARN while the error stays the same:\n{log}");
}
