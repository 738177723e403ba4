//! `ssl:` NB addresses on the native OVSDB connection, against real `ovsdb-server`s listening
//! on `pssl:` with certificates made by `ovs-pki`: the client verifies the server against the
//! configured CA and presents its own certificate; the binary serves pods over it without
//! `ovn-nbctl`; a wrong CA and bad key files are refused with errors that name the flag.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::podbench::PodLatency;
use common::{Env, eventually};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use ovn_testbed::{Central, Pki};
use ovnkube::config::CertFile;
use ovnkube::controller::pods_plan::port_ops;
use ovnkube::exec::RealExec;
use ovnkube::kube::annotations::PodNetwork;
use ovnkube::ovn::jsonrpc::Remote;
use ovnkube::ovn::tls::ClientTls;
use ovnkube::ovn::{Ctl, CtlTarget, NativeNb, Nb, NbTxn, Nbctl};

const TIMEOUT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(60);

fn file(flag: &str, p: &Path) -> CertFile {
    CertFile {
        flag: flag.to_string(),
        path: p.to_path_buf(),
    }
}

fn client_tls(pki: &Pki, cacert: &Path) -> ClientTls {
    ClientTls {
        privkey: file("-nb-client-privkey", &pki.client_key()),
        cert: file("-nb-client-cert", &pki.client_cert()),
        cacert: file("-nb-client-cacert", cacert),
    }
}

/// `ovn-nbctl` on the central's unix socket: the fallback, which these tests must not need.
fn nbctl(central: &Central) -> Arc<dyn Nb> {
    let mut t = CtlTarget::new("ovn-nbctl");
    t.db_args = vec![format!("--db={}", central.nb_db())];
    t.timeout = TIMEOUT;
    Arc::new(Nbctl(Ctl::new(Arc::new(RealExec::new(2)), t)))
}

fn add_port(i: u8) -> NbTxn {
    let ip = Ipv4Addr::new(10, 1, 0, 10 + i);
    let net = PodNetwork {
        ip,
        prefix_len: 24,
        mac: format!("0a:58:0a:01:00:{:02x}", 10 + i),
        gateway: Ipv4Addr::new(10, 1, 0, 1),
    };
    let mut t = NbTxn::new();
    t.extend(port_ops("n1", "default", &format!("s{i}"), &net));
    t
}

