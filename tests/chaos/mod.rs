//! The fault suite's support: snapshots of the API and the NB for the invariant checker, the
//! churn generator, and the faults themselves.

pub mod invariants;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use ovn_testbed::Central;
use ovnkube::controller::policy_model::Selector;
use ovnkube::kube::annotations;
use ovnkube::ovn::ovsdb::parse_tables;
use ovnkube::ovn::schema;
use serde_json::json;
use tokio::sync::watch;

use invariants::{NbView, PodView, PolicyView, PortView, RouterView, ServiceView, World};
use ovnkube::ovn::Row;
use ovnkube::ovn::names;
use ovnkube::ovn::proto::Proto;

pub const NS: &str = "default";
const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// The master's plain TCP cluster load balancer (named in master/topology.rs).
const CLUSTER_LB_TCP: &str = "cluster-lb-tcp";
pub const APPS: [&str; 3] = ["web", "db", "cache"];

/// A small deterministic PRNG (xorshift64*): the suite prints its seed so a run can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A duration uniformly in [lo, hi).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.below(span))
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// The API side, read through the API as any client would; `None` when the API does not answer.
pub async fn world(client: &kube::Client) -> Option<World> {
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await.ok()?.items;
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .ok()?
        .items;
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .ok()?
        .items;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .ok()?
        .items;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .ok()?
        .items;
    Some(World {
        nodes: nodes
            .iter()
            .map(|n| {
                let subnet = n
                    .annotations()
                    .get(annotations::HOST_SUBNET)
                    .and_then(|s| annotations::parse_host_subnet(s).ok());
                (n.name_any(), subnet)
            })
            .collect(),
        pods: pods.iter().filter_map(pod_view).collect(),
        services: services
            .iter()
            .filter_map(|s| service_view(s, &slices))
            .collect(),
        policies: policies
            .iter()
            .filter_map(|p| {
                let sel = p.spec.as_ref()?.pod_selector.as_ref();
                Some(PolicyView {
                    namespace: p.namespace()?,
                    name: p.name_any(),
                    selector: sel
                        .map_or(Ok(Selector::everything()), Selector::parse)
                        .ok()?,
                })
            })
            .collect(),
        mgmt_macs: nodes
            .iter()
            .filter_map(|n| {
                let mac = n.annotations().get(annotations::NODE_MGMT_PORT_MAC)?;
                Some((n.name_any(), mac.clone()))
            })
            .collect(),
        // The bed adds the hosts of the nodes it runs agents on.
        agents: BTreeMap::new(),
    })
}

fn pod_view(p: &Pod) -> Option<PodView> {
    let spec = p.spec.as_ref()?;
    if spec.host_network == Some(true) || p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(PodView {
        namespace: p.namespace()?,
        name: p.name_any(),
        node: spec.node_name.clone()?,
        labels: p.labels().clone(),
        annotation: p.annotations().get(annotations::POD_NETWORK).cloned(),
    })
}

fn service_view(s: &Service, slices: &[EndpointSlice]) -> Option<ServiceView> {
    let spec = s.spec.as_ref()?;
    let port = spec.ports.as_ref()?.first()?;
    let target_port = match &port.target_port {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => *p,
        _ => port.port,
    };
    let name = s.name_any();
    let ready = slices
        .iter()
        .filter(|sl| sl.labels().get(SERVICE_LABEL) == Some(&name))
        .flat_map(|sl| sl.endpoints.iter().flatten())
        // An unset `ready` means ready, as in Kubernetes.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    Some(ServiceView {
        namespace: s.namespace()?,
        name,
        cluster_ip: spec.cluster_ip.clone()?,
        port: port.port,
        target_port,
        ready,
    })
}

/// The NB tables the checker reads, in the order `nb_view` lists them.
const NB_TABLES: [&str; 8] = [
    schema::nb::LOGICAL_SWITCH,
    schema::nb::LOGICAL_SWITCH_PORT,
    schema::nb::LOAD_BALANCER,
    schema::nb::PORT_GROUP,
    schema::nb::LOGICAL_ROUTER,
    schema::nb::LOGICAL_ROUTER_PORT,
    schema::nb::LOGICAL_ROUTER_STATIC_ROUTE,
    schema::nb::NAT,
];

