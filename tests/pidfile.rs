//! The pid file as an attacker or a crash leaves it: a stale file naming a live, unrelated
//! process does not block start-up; a symlink planted at the path is refused and its target
//! left alone.

mod common;

use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pidfiles_do_not_block_and_symlinks_are_refused() {
    let env = common::Env::start("pidfile-hostile").await;
    let pidfile = env.dir.join("ovnkube.pid");
    let mut args = env.master_args("10.6.0.0/16");
    args.retain(|a| !a.starts_with("-nb-address=") && !a.starts_with("-sb-address="));
    args.push(format!("-nb-address={}", env.central.nb_db()));
    args.push(format!("-sb-address={}", env.central.sb_db()));
    args.push(format!("-pidfile={}", pidfile.display()));

    // A symlink to a file we care about: refused at once, the target untouched.
    let victim = env.dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, &pidfile).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("symbolic link"), "{msg}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_file(&pidfile).unwrap();

    // A stale file naming a live process that is not ovnkube (this test itself, and PID 1).
    for stale in [std::process::id(), 1] {
        std::fs::write(&pidfile, stale.to_string()).unwrap();
        let mut d = env.spawn(&format!("master-{stale}"), &args);
        d.wait_log("cluster topology ready", Duration::from_secs(60));
        assert_eq!(
            std::fs::read_to_string(&pidfile).unwrap(),
            d.child.id().to_string(),
            "stale pid {stale}"
        );
        assert_eq!(d.terminate().code(), Some(0));
        assert!(!pidfile.exists());
    }
}
