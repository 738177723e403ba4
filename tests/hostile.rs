//! Hostile and broken Kubernetes input, end to end: the real binary, a real NB/SB/northd, the
//! Kubernetes API stand-in. Each test reproduces one attack and checks what an operator would
//! look at (NB state, Events, the log, `ovn-trace`).

mod common;

use std::time::Duration;

use common::{Env, eventually};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use ovnkube::ovn::ovsdb::parse_tables;

const WAIT: Duration = Duration::from_secs(60);

/// The master's flags with the NB/SB given as unix sockets (the stock central layout).
fn master_args(env: &Env, cluster_subnet: &str) -> Vec<String> {
    env.master_args_unix(cluster_subnet)
}

/// Every VIP of every load balancer, as `vip -> backends`.
fn all_vips(env: &Env) -> std::collections::BTreeMap<String, String> {
    let out = env
        .central
        .nbctl(&["--format=json", "list", "Load_Balancer"])
        .unwrap();
    parse_tables(&out)
        .unwrap()
        .remove(0)
        .into_iter()
        .flat_map(|r| r.map("vips"))
        .collect()
}

/// Create an object from raw JSON, as a client of a non-validating API server could.
async fn create_raw<K>(env: &Env, ns: &str, json: serde_json::Value)
where
    K: kube::Resource<DynamicType = ()>,
{
    let ar = kube::api::ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(json).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// Warning Events (events.k8s.io/v1, as the controllers' Recorder writes them) in `ns` about
/// the object named `name`: their messages.
async fn events_about(env: &Env, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

fn svc_json(name: &str, port: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "protocol": "TCP", "port": port}]}
    })
}

fn eps_json(name: &str, ip: &str, port: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "protocol": "TCP", "port": port}]}]
    })
}