/// The NB side (one `ovn-nbctl` for the tables, one `ovn-sbctl` for the bindings);
/// `None` while a database does not answer.
pub fn nb_view(central: &Central) -> Option<NbView> {
    let mut args = vec!["--format=json"];
    for (i, t) in NB_TABLES.iter().enumerate() {
        if i > 0 {
            args.push("--");
        }
        args.extend(["list", t]);
    }
    let out = central.nbctl(&args).ok()?;
    let tables = parse_tables(&out).ok()?;
    let [
        switches,
        ports,
        lbs,
        pgs,
        routers,
        router_ports,
        routes,
        nats,
    ] = <[Vec<Row>; 8]>::try_from(tables).ok()?;
    let sb = central
        .sbctl(&[
            "--format=json",
            "--columns=logical_port",
            "list",
            schema::sb::PORT_BINDING,
        ])
        .ok()?;
    let bound = parse_tables(&sb)
        .ok()?
        .into_iter()
        .flatten()
        .map(|r| r.str("logical_port"))
        .collect();
    let mut name_counts = BTreeMap::new();
    for (table, rows) in [
        (schema::nb::LOGICAL_SWITCH, &switches),
        (schema::nb::LOGICAL_SWITCH_PORT, &ports),
        (schema::nb::LOGICAL_ROUTER, &routers),
        (schema::nb::LOGICAL_ROUTER_PORT, &router_ports),
    ] {
        for r in rows {
            *name_counts
                .entry((table.to_string(), r.str(schema::col::NAME)))
                .or_insert(0) += 1;
        }
    }
    Some(NbView {
        switches: switches.iter().map(|r| r.str(schema::col::NAME)).collect(),
        pod_ports: ports
            .iter()
            .filter(|r| r.map_get(schema::col::EXTERNAL_IDS, "pod").as_deref() == Some("true"))
            .map(|r| {
                (
                    r.str(schema::col::NAME),
                    PortView {
                        uuid: r.uuid.clone(),
                        addresses: r.set(schema::col::ADDRESSES),
                    },
                )
            })
            .collect(),
        cluster_vips: lbs
            .iter()
            .find(|r| r.str(schema::col::NAME) == CLUSTER_LB_TCP)
            .map(|r| r.map(schema::col::VIPS))
            .unwrap_or_default(),
        port_groups: pgs
            .iter()
            .map(|r| {
                (
                    r.str(schema::col::NAME),
                    r.set(schema::col::PORTS)
                        .into_iter()
                        .collect::<BTreeSet<_>>(),
                )
            })
            .collect(),
        bound,
        names: name_counts,
        mgmt_ports: ports
            .iter()
            .filter(|r| r.str(schema::col::NAME).starts_with(&names::mgmt_port("")))
            .map(|r| (r.str(schema::col::NAME), r.set(schema::col::ADDRESSES)))
            .collect(),
        routers: router_views(&routers, &routes, &nats),
        gateway_lbs: gateway_lbs(&lbs),
    })
}

/// Routers with their routes and NAT rules resolved from their rows.
fn router_views(routers: &[Row], routes: &[Row], nats: &[Row]) -> Vec<RouterView> {
    let by_uuid = |rows: &[Row], text: &dyn Fn(&Row) -> String| -> BTreeMap<String, String> {
        rows.iter().map(|r| (r.uuid.clone(), text(r))).collect()
    };
    let routes = by_uuid(routes, &|r| {
        format!(
            "{} via {}",
            r.str(schema::col::IP_PREFIX),
            r.str(schema::col::NEXTHOP)
        )
    });
    let nats = by_uuid(nats, &|r| {
        format!(
            "{} {} {}",
            r.str(schema::col::TYPE),
            r.str(schema::col::EXTERNAL_IP),
            r.str(schema::col::LOGICAL_IP)
        )
    });
    let resolve = |uuids: Vec<String>, rules: &BTreeMap<String, String>| -> Vec<String> {
        uuids
            .iter()
            .map(|u| rules.get(u).cloned().unwrap_or_else(|| format!("uuid {u}")))
            .collect()
    };
    routers
        .iter()
        .map(|r| RouterView {
            name: r.str(schema::col::NAME),
            chassis: r.map_get(schema::col::OPTIONS, "chassis"),
            lbs: r.set(schema::col::LOAD_BALANCER).into_iter().collect(),
            routes: resolve(r.set(schema::col::STATIC_ROUTES), &routes),
            nats: resolve(r.set(schema::col::NAT), &nats),
        })
        .collect()
}

