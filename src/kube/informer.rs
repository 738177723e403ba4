//! A watch that behaves like client-go's informer for our purposes: every change comes with the
//! previous object, deletions that happened while the watch was down are reported after a
//! relist (kube-runtime's reflector drops them), and `Synced` marks a complete view.
//!
//! Objects are listed and watched as raw JSON and decoded one by one: a single object that a
//! non-validating API server holds in a shape our types reject (a Service with `port: "http"`)
//! is reported (ERROR line and an Event on it) and skipped, instead of failing the whole list
//! forever as a typed watcher would.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::kube::events;
use crate::kube::shared::Trim;

/// One change seen by an informer.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Added (`old` is `None`) or modified.
    Apply { old: Option<Arc<K>>, new: Arc<K> },
    /// Deleted; the last known state.
    Delete(Arc<K>),
    /// The cache now holds every object (after the first list and after every relist).
    Synced,
}

impl<K> Change<K> {
    /// A complete list (see [`super::Watch::initial_list`]) as the additions a handler of the
    /// stream would have seen, in key order.
    pub fn additions(list: HashMap<String, Arc<K>>) -> Vec<Change<K>> {
        let mut list: Vec<(String, Arc<K>)> = list.into_iter().collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.into_iter()
            .map(|(_, new)| Change::Apply { old: None, new })
            .collect()
    }
}

/// `namespace/name` (or `name` for cluster-scoped objects): the key tracing spans carry.
pub fn key<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", obj.name_any()),
        _ => obj.name_any(),
    }
}

/// Keeps the last state of every object so updates carry `old` and relists produce deletes.
#[derive(Debug)]
pub struct Cache<K> {
    objects: HashMap<String, Arc<K>>,
    relist: Option<HashMap<String, Arc<K>>>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: HashMap::new(),
            relist: None,
        }
    }
}

