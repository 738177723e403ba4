//! A watch that behaves like client-go's informer for our purposes: every change comes with the
//! previous object, deletions that happened while the watch was down are reported after a
//! relist (kube-runtime's reflector drops them), and `Synced` marks a complete view.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

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

    pub fn values(&self) -> impl Iterator<Item = &Arc<K>> {
        self.objects.values()
    }
}

fn same_version<K: Resource>(a: &K, b: &K) -> bool {
    let (ra, rb) = (&a.meta().resource_version, &b.meta().resource_version);
    ra.is_some() && ra == rb
}

/// Watch `api` forever (errors are logged and retried with backoff) and yield changes.
pub fn informer<K>(api: Api<K>, cfg: watcher::Config) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut cache = Cache::<K>::default();
    watcher(api, cfg)
        .backoff(crate::util::retry::Backoff::new(
            crate::util::retry::DEPENDENCY,
        ))
        .filter_map(move |ev| {
            let out = match ev {
                Ok(ev) => cache.apply(ev),
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch error; retrying");
                    Vec::new()
                }
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
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
}
