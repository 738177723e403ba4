//! The command lines users actually run — the vagrant provisioning (which starts ovnkube as the
//! guide does) and the systemd units with their environment files — parse with this binary's
//! flags. The VMs cannot run here; this keeps their scripts honest.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ovnkube::config::{Config, Invocation, parse_args_with_default_file};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Split a shell command line into words, expanding `$VAR`/`${VAR}` from `vars` (a small
/// subset of sh: double quotes, no globbing, unquoted expansions split on spaces).
fn sh_words(line: &str, vars: &HashMap<&str, &str>) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quoted = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                quoted = !quoted;
                have = true;
            }
            '$' => {
                let (name, next) = if chars.get(i + 1) == Some(&'{') {
                    let end = chars[i..]
                        .iter()
                        .position(|&x| x == '}')
                        .map(|p| p + i)
                        .expect("closing }");
                    (chars[i + 2..end].iter().collect::<String>(), end + 1)
                } else {
                    let end = chars[i + 1..]
                        .iter()
                        .position(|x| !(x.is_ascii_alphanumeric() || *x == '_'))
                        .map(|p| p + i + 1)
                        .unwrap_or(chars.len());
                    (chars[i + 1..end].iter().collect::<String>(), end)
                };
                let val = vars
                    .get(name.as_str())
                    .unwrap_or_else(|| panic!("unset variable {name} in {line}"));
                if quoted {
                    cur.push_str(val);
                    have = true;
                } else {
                    let mut parts = val.split(' ').filter(|p| !p.is_empty()).peekable();
                    while let Some(p) = parts.next() {
                        cur.push_str(p);
                        have = true;
                        if parts.peek().is_some() {
                            words.push(std::mem::take(&mut cur));
                        }
                    }
                }
                i = next;
                continue;
            }
            ' ' | '\t' if !quoted => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            _ => {
                cur.push(c);
                have = true;
            }
        }
        i += 1;
    }
    if have {
        words.push(cur);
    }
    words
}

fn parse(words: &[String]) -> Config {
    let no_file = Path::new("/nonexistent/ovn_k8s.conf");
    // The kubeconfig must exist to validate; point it at a file of ours, keeping the flag form.
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let kc_path =
        std::env::temp_dir().join(format!("ovnkube-packaging-{}-{n}.yaml", std::process::id()));
    std::fs::write(&kc_path, "apiVersion: v1\nkind: Config\n").unwrap();
    let kc = kc_path.display().to_string();
    // Likewise a token file, when one is named (an empty value stays empty: "not given").
    let tok_path = std::env::temp_dir().join(format!(
        "ovnkube-packaging-{}-{n}.token",
        std::process::id()
    ));
    std::fs::write(&tok_path, "t\n").unwrap();
    let tok = tok_path.display().to_string();
    let mut words = words.to_vec();
    for i in 0..words.len() {
        if words[i].starts_with("-k8s-kubeconfig=") {
            words[i] = format!("-k8s-kubeconfig={kc}");
        } else if i > 0 && words[i - 1] == "-k8s-kubeconfig" {
            words[i] = kc.clone();
        } else if words[i].starts_with("-k8s-token-file=") && words[i] != "-k8s-token-file=" {
            words[i] = format!("-k8s-token-file={tok}");
        }
    }
    let parsed = parse_args_with_default_file(words.iter().cloned(), no_file);
    let _ = std::fs::remove_file(&kc_path);
    let _ = std::fs::remove_file(&tok_path);
    match parsed {
        Ok(Invocation::Run(c)) => *c,
        other => panic!("{words:?} did not parse as a run: {other:?}"),
    }
}

/// The `ovnkube` invocation in a provisioning script, as argv after the program name.
fn ovnkube_line(script: &str, vars: &HashMap<&str, &str>) -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/vagrant/provisioning/{script}")).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("nohup sudo ovnkube "))
        .unwrap_or_else(|| panic!("{script} starts no ovnkube"));
    let line = line.split(" 2>&1").next().unwrap();
    let words = sh_words(line, vars);
    assert_eq!(&words[..3], ["nohup", "sudo", "ovnkube"]);
    words[3..].to_vec()
}

