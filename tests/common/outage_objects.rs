//! The objects of the outage tests: pods, services with endpoints and policies created in
//! batches, and the wait until the controllers have served every one of them.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use std::time::Duration;

use super::{Env, eventually};

/// How long the served objects may take to show (as the outage tests wait).
const WAIT: Duration = Duration::from_secs(120);

pub fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Pod `p<i>`, service `s<i>` (ClusterIP 10.96.1.<10+i>, one endpoint) and policy `np<i>`
/// (ingress isolation of `p<i>`), for each `i` in `ids`.
pub async fn create_objects(env: &Env, ids: std::ops::Range<usize>) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), "default");
    let pols: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), "default");
    let pp = PostParams::default();
    for i in ids {
        let p = from(json!({
            "metadata": {"name": format!("p{i}"), "labels": {"app": format!("p{i}")}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}
        }));
        pods.create(&pp, &p).await.unwrap();
        let s = from(json!({
            "metadata": {"name": format!("s{i}")},
            "spec": {"clusterIP": format!("10.96.1.{}", 10 + i),
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}
        }));
        svcs.create(&pp, &s).await.unwrap();
        let es = from(json!({
            "metadata": {"name": format!("s{i}-x"),
                         "labels": {"kubernetes.io/service-name": format!("s{i}")}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [format!("10.8.200.{}", 10 + i)],
                           "conditions": {"ready": true}}],
            "ports": [{"port": 8080, "protocol": "TCP"}]
        }));
        slices.create(&pp, &es).await.unwrap();
        let np = from(json!({
            "metadata": {"name": format!("np{i}")},
            "spec": {"podSelector": {"matchLabels": {"app": format!("p{i}")}},
                     "policyTypes": ["Ingress"]}
        }));
        pols.create(&pp, &np).await.unwrap();
    }
}

/// Waits until objects `0..n` are all served: annotated pods, VIPs, policy port groups.
pub async fn wait_served(env: &Env, n: usize) {
    eventually("pods annotated", WAIT, || async {
        let api: Api<Pod> = Api::namespaced(env.client.clone(), "default");
        let items = api.list(&ListParams::default()).await.ok()?.items;
        let done = items
            .iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("ovn"))
            })
            .count();
        (done >= n).then_some(())
    })
    .await;
    eventually("service VIPs", WAIT, || async {
        let vips = env
            .central
            .nbctl(&[
                "--bare",
                "--columns=vips",
                "find",
                "Load_Balancer",
                "external_ids:k8s-cluster-lb-tcp=yes",
            ])
            .ok()?;
        (0..n)
            .all(|i| vips.contains(&format!("10.96.1.{}:80", 10 + i)))
            .then_some(())
    })
    .await;
    eventually("policy port groups", WAIT, || async {
        let out = env
            .central
            .nbctl(&["--bare", "--columns=external_ids", "list", "Port_Group"])
            .ok()?;
        (0..n)
            .all(|i| out.contains(&format!("policy=np{i}")))
            .then_some(())
    })
    .await;
}
