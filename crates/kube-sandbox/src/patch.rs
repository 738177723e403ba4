//! Merge (RFC 7386), strategic-merge and JSON (RFC 6902) patches.

use serde_json::{Map, Value};

use crate::resources::{ListStrategy, ResourceDef};

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Strategic merge patch: maps merge like a merge patch, lists merge by key where the Kubernetes
/// type declares a patch strategy (see [`ResourceDef::list_strategy`]) and replace otherwise.
/// Directives `$patch` (replace/delete), `$retainKeys`, `$deleteFromPrimitiveList/` are honoured;
/// `$setElementOrder/` is dropped.
pub fn strategic_merge(def: &ResourceDef, target: &mut Value, patch: &Value) {
    merge_map(def, target, patch);
}

fn merge_map(def: &ResourceDef, target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = p.clone();
            replaced.remove("$patch");
            *target = strip_directives(&Value::Object(replaced));
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(live)), Value::Array(del)) = (t.get_mut(field), v) {
                live.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let merged = match def.list_strategy(k) {
                    ListStrategy::Replace => strip_directives(v),
                    ListStrategy::MergePrimitive => {
                        let mut live = t
                            .get(k)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for it in items {
                            if !live.contains(it) {
                                live.push(it.clone());
                            }
                        }
                        Value::Array(live)
                    }
                    ListStrategy::MergeByKey(key) => {
                        let live = t
                            .get(k)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        Value::Array(merge_keyed_list(def, live, items, key))
                    }
                };
                t.insert(k.clone(), merged);
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                merge_map(def, slot, v);
                if slot.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
}

fn merge_keyed_list(
    def: &ResourceDef,
    mut live: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> Vec<Value> {
    for item in patch {
        let Some(kv) = item.get(key) else {
            // No merge key: the apiserver rejects this; appending is the least surprising fallback.
            live.push(strip_directives(item));
            continue;
        };
        let pos = live.iter().position(|l| l.get(key) == Some(kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                live.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge_map(def, &mut live[i], item),
            (None, false) => live.push(strip_directives(item)),
        }
    }
    live
}

/// Removes `$`-directives from a value that is inserted verbatim.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Why a JSON patch failed: the body is not a patch (400) or it does not apply (422).
#[derive(Debug)]
pub enum JsonPatchError {
    Malformed(String),
    Failed(String),
}

/// Applies an RFC 6902 patch (all-or-nothing: `target` is untouched on failure).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| JsonPatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| JsonPatchError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;
    use serde_json::json;

    fn pods() -> &'static ResourceDef {
        &RESOURCES[0]
    }

    #[test]
    fn merge_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": null}}),
        );
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {}}));
        let mut t = json!({"a": 1});
        merge_patch(&mut t, &json!(["x"]));
        assert_eq!(t, json!(["x"]));
    }

    #[test]
    fn strategic_lists_by_key() {
        let mut pod = json!({"metadata": {"annotations": {"a": "1"}, "finalizers": ["f1"]},
            "spec": {"containers": [
                {"name": "c1", "image": "i1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                {"name": "c2", "image": "i2"}],
            "tolerations": [{"key": "t1"}]}});
        let patch = json!({
            "metadata": {"annotations": {"b": "2", "a": null}, "finalizers": ["f2"]},
            "spec": {
                "$setElementOrder/containers": [{"name": "c1"}, {"name": "c2"}],
                "containers": [
                    {"name": "c1", "image": "i1b", "ports": [{"containerPort": 443}], "env": [{"name": "B", "value": "2"}]},
                    {"name": "c2", "$patch": "delete"},
                    {"name": "c3", "image": "i3"}],
                "tolerations": [{"key": "t2"}]}});
        strategic_merge(pods(), &mut pod, &patch);
        assert_eq!(
            pod,
            json!({"metadata": {"annotations": {"b": "2"}, "finalizers": ["f1", "f2"]},
            "spec": {"containers": [
                {"name": "c1", "image": "i1b", "ports": [{"containerPort": 80}, {"containerPort": 443}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "c3", "image": "i3"}],
            "tolerations": [{"key": "t2"}]}})
        );
    }

    #[test]
    fn strategic_directives() {
        let svc = &RESOURCES[1];
        let mut s = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81}], "selector": {"a": "1", "b": "2"}}});
        strategic_merge(
            svc,
            &mut s,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}],
            "selector": {"$patch": "replace", "c": "3"}, "$retainKeys": ["ports", "selector"]}}),
        );
        assert_eq!(
            s,
            json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 81}],
            "selector": {"c": "3"}}})
        );
        let mut m = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge(
            svc,
            &mut m,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(m, json!({"metadata": {"finalizers": ["b"]}}));
        // Network policy ports have no merge key: replace.
        let np = &RESOURCES[6];
        let mut n = json!({"spec": {"ingress": [{"ports": [{"port": 80}]}]}});
        strategic_merge(
            np,
            &mut n,
            &json!({"spec": {"ingress": [{"ports": [{"port": 81}]}]}}),
        );
        assert_eq!(n, json!({"spec": {"ingress": [{"ports": [{"port": 81}]}]}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"metadata": {"annotations": {"x/y": "1"}}, "spec": {"l": [1, 2]}});
        json_patch(
            &mut t,
            &json!([
                {"op": "test", "path": "/metadata/annotations/x~1y", "value": "1"},
                {"op": "replace", "path": "/metadata/annotations/x~1y", "value": "2"},
                {"op": "add", "path": "/spec/l/-", "value": 3},
                {"op": "remove", "path": "/spec/l/0"}
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"annotations": {"x/y": "2"}}, "spec": {"l": [2, 3]}})
        );
        let before = t.clone();
        let r = json_patch(
            &mut t,
            &json!([{"op": "remove", "path": "/spec/l/0"}, {"op": "test", "path": "/spec/l/0", "value": 9}]),
        );
        assert!(matches!(r, Err(JsonPatchError::Failed(_))));
        assert_eq!(t, before);
        assert!(matches!(
            json_patch(&mut t, &json!({"op": "add"})),
            Err(JsonPatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])),
            Err(JsonPatchError::Failed(_))
        ));
    }
}
