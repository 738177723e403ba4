#![allow(clippy::field_reassign_with_default)] // tests build expected configs field by field

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Where the database server would listen for `a`, read through what the master acts on.
fn listen_remote(a: &OvnAuth) -> Option<String> {
    match a.server_setup() {
        ServerSetup::Listen { remote, .. } => Some(remote),
        _ => None,
    }
}

/// A private temp directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ovnkube-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    fn missing(&self) -> PathBuf {
        self.0.join("does-not-exist.conf")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn invoke(args: &[&str]) -> Result<Invocation, ConfigError> {
    let t = Tmp::new();
    parse_args_with_default_file(args.iter().copied(), &t.missing())
}

fn run(args: &[&str]) -> Config {
    match invoke(args) {
        Ok(Invocation::Run(c)) => *c,
        other => panic!("expected Run for {args:?}, got {other:?}"),
    }
}

fn err(args: &[&str]) -> String {
    match invoke(args) {
        Err(e) => e.to_string(),
        other => panic!("expected an error for {args:?}, got {other:?}"),
    }
}

fn with_file(text: &str, args: &[&str]) -> Result<Config, ConfigError> {
    let t = Tmp::new();
    let p = t.file("ovn_k8s.conf", text);
    let mut v: Vec<String> = vec![format!("-config-file={p}")];
    v.extend(args.iter().map(|s| s.to_string()));
    match parse_args_with_default_file(v, &t.missing())? {
        Invocation::Run(c) => Ok(*c),
        other => panic!("expected Run, got {other:?}"),
    }
}

fn file_err(text: &str) -> String {
    with_file(text, &[]).unwrap_err().to_string()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn inet(s: &str) -> OvnEndpoint {
    OvnEndpoint::Inet(s.parse::<SocketAddr>().unwrap())
}

// ---------------------------------------------------------------- flag syntax

#[test]
fn string_flag_all_four_forms() {
    for args in [
        vec!["-init-master=node1"],
        vec!["-init-master", "node1"],
        vec!["--init-master=node1"],
        vec!["--init-master", "node1"],
    ] {
        assert_eq!(run(&args).init_master.as_deref(), Some("node1"), "{args:?}");
    }
}

#[test]
fn int_flag_all_four_forms_and_go_bases() {
    for args in [
        vec!["-mtu=1500"],
        vec!["-mtu", "1500"],
        vec!["--mtu=1500"],
        vec!["--mtu", "1500"],
        vec!["-mtu=0x5dc"],
        vec!["-mtu=02734"],
        vec!["-mtu=+1500"],
    ] {
        assert_eq!(run(&args).mtu, 1500, "{args:?}");
    }
}

#[test]
fn bool_flag_forms() {
    for t in ["1", "t", "T", "true", "TRUE", "True"] {
        assert!(run(&[&format!("-nodeport={t}")]).nodeport, "{t}");
        assert!(run(&[&format!("--nodeport={t}")]).nodeport, "{t}");
    }
    for f in ["0", "f", "F", "false", "FALSE", "False"] {
        assert!(!run(&[&format!("-nodeport={f}")]).nodeport, "{f}");
    }
    assert!(run(&["-nodeport"]).nodeport);
    assert!(run(&["--nodeport"]).nodeport);
    assert!(!run(&[]).nodeport);
    let c = run(&[
        "-net-controller",
        "-init-gateways",
        "-gateway-spare-interface",
        "-ha",
    ]);
    assert!(c.net_controller && c.gateway.init && c.gateway.spare_interface && c.ha);
}

#[test]
fn bad_bool_value() {
    assert_eq!(
        err(&["-nodeport=maybe"]),
        "invalid value \"maybe\" for flag -nodeport: must be one of true, false, 1, 0, t, f (use -name or -name=false)"
    );
}

#[test]
fn bool_with_separate_value_is_a_stray_argument() {
    // Go would set -init-gateways, stop at "false" and silently drop -nodeport.
    assert_eq!(
        err(&["-init-gateways", "false", "-nodeport"]),
        "unexpected argument \"false\": ovnkube takes only flags; a boolean flag takes its value after '=' (write -init-gateways=false, not -init-gateways false) (see ovnkube -h)"
    );
}

#[test]
fn positional_arguments_are_errors_naming_them() {
    for (args, stray) in [
        (vec!["foo", "-bogus"], "foo"),
        (vec!["-ha", "extra", "-nodeport"], "extra"),
        (vec!["-ha", "-", "-nodeport"], "-"),
        (vec!["-ha", "--", "-nodeport"], "-nodeport"),
        (vec!["-mtu", "1500", "x"], "x"),
        (vec!["help", "-ha"], "help"),
    ] {
        let e = err(&args);
        assert!(
            e.starts_with(&format!(
                "unexpected argument {stray:?}: ovnkube takes only flags"
            )),
            "{args:?}: {e}"
        );
    }
    // A trailing `--` has nothing after it and is fine.
    assert!(run(&["-ha", "--"]).ha);
}

#[test]
fn last_occurrence_wins() {
    assert_eq!(run(&["-mtu=1500", "--mtu", "9000"]).mtu, 9000);
    assert!(!run(&["-nodeport", "-nodeport=false"]).nodeport);
    assert_eq!(
        run(&["-init-node=a", "-init-node=b"]).init_node.as_deref(),
        Some("b")
    );
}

#[test]
fn unknown_flag() {
    assert_eq!(
        err(&["-bogus"]),
        "flag provided but not defined: -bogus (see ovnkube -h)"
    );
    assert_eq!(
        err(&["--bogus=1", "-nodeport"]),
        "flag provided but not defined: -bogus (see ovnkube -h)"
    );
    // Single-letter clusters are not a thing in Go: -nh is one unknown flag.
    assert_eq!(
        err(&["-nh"]),
        "flag provided but not defined: -nh (see ovnkube -h)"
    );
}

#[test]
fn bad_int_value() {
    assert_eq!(
        err(&["-mtu=abc"]),
        "invalid value \"abc\" for flag -mtu: must be an integer"
    );
    assert_eq!(
        err(&["-conntrack-zone", "12x"]),
        "invalid value \"12x\" for flag -conntrack-zone: must be an integer"
    );
    assert_eq!(
        err(&["-mtu=99999999999999999999"]),
        "invalid value \"99999999999999999999\" for flag -mtu: value out of range"
    );
}

#[test]
fn first_error_in_argv_order_wins() {
    assert!(err(&["-mtu=abc", "-bogus"]).contains("-mtu"));
    assert!(err(&["-bogus", "-mtu=abc"]).contains("-bogus"));
}

#[test]
fn missing_value_and_bad_syntax() {
    assert_eq!(
        err(&["-mtu"]),
        "flag needs an argument: -mtu (see ovnkube -h)"
    );
    assert_eq!(
        err(&["---mtu=1"]),
        "bad flag syntax: ---mtu=1 (see ovnkube -h)"
    );
    assert_eq!(err(&["-=1"]), "bad flag syntax: -=1 (see ovnkube -h)");
}

#[test]
fn separate_value_starting_with_dash_is_taken_verbatim() {
    assert_eq!(
        run(&["-cni-conf-dir", "-nodeport"]).cni.conf_dir,
        PathBuf::from("-nodeport")
    );
    assert_eq!(
        err(&["-loglevel", "-1"]),
        "invalid value \"-1\" for -loglevel: must be between 1 (fatal) and 5 (debug)"
    );
}

#[test]
fn empty_and_zero_mean_not_given() {
    let c = run(&["-init-master=", "-mtu=0", "-loglevel=0", "-encap-type="]);
    assert_eq!(c.init_master, None);
    assert_eq!(c.mtu, 1400);
    assert_eq!(c.logging.level, 4);
    assert_eq!(c.encap_type, "geneve");
}

#[test]
fn help_forms() {
    for a in ["-h", "-help", "--help", "--h", "-h=true", "help", "h"] {
        match invoke(&[a]) {
            Ok(Invocation::Help(t)) => assert_eq!(t, help_text(), "{a}"),
            other => panic!("{a}: {other:?}"),
        }
    }
    assert!(matches!(invoke(&["-h=false"]), Ok(Invocation::Run(_))));
    // Help wins over version and over config problems (the config is never loaded).
    assert!(matches!(invoke(&["-v", "-h"]), Ok(Invocation::Help(_))));
    assert!(matches!(
        invoke(&["-config-file=/nonexistent/x.conf", "-mtu=5", "-h"]),
        Ok(Invocation::Help(_))
    ));
    // A flag syntax error is reported even with -h, as Go's parser fails first.
    assert!(invoke(&["-h", "-bogus"]).is_err());
}

#[test]
fn version_forms() {
    for a in ["-v", "-version", "--version", "--v", "-v=1"] {
        match invoke(&[a]) {
            Ok(Invocation::Version(t)) => assert_eq!(t, VERSION_TEXT, "{a}"),
            other => panic!("{a}: {other:?}"),
        }
    }
    assert_eq!(
        VERSION_TEXT,
        format!(
            "ovnkube version {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            env!("OVNKUBE_GIT_COMMIT")
        )
    );
    // A hex commit id from git, or "unknown" outside a checkout; never empty.
    let commit = env!("OVNKUBE_GIT_COMMIT");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
}

#[test]
fn non_utf8_argument_before_stop_is_an_error() {
    use std::os::unix::ffi::OsStringExt;
    let t = Tmp::new();
    let bad = OsString::from_vec(vec![b'-', b'x', 0xff]);
    assert!(parse_args_with_default_file(vec![bad], &t.missing()).is_err());
    let bad = OsString::from_vec(vec![b'x', 0xff]);
    assert!(parse_args_with_default_file(vec![OsString::from("-ha"), bad], &t.missing()).is_err());
}

// ---------------------------------------------------------------- the guide's command lines

#[test]
fn guide_master_command_line() {
    let t = Tmp::new();
    let kc = t.file("kubeconfig.yaml", "apiVersion: v1\n");
    let line = format!(
        "-k8s-kubeconfig {kc} -net-controller -init-master=node1 -cluster-subnet=10.128.0.0/14 \
         -service-cluster-ip-range=172.16.1.0/24 -nodeport -nb-address=tcp://10.0.0.5:6631 \
         -sb-address=tcp://10.0.0.5:6632 -loglevel=4 -logfile=/var/log/openvswitch/ovnkube.log"
    );
    let c = run(&line.split(' ').collect::<Vec<_>>());
    let mut want = Config::default();
    want.kubernetes.kubeconfig = Some(PathBuf::from(&kc));
    want.net_controller = true;
    want.init_master = Some("node1".into());
    want.cluster_subnets = vec![ClusterSubnet {
        cidr: net("10.128.0.0/14"),
        host_prefix_len: 24,
    }];
    want.service_cidr = Some(net("172.16.1.0/24"));
    want.nodeport = true;
    let tcp = |ep: &str| OvnAuth {
        scheme: OvnScheme::Tcp,
        endpoints: vec![inet(ep)],
        privkey: None,
        cert: None,
        cacert: None,
    };
    want.ovn_north = OvnDbConfig {
        client: tcp("10.0.0.5:6631"),
        server: tcp("10.0.0.5:6631"),
    };
    want.ovn_south = OvnDbConfig {
        client: tcp("10.0.0.5:6632"),
        server: tcp("10.0.0.5:6632"),
    };
    want.logging = LoggingConfig {
        level: 4,
        file: Some("/var/log/openvswitch/ovnkube.log".into()),
    };
    assert_eq!(c, want);
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("tcp:10.0.0.5:6631")
    );
    assert_eq!(
        listen_remote(&c.ovn_south.server).as_deref(),
        Some("ptcp:6632:10.0.0.5")
    );
}