async fn until_ok(nb: &NativeNb, t: &NbTxn, within: Duration) {
    let start = Instant::now();
    loop {
        match nb.transact(t).await {
            Ok(_) => return,
            Err(e) if start.elapsed() < within => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no success within {within:?}: {e:#}"),
        }
    }
}

/// The error a client gets from `nb` once its connection attempts fail in the TLS layer
/// (before that: "not connected yet", or the loss of a previous connection); the last error
/// after a while if they never do.
async fn tls_error(nb: &NativeNb) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let e = nb.transact(&add_port(99)).await.unwrap_err();
        let msg = format!("{e:#}");
        if msg.contains("TLS handshake failed")
            || msg.contains("TLS session failed")
            || Instant::now() > deadline
        {
            return msg;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client's TLS against a stock `ovsdb-server` (OpenSSL) on `pssl:`: transactions run
/// natively; a CA that did not sign the server's certificate is refused with the flag named;
/// the CA file is read again on reconnect (rotation), not only at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_over_tls_verifies_the_server_and_rereads_files_on_reconnect() {
    let pki = Pki::create().unwrap();
    let mut central = Central::start().unwrap();
    central.nbctl(&["ls-add", "n1"]).unwrap();
    let (nb_addr, _) = central.listen_ssl(&pki).unwrap();

    let good = NativeNb::start_tls(
        Remote::Ssl(nb_addr),
        Some(client_tls(&pki, &pki.ca_cert())),
        nbctl(&central),
        TIMEOUT,
    );
    until_ok(&good, &add_port(1), TIMEOUT).await;
    good.transact(&add_port(2)).await.unwrap();
    let s = good.stats();
    assert_eq!((s.native, s.fallback), (2, 0), "{s:?}");
    let ports = central
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch_Port"])
        .unwrap();
    assert!(ports.contains("default_s2"), "{ports}");

    // The server's certificate does not chain to this CA: refused, and the error says which
    // flag names the CA that did not verify it.
    let wrong = NativeNb::start_tls(
        Remote::Ssl(nb_addr),
        Some(client_tls(&pki, &pki.other_ca_cert())),
        nbctl(&central),
        TIMEOUT,
    );
    let msg = tls_error(&wrong).await;
    assert!(msg.contains("-nb-client-cacert"), "{msg}");
    assert!(msg.contains("TLS handshake failed"), "{msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert_eq!(wrong.stats().native, 0);

    // Our certificate is signed by a CA the server does not trust: the server refuses it.
    let stranger = NativeNb::start_tls(
        Remote::Ssl(nb_addr),
        Some(ClientTls {
            privkey: file("-nb-client-privkey", &pki.stranger_key()),
            cert: file("-nb-client-cert", &pki.stranger_cert()),
            cacert: file("-nb-client-cacert", &pki.ca_cert()),
        }),
        nbctl(&central),
        TIMEOUT,
    );
    let msg = tls_error(&stranger).await;
    // The alert (UnknownCA) races with our first write (broken pipe); either way the error
    // is a TLS one and names our certificate.
    assert!(msg.contains("-nb-client-cert"), "{msg}");
    assert_eq!(stranger.stats().native, 0);

    // Rotation: the CA file is replaced by a bad one while connected (nothing changes), then
    // the server restarts: the reconnect reads it again and fails; fixed, it reconnects.
    let ca = pki.dir().join("rotated-ca.pem");
    std::fs::copy(pki.ca_cert(), &ca).unwrap();
    let rotating = NativeNb::start_tls(
        Remote::Ssl(nb_addr),
        Some(client_tls(&pki, &ca)),
        nbctl(&central),
        TIMEOUT,
    );
    until_ok(&rotating, &add_port(3), TIMEOUT).await;
    std::fs::copy(pki.other_ca_cert(), &ca).unwrap();
    rotating.transact(&add_port(4)).await.unwrap();
    central.stop_nb();
    central.start_nb().unwrap();
    let msg = tls_error(&rotating).await;
    assert!(
        msg.contains("-nb-client-cacert") && msg.contains("rotated-ca.pem"),
        "{msg}"
    );
    std::fs::copy(pki.ca_cert(), &ca).unwrap();
    until_ok(&rotating, &add_port(5), Duration::from_secs(15)).await;
    assert_eq!(rotating.stats().fallback, 0);
}

/// The master's flags for an `ssl://` NB at `nb` (the SB stays tcp): client and server
/// certificates from `pki`, the client's CA `client_ca`.
fn ssl_master_args(env: &Env, pki: &Pki, nb: SocketAddr, client_ca: &Path) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = env
        .master_args("10.7.0.0/16")
        .into_iter()
        .filter(|a| !a.starts_with("-nb-address="))
        .collect();
    args.extend([
        format!("-nb-address=ssl://{nb}"),
        format!("-nb-client-privkey={}", p(&pki.client_key())),
        format!("-nb-client-cert={}", p(&pki.client_cert())),
        format!("-nb-client-cacert={}", p(client_ca)),
        format!("-nb-server-privkey={}", p(&pki.server_key())),
        format!("-nb-server-cert={}", p(&pki.server_cert())),
        format!("-nb-server-cacert={}", p(&pki.ca_cert())),
    ]);
    args
}

fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The binary with `-nb-address=ssl://…`: the master opens the `pssl:` listener from its
/// `-nb-server-*` flags (over the central's local socket), the NB backend is the native
/// connection over TLS, and pods are annotated without `ovn-nbctl` writing their ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_pods_over_ssl_natively() {
    let pki = Pki::create().unwrap();
    let env = Env::start("ssl").await;
    let nb = ovn_testbed::free_loopback_addr().unwrap();
    let mut master = env.spawn("master", &ssl_master_args(&env, &pki, nb, &pki.ca_cert()));
    master.wait_log("NB backend: native OVSDB connection", WAIT);
    let backend = master
        .log_text()
        .lines()
        .find(|l| l.contains("NB backend:"))
        .unwrap_or_default()
        .to_string();
    assert!(backend.contains(&format!("ssl:{nb}")), "{backend}");
    master.wait_log("cluster topology ready", WAIT);
    assert_eq!(
        env.central.nb_connections().unwrap(),
        [format!("pssl:{}:{}", nb.port(), nb.ip())]
    );
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    master.wait_log("pod worker started", WAIT);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for i in 0..10 {
        pods.create(&PostParams::default(), &pod(&format!("t{i}"), "n1"))
            .await
            .unwrap();
    }
    eventually("pods annotated", WAIT, || async {
        let l = pods.list(&ListParams::default()).await.unwrap().items;
        let done = l
            .iter()
            .filter(|p| p.annotations().contains_key("ovn"))
            .count();
        (done == 10).then_some(())
    })
    .await;
    let log = master.log_text();
    // Every transaction that falls back to ovn-nbctl is logged (at debug, -loglevel=5):
    // none may write a logical switch port.
    let fallbacks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("through ovn-nbctl"))
        .filter(|l| l.contains("default_t") || l.contains("Logical_Switch_Port"))
        .collect();
    assert!(fallbacks.is_empty(), "{fallbacks:#?}");
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("OVSDB connection lost"))
        .collect();
    assert!(lost.is_empty(), "the TLS connection dropped: {lost:#?}");
    let ports = env
        .central
        .nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            "external_ids:pod=true",
        ])
        .unwrap();
    assert_eq!(ports.split_whitespace().count(), 10, "{ports}");
    master.terminate();
}

