//! One watch per kind per process, fanned out to every controller that needs it.
//!
//! A master with `-net-controller` runs three controllers that follow Nodes and two that follow
//! Pods; each used to open its own watch and keep its own full copy of every object. Here one
//! [`informer`] per kind feeds a hub; each consumer gets its own [`Watch`]: the same `Change`
//! stream (the objects are shared `Arc`s, not copies) and a read view ([`Store`]) of the one
//! cache. A consumer that joins after the first list gets the current objects as additions and
//! a `Synced`, so it sees exactly what a watch of its own would have shown it.
//!
//! Objects are trimmed before they are cached ([`Trim`]): `managedFields`, the
//! `last-applied-configuration` annotation and, per kind, the fields no controller reads. That is
//! most of a Pod's size and none of what the controllers decide on.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use anyhow::{Result, bail};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::ObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::kube::informer::{Change, informer, key};

/// The annotation `kubectl apply` writes: a second copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a kind keeps in the shared cache. The default keeps everything but the server's
/// bookkeeping ([`trim_meta`]); kinds with large parts nobody reads drop them too.
pub trait Trim {
    fn trim(&mut self);
}

/// Drop the metadata no controller reads: field ownership and the applied-configuration copy.
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Pods keep what the pod and policy controllers read: the node, host networking, and the
/// containers' names and ports (named ports of network policies); not the status, volumes,
/// images, environment or resources.
impl Trim for Pod {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        self.spec = self.spec.take().map(|s| PodSpec {
            node_name: s.node_name,
            host_network: s.host_network,
            containers: s
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
}

/// Nodes keep everything the master, the controllers and the gateway read except the list of
/// container images on the node (the largest part of a real Node's status).
impl Trim for Node {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        if let Some(s) = self.status.as_mut() {
            s.images = None;
        }
    }
}

/// Kinds cached whole but for their metadata bookkeeping.
macro_rules! trim_meta_only {
    ($($t:ty),* $(,)?) => {
        $(impl Trim for $t {
            fn trim(&mut self) {
                trim_meta(&mut self.metadata);
            }
        })*
    };
}
trim_meta_only!(
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::networking::v1::NetworkPolicy,
);

/// A kind the shared informers can follow.
pub trait Kind:
    Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// The state of one kind: the shared cache and the consumers to tell.
struct Hub<K> {
    objects: HashMap<String, Arc<K>>,
    /// A complete list has been seen (a consumer joining now is told `Synced` too).
    synced: bool,
    subscribers: Vec<mpsc::UnboundedSender<Change<K>>>,
}

impl<K> Default for Hub<K> {
    fn default() -> Self {
        Hub {
            objects: HashMap::new(),
            synced: false,
            subscribers: Vec::new(),
        }
    }
}

impl<K: Resource + Clone> Hub<K> {
    /// Apply one change to the cache and hand it to every consumer still listening.
    fn publish(&mut self, ch: Change<K>) {
        match &ch {
            Change::Apply { new, .. } => {
                self.objects.insert(key(new.as_ref()), new.clone());
            }
            Change::Delete(old) => {
                self.objects.remove(&key(old.as_ref()));
            }
            Change::Synced => self.synced = true,
        }
        self.subscribers.retain(|tx| tx.send(ch.clone()).is_ok());
    }

    /// A new consumer: what the cache holds now (in key order, so replays are reproducible),
    /// then `Synced` if a complete list has been seen, then every later change.
    fn join(&mut self) -> mpsc::UnboundedReceiver<Change<K>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut keys: Vec<&String> = self.objects.keys().collect();
        keys.sort();
        for k in keys {
            let new = self.objects[k].clone();
            // The receiver is alive (we hold it), so the send cannot fail.
            let _ = tx.send(Change::Apply { old: None, new });
        }
        if self.synced {
            let _ = tx.send(Change::Synced);
        }
        self.subscribers.push(tx);
        rx
    }
}

type Shared<K> = Arc<Mutex<Hub<K>>>;

fn lock<K>(hub: &Shared<K>) -> MutexGuard<'_, Hub<K>> {
    // A panic while holding the lock leaves a consistent map (every update is one insert or
    // remove), so a poisoned lock is still usable.
    hub.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process's informers, one per kind, started by the first consumer of that kind.
