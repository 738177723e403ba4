//! Property test: kube-runtime watchers (and a raw selector watch) converge on exactly the
//! server's state after random concurrent writes, watch restarts and forced 410 expiries,
//! with no event that contradicts the watcher's view (duplicate ADDED, DELETED of unknown, ...).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use serde_json::json;

/// xorshift64*: a tiny deterministic PRNG so failures replay from the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Coverage counters: the test is only meaningful if expiries and relists really happened.
static RUNTIME_ERRORS: AtomicU64 = AtomicU64::new(0);
static RAW_EXPIRED: AtomicU64 = AtomicU64::new(0);
static RAW_REWATCH: AtomicU64 = AtomicU64::new(0);

const NAMES: u64 = 10;
const SEEDS: u64 = 30;
const OPS_PER_SEED: u64 = 100;
const WRITERS: u64 = 2;

type View = Arc<Mutex<BTreeMap<String, Pod>>>;
type Violations = Arc<Mutex<Vec<String>>>;

fn rv_of(p: &Pod) -> u64 {
    p.resource_version()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Applies kube-runtime watcher events to our own map, flagging impossible transitions.
async fn run_runtime_watcher(api: Api<Pod>, cfg: watcher::Config, view: View, bad: Violations) {
    let mut stream = watcher(api, cfg).boxed();
    let mut init: Option<BTreeMap<String, Pod>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => init = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(p)) => {
                if let Some(m) = init.as_mut() {
                    m.insert(p.name_any(), p);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(m) = init.take() {
                    *view.lock().unwrap() = m;
                }
            }
            Ok(watcher::Event::Apply(p)) => {
                let mut v = view.lock().unwrap();
                if let Some(old) = v.get(&p.name_any())
                    && rv_of(old) >= rv_of(&p)
                {
                    bad.lock().unwrap().push(format!(
                        "runtime: stale/duplicate apply {} rv {} after {}",
                        p.name_any(),
                        rv_of(&p),
                        rv_of(old)
                    ));
                }
                v.insert(p.name_any(), p);
            }
            Ok(watcher::Event::Delete(p)) => {
                if view.lock().unwrap().remove(&p.name_any()).is_none() {
                    bad.lock()
                        .unwrap()
                        .push(format!("runtime: delete of unknown {}", p.name_any()));
                }
            }
            Err(_) => {
                RUNTIME_ERRORS.fetch_add(1, Ordering::Relaxed);
                // 410 expiries surface here; the watcher relists by itself.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A hand-rolled list+watch over `tier=a` checking ADDED/MODIFIED/DELETED exactly.
async fn run_raw_watch(api: Api<Pod>, seed: u64, view: View, bad: Violations) {
    let lp = ListParams::default().labels("tier=a");
    let mut rng = Rng::new(seed ^ 0xdead_beef);
    'relist: loop {
        let Ok(list) = api.list(&lp).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
        {
            let mut v = view.lock().unwrap();
            v.clear();
            for p in list.items {
                v.insert(p.name_any(), p);
            }
        }
        loop {
            // A pause before (re-)watching lets writes land in the gap, so replay is exercised.
            tokio::time::sleep(Duration::from_millis(rng.below(80))).await;
            let wp = WatchParams::default().labels("tier=a").timeout(1);
            let Ok(stream) = api.watch(&wp, &rv).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'relist;
            };
            let mut stream = stream.boxed();
            loop {
                let ev = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        // Server-side timeout: re-watch from rv.
                        RAW_REWATCH.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(_) => continue 'relist,
                };
                let mut v = view.lock().unwrap();
                match ev {
                    WatchEvent::Added(p) => {
                        rv = p.resource_version().unwrap_or_default();
                        if v.insert(p.name_any(), p.clone()).is_some() {
                            bad.lock()
                                .unwrap()
                                .push(format!("raw: ADDED for existing {}", p.name_any()));
                        }
                    }
                    WatchEvent::Modified(p) => {
                        rv = p.resource_version().unwrap_or_default();
                        if v.insert(p.name_any(), p.clone()).is_none() {
                            bad.lock()
                                .unwrap()
                                .push(format!("raw: MODIFIED for unknown {}", p.name_any()));
                        }
                    }
                    WatchEvent::Deleted(p) => {
                        rv = p.resource_version().unwrap_or_default();
                        if v.remove(&p.name_any()).is_none() {
                            bad.lock()
                                .unwrap()
                                .push(format!("raw: DELETED for unknown {}", p.name_any()));
                        }
                    }
                    WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                    WatchEvent::Error(s) => {
                        if s.code != 410 {
                            bad.lock()
                                .unwrap()
                                .push(format!("raw: unexpected error {s:?}"));
                        }
                        RAW_EXPIRED.fetch_add(1, Ordering::Relaxed);
                        continue 'relist;
                    }
                }
            }
        }
    }
}

