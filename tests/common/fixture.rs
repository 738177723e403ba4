//! The workload the restore and self-healing tests program and check: pods labelled by role,
//! and service `web` (port 80 → 8080) with endpoints `p0` and `p1`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, PodSpec, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::Env;

/// Pod `name` on `node` in `default`, labelled `role=<role>`.
pub fn pod(name: &str, node: &str, role: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("role".to_string(), role.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Service `web` and its Endpoints: pods `p0` and `p1` at their addresses in `ips` (pod name →
/// IP).
pub async fn create_web(env: &Env, ips: &BTreeMap<String, String>) {
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Service>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let ep = Endpoints {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ["p0", "p1"]
                    .iter()
                    .map(|p| EndpointAddress {
                        ip: ips[*p].clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: 8080,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    Api::<Endpoints>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &ep)
        .await
        .unwrap();
}