#[test]
fn vagrant_master_command_line_parses() {
    let vars = HashMap::from([
        ("NODE_NAME", "k8smaster"),
        ("CENTRAL_IP", "192.168.33.11"),
        ("CLUSTER_IP_SUBNET", "192.168.0.0/16"),
        ("SERVICE_IP_SUBNET", "172.16.1.0/24"),
    ]);
    let c = parse(&ovnkube_line("setup-master.sh", &vars));
    assert_eq!(c.init_master.as_deref(), Some("k8smaster"));
    assert!(c.net_controller && c.nodeport);
    assert_eq!(c.cluster_subnets[0].cidr.to_string(), "192.168.0.0/16");
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("tcp:192.168.33.11:6631")
    );
    assert_eq!(
        c.ovn_south.client.client_target().as_deref(),
        Some("tcp:192.168.33.11:6632")
    );
    assert_eq!(c.logging.level, 4);
}

#[test]
fn vagrant_minion_command_line_parses() {
    let vars = HashMap::from([
        ("NODE_NAME", "k8sminion1"),
        ("CENTRAL_IP", "192.168.33.11"),
        ("CLUSTER_IP_SUBNET", "192.168.0.0/16"),
        ("SERVICE_IP_SUBNET", "172.16.1.0/24"),
        ("GATEWAY_INTERFACE", "eth2"),
        ("NEXTHOP", "10.10.0.1"),
        ("TOKEN", "abc.def"),
    ]);
    let c = parse(&ovnkube_line("setup-minion.sh", &vars));
    assert_eq!(c.init_node.as_deref(), Some("k8sminion1"));
    assert!(c.gateway.init && c.nodeport);
    assert_eq!(c.gateway.interface.as_deref(), Some("eth2"));
    assert_eq!(
        c.gateway.nexthop.map(|n| n.to_string()).as_deref(),
        Some("10.10.0.1")
    );
    assert_eq!(c.kubernetes.token.as_deref(), Some("abc.def"));
}

