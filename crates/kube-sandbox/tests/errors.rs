//! Error paths over raw HTTP: every failure is a `Status` with the right code, never a hang.

mod common;

use std::time::Duration;

use common::{raw_http, req};
use kube_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

async fn sandbox() -> (Sandbox, String) {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let addr = sb.addr().to_string();
    (sb, addr)
}

async fn call(addr: &str, method: &str, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let (code, text) = raw_http(addr, &req(method, path, ct, body)).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

fn assert_status(got: &(u16, Value), code: u16, reason: &str) {
    let (c, v) = got;
    assert_eq!(*c, code, "{v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["code"], code);
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const JSON: &str = "application/json";

#[tokio::test]
async fn error_statuses() {
    let (_sb, a) = sandbox().await;
    let a = a.as_str();
    // Malformed bodies.
    assert_status(
        &call(a, "POST", PODS, JSON, "{not json").await,
        400,
        "BadRequest",
    );
    assert_status(&call(a, "POST", PODS, JSON, "").await, 400, "BadRequest");
    assert_status(
        &call(a, "POST", PODS, JSON, "[1,2]").await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(a, "POST", PODS, JSON, r#"{"metadata":"x"}"#).await,
        400,
        "BadRequest",
    );
    // Missing or invalid names, wrong kind.
    assert_status(
        &call(a, "POST", PODS, JSON, r#"{"metadata":{}}"#).await,
        422,
        "Invalid",
    );
    assert_status(
        &call(a, "POST", PODS, JSON, r#"{"metadata":{"name":"Bad_Name"}}"#).await,
        422,
        "Invalid",
    );
    let (c, v) = call(
        a,
        "POST",
        PODS,
        JSON,
        r#"{"kind":"Service","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_status(&(c, v), 422, "Invalid");
    assert_status(
        &call(
            a,
            "POST",
            "/api/v1/namespaces",
            JSON,
            r#"{"metadata":{"name":"a.b"}}"#,
        )
        .await,
        422,
        "Invalid",
    );
    // Namespace mismatch and missing namespace.
    assert_status(
        &call(
            a,
            "POST",
            PODS,
            JSON,
            r#"{"metadata":{"name":"x","namespace":"other"}}"#,
        )
        .await,
        400,
        "BadRequest",
    );
    let nf = call(
        a,
        "POST",
        "/api/v1/namespaces/nope/pods",
        JSON,
        r#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_status(&nf, 404, "NotFound");
    assert_eq!(nf.1["details"]["kind"], "namespaces");
    assert_eq!(nf.1["details"]["name"], "nope");
    // Create / conflict / not found.
    let created = call(
        a,
        "POST",
        PODS,
        JSON,
        r#"{"metadata":{"name":"p","labels":{"a":"b"}}}"#,
    )
    .await;
    assert_eq!(created.0, 201);
    assert_eq!(created.1["kind"], "Pod");
    assert_status(
        &call(a, "POST", PODS, JSON, r#"{"metadata":{"name":"p"}}"#).await,
        409,
        "AlreadyExists",
    );
    let stale = call(
        a,
        "PUT",
        &format!("{PODS}/p"),
        JSON,
        r#"{"metadata":{"name":"p","resourceVersion":"1"}}"#,
    )
    .await;
    assert_status(&stale, 409, "Conflict");
    let nf = call(a, "GET", &format!("{PODS}/missing"), JSON, "").await;
    assert_status(&nf, 404, "NotFound");
    assert_eq!(nf.1["details"]["name"], "missing");
    assert_eq!(nf.1["details"]["kind"], "pods");
    assert_status(
        &call(a, "DELETE", &format!("{PODS}/missing"), JSON, "").await,
        404,
        "NotFound",
    );
    assert_status(
        &call(a, "DELETE", &format!("{PODS}/p"), JSON, "{bad").await,
        400,
        "BadRequest",
    );
    let np = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/none";
    let nf = call(a, "GET", np, JSON, "").await;
    assert_status(&nf, 404, "NotFound");
    assert_eq!(nf.1["details"]["group"], "networking.k8s.io");
    // Unknown paths, resources and groups.
    for p in [
        "/api/v1/widgets",
        "/apis/example.com/v1/things",
        "/nope",
        "/api/v2/pods",
        "/api/v1/pods/x/y/z",
        "/api/v1/namespaces/default/services/s/scale",
    ] {
        assert_status(&call(a, "GET", p, JSON, "").await, 404, "NotFound");
    }
    // Bad selectors and parameters.
    for q in [
        "labelSelector=a%20in%20(",
        "labelSelector=!",
        "labelSelector=a%3D%3D%3D",
        "fieldSelector=spec.bogus%3Dx",
        "fieldSelector=garbage",
        "limit=x",
        "continue=zz",
        "resourceVersion=abc&resourceVersionMatch=Exact",
    ] {
        assert_status(
            &call(a, "GET", &format!("{PODS}?{q}"), JSON, "").await,
            400,
            "BadRequest",
        );
        assert_status(
            &call(a, "GET", &format!("{PODS}?watch=1&{q}"), JSON, "").await,
            400,
            "BadRequest",
        );
    }
    // Methods and media types.
    assert_status(
        &call(
            a,
            "POST",
            "/api/v1/pods",
            JSON,
            r#"{"metadata":{"name":"x"}}"#,
        )
        .await,
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &call(a, "POST", &format!("{PODS}/p"), JSON, "{}").await,
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &call(a, "PATCH", &format!("{PODS}/p"), "text/plain", "{}").await,
        415,
        "UnsupportedMediaType",
    );
    // Protobuf: an envelope without a kind is a 400; kinds the sandbox cannot decode get a 415
    // naming the type (runtime.Unknown { typeMeta { apiVersion: "v1", kind: "Pod" } }).
    assert_status(
        &call(
            a,
            "POST",
            PODS,
            "application/vnd.kubernetes.protobuf",
            "k8s\0",
        )
        .await,
        400,
        "BadRequest",
    );
    let pod_pb = call(
        a,
        "POST",
        PODS,
        "application/vnd.kubernetes.protobuf",
        "k8s\0\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00",
    )
    .await;
    assert_status(&pod_pb, 415, "UnsupportedMediaType");
    assert!(
        pod_pb.1["message"].as_str().unwrap().contains("\"Pod\""),
        "{}",
        pod_pb.1
    );
    assert_status(
        &call(
            a,
            "POST",
            "/api/v1/namespaces",
            "application/vnd.kubernetes.protobuf",
            "k8s\0\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x05\x0a\x03\x0a\x01",
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            a,
            "PATCH",
            &format!("{PODS}/p"),
            "application/merge-patch+json",
            "{x",
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            a,
            "PATCH",
            &format!("{PODS}/p"),
            "application/json-patch+json",
            r#"{"op":"add"}"#,
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(
            a,
            "PATCH",
            &format!("{PODS}/p"),
            "application/json-patch+json",
            r#"[{"op":"test","path":"/metadata/name","value":"q"}]"#,
        )
        .await,
        422,
        "Invalid",
    );
    assert_status(
        &call(
            a,
            "PATCH",
            &format!("{PODS}/p"),
            "application/merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1"}}"#,
        )
        .await,
        409,
        "Conflict",
    );
    assert_status(
        &call(
            a,
            "PATCH",
            &format!("{PODS}/missing"),
            "application/merge-patch+json",
            "{}",
        )
        .await,
        404,
        "NotFound",
    );
    assert_status(
        &call(a, "DELETE", "/api/v1/namespaces/default", JSON, "").await,
        403,
        "Forbidden",
    );
}

#[tokio::test]
async fn garbage_requests_do_not_hang() {
    let (_sb, a) = sandbox().await;
    // Not HTTP at all, a truncated request line and a huge header: the server answers or closes.
    for raw in [
        &b"\x16\x03\x01garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let (code, _) = raw_http(&a, raw).await;
        assert!(code == 0 || code == 400 || code == 200, "{code}");
    }
    // A body shorter than its Content-Length: the client half-closes, the server must give up.
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&a).await.unwrap();
        s.write_all(b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"").await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
    })
    .await;
    assert!(r.is_ok(), "server hung on a truncated body");
}

#[tokio::test]
async fn expired_watch_is_200_with_error_event() {
    let (sb, a) = sandbox().await;
    let a = a.as_str();
    call(a, "POST", PODS, JSON, r#"{"metadata":{"name":"p1"}}"#).await;
    let rv = sb.resource_version();
    call(a, "POST", PODS, JSON, r#"{"metadata":{"name":"p2"}}"#).await;
    // Replay from rv sees exactly p2's ADDED, then the watch ends at timeoutSeconds.
    let (code, body) = raw_http(
        a,
        &req(
            "GET",
            &format!("{PODS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
            JSON,
            "",
        ),
    )
    .await;
    assert_eq!(code, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{body}");
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["metadata"]["name"], "p2");
    sb.compact();
    call(a, "POST", PODS, JSON, r#"{"metadata":{"name":"p3"}}"#).await;
    let (code, body) = raw_http(
        a,
        &req(
            "GET",
            &format!("{PODS}?watch=1&resourceVersion={rv}&timeoutSeconds=5"),
            JSON,
            "",
        ),
    )
    .await;
    assert_eq!(code, 200);
    let ev: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    // Streaming initial events end with the annotated bookmark.
    let (_, body) = raw_http(
        a,
        &req("GET", &format!("{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"), JSON, ""),
    )
    .await;
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{body}");
    assert!(lines[..3].iter().all(|l| l["type"] == "ADDED"));
    assert_eq!(lines[3]["type"], "BOOKMARK");
    assert_eq!(
        lines[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Discovery and health.
    for p in ["/healthz", "/readyz", "/livez"] {
        assert_eq!(
            raw_http(a, &req("GET", p, JSON, "")).await,
            (200, "ok".to_string())
        );
    }
    let (_, v) = call(a, "GET", "/version", JSON, "").await;
    assert!(v["gitVersion"].as_str().unwrap().starts_with("v1."));
    let (_, v) = call(a, "GET", "/api/v1", JSON, "").await;
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"pods/status") && names.contains(&"nodes/status"));
    let (_, v) = call(a, "GET", "/apis", JSON, "").await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 4);
    let (c, _) = call(a, "GET", "/openapi/v3/apis/networking.k8s.io/v1", JSON, "").await;
    assert_eq!(c, 200);
    assert_status(
        &call(a, "GET", "/openapi/v2", JSON, "").await,
        404,
        "NotFound",
    );
}
