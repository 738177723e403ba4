//! EndpointSlice mirroring: core/v1 Endpoints written by clients also appear as
//! `discovery.k8s.io/v1` EndpointSlices, one per subset, as kube-controller-manager's
//! endpointslice-mirroring controller does in a real cluster. Consumers that read only slices
//! (today's kube-proxy, ovn-kubernetes) then see endpoints published the old way too.
//!
//! Differences from the real controller, kept small on purpose: every Endpoints object is
//! mirrored (the real one skips services that have a selector, whose slices the endpointslice
//! controller writes from pods), and the label `endpointslice.kubernetes.io/skip-mirror=true`
//! opts an object out, as it does there.

use serde_json::{Value, json};

pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MIRROR_MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Name of the mirrored slice of subset `i` of Endpoints `name`.
pub fn slice_name(name: &str, i: usize) -> String {
    format!("{name}-mirror-{i}")
}

/// Whether `slice` is a mirror of Endpoints `name`.
pub fn is_mirror_of(slice: &Value, name: &str) -> bool {
    let labels = slice.pointer("/metadata/labels");
    let l = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    l(MANAGED_BY_LABEL) == Some(MIRROR_MANAGER) && l(SERVICE_NAME_LABEL) == Some(name)
}

fn endpoint(addr: &Value, ready: bool) -> Option<Value> {
    let ip = addr.get("ip")?.as_str()?;
    let mut e = json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready, "terminating": false},
    });
    for (from, to) in [("nodeName", "nodeName"), ("hostname", "hostname")] {
        if let Some(v) = addr.get(from) {
            e[to] = v.clone();
        }
    }
    if let Some(t) = addr.get("targetRef") {
        e["targetRef"] = t.clone();
    }
    Some(e)
}

fn family(subset: &Value) -> &'static str {
    let first = ["addresses", "notReadyAddresses"]
        .iter()
        .filter_map(|k| subset.get(*k)?.as_array()?.first()?.get("ip")?.as_str())
        .next();
    match first {
        Some(ip) if ip.contains(':') => "IPv6",
        _ => "IPv4",
    }
}

/// The slices (name, body without resourceVersion) Endpoints object `ep` mirrors to; none when
/// it opts out.
pub fn slices_for(ep: &Value) -> Vec<(String, Value)> {
    let Some(name) = ep.pointer("/metadata/name").and_then(Value::as_str) else {
        return Vec::new();
    };
    let skip = ep
        .pointer("/metadata/labels")
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .and_then(Value::as_str)
        == Some("true");
    if skip {
        return Vec::new();
    }
    let ns = ep
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or(json!(""));
    let subsets = ep.get("subsets").and_then(Value::as_array);
    let mut out = Vec::new();
    for (i, s) in subsets.into_iter().flatten().enumerate() {
        let mut endpoints: Vec<Value> = Vec::new();
        for (k, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for a in s.get(k).and_then(Value::as_array).into_iter().flatten() {
                endpoints.extend(endpoint(a, ready));
            }
        }
        let ports: Vec<Value> = s
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                let mut q = json!({"port": p.get("port").cloned().unwrap_or(Value::Null),
                    "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))});
                if let Some(n) = p.get("name") {
                    q["name"] = n.clone();
                }
                q
            })
            .collect();
        let sname = slice_name(name, i);
        out.push((
            sname.clone(),
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": sname,
                    "namespace": ns,
                    "labels": {MANAGED_BY_LABEL: MIRROR_MANAGER, SERVICE_NAME_LABEL: name},
                },
                "addressType": family(s),
                "endpoints": endpoints,
                "ports": ports,
            }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slice_per_subset_with_conditions_and_labels() {
        let ep = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}],
                 "notReadyAddresses": [{"ip": "10.0.0.2"}],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53, "protocol": "UDP"}]},
            ]
        });
        let s = slices_for(&ep);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "web-mirror-0");
        let a = &s[0].1;
        assert_eq!(a["addressType"], "IPv4");
        assert_eq!(a["endpoints"][0]["addresses"][0], "10.0.0.1");
        assert_eq!(a["endpoints"][0]["nodeName"], "n1");
        assert_eq!(a["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(a["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(a["ports"][0]["name"], "http");
        assert!(is_mirror_of(a, "web"));
        assert!(!is_mirror_of(a, "other"));
        assert_eq!(s[1].1["addressType"], "IPv6");
    }

    #[test]
    fn skip_mirror_label_opts_out() {
        let ep = json!({
            "metadata": {"name": "web", "labels": {SKIP_MIRROR_LABEL: "true"}},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]
        });
        assert!(slices_for(&ep).is_empty());
    }
}
