//! An API server outage as the operator's log shows it: the master (node sync, pods, services
//! and network policy controllers) has a few dozen objects in flight when the API server stops
//! (connections refused, watches cut) or freezes (nothing answered) for 25 s. It says so once
//! when the API goes away (WARN, with how many objects are affected) and once when it is back
//! (INFO), not once per object, watch and retry; and the work in flight is done afterwards.

mod common;

use std::time::Duration;

use common::outage_objects::{create_objects, wait_served};
use common::{Daemon, Env, eventually};

const WAIT: Duration = Duration::from_secs(120);
/// Within the 20-40 s the issue asks for and below the default 30 s renew deadline of the
/// leader-election Lease (a longer outage makes the master step down, by design).
const OUTAGE: Duration = Duration::from_secs(25);
/// Objects per kind per phase (before the outage, just before it).
const N: usize = 12;
/// "A handful": the outage's WARN and the Lease renewals that fail meanwhile (one per retry
/// period, 20 s by default).
const MAX_WARNS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The process is gone: connections refused, open watches cut.
    Stop,
    /// The process hangs: connections open, nothing answered.
    Pause,
}

/// A master with some work done, more in flight, then `fault` for [`OUTAGE`]; returns the
/// master's log from just before the fault to when the work in flight is done.
async fn outage(name: &str, fault: Fault) -> (Daemon, String) {
    let env = Env::start(name).await;
    let mut master = env.spawn("master", &env.master_args_unix("10.8.0.0/16"));
    master.wait_log("cluster topology ready", WAIT);
    env.create_nodes(&["n1"]).await;
    master.wait_log("initial policy sync done", WAIT);
    create_objects(&env, 0..N).await;
    wait_served(&env, N).await;

    let before = master.log_text().len();
    // Work in flight: created just before the fault, so the controllers are still at it.
    create_objects(&env, N..2 * N).await;
    match fault {
        Fault::Stop => env.sandbox.stop_serving(),
        Fault::Pause => env.sandbox.pause(),
    }
    tokio::time::sleep(OUTAGE).await;
    match fault {
        Fault::Stop => env.sandbox.start_serving(),
        Fault::Pause => env.sandbox.resume(),
    }
    wait_served(&env, 2 * N).await;
    // The recovery line follows the first request or watch that works again.
    let back = eventually("recovery logged", WAIT, || async {
        let log = master.log_text();
        log[before..]
            .lines()
            .any(|l| l.contains("INFO") && l.contains("API server") && l.contains("working again"))
            .then(|| log[before..].to_string())
    })
    .await;
    (master, back)
}

fn check_log(fault: Fault, during: &str) {
    let warns: Vec<&str> = during.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "{fault:?}: {} WARN lines over a {OUTAGE:?} API outage with {} pods, services and \
         policies in flight:\n{}",
        warns.len(),
        N,
        warns.join("\n")
    );
    assert!(
        (1..=MAX_WARNS).contains(&warns.len()),
        "{} WARN lines:\n{during}",
        warns.len()
    );
    // The outage was reported with the number of objects it affects, and its end once at INFO.
    assert!(
        warns
            .iter()
            .any(|l| l.contains("API server") && l.contains("objects=")),
        "{during}"
    );
    let infos: Vec<&str> = during
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("API server") && l.contains("working again"))
        .collect();
    assert_eq!(infos.len(), 1, "{infos:#?}\n{during}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_api_server_is_logged_once_and_the_work_in_flight_is_done_after() {
    let (mut master, during) = outage("api-stop-log", Fault::Stop).await;
    check_log(Fault::Stop, &during);
    // The watches that were cut and the failed writes are still there for debugging.
    assert!(during.lines().any(|l| l.contains("DEBUG")), "{during}");
    assert_eq!(master.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_api_server_is_logged_once_and_the_work_in_flight_is_done_after() {
    let (mut master, during) = outage("api-pause-log", Fault::Pause).await;
    check_log(Fault::Pause, &during);
    assert_eq!(master.terminate().code(), Some(0));
}