fn guide_node_line(kc: &str) -> String {
    format!(
        "-k8s-kubeconfig {kc} -loglevel=4 -logfile=/var/log/openvswitch/ovnkube.log \
         -k8s-apiserver=http://10.0.0.5:8080 -init-node=node2 -nodeport \
         -nb-address=tcp://10.0.0.5:6631 -sb-address=tcp://10.0.0.5:6632 -k8s-token=test \
         -init-gateways -gateway-interface=enp0s9 -gateway-nexthop=10.10.0.1 \
         -service-cluster-ip-range=172.16.1.0/24 -cluster-subnet=192.168.0.0/16"
    )
}

fn expected_node(kc: &str, spare: bool) -> Config {
    let mut want = Config::default();
    want.kubernetes = KubernetesConfig {
        kubeconfig: Some(PathBuf::from(kc)),
        apiserver: "http://10.0.0.5:8080".into(),
        cacert: None,
        token: Some("test".into()),
        token_file: None,
    };
    want.logging = LoggingConfig {
        level: 4,
        file: Some("/var/log/openvswitch/ovnkube.log".into()),
    };
    want.init_node = Some("node2".into());
    want.nodeport = true;
    let tcp = |ep: &str| OvnAuth {
        scheme: OvnScheme::Tcp,
        endpoints: vec![inet(ep)],
        privkey: None,
        cert: None,
        cacert: None,
    };
    want.ovn_north = OvnDbConfig {
        client: tcp("10.0.0.5:6631"),
        server: tcp("10.0.0.5:6631"),
    };
    want.ovn_south = OvnDbConfig {
        client: tcp("10.0.0.5:6632"),
        server: tcp("10.0.0.5:6632"),
    };
    want.gateway = GatewayConfig {
        init: true,
        interface: Some("enp0s9".into()),
        nexthop: Some(Ipv4Addr::new(10, 10, 0, 1)),
        spare_interface: spare,
    };
    want.service_cidr = Some(net("172.16.1.0/24"));
    want.cluster_subnets = vec![ClusterSubnet {
        cidr: net("192.168.0.0/16"),
        host_prefix_len: 24,
    }];
    want
}

#[test]
fn guide_node_command_line() {
    let t = Tmp::new();
    let kc = t.file("kubeconfig.yaml", "apiVersion: v1\n");
    let line = guide_node_line(&kc);
    assert_eq!(
        run(&line.split(' ').collect::<Vec<_>>()),
        expected_node(&kc, false)
    );
    let line = format!("{line} -gateway-spare-interface");
    assert_eq!(
        run(&line.split(' ').collect::<Vec<_>>()),
        expected_node(&kc, true)
    );
}

#[test]
fn vagrant_master_with_ssl_args() {
    let t = Tmp::new();
    let kc = t.file("kubeconfig.yaml", "apiVersion: v1\n");
    let ssl_args = "-nb-server-privkey /etc/openvswitch/ovnnb-privkey.pem -nb-server-cert /etc/openvswitch/ovnnb-cert.pem -nb-server-cacert /vagrant/pki/switchca/cacert.pem -sb-server-privkey /etc/openvswitch/ovnsb-privkey.pem -sb-server-cert /etc/openvswitch/ovnsb-cert.pem -sb-server-cacert /vagrant/pki/switchca/cacert.pem -nb-client-privkey /etc/openvswitch/ovncontroller-privkey.pem -nb-client-cert /etc/openvswitch/ovncontroller-cert.pem -nb-client-cacert /etc/openvswitch/ovnnb-ca.cert -sb-client-privkey /etc/openvswitch/ovncontroller-privkey.pem -sb-client-cert /etc/openvswitch/ovncontroller-cert.pem -sb-client-cacert /etc/openvswitch/ovnsb-ca.cert";
    let line = format!(
        "-k8s-kubeconfig {kc} -net-controller -loglevel=4 -k8s-apiserver=http://192.168.33.11:8080 \
         -logfile=/var/log/openvswitch/ovnkube.log -init-master=k8smaster -cluster-subnet=192.168.0.0/16 \
         -service-cluster-ip-range=172.16.1.0/24 -nodeport -nb-address=ssl://192.168.33.11:6631 \
         -sb-address=ssl://192.168.33.11:6632 {ssl_args}"
    );
    let c = run(&line.split_whitespace().collect::<Vec<_>>());
    assert_eq!(c.init_master.as_deref(), Some("k8smaster"));
    assert!(c.net_controller && c.nodeport);
    assert_eq!(c.kubernetes.apiserver, "http://192.168.33.11:8080");
    let nb = &c.ovn_north;
    assert_eq!(nb.client.scheme, OvnScheme::Ssl);
    assert_eq!(
        nb.client.client_target().as_deref(),
        Some("ssl:192.168.33.11:6631")
    );
    assert_eq!(
        listen_remote(&nb.server).as_deref(),
        Some("pssl:6631:192.168.33.11")
    );
    assert_eq!(
        nb.client.ssl_args(),
        vec![
            "--private-key=/etc/openvswitch/ovncontroller-privkey.pem",
            "--certificate=/etc/openvswitch/ovncontroller-cert.pem",
            "--bootstrap-ca-cert=/etc/openvswitch/ovnnb-ca.cert",
        ]
    );
    assert_eq!(
        nb.server.cacert.as_deref(),
        Some(Path::new("/vagrant/pki/switchca/cacert.pem"))
    );
    let sb = &c.ovn_south;
    assert_eq!(
        listen_remote(&sb.server).as_deref(),
        Some("pssl:6632:192.168.33.11")
    );
    assert_eq!(
        sb.server.privkey.as_deref(),
        Some(Path::new("/etc/openvswitch/ovnsb-privkey.pem"))
    );
    assert_eq!(
        sb.client.cacert.as_deref(),
        Some(Path::new("/etc/openvswitch/ovnsb-ca.cert"))
    );
}