/// The gateway routers' own load balancers: (protocol, router) → uuids.
fn gateway_lbs(lbs: &[Row]) -> BTreeMap<(Proto, String), Vec<String>> {
    let mut out: BTreeMap<(Proto, String), Vec<String>> = BTreeMap::new();
    for r in lbs {
        for p in Proto::ALL {
            if let Some(gr) = r.map_get(schema::col::EXTERNAL_IDS, &names::ext_gateway_lb(p)) {
                out.entry((p, gr)).or_default().push(r.uuid.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Churn

/// Object counts and the initial objects the generator works on.
#[derive(Clone, Debug)]
pub struct ChurnShape {
    pub nodes: Vec<String>,
    pub services: usize,
    pub max_pods: usize,
    /// API changes per second while on.
    pub rate: f64,
}

/// Creates the services (with one slice each) and the three policies the churn works on.
pub async fn seed(client: &kube::Client, shape: &ChurnShape) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    for i in 0..shape.services {
        let name = format!("svc-{i}");
        svcs.create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"type": "ClusterIP",
                         "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
            }))?,
        )
        .await?;
        slices
            .create(&pp, &slice(&name, &[("10.250.0.1", true)])?)
            .await?;
    }
    let pols: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    for (name, selector) in [
        ("allow-web", json!({"matchLabels": {"app": "web"}})),
        ("allow-db", json!({"matchLabels": {"app": "db"}})),
        ("all-pods", json!({})),
    ] {
        pols.create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"podSelector": selector, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]},
            }))?,
        )
        .await?;
    }
    Ok(())
}

fn slice(service: &str, eps: &[(&str, bool)]) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-slice"), "namespace": NS,
                     "labels": {SERVICE_LABEL: service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))?)
}