/// A client CA that did not sign the server's certificate: the master keeps retrying and
/// says why, naming the flag and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_server_its_ca_did_not_sign() {
    let pki = Pki::create().unwrap();
    let env = Env::start("sslca").await;
    let nb = ovn_testbed::free_loopback_addr().unwrap();
    let wrong = pki.other_ca_cert();
    let mut master = env.spawn("master", &ssl_master_args(&env, &pki, nb, &wrong));
    // At first nothing listens (the master opens the listener once it leads); then the
    // server is there and our CA refuses it, which is a new warning, not a repeat.
    master.wait_log("TLS handshake failed", WAIT);
    let line = master
        .log_text()
        .lines()
        .find(|l| l.contains("WARN") && l.contains("TLS handshake failed"))
        .map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no warning for ssl:{nb}:\n{}", master.log_text()));
    assert!(line.contains("-nb-client-cacert"), "{line}");
    assert!(line.contains(&wrong.display().to_string()), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(!master.log_text().contains("cluster topology ready"));
    master.terminate();
}

/// Key files that are missing, or are not keys, end the process at start with an error that
/// names the flag and the path; key material never reaches the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_files_are_configuration_errors_at_start() {
    let pki = Pki::create().unwrap();
    let env = Env::start("sslkey").await;
    let nb = ovn_testbed::free_loopback_addr().unwrap();
    let missing = pki.dir().join("missing-privkey.pem");
    let cases = [
        (missing.clone(), "missing-privkey.pem"),
        // A certificate where the key should be: readable, but no key in it.
        (pki.client_cert(), "no private key"),
    ];
    let key_text = std::fs::read_to_string(pki.client_key()).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_string();
    for (key, want) in cases {
        let args: Vec<String> = ssl_master_args(&env, &pki, nb, &pki.ca_cert())
            .into_iter()
            .map(|a| {
                if a.starts_with("-nb-client-privkey=") {
                    format!("-nb-client-privkey={}", key.display())
                } else {
                    a
                }
            })
            .collect();
        let mut d = env.spawn("badkey", &args);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < WAIT, "ovnkube kept running with {key:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(1), "{key:?}");
        let mut stderr = String::new();
        if let Some(mut e) = d.child.stderr.take() {
            use std::io::Read;
            e.read_to_string(&mut stderr).unwrap();
        }
        let out = format!("{stderr}{}", d.log_text());
        let line = out
            .lines()
            .find(|l| l.contains("-nb-client-privkey"))
            .unwrap_or_else(|| panic!("no error naming the flag for {key:?}:\n{out}"));
        assert!(line.contains(&key.display().to_string()), "{line}");
        assert!(line.contains(want), "{line}");
        assert!(!out.contains(&key_body), "key material in the output");
        assert!(!out.contains("NB backend: native"), "{out}");
    }
}

