//! Central (NB/SB/northd) lifecycle tests.

use ovn_testbed::{Central, pid_alive};
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_all_gone(pids: &[i32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| pid_alive(*p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn central_starts_serves_tcp_and_cleans_up() {
    let c = Central::start().expect("central");
    c.nbctl(&["ls-add", "x"]).unwrap();
    assert!(
        c.nbctl(&["show"]).unwrap().contains("switch"),
        "show lists x"
    );
    assert!(c.nbctl(&["ls-list"]).unwrap().contains("(x)"));

    // The TCP remote serves the same DB.
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db=tcp:{}", c.nb_tcp()))
        .args(["--timeout=10", "ls-list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(x)"));
    let out = Command::new("ovn-sbctl")
        .arg(format!("--db=tcp:{}", c.sb_tcp()))
        .args(["--timeout=10", "list", "SB_Global"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(c.nb_tcp().port(), c.sb_tcp().port());
    assert!(c.nb_db().starts_with("unix:/") && c.sb_db().ends_with("ovnsb_db.sock"));

    let pids = c.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    let dir = c.dir().to_path_buf();
    drop(c);
    assert!(wait_all_gone(&pids), "daemons still running: {pids:?}");
    assert!(!dir.exists() || std::env::var("OVN_TESTBED_KEEP").is_ok());
}

#[test]
fn two_centrals_do_not_interfere() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(Central::start);
        let b = s.spawn(Central::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.nb_tcp(), b.nb_tcp());
    a.nbctl(&["ls-add", "only-in-a"]).unwrap();
    b.nbctl(&["ls-add", "only-in-b"]).unwrap();
    let la = a.nbctl(&["ls-list"]).unwrap();
    let lb = b.nbctl(&["ls-list"]).unwrap();
    assert!(la.contains("only-in-a") && !la.contains("only-in-b"));
    assert!(lb.contains("only-in-b") && !lb.contains("only-in-a"));
    let a_pids = a.pids();
    drop(a);
    assert!(wait_all_gone(&a_pids));
    // b is unaffected by a's teardown.
    b.nbctl(&["--wait=sb", "sync"]).unwrap();
    assert!(b.sbctl(&["list", "SB_Global"]).is_ok());
}

#[test]
fn nb_can_be_stopped_and_restarted() {
    let mut c = Central::start().unwrap();
    c.nbctl(&["ls-add", "persist"]).unwrap();
    let port = c.nb_tcp();
    c.stop_nb();
    let err = c.nbctl(&["--timeout=1", "ls-list"]);
    assert!(err.is_err(), "NB should be unavailable");
    c.start_nb().unwrap();
    assert_eq!(c.nb_tcp(), port);
    assert!(c.nbctl(&["ls-list"]).unwrap().contains("persist"));
    // northd reconnects: a new switch reaches the SB.
    c.nbctl(&["--wait=sb", "ls-add", "after"]).unwrap();
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db=tcp:{port}"))
        .args(["--timeout=10", "ls-list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
}

#[test]
fn trace_reports_output_verdict() {
    let c = Central::start().unwrap();
    c.nbctl(&[
        "--",
        "ls-add",
        "ls1",
        "--",
        "lsp-add",
        "ls1",
        "pod1",
        "--",
        "lsp-set-addresses",
        "pod1",
        "0a:58:0a:00:01:0a 10.0.1.10",
        "--",
        "lsp-add",
        "ls1",
        "pod2",
        "--",
        "lsp-set-addresses",
        "pod2",
        "0a:58:0a:00:01:0b 10.0.1.11",
    ])
    .unwrap();
    c.nbctl(&["--wait=sb", "sync"]).unwrap();
    let flow = r#"inport=="pod1" && eth.src==0a:58:0a:00:01:0a && eth.dst==0a:58:0a:00:01:0b && ip4.src==10.0.1.10 && ip4.dst==10.0.1.11 && ip.ttl==64 && icmp4.type==8"#;
    let out = c.trace("ls1", flow, &["--minimal"]).unwrap();
    assert!(out.contains(r#"output("pod2")"#), "{out}");
    let bad = c.trace("no-such-dp", flow, &["--minimal"]);
    assert!(bad.is_err());
}