/// The churn generator: pods created, deleted and relabelled (which moves them between
/// policies), EndpointSlices rewritten. Runs while `on` is true; counts what it changed.
pub struct Churn {
    pub on: watch::Sender<bool>,
    pub changes: Arc<AtomicU64>,
    pub failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Parallel writers: one API call at a time each, so the rate does not hang on one slow call.
const WORKERS: u64 = 4;

impl Churn {
    pub fn start(client: kube::Client, shape: ChurnShape, seed: u64) -> Churn {
        let (on, rx) = watch::channel(false);
        let changes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let mut shape = shape;
        shape.rate /= WORKERS as f64;
        let tasks = (0..WORKERS)
            .map(|w| {
                tokio::spawn(churn_loop(
                    client.clone(),
                    shape.clone(),
                    w,
                    Rng::new(seed.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
                    rx.clone(),
                    changes.clone(),
                    failures.clone(),
                ))
            })
            .collect();
        Churn {
            on,
            changes,
            failures,
            tasks,
        }
    }

    pub fn set(&self, on: bool) {
        self.on.send_replace(on);
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Changes the API refused or that failed (a frozen API server times some out).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn churn_loop(
    client: kube::Client,
    shape: ChurnShape,
    worker: u64,
    mut rng: Rng,
    mut on: watch::Receiver<bool>,
    changes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    let period = Duration::from_secs_f64(1.0 / shape.rate.max(0.1));
    let mut live: Vec<String> = Vec::new();
    let mut next_id = 0u64;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if on.wait_for(|v| *v).await.is_err() {
            return;
        }
        tick.tick().await;
        if !*on.borrow() {
            continue;
        }
        match step(&client, &shape, worker, &mut rng, &mut live, &mut next_id).await {
            Ok(()) => changes.fetch_add(1, Ordering::Relaxed),
            Err(_) => failures.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// One API change, chosen by weight among what is possible.
async fn step(
    client: &kube::Client,
    shape: &ChurnShape,
    worker: u64,
    rng: &mut Rng,
    live: &mut Vec<String>,
    next_id: &mut u64,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let roll = rng.below(10);
    let full = live.len() as u64 >= shape.max_pods as u64 / WORKERS;
    if live.is_empty() || (roll < 4 && !full) {
        let name = format!("p{worker}-{next_id}");
        *next_id += 1;
        let node = &shape.nodes[rng.below(shape.nodes.len() as u64) as usize];
        let app = APPS[rng.below(APPS.len() as u64) as usize];
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        live.push(name);
    } else if roll < 7 {
        let victim = live.swap_remove(rng.below(live.len() as u64) as usize);
        pods.delete(&victim, &DeleteParams::default()).await?;
    } else if roll < 8 {
        let who = &live[rng.below(live.len() as u64) as usize];
        let app = APPS[rng.below(APPS.len() as u64) as usize];
        let patch = json!({"metadata": {"labels": {"app": app}}});
        pods.patch(who, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    } else {
        let svc = format!("svc-{}", rng.below(shape.services as u64));
        let n = rng.below(4) as usize;
        let ips: Vec<String> = (0..n)
            .map(|_| format!("10.250.{}.{}", rng.below(4), 1 + rng.below(250)))
            .collect();
        let eps: Vec<(&str, bool)> = ips
            .iter()
            .map(|ip| (ip.as_str(), rng.below(4) != 0))
            .collect();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
        let patch = serde_json::to_value(slice(&svc, &eps)?)?;
        // A merge patch replaces the endpoints list as a whole.
        slices
            .patch(
                &format!("{svc}-slice"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Faults on the central's daemons

/// The PID in `<central dir>/<file>` if that process is alive and one of this central's.
fn daemon_pid(central: &Central, file: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(central.dir().join(file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = format!("{}/", central.dir().display());
    String::from_utf8_lossy(&cmdline)
        .contains(&needle)
        .then_some(pid)
}

/// A daemon's argv, read from /proc before it is killed, so it can be started again as it was.
fn argv_of(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn kill9_and_reap(pid: i32) {
    // SAFETY: kill(2) on a PID we just verified to be one of this central's daemons.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
        // Detached daemons are reparented to init, which reaps them.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One of the central's daemons: killed with SIGKILL, started again with its own argv.
pub struct Killed {
    argv: Vec<String>,
    remove: Vec<std::path::PathBuf>,
}

/// kill -9 of the daemon whose pidfile is `pidfile` (e.g. `ovnsb_db.pid`, `ovn-northd.pid`).
pub fn kill_daemon(
    central: &Central,
    pidfile: &str,
    socket: Option<&Path>,
) -> anyhow::Result<Killed> {
    let pid = daemon_pid(central, pidfile).ok_or_else(|| {
        anyhow::anyhow!(
            "no live daemon in {pidfile} under {}",
            central.dir().display()
        )
    })?;
    let argv = argv_of(pid).ok_or_else(|| anyhow::anyhow!("cannot read the argv of PID {pid}"))?;
    kill9_and_reap(pid);
    Ok(Killed {
        argv,
        remove: socket.into_iter().map(Path::to_path_buf).collect(),
    })
}

impl Killed {
    /// Starts the daemon again with the argv it had (it detaches itself, as before).
    pub fn restart(self, central: &Central) -> anyhow::Result<()> {
        for p in &self.remove {
            let _ = std::fs::remove_file(p);
        }
        let (prog, args) = self
            .argv
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("empty argv"))?;
        let mut cmd = Command::new(prog);
        // The central's daemons look for their run/log/db dirs here (see ovn-testbed).
        for k in [
            "OVS_RUNDIR",
            "OVN_RUNDIR",
            "OVS_LOGDIR",
            "OVN_LOGDIR",
            "OVS_DBDIR",
        ] {
            cmd.env(k, central.dir());
        }
        let out = cmd.args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "restarting {prog}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// kill -9 of the NB ovsdb-server (the DB file is kept); `Central::start_nb` brings it back.
pub fn kill_nb(central: &Central) -> anyhow::Result<()> {
    let k = kill_daemon(central, "ovnnb_db.pid", Some(&central.nb_sock()))?;
    for p in &k.remove {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Replaces the NB database file with a freshly created empty one (the NB server must be
/// stopped). A private stand-in until ovn-testbed has a wipe helper of its own.
pub fn fresh_nb_file(central: &Central) -> anyhow::Result<()> {
    let db = central.dir().join("ovnnb_db.db");
    let _ = std::fs::remove_file(&db);
    let out = Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg("/usr/share/ovn/ovn-nb.ovsschema")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ovsdb-tool create {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Distribution summary of convergence times.
pub fn p50_max(mut v: Vec<Duration>) -> (Option<Duration>, Option<Duration>) {
    v.sort();
    (
        v.get(v.len().saturating_sub(1) / 2).copied(),
        v.last().copied(),
    )
}

/// Groups `(kind, result)` rows for the table, in the order of the kinds.
pub fn group<K: Clone + Ord, T: Clone>(rows: &[(K, T)]) -> BTreeMap<K, Vec<T>> {
    let mut m: BTreeMap<K, Vec<T>> = BTreeMap::new();
    for (k, t) in rows {
        m.entry(k.clone()).or_default().push(t.clone());
    }
    m
}
