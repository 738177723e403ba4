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

/// `ovs-appctl ovsdb-server/list-remotes` of one of the central's servers.
fn remotes(c: &Central, stem: &str) -> String {
    let out = Command::new("ovs-appctl")
        .arg("-t")
        .arg(c.dir().join(format!("{stem}.ctl")))
        .arg("ovsdb-server/list-remotes")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nbctl_tcp(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new("ovn-nbctl")
        .arg(format!("--db=tcp:{addr}"))
        .arg("--timeout=5")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn central_starts_like_the_stock_package_and_cleans_up() {
    let c = Central::start().expect("central");
    c.nbctl(&["ls-add", "x"]).unwrap();
    assert!(
        c.nbctl(&["show"]).unwrap().contains("switch"),
        "show lists x"
    );
    assert!(c.nbctl(&["ls-list"]).unwrap().contains("(x)"));
    assert!(c.nb_db().starts_with("unix:/") && c.sb_db().ends_with("ovnsb_db.sock"));

    // ovn-ctl's remotes: the unix socket and the database's own Connection table, no TCP.
    for (stem, schema) in [
        ("ovnnb_db", "db:OVN_Northbound,NB_Global,connections"),
        ("ovnsb_db", "db:OVN_Southbound,SB_Global,connections"),
    ] {
        let r = remotes(&c, stem);
        assert!(r.contains(schema), "{stem}: {r}");
        assert!(
            r.contains(&format!(
                "punix:{}",
                c.dir().join(format!("{stem}.sock")).display()
            )),
            "{r}"
        );
        assert!(!r.contains("ptcp"), "{stem} must not pre-open TCP: {r}");
    }
    assert!(c.nb_connections().unwrap().is_empty());
    assert!(c.sb_connections().unwrap().is_empty());

    // The installed tools find the databases under OVN_RUNDIR by default.
    let out = Command::new("ovn-nbctl")
        .env("OVN_RUNDIR", c.ovn_rundir())
        .args(["--timeout=5", "ls-list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(x)"),
        "{out:?}"
    );

    // A Connection row (what an operator or ovnkube writes) opens the listener.
    let addr = ovn_testbed::free_loopback_addr().unwrap();
    assert!(!nbctl_tcp(addr, &["ls-list"]).status.success());
    c.nbctl(&[
        "set-connection",
        &format!("ptcp:{}:{}", addr.port(), addr.ip()),
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = nbctl_tcp(addr, &["ls-list"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(x)"),
        "{out:?}"
    );

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
    assert_ne!(a.nb_sock(), b.nb_sock());
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
    let addr = ovn_testbed::free_loopback_addr().unwrap();
    c.nbctl(&[
        "set-connection",
        &format!("ptcp:{}:{}", addr.port(), addr.ip()),
    ])
    .unwrap();
    c.stop_nb();
    let err = c.nbctl(&["--timeout=1", "ls-list"]);
    assert!(err.is_err(), "NB should be unavailable");
    c.start_nb().unwrap();
    assert!(c.nbctl(&["ls-list"]).unwrap().contains("persist"));
    // northd reconnects: a new switch reaches the SB.
    c.nbctl(&["--wait=sb", "ls-add", "after"]).unwrap();
    // The restarted server reopened the listener its Connection table names.
    let out = nbctl_tcp(addr, &["ls-list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("after"),
        "{out:?}"
    );
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