#[test]
fn vagrant_tcp_master_needs_no_certs() {
    let c = run(&[
        "-nb-address=tcp://192.168.33.11:6631",
        "-sb-address=tcp://192.168.33.11:6632",
    ]);
    assert!(c.ovn_north.client.ssl_args().is_empty());
    assert_eq!(c.ovn_north.client.privkey, None);
}

// ---------------------------------------------------------------- config file and precedence

#[test]
fn precedence_default_file_cli() {
    let file = "[default]\nmtu=1500\nconntrack-zone=64321\nencap-type=vxlan\n\
                [logging]\nloglevel=5\nlogfile=/var/log/file.log\n\
                [cni]\nconf-dir=/file/cni\nplugin=file-plugin\n\
                [kubernetes]\napiserver=http://1.1.1.1:8080\ntoken=filetoken\n";
    let c = with_file(file, &[]).unwrap();
    assert_eq!(c.mtu, 1500);
    assert_eq!(c.conntrack_zone, 64321);
    assert_eq!(c.encap_type, "vxlan");
    assert_eq!(c.logging.level, 5);
    assert_eq!(
        c.logging.file.as_deref(),
        Some(Path::new("/var/log/file.log"))
    );
    assert_eq!(c.cni.conf_dir, PathBuf::from("/file/cni"));
    assert_eq!(c.cni.plugin, "file-plugin");
    assert_eq!(c.kubernetes.apiserver, "http://1.1.1.1:8080");
    assert_eq!(c.kubernetes.token.as_deref(), Some("filetoken"));

    let c = with_file(
        file,
        &[
            "-mtu=9000",
            "-loglevel=2",
            "-cni-plugin=cli-plugin",
            "-k8s-apiserver=http://2.2.2.2:8080",
            "-k8s-token=clitoken",
        ],
    )
    .unwrap();
    assert_eq!(c.mtu, 9000);
    assert_eq!(
        c.conntrack_zone, 64321,
        "file value kept where the CLI is silent"
    );
    assert_eq!(c.logging.level, 2);
    assert_eq!(c.cni.plugin, "cli-plugin");
    assert_eq!(c.cni.conf_dir, PathBuf::from("/file/cni"));
    assert_eq!(c.kubernetes.apiserver, "http://2.2.2.2:8080");
    assert_eq!(c.kubernetes.token.as_deref(), Some("clitoken"));

    // Empty / zero on the CLI does not override the file.
    let c = with_file(file, &["-mtu=0", "-cni-plugin="]).unwrap();
    assert_eq!(c.mtu, 1500);
    assert_eq!(c.cni.plugin, "file-plugin");
}