/// Starts a master with `args`, `nodes` nodes, and measures pod create → annotation latency
/// for `n` pods at `rate` pods/s.
async fn bench_backend(env: &Env, args: &[String], n: usize, rate: f64) -> PodLatency {
    use ovnkube::kube::annotations::HOST_SUBNET;
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("-loglevel") {
                "-loglevel=4".into()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut master = env.spawn("master", &args);
    master.wait_log("cluster topology ready", WAIT);
    let nodes: Vec<String> = (0..10).map(|i| format!("node{i:02}")).collect();
    env.create_nodes(&nodes).await;
    let api: Api<Node> = Api::all(env.client.clone());
    eventually("node subnets", WAIT, || async {
        let l = api.list(&ListParams::default()).await.unwrap().items;
        let done = l
            .iter()
            .filter(|n| n.annotations().contains_key(HOST_SUBNET))
            .count();
        (done == nodes.len()).then_some(())
    })
    .await;
    master.wait_log("pod worker started", WAIT);
    let l = common::podbench::annotation_latency(env, &nodes, n, rate, pod).await;
    let log = master.log_text();
    assert!(log.contains("NB backend: native"), "not native:\n{log}");
    assert!(
        !log.contains("OVSDB connection lost"),
        "the connection dropped during the run"
    );
    master.terminate();
    l
}

/// `make bench`: pod create → annotation latency with the NB over `ssl:` next to plain `tcp:`,
/// both on the native connection, each on a fresh cluster of 10 nodes. `SSL_BENCH_PODS`
/// (default 1000) pods at `SSL_BENCH_RATE` (default 100) pods/s. Target: ssl within 1.5× tcp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_ssl_against_tcp_pod_latency() {
    let env_num = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env_num("SSL_BENCH_PODS", 1000.0) as usize;
    let rate = env_num("SSL_BENCH_RATE", 100.0);
    let mut got = Vec::new();
    for scheme in ["tcp", "ssl"] {
        let env = Env::start(&format!("bench{scheme}")).await;
        // Kept until the run is over: the master reads the certificates on every reconnect.
        let pki = Pki::create().unwrap();
        let args = match scheme {
            "ssl" => {
                let nb = ovn_testbed::free_loopback_addr().unwrap();
                ssl_master_args(&env, &pki, nb, &pki.ca_cert())
            }
            _ => env.master_args("10.7.0.0/16"),
        };
        got.push((scheme, bench_backend(&env, &args, n, rate).await));
    }
    for (scheme, l) in &got {
        println!(
            "BENCH nb={scheme} pods={n} nodes=10 offered={rate}/s  p50={:.1}ms  p99={:.1}ms  \
             p99(last 10%)={:.1}ms  throughput={:.0} pods/s",
            l.p50_ms, l.p99_ms, l.tail_p99_ms, l.throughput
        );
    }
    if let [(_, tcp), (_, ssl)] = got.as_slice() {
        println!(
            "BENCH ssl/tcp: p50 {:.2}x  p99 {:.2}x (target: within 1.5x)",
            ssl.p50_ms / tcp.p50_ms,
            ssl.p99_ms / tcp.p99_ms
        );
    }
}

/// `make bench`: one pod's NB transaction (add a port), sequentially, natively over `tcp:`
/// and over `ssl:` to the same NB: the cost TLS adds to a transaction. `SSL_BENCH_TXNS`
/// (default 500) transactions each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_ssl_against_tcp_transaction_latency() {
    let n: usize = std::env::var("SSL_BENCH_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let pki = Pki::create().unwrap();
    // One central each: a database has one set of listeners (set-connection replaces them).
    let (tcp_central, ssl_central) = (Central::start().unwrap(), Central::start().unwrap());
    let tcp_addr = common::open_nb_tcp(&tcp_central).await;
    let (ssl_addr, _) = ssl_central.listen_ssl(&pki).unwrap();
    let mut p50s = Vec::new();
    for (scheme, central, remote, tls) in [
        ("tcp", &tcp_central, Remote::Tcp(tcp_addr), None),
        (
            "ssl",
            &ssl_central,
            Remote::Ssl(ssl_addr),
            Some(client_tls(&pki, &pki.ca_cert())),
        ),
    ] {
        central.nbctl(&["ls-add", "n1"]).unwrap();
        let nb = NativeNb::start_tls(remote, tls, nbctl(central), TIMEOUT);
        let net = |i: usize| PodNetwork {
            ip: Ipv4Addr::from(0x0a01_0000 + i as u32 + 2),
            prefix_len: 16,
            mac: format!("0a:58:0a:01:{:02x}:{:02x}", (i + 2) >> 8, (i + 2) & 0xff),
            gateway: Ipv4Addr::new(10, 1, 0, 1),
        };
        let txn = |i: usize| {
            let mut t = NbTxn::new();
            t.extend(port_ops("n1", scheme, &format!("b{i}"), &net(i)));
            t
        };
        until_ok(&nb, &txn(0), TIMEOUT).await;
        let mut ms: Vec<f64> = Vec::with_capacity(n);
        for i in 1..=n {
            let t = txn(i);
            let start = Instant::now();
            nb.transact(&t).await.unwrap();
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        assert_eq!(nb.stats().fallback, 0, "{scheme}: {:?}", nb.stats());
        ms.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
        println!(
            "BENCH txn nb={scheme} n={n}  p50={:.2}ms  p99={:.2}ms",
            pct(0.5),
            pct(0.99)
        );
        p50s.push((pct(0.5), pct(0.99)));
    }
    if let [(t50, t99), (s50, s99)] = p50s.as_slice() {
        println!(
            "BENCH txn ssl/tcp: p50 {:.2}x  p99 {:.2}x",
            s50 / t50,
            s99 / t99
        );
    }
}
