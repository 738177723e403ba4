//! The pause switch: a frozen server keeps connections open but answers nothing and sends no
//! watch event until resumed; then the held request is answered and the held event arrives.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig};

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_paused_server_holds_requests_and_watch_events_until_resumed() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();
    let api: Api<Node> = Api::all(client);
    let first = api
        .create(&PostParams::default(), &node("a"))
        .await
        .unwrap();
    let rv = first.resource_version().unwrap();
    let mut events = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    sb.pause();
    let create = tokio::spawn({
        let api = api.clone();
        async move { api.create(&PostParams::default(), &node("b")).await }
    });
    // While paused the request gets no answer (the connection stays open).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!create.is_finished(), "a paused server answered a request");
    sb.resume();
    let created = tokio::time::timeout(Duration::from_secs(10), create)
        .await
        .expect("the held request is answered after resume")
        .unwrap()
        .unwrap();
    assert_eq!(created.name_any(), "b");
    // The watch opened before the pause survives it and delivers the held event.
    let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("the watch event arrives after resume")
        .unwrap();
    match ev {
        Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "b"),
        other => panic!("unexpected watch event {other:?}"),
    }
}

/// A stopped server refuses connections and cuts open watches; started again it serves the
/// same objects on the same address.
#[tokio::test]
async fn a_stopped_server_refuses_connections_and_serves_the_same_objects_once_started() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();
    let api: Api<Node> = Api::all(client);
    let first = api
        .create(&PostParams::default(), &node("a"))
        .await
        .unwrap();
    let rv = first.resource_version().unwrap();
    let mut events = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    sb.stop_serving();
    // The open watch is cut (an error or the end of its stream), not left hanging.
    let cut = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("the watch ends when the server stops");
    assert!(
        !matches!(cut, Ok(Some(_))),
        "an event from a stopped server"
    );
    let refused = std::net::TcpStream::connect_timeout(&sb.addr(), Duration::from_secs(2));
    assert!(refused.is_err(), "a stopped server accepted a connection");
    assert!(api.get("a").await.is_err(), "a stopped server answered");

    sb.start_serving();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(n) = api.get("a").await {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server serves again after start_serving");
    assert_eq!(got.resource_version(), Some(rv));
}