#[test]
fn defaults_without_file() {
    let c = run(&[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.config_file, None);
    assert_eq!(c.mtu, 1400);
    assert_eq!(c.conntrack_zone, 64000);
    assert_eq!(c.encap_type, "geneve");
    assert_eq!(c.logging.level, 4);
    assert_eq!(c.cni.conf_dir, PathBuf::from("/etc/cni/net.d"));
    assert_eq!(c.cni.plugin, "ovn-k8s-cni-overlay");
    assert_eq!(c.kubernetes.apiserver, "http://localhost:8080");
    assert_eq!(
        c.cluster_subnets,
        vec![ClusterSubnet {
            cidr: net("11.11.0.0/16"),
            host_prefix_len: 24
        }]
    );
    assert_eq!(c.ovn_north.client.client_target(), None);
    assert_eq!(listen_remote(&c.ovn_north.server), None);
    assert_eq!(c.ovn_south.client.scheme, OvnScheme::Unix);
}

#[test]
fn empty_file_values_are_absent() {
    let c = with_file(
        "[default]\nmtu=\nencap-type=\"\"\n[kubernetes]\ntoken=\napiserver =\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.mtu, 1400);
    assert_eq!(c.encap_type, "geneve");
    assert_eq!(c.kubernetes.token, None);
    assert_eq!(c.kubernetes.apiserver, "http://localhost:8080");
}

#[test]
fn default_file_is_read_when_present() {
    let t = Tmp::new();
    let p = t.file("ovn_k8s.conf", "[default]\nmtu=1600\n");
    match parse_args_with_default_file(Vec::<String>::new(), Path::new(&p)).unwrap() {
        Invocation::Run(c) => {
            assert_eq!(c.mtu, 1600);
            assert_eq!(c.config_file, Some(PathBuf::from(&p)));
        }
        other => panic!("{other:?}"),
    }
    // An explicit -config-file replaces the default one.
    let other = t.file("other.conf", "[default]\nmtu=1700\n");
    match parse_args_with_default_file([format!("-config-file={other}")], Path::new(&p)).unwrap() {
        Invocation::Run(c) => {
            assert_eq!(c.mtu, 1700);
            assert_eq!(c.config_file, Some(PathBuf::from(&other)));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn missing_default_file_is_fine_missing_explicit_is_not() {
    assert_eq!(run(&[]).config_file, None);
    let e = err(&["-config-file", "/nonexistent/dir/ovn_k8s.conf"]);
    assert!(
        e.starts_with(
            "config file /nonexistent/dir/ovn_k8s.conf (from -config-file) cannot be read:"
        ),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn unreadable_default_file_is_an_error() {
    let t = Tmp::new();
    // A directory exists but cannot be read as a file.
    let e = parse_args_with_default_file(Vec::<String>::new(), &t.0).unwrap_err();
    assert!(e.to_string().contains("cannot be read"), "{e}");
}

#[test]
fn file_unknown_key() {
    let e = file_err("[default]\nmtu=1500\n\nfoo=bar\n");
    assert!(e.starts_with("config file "), "{e}");
    assert!(
        e.contains("ovn_k8s.conf: line 4: unknown key \"foo\" in section [default]"),
        "{e}"
    );
}

#[test]
fn file_unknown_section() {
    let e = file_err("[default]\nmtu=1500\n[gateway]\n");
    assert!(e.contains(": line 3: unknown section [gateway]"), "{e}");
    // A key valid elsewhere is still unknown in the wrong section.
    let e = file_err("[logging]\nmtu=1500\n");
    assert!(
        e.contains("line 2: unknown key \"mtu\" in section [logging]"),
        "{e}"
    );
}

#[test]
fn file_syntax_errors() {
    assert!(
        file_err("mtu=1\n").contains("line 1: key \"mtu\" appears before any [section] header")
    );
    assert!(file_err("[default\n").contains("line 1: missing ']'"));
    assert!(file_err("[default]\nmtu\n").contains("line 2: missing '=' and value for key \"mtu\""));
    assert!(file_err("[default]\nmtu 5\n").contains("line 2: expected '=' after key \"mtu\""));
    assert!(
        file_err("[default]\nencap-type=\"geneve\n")
            .contains("line 2: key \"encap-type\": unterminated quoted value")
    );
    assert!(file_err("[default]\nencap-type=a\\qb\n").contains("invalid escape sequence"));
    assert!(file_err("[default \"x\"]\n").contains("subsections are not supported"));
    assert!(file_err("[default] junk\n").contains("unexpected text"));
    assert!(file_err("[default]\n=5\n").contains("line 2: invalid key name"));
    assert_eq!(
        file_err("[default]\nmtu=15x\n").rsplit_once(": line").map(|x| x.1.to_string()),
        Some(" 2: invalid value \"15x\" for key \"mtu\" in section [default]: must be a decimal or 0x hex integer".into())
    );
}

#[test]
fn file_case_insensitive_comments_quotes_hex() {
    let file = "; leading comment\n# another\n\
                [Default]\n  MTU = 0x5dc ; trailing comment\n\
                Conntrack-Zone=64321# glued comment\n\
                encap-type = \"gen eve;#\"   \n\
                [KUBERNETES]\n  Token = \"a \\\"quoted\\\" \\\\ tok\\tx\"\n\
                [OvnNorth]\naddress=tcp://1.2.3.4:6641\n\
                [ovnsouth]\nADDRESS = tcp://1.2.3.4:6642\n";
    // The quoted value keeps its space and ";#" (shown in the error: not a tunnel type).
    let e = with_file(file, &[]).unwrap_err().to_string();
    assert!(e.contains("\"gen eve;#\" for [default] encap-type"), "{e}");
    let c = with_file(&file.replace("gen eve;#", "vxlan"), &[]).unwrap();
    assert_eq!(c.mtu, 1500);
    assert_eq!(c.conntrack_zone, 64321);
    assert_eq!(c.encap_type, "vxlan");
    assert_eq!(
        c.kubernetes.token.as_deref(),
        Some("a \"quoted\" \\ tok\tx")
    );
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("tcp:1.2.3.4:6641")
    );
    assert_eq!(
        c.ovn_south.client.client_target().as_deref(),
        Some("tcp:1.2.3.4:6642")
    );
}

#[test]
fn file_value_details() {
    // Internal whitespace kept, outer trimmed, continuation lines joined, duplicates: last wins.
    let c = with_file(
        "[cni]\nplugin =  my   plugin  \nconf-dir=/a\\\n/b\n[cni]\nwin-hnsnetwork-id=x\nwin-hnsnetwork-id=y\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.cni.plugin, "my   plugin");
    let e = with_file("[cni]\nplugin = /opt/cni/bin/x\n", &[]).unwrap_err();
    assert!(
        e.to_string().contains("for [cni] plugin in config file"),
        "{e}"
    );
    assert_eq!(c.cni.conf_dir, PathBuf::from("/a/b"));
    assert_eq!(c.cni.win_hnsnetwork_id.as_deref(), Some("y"));
    // Quoted whitespace survives trimming; escapes \n and negative/decimal ints.
    let c = with_file(
        "[default]\nencap-type=\" x \"\n[logging]\nlogfile=\"a\\nb\"\n",
        &[],
    )
    .unwrap_err();
    assert!(
        c.to_string().contains("\" x \" for [default] encap-type"),
        "{c}"
    );
    let c = with_file(
        "[default]\nencap-type=\"stt\"\n[logging]\nlogfile=\"a\\nb\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.encap_type, "stt");
    assert_eq!(c.logging.file.as_deref(), Some(Path::new("a\nb")));
}

#[test]
fn reference_sample_file() {
    let t = Tmp::new();
    let ca = t.file("ca.crt", "x");
    let file = format!(
        "[default]\nmtu=1500\nconntrack-zone=64321\n\n[kubernetes]\napiserver=https://1.2.3.4:6443\n\
         token=secret\ncacert={ca}\n\n[logging]\nloglevel=5\nlogfile=/var/log/ovnkube.log\n\n\
         [cni]\nconf-dir=/etc/cni/net.d\nplugin=ovn-k8s-cni-overlay\n\n[ovnnorth]\n\
         address=ssl://1.2.3.4:6641\nclient-privkey=/path/to/private.key\nclient-cert=/path/to/client.crt\n\
         client-cacert=/path/to/client-ca.crt\nserver-privkey=/path/to/private.key\n\
         server-cert=/path/to/server.crt\nserver-cacert=/path/to/server-ca.crt\n\n[ovnsouth]\n\
         address=ssl://1.2.3.4:6642\n"
    );
    let c = with_file(&file, &[]).unwrap();
    assert_eq!(c.kubernetes.apiserver, "https://1.2.3.4:6443");
    assert_eq!(c.kubernetes.cacert, Some(PathBuf::from(&ca)));
    assert_eq!(
        c.ovn_north.client.ssl_args(),
        vec![
            "--private-key=/path/to/private.key",
            "--certificate=/path/to/client.crt",
            "--bootstrap-ca-cert=/path/to/client-ca.crt"
        ]
    );
    assert_eq!(
        c.ovn_north.server.cert.as_deref(),
        Some(Path::new("/path/to/server.crt"))
    );
    // [ovnsouth] gives only the address: defaults for ssl.
    assert_eq!(
        c.ovn_south.client.ssl_args(),
        vec![
            "--private-key=/etc/openvswitch/ovnsb-privkey.pem",
            "--certificate=/etc/openvswitch/ovnsb-cert.pem",
            "--bootstrap-ca-cert=/etc/openvswitch/ovnsb-ca.cert"
        ]
    );
    assert_eq!(
        listen_remote(&c.ovn_south.server).as_deref(),
        Some("pssl:6642:1.2.3.4")
    );
}

#[test]
fn ssl_defaults_then_file_then_cli_per_cert() {
    let file = "[ovnnorth]\naddress=ssl://1.2.3.4:6641\nclient-cert=/file/cert.pem\n";
    let c = with_file(file, &["-nb-client-privkey=/cli/key.pem"]).unwrap();
    let a = &c.ovn_north.client;
    assert_eq!(a.privkey.as_deref(), Some(Path::new("/cli/key.pem")));
    assert_eq!(a.cert.as_deref(), Some(Path::new("/file/cert.pem")));
    assert_eq!(
        a.cacert.as_deref(),
        Some(Path::new("/etc/openvswitch/ovnnb-ca.cert"))
    );
    let s = &c.ovn_north.server;
    assert_eq!(
        s.privkey.as_deref(),
        Some(Path::new("/etc/openvswitch/ovnnb-privkey.pem"))
    );
    // SB is not ssl: no cert defaults.
    assert_eq!(c.ovn_south.client.privkey, None);
    // CLI address overrides the file's ssl one; then cert values from the file make it an error.
    let e = with_file(file, &["-nb-address=tcp://1.2.3.4:6641"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("perhaps you mean to use the 'ssl' scheme?"),
        "{e}"
    );
}

#[test]
fn kube_defaults_can_be_injected() {
    let t = Tmp::new();
    let injected = KubernetesConfig {
        kubeconfig: None,
        apiserver: "http://9.9.9.9:8080".into(),
        cacert: None,
        token: Some("ovs-token".into()),
        token_file: None,
    };
    let r = parse_args_with(Vec::<String>::new(), &t.missing(), Some(injected)).unwrap();
    let Invocation::Run(c) = r else { panic!() };
    assert_eq!(c.kubernetes.apiserver, "http://9.9.9.9:8080");
    assert_eq!(c.kubernetes.token.as_deref(), Some("ovs-token"));
    // A missing OVS value yields "" (the built-in default is replaced, not kept), so validation
    // fails unless the file or the command line supplies it.
    let empty = KubernetesConfig {
        apiserver: String::new(),
        ..KubernetesConfig::default()
    };
    let e = parse_args_with(Vec::<String>::new(), &t.missing(), Some(empty.clone())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "-k8s-apiserver (default): kubernetes API server URL scheme \"\" invalid (use http:// or https://)"
    );
    let r = parse_args_with(["-k8s-apiserver=http://a:1"], &t.missing(), Some(empty)).unwrap();
    assert!(matches!(r, Invocation::Run(c) if c.kubernetes.apiserver == "http://a:1"));
}

#[test]
fn token_is_redacted_in_debug() {
    let c = run(&["-k8s-token=supersecret"]);
    assert_eq!(c.kubernetes.token.as_deref(), Some("supersecret"));
    let dump = format!("{c:?}");
    assert!(!dump.contains("supersecret"), "{dump}");
    assert!(dump.contains("<redacted>"));
    assert!(!format!("{:?}", run(&[]).kubernetes).contains("redacted"));
}

// ---------------------------------------------------------------- validation

#[test]
fn kubeconfig_not_found() {
    assert_eq!(
        err(&["-k8s-kubeconfig=/nonexistent/kc.yaml"]),
        "-k8s-kubeconfig: kubernetes kubeconfig file \"/nonexistent/kc.yaml\" not found"
    );
    let e = with_file("[kubernetes]\nkubeconfig=/nonexistent/kc\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("[kubernetes] kubeconfig in config file "),
        "{e}"
    );
    assert!(
        e.ends_with(": kubernetes kubeconfig file \"/nonexistent/kc\" not found"),
        "{e}"
    );
}

#[test]
fn cacert_not_found() {
    assert_eq!(
        err(&["-k8s-cacert=/nonexistent/ca.crt"]),
        "-k8s-cacert: kubernetes CA certificate file \"/nonexistent/ca.crt\" not found"
    );
}

#[test]
fn apiserver_unparseable() {
    assert_eq!(
        err(&["-k8s-apiserver=1.2.3.4:8080"]),
        "-k8s-apiserver: kubernetes API server address \"1.2.3.4:8080\" invalid: first path segment in URL cannot contain colon"
    );
    assert_eq!(
        err(&["-k8s-apiserver=http://1.2.3.4:80x"]),
        "-k8s-apiserver: kubernetes API server address \"http://1.2.3.4:80x\" invalid: invalid port \"80x\""
    );
    assert_eq!(
        err(&["-k8s-apiserver=http://"]),
        "-k8s-apiserver: kubernetes API server address \"http://\" invalid: missing host"
    );
    assert!(err(&["-k8s-apiserver=http://[::1"]).contains("missing ']'"));
}

#[test]
fn apiserver_bad_scheme() {
    assert_eq!(
        err(&["-k8s-apiserver=ftp://1.2.3.4"]),
        "-k8s-apiserver: kubernetes API server URL scheme \"ftp\" invalid (use http:// or https://)"
    );
    // Go parses "localhost:8080" as scheme "localhost".
    assert!(err(&["-k8s-apiserver=localhost:8080"]).contains("URL scheme \"localhost\" invalid"));
    assert!(err(&["-k8s-apiserver=/just/a/path"]).contains("URL scheme \"\" invalid"));
    for ok in [
        "http://a",
        "HTTP://a:1/x",
        "http://[::1]:8080",
        "http://u@h:1",
    ] {
        assert!(
            matches!(
                invoke(&[&format!("-k8s-apiserver={ok}")]),
                Ok(Invocation::Run(_))
            ),
            "{ok}"
        );
    }
}

#[test]
fn https_requires_cacert_even_with_kubeconfig() {
    let t = Tmp::new();
    let kc = t.file("kc", "x");
    assert_eq!(
        err(&[
            &format!("-k8s-kubeconfig={kc}"),
            "-k8s-apiserver=https://1.2.3.4:6443"
        ]),
        "-k8s-apiserver: kubernetes API server \"https://1.2.3.4:6443\" scheme requires a CA certificate (set -k8s-cacert)"
    );
    let ca = t.file("ca", "x");
    let c = run(&[
        &format!("-k8s-cacert={ca}"),
        "-k8s-apiserver=https://1.2.3.4:6443",
    ]);
    assert_eq!(c.kubernetes.cacert, Some(PathBuf::from(ca)));
}

#[test]
fn ovn_certs_without_address() {
    assert_eq!(
        err(&["-nb-client-cert=/x.pem"]),
        "OVN northbound client: certificate or key given; perhaps you mean to use the 'ssl' scheme? (address is empty, i.e. the local unix socket)"
    );
    assert!(
        err(&["-sb-server-privkey=/x.pem"])
            .starts_with("OVN southbound server: certificate or key given")
    );
}

#[test]
fn ovn_address_not_a_url() {
    assert_eq!(
        err(&["-nb-address=1.2.3.4:6641"]),
        "-nb-address: failed to parse OVN DB URL \"1.2.3.4:6641\": expected scheme://IP:PORT (e.g. tcp://1.2.3.4:6641)"
    );
    assert!(
        err(&["-sb-address=tcp:1.2.3.4:6642"])
            .starts_with("-sb-address: failed to parse OVN DB URL")
    );
    assert!(err(&["-nb-address=1tcp://1.2.3.4:1"]).contains("invalid scheme"));
}

#[test]
fn ovn_host_port_split_fails() {
    assert_eq!(
        err(&["-nb-address=tcp://4.3.2.1"]),
        "-nb-address: failed to parse OVN DB host/port \"4.3.2.1\": address 4.3.2.1: missing port in address"
    );
    assert!(err(&["-nb-address=tcp://4.3.2.1:x"]).contains("invalid port \"x\""));
    assert!(err(&["-nb-address=tcp://4.3.2.1:0"]).contains("invalid port \"0\""));
    assert!(err(&["-nb-address=tcp://::1:6641"]).contains("too many colons"));
}

#[test]
fn ovn_host_must_be_ip() {
    assert_eq!(
        err(&["-nb-address=tcp://ovn.example.com:6641"]),
        "-nb-address: OVN DB host \"ovn.example.com:6641\" must be an IP address, not a DNS name"
    );
}

#[test]
fn ovn_tcp_with_certs() {
    assert_eq!(
        err(&["-sb-address=tcp://1.2.3.4:6642", "-sb-client-cacert=/ca"]),
        "OVN southbound client: certificate or key given; perhaps you mean to use the 'ssl' scheme? (address is \"tcp://1.2.3.4:6642\")"
    );
}

#[test]
fn ovn_unknown_scheme() {
    assert_eq!(
        err(&["-nb-address=udp://1.2.3.4:6641"]),
        "-nb-address: unknown OVN DB scheme \"udp\" (use tcp, ssl or unix)"
    );
}

#[test]
fn ovn_address_from_file_is_named() {
    let e = with_file("[ovnsouth]\naddress=tcp://1.2.3.4\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("[ovnsouth] address in config file "), "{e}");
    assert!(e.contains("missing port in address"), "{e}");
}

#[test]
fn connection_strings_appendix_b() {
    let c = run(&["-nb-address=tcp://192.168.33.11:6631"]);
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("tcp:192.168.33.11:6631")
    );
    assert_eq!(
        listen_remote(&c.ovn_north.server).as_deref(),
        Some("ptcp:6631:192.168.33.11")
    );
    assert!(c.ovn_north.client.ssl_args().is_empty());
    // Scheme is case-insensitive like Go's url.Parse; a trailing path is ignored.
    let c = run(&["-nb-address=TCP://192.168.33.11:6631/"]);
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("tcp:192.168.33.11:6631")
    );
}

#[test]
fn ovn_address_lists() {
    let c = run(&["-nb-address=ssl://1.2.3.4:6641, ssl://1.2.3.5:6641,ssl://[fd00::1]:6641"]);
    assert_eq!(
        c.ovn_north.client.client_target().as_deref(),
        Some("ssl:1.2.3.4:6641,ssl:1.2.3.5:6641,ssl:[fd00::1]:6641")
    );
    // A cluster: no single member's address for the replicated Connection table.
    assert_eq!(listen_remote(&c.ovn_north.server), None);
    assert_eq!(c.ovn_north.client.endpoints.len(), 3);
    assert_eq!(
        err(&["-nb-address=tcp://1.2.3.4:6641,ssl://1.2.3.5:6641"]),
        "-nb-address: OVN DB addresses \"tcp://1.2.3.4:6641,ssl://1.2.3.5:6641\" mix schemes tcp and ssl; all entries must use the same scheme"
    );
    assert!(err(&["-nb-address=tcp://1.2.3.4:6641,"]).contains("failed to parse OVN DB URL \"\""));
}

#[test]
fn ovn_unix_extension() {
    for (v, p) in [
        (
            "unix:/var/run/ovn/ovnnb_db.sock",
            "/var/run/ovn/ovnnb_db.sock",
        ),
        (
            "unix:///var/run/ovn/ovnnb_db.sock",
            "/var/run/ovn/ovnnb_db.sock",
        ),
    ] {
        let c = run(&[&format!("-nb-address={v}")]);
        let a = &c.ovn_north.client;
        assert_eq!(a.scheme, OvnScheme::Unix);
        assert_eq!(a.endpoints, vec![OvnEndpoint::Unix(PathBuf::from(p))]);
        assert_eq!(a.client_target(), Some(format!("unix:{p}")));
        assert_eq!(listen_remote(&c.ovn_north.server), None);
        assert!(a.ssl_args().is_empty());
    }
    assert!(err(&["-nb-address=unix:"]).contains("missing socket path"));
    assert!(err(&["-nb-address=unix:/a,unix:/b"]).contains("cannot be part of a list"));
    assert!(
        err(&["-nb-address=unix:/a", "-nb-client-cert=/c"])
            .contains("perhaps you mean to use the 'ssl' scheme?")
    );
}

// ---------------------------------------------------------------- extension validation

#[test]
fn encap_ip_must_be_ip() {
    assert_eq!(
        err(&["-encap-ip=node1"]),
        "invalid value \"node1\" for -encap-ip: must be the IPv4 address of this node's tunnel endpoint"
    );
    assert_eq!(
        run(&["-encap-ip=192.168.33.12"]).encap_ip,
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 33, 12)))
    );
    // Loopback is unicast (the single-host test beds tunnel over it).
    assert!(run(&["-encap-ip=127.0.0.1"]).encap_ip.is_some());
    for (bad, why) in [
        ("fd00::1", "must be an IPv4 address"),
        ("0.0.0.0", "must be a unicast IPv4 address"),
        ("255.255.255.255", "must be a unicast IPv4 address"),
        ("224.0.0.1", "must be a unicast IPv4 address"),
    ] {
        let e = err(&[&format!("-encap-ip={bad}")]);
        assert!(e.contains(bad) && e.contains(why), "{bad}: {e}");
    }
    let e = with_file("[default]\nencap-ip=bad\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid value \"bad\" for [default] encap-ip in config file "),
        "{e}"
    );
}

#[test]
fn gateway_nexthop_must_be_ipv4() {
    assert_eq!(
        err(&["-gateway-nexthop=gw"]),
        "invalid value \"gw\" for flag -gateway-nexthop: must be an IPv4 address"
    );
    assert!(err(&["-gateway-nexthop=fd00::1"]).contains("must be an IPv4 address"));
}

#[test]
fn mtu_range() {
    assert_eq!(
        err(&["-mtu=100"]),
        "invalid value \"100\" for -mtu: must be between 576 and 65535"
    );
    assert!(err(&["-mtu=70000"]).contains("must be between 576 and 65535"));
    assert!(err(&["-mtu=-1"]).contains("must be between 576 and 65535"));
    assert_eq!(run(&["-mtu=576"]).mtu, 576);
    assert_eq!(run(&["-mtu=65535"]).mtu, 65535);
    let e = with_file("[default]\nmtu=70000\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid value \"70000\" for [default] mtu in config file "),
        "{e}"
    );
}

#[test]
fn conntrack_zone_range() {
    assert_eq!(
        err(&["-conntrack-zone=70000"]),
        "invalid value \"70000\" for -conntrack-zone: must be between 1 and 65535"
    );
    assert_eq!(run(&["-conntrack-zone=1"]).conntrack_zone, 1);
}

#[test]
fn loglevel_range_and_clamp() {
    assert_eq!(run(&["-loglevel=9"]).logging.level, 5);
    assert_eq!(run(&["-loglevel=1"]).logging.level, 1);
    assert_eq!(
        err(&["-loglevel=-3"]),
        "invalid value \"-3\" for -loglevel: must be between 1 (fatal) and 5 (debug)"
    );
    assert_eq!(
        with_file("[logging]\nloglevel=0x7\n", &[])
            .unwrap()
            .logging
            .level,
        5
    );
}

#[test]
fn k8s_token_not_required() {
    let c = run(&["-init-node=n1"]);
    assert_eq!(c.kubernetes.token, None);
    assert_eq!(c.init_node.as_deref(), Some("n1"));
}

#[test]
fn cluster_subnet_list_and_host_length() {
    let c = run(&["-cluster-subnet=10.128.0.0/14/23, 10.0.0.0/16"]);
    assert_eq!(
        c.cluster_subnets,
        vec![
            ClusterSubnet {
                cidr: net("10.128.0.0/14"),
                host_prefix_len: 23
            },
            ClusterSubnet {
                cidr: net("10.0.0.0/16"),
                host_prefix_len: 24
            },
        ]
    );
}

#[test]
fn cluster_subnet_host_bits_are_cleared() {
    assert_eq!(
        run(&["-cluster-subnet=10.1.2.3/16"]).cluster_subnets[0].cidr,
        net("10.1.0.0/16")
    );
}

#[test]
fn cluster_subnet_overlap() {
    assert_eq!(
        err(&["-cluster-subnet=10.0.0.0/8,10.1.0.0/16"]),
        "invalid -cluster-subnet \"10.0.0.0/8,10.1.0.0/16\": 10.1.0.0/16 overlaps 10.0.0.0/8"
    );
    assert!(err(&["-cluster-subnet=10.1.0.0/16,10.0.0.0/8"]).contains("overlaps"));
}

#[test]
fn cluster_subnet_host_not_longer_than_network() {
    assert_eq!(
        err(&["-cluster-subnet=10.0.0.0/24"]),
        "invalid -cluster-subnet \"10.0.0.0/24\": host prefix length /24 must be longer than the network prefix /24 of 10.0.0.0/24"
    );
    assert!(
        err(&["-cluster-subnet=10.0.0.0/16/8"])
            .contains("must be longer than the network prefix /16")
    );
}

#[test]
fn cluster_subnet_host_too_long() {
    assert_eq!(
        err(&["-cluster-subnet=10.0.0.0/16/31"]),
        "invalid -cluster-subnet \"10.0.0.0/16/31\": host prefix length /31 is too long (at most /30)"
    );
    assert_eq!(
        run(&["-cluster-subnet=10.0.0.0/16/30"]).cluster_subnets[0].host_prefix_len,
        30
    );
}

#[test]
fn cluster_subnet_not_ipv4_or_garbage() {
    assert_eq!(
        err(&["-cluster-subnet=fd00::/48"]),
        "invalid -cluster-subnet \"fd00::/48\": \"fd00::/48\" is not IPv4 (only IPv4 is supported)"
    );
    assert_eq!(
        err(&["-cluster-subnet=10.0.0.0/33"]),
        "invalid -cluster-subnet \"10.0.0.0/33\": \"10.0.0.0/33\" is not a valid CIDR"
    );
    assert!(err(&["-cluster-subnet=10.0.0.0"]).contains("must be CIDR or CIDR/hostPrefixLength"));
    assert!(err(&["-cluster-subnet=10.0.0.0/8/x"]).contains("is not a number"));
    assert!(err(&["-cluster-subnet=10.0.0.0/8,,"]).contains("empty entry"));
    assert!(err(&["-cluster-subnet=a/b/c/d"]).contains("must be CIDR or CIDR/hostPrefixLength"));
}

#[test]
fn service_cidr_parsing() {
    assert_eq!(
        run(&["-service-cluster-ip-range=172.16.1.7/24"]).service_cidr,
        Some(net("172.16.1.0/24"))
    );
    assert_eq!(
        err(&["-service-cluster-ip-range=fd00::/112"]),
        "invalid -service-cluster-ip-range \"fd00::/112\": not IPv4 (only IPv4 is supported)"
    );
    assert_eq!(
        err(&["-service-cluster-ip-range=172.16.1.0"]),
        "invalid -service-cluster-ip-range \"172.16.1.0\": not a valid CIDR (e.g. 172.16.1.0/24)"
    );
}

#[test]
fn service_cidr_must_not_overlap_cluster() {
    assert_eq!(
        err(&[
            "-cluster-subnet=10.128.0.0/14",
            "-service-cluster-ip-range=10.130.0.0/16"
        ]),
        "invalid -service-cluster-ip-range \"10.130.0.0/16\": overlaps the cluster subnet 10.128.0.0/14; pick a range outside -cluster-subnet"
    );
    // Against the default cluster subnet too.
    assert!(
        err(&["-service-cluster-ip-range=11.0.0.0/8"])
            .contains("overlaps the cluster subnet 11.11.0.0/16")
    );
}

#[test]
fn errors_are_one_line() {
    for args in [
        vec!["-bogus"],
        vec!["-mtu=abc"],
        vec!["-nb-address=x"],
        vec!["-cluster-subnet=x"],
        vec!["-k8s-apiserver=ftp://x"],
    ] {
        assert_eq!(err(&args).lines().count(), 1, "{args:?}");
    }
}

// ---------------------------------------------------------------- help

const ORDER: [&str; 43] = [
    "-cluster-subnet value",
    "-service-cluster-ip-range value",
    "-net-controller",
    "-init-master value",
    "-init-node value",
    "-remove-node value",
    "-pidfile value",
    "-init-gateways",
    "-gateway-interface value",
    "-gateway-nexthop value",
    "-gateway-spare-interface",
    "-nodeport",
    "-ha",
    "-config-file value",
    "-mtu value",
    "-conntrack-zone value",
    "-encap-type value",
    "-encap-ip value",
    "-loglevel value",
    "-logfile value",
    "-cni-conf-dir value",
    "-cni-plugin value",
    "-win-hnsnetwork-id value",
    "-k8s-kubeconfig value",
    "-k8s-apiserver value",
    "-k8s-cacert value",
    "-k8s-token value",
    "-nb-address value",
    "-nb-server-privkey value",
    "-nb-server-cert value",
    "-nb-server-cacert value",
    "-nb-client-privkey value",
    "-nb-client-cert value",
    "-nb-client-cacert value",
    "-sb-address value",
    "-sb-server-privkey value",
    "-sb-server-cert value",
    "-sb-server-cacert value",
    "-sb-client-privkey value",
    "-sb-client-cert value",
    "-sb-client-cacert value",
    "-help, -h",
    "-version, -v",
];

/// `-h` up to the extensions section: what must match the 2018 reference.
fn reference_help() -> String {
    let h = help_text();
    h.split(super::help::EXTENSIONS_HEADER)
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn help_lists_the_extensions_in_their_own_section() {
    let h = help_text();
    let ext = h.split(super::help::EXTENSIONS_HEADER).nth(1).unwrap();
    assert!(ext.contains("   -metrics-bind-address value  "), "{ext}");
    assert!(ext.contains("   -k8s-token-file value  "), "{ext}");
    assert!(
        ext.contains("   -ha-election-lease-duration value  "),
        "{ext}"
    );
}

#[test]
fn help_lists_all_43_reference_entries_in_order() {
    let h = reference_help();
    let opts: Vec<&str> = h
        .split("GLOBAL OPTIONS:\n")
        .nth(1)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(opts.len(), 43);
    for (line, name) in opts.iter().zip(ORDER) {
        let cell = line.strip_prefix("   ").unwrap();
        assert!(cell.starts_with(&format!("{name}  ")), "{line:?} vs {name}");
        // Descriptions all start in the same column (34, as in the reference).
        assert_eq!(cell.as_bytes()[33], b' ');
        assert_ne!(cell.as_bytes()[34], b' ', "{line:?}");
    }
}

#[test]
fn help_layout_and_fixed_quirks() {
    let h = reference_help();
    assert!(h.starts_with(
        "NAME:\n   ovnkube - run ovnkube to start master, node, and gateway services\n\nUSAGE:\n   ovnkube [global options] command [command options] [arguments...]\n\nVERSION:\n   "
    ));
    assert!(h.contains(&format!("VERSION:\n   {}\n", env!("CARGO_PKG_VERSION"))));
    assert!(
        h.contains("COMMANDS:\n     help, h  Shows a list of commands or help for one command\n")
    );
    assert!(!h.contains("(default: 0)"));
    assert!(!h.contains("8443"));
    assert!(h.contains("(default: http://localhost:8080)"));
    assert!(h.contains(
        "   -cluster-subnet value             Cluster wide IP subnet to use (default: \"11.11.0.0/16\")\n"
    ));
    assert!(h.contains(
        "   -mtu value                        MTU value used for the overlay networks (default: 1400)\n"
    ));
    assert!(h.ends_with("   -version, -v                      print the version\n"));
    // The docs' spellings: single dash everywhere, -k8s-cacert (not --k8s-ca-cert).
    assert!(!h.contains("   --"));
    assert!(!h.contains("--k8s"));
    assert!(h.contains("-k8s-apiserver, -k8s-cacert, and -k8s-token are given"));
}

#[test]
fn help_matches_reference_except_fixed_quirks() {
    // The spec lives outside the crate; skip quietly where it is not checked out.
    let Ok(reference) = std::fs::read_to_string("/work/shared/spec/reference-flags.txt") else {
        return;
    };
    // Fixed since: single-dash names (one more space keeps the description column) and the
    // flag names in the Kubernetes descriptions.
    let expected: String = reference
        .lines()
        .map(|l| match l.strip_prefix("   --") {
            Some(rest) => match rest.find("  ") {
                Some(i) => format!("   -{} {}\n", &rest[..i], &rest[i..]),
                None => format!("   -{rest}\n"),
            },
            None => format!("{l}\n"),
        })
        .collect::<String>()
        .replace("0.3.0", env!("CARGO_PKG_VERSION"))
        .replace(" (default: 0)", "")
        .replace("http://localhost:8443", "http://localhost:8080")
        .replace("--k8s-ca-cert", "-k8s-cacert")
        .replace("--k8s-", "-k8s-");
    assert_eq!(reference_help().trim_end(), expected.trim_end());
}

// ---------------------------------------------------------------- operator extensions

#[test]
fn master_ha_election_from_flags_and_file_validated() {
    use std::time::Duration;
    let d = run(&[]).master_ha;
    assert_eq!(
        (d.lease_duration, d.renew_deadline, d.retry_period),
        (
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::from_secs(20)
        )
    );
    assert_eq!(
        (d.lease_namespace.as_str(), d.lease_name),
        ("kube-system", None)
    );
    let c = run(&[
        "-ha-election-lease-duration=4",
        "-ha-election-renew-deadline=3",
        "-ha-election-retry-period=1",
        "-ha-election-lease-namespace=ovn-kubernetes",
        "-ha-election-lease-name=ovnkube.master",
    ])
    .master_ha;
    assert_eq!(
        (c.lease_duration, c.renew_deadline, c.retry_period),
        (
            Duration::from_secs(4),
            Duration::from_secs(3),
            Duration::from_secs(1)
        )
    );
    assert_eq!(c.lease_namespace, "ovn-kubernetes");
    assert_eq!(c.lease_name.as_deref(), Some("ovnkube.master"));

    let t = Tmp::new();
    let f = t.file(
        "ha.conf",
        "[masterha]\nelection-lease-duration=10\nelection-renew-deadline=8\nelection-retry-period=2\nelection-lease-namespace=ha\n",
    );
    let cf = format!("-config-file={f}");
    let c = run(&[&cf]).master_ha;
    assert_eq!(c.lease_duration, Duration::from_secs(10));
    assert_eq!(c.lease_namespace, "ha");
    // The command line wins over the file.
    let c = run(&[&cf, "-ha-election-retry-period=5"]).master_ha;
    assert_eq!(c.retry_period, Duration::from_secs(5));

    // (args, the start of the error)
    let bad: [(&[&str], &str); 6] = [
        (
            &["-ha-election-renew-deadline=60"],
            "invalid value \"60\" for -ha-election-renew-deadline: must be less than the lease duration (60s)",
        ),
        (
            &["-ha-election-retry-period=30"],
            "invalid value \"30\" for -ha-election-retry-period: must be less than the renew deadline (30s)",
        ),
        (
            &["-ha-election-lease-duration=-5"],
            "invalid value \"-5\" for -ha-election-lease-duration: must be a whole number of seconds",
        ),
        (
            &["-ha-election-lease-duration=x"],
            "invalid value \"x\" for flag -ha-election-lease-duration",
        ),
        (
            &["-ha-election-lease-namespace=Not_A_Namespace"],
            "invalid value \"Not_A_Namespace\" for -ha-election-lease-namespace",
        ),
        (
            &["-ha-election-lease-name=a/b"],
            "invalid value \"a/b\" for -ha-election-lease-name",
        ),
    ];
    for (args, want) in bad {
        let e = err(args);
        assert!(e.starts_with(want), "{args:?}: {e}");
    }
    let f = t.file(
        "bad.conf",
        "[masterha]\nelection-renew-deadline=8\nelection-lease-duration=8\n",
    );
    let e = err(&[&format!("-config-file={f}")]);
    assert!(
        e.contains("[masterha] election-renew-deadline")
            && e.contains("less than the lease duration (8s)"),
        "{e}"
    );
    let f = t.file("typo.conf", "[masterha]\nlease-duration=8\n");
    let e = err(&[&format!("-config-file={f}")]);
    assert!(e.contains("election-lease-duration"), "{e}");
}

#[test]
fn metrics_bind_address_from_flag_or_file() {
    assert_eq!(run(&[]).metrics_bind_address, None);
    let c = run(&["-metrics-bind-address=127.0.0.1:9409"]);
    assert_eq!(
        c.metrics_bind_address,
        Some("127.0.0.1:9409".parse().unwrap())
    );
    let t = Tmp::new();
    let f = t.file("m.conf", "[default]\nmetrics-bind-address=[::1]:9410\n");
    let c = run(&[&format!("-config-file={}", f)]);
    assert_eq!(c.metrics_bind_address, Some("[::1]:9410".parse().unwrap()));
    let e =
        parse_args_with(["-metrics-bind-address=localhost:9409"], &t.missing(), None).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "invalid value \"localhost:9409\" for -metrics-bind-address: must be IP:PORT"
        ),
        "{e}"
    );
}

#[test]
fn token_file_flag_and_key() {
    let t = Tmp::new();
    let tok = t.file("token", "abc\n");
    let c = run(&[&format!("-k8s-token-file={}", tok)]);
    assert_eq!(c.kubernetes.token_file.as_deref(), Some(Path::new(&tok)));
    let f = t.file("k.conf", &format!("[kubernetes]\ntoken-file={}\n", tok));
    let c = run(&[&format!("-config-file={}", f)]);
    assert_eq!(c.kubernetes.token_file.as_deref(), Some(Path::new(&tok)));
    let e =
        parse_args_with(["-k8s-token-file=/nonexistent/token"], &t.missing(), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "-k8s-token-file: kubernetes token file \"/nonexistent/token\" not found"
    );
}

#[test]
fn in_cluster_configuration_table() {
    let t = Tmp::new();
    let sa = t.0.join("sa");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "t").unwrap();
    std::fs::write(sa.join("ca.crt"), "c").unwrap();
    let no_ca = t.0.join("no-ca");
    std::fs::create_dir_all(&no_ca).unwrap();
    std::fs::write(no_ca.join("token"), "t").unwrap();
    let env = |host: Option<&'static str>, port: Option<&'static str>| {
        move |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => host.map(String::from),
            "KUBERNETES_SERVICE_PORT" => port.map(String::from),
            _ => None,
        }
    };
    type Case<'a> = (
        Option<&'static str>,
        Option<&'static str>,
        &'a Path,
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            Some("10.96.0.1"),
            Some("443"),
            &sa,
            Some("https://10.96.0.1:443"),
        ),
        (
            Some("fd00::1"),
            Some("6443"),
            &sa,
            Some("https://[fd00::1]:6443"),
        ),
        (None, Some("443"), &sa, None),
        (Some("10.96.0.1"), None, &sa, None),
        (Some("10.96.0.1"), Some("https"), &sa, None),
        (Some(""), Some("443"), &sa, None),
        (Some("10.96.0.1"), Some("443"), &no_ca, None),
    ];
    for (host, port, dir, want) in cases {
        let got = validate::in_cluster_from(env(*host, *port), dir);
        assert_eq!(
            got.as_ref().map(|k| k.apiserver.as_str()),
            *want,
            "{host:?} {port:?}"
        );
        if let Some(k) = got {
            assert_eq!(k.token_file, Some(dir.join("token")));
            assert_eq!(k.cacert, Some(dir.join("ca.crt")));
            assert_eq!((k.token, k.kubeconfig), (None, None));
        }
    }
}

