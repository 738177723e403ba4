//! The real API server keeps one store behind both Event APIs: an events.k8s.io/v1 Event is
//! also a core/v1 Event, which is what `kubectl describe` and `kubectl get events` list. The
//! sandbox stores the two kinds separately, so a core/v1 list also returns the events.k8s.io
//! ones, converted field by field as the apiserver does.

use serde_json::{Value, json};

/// An events.k8s.io/v1 Event as core/v1 shows it.
pub fn to_core(ev: &Value) -> Value {
    let get = |k: &str| ev.get(k).cloned().unwrap_or(Value::Null);
    let series = get("series");
    let event_time = get("eventTime");
    let count = series
        .get("count")
        .cloned()
        .or_else(|| ev.get("deprecatedCount").cloned())
        .unwrap_or(json!(1));
    let first = ev
        .get("deprecatedFirstTimestamp")
        .cloned()
        .unwrap_or_else(|| event_time.clone());
    let last = series
        .get("lastObservedTime")
        .cloned()
        .or_else(|| ev.get("deprecatedLastTimestamp").cloned())
        .unwrap_or_else(|| event_time.clone());
    let source = ev
        .get("deprecatedSource")
        .cloned()
        .unwrap_or_else(|| json!({"component": get("reportingController")}));
    let mut out = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": get("metadata"),
        "involvedObject": get("regarding"),
        "related": get("related"),
        "reason": get("reason"),
        "message": get("note"),
        "type": get("type"),
        "action": get("action"),
        "eventTime": event_time,
        "series": series,
        "count": count,
        "firstTimestamp": first,
        "lastTimestamp": last,
        "source": source,
        "reportingComponent": get("reportingController"),
        "reportingInstance": get("reportingInstance"),
    });
    if let Some(o) = out.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    out
}

/// Append `extra` (already converted and filtered) to a core/v1 list, unless the list is one
/// page of several: pages are cut from the core store alone.
pub fn extend_list(mut list: Value, extra: Vec<Value>) -> Value {
    let paged = list
        .pointer("/metadata/continue")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if !paged && let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
        items.extend(extra);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_api_events_convert_to_core() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "n1.abc", "namespace": "default", "resourceVersion": "7"},
            "regarding": {"kind": "Node", "name": "n1", "apiVersion": "v1"},
            "reason": "SubnetExhausted", "note": "no free subnet", "type": "Warning",
            "action": "AllocateSubnet", "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingController": "ovnkube-master", "reportingInstance": "host1",
        });
        let c = to_core(&ev);
        assert_eq!(c["apiVersion"], "v1");
        assert_eq!(c["involvedObject"]["name"], "n1");
        assert_eq!(c["message"], "no free subnet");
        assert_eq!(c["count"], 3);
        assert_eq!(c["firstTimestamp"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(c["lastTimestamp"], "2026-01-01T00:01:00.000000Z");
        assert_eq!(c["source"]["component"], "ovnkube-master");
        assert_eq!(c["reportingComponent"], "ovnkube-master");
        assert_eq!(c["metadata"]["resourceVersion"], "7");
        assert!(c.get("related").is_none());
        // Without a series: one occurrence at the event time.
        let mut once = ev.clone();
        once.as_object_mut().unwrap().remove("series");
        let c = to_core(&once);
        assert_eq!(c["count"], 1);
        assert_eq!(c["lastTimestamp"], "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn only_complete_lists_are_extended() {
        let whole = json!({"metadata": {"resourceVersion": "5"}, "items": [1]});
        assert_eq!(extend_list(whole, vec![json!(2)])["items"], json!([1, 2]));
        let page = json!({"metadata": {"continue": "tok"}, "items": [1]});
        assert_eq!(extend_list(page, vec![json!(2)])["items"], json!([1]));
    }
}