impl<K: Resource + Clone> Cache<K> {
    /// Feed one watcher event; returns the changes it implies.
    pub fn apply(&mut self, ev: watcher::Event<K>) -> Vec<Change<K>> {
        match ev {
            watcher::Event::Apply(obj) => {
                let new = Arc::new(obj);
                let old = self.objects.insert(key(new.as_ref()), new.clone());
                if old
                    .as_ref()
                    .is_some_and(|o| same_version(o.as_ref(), new.as_ref()))
                {
                    return Vec::new();
                }
                vec![Change::Apply { old, new }]
            }
            watcher::Event::Delete(obj) => {
                let k = key(&obj);
                let last = self.objects.remove(&k).unwrap_or_else(|| Arc::new(obj));
                vec![Change::Delete(last)]
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let obj = Arc::new(obj);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key(obj.as_ref()), obj);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let mut out = Vec::new();
                let mut gone: Vec<_> = self
                    .objects
                    .keys()
                    .filter(|k| !fresh.contains_key(*k))
                    .cloned()
                    .collect();
                gone.sort();
                for k in gone {
                    if let Some(o) = self.objects.remove(&k) {
                        out.push(Change::Delete(o));
                    }
                }
                let mut keys: Vec<_> = fresh.keys().cloned().collect();
                keys.sort();
                for k in keys {
                    let Some(new) = fresh.get(&k).cloned() else {
                        continue;
                    };
                    let old = self.objects.insert(k, new.clone());
                    if old
                        .as_ref()
                        .is_some_and(|o| same_version(o.as_ref(), new.as_ref()))
                    {
                        continue;
                    }
                    out.push(Change::Apply { old, new });
                }
                out.push(Change::Synced);
                out
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.objects.get(key).cloned()
    }

    /// The last state of `key` that decoded, including one seen in an unfinished relist.
    fn last_good(&self, key: &str) -> Option<K> {
        self.relist
            .as_ref()
            .and_then(|r| r.get(key))
            .or_else(|| self.objects.get(key))
            .map(|o| o.as_ref().clone())
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<K>> {
        self.objects.values()
    }
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (ra, rb) = (&a.meta().resource_version, &b.meta().resource_version);
    ra.is_some() && ra == rb
}

/// An object that did not decode into its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    pub key: String,
    pub resource_version: Option<String>,
    pub reference: ObjectReference,
    pub error: String,
}

/// Decode one raw object into `K`, trimmed to what the controllers read.
fn decode<K: Resource + DeserializeOwned + Trim>(
    obj: DynamicObject,
    ar: &ApiResource,
) -> Result<K, Box<Undecodable>> {
    let bad = |obj: &DynamicObject, error: String| {
        Box::new(Undecodable {
            key: key(obj),
            resource_version: obj.metadata.resource_version.clone(),
            reference: ObjectReference {
                api_version: Some(ar.api_version.clone()),
                kind: Some(ar.kind.clone()),
                name: obj.metadata.name.clone(),
                namespace: obj.metadata.namespace.clone(),
                uid: obj.metadata.uid.clone(),
                ..Default::default()
            },
            error,
        })
    };
    let mut obj = obj;
    // List items come without apiVersion/kind; give the decoder the ones it checks against.
    obj.types = Some(TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    let value = serde_json::to_value(&obj).map_err(|e| bad(&obj, e.to_string()))?;
    let mut k: K = serde_json::from_value(value).map_err(|e| bad(&obj, e.to_string()))?;
    k.trim();
    Ok(k)
}

/// Turn a raw watcher event into a typed one. An object that does not decode keeps its last
/// good state: an update to it is dropped, a relist carries the old state (so it is not
/// reported as deleted), and its deletion is reported with the last good state.
fn translate<K>(
    cache: &Cache<K>,
    ev: watcher::Event<DynamicObject>,
    ar: &ApiResource,
) -> (Option<watcher::Event<K>>, Option<Box<Undecodable>>)
where
    K: Resource + Clone + DeserializeOwned + Trim,
{
    match ev {
        watcher::Event::Init => (Some(watcher::Event::Init), None),
        watcher::Event::InitDone => (Some(watcher::Event::InitDone), None),
        watcher::Event::Apply(o) => match decode(o, ar) {
            Ok(k) => (Some(watcher::Event::Apply(k)), None),
            Err(b) => (None, Some(b)),
        },
        watcher::Event::InitApply(o) => match decode(o, ar) {
            Ok(k) => (Some(watcher::Event::InitApply(k)), None),
            Err(b) => (
                cache.last_good(&b.key).map(watcher::Event::InitApply),
                Some(b),
            ),
        },
        watcher::Event::Delete(o) => {
            let k = key(&o);
            match decode(o, ar) {
                Ok(obj) => (Some(watcher::Event::Delete(obj)), None),
                // The object is gone: only the deletion matters, not why it did not decode.
                Err(_) => (cache.last_good(&k).map(watcher::Event::Delete), None),
            }
        }
    }
}

/// Report an undecodable object once per version: an ERROR line and a Warning Event on it.
fn report(client: &kube::Client, b: &Undecodable) {
    let kind = b.reference.kind.clone().unwrap_or_default();
    let msg = format!(
        "cannot decode {kind} {}: {}; it is ignored (its last good state, if any, stays in effect) until it is fixed",
        b.key, b.error
    );
    tracing::error!(kind = %kind, object = %b.key, "{msg}");
    if b.reference.name.as_deref().is_some_and(|n| !n.is_empty()) {
        let client = client.clone();
        let reference = b.reference.clone();
        tokio::spawn(async move {
            events::Events::new(client, events::WATCHER)
                .warn_ref(reference, "Decode", "InvalidObject", &msg)
                .await;
        });
    }
}

/// Watch `api` forever (errors are logged and retried with backoff) and yield changes.
/// Consumers take it through `kube::shared::Informers`, which runs one per kind.
pub fn informer<K>(api: Api<K>, cfg: watcher::Config) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + Trim + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    let kind = K::kind(&dt).to_string();
    let plural = K::plural(&dt).to_string();
    let ar = ApiResource::erase::<K>(&dt);
    let ns = api.namespace().map(str::to_string);
    let client = api.into_client();
    let raw: Api<DynamicObject> = match &ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut cache = Cache::<K>::default();
    // Versions already reported, so relists do not repeat the same complaint.
    let mut reported: HashMap<String, Option<String>> = HashMap::new();
    let (started, mut synced_once) = (std::time::Instant::now(), false);
    watcher(raw, cfg)
        .backoff(crate::util::retry::Backoff::new(
            crate::util::retry::DEPENDENCY,
        ))
        .filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => {
                    crate::kube::outage::succeeded();
                    if let watcher::Event::Delete(o) = &ev {
                        reported.remove(&key(o));
                    }
                    let (typed, bad) = translate(&cache, ev, &ar);
                    if let Some(b) = bad
                        && reported.get(&b.key) != Some(&b.resource_version)
                    {
                        report(&client, &b);
                        reported.insert(b.key.clone(), b.resource_version.clone());
                    }
                    let out = typed.map(|ev| cache.apply(ev)).unwrap_or_default();
                    record_metrics(&plural, &cache, &out, started, &mut synced_once);
                    out
                }
                Err(e) => {
                    // The first failure of an outage is the process's one WARN; every retry
                    // of every watch is a DEBUG line.
                    let e = e.to_string();
                    crate::kube::outage::failed(
                        cache.objects.len(),
                        &format!("watching {plural}: {e}"),
                    );
                    tracing::debug!(kind = %kind, error = %e, "watch error; retrying");
                    Vec::new()
                }
            };
            for ch in &out {
                if let Change::Apply { new, .. } = ch {
                    reported.remove(&key(new.as_ref()));
                }
            }
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

/// Object count and (once) the time to the first complete list, for `/metrics`.
fn record_metrics<K>(
    resource: &str,
    cache: &Cache<K>,
    out: &[Change<K>],
    started: std::time::Instant,
    synced_once: &mut bool,
) {
    if out.is_empty() {
        return;
    }
    let m = crate::metrics::get();
    m.watched_objects(resource, cache.objects.len());
    if !*synced_once && out.iter().any(|c| matches!(c, Change::Synced)) {
        *synced_once = true;
        m.watch_synced(resource, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    fn node(name: &str, rv: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(ch: &[Change<Node>]) -> Vec<String> {
        ch.iter()
            .map(|c| match c {
                Change::Apply { old: None, new } => format!("add {}", new.name_any()),
                Change::Apply { old: Some(_), new } => format!("update {}", new.name_any()),
                Change::Delete(o) => format!("delete {}", o.name_any()),
                Change::Synced => "synced".into(),
            })
            .collect()
    }

    #[test]
    fn relist_reports_vanished_objects_and_skips_unchanged_ones() {
        let mut c = Cache::default();
        let mut out = Vec::new();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(node("a", "1")),
            watcher::Event::InitApply(node("b", "2")),
            watcher::Event::InitDone,
        ] {
            out.extend(c.apply(ev));
        }
        assert_eq!(names(&out), ["add a", "add b", "synced"]);
        out.clear();
        out.extend(c.apply(watcher::Event::Apply(node("a", "3"))));
        out.extend(c.apply(watcher::Event::Apply(node("a", "3"))));
        assert_eq!(names(&out), ["update a"]);
        out.clear();
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(node("a", "3")),
            watcher::Event::InitApply(node("c", "5")),
            watcher::Event::InitDone,
        ] {
            out.extend(c.apply(ev));
        }
        assert_eq!(names(&out), ["delete b", "add c", "synced"]);
        let del = c.apply(watcher::Event::Delete(node("c", "6")));
        assert_eq!(names(&del), ["delete c"]);
        assert!(c.get("c").is_none());
    }

    fn raw_service(name: &str, rv: &str, port: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "uid": "u-1"},
            "spec": {"ports": [{"port": port, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    #[test]
    fn undecodable_objects_are_skipped_one_by_one_and_keep_their_last_good_state() {
        use k8s_openapi::api::core::v1::Service;
        let ar = ApiResource::erase::<Service>(&());
        let mut c: Cache<Service> = Cache::default();
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let feed = |c: &mut Cache<Service>, bad: &mut Vec<Undecodable>, ev| {
            let (typed, b) = translate(c, ev, &ar);
            bad.extend(b.map(|b| *b));
            typed.map(|ev| c.apply(ev)).unwrap_or_default()
        };
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(raw_service("bad", "1", "http".into())),
            watcher::Event::InitApply(raw_service("good", "2", 80.into())),
            watcher::Event::InitDone,
        ] {
            out.extend(feed(&mut c, &mut bad, ev));
        }
        let names = |ch: &[Change<Service>]| -> Vec<String> {
            ch.iter()
                .map(|c| match c {
                    Change::Apply { new, .. } => format!("apply {}", new.name_any()),
                    Change::Delete(o) => format!("delete {}", o.name_any()),
                    Change::Synced => "synced".into(),
                })
                .collect()
        };
        assert_eq!(names(&out), ["apply good", "synced"]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, "default/bad");
        assert_eq!(bad[0].reference.kind.as_deref(), Some("Service"));
        assert_eq!(bad[0].reference.name.as_deref(), Some("bad"));
        assert!(bad[0].error.contains("http"), "{}", bad[0].error);

        // A good object that turns bad keeps its last good state, through updates and relists.
        out.clear();
        out.extend(feed(
            &mut c,
            &mut bad,
            watcher::Event::Apply(raw_service("good", "3", "x".into())),
        ));
        for ev in [
            watcher::Event::Init,
            watcher::Event::InitApply(raw_service("good", "3", "x".into())),
            watcher::Event::InitDone,
        ] {
            out.extend(feed(&mut c, &mut bad, ev));
        }
        assert_eq!(names(&out), ["synced"]);
        assert!(c.get("default/good").is_some());
        // Its deletion is still seen, with the last good state.
        let del = feed(
            &mut c,
            &mut bad,
            watcher::Event::Delete(raw_service("good", "4", "x".into())),
        );
        assert_eq!(names(&del), ["delete good"]);
        // A bad object that was never served disappears silently.
        let del = feed(
            &mut c,
            &mut bad,
            watcher::Event::Delete(raw_service("bad", "5", "http".into())),
        );
        assert!(del.is_empty());
    }
}