// ---------------------------------------------------------------- strict command line

#[test]
fn empty_integers_mean_unset_on_the_command_line_as_in_the_file() {
    let c = run(&["-loglevel=", "-mtu=", "-conntrack-zone", ""]);
    assert_eq!(c.logging.level, 4);
    assert_eq!(c.mtu, 1400);
    assert_eq!(c.conntrack_zone, 64000);
    // Unset on the command line lets the file's value through.
    let c = with_file("[logging]\nloglevel=5\n", &["-loglevel="]).unwrap();
    assert_eq!(c.logging.level, 5);
}

#[test]
fn node_names_from_flags_are_kubernetes_node_names() {
    assert_eq!(
        err(&["-init-master", "-net-controller"]),
        "invalid value \"-net-controller\" for flag -init-master: not a Kubernetes node name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit); did you forget the node name after -init-master?"
    );
    for flag in ["init-master", "init-node", "remove-node"] {
        for bad in [
            "Node1",
            "node_1",
            "node-",
            "-node",
            "a..b",
            ".a",
            &"x".repeat(64),
        ] {
            let e = err(&[&format!("-{flag}={bad}")]);
            assert!(
                e.starts_with(&format!(
                    "invalid value {bad:?} for flag -{flag}: not a Kubernetes node name"
                )),
                "{flag}={bad}: {e}"
            );
        }
        for good in ["k8smaster", "node-1", "n1.example.com", "1"] {
            let c = run(&[&format!("-{flag}={good}")]);
            let got = match flag {
                "init-master" => c.init_master,
                "init-node" => c.init_node,
                _ => c.remove_node,
            };
            assert_eq!(got.as_deref(), Some(good), "{flag}={good}");
        }
    }
}

