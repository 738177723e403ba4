//! Kubernetes Events (events.k8s.io/v1), so an operator sees problems with `kubectl describe`
//! and `kubectl get events`.
//!
//! Published through kube-runtime's `Recorder`, which aggregates repeats: the same event about
//! the same object within a few minutes becomes one Event whose `series.count` grows (a patch),
//! not a new object each time. Its cache lives in the `Recorder`, so each reporting controller
//! builds one [`Events`] and clones it (clones share the cache).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

/// `reportingController` of the master's events.
pub const MASTER: &str = "ovnkube-master";
/// `reportingController` of the net-controller's events (pods, network policies).
pub const NET_CONTROLLER: &str = "ovnkube-net-controller";

/// `reportingController` of events about objects the watchers could not decode.
pub const WATCHER: &str = "ovnkube-watcher";

/// The one event publisher of a reporting controller.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// `controller` is the reporting controller ([`MASTER`], [`NET_CONTROLLER`]); the reporting
    /// instance is the host name, as kube-runtime fills it in.
    pub fn new(client: kube::Client, controller: &str) -> Self {
        Events {
            recorder: Recorder::new(client, Reporter::from(controller)),
        }
    }

    /// Record a Warning about `obj`: `action` is what was being done (`AllocateSubnet`), `reason`
    /// the outcome (`SubnetExhausted`), `note` the readable message. Failures are logged,
    /// never fatal.
    pub async fn warn<K>(&self, obj: &K, action: &str, reason: &str, note: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.warn_ref(regarding(obj), action, reason, note).await;
    }

    /// [`Events::warn`] for an object known only by its reference: one that could not be
    /// decoded into its type.
    pub async fn warn_ref(
        &self,
        reference: ObjectReference,
        action: &str,
        reason: &str,
        note: &str,
    ) {
        let ev = warning(action, reason, note);
        match self.recorder.publish(&ev, &reference).await {
            Ok(()) => super::outage::succeeded(),
            Err(e) => {
                // Logged at WARN once per API outage (there), each event at DEBUG.
                let name = reference.name.as_deref().unwrap_or_default();
                super::outage::failed(1, &format!("recording event {reason} for {name}: {e}"));
                tracing::debug!(object = %name, error = %e, "could not record event {reason}");
            }
        }
    }
}

/// The event body. The note is cut to the API's 1 kB limit on a character boundary, so a long
/// message never gets the whole event rejected.
fn warning(action: &str, reason: &str, note: &str) -> Event {
    const NOTE_MAX: usize = 1024;
    let mut note = note.to_string();
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

/// The object the event is about. Without `resourceVersion`: the Recorder aggregates repeats by
/// comparing references, and the object changing in between must not split the series.
fn regarding<K>(obj: &K) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ObjectMeta;

    #[test]
    fn reference_names_the_object_without_its_version() {
        let n = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("u1".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = regarding(&n);
        assert_eq!(r.kind.as_deref(), Some("Node"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert_eq!(r.uid.as_deref(), Some("u1"));
        assert_eq!(r.namespace, None);
        assert_eq!(r.resource_version, None);
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit() {
        for (note, want) in [
            ("short".to_string(), 5),
            ("x".repeat(1024), 1024),
            ("x".repeat(5000), 1024),
            // A two-byte character straddling the limit is dropped whole.
            (format!("{}é", "x".repeat(1023)), 1023),
        ] {
            let ev = warning("A", "R", &note);
            assert_eq!(ev.note.as_deref().map(str::len), Some(want), "{note:.20}");
            assert_eq!(ev.type_, EventType::Warning);
        }
    }
}