#[derive(Clone)]
pub struct Informers {
    client: kube::Client,
    hubs: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Self {
        Informers {
            client,
            hubs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Follow every object of kind `K` in the cluster. Must be called inside the runtime: the
    /// first call for a kind starts its watch.
    pub fn watch<K: Kind>(&self) -> Watch<K> {
        let hub = self.hub::<K>();
        let rx = lock(&hub).join();
        Watch {
            rx,
            store: Store { hub },
        }
    }

    /// Start following kind `K` now, without a consumer yet: a standby master fills its caches
    /// this way, so on taking over its controllers join a synced cache instead of listing.
    pub fn prefetch<K: Kind>(&self) {
        let _ = self.hub::<K>();
    }

    fn hub<K: Kind>(&self) -> Shared<K> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hubs.get(&TypeId::of::<K>())
            && let Ok(h) = h.clone().downcast::<Mutex<Hub<K>>>()
        {
            return h;
        }
        let hub: Shared<K> = Arc::default();
        hubs.insert(TypeId::of::<K>(), hub.clone());
        tokio::spawn(feed(Api::<K>::all(self.client.clone()), hub.clone()));
        hub
    }
}

/// The one watch of a kind: runs for the life of the process (the informer retries errors
/// itself); should it ever end, the consumers' streams end and they report it.
async fn feed<K: Kind>(api: Api<K>, hub: Shared<K>) {
    tracing::debug!(kind = %K::kind(&()), "shared watch started");
    let mut changes = informer(api, watcher::Config::default()).boxed();
    while let Some(ch) = changes.next().await {
        lock(&hub).publish(ch);
    }
    lock(&hub).subscribers.clear();
    tracing::warn!(kind = %K::kind(&()), "shared watch ended");
}

/// A read view of a kind's shared cache.
pub struct Store<K> {
    hub: Shared<K>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            hub: self.hub.clone(),
        }
    }
}

impl<K> Store<K> {
    /// The cached object `namespace/name` (`name` for cluster-scoped kinds).
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        lock(&self.hub).objects.get(key).cloned()
    }

    /// Every cached object (unordered).
    pub fn list(&self) -> Vec<Arc<K>> {
        lock(&self.hub).objects.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.hub).objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One consumer's view of a kind: its change stream and the shared cache.
pub struct Watch<K> {
    rx: mpsc::UnboundedReceiver<Change<K>>,
    store: Store<K>,
}

impl<K: Resource<DynamicType = ()>> Watch<K> {
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// List, then follow: consume changes up to the first `Synced` and return the complete
    /// list they add up to, keyed by `namespace/name`. Later changes are the stream's.
    pub async fn initial_list(&mut self) -> Result<HashMap<String, Arc<K>>> {
        let mut all = HashMap::new();
        while let Some(ch) = self.rx.recv().await {
            if apply(&mut all, ch) {
                return Ok(all);
            }
        }
        bail!("the {} watch ended", K::plural(&()))
    }
}

/// List, then follow, for the start of a controller: waits for `lists` (one
/// [`Watch::initial_list`], or several joined) unless `cancel` fires first (`None`: stop).
/// The watches' later changes stay in their streams, so nothing between the list and the
/// first followed change is lost.
pub async fn listed<T>(
    cancel: &CancellationToken,
    lists: impl Future<Output = Result<T>>,
) -> Result<Option<T>> {
    tokio::select! {
        _ = cancel.cancelled() => Ok(None),
        lists = lists => lists.map(Some),
    }
}

/// Fold one change into a keyed list; true once the list is complete.
fn apply<K: Resource>(all: &mut HashMap<String, Arc<K>>, ch: Change<K>) -> bool {
    match ch {
        Change::Apply { new, .. } => {
            all.insert(key(new.as_ref()), new);
        }
        Change::Delete(old) => {
            all.remove(&key(old.as_ref()));
        }
        Change::Synced => return true,
    }
    false
}

