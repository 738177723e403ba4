//! Kubernetes Events, so an operator sees problems with `kubectl describe`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};

/// Record a Warning event about `obj`. Failures are logged, never fatal.
pub async fn warn<K>(client: &kube::Client, component: &str, obj: &K, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    let involved = ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        ..Default::default()
    };
    warn_ref(client, component, involved, reason, message).await;
}

/// Record a Warning event about the object `involved` names: for objects that could not be
/// decoded into their type, whose name is all that is known.
pub async fn warn_ref(
    client: &kube::Client,
    component: &str,
    involved: ObjectReference,
    reason: &str,
    message: &str,
) {
    let name = involved.name.clone().unwrap_or_default();
    let ns = involved
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some("Warning".to_string()),
        source: Some(EventSource {
            component: Some(component.to_string()),
            ..Default::default()
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(object = %name, error = %e, "could not record event {reason}");
    }
}
