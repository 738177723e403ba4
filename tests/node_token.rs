//! The API token reaches the local OVS database without ever being on a command line: every
//! program ovnkube runs goes through a recording wrapper on PATH, and the token must be in
//! `Open_vSwitch external_ids` yet in no recorded argv.

mod common;
mod nodebed;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::Env;
use nodebed::*;
use ovn_testbed::{Chassis, ChassisOpts};

/// Programs ovnkube may run during a node init.
const WRAPPED: &[&str] = &[
    "ovs-vsctl",
    "ovn-nbctl",
    "ovn-sbctl",
    "ovs-ofctl",
    "ovs-appctl",
    "ovn-appctl",
    "ip",
    "nsenter",
    "ethtool",
    "sysctl",
];

/// A directory of wrappers that append their argv (fields separated by 0x1f) to `log` and
/// exec the real program.
fn recorder(dir: &Path, log: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for prog in WRAPPED {
        let Some(real) = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(prog))
            .find(|p| p.exists())
        else {
            continue;
        };
        let w = dir.join(prog);
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\nprintf '%s\\037' \"$0\" \"$@\" >> '{}'\nprintf '\\n' >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_is_written_over_ovsdb_never_on_a_command_line() {
    const TOKEN: &str = "tok-Zq81-never-in-argv";
    let env = Env::start("node-token").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    // The token comes from the config file, so not even ovnkube's own argv carries it.
    let conf = ns.dir.join("token.conf");
    std::fs::write(&conf, format!("[kubernetes]\ntoken={TOKEN}\n")).unwrap();
    let args: Vec<String> = ns
        .node_args(&env, "127.0.0.1")
        .into_iter()
        .map(|a| {
            if a.starts_with("-config-file=") {
                format!("-config-file={}", conf.display())
            } else {
                a
            }
        })
        .collect();
    let log = ns.dir.join("argv.log");
    let path = recorder(&ns.dir.join("wrap"), &log);
    // An old token is replaced, not kept (a map insert alone would keep it).
    ns.chassis
        .vsctl(&["set", "Open_vSwitch", ".", "external_ids:k8s-api-token=old"])
        .unwrap();
    let (st, out) = tokio::task::block_in_place(|| {
        ns.init_node(&args, &[("PATH", path.as_str())], Duration::from_secs(90))
    });
    assert!(st.success(), "node init failed:\n{out}");
    let stored = ns
        .chassis
        .vsctl(&["get", "Open_vSwitch", ".", "external_ids:k8s-api-token"])
        .unwrap();
    assert_eq!(stored.trim().trim_matches('"'), TOKEN);

    let recorded = std::fs::read_to_string(&log).unwrap_or_default();
    let calls: Vec<&str> = recorded.lines().collect();
    // The recorder saw the node's OVS writes (so an argv with the token would have been seen).
    assert!(
        calls
            .iter()
            .any(|c| c.contains("ovs-vsctl") && c.contains("external_ids")),
        "the recorder saw no ovs-vsctl external_ids call: {recorded}"
    );
    for c in &calls {
        assert!(!c.contains(TOKEN), "the token was on a command line: {c:?}");
    }
    assert!(!out.contains(TOKEN), "the token was logged:\n{out}");
    eprintln!(
        "{} child commands recorded, none with the token",
        calls.len()
    );
}

/// `-cni-credentials-dir`: the plugin is pointed (in OVS) at host copies of the token file,
/// private to root, not at the agent's own path (which under the DaemonSet is inside its pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cni_plugin_gets_private_copies_of_the_token_file() {
    let env = Env::start("node-cred-copy").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let token = ns.dir.join("pod-token");
    std::fs::write(&token, "tok-copy-7d1e\n").unwrap();
    let creds = ns.dir.join("host/credentials");
    let mut args = ns.node_args(&env, "127.0.0.1");
    args.push(format!("-k8s-token-file={}", token.display()));
    args.push(format!("-cni-credentials-dir={}", creds.display()));
    let (st, out) =
        tokio::task::block_in_place(|| ns.init_node(&args, &[], Duration::from_secs(90)));
    assert!(st.success(), "node init failed:\n{out}");

    let published = ns
        .chassis
        .vsctl(&[
            "get",
            "Open_vSwitch",
            ".",
            "external_ids:k8s-api-token-file",
        ])
        .unwrap();
    let copy = creds.join("token");
    assert_eq!(
        published.trim().trim_matches('"'),
        copy.display().to_string()
    );
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "tok-copy-7d1e\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(mode(&creds), 0o700);
    assert!(
        !out.contains("tok-copy-7d1e"),
        "the token was logged:\n{out}"
    );

    // A re-run after the token rotated refreshes the copy (a running agent does the same
    // every few seconds; see node::credentials).
    std::fs::write(&token, "tok-rotated-22b0\n").unwrap();
    let (st, out) =
        tokio::task::block_in_place(|| ns.init_node(&args, &[], Duration::from_secs(90)));
    assert!(st.success(), "second node init failed:\n{out}");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "tok-rotated-22b0\n"
    );
}

/// A node agent that stays running (`-nodeport`) re-copies the token when it rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_agent_refreshes_the_plugin_token_copy_after_rotation() {
    let env = Env::start("node-cred-refresh").await;
    let _master = env.spawn("master", &master_args(&env));
    create_node(&env, "n1").await;
    let chassis = Chassis::start(&env.central, "n1", ChassisOpts::default()).unwrap();
    let ns = NodeSide::new(&env, chassis);
    let token = ns.dir.join("pod-token");
    std::fs::write(&token, "tok-first-41aa\n").unwrap();
    let creds = ns.dir.join("host/credentials");
    let mut args = vec![env!("CARGO_BIN_EXE_ovnkube").to_string()];
    args.extend(ns.node_args(&env, "127.0.0.1"));
    args.push("-nodeport".into());
    args.push(format!("-k8s-token-file={}", token.display()));
    args.push(format!("-cni-credentials-dir={}", creds.display()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = ns
        .chassis
        .command(&argv)
        .unwrap()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = common::Daemon {
        child,
        log: ns.dir.join("node.log"),
    };
    agent.wait_log(
        "node initialised; CNI config written",
        Duration::from_secs(90),
    );
    let copy = creds.join("token");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "tok-first-41aa\n");

    std::fs::write(&token, "tok-second-93cd\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&copy).unwrap_or_default() != "tok-second-93cd\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy was not refreshed:\n{}",
            agent.log_text()
        );
        if let Ok(Some(s)) = agent.child.try_wait() {
            panic!("the node agent exited ({s}):\n{}", agent.log_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        agent
            .log_text()
            .contains("refreshed the CNI plugin's API credentials")
    );
    assert_eq!(agent.terminate().code(), Some(0));
}