impl<K> Stream for Watch<K> {
    type Item = Change<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<K> Unpin for Watch<K> {}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodStatus, Volume};
    use kube::ResourceExt;
    use std::collections::BTreeMap;

    fn node(name: &str, rv: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Change<Node>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push(match c {
                Change::Apply { old: None, new } => format!("add {}", new.name_any()),
                Change::Apply { old: Some(_), new } => format!("update {}", new.name_any()),
                Change::Delete(o) => format!("delete {}", o.name_any()),
                Change::Synced => "synced".into(),
            });
        }
        out
    }

    #[test]
    fn every_consumer_sees_the_same_changes_and_late_ones_catch_up_from_the_cache() {
        let mut hub = Hub::<Node>::default();
        let mut early = hub.join();
        hub.publish(Change::Apply {
            old: None,
            new: node("b", "1"),
        });
        hub.publish(Change::Apply {
            old: None,
            new: node("a", "2"),
        });
        let mut before_sync = hub.join();
        hub.publish(Change::Synced);
        let mut late = hub.join();
        hub.publish(Change::Delete(node("b", "1")));
        hub.publish(Change::Apply {
            old: Some(node("a", "2")),
            new: node("a", "3"),
        });

        assert_eq!(
            drain(&mut early),
            ["add b", "add a", "synced", "delete b", "update a"]
        );
        // Joined mid-list: the cache so far, then the rest of the list as it came.
        assert_eq!(
            drain(&mut before_sync),
            ["add a", "add b", "synced", "delete b", "update a"]
        );
        // Joined after the list: the whole cache as additions, in key order, then Synced.
        assert_eq!(
            drain(&mut late),
            ["add a", "add b", "synced", "delete b", "update a"]
        );
        assert_eq!(hub.objects.len(), 1);
        assert_eq!(
            hub.objects["a"].metadata.resource_version.as_deref(),
            Some("3")
        );
    }

    #[test]
    fn a_consumer_that_went_away_is_dropped_and_the_others_keep_going() {
        let mut hub = Hub::<Node>::default();
        let gone = hub.join();
        let mut stays = hub.join();
        drop(gone);
        hub.publish(Change::Apply {
            old: None,
            new: node("a", "1"),
        });
        assert_eq!(hub.subscribers.len(), 1);
        assert_eq!(drain(&mut stays), ["add a"]);
    }

    #[test]
    fn the_initial_list_adds_up_the_changes_until_synced() {
        let mut all = HashMap::new();
        let steps = [
            (
                Change::Apply {
                    old: None,
                    new: node("a", "1"),
                },
                false,
            ),
            (
                Change::Apply {
                    old: None,
                    new: node("b", "1"),
                },
                false,
            ),
            (Change::Delete(node("a", "1")), false),
            (Change::Synced, true),
        ];
        for (ch, done) in steps {
            assert_eq!(apply(&mut all, ch), done);
        }
        let keys: Vec<_> = all.keys().cloned().collect();
        assert_eq!(keys, ["b"]);
    }

    /// Through a real watch (the API stand-in, in-process, no root): two consumers of one
    /// kind share one cache, a late one is replayed it, and cached objects are trimmed.
    #[tokio::test]
    async fn consumers_of_a_live_watch_share_one_trimmed_cache() {
        use futures::StreamExt;
        use kube::api::PostParams;
        let (_sandbox, client) = crate::kube::test_sandbox().await;
        let informers = Informers::new(client.clone());
        let mut first = informers.watch::<Node>();
        let mut second = informers.watch::<Node>();
        let api: Api<Node> = Api::all(client);
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("k8s.ovn.org/node-subnets".to_string(), "x".to_string()),
            ]
            .into(),
        );
        api.create(&PostParams::default(), &n).await.unwrap();

        async fn until_n1(w: &mut Watch<Node>) -> Vec<String> {
            let mut seen = Vec::new();
            while let Some(ch) = w.next().await {
                let done = matches!(&ch, Change::Apply { new, .. } if new.name_any() == "n1");
                seen.push(match ch {
                    Change::Apply { new, .. } => format!("apply {}", new.name_any()),
                    Change::Delete(o) => format!("delete {}", o.name_any()),
                    Change::Synced => "synced".into(),
                });
                if done {
                    break;
                }
            }
            seen
        }
        let wait = std::time::Duration::from_secs(30);
        let a = tokio::time::timeout(wait, until_n1(&mut first))
            .await
            .unwrap();
        let b = tokio::time::timeout(wait, until_n1(&mut second))
            .await
            .unwrap();
        assert_eq!(a, b, "both consumers see the same changes");
        assert!(a.contains(&"synced".to_string()), "{a:?}");
        // One cache: both views hold the very same object, trimmed.
        let (x, y) = (
            first.store().get("n1").unwrap(),
            second.store().get("n1").unwrap(),
        );
        assert!(Arc::ptr_eq(&x, &y));
        let keys = |n: &Node| n.annotations().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&x), ["k8s.ovn.org/node-subnets"]);
        let served = api.get("n1").await.unwrap();
        assert_eq!(keys(&served).len(), 2, "the API keeps both");
        // A consumer joining now is replayed the cache, then told it is complete.
        let mut late = informers.watch::<Node>();
        assert_eq!(
            tokio::time::timeout(wait, until_n1(&mut late))
                .await
                .unwrap(),
            ["apply n1"]
        );
        let next = tokio::time::timeout(wait, late.next()).await.unwrap();
        assert!(matches!(next, Some(Change::Synced)), "{next:?}");
    }

    #[test]
    fn trimming_keeps_what_the_controllers_read() {
        let mut ann = BTreeMap::new();
        ann.insert("ovn".to_string(), "{}".to_string());
        ann.insert(LAST_APPLIED.to_string(), "{...}".to_string());
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some(ann),
                managed_fields: Some(vec![Default::default()]),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                host_network: Some(false),
                volumes: Some(vec![Volume::default()]),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("img".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus::default()),
        };
        pod.trim();
        let m = &pod.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(
            m.annotations
                .as_ref()
                .map(|a| a.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["ovn".to_string()])
        );
        assert_eq!(m.labels.as_ref().map(|l| l.len()), Some(1));
        assert_eq!(m.resource_version.as_deref(), Some("7"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.host_network, Some(false));
        assert_eq!(spec.volumes, None);
        assert_eq!(spec.containers[0].image, None);
        assert_eq!(spec.containers[0].name, "c");
        assert_eq!(spec.containers[0].ports.as_ref().map(|p| p.len()), Some(1));
        assert_eq!(pod.status, None);
    }
}
