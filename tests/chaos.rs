//! The fault suite: the real master (+ net-controller) against a real OVN central and the API
//! stand-in, under API churn, while its dependencies fail: the master killed with SIGKILL, the
//! NB server killed and restarted, the NB replaced by an empty database, the API server frozen,
//! the SB server and northd killed and restarted, a node agent killed during its init. After
//! each fault the invariant checker (`chaos/invariants.rs`) polls until everything holds
//! again; the time from the end of the fault to that moment is the time to converge.
//!
//! `chaos_smoke` (in `make test`) runs one trial of most kinds: master kill, NB restart, API
//! pause (10 s), node agent kill, NB wipe. `chaos_full` (`make chaos`, release build) runs
//! all kinds with counts from the environment and prints the table; it fails when any trial
//! did not converge.

#[path = "chaos/mod.rs"]
mod chaos;
mod common;
mod gwbed;
#[path = "common/node_init.rs"]
mod node_init;
mod nodebed;

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use chaos::invariants::{Violation, check};
use chaos::{Churn, ChurnShape, Rng};
use common::{Daemon, Env};
use gwbed::{NodeProc, blocking, node_log};
use node_init::{HostFacts, host_facts, start_agent};
use nodebed::NodeSide;
use ovn_testbed::Outside;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    MasterKill,
    NbRestart,
    NbWipe,
    ApiPause,
    SbRestart,
    NorthdRestart,
    NodeKill,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::MasterKill => "master kill -9, restart 1-3 s later",
            Kind::NbRestart => "NB ovsdb-server kill -9 + restart",
            Kind::NbWipe => "NB wiped (fresh empty db) while running",
            Kind::ApiPause => "API server frozen",
            Kind::SbRestart => "SB ovsdb-server kill -9 + restart",
            Kind::NorthdRestart => "ovn-northd kill -9 + restart",
            Kind::NodeKill => "node agent kill -9 during its init, restart 1-3 s later",
        }
    }
}

struct Plan {
    nodes: usize,
    rate: f64,
    trials: Vec<(Kind, usize)>,
    api_pause: Duration,
    converge: Duration,
    seed: u64,
    /// Leader-election lease duration, renew deadline, retry period (seconds). A master killed
    /// with SIGKILL leaves its Lease behind; its successor waits for it to expire.
    election: (u64, u64, u64),
}