async fn writer(api: Api<Pod>, sandbox: SandboxHandle, seed: u64, ops: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..ops {
        let name = format!("p{}", rng.below(NAMES));
        let tier = if rng.below(2) == 0 { "a" } else { "b" };
        let pp = PatchParams::default();
        let op = rng.below(20);
        // Errors (NotFound, AlreadyExists, Conflict) are expected outcomes of random ops.
        let _ = match op {
            0..=3 => {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"tier": tier}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}
                }))
                .unwrap();
                api.create(&PostParams::default(), &pod).await.map(|_| ())
            }
            4 | 5 => match api.get(&name).await {
                Ok(mut p) => {
                    p.labels_mut().insert("tier".into(), tier.into());
                    p.annotations_mut().insert("i".into(), i.to_string());
                    api.replace(&name, &PostParams::default(), &p)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(e),
            },
            6 | 7 => api
                .patch(
                    &name,
                    &pp,
                    &Patch::Merge(json!({"metadata": {"labels": {"tier": tier}}})),
                )
                .await
                .map(|_| ()),
            8 => api
                .patch(
                    &name,
                    &pp,
                    &Patch::Strategic(json!({"metadata": {"annotations": {"s": i.to_string()}}})),
                )
                .await
                .map(|_| ()),
            9 => {
                let p: json_patch::Patch = serde_json::from_value(json!([
                    {"op": "add", "path": "/metadata/annotations", "value": {"j": i.to_string()}}
                ]))
                .unwrap();
                api.patch(&name, &pp, &Patch::Json::<()>(p))
                    .await
                    .map(|_| ())
            }
            10 => {
                let ssa = PatchParams::apply("prop").force();
                let body = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"tier": tier}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}});
                api.patch(&name, &ssa, &Patch::Apply(body))
                    .await
                    .map(|_| ())
            }
            11 => api
                .patch_status(
                    &name,
                    &pp,
                    &Patch::Merge(json!({"metadata": {"annotations": {"st": i.to_string()}},
                    "status": {"phase": if rng.below(2) == 0 { "Running" } else { "Pending" }}})),
                )
                .await
                .map(|_| ()),
            12 => api
                .patch(&name, &pp, &Patch::Merge(json!({})))
                .await
                .map(|_| ()),
            13..=16 => api
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
            17 => {
                sandbox.compact();
                Ok(())
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
                Ok(())
            }
        };
        tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
    }
}

fn summary(m: &BTreeMap<String, Pod>) -> BTreeMap<String, serde_json::Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap()))
        .collect()
}

async fn run_seed(seed: u64) -> Result<(), String> {
    let cfg = SandboxConfig {
        history_limit: 40 + (seed as usize % 3) * 200,
        bookmark_interval: Duration::from_millis(700),
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .map_err(|e| e.to_string())?;
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap()))
        .map_err(|e| e.to_string())?;
    let api: Api<Pod> = Api::namespaced(client, "default");
    let (view_a, view_b, view_c): (View, View, View) = Default::default();
    let bad: Violations = Default::default();
    // Full view with bookmarks; plus a tier=b view without bookmarks, whose resourceVersion lags
    // behind non-matching writes and therefore runs into 410 after compaction.
    let full = watcher::Config::default().timeout(1).page_size(3);
    let tier_b = watcher::Config::default()
        .timeout(1)
        .labels("tier=b")
        .disable_bookmarks();
    let wa = tokio::spawn(run_runtime_watcher(
        api.clone(),
        full,
        view_a.clone(),
        bad.clone(),
    ));
    let wc = tokio::spawn(run_runtime_watcher(
        api.clone(),
        tier_b,
        view_c.clone(),
        bad.clone(),
    ));
    let wb = tokio::spawn(run_raw_watch(
        api.clone(),
        seed,
        view_b.clone(),
        bad.clone(),
    ));

    let writers = (0..WRITERS).map(|w| {
        writer(
            api.clone(),
            sb.handle(),
            seed * 1000 + w,
            OPS_PER_SEED / WRITERS,
        )
    });
    futures::future::join_all(writers).await;

    let truth = summary(
        &api.list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect(),
    );
    let tier = |t: &str| -> BTreeMap<_, _> {
        truth
            .iter()
            .filter(|(_, v)| v["metadata"]["labels"]["tier"] == t)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (truth_a, truth_b) = (tier("a"), tier("b"));
    let mut converged = false;
    for _ in 0..300 {
        if summary(&view_a.lock().unwrap()) == truth
            && summary(&view_b.lock().unwrap()) == truth_a
            && summary(&view_c.lock().unwrap()) == truth_b
        {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wa.abort();
    wb.abort();
    wc.abort();
    sb.shutdown().await;
    let bad = bad.lock().unwrap().clone();
    if !bad.is_empty() {
        return Err(format!("seed {seed}: violations: {bad:#?}"));
    }
    if !converged {
        return Err(format!(
            "seed {seed}: no convergence\nserver: {:?}\nruntime watcher: {:?}\nraw watch: {:?}\ntier=b watcher: {:?}",
            truth.keys().collect::<Vec<_>>(),
            summary(&view_a.lock().unwrap()).keys().collect::<Vec<_>>(),
            summary(&view_b.lock().unwrap()).keys().collect::<Vec<_>>(),
            summary(&view_c.lock().unwrap()).keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_converge_under_random_ops_restarts_and_expiry() {
    let mut failures = Vec::new();
    let seeds: Vec<u64> = (1..=SEEDS).collect();
    for batch in seeds.chunks(10) {
        let results = futures::future::join_all(batch.iter().map(|s| run_seed(*s))).await;
        failures.extend(results.into_iter().filter_map(Result::err));
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let (e, x, r) = (
        RUNTIME_ERRORS.load(Ordering::Relaxed),
        RAW_EXPIRED.load(Ordering::Relaxed),
        RAW_REWATCH.load(Ordering::Relaxed),
    );
    eprintln!("runtime watcher errors (410s): {e}, raw 410s: {x}, raw re-watches: {r}");
    assert!(
        e > 0 && x > 0 && r > 0,
        "expiry/restart paths were not exercised"
    );
}