/// `ExecStart=` of a unit with `\` continuations, expanded with its environment file.
fn unit_command(unit: &str, env_file: &str) -> Vec<String> {
    let env_text = std::fs::read_to_string(format!("{ROOT}/dist/{env_file}")).unwrap();
    let env: HashMap<&str, &str> = env_text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let text = std::fs::read_to_string(format!("{ROOT}/dist/{unit}")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    // systemd: ${VAR} is one word, $VAR splits; our sh_words treats an unquoted ${VAR} as
    // splitting too, which is the same for values without spaces.
    let words = sh_words(line, &env);
    assert_eq!(words[0], "/usr/bin/ovnkube");
    words[1..].to_vec()
}

#[test]
fn systemd_units_parse_with_their_environment_files() {
    let words = unit_command("ovnkube-master.service", "ovnkube-master.env");
    // The master's environment file leaves K8S_TOKEN_FILE empty: "not given".
    assert_eq!(token_file_flag(&words), "");
    let m = parse(&words);
    assert_eq!(m.init_master.as_deref(), Some("k8smaster"));
    assert!(m.net_controller);
    assert_eq!(m.cluster_subnets[0].host_prefix_len, 23);
    assert_eq!(m.kubernetes.token_file, None);
    assert_eq!(m.kubernetes.token, None);
    let words = unit_command("ovnkube-node.service", "ovnkube-node.env");
    assert_eq!(token_file_flag(&words), "/etc/ovnkube/k8s-token");
    let n = parse(&words);
    assert_eq!(n.init_node.as_deref(), Some("k8sminion1"));
    assert!(n.gateway.init);
    // Empty GATEWAY_INTERFACE means "not given"; no token is ever given on the command line.
    assert_eq!(n.gateway.interface, None);
    assert!(n.kubernetes.token_file.is_some());
    assert_eq!(n.kubernetes.token, None);
}

/// The units take the API token from a file (`-k8s-token-file`), never with `-k8s-token`:
/// the file named (empty when the environment file leaves it unset).
fn token_file_flag(words: &[String]) -> &str {
    assert!(
        !words.iter().any(|w| w.starts_with("-k8s-token=")),
        "{words:?}"
    );
    words
        .iter()
        .find_map(|w| w.strip_prefix("-k8s-token-file="))
        .unwrap_or_else(|| panic!("no -k8s-token-file in {words:?}"))
}

#[test]
fn sh_words_splits_like_sh() {
    let vars = HashMap::from([("A", "x y"), ("B", "")]);
    assert_eq!(
        sh_words(r#"a "$A" $A -f="$B" $B z"#, &vars),
        ["a", "x y", "x", "y", "-f=", "z"]
    );
}

/// `key=value` settings of a unit file (continuation lines joined), in order.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{ROOT}/dist/{unit}")).unwrap();
    text.replace("\\\n", " ")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn systemd_units_are_notify_restarting_reloadable_and_sandboxed() {
    for (unit, caps, paths) in [
        (
            "ovnkube-master.service",
            &["CAP_DAC_OVERRIDE"][..],
            &["/var/run/ovn", "/var/run/openvswitch"][..],
        ),
        (
            "ovnkube-node.service",
            &["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_DAC_OVERRIDE"][..],
            &[
                "/var/run/openvswitch",
                "/var/run/ovn",
                "/etc/cni/net.d",
                "/opt/cni/bin",
            ][..],
        ),
    ] {
        let s = unit_settings(unit);
        let one = |k: &str| {
            let v = setting(&s, k);
            assert_eq!(v.len(), 1, "{unit}: {k} = {v:?}");
            v[0].to_string()
        };
        assert_eq!(one("Type"), "notify", "{unit}");
        assert_eq!(one("Restart"), "on-failure", "{unit}");
        assert!(one("Wants").contains("network-online.target"), "{unit}");
        assert!(one("After").contains("network-online.target"), "{unit}");
        assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID", "{unit}");
        assert_eq!(one("NoNewPrivileges"), "yes", "{unit}");
        assert_eq!(one("ProtectSystem"), "strict", "{unit}");
        // The pid file's directory and the log directory are writable under ProtectSystem.
        assert_eq!(one("RuntimeDirectory"), "ovnkube", "{unit}");
        assert_eq!(one("LogsDirectory"), "ovnkube", "{unit}");
        let exec = one("ExecStart");
        assert!(exec.contains("-pidfile=/run/ovnkube/"), "{unit}: {exec}");
        assert!(exec.contains("-k8s-token-file="), "{unit}: {exec}");
        assert!(!exec.contains("-k8s-token="), "{unit}: {exec}");
        let rw_line = one("ReadWritePaths");
        let rw: Vec<&str> = rw_line
            .split(' ')
            .map(|p| p.trim_start_matches('-'))
            .collect();
        for p in paths {
            assert!(rw.contains(p), "{unit}: ReadWritePaths lacks {p}: {rw:?}");
        }
        let bound = one("CapabilityBoundingSet");
        let bound: Vec<&str> = bound.split(' ').collect();
        assert_eq!(bound, caps, "{unit}");
    }
    // The env files name a token file, never a token.
    for env in ["ovnkube-master.env", "ovnkube-node.env"] {
        let text = std::fs::read_to_string(format!("{ROOT}/dist/{env}")).unwrap();
        assert!(text.contains("\nK8S_TOKEN_FILE="), "{env}");
        assert!(!text.contains("\nK8S_TOKEN="), "{env}");
        assert!(text.contains("\nLOGFILE=/var/log/ovnkube/"), "{env}");
    }
}

/// `systemd-analyze verify` on the units: exit 0 and not a single warning. Only the binary
/// path is changed, to this build's binary (verify checks that ExecStart is executable).
#[test]
fn systemd_analyze_verify_passes_on_the_units() {
    let dir = std::env::temp_dir().join(format!("ovnkube-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for unit in ["ovnkube-master.service", "ovnkube-node.service"] {
        let text = std::fs::read_to_string(format!("{ROOT}/dist/{unit}")).unwrap();
        let text = text.replace("/usr/bin/ovnkube", env!("CARGO_BIN_EXE_ovnkube"));
        let p = dir.join(unit);
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze (package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_eq!(all.trim(), "", "systemd-analyze verify warned");
}

/// All the text of a log and its rotations (`x.log`, `x.log.1`, `x.log.2.gz`, ...).
fn all_log_text(dir: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".gz") {
            let out = Command::new("gzip").arg("-dc").arg(&p).output().unwrap();
            assert!(out.status.success(), "gzip -dc {name}");
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        } else if name.contains(".log") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

fn count_lines(text: &str, node: &str, what: &str) -> usize {
    let tag = format!("node{{node={node}}}");
    text.lines()
        .filter(|l| l.contains(&tag) && l.contains(what))
        .count()
}

/// The shipped logrotate file, run by the real `logrotate`, rotates a running master's log 3
/// times while the master logs steadily: every line lands in a file that is still there, once,
/// and after each rotation the master writes into the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_loses_no_line_across_three_rotations() {
    let env = common::Env::start("logrotate").await;
    let base = env.dir.join("logrotate");
    let (logdir, rundir) = (base.join("log"), base.join("run"));
    std::fs::create_dir_all(&logdir).unwrap();
    std::fs::create_dir_all(&rundir).unwrap();
    // Only the paths change; logrotate wants its config and log dir not writable by others.
    let conf = std::fs::read_to_string(format!("{ROOT}/dist/ovnkube.logrotate"))
        .unwrap()
        .replace("/var/log/ovnkube/", &format!("{}/", logdir.display()))
        .replace(
            "/run/ovnkube/*.pid /run/ovnkube*.pid",
            &format!("{}/*.pid", rundir.display()),
        );
    assert!(conf.contains("postrotate") && conf.contains("kill -HUP"));
    let conf_path = base.join("ovnkube.logrotate");
    std::fs::write(&conf_path, &conf).unwrap();
    let state = base.join("logrotate.state");

    let log = logdir.join("ovnkube-master.log");
    let empty = base.join("ovn_k8s.conf");
    std::fs::write(&empty, "").unwrap();
    let args = [
        format!("-k8s-kubeconfig={}", env.kubeconfig.display()),
        "-init-master=master".to_string(),
        "-cluster-subnet=10.9.0.0/16".to_string(),
        format!("-nb-address={}", env.central.nb_db()),
        format!("-sb-address={}", env.central.sb_db()),
        "-loglevel=5".to_string(),
        format!("-config-file={}", empty.display()),
        format!("-pidfile={}", rundir.join("ovnkube-master.pid").display()),
        format!("-logfile={}", log.display()),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = common::Daemon {
        child,
        log: log.clone(),
    };
    d.wait_log("initial node sync done", Duration::from_secs(60));

    // Steady logging the test can count: a node every 50 ms, each logged by name.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creator = tokio::spawn({
        let (client, stop) = (env.client.clone(), stop.clone());
        async move {
            let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
            let mut names = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("rot-{}", names.len());
                let node = k8s_openapi::api::core::v1::Node {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                api.create(&Default::default(), &node).await.unwrap();
                names.push(name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            names
        }
    });

    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf_path)
            .output()
            .expect("logrotate (package logrotate)");
        assert!(
            out.status.success(),
            "logrotate round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The master got SIGHUP and writes into the fresh file.
        common::eventually(
            &format!("the master writes to the new log after rotation {round}"),
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    std::fs::read_to_string(&log)
                        .ok()
                        .filter(|t| t.contains("SIGHUP: log file reopened"))
                }
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let names = creator.await.unwrap();
    assert!(names.len() >= 20, "only {} nodes created", names.len());

    // Every node's lines exist exactly once across the log and its rotations.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = all_log_text(&logdir);
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| count_lines(&text, n, "node switch ready") == 0)
            .collect();
        if missing.is_empty() {
            for n in &names {
                assert_eq!(count_lines(&text, n, "allocated host subnet"), 1, "{n}");
                assert_eq!(count_lines(&text, n, "node switch ready"), 1, "{n}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lines of {} nodes lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Three rotations happened: the current log, .1 (delaycompress) and two compressed ones.
    let mut files: Vec<String> = std::fs::read_dir(&logdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "ovnkube-master.log",
            "ovnkube-master.log.1",
            "ovnkube-master.log.2.gz",
            "ovnkube-master.log.3.gz"
        ],
    );
    assert_eq!(d.terminate().code(), Some(0));
}

/// Under `Type=notify`, `READY=1` arrives on `NOTIFY_SOCKET` only after every role's initial
/// sync: the master's node list and the net-controller's pods, policies and services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_notified_after_the_initial_sync() {
    use std::os::unix::net::UnixDatagram;
    let env = common::Env::start("notify").await;
    env.create_nodes(["n1", "n2"]).await;
    let sock_path = env.dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = env.dir.join("notify-master.log");
    let empty = env.dir.join("ovn_k8s.conf");
    std::fs::write(&empty, "").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ovnkube"))
        .args([
            format!("-k8s-kubeconfig={}", env.kubeconfig.display()),
            "-init-master=master".to_string(),
            "-net-controller".to_string(),
            "-cluster-subnet=10.8.0.0/16".to_string(),
            format!("-nb-address={}", env.central.nb_db()),
            format!("-sb-address={}", env.central.sb_db()),
            format!("-config-file={}", empty.display()),
            format!("-logfile={}", log.display()),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = common::Daemon {
        child,
        log: log.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = [0u8; 4096];
    let (msg, log_at_ready) = loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                break (
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                    d.log_text(),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("notify socket: {e}"),
        }
        if let Ok(Some(s)) = d.child.try_wait() {
            panic!("ovnkube exited ({s}) before READY=1:\n{}", d.log_text());
        }
        assert!(Instant::now() < deadline, "no READY=1:\n{}", d.log_text());
    };
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    for synced in [
        "initial node sync done",
        "initial pod sync done",
        "initial policy sync done",
    ] {
        assert!(
            log_at_ready.contains(synced),
            "READY=1 before {synced:?}:\n{log_at_ready}"
        );
    }
    for component in ["master", "pods", "network policies", "services"] {
        assert!(
            log_at_ready.contains(&format!("component=\"{component}\""))
                || log_at_ready.contains(&format!("component={component}")),
            "READY=1 before {component} reported:\n{log_at_ready}"
        );
    }
    // The nodes existed before the start, so their subnets were part of the initial sync.
    assert!(log_at_ready.contains("node{node=n1}") && log_at_ready.contains("node{node=n2}"));
    // SIGTERM: STOPPING=1, then exit 0.
    assert_eq!(d.terminate().code(), Some(0));
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

/// `make install` installs what `make release` built and never builds (it runs as root);
/// without a release binary it stops with an error saying what to run. The units it installs
/// point at `$(PREFIX)`.
#[test]
fn make_install_uses_the_release_build_and_prefix() {
    let base = std::env::temp_dir().join(format!("ovnkube-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (target, dest) = (base.join("target"), base.join("dest"));
    std::fs::create_dir_all(target.join("release")).unwrap();
    let make = |extra: &[String]| {
        Command::new("make")
            .arg("--no-print-directory")
            .arg("-C")
            .arg(ROOT)
            .arg("install")
            .arg(format!("TARGET_DIR={}", target.display()))
            .arg(format!("DESTDIR={}", dest.display()))
            .arg("PREFIX=/usr/local")
            .arg("CARGO=false")
            .args(extra)
            .output()
            .expect("make")
    };
    let out = make(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release/ovnkube is missing: run 'make release'"),
        "{err}"
    );
    assert!(!dest.exists(), "installed something without a binary");

    std::fs::copy(
        env!("CARGO_BIN_EXE_ovnkube"),
        target.join("release/ovnkube"),
    )
    .unwrap();
    // CARGO=false: any attempt to build would fail the install.
    let out = make(&["SYSTEMD_DIR=/lib/systemd/system".to_string()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dest.join("usr/local/bin/ovnkube").is_file());
    let unit =
        std::fs::read_to_string(dest.join("lib/systemd/system/ovnkube-node.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/ovnkube -init-node="),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/ovnkube"), "{unit}");
    assert!(dest.join("etc/logrotate.d/ovnkube").is_file());
    assert!(dest.join("etc/default/ovnkube-node").is_file());
    let _ = std::fs::remove_dir_all(&base);
}
