//! coordination.k8s.io/v1 Leases as leader election uses them: create, get, replace
//! conditional on resourceVersion (a stale one is 409 Conflict), and a second create of the
//! same name is 409 AlreadyExists.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use kube_sandbox::{Sandbox, SandboxConfig};

fn lease(holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("ovn-kubernetes-master".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(4),
            ..Default::default()
        }),
    }
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn lease_create_get_and_replace_with_resource_version_conflicts() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(sb.url().parse().unwrap())).unwrap();
    let api: Api<Lease> = Api::namespaced(client, "kube-system");
    let pp = PostParams::default();

    assert!(
        api.get_opt("ovn-kubernetes-master")
            .await
            .unwrap()
            .is_none()
    );
    let created = api.create(&pp, &lease("a")).await.unwrap();
    let rv0 = created.resource_version().unwrap();
    // Two replicas racing to create: the second loses with 409.
    let (c, reason) = code(api.create(&pp, &lease("b")).await.unwrap_err());
    assert_eq!((c, reason.as_str()), (409, "AlreadyExists"));

    // Both read rv0; a wins the replace, b's replace with the stale rv0 is a conflict.
    let mut by_a = created.clone();
    by_a.spec.as_mut().unwrap().lease_transitions = Some(0);
    let renewed = api
        .replace("ovn-kubernetes-master", &pp, &by_a)
        .await
        .unwrap();
    assert_ne!(renewed.resource_version().unwrap(), rv0);
    let mut by_b = created.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let (c, reason) = code(
        api.replace("ovn-kubernetes-master", &pp, &by_b)
            .await
            .unwrap_err(),
    );
    assert_eq!((c, reason.as_str()), (409, "Conflict"));
    let now = api.get("ovn-kubernetes-master").await.unwrap();
    assert_eq!(
        now.spec.unwrap().holder_identity.as_deref(),
        Some("a"),
        "the conflicting write changed nothing"
    );

    // With the current resourceVersion b's takeover goes through.
    by_b.metadata.resource_version = renewed.resource_version();
    let taken = api
        .replace("ovn-kubernetes-master", &pp, &by_b)
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("b"));
}