/// Election timings for the suite (CHAOS_LEASE_SECS etc.), short so that a master kill costs
/// seconds rather than the default lease's minute.
fn election() -> (u64, u64, u64) {
    (
        env_num("CHAOS_LEASE_SECS", 8),
        env_num("CHAOS_RENEW_SECS", 5),
        env_num("CHAOS_RETRY_SECS", 2),
    )
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
struct Outcome {
    converged: Option<Duration>,
    left: Vec<Violation>,
}

/// A gateway node with its agent (`-init-node -init-gateways -nodeport`), started by a
/// node-kill trial and kept running after it.
struct Agent {
    ns: NodeSide,
    encap: String,
    proc: Option<NodeProc>,
    /// When the supervisor saw it exit.
    exited_at: Option<Instant>,
    starts: usize,
}

impl Agent {
    fn start(&mut self, env: &Env) {
        self.starts += 1;
        self.proc = Some(start_agent(env, &self.ns, &self.encap));
    }
}

struct Bed {
    /// Dropped before `env`: the agents' chassis and the outside network use its central.
    agents: Vec<Agent>,
    outside: Option<Outside>,
    env: Env,
    args: Vec<String>,
    master: Option<Daemon>,
    starts: usize,
    /// Restarts after the master exited on its own (it exits when it loses its Lease).
    supervised: usize,
    /// Restarts of node agents that exited on their own.
    agent_restarts: usize,
    exited_at: Option<Instant>,
}

/// How long systemd waits before restarting the master (`RestartSec` in the shipped unit).
const RESTART_SEC: Duration = Duration::from_secs(5);

impl Bed {
    fn start_master(&mut self) {
        self.starts += 1;
        self.master = Some(
            self.env
                .spawn(&format!("master-{}", self.starts), &self.args),
        );
    }

    /// Plays systemd's `Restart=on-failure` for the node agents too (`ovnkube-node.service`).
    fn supervise_agents(&mut self) {
        for a in &mut self.agents {
            let exited = match &mut a.proc {
                Some(p) => matches!(p.0.try_wait(), Ok(Some(_))),
                None => false,
            };
            if !exited {
                continue;
            }
            let at = *a.exited_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= RESTART_SEC {
                a.exited_at = None;
                self.agent_restarts += 1;
                eprintln!("node agent {} exited; restarting it", a.ns.name);
                a.start(&self.env);
            }
        }
    }

    /// The hosts of the nodes that run agents, for the checker (`None` while one cannot be
    /// read).
    fn agent_hosts(&self) -> Option<BTreeMap<String, HostFacts>> {
        self.agents
            .iter()
            .map(|a| Some((a.ns.name.clone(), host_facts(&a.ns).ok()?)))
            .collect()
    }

    /// Plays systemd's `Restart=on-failure`: a master that exited is started again
    /// `RESTART_SEC` later.
    fn supervise(&mut self) {
        let exited = match &mut self.master {
            Some(m) => matches!(m.child.try_wait(), Ok(Some(_))),
            None => false,
        };
        if !exited {
            return;
        }
        let at = *self.exited_at.get_or_insert_with(Instant::now);
        if at.elapsed() >= RESTART_SEC {
            self.exited_at = None;
            self.supervised += 1;
            if let Some(m) = &self.master {
                eprintln!("master exited; restarting it (log {})", m.log.display());
            }
            self.start_master();
        }
    }
}

/// Polls the invariants until they hold (Some(time)) or `limit` passes (the last violations).
async fn converge(bed: &mut Bed, since: Instant, limit: Duration) -> Outcome {
    let mut last = Vec::new();
    loop {
        bed.supervise();
        bed.supervise_agents();
        if let (Some(mut w), Some(nb), Some(hosts)) = (
            chaos::world(&bed.env.client).await,
            chaos::nb_view(&bed.env.central),
            blocking(|| bed.agent_hosts()),
        ) {
            w.agents = hosts;
            last = check(&w, &nb);
            if last.is_empty() {
                return Outcome {
                    converged: Some(since.elapsed()),
                    left: Vec::new(),
                };
            }
        }
        if since.elapsed() > limit {
            return Outcome {
                converged: None,
                left: last,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Injects one fault of `kind` (churn on throughout) and returns when the fault has ended.
async fn fault(bed: &mut Bed, kind: Kind, rng: &mut Rng, plan: &Plan) -> anyhow::Result<()> {
    // How long a killed daemon stays down.
    let gap = rng.between(Duration::from_secs(1), Duration::from_secs(3));
    match kind {
        Kind::MasterKill => {
            if let Some(mut m) = bed.master.take() {
                m.kill9();
            }
            tokio::time::sleep(gap).await;
            bed.start_master();
        }
        Kind::NbRestart => {
            chaos::kill_nb(&bed.env.central)?;
            tokio::time::sleep(gap).await;
            bed.env.central.start_nb()?;
        }
        Kind::NbWipe => {
            chaos::kill_nb(&bed.env.central)?;
            chaos::fresh_nb_file(&bed.env.central)?;
            bed.env.central.start_nb()?;
        }
        Kind::ApiPause => {
            bed.env.sandbox.pause();
            tokio::time::sleep(plan.api_pause).await;
            bed.env.sandbox.resume();
        }
        Kind::SbRestart => {
            let sock = bed.env.central.sb_sock();
            let k = chaos::kill_daemon(&bed.env.central, "ovnsb_db.pid", Some(&sock))?;
            tokio::time::sleep(gap).await;
            k.restart(&bed.env.central)?;
        }
        Kind::NorthdRestart => {
            let k = chaos::kill_daemon(&bed.env.central, "ovn-northd.pid", None)?;
            tokio::time::sleep(gap).await;
            k.restart(&bed.env.central)?;
        }
        Kind::NodeKill => node_kill(bed, rng, gap).await?,
    }
    Ok(())
}

/// A node joins: its agent is killed with SIGKILL when its log shows a random stage of the
/// init (`node_init::stages`), and started again `gap` later. Each trial takes a new gateway
/// node, so every kill lands in a first init, where a step that is not redone on a restart
/// leaves something missing; the agent keeps running for the trials after it.
async fn node_kill(bed: &mut Bed, rng: &mut Rng, gap: Duration) -> anyhow::Result<()> {
    if bed.outside.is_none() {
        bed.outside = Some(Outside::start(gwbed::OUTSIDE)?);
    }
    let i = bed.agents.len() as u8;
    anyhow::ensure!(
        i < 99,
        "at most 99 node-kill trials (one outside address each)"
    );
    let name = format!("gw{i}");
    bed.env.create_nodes([name.as_str()]).await;
    let outside = bed.outside.as_ref().expect("started above");
    let ns = node_init::gateway_node(
        &bed.env,
        outside,
        &name,
        &format!("172.31.0.{}/24", i + 1),
        std::net::Ipv4Addr::new(172, 30, 0, i + 1),
    )?;
    let stages = node_init::stages(&name);
    let stage = &stages[rng.below(stages.len() as u64) as usize];
    let mut agent = Agent {
        ns,
        encap: format!("172.30.0.{}", i + 1),
        proc: None,
        exited_at: None,
        starts: 0,
    };
    agent.start(&bed.env);
    let mut first = agent.proc.take().expect("started above");
    let killed = blocking(|| node_init::kill_at(&agent.ns, &mut first, 0, stage));
    if killed != Some(true) {
        anyhow::bail!(
            "node agent {name} was not killed at {stage:?} ({killed:?}):\n{}",
            node_log(&agent.ns)
        );
    }
    eprintln!("node agent {name} killed at {stage:?}");
    tokio::time::sleep(gap).await;
    agent.start(&bed.env);
    bed.agents.push(agent);
    Ok(())
}

async fn run(name: &str, plan: Plan) -> Vec<(Kind, Outcome)> {
    let env = Env::start(name).await;
    // The node agents' cluster subnet (`nodebed::NodeSide::node_args`).
    let mut args = env.master_args_unix(nodebed::CLUSTER_SUBNET);
    let (lease, renew, retry) = plan.election;
    args.extend([
        format!("-ha-election-lease-duration={lease}"),
        format!("-ha-election-renew-deadline={renew}"),
        format!("-ha-election-retry-period={retry}"),
    ]);
    let mut bed = Bed {
        agents: Vec::new(),
        outside: None,
        env,
        args,
        master: None,
        starts: 0,
        supervised: 0,
        agent_restarts: 0,
        exited_at: None,
    };
    let nodes: Vec<String> = (0..plan.nodes).map(|i| format!("node{i}")).collect();
    bed.env.create_nodes(&nodes).await;
    let shape = ChurnShape {
        nodes,
        services: 6,
        max_pods: 6 * plan.nodes,
        rate: plan.rate,
    };
    chaos::seed(&bed.env.client, &shape)
        .await
        .expect("seed objects");
    bed.start_master();
    let churn = Churn::start(bed.env.client.clone(), shape, plan.seed);
    let mut rng = Rng::new(plan.seed ^ 0x9e37_79b9);

    // A first round of churn, then the baseline: without a fault everything must converge.
    let warmup = Instant::now();
    churn.set(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    churn.set(false);
    // The rate the generator reaches with everything healthy.
    let rate = churn.changes() as f64 / warmup.elapsed().as_secs_f64();
    let base = converge(&mut bed, Instant::now(), plan.converge).await;
    assert!(
        base.converged.is_some(),
        "no convergence before any fault: {:?}",
        base.left
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    assert!(
        churn.changes() > 10,
        "the churn made only {} changes",
        churn.changes()
    );
    eprintln!("baseline converged in {:?}", base.converged.unwrap());

    let mut rows = Vec::new();
    let started = Instant::now();
    for &(kind, n) in &plan.trials {
        for i in 0..n {
            churn.set(true);
            // The fault lands at a random moment of the churn.
            tokio::time::sleep(rng.between(Duration::from_millis(300), Duration::from_secs(2)))
                .await;
            if let Err(e) = fault(&mut bed, kind, &mut rng, &plan).await {
                panic!("injecting {kind:?}: {e:#}");
            }
            churn.set(false);
            let out = converge(&mut bed, Instant::now(), plan.converge).await;
            eprintln!(
                "{kind:?} #{i}: converged {:?}, {} violations left{}",
                out.converged,
                out.left.len(),
                out.left
                    .iter()
                    .take(5)
                    .map(|v| format!("\n    {v}"))
                    .collect::<String>()
            );
            rows.push((kind, out));
        }
    }
    eprintln!(
        "churn: {} changes made, {} failed; restarted by the supervisor: the master {} times, \
         node agents {} times",
        churn.changes(),
        churn.failures(),
        bed.supervised,
        bed.agent_restarts
    );
    print_table(&rows, &plan, rate, started.elapsed());
    rows
}

fn print_table(rows: &[(Kind, Outcome)], plan: &Plan, rate: f64, took: Duration) {
    let mut s = String::new();
    s.push_str(&format!(
        "fault suite: {} nodes, seed {}, churn {rate:.1} API changes/s (healthy), API pause {:?}, \
         election lease/renew/retry {:?} s, converge limit {:?}, total {:.0?}\n",
        plan.nodes, plan.seed, plan.api_pause, plan.election, plan.converge, took
    ));
    s.push_str(
        "| trial | trials | converged | p50 | max | violations left |\n|---|---|---|---|---|---|\n",
    );
    for (kind, outs) in chaos::group(rows) {
        let times: Vec<Duration> = outs.iter().filter_map(|o| o.converged).collect();
        let (p50, max) = chaos::p50_max(times.clone());
        let fmt = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        let left: usize = outs.iter().map(|o| o.left.len()).sum();
        s.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {} |\n",
            kind.label(),
            outs.len(),
            times.len(),
            outs.len(),
            fmt(p50),
            fmt(max),
            left
        ));
    }
    println!("{s}");
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        let _ = std::fs::write(path, &s);
    }
}

fn seed() -> u64 {
    env_num(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    )
}

/// One trial of the main kinds; part of `make test`. The NB wipe runs last: a wipe that is not
/// repaired would fail every trial after it; after the node kill, it also takes the gateway
/// node's objects (which its running agent writes again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke() {
    let plan = Plan {
        nodes: 3,
        rate: 35.0,
        trials: vec![
            (Kind::MasterKill, 1),
            (Kind::NbRestart, 1),
            (Kind::ApiPause, 1),
            (Kind::NodeKill, 1),
            (Kind::NbWipe, 1),
        ],
        api_pause: Duration::from_secs(10),
        converge: Duration::from_secs(90),
        seed: seed(),
        election: election(),
    };
    let rows = run("chaos-smoke", plan).await;
    let failed: Vec<_> = rows.iter().filter(|(_, o)| o.converged.is_none()).collect();
    assert!(
        failed.is_empty(),
        "trials that did not converge: {failed:?}"
    );
}

/// The full suite (`make chaos`): counts from CHAOS_* variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn chaos_full() {
    let n = |k: &str, d: u64| env_num(k, d) as usize;
    let plan = Plan {
        nodes: n("CHAOS_NODES", 10),
        rate: env_num("CHAOS_RATE", 35) as f64,
        trials: vec![
            (Kind::MasterKill, n("CHAOS_MASTER_KILLS", 20)),
            (Kind::NbRestart, n("CHAOS_NB_RESTARTS", 5)),
            (Kind::ApiPause, n("CHAOS_API_PAUSES", 3)),
            (Kind::SbRestart, n("CHAOS_SB_RESTARTS", 2)),
            (Kind::NorthdRestart, n("CHAOS_NORTHD_RESTARTS", 2)),
            (Kind::NodeKill, n("CHAOS_NODE_KILLS", 3)),
            // Last: a wipe that is not repaired would fail every trial after it; after the
            // node kills it also takes their gateways, which their running agents write again.
            (Kind::NbWipe, n("CHAOS_NB_WIPES", 4)),
        ],
        api_pause: Duration::from_secs(env_num("CHAOS_API_PAUSE_SECS", 30)),
        converge: Duration::from_secs(env_num("CHAOS_CONVERGE_SECS", 120)),
        seed: seed(),
        election: election(),
    };
    let rows = run("chaos-full", plan).await;
    let failed: Vec<_> = rows
        .iter()
        .filter(|(_, o)| o.converged.is_none())
        .map(|(k, _)| *k)
        .collect();
    assert!(
        failed.is_empty(),
        "trials that did not converge: {failed:?}"
    );
}
