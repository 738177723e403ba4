//! EndpointSlices: served generically (create/list/watch by label), and core/v1 Endpoints
//! written by clients mirrored into them as a real cluster's mirroring controller does.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

async fn start(cfg: SandboxConfig) -> (Sandbox, Client) {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();
    (sb, client)
}

fn by_service(name: &str) -> ListParams {
    ListParams::default().labels(&format!("kubernetes.io/service-name={name}"))
}

#[tokio::test]
async fn slices_are_served_and_watched_by_service_label() {
    let (_sb, client) = start(SandboxConfig::default()).await;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut w = api
        .watch(
            &WatchParams::default().labels("kubernetes.io/service-name=web"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, WatchEvent::Added(ref s) if s.name_any() == "web-x"),
        "{ev:?}"
    );
    assert_eq!(api.list(&by_service("web")).await.unwrap().items.len(), 1);
    assert!(
        api.list(&by_service("other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn endpoints_are_mirrored_into_slices_and_follow_updates_and_deletes() {
    let (_sb, client) = start(SandboxConfig::default()).await;
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut e: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}],
                     "notReadyAddresses": [{"ip": "10.0.0.2"}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}],
    }))
    .unwrap();
    e = eps.create(&PostParams::default(), &e).await.unwrap();
    let got = slices.list(&by_service("web")).await.unwrap().items;
    assert_eq!(got.len(), 1);
    let s = &got[0];
    assert_eq!(s.address_type, "IPv4");
    let ep = s.endpoints.as_ref().unwrap();
    assert_eq!(ep[0].addresses, vec!["10.0.0.1".to_string()]);
    assert_eq!(ep[0].node_name.as_deref(), Some("n1"));
    assert_eq!(ep[0].conditions.as_ref().unwrap().ready, Some(true));
    assert_eq!(ep[1].conditions.as_ref().unwrap().ready, Some(false));

    // Two subsets: two slices; back to one: the extra slice goes.
    e.subsets = serde_json::from_value(json!([
        {"addresses": [{"ip": "10.0.0.3"}], "ports": [{"port": 80}]},
        {"addresses": [{"ip": "10.0.0.4"}], "ports": [{"port": 81}]},
    ]))
    .unwrap();
    e = eps
        .replace("web", &PostParams::default(), &e)
        .await
        .unwrap();
    assert_eq!(
        slices.list(&by_service("web")).await.unwrap().items.len(),
        2
    );
    e.subsets = serde_json::from_value(json!([
        {"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]},
    ]))
    .unwrap();
    eps.replace("web", &PostParams::default(), &e)
        .await
        .unwrap();
    let got = slices.list(&by_service("web")).await.unwrap().items;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].endpoints.as_ref().unwrap()[0].addresses,
        vec!["10.0.0.5".to_string()]
    );

    eps.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(
        slices
            .list(&by_service("web"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn mirroring_can_be_turned_off() {
    let (_sb, client) = start(SandboxConfig {
        mirror_endpoints: false,
        ..SandboxConfig::default()
    })
    .await;
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let e: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}],
    }))
    .unwrap();
    eps.create(&PostParams::default(), &e).await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    assert!(
        slices
            .list(&by_service("web"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_hidden_group_is_not_served_or_listed() {
    let (_sb, client) = start(SandboxConfig {
        hidden_groups: vec!["discovery.k8s.io".into()],
        ..SandboxConfig::default()
    })
    .await;
    let err = client
        .list_api_group_resources("discovery.k8s.io/v1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.is_not_found()),
        "{err:?}"
    );
    let groups = client.list_api_groups().await.unwrap();
    assert!(!groups.groups.iter().any(|g| g.name == "discovery.k8s.io"));
    assert!(groups.groups.iter().any(|g| g.name == "networking.k8s.io"));
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    assert!(slices.list(&ListParams::default()).await.is_err());
}