#[test]
fn encap_type_is_one_ovn_supports() {
    for t in ["geneve", "vxlan", "stt"] {
        assert_eq!(run(&[&format!("-encap-type={t}")]).encap_type, t);
    }
    assert_eq!(
        err(&["-encap-type=gre"]),
        "invalid value \"gre\" for -encap-type: must be geneve, vxlan or stt (the tunnel types OVN supports)"
    );
    assert!(err(&["-encap-type=GENEVE"]).contains("-encap-type"));
}

#[test]
fn cni_plugin_is_a_name_not_a_path() {
    assert_eq!(run(&["-cni-plugin=my-plugin"]).cni.plugin, "my-plugin");
    assert_eq!(
        err(&["-cni-plugin=/opt/cni/bin/ovn-k8s-cni-overlay"]),
        "invalid value \"/opt/cni/bin/ovn-k8s-cni-overlay\" for -cni-plugin: must be a plugin name (a file in the CNI bin directory), not a path"
    );
}

#[test]
fn ovn_address_with_a_path_is_rejected() {
    let e = err(&["-nb-address=tcp://1.2.3.4:66/foo"]);
    assert!(
        e.contains("tcp://1.2.3.4:66/foo") && e.contains("unexpected \"/foo\" after the port"),
        "{e}"
    );
    assert!(err(&["-sb-address=tcp://1.2.3.4:66?x=1"]).contains("unexpected \"?x=1\""));
    // A bare trailing slash carries nothing and is accepted.
    assert_eq!(
        run(&["-nb-address=tcp://1.2.3.4:66/"])
            .ovn_north
            .client
            .client_target()
            .as_deref(),
        Some("tcp:1.2.3.4:66")
    );
}

