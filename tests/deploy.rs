//! The Kubernetes deployment files: every manifest parses into its k8s-openapi type, and the
//! pieces fit together (names, namespace, service account, volumes, probes, the metrics port).

mod k8sdist;

use k8sdist::{Manifest, allows, cluster_role, load};

#[test]
fn every_manifest_parses_into_its_type_and_they_fit_together() {
    let all = load().unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = all
        .iter()
        .map(|(_, m)| match m {
            Manifest::Namespace(_) => "Namespace",
            Manifest::ServiceAccount(_) => "ServiceAccount",
            Manifest::ClusterRole(_) => "ClusterRole",
            Manifest::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Deployment(_) => "Deployment",
            Manifest::DaemonSet(_) => "DaemonSet",
        })
        .collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&k), "dist/k8s lacks a {k}: {kinds:?}");
    }
    let ns = all
        .iter()
        .find_map(|(_, m)| match m {
            Manifest::Namespace(n) => n.metadata.name.clone(),
            _ => None,
        })
        .unwrap();
    let sa = all
        .iter()
        .find_map(|(_, m)| match m {
            Manifest::ServiceAccount(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns.as_str()));
    for (file, m) in &all {
        match m {
            Manifest::ClusterRoleBinding(b) => {
                assert_eq!(b.role_ref.name, cluster_role().metadata.name.unwrap());
                let s = &b.subjects.as_ref().unwrap()[0];
                assert_eq!(
                    (s.name.as_str(), s.namespace.as_deref()),
                    (sa.metadata.name.as_deref().unwrap(), Some(ns.as_str()))
                );
            }
            Manifest::Deployment(d) => {
                assert_eq!(d.metadata.namespace.as_deref(), Some(ns.as_str()));
                let spec = &d.spec;
                // Two masters: one leads, one is the standby.
                assert_eq!(spec.replicas, Some(2), "{file}");
                let pod = spec.template.spec.as_ref().unwrap();
                assert_eq!(pod.service_account_name, sa.metadata.name, "{file}");
                let c = &pod.containers[0];
                let args = c.args.clone().unwrap_or_default();
                assert!(args.iter().any(|a| a.starts_with("-init-master=")));
                // The Lease lives in the deployment's namespace, and the flags parse.
                let lease_ns = format!("-ha-election-lease-namespace={ns}");
                assert!(args.contains(&lease_ns), "{args:?}");
                let election: Vec<String> = args
                    .iter()
                    .filter(|a| a.starts_with("-ha-election-"))
                    .cloned()
                    .collect();
                assert_eq!(election.len(), 4, "{args:?}");
                let parsed = ovnkube::config::parse_args_with(
                    election,
                    std::path::Path::new("/nonexistent"),
                    None,
                );
                let Ok(ovnkube::config::Invocation::Run(cfg)) = parsed else {
                    panic!("{file}: the election flags do not parse: {parsed:?}");
                };
                assert_eq!(cfg.master_ha.lease_namespace, ns);
                assert!(
                    args.iter()
                        .any(|a| a == "-metrics-bind-address=0.0.0.0:9409")
                );
                // In a pod the service account is used: no credentials on the command line.
                assert!(
                    !args.iter().any(|a| a.starts_with("-k8s-token")),
                    "{args:?}"
                );
                let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                    p.as_ref()
                        .and_then(|p| p.http_get.as_ref())
                        .map(|h| h.path.clone())
                };
                assert_eq!(probe(&c.liveness_probe), Some(Some("/healthz".into())));
                assert_eq!(probe(&c.readiness_probe), Some(Some("/readyz".into())));
            }
            Manifest::DaemonSet(d) => {
                assert_eq!(d.metadata.namespace.as_deref(), Some(ns.as_str()));
                let pod = d.spec.template.spec.as_ref().unwrap();
                assert_eq!(pod.host_network, Some(true), "{file}");
                // The plugin's credential copies land on the host path mounted at the same
                // place in the pod.
                let args = pod.containers[0].args.clone().unwrap_or_default();
                let cred = args
                    .iter()
                    .find_map(|a| a.strip_prefix("-cni-credentials-dir="))
                    .unwrap_or_else(|| panic!("{file}: no -cni-credentials-dir: {args:?}"));
                let mounted = pod.containers[0].volume_mounts.iter().flatten().any(|m| {
                    cred.starts_with(&format!("{}/", m.mount_path))
                        && pod.volumes.iter().flatten().any(|v| {
                            v.name == m.name
                                && v.host_path.as_ref().is_some_and(|h| h.path == m.mount_path)
                        })
                });
                assert!(mounted, "{file}: {cred} is not on a same-path host mount");
                assert_eq!(pod.service_account_name, sa.metadata.name, "{file}");
                let host_paths: Vec<String> = pod
                    .volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
                    .collect();
                for p in [
                    "/var/run/openvswitch",
                    "/var/run/ovn",
                    "/etc/cni/net.d",
                    "/opt/cni/bin",
                    "/var/run/ovn-kubernetes",
                ] {
                    assert!(host_paths.iter().any(|h| h == p), "{file} lacks {p}");
                }
                // Every mount names a volume that exists.
                let names: Vec<&str> = pod
                    .volumes
                    .iter()
                    .flatten()
                    .map(|v| v.name.as_str())
                    .collect();
                for c in pod
                    .containers
                    .iter()
                    .chain(pod.init_containers.iter().flatten())
                {
                    for m in c.volume_mounts.iter().flatten() {
                        assert!(names.contains(&m.name.as_str()), "{file}: {}", m.name);
                    }
                }
                let args = pod.containers[0].args.clone().unwrap_or_default();
                assert!(args.iter().any(|a| a.starts_with("-init-node=")));
                assert!(
                    args.iter().any(|a| a == "-nodeport"),
                    "the agent must stay running"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn rbac_check_follows_rbac_semantics() {
    let role = cluster_role();
    assert!(allows(&role, "patch", "", "pods"));
    assert!(allows(
        &role,
        "watch",
        "networking.k8s.io",
        "networkpolicies"
    ));
    assert!(!allows(&role, "delete", "", "pods"));
    assert!(!allows(&role, "patch", "networking.k8s.io", "pods"));
    assert!(!allows(&role, "get", "", "secrets"));
}

#[test]
fn containerfile_is_debian_with_ovn_and_the_binary() {
    let text = std::fs::read_to_string(k8sdist::dist_dir().join("Containerfile")).unwrap();
    assert!(text.contains("FROM docker.io/library/debian:12"));
    for pkg in ["ovn-common", "openvswitch-switch", "iproute2"] {
        assert!(text.contains(pkg), "Containerfile lacks {pkg}");
    }
    assert!(text.contains("COPY target/release/ovnkube /usr/bin/ovnkube"));
    // The DaemonSet installs the plugin from this path.
    let ds = std::fs::read_to_string(k8sdist::dist_dir().join("20-node.yaml")).unwrap();
    assert!(ds.contains("/usr/bin/ovnkube"));
}
