//! events.k8s.io/v1 as kube-runtime's event `Recorder` uses it: discovery, create, the merge
//! patch of a series update, list and watch; and the same Events through core/v1, as
//! `kubectl describe` reads them.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event as Ev, EventType, Recorder, Reporter};
use kube_sandbox::{Sandbox, SandboxConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_creates_then_patches_a_series() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();

    // Discovery advertises the group with the verbs the Recorder needs.
    let d = kube::discovery::group(&client, "events.k8s.io")
        .await
        .unwrap();
    let (res, caps) = d
        .recommended_resources()
        .into_iter()
        .find(|(r, _)| r.plural == "events")
        .expect("events.k8s.io events in discovery");
    assert_eq!(res.version, "v1");
    assert!(caps.supports_operation("create") && caps.supports_operation("patch"));

    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut watch = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let rec = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-controller".into(),
            instance: Some("i1".into()),
        },
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let mut n = Node::default();
    n.metadata.name = Some("n1".into());
    let n = nodes.create(&PostParams::default(), &n).await.unwrap();
    let about = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("n1".into()),
        uid: n.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = Ev {
        type_: EventType::Warning,
        reason: "SubnetExhausted".into(),
        note: Some("no free subnet".into()),
        action: "AllocateSubnet".into(),
        secondary: None,
    };
    rec.publish(&ev, &about).await.unwrap();
    rec.publish(&ev, &about).await.unwrap();
    rec.publish(&ev, &about).await.unwrap();

    let items = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(items.len(), 1, "{items:#?}");
    let e = &items[0];
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(e.reporting_controller.as_deref(), Some("test-controller"));
    assert_eq!(e.reporting_instance.as_deref(), Some("i1"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("n1")
    );
    assert!(e.event_time.is_some());

    // A watcher sees the creation and each series update.
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match watch.try_next().await.unwrap().expect("watch ended") {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(e) => {
                kinds.push("MODIFIED");
                assert!(e.series.is_some());
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "MODIFIED"]);

    // The core/v1 view, with the field selector kubectl describe sends.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields("involvedObject.name=n1,involvedObject.kind=Node");
    let got = core.list(&lp).await.unwrap().items;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].message.as_deref(), Some("no free subnet"));
    assert_eq!(got[0].count, Some(3));
    assert_eq!(
        got[0].source.as_ref().and_then(|s| s.component.as_deref()),
        Some("test-controller")
    );
    let other = ListParams::default().fields("involvedObject.name=n2");
    assert!(core.list(&other).await.unwrap().items.is_empty());

    // What an operator runs.
    let dir = std::env::temp_dir().join(format!("kube-sandbox-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    sb.write_kubeconfig(&kc).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kc.display()))
        .arg(format!("--cache-dir={}", dir.join("cache").display()))
        .args(["describe", "node", "n1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.contains("Warning")
            && l.contains("SubnetExhausted")
            && l.contains("no free subnet")),
        "{text}"
    );
}
