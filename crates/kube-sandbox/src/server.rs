//! HTTP/1.1 front end: routing, request parsing, JSON and NDJSON watch responses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::protobuf;
use crate::resources::{self, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Filter, ListParams, Patch, PatchKind, Store, WatchMsg};
use crate::util;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Shared {
    pub store: Store,
    pub audit: crate::audit::Audit,
    /// API groups not served at all (an older API server).
    pub hidden_groups: Vec<String>,
    pub server_address: String,
    pub shutdown: watch::Receiver<bool>,
    /// While true the server is frozen: connections are accepted and kept open, but no
    /// request is answered and no watch event is sent until it turns false again.
    pub paused: watch::Sender<bool>,
    /// While true the server is down, as a stopped apiserver process: the listening socket is
    /// closed (new connections are refused) and every open connection was cut.
    pub offline: watch::Sender<bool>,
}

impl Shared {
    /// Resolves at once while running; while paused, once the pause ends.
    pub async fn until_running(&self) {
        let mut rx = self.paused.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` exists.
        let _ = rx.wait_for(|p| !*p).await;
    }
}

/// Accepts connections until `shutdown` turns true; dropping the JoinSet then aborts them.
/// While `Shared::offline` is set the listener is closed and every connection cut; it is
/// bound again (same address) when the flag clears.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().ok();
    let mut listener = Some(listener);
    let mut offline = shared.offline.subscribe();
    let mut conns = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(l) = listener.as_ref() else {
            let back = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    false
                }
                r = until(&mut offline, false) => r,
            };
            if back {
                listener = rebind(addr).await;
            }
            continue;
        };
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = until(&mut offline, true) => {
                listener = None;
                conns.abort_all();
            }
            accepted = l.accept() => match accepted {
                Ok((stream, _)) => accept(&mut conns, stream, shared.clone()),
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

/// Resolves when the flag is `want` (false if the sender is gone, which `Shared` prevents).
async fn until(flag: &mut watch::Receiver<bool>, want: bool) -> bool {
    flag.wait_for(|v| *v == want).await.is_ok()
}

/// The listener again after an offline period, on the address it had (a loopback port is
/// free again at once; should another process have taken it, retry until it is released).
async fn rebind(addr: Option<std::net::SocketAddr>) -> Option<TcpListener> {
    let addr = addr?;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => {
                tracing::warn!("binding {addr} again failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn accept(conns: &mut JoinSet<()>, stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // As Go's net package (and so the real apiserver) does: without it, watch events written
    // in quick succession wait ~40 ms for the client's delayed ACK (Nagle).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY not set: {e}");
    }
    conns.spawn(async move {
        let svc = service_fn(move |req| handle(shared.clone(), req));
        // No header-read timeout: hyper counts the idle time of a keep-alive connection
        // against it, and closing idle connections under a pooling client (kube-rs, kubectl)
        // makes its next request fail, which the real apiserver never does.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(stream), svc);
        if let Err(e) = conn.await {
            tracing::debug!("connection ended: {e}");
        }
    });
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

fn respond(code: u16, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    respond(code, "application/json", full(bytes))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Parses a query string, tolerating kube-rs's leading `?&` (empty pairs).
fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_body(body: Incoming) -> ApiResult<Bytes> {
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| ApiError::bad_request("timed out reading the request body"))?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to read the request body: {e}"
        ))),
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    tracing::debug!("{method} {}", req.uri());
    shared.until_running().await;
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.audit.authorized(auth) {
        return Ok(error_response(&ApiError::new(
            401,
            "Unauthorized",
            "Unauthorized",
        )));
    }
    let resp = match read_body(req.into_body()).await {
        Err(e) => error_response(&e),
        Ok(body) => {
            let rq = Req {
                method,
                query,
                content_type,
                body,
            };
            route(&shared, &path, &rq).unwrap_or_else(|e| error_response(&e))
        }
    };
    Ok(resp)
}

struct Req {
    method: Method,
    query: HashMap<String, String>,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    fn json_body(&self) -> ApiResult<Value> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body must not be empty"));
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Ok(v)
    }

    fn get_only(&self) -> ApiResult<()> {
        if self.method == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    }
}

fn plain_ok() -> Response<Body> {
    respond(200, "text/plain; charset=utf-8", full("ok"))
}

fn route(shared: &Shared, path: &str, rq: &Req) -> ApiResult<Response<Body>> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["apis", group, ..] = segs.as_slice()
        && shared.hidden_groups.iter().any(|g| g == group)
    {
        return Err(ApiError::unknown_path());
    }
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Ok(plain_ok()),
        ["version"] => {
            rq.get_only()?;
            Ok(json_response(200, &discovery::version()))
        }
        ["api"] => {
            rq.get_only()?;
            Ok(json_response(
                200,
                &discovery::api_versions(&shared.server_address),
            ))
        }
        ["apis"] => {
            rq.get_only()?;
            let mut list = discovery::api_group_list();
            if let Some(groups) = list.get_mut("groups").and_then(|g| g.as_array_mut()) {
                groups.retain(|g| {
                    let name = g.get("name").and_then(|n| n.as_str()).unwrap_or("");
                    !shared.hidden_groups.iter().any(|h| h == name)
                });
            }
            Ok(json_response(200, &list))
        }
        ["apis", group] => {
            rq.get_only()?;
            let g = discovery::api_group(group).ok_or_else(ApiError::unknown_path)?;
            Ok(json_response(200, &g))
        }
        ["openapi", "v3"] => {
            rq.get_only()?;
            Ok(json_response(200, &discovery::openapi_index()))
        }
        ["openapi", "v3", rest @ ..] => {
            rq.get_only()?;
            let doc = discovery::openapi_doc(&rest.join("/")).ok_or_else(ApiError::unknown_path)?;
            Ok(json_response(200, &doc))
        }
        ["api", "v1", rest @ ..] => group_version(shared, "", "v1", rest, rq),
        ["apis", group, version, rest @ ..] => group_version(shared, group, version, rest, rq),
        _ => Err(ApiError::unknown_path()),
    }
}

enum Target<'a> {
    Collection,
    Object(&'a str),
    Status(&'a str),
}

fn group_version(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
    rq: &Req,
) -> ApiResult<Response<Body>> {
    let find = |plural: &str| resources::find(group, version, plural);
    let namespaced = |plural: &str| find(plural).filter(|r| RESOURCES[*r].namespaced);
    let cluster = |plural: &str| find(plural).filter(|r| !RESOURCES[*r].namespaced);
    let with_status = |r: usize| RESOURCES[r].has_status.then_some(r);
    let (res, ns, target) = match rest {
        [] => {
            rq.get_only()?;
            let list =
                discovery::resource_list(group, version).ok_or_else(ApiError::unknown_path)?;
            return Ok(json_response(200, &list));
        }
        [plural] => (find(plural), None, Target::Collection),
        ["namespaces", ns, plural] if namespaced(plural).is_some() => {
            (namespaced(plural), Some(*ns), Target::Collection)
        }
        ["namespaces", ns, plural, name] if namespaced(plural).is_some() => {
            (namespaced(plural), Some(*ns), Target::Object(name))
        }
        ["namespaces", ns, plural, name, "status"] => (
            namespaced(plural).and_then(with_status),
            Some(*ns),
            Target::Status(name),
        ),
        [plural, name] => (cluster(plural), None, Target::Object(name)),
        [plural, name, "status"] => (
            cluster(plural).and_then(with_status),
            None,
            Target::Status(name),
        ),
        _ => (None, None, Target::Collection),
    };
    let res = res.ok_or_else(ApiError::unknown_path)?;
    record_call(shared, res, &target, rq);
    let ns = ns.map(str::to_string);
    match target {
        Target::Collection => collection(shared, res, ns.as_deref(), rq),
        Target::Object(name) => object(shared, res, ns.as_deref(), name, false, rq),
        Target::Status(name) => object(shared, res, ns.as_deref(), name, true, rq),
    }
}

fn record_call(shared: &Shared, res: usize, target: &Target<'_>, rq: &Req) {
    let collection = matches!(target, Target::Collection);
    let Some(verb) = crate::audit::verb(&rq.method, collection, rq.flag("watch")) else {
        return;
    };
    let def = &RESOURCES[res];
    let resource = match target {
        Target::Status(_) => format!("{}/status", def.plural),
        _ => def.plural.to_string(),
    };
    shared.audit.record(crate::audit::ApiCall {
        verb: verb.to_string(),
        group: def.group.to_string(),
        resource,
    });
}

fn filter_from(res: usize, ns: Option<&str>, rq: &Req) -> ApiResult<Filter> {
    let labels = LabelSelector::parse(rq.q("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
    let fields = FieldSelector::parse(rq.q("fieldSelector").unwrap_or(""), &RESOURCES[res])
        .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
    Ok(Filter {
        res,
        namespace: ns.map(str::to_string),
        labels,
        fields,
    })
}

fn collection(
    shared: &Shared,
    res: usize,
    ns: Option<&str>,
    rq: &Req,
) -> ApiResult<Response<Body>> {
    let def = &RESOURCES[res];
    match rq.method {
        Method::GET => {
            let filter = filter_from(res, ns, rq)?;
            let limit = match rq.q("limit").filter(|l| !l.is_empty()) {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                ),
                None => None,
            };
            if rq.flag("watch") {
                if rq.q("continue").is_some_and(|c| !c.is_empty()) {
                    return Err(ApiError::bad_request(
                        "continue is not supported for watch requests",
                    ));
                }
                return watch(shared, filter, rq);
            }
            let params = ListParams {
                limit,
                continue_token: rq.q("continue"),
                resource_version: rq.q("resourceVersion"),
                resource_version_match: rq.q("resourceVersionMatch"),
            };
            let list = shared.store.list(&filter, &params)?;
            Ok(json_response(
                200,
                &with_new_api_events(shared, &filter, list)?,
            ))
        }
        Method::POST => {
            if def.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            let body = write_body(rq)?;
            let obj = shared.store.create(res, ns, body, rq.dry_run())?;
            Ok(json_response(201, &obj))
        }
        Method::DELETE => {
            let filter = filter_from(res, ns, rq)?;
            Ok(json_response(
                200,
                &shared.store.delete_collection(&filter, rq.dry_run())?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A core/v1 Event list also holds the events.k8s.io/v1 Events (one store in the real
/// apiserver), converted and matched against the same selectors.
fn with_new_api_events(shared: &Shared, filter: &Filter, list: Value) -> ApiResult<Value> {
    let core = resources::find("", "v1", "events");
    let Some(new) = resources::find("events.k8s.io", "v1", "events") else {
        return Ok(list);
    };
    if core != Some(filter.res) {
        return Ok(list);
    }
    let all = Filter {
        res: new,
        namespace: filter.namespace.clone(),
        labels: filter.labels.clone(),
        fields: FieldSelector::default(),
    };
    let params = ListParams {
        limit: None,
        continue_token: None,
        resource_version: None,
        resource_version_match: None,
    };
    let extra: Vec<Value> = shared.store.list(&all, &params)?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(crate::event_view::to_core)
        .filter(|e| filter.matches(e))
        .collect();
    Ok(crate::event_view::extend_list(list, extra))
}

/// The object in a POST/PUT body: JSON, or Kubernetes protobuf (sent by kubectl's generators
/// such as `kubectl create namespace`) for the kinds `protobuf` knows, decoded to the same JSON.
fn write_body(rq: &Req) -> ApiResult<Value> {
    let ct = rq.content_type.split(';').next().unwrap_or("").trim();
    if ct == protobuf::MEDIA_TYPE {
        protobuf::decode_object(&rq.body)
    } else if ct.is_empty()
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct.contains("yaml")
    {
        rq.json_body()
    } else {
        Err(ApiError::unsupported_media_type(ct))
    }
}

fn object(
    shared: &Shared,
    res: usize,
    ns: Option<&str>,
    name: &str,
    status: bool,
    rq: &Req,
) -> ApiResult<Response<Body>> {
    let store = &shared.store;
    match rq.method {
        Method::GET => Ok(json_response(200, &store.get(res, ns, name)?)),
        Method::PUT => {
            let body = write_body(rq)?;
            let (obj, created) = store.update(res, ns, name, body, status, rq.dry_run())?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        Method::PATCH => {
            let ct = rq.content_type.split(';').next().unwrap_or("").trim();
            let kind = match ct {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            if rq.body.is_empty() {
                return Err(ApiError::bad_request("the patch body must not be empty"));
            }
            let patch: Value = serde_json::from_slice(&rq.body).map_err(|e| {
                let hint = if kind == PatchKind::Apply {
                    " (kube-sandbox accepts apply patches in JSON form only)"
                } else {
                    ""
                };
                ApiError::bad_request(format!("error decoding patch: {e}{hint}"))
            })?;
            let (obj, created) = store.patch(
                res,
                ns,
                name,
                Patch {
                    kind,
                    body: &patch,
                    status,
                    dry_run: rq.dry_run(),
                },
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &obj))
        }
        Method::DELETE if !status => {
            let opts = if rq.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&rq.body).map_err(|e| {
                    ApiError::bad_request(format!("error decoding DeleteOptions: {e}"))
                })?
            };
            let dry = rq.dry_run()
                || opts
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| !d.is_empty());
            Ok(json_response(
                200,
                &store.delete(res, ns, name, &opts, dry)?,
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&WireEvent { kind, object }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn msg_line(res: usize, msg: &WatchMsg) -> Bytes {
    match msg {
        WatchMsg::Event(kind, obj) => event_line(kind, obj),
        WatchMsg::Bookmark { rv, initial_end } => {
            let def = &RESOURCES[res];
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if *initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line(
                "BOOKMARK",
                &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
            )
        }
    }
}

fn watch(shared: &Shared, filter: Filter, rq: &Req) -> ApiResult<Response<Body>> {
    let res = filter.res;
    let from = match rq
        .q("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}")))?,
        ),
        None => None,
    };
    let timeout = match rq.q("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        // The apiserver picks a random 30-60 minute lifetime when the client sets none.
        None => Duration::from_secs(1800 + util::random_u64() % 1800),
    };
    let (body_tx, mut body_rx) = mpsc::channel::<Bytes>(16);
    let stream = futures::stream::poll_fn(move |cx| {
        body_rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let response = respond(
        200,
        "application/json",
        StreamBody::new(stream).boxed_unsync(),
    );
    let started = shared.store.watch(
        filter,
        from,
        rq.flag("sendInitialEvents"),
        rq.flag("allowWatchBookmarks"),
    );
    let mut shutdown = shared.shutdown.clone();
    let mut paused = shared.paused.subscribe();
    tokio::spawn(async move {
        let mut start = match started {
            Ok(s) => s,
            Err(e) => {
                // Expired RVs are a 200 with one ERROR event: kube-runtime relists on that,
                // but retries the same RV forever on an HTTP 410.
                let _ = body_tx.send(event_line("ERROR", &e.to_status())).await;
                return;
            }
        };
        for m in &start.initial {
            if body_tx.send(msg_line(res, m)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.changed() => break,
                _ = body_tx.closed() => break,
                msg = start.rx.recv() => match msg {
                    Some(m) => {
                        // A frozen server sends nothing; the event goes out on resume.
                        let _ = paused.wait_for(|p| !*p).await;
                        if body_tx.send(msg_line(res, &m)).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        if start.overflow.load(Ordering::SeqCst) {
                            let e = ApiError::expired("watch dropped: the client did not keep up; relist");
                            let _ = body_tx.send(event_line("ERROR", &e.to_status())).await;
                        }
                        break;
                    }
                }
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query("&limit=500&&labelSelector=a%3Db%2Cc+in+%28x%29&watch");
        assert_eq!(q["limit"], "500");
        assert_eq!(q["labelSelector"], "a=b,c in (x)");
        assert_eq!(q["watch"], "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
