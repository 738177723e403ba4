//! Typed kube-rs client semantics: status subresource, finalizers, cascades, errors, generateName.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

async fn start() -> (Sandbox, Client) {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();
    (sb, client)
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn status_subresource_finalizers_and_errors() {
    let (_sb, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod(json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})))
        .await
        .unwrap();
    let name = p.name_any();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    let err = pods.create(&PostParams::default(), &p).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500 || s.code == 409),
        "{err:?}"
    );

    // Status patches change status and metadata, never spec.
    let st = pods
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k8s.ovn.org/pod-networks": "{}"}},
                "spec": {"nodeName": "ignored"}, "status": {"phase": "Running", "podIP": "10.0.0.5"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.annotations()["k8s.ovn.org/pod-networks"], "{}");
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert!(st.spec.as_ref().unwrap().node_name.is_none());
    // A PUT without status keeps it; a spec change bumps generation.
    let mut upd = st.clone();
    upd.status = None;
    upd.spec.as_mut().unwrap().node_name = Some("n1".into());
    let after = pods
        .replace(&name, &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().pod_ip.as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(after.metadata.generation, Some(2));
    // Stale replace conflicts.
    let err = pods
        .replace(&name, &PostParams::default(), &st)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    // Field selector on spec.nodeName.
    let on_n1 = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(on_n1.items.len(), 1);
    assert!(
        pods.list(&ListParams::default().fields("spec.nodeName=n2"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Finalizers hold deletion until removed.
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["x/y"]}})),
    )
    .await
    .unwrap();
    let deleting = pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let marked = deleting
        .left()
        .expect("object returned while finalizers pending");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(pods.get(&name).await.is_ok());
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let err = pods.get(&name).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn namespace_delete_cascades_with_events_and_selector_transitions() {
    let (_sb, client) = start().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "t1"}})).unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t1");
    let all_pods: Api<Pod> = Api::all(client.clone());
    for n in ["a", "b"] {
        pods.create(
            &PostParams::default(),
            &pod(json!({"metadata": {"name": n, "labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    }
    let rv = all_pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let sel = WatchParams::default().labels("x=1").timeout(3);
    let mut w = all_pods.watch(&sel, &rv).await.unwrap().boxed();
    // "a" stops matching (DELETED for this watcher), then starts again (ADDED).
    let pp = PatchParams::default();
    pods.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"x": "2"}}})),
    )
    .await
    .unwrap();
    pods.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    nss.delete("t1", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .unwrap()
    {
        let item = match ev {
            WatchEvent::Added(p) => format!("ADDED {}", p.name_any()),
            WatchEvent::Modified(p) => format!("MODIFIED {}", p.name_any()),
            WatchEvent::Deleted(p) => format!("DELETED {}", p.name_any()),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("{e:?}"),
        };
        seen.push(item);
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(seen, ["DELETED a", "ADDED a", "DELETED a", "DELETED b"]);
    assert!(nss.get_opt("t1").await.unwrap().is_none());
    let err = pods
        .create(
            &PostParams::default(),
            &pod(json!({"metadata": {"name": "c"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}
