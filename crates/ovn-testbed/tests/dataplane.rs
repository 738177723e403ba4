//! Real dataplane through ovs-vswitchd (netdev) and ovn-controller.

use ovn_testbed::{Central, Chassis, ChassisOpts, TestPod, two_chassis};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Pings until one attempt succeeds: the first echo can be lost while flows and the
/// tunnel neighbour settle (G13).
fn ping(from: &TestPod, dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = from
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", dst])
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ping {} -> {dst} failed: {}",
            from.name(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn wait_listening(pod: &TestPod, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = format!(":{port} ");
    while !String::from_utf8_lossy(&pod.exec(&["ss", "-ltnH"]).unwrap().stdout).contains(&needle) {
        assert!(Instant::now() < deadline, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TCP with netcat-openbsd: the connection completes and the server exits cleanly.
fn tcp(from: &TestPod, to: &TestPod, dst_ip: &str) {
    // A tracked spawn: the pod's Drop reaps it should an assertion below fail.
    let mut server = to
        .spawn(&["sh", "-c", "exec nc -l -w 10 8080 >/dev/null"])
        .unwrap();
    wait_listening(to, 8080);
    let out = from
        .exec(&[
            "sh",
            "-c",
            &format!("echo hello-tcp | nc -N -w 5 {dst_ip} 8080"),
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "nc client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = server.try_wait().unwrap() {
            assert!(st.success(), "nc server: {st}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tcp_roundtrip(from: &TestPod, to: &TestPod, dst_ip: &str) {
    // Spawn with piped stdout to check the payload arrived intact.
    let mut cmd = to.command(&["nc", "-l", "-w", "10", "8080"]).unwrap();
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let mut server = cmd.spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdout = server.stdout.take().unwrap();
    let _guard = Kill(&mut server);
    wait_listening(to, 8080);
    let out = from
        .exec(&[
            "sh",
            "-c",
            &format!("echo hello-tcp | nc -N -w 5 {dst_ip} 8080"),
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "nc client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = String::new();
    stdout.read_to_string(&mut got).unwrap();
    assert_eq!(got.trim(), "hello-tcp");
}

const LS1_PODS: &[&str] = &[
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
];

#[test]
fn one_chassis_two_pods_ping_and_tcp() {
    let t0 = Instant::now();
    let central = Central::start().unwrap();
    let ch = Chassis::start(&central, "node1", ChassisOpts::default()).unwrap();
    central.nbctl(LS1_PODS).unwrap();
    let p1 = TestPod::create(
        &ch,
        "pod1",
        "pod1",
        "0a:58:0a:00:01:0a",
        "10.0.1.10/24",
        "10.0.1.1",
    )
    .unwrap();
    let p2 = TestPod::create(
        &ch,
        "pod2",
        "pod2",
        "0a:58:0a:00:01:0b",
        "10.0.1.11/24",
        "10.0.1.1",
    )
    .unwrap();
    central.nbctl(&["--wait=hv", "sync"]).unwrap();
    assert!(
        ch.vsctl(&["list-ports", "br-int"])
            .unwrap()
            .contains(p1.host_ifname())
    );
    // env() lets a plain ovs-vsctl (no --db) inside the chassis find db.sock.
    let out = ch
        .run_in_netns(&["ovs-vsctl", "--timeout=10", "br-exists", "br-int"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ping(&p1, "10.0.1.11");
    ping(&p2, "10.0.1.10");
    tcp_roundtrip(&p1, &p2, "10.0.1.11");
    tcp(&p2, &p1, "10.0.1.10");
    eprintln!("one_chassis_two_pods_ping_and_tcp: {:?}", t0.elapsed());
}

#[test]
fn two_chassis_geneve_switch_and_router() {
    let t0 = Instant::now();
    let central = Central::start().unwrap();
    let (a, b) = two_chassis(&central, "nodea", "nodeb").unwrap();
    let mut args: Vec<&str> = LS1_PODS.to_vec();
    args.extend_from_slice(&[
        "--",
        "ls-add",
        "ls2",
        "--",
        "lsp-add",
        "ls2",
        "pod3",
        "--",
        "lsp-set-addresses",
        "pod3",
        "0a:58:0a:00:02:0a 10.0.2.10",
        "--",
        "lr-add",
        "lr1",
        "--",
        "lrp-add",
        "lr1",
        "lr1-ls1",
        "00:00:00:00:01:01",
        "10.0.1.1/24",
        "--",
        "lrp-add",
        "lr1",
        "lr1-ls2",
        "00:00:00:00:02:01",
        "10.0.2.1/24",
        "--",
        "lsp-add",
        "ls1",
        "ls1-lr1",
        "--",
        "lsp-set-type",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-addresses",
        "ls1-lr1",
        "router",
        "--",
        "lsp-set-options",
        "ls1-lr1",
        "router-port=lr1-ls1",
        "--",
        "lsp-add",
        "ls2",
        "ls2-lr1",
        "--",
        "lsp-set-type",
        "ls2-lr1",
        "router",
        "--",
        "lsp-set-addresses",
        "ls2-lr1",
        "router",
        "--",
        "lsp-set-options",
        "ls2-lr1",
        "router-port=lr1-ls2",
    ]);
    central.nbctl(&args).unwrap();
    let p1 = TestPod::create(
        &a,
        "pod1",
        "pod1",
        "0a:58:0a:00:01:0a",
        "10.0.1.10/24",
        "10.0.1.1",
    )
    .unwrap();
    let p2 = TestPod::create(
        &b,
        "pod2",
        "pod2",
        "0a:58:0a:00:01:0b",
        "10.0.1.11/24",
        "10.0.1.1",
    )
    .unwrap();
    let p3 = TestPod::create(
        &b,
        "pod3",
        "pod3",
        "0a:58:0a:00:02:0a",
        "10.0.2.10/24",
        "10.0.2.1",
    )
    .unwrap();
    central.nbctl(&["--wait=hv", "sync"]).unwrap();
    // ovn-controller created a geneve tunnel port towards the other chassis.
    let tun = a
        .vsctl(&[
            "--bare",
            "--columns=name",
            "find",
            "interface",
            "type=geneve",
        ])
        .unwrap();
    assert!(!tun.trim().is_empty(), "no geneve port on nodea");
    ping(&p1, "10.0.1.11"); // same switch, across the underlay
    ping(&p1, "10.0.2.10"); // via the distributed router, across the underlay
    tcp_roundtrip(&p3, &p1, "10.0.1.10");
    drop((p1, p2, p3));
    eprintln!("two_chassis_geneve_switch_and_router: {:?}", t0.elapsed());
}
