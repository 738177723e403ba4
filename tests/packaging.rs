//! The command lines users actually run — the vagrant provisioning (which starts ovnkube as the
//! guide does) and the systemd units with their environment files — parse with this binary's
//! flags. The VMs cannot run here; this keeps their scripts honest.

use std::collections::HashMap;
use std::path::Path;

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
    let mut words = words.to_vec();
    for i in 0..words.len() {
        if words[i].starts_with("-k8s-kubeconfig=") {
            words[i] = format!("-k8s-kubeconfig={kc}");
        } else if i > 0 && words[i - 1] == "-k8s-kubeconfig" {
            words[i] = kc.clone();
        }
    }
    let parsed = parse_args_with_default_file(words.iter().cloned(), no_file);
    let _ = std::fs::remove_file(&kc_path);
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
    let m = parse(&unit_command(
        "ovnkube-master.service",
        "ovnkube-master.env",
    ));
    assert_eq!(m.init_master.as_deref(), Some("k8smaster"));
    assert!(m.net_controller);
    assert_eq!(m.cluster_subnets[0].host_prefix_len, 23);
    let n = parse(&unit_command("ovnkube-node.service", "ovnkube-node.env"));
    assert_eq!(n.init_node.as_deref(), Some("k8sminion1"));
    assert!(n.gateway.init);
    // Empty GATEWAY_INTERFACE / K8S_TOKEN_FILE mean "not given"; no token on the command line.
    assert_eq!(n.gateway.interface, None);
    assert_eq!(n.kubernetes.token_file, None);
    assert_eq!(n.kubernetes.token, None);
}

#[test]
fn sh_words_splits_like_sh() {
    let vars = HashMap::from([("A", "x y"), ("B", "")]);
    assert_eq!(
        sh_words(r#"a "$A" $A -f="$B" $B z"#, &vars),
        ["a", "x y", "x", "y", "-f=", "z"]
    );
}