/// A Service stored with `port: "http"` (the API stand-in, like any non-validating server,
/// keeps it) used to make the initial list fail forever, so no Service got a VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undecodable_service_does_not_block_the_others_across_a_restart() {
    let env = Env::start("hbadsvc").await;
    let mut master = env.spawn("master", &master_args(&env, "10.40.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    create_raw::<Service>(&env, "default", svc_json("bad", "http".into())).await;
    create_raw::<Endpoints>(&env, "default", eps_json("bad", "10.40.1.7", "http".into())).await;
    create_raw::<Service>(&env, "default", svc_json("good", 80.into())).await;
    create_raw::<Endpoints>(&env, "default", eps_json("good", "10.40.1.5", 8080.into())).await;
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let good_ip = svcs
        .get("good")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    let vip = format!("{good_ip}:80");
    eventually("the good service's VIP", WAIT, || async {
        (all_vips(&env).get(&vip).map(String::as_str) == Some("10.40.1.5:8080")).then_some(())
    })
    .await;
    master.wait_log("cannot decode Service default/bad", WAIT);

    // A restart lists everything at once: the bad object must not fail that list.
    master.terminate();
    create_raw::<Service>(&env, "default", svc_json("late", 81.into())).await;
    create_raw::<Endpoints>(&env, "default", eps_json("late", "10.40.1.6", 8080.into())).await;
    let late_ip = svcs
        .get("late")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    let mut master = env.spawn("master2", &master_args(&env, "10.40.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let late = format!("{late_ip}:81");
    eventually(
        "the service created while the master was down",
        WAIT,
        || async {
            (all_vips(&env).get(&late).map(String::as_str) == Some("10.40.1.6:8080")).then_some(())
        },
    )
    .await;
    assert_eq!(
        all_vips(&env).get(&vip).map(String::as_str),
        Some("10.40.1.5:8080")
    );
    let log = master.log_text();
    assert!(
        log.contains("ERROR") && log.contains("cannot decode Service default/bad"),
        "{log}"
    );
    assert!(
        !log.contains("failed to perform initial object list"),
        "{log}"
    );
    assert!(
        !all_vips(&env).values().any(|b| b.contains("10.40.1.7")),
        "{:?}",
        all_vips(&env)
    );
    let evs = eventually("an Event on the bad Service", WAIT, || async {
        let e = events_about(&env, "default", "bad").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        evs.iter()
            .any(|e| e.starts_with("InvalidObject: cannot decode Service default/bad")),
        "{evs:?}"
    );
}

/// The join switch and its ports on both sides, as `ovn-nbctl` lists them.
fn join_state(env: &Env) -> String {
    let mut s = String::new();
    for (table, rec, cols) in [
        (
            "Logical_Switch",
            "join",
            "_uuid,name,ports,other_config,external_ids",
        ),
        (
            "Logical_Router_Port",
            "rtoj-ovn_cluster_router",
            "_uuid,name,mac,networks,external_ids",
        ),
        (
            "Logical_Switch_Port",
            "jtor-ovn_cluster_router",
            "_uuid,name,type,options,addresses",
        ),
    ] {
        let cols = format!("--columns={cols}");
        s.push_str(
            &env.central
                .nbctl(&[cols.as_str(), "list", table, rec])
                .unwrap(),
        );
    }
    s
}

/// A Node named `join` (a valid node name) used to take over the join switch: it got the
/// node's subnet and `k8s-node=join`, and deleting the Node ran `ls-del join`. A Node named
/// with the join switch's UUID reached the same row through `ovn-nbctl`'s UUID lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_like_infrastructure_is_refused_and_its_deletion_touches_nothing() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::DeleteParams;
    let env = Env::start("hjoin").await;
    let mut master = env.spawn("master", &master_args(&env, "10.41.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    let before = join_state(&env);
    let join_uuid = env.nb_rows("Logical_Switch")["join"].uuid.clone();
    // Someone else's switch that happens to have a node's name.
    env.central
        .nbctl(&[
            "--",
            "ls-add",
            "web",
            "--",
            "set",
            "Logical_Switch",
            "web",
            "other_config:mcast_snoop=true",
        ])
        .unwrap();
    let web_before = env.nb_rows("Logical_Switch")["web"].clone();
    env.create_nodes(["join", join_uuid.as_str(), "web", "n1"])
        .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    eventually("n1's switch", WAIT, || async {
        let sw = env.nb_rows("Logical_Switch");
        sw.get("n1")
            .and_then(|s| s.map_get("other_config", "subnet"))
            .map(|_| ())
    })
    .await;
    master.wait_log("node join is not given a subnet or OVN objects", WAIT);
    master.wait_log(
        &format!("node {join_uuid} is not given a subnet or OVN objects"),
        WAIT,
    );
    master.wait_log("node web is not given a subnet or OVN objects: logical switch web exists and is not this node's", WAIT);
    assert!(master.log_text().contains("ERROR"), "{}", master.log_text());
    let evs = eventually("an Event on Node join", WAIT, || async {
        let e = events_about(&env, "default", "join").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        evs.iter()
            .any(|e| e.starts_with("NodeNameCollision:") && e.contains("join switch")),
        "{evs:?}"
    );
    for n in ["join", join_uuid.as_str(), "web"] {
        let node = nodes.get(n).await.unwrap();
        assert!(
            !node
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("ovn_host_subnet"),
            "{n} got a subnet"
        );
    }
    assert_eq!(join_state(&env), before, "the join switch was changed");

    // Deleting the Nodes must not delete infrastructure. The master handles node events in
    // order, so once n1's switch is gone the two deletions before it were handled.
    for n in ["join", join_uuid.as_str(), "web", "n1"] {
        nodes.delete(n, &DeleteParams::default()).await.unwrap();
    }
    eventually("n1's switch removed", WAIT, || async {
        (!env.nb_rows("Logical_Switch").contains_key("n1")).then_some(())
    })
    .await;
    assert_eq!(join_state(&env), before, "the join switch was changed");
    assert_eq!(
        env.nb_rows("Logical_Switch").get("web"),
        Some(&web_before),
        "someone else's switch was changed or deleted"
    );
    let show = env.central.nbctl(&["show", "ovn_cluster_router"]).unwrap();
    assert!(show.contains("port rtoj-ovn_cluster_router"), "{show}");
    let lrps = env.nb_rows("Logical_Router_Port");
    assert_eq!(
        lrps["rtoj-ovn_cluster_router"].set("networks"),
        ["100.64.0.1/16"]
    );
}

/// A logical port made by the test for a "pod" at host index `idx` of the node's subnet
/// (the pods controller is not involved): `(port, ip, mac, gateway ip)`.
fn add_port(
    env: &Env,
    node: &str,
    subnet: &str,
    name: &str,
    idx: u32,
) -> (String, String, String, String) {
    use ovnkube::ovn::addrs::mac_from_ip;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let base = u32::from(net.network());
    let ip = std::net::Ipv4Addr::from(base + idx);
    let gw = std::net::Ipv4Addr::from(base + 1);
    let mac = mac_from_ip(ip);
    let port = format!("default_{name}");
    env.central
        .nbctl(&[
            "--",
            "lsp-add",
            node,
            &port,
            "--",
            "lsp-set-addresses",
            &port,
            &format!("{mac} {ip}"),
        ])
        .unwrap();
    (port, ip.to_string(), mac, gw.to_string())
}

async fn node_subnet(env: &Env, name: &str) -> String {
    use k8s_openapi::api::core::v1::Node;
    env.create_nodes([name]).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    eventually(&format!("{name}'s subnet and switch"), WAIT, || async {
        let n = nodes.get(name).await.ok()?;
        let s = n.metadata.annotations?.get("ovn_host_subnet")?.clone();
        env.nb_rows("Logical_Switch")
            .contains_key(name)
            .then_some(s)
    })
    .await
}

/// externalIPs used to become VIPs on the cluster load balancer whatever they were: another
/// pod's address (traffic to it was redirected, CVE-2020-8554), 0.0.0.0, broadcast, loopback.
/// Endpoint ports 0 and 65536 became backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_cannot_hijack_cluster_or_special_addresses() {
    use ovnkube::ovn::addrs::mac_from_ip;
    let env = Env::start("hhijack").await;
    let mut master = env.spawn("master", &master_args(&env, "10.42.0.0/16"));
    master.wait_log("initial service sync done", WAIT);
    let subnet = node_subnet(&env, "n1").await;
    let (victim_port, victim_ip, _, _) = add_port(&env, "n1", &subnet, "victim", 5);
    let (client_port, client_ip, client_mac, gw) = add_port(&env, "n1", &subnet, "client", 6);
    let (_, backend_ip, _, _) = add_port(&env, "n1", &subnet, "attacker", 7);
    let mgmt_ip = {
        let net: ipnet::Ipv4Net = subnet.parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(net.network()) + 2).to_string()
    };
    let forbidden = [
        victim_ip.as_str(),
        mgmt_ip.as_str(),
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "100.64.0.1",
        "224.0.0.251",
        "169.254.169.254",
        "172.16.1.50",
    ];
    let mut ext: Vec<&str> = forbidden.to_vec();
    ext.push("203.0.113.10");
    create_raw::<Service>(
        &env,
        "default",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "evil", "namespace": "default"},
            "spec": {"type": "ClusterIP", "externalIPs": ext, "ports": [
                {"name": "http", "protocol": "TCP", "port": 80},
                {"name": "zero", "protocol": "TCP", "port": 81},
                {"name": "big", "protocol": "TCP", "port": 82}
            ]}
        }),
    )
    .await;
    create_raw::<Endpoints>(
        &env,
        "default",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "evil", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": backend_ip}], "ports": [
                {"name": "http", "protocol": "TCP", "port": 8080},
                {"name": "zero", "protocol": "TCP", "port": 0},
                {"name": "big", "protocol": "TCP", "port": 65536}
            ]}]
        }),
    )
    .await;
    // The allowed externalIP is programmed, so the service was processed.
    eventually("the allowed externalIP VIP", WAIT, || async {
        all_vips(&env).contains_key("203.0.113.10:80").then_some(())
    })
    .await;
    let vips = all_vips(&env);
    for ip in forbidden {
        assert!(
            !vips.keys().any(|v| v.starts_with(&format!("{ip}:"))),
            "{ip} became a VIP: {vips:?}"
        );
    }
    assert!(
        !vips
            .values()
            .any(|b| b.ends_with(":0") || b.contains(":0,") || b.contains(":65536")),
        "{vips:?}"
    );
    assert!(
        !vips
            .keys()
            .any(|v| v.ends_with(":81") || v.ends_with(":82")),
        "{vips:?}"
    );

    // ovn-trace: a new connection from the client to the victim pod reaches the victim
    // itself, not the attacker's backend.
    let flow = format!(
        "inport==\"{client_port}\" && eth.src=={client_mac} && eth.dst=={} && ip4.src=={client_ip} \
         && ip4.dst=={victim_ip} && ip.ttl==64 && tcp && tcp.src==33333 && tcp.dst==80 && tcp.flags==2",
        mac_from_ip(gw.parse().unwrap())
    );
    let t = env.central.trace("n1", &flow, &["--ct=new"]).unwrap();
    assert!(!t.contains("ct_lb_mark(backends="), "{t}");
    assert!(t.contains(&format!("output to \"{victim_port}\"")), "{t}");
    // ... while the allowed externalIP is load-balanced as usual.
    let flow = flow.replace(&format!("ip4.dst=={victim_ip}"), "ip4.dst==203.0.113.10");
    let t = env.central.trace("n1", &flow, &["--ct=new"]).unwrap();
    assert!(
        t.contains(&format!("ct_lb_mark(backends={backend_ip}:8080)")),
        "{t}"
    );

    let evs = eventually("Events on the Service", WAIT, || async {
        let e = events_about(&env, "default", "evil").await;
        let both = e
            .iter()
            .any(|m| m.contains("is inside the cluster network"))
            && e.iter().any(|m| m.contains("(65536) is outside 1-65535"));
        both.then_some(e)
    })
    .await;
    assert!(
        evs.iter().any(|e| e.starts_with("RejectedServiceInput:")
            && e.contains(&format!(
                "externalIP {victim_ip} is inside the cluster network"
            ))),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.contains("endpoint port \"big\" (65536) is outside 1-65535")),
        "{evs:?}"
    );
    for ip in forbidden {
        assert!(
            evs.iter().any(|e| e.contains(&format!("externalIP {ip} "))),
            "no Event names the refused externalIP {ip}: {evs:?}"
        );
    }
}