#[test]
fn a_role_is_required() {
    let e = crate::config::require_role(&run(&[]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "nothing to do: give a role with -init-master NAME, -init-node NAME, -net-controller or -remove-node NAME (see ovnkube -h)"
    );
    for args in [
        vec!["-init-master=m"],
        vec!["-init-node=n"],
        vec!["-net-controller"],
        vec!["-remove-node=n"],
    ] {
        assert!(crate::config::require_role(&run(&args)).is_ok(), "{args:?}");
    }
    // Flags that only modify a role are not a role.
    assert!(crate::config::require_role(&run(&["-nodeport", "-ha", "-init-gateways"])).is_err());
}

#[test]
fn ssl_files_each_role_uses() {
    use crate::config::cert_files;
    let ssl = [
        "-nb-address=ssl://1.2.3.4:6641",
        "-sb-address=ssl://1.2.3.4:6642",
    ];
    let flags = |role: &[&str]| -> Vec<String> {
        let mut args: Vec<&str> = ssl.to_vec();
        args.extend_from_slice(role);
        cert_files(&run(&args))
            .into_iter()
            .map(|f| f.flag)
            .collect()
    };
    let set = |prefixes: &[&str]| -> Vec<String> {
        prefixes
            .iter()
            .flat_map(|p| ["privkey", "cert", "cacert"].map(|w| format!("-{p}-{w}")))
            .collect()
    };
    assert_eq!(
        flags(&["-init-master=m"]),
        set(&["nb-client", "nb-server", "sb-server", "sb-client"])
    );
    assert_eq!(flags(&["-init-node=n"]), set(&["nb-client", "sb-client"]));
    assert_eq!(flags(&["-net-controller"]), set(&["nb-client"]));
    assert_eq!(flags(&["-remove-node=n"]), set(&["nb-client"]));
    // tcp and unix use no files.
    assert!(cert_files(&run(&["-init-master=m", "-nb-address=tcp://1.2.3.4:6641"])).is_empty());
}

#[test]
fn missing_ssl_files_are_a_start_up_error_naming_the_flag() {
    let t = Tmp::new();
    let k = t.file("k.pem", "key");
    let c = t.file("c.pem", "cert");
    let ca = t.file("ca.pem", "ca");
    let cfg = run(&[
        "-init-node=n",
        "-nb-address=ssl://1.2.3.4:6641",
        &format!("-nb-client-privkey={k}"),
        &format!("-nb-client-cert={c}"),
        &format!("-nb-client-cacert={ca}"),
    ]);
    // The SB defaults to the local socket: no SB files needed.
    crate::config::check_cert_files(&cfg).unwrap();
    let cfg = run(&[
        "-init-node=n",
        "-nb-address=ssl://1.2.3.4:6641",
        &format!("-nb-client-privkey={k}"),
        &format!("-nb-client-cert={c}"),
    ]);
    let e = crate::config::check_cert_files(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("-nb-client-cacert /etc/openvswitch/ovnnb-ca.cert: "),
        "{e}"
    );
    // A directory is not a certificate.
    let cfg = run(&[
        "-net-controller",
        "-nb-address=ssl://1.2.3.4:6641",
        &format!("-nb-client-privkey={}", t.0.display()),
        &format!("-nb-client-cert={c}"),
        &format!("-nb-client-cacert={ca}"),
    ]);
    let e = crate::config::check_cert_files(&cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn long_bad_values_are_cut_in_error_messages() {
    assert_eq!(super::shown("geneve"), "\"geneve\"");
    let long = "a".repeat(900 * 1024);
    let s = super::shown(&long);
    assert!(s.len() < 120, "{s}");
    assert!(s.ends_with(&format!("... ({} bytes)", long.len())), "{s}");
    // Cut on a character boundary.
    let wide = "é".repeat(100);
    assert!(super::shown(&wide).starts_with(&format!("\"{}\"", "é".repeat(80))));
}
