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
        .filter_map(|l| l.strip_prefix("   -"))
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
fn docs_describe_every_flag_as_the_help_does() {
    let out = ovnkube(&["-h"]);
    let help = String::from_utf8(out.stdout).unwrap();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ovnkube.md")).unwrap();
    let options = help.split("GLOBAL OPTIONS:\n").nth(1).unwrap();
    // The reference's flags, then (after a blank line and its header) the extensions.
    let rows = options
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("EXTENSIONS"));
    for line in rows {
        let rest = line
            .strip_prefix("   -")
            .unwrap_or_else(|| panic!("{line:?}"));
        let name = rest.split([' ', ',']).next().unwrap();
        let desc = rest[rest.find("  ").unwrap()..].trim_start();
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `-{name}` |")))
            .unwrap_or_else(|| panic!("docs/ovnkube.md lacks -{name}"));
        let cells: Vec<&str> = row.trim_end_matches(" |").splitn(5, " | ").collect();
        assert_eq!(cells.len(), 4, "{row}");
        assert_eq!(
            cells[3], desc,
            "docs/ovnkube.md describes -{name} differently from -h"
        );
    }
}

#[test]
fn version() {
    for form in ["-version", "--version", "-v"] {
        let out = ovnkube(&[form]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let commit = text
            .trim()
            .strip_prefix(&format!(
                "ovnkube version {} (commit ",
                env!("CARGO_PKG_VERSION")
            ))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{form}: {text:?}"));
        // Tests run from the git checkout, so the commit is known and is the checkout's HEAD.
        let head = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("git");
        assert_eq!(commit, String::from_utf8(head.stdout).unwrap().trim());
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

#[test]
fn a_role_is_required() {
    for args in [&[][..], &["-nodeport"], &["-loglevel="]] {
        one_line_error(
            args,
            &[
                "nothing to do",
                "-init-master",
                "-init-node",
                "-net-controller",
                "-remove-node",
            ],
        );
    }
}

#[test]
fn stray_arguments_are_named() {
    one_line_error(
        &["-init-gateways", "false", "-nodeport"],
        &["unexpected argument \"false\"", "-init-gateways=false"],
    );
    one_line_error(&["foo", "-bogus"], &["unexpected argument \"foo\""]);
    one_line_error(
        &["-net-controller", "--", "-nodeport"],
        &["unexpected argument \"-nodeport\""],
    );
}

#[test]
fn strict_values() {
    one_line_error(
        &["-init-master", "-net-controller"],
        &[
            "-init-master",
            "\"-net-controller\"",
            "not a Kubernetes node name",
        ],
    );
    one_line_error(
        &["-net-controller", "-nb-address=tcp://1.2.3.4:66/foo"],
        &["tcp://1.2.3.4:66/foo", "\"/foo\""],
    );
    one_line_error(
        &["-net-controller", "-encap-type=gre"],
        &["-encap-type", "geneve, vxlan or stt"],
    );
    one_line_error(
        &["-net-controller", "-encap-ip=224.0.0.1"],
        &["-encap-ip", "unicast IPv4"],
    );
    one_line_error(
        &["-net-controller", "-cni-plugin=/opt/cni/bin/x"],
        &["-cni-plugin", "not a path"],
    );
    // The ssl defaults point at /etc/openvswitch; the first missing file is named.
    one_line_error(
        &["-net-controller", "-nb-address=ssl://1.2.3.4:6641"],
        &["-nb-client-privkey", "/etc/openvswitch/ovnnb-privkey.pem"],
    );
    // An empty integer is "unset": parsing gets as far as the missing role.
    one_line_error(&["-loglevel=", "-mtu="], &["nothing to do"]);
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_start_up_error() {
    let started = std::time::Instant::now();
    one_line_error(
        &["-net-controller", "-logfile=/nonexistent-dir/ovnkube.log"],
        &[
            "cannot open log file /nonexistent-dir/ovnkube.log",
            "-logfile",
        ],
    );
    // Before anything else: no API server or database was waited for.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Logging to a redirected stderr (nohup, a pipe, a file) carries no colour codes, and SIGHUP
/// does not stop the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_colour_codes_on_a_redirected_stderr() {
    let env = common::Env::start("nocolour").await;
    let stderr_path = env.dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let args = [
        format!("-k8s-kubeconfig={}", env.kubeconfig.display()),
        "-init-master=master".to_string(),
        "-cluster-subnet=10.6.0.0/16".to_string(),
        format!("-nb-address={}", env.central.nb_db()),
        format!("-sb-address={}", env.central.sb_db()),
        "-loglevel=5".to_string(),
        format!("-config-file={}", env.dir.join("none.conf").display()),
    ];
    std::fs::write(env.dir.join("none.conf"), "").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    // Daemon kills the child on drop; its `log` is where we redirected stderr.
    let mut d = common::Daemon {
        child,
        log: stderr_path.clone(),
    };
    d.wait_log("initial node sync done", Duration::from_secs(60));
    // SIGHUP (logrotate, `systemctl reload`) never kills the daemon, with or without -logfile.
    let hup = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    d.wait_log("SIGHUP: no -logfile to reopen", Duration::from_secs(30));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    assert_eq!(d.terminate().code(), Some(0));
    let text = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        text.contains(" INFO ") && text.contains(" DEBUG "),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "escape codes in: {text:?}");
}
