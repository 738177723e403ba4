//! The Kubernetes deployment files in `dist/k8s/`, parsed into their k8s-openapi types, and
//! the RBAC question "does this ClusterRole allow that call?".

#![allow(dead_code)]

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::Value;

/// One manifest document, typed.
#[derive(Debug)]
pub enum Manifest {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
}

pub fn dist_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/k8s"))
}

/// Strict typed parse: unknown fields are errors (k8s-openapi types ignore them, so the
/// typed object is serialised back and compared with the document).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
    file: &str,
) -> Result<T, String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| format!("{file}: {e}"))?;
    let back = serde_json::to_value(&t).map_err(|e| format!("{file}: {e}"))?;
    if let Some(path) = first_difference(doc, &back, String::new()) {
        return Err(format!(
            "{file}: field {path} is not part of the {} schema (typo?)",
            doc["kind"]
        ));
    }
    Ok(t)
}

/// The first path present in `doc` but not kept by the typed round trip.
fn first_difference(doc: &Value, back: &Value, path: String) -> Option<String> {
    match (doc, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| match b.get(k) {
            None if !v.is_null() => Some(format!("{path}.{k}")),
            None => None,
            Some(w) => first_difference(v, w, format!("{path}.{k}")),
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Every document of every `*.yaml` in `dist/k8s/`, typed by its kind.
pub fn load() -> Result<Vec<(String, Manifest)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dist_dir())
        .map_err(|e| format!("reading dist/k8s: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{name}: {e}"))?;
        for de in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(de).map_err(|e| format!("{name}: {e}"))?;
            if doc.is_null() {
                continue;
            }
            let m = match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("v1"), Some("Namespace")) => Manifest::Namespace(typed(&doc, &name)?),
                (Some("v1"), Some("ServiceAccount")) => {
                    Manifest::ServiceAccount(typed(&doc, &name)?)
                }
                (Some("v1"), Some("ConfigMap")) => Manifest::ConfigMap(typed(&doc, &name)?),
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRole")) => {
                    Manifest::ClusterRole(typed(&doc, &name)?)
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("ClusterRoleBinding")) => {
                    Manifest::ClusterRoleBinding(typed(&doc, &name)?)
                }
                (Some("apps/v1"), Some("Deployment")) => Manifest::Deployment(typed(&doc, &name)?),
                (Some("apps/v1"), Some("DaemonSet")) => Manifest::DaemonSet(typed(&doc, &name)?),
                (v, k) => return Err(format!("{name}: unexpected {v:?} {k:?}")),
            };
            out.push((name.clone(), m));
        }
    }
    Ok(out)
}

/// The ovnkube ClusterRole.
pub fn cluster_role() -> ClusterRole {
    load()
        .unwrap()
        .into_iter()
        .find_map(|(_, m)| match m {
            Manifest::ClusterRole(r) => Some(r),
            _ => None,
        })
        .expect("dist/k8s has a ClusterRole")
}

/// Whether `role` allows `verb` on `group`/`resource` (RBAC semantics, including `*`).
pub fn allows(role: &ClusterRole, verb: &str, group: &str, resource: &str) -> bool {
    let has = |list: &[String], x: &str| list.iter().any(|v| v == "*" || v == x);
    role.rules.iter().flatten().any(|r| {
        has(&r.verbs, verb)
            && has(r.api_groups.as_deref().unwrap_or_default(), group)
            && has(r.resources.as_deref().unwrap_or_default(), resource)
    })
}
