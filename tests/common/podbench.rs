//! Pod create → `ovn` annotation latency under a steady offered load (the pod benchmarks):
//! pods are created at a fixed rate, each timed from just before its create call to the first
//! watch event that shows its annotation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::{Env, eventually};

/// Latencies in milliseconds; `tail_p99_ms` is the p99 of the last 10% of pods created (does
/// latency grow with the size of the database?); throughput in pods/s.
#[derive(Debug, Clone)]
pub struct PodLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub tail_p99_ms: f64,
    pub throughput: f64,
    /// Every pod's latency, sorted (for CDF plots).
    pub sorted_ms: Vec<f64>,
}

/// The `q` quantile (0..=1) of sorted values (NaN for none).
pub fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// Creates `n` pods in `default` at `rate` pods/s, spread over `nodes` (`pod(name, node)`
/// builds each), and waits until all are annotated (at most 10 minutes).
pub async fn annotation_latency(
    env: &Env,
    nodes: &[String],
    n: usize,
    rate: f64,
    pod: impl Fn(&str, &str) -> Pod,
) -> PodLatency {
    // First sight of the annotation, per pod.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                    && p.annotations().contains_key("ovn")
                {
                    seen.lock()
                        .unwrap()
                        .entry(p.name_any())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let name = format!("p{i:05}");
        let p = pod(&name, &nodes[i % nodes.len()]);
        let (api, created, slots) = (api.clone(), created.clone(), slots.clone());
        handles.push(tokio::spawn(async move {
            let _s = slots.acquire().await.unwrap();
            created.lock().unwrap().insert(name, Instant::now());
            api.create(&PostParams::default(), &p).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let long = Duration::from_secs(600);
    eventually("all bench pods annotated", long, || async {
        (seen.lock().unwrap().len() >= n).then_some(())
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let created = created.lock().unwrap().clone();
    let mut order: Vec<(&String, &Instant)> = created.iter().collect();
    order.sort_by_key(|(_, t)| **t);
    let lat = |keys: &[(&String, &Instant)]| -> Vec<f64> {
        let mut v: Vec<f64> = keys
            .iter()
            .map(|(k, t)| seen[*k].saturating_duration_since(**t).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let all = lat(&order);
    let tail = lat(&order[order.len() * 9 / 10..]);
    let last = seen.values().max().copied().unwrap_or(start);
    PodLatency {
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
        tail_p99_ms: pct(&tail, 0.99),
        throughput: n as f64 / last.duration_since(start).as_secs_f64(),
        sorted_ms: all,
    }
}