fn test_pod(name: &str, ann: Option<&str>) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
    Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            annotations: ann.map(|a| [("ovn".to_string(), a.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some("pause".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `(ip/len, mac, gateway)` of a pod's `ovn` annotation, once it has one.
async fn wait_pod_net(env: &Env, name: &str) -> (String, String, String) {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    eventually(&format!("pod {name} annotated"), WAIT, || async {
        let p = api.get(name).await.ok()?;
        let v = p.metadata.annotations?.get("ovn")?.clone();
        let j: serde_json::Value = serde_json::from_str(&v).ok()?;
        Some((
            j["ip_address"].as_str()?.to_string(),
            j["mac_address"].as_str()?.to_string(),
            j["gateway_ip"].as_str()?.to_string(),
        ))
    })
    .await
}

/// How many UDP datagrams `to` receives from `from` (sending to `dst`) in a few seconds.
fn udp_delivered(from: &ovn_testbed::TestPod, to: &ovn_testbed::TestPod, dst: &str) -> u32 {
    let recv = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                s.bind(('0.0.0.0',9999))\ns.settimeout(0.3)\nn=0\nend=time.time()+4\n\
                while time.time()<end:\n  try:\n    s.recv(100); n+=1\n  except socket.timeout:\n    pass\nprint(n)";
    let send = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(25):\n  s.sendto(b'x',('{dst}',9999)); time.sleep(0.1)"
    );
    std::thread::scope(|sc| {
        let r = sc.spawn(|| to.exec(&["python3", "-c", recv]).unwrap());
        std::thread::sleep(Duration::from_millis(500));
        let out = from.exec(&["python3", "-c", &send]).unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = r.join().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    })
}

fn in_pod(p: &ovn_testbed::TestPod, argv: &[&str]) {
    let out = p.exec(argv).unwrap();
    assert!(out.status.success(), "{argv:?}: {out:?}");
}

/// Set the pod's eth0 to `mac` and `ip_cidr`, with a static neighbour entry for `peer` so
/// ARP (itself subject to port security) is out of the picture.
fn set_identity(p: &ovn_testbed::TestPod, mac: &str, ip_cidr: &str, peer: (&str, &str)) {
    in_pod(p, &["ip", "link", "set", "eth0", "down"]);
    in_pod(p, &["ip", "link", "set", "eth0", "address", mac]);
    in_pod(p, &["ip", "addr", "flush", "dev", "eth0"]);
    in_pod(p, &["ip", "addr", "add", ip_cidr, "dev", "eth0"]);
    in_pod(p, &["ip", "link", "set", "eth0", "up"]);
    in_pod(
        p,
        &[
            "ip", "neigh", "replace", peer.0, "lladdr", peer.1, "dev", "eth0",
        ],
    );
}

/// Pod ports had no port security: a pod that took another pod's IP or MAC could send as it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_takes_another_pods_ip_or_mac_reaches_nobody() {
    use k8s_openapi::api::core::v1::Pod;
    let env = Env::start("hspoof").await;
    let mut master = env.spawn("master", &master_args(&env, "10.43.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    node_subnet(&env, "n1").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    for n in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &test_pod(n, None))
            .await
            .unwrap();
    }
    let (a_cidr, a_mac, gw) = wait_pod_net(&env, "a").await;
    let (b_cidr, b_mac, _) = wait_pod_net(&env, "b").await;
    let (c_cidr, c_mac, _) = wait_pod_net(&env, "c").await;
    // What an operator sees: every pod port locks its MAC and IP.
    let lsps = env.nb_rows("Logical_Switch_Port");
    for (n, cidr, mac) in [
        ("a", &a_cidr, &a_mac),
        ("b", &b_cidr, &b_mac),
        ("c", &c_cidr, &c_mac),
    ] {
        let ip = cidr.split('/').next().unwrap();
        assert_eq!(
            lsps[&format!("default_{n}")].set("port_security"),
            [format!("{mac} {ip}")],
            "{n}"
        );
    }
    let chassis = ovn_testbed::Chassis::start(&env.central, "ch1", Default::default()).unwrap();
    let mk = |n: &str, mac: &str, cidr: &str| {
        ovn_testbed::TestPod::create(&chassis, n, &format!("default_{n}"), mac, cidr, &gw).unwrap()
    };
    let pa = mk("a", &a_mac, &a_cidr);
    let _pb = mk("b", &b_mac, &b_cidr);
    let pc = mk("c", &c_mac, &c_cidr);
    env.central
        .nbctl(&["--wait=hv", "--timeout=30", "sync"])
        .unwrap();
    let a_ip = a_cidr.split('/').next().unwrap().to_string();
    let peer = (a_ip.as_str(), a_mac.as_str());

    // As itself, c reaches a.
    set_identity(&pc, &c_mac, &c_cidr, peer);
    let n = eventually("c reaches a as itself", WAIT, || async {
        let n = udp_delivered(&pc, &pa, &a_ip);
        (n > 0).then_some(n)
    })
    .await;
    assert!(n > 0);
    // With b's IP, nothing gets through.
    set_identity(&pc, &c_mac, &b_cidr, peer);
    assert_eq!(udp_delivered(&pc, &pa, &a_ip), 0, "c sent with b's IP");
    // With b's MAC, nothing gets through.
    set_identity(&pc, &b_mac, &c_cidr, peer);
    assert_eq!(udp_delivered(&pc, &pa, &a_ip), 0, "c sent with b's MAC");
    // With both of b's, nothing either.
    set_identity(&pc, &b_mac, &b_cidr, peer);
    assert_eq!(udp_delivered(&pc, &pa, &a_ip), 0, "c sent as b");
    // Back to itself: it works again, so the drops were the spoofing, not a broken pod.
    set_identity(&pc, &c_mac, &c_cidr, peer);
    let n = eventually("c reaches a again", WAIT, || async {
        let n = udp_delivered(&pc, &pa, &a_ip);
        (n > 0).then_some(n)
    })
    .await;
    assert!(n > 0);
}

/// A pre-set `ovn` annotation was accepted with another pod's MAC or the zero MAC, and an
/// edited annotation of a served pod was only warned about (the CNI then set up the edited
/// address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_owns_the_pod_annotation_and_macs_are_unique() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};
    let env = Env::start("hann").await;
    let mut master = env.spawn("master", &master_args(&env, "10.44.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    let subnet = node_subnet(&env, "n1").await;
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let at = |i: u32| std::net::Ipv4Addr::from(u32::from(net.network()) + i).to_string();
    let gw = at(1);
    let len = net.prefix_len();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    pods.create(&PostParams::default(), &test_pod("a", None))
        .await
        .unwrap();
    let (a_cidr, a_mac, _) = wait_pod_net(&env, "a").await;
    let ann = |ip: &str, mac: &str| {
        format!(r#"{{"ip_address":"{ip}/{len}","mac_address":"{mac}","gateway_ip":"{gw}"}}"#)
    };
    let dup = ann(&at(40), &a_mac);
    let zero = ann(&at(41), "00:00:00:00:00:00");
    let own = ann(&at(42), "0a:58:0a:2c:99:42");
    for (n, v) in [("dupmac", &dup), ("zeromac", &zero), ("own", &own)] {
        pods.create(&PostParams::default(), &test_pod(n, Some(v)))
            .await
            .unwrap();
    }
    // The pod with its own MAC is served; the others are refused with an Event.
    eventually("pod own's port", WAIT, || async {
        env.nb_rows("Logical_Switch_Port")
            .contains_key("default_own")
            .then_some(())
    })
    .await;
    for (n, why) in [
        ("dupmac", "is already used by another pod"),
        ("zeromac", "is not a MAC address"),
    ] {
        let evs = eventually(&format!("an Event on pod {n}"), WAIT, || async {
            let e = events_about(&env, "default", n).await;
            (!e.is_empty()).then_some(e)
        })
        .await;
        assert!(evs.iter().any(|e| e.contains(why)), "{n}: {evs:?}");
        assert!(
            !env.nb_rows("Logical_Switch_Port")
                .contains_key(&format!("default_{n}")),
            "{n} got a port"
        );
    }
    // Only one L2 entry for a's MAC in the southbound.
    let sb = env
        .central
        .sbctl(&["--columns=mac", "list", "Port_Binding"])
        .unwrap();
    assert_eq!(sb.matches(a_mac.as_str()).count(), 1, "{sb}");

    // Someone edits a served pod's annotation: the controller writes the port's truth back.
    let forged = ann(&at(77), "0a:58:0a:2c:00:4d");
    let patch = serde_json::json!({"metadata": {"annotations": {"ovn": forged}}});
    pods.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("a's annotation restored", WAIT, || async {
        let (cidr, mac, _) = wait_pod_net(&env, "a").await;
        (cidr == a_cidr && mac == a_mac).then_some(())
    })
    .await;
    let lsp = &env.nb_rows("Logical_Switch_Port")["default_a"];
    let a_ip = a_cidr.split('/').next().unwrap();
    assert_eq!(lsp.set("addresses"), [format!("{a_mac} {a_ip}")]);
    master.wait_log("restoring it from its logical port", WAIT);

    // After a restart, a new pod is served at once (no duplicate address left behind), and
    // an undecodable Pod stored meanwhile does not block the pod list either.
    master.terminate();
    create_raw::<Pod>(
        &env,
        "default",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "broken", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": "not-a-list"}
        }),
    )
    .await;
    let mut master = env.spawn("master2", &master_args(&env, "10.44.0.0/16"));
    master.wait_log("initial node sync done", WAIT);
    pods.create(&PostParams::default(), &test_pod("late", None))
        .await
        .unwrap();
    let (late_cidr, late_mac, _) = wait_pod_net(&env, "late").await;
    assert_ne!(late_cidr, a_cidr);
    assert_ne!(late_mac, a_mac);
    eventually("late's port", WAIT, || async {
        env.nb_rows("Logical_Switch_Port")
            .contains_key("default_late")
            .then_some(())
    })
    .await;
    master.wait_log("cannot decode Pod default/broken", WAIT);
}
