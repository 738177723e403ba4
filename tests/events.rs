//! Events as an operator reads them: events.k8s.io/v1 objects, repeats aggregated into one
//! Event with a series count, readable with the real kubectl.

mod common;

use std::time::Duration;

use common::{Env, eventually};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// The master's flags with the NB/SB given as unix sockets.
fn master_args(env: &Env) -> Vec<String> {
    let mut args: Vec<String> = env
        .master_args("10.40.0.0/16")
        .into_iter()
        .filter(|a| !a.starts_with("-nb-address=") && !a.starts_with("-sb-address="))
        .collect();
    args.push(format!("-nb-address={}", env.central.nb_db()));
    args.push(format!("-sb-address={}", env.central.sb_db()));
    args
}

fn bad_policy(cidr: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}
    }))
    .unwrap()
}

/// Our events about NetworkPolicy default/bad.
async fn bad_policy_events(api: &Api<Event>) -> Vec<Event> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidNetworkPolicy"))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("NetworkPolicy") && r.name.as_deref() == Some("bad")
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_warning_twice_is_one_event_with_a_series_count() {
    let env = Env::start("events").await;
    let mut master = env.spawn("master", &master_args(&env));
    master.wait_log("initial policy sync done", WAIT);
    let pols: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), "default");
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");

    pols.create(&PostParams::default(), &bad_policy("10.0.0.0/99"))
        .await
        .unwrap();
    let first = eventually("the first InvalidNetworkPolicy event", WAIT, || async {
        let evs = bad_policy_events(&events).await;
        (!evs.is_empty()).then_some(evs)
    })
    .await;
    assert_eq!(first.len(), 1, "{first:#?}");
    let ev = &first[0];
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.reporting_controller.as_deref(),
        Some("ovnkube-net-controller")
    );
    assert_eq!(ev.action.as_deref(), Some("CompilePolicy"));
    assert!(ev.series.is_none(), "{ev:#?}");
    let note = ev.note.clone().unwrap_or_default();
    assert!(
        note.contains("10.0.0.0/99") && note.contains("not a valid CIDR"),
        "{note}"
    );

    // A new, still broken spec: the controller reports again; the Recorder folds it into the
    // same Event.
    pols.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "300.0.0.0/8"}}]}]}}),
        ),
    )
    .await
    .unwrap();
    master.wait_log("\"300.0.0.0/8\" is not a valid CIDR", WAIT);
    let series = eventually("the event's series count reaching 2", WAIT, || async {
        let evs = bad_policy_events(&events).await;
        let count = evs.first()?.series.as_ref()?.count;
        (count >= 2).then_some(evs)
    })
    .await;
    assert_eq!(series.len(), 1, "one Event, not two: {series:#?}");
    assert_eq!(series[0].name_any(), ev.name_any());
    assert_eq!(series[0].series.as_ref().map(|s| s.count), Some(2));

    // The operator's view: kubectl reads the same aggregated Event.
    let out = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", env.kubeconfig.display()))
        .args(["get", "events.events.k8s.io", "-n", "default", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine: Vec<&serde_json::Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "InvalidNetworkPolicy")
        .collect();
    assert_eq!(mine.len(), 1, "{list:#}");
    assert_eq!(mine[0]["series"]["count"], 2, "{list:#}");
    assert!(!master.log_text().contains("could not record event"));
}
