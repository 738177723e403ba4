//! The command line as a user meets it: `-h`, `-version`, bad flags and values, the pid file
//! and signals.

mod common;

use std::process::Command;
use std::time::Duration;

fn ovnkube(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args(args)
        .output()
        .expect("run ovnkube")
}

/// The flags `-h` lists: the reference's, then (with `extensions`) ovnkube's own.
fn help_flags_with(extensions: bool) -> Vec<String> {
    let out = ovnkube(&["-h"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .take_while(|l| extensions || !l.starts_with("EXTENSIONS"))
        .filter_map(|l| l.strip_prefix("   --"))
        .map(|l| l.split([' ', ',']).next().unwrap_or_default().to_string())
        .collect()
}

fn help_flags() -> Vec<String> {
    help_flags_with(false)
}

#[test]
fn help_lists_every_flag_in_reference_order() {
    let flags = help_flags();
    // The reference's -h: 41 options plus help and version.
    assert_eq!(flags.len(), 43, "{flags:?}");
    assert_eq!(flags.first().map(String::as_str), Some("cluster-subnet"));
    assert_eq!(flags.last().map(String::as_str), Some("version"));
    for f in [
        "init-master",
        "net-controller",
        "nodeport",
        "nb-address",
        "sb-client-cacert",
        "k8s-token",
    ] {
        assert!(flags.iter().any(|x| x == f), "{f} missing");
    }
    for form in ["-help", "--help", "-h"] {
        assert_eq!(ovnkube(&[form]).stdout, ovnkube(&["-h"]).stdout);
    }
}

#[test]
fn docs_cover_every_flag() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ovnkube.md")).unwrap();
    for f in help_flags_with(true) {
        assert!(
            doc.contains(&format!("| `-{f}` |")),
            "docs/ovnkube.md lacks -{f}"
        );
    }
}

#[test]
fn version() {
    for form in ["-version", "--version", "-v"] {
        let out = ovnkube(&[form]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            format!("ovnkube version {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

fn one_line_error(args: &[&str], must_contain: &[&str]) {
    let out = ovnkube(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for m in must_contain {
        assert!(err.contains(m), "{err:?} lacks {m:?}");
    }
}

#[test]
fn bad_flags_and_values_exit_non_zero_with_one_line() {
    one_line_error(&["-bogus=1"], &["-bogus"]);
    one_line_error(
        &["-cluster-subnet=10.0.0.0/33"],
        &["-cluster-subnet", "10.0.0.0/33"],
    );
    one_line_error(
        &["-cluster-subnet", "banana"],
        &["-cluster-subnet", "banana"],
    );
    one_line_error(&["-mtu=abc"], &["-mtu", "abc"]);
    one_line_error(
        &["-nb-address=tcp://ovn.example:6641"],
        &["must be an IP address"],
    );
    one_line_error(
        &["-config-file=/nonexistent/ovn_k8s.conf"],
        &["/nonexistent/ovn_k8s.conf"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pidfile_and_sigterm() {
    let env = common::Env::start("pidfile").await;
    let pidfile = env.dir.join("ovnkube.pid");
    let mut args = env.master_args("10.5.0.0/16");
    args.push(format!("-pidfile={}", pidfile.display()));
    let mut d = env.spawn("master", &args);
    d.wait_log("cluster topology ready", Duration::from_secs(30));
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        d.child.id().to_string()
    );

    // A second instance with the same pid file refuses to start.
    let second = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("is running"), "{msg}");

    assert_eq!(d.terminate().code(), Some(0));
    assert!(!pidfile.exists(), "pid file must be removed on SIGTERM");
    assert!(d.log_text().contains("shutting down"));
}
