//! The object store: objects, the bounded event log and the live watchers, all behind one mutex
//! so that a watch's replay and its subscription happen atomically.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::error::{ApiError, ApiResult};
use crate::mirror;
use crate::patch::{self, JsonPatchError};
use crate::resources::{
    ENDPOINTS, ENDPOINTSLICES, NAMESPACES, NameRule, RESOURCES, ResourceDef, SERVICES,
};
use crate::selector::{FieldSelector, LabelSelector};
use crate::util::{self, Cidr};

/// (resource id, namespace or "" for cluster-scoped, name).
pub type Key = (usize, String, String);

/// Events buffered per watcher before it counts as a slow consumer and is dropped.
const WATCH_BUFFER: usize = 4096;

/// Namespaces the real apiserver refuses to delete.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

struct LogEntry {
    rv: u64,
    res: usize,
    etype: EventType,
    obj: Arc<Value>,
    /// State before the change (MODIFIED and DELETED); used for selector transitions and rollback.
    prev: Option<Arc<Value>>,
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    Event(&'static str, Arc<Value>),
    Bookmark { rv: u64, initial_end: bool },
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
pub struct Filter {
    pub res: usize,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta_str(obj, "namespace") != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

struct Watcher {
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::Sender<WatchMsg>,
    overflow: Arc<AtomicBool>,
}

/// A registered watch: replayed/synthetic events first, then the live channel.
pub struct WatchStart {
    pub initial: Vec<WatchMsg>,
    pub rx: mpsc::Receiver<WatchMsg>,
    /// Set when the store dropped this watcher for not keeping up.
    pub overflow: Arc<AtomicBool>,
}

/// What a PATCH request asks for, besides the object it names.
#[derive(Debug, Clone, Copy)]
pub struct Patch<'a> {
    pub kind: PatchKind,
    pub body: &'a Value,
    /// The status subresource.
    pub status: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

/// Parameters of a list call.
pub struct ListParams<'a> {
    pub limit: Option<usize>,
    pub continue_token: Option<&'a str>,
    pub resource_version: Option<&'a str>,
    pub resource_version_match: Option<&'a str>,
}

pub struct Store {
    inner: Mutex<Inner>,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    log: VecDeque<LogEntry>,
    /// Every event with rv > floor_rv is still in `log`.
    floor_rv: u64,
    history_limit: usize,
    watchers: Vec<Watcher>,
    cidr: Cidr,
    next_ip: u128,
    next_port: u16,
    /// Mirror core/v1 Endpoints into EndpointSlices (see `mirror`).
    mirror_endpoints: bool,
}

// ---------------------------------------------------------------------------------------------
// Small JSON helpers.

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.get_mut("metadata")?.as_object_mut()
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(field.into(), v);
    }
}

fn set_rv(obj: &mut Value, rv: u64) {
    set_meta(obj, "resourceVersion", Value::String(rv.to_string()));
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Vec<(&String, &Value)> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion")
                })
                .collect()
        })
        .unwrap_or_default()
}

fn key_of(res: usize, obj: &Value) -> Key {
    (
        res,
        meta_str(obj, "namespace").unwrap_or("").to_string(),
        meta_str(obj, "name").unwrap_or("").to_string(),
    )
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

/// Checks kind/apiVersion and namespace of an incoming body and fills them in.
fn normalize(def: &ResourceDef, ns: Option<&str>, obj: &mut Value) -> ApiResult<()> {
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    let Value::Object(m) = obj else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match m.get("kind") {
        None => {}
        Some(Value::String(k)) if k.is_empty() || k == def.kind => {}
        Some(other) => {
            return Err(ApiError::invalid(
                def.kind,
                &name,
                "kind",
                format!(
                    "Invalid value: {other}: must be {} for this resource path",
                    def.kind
                ),
            ));
        }
    }
    let api_version = def.api_version();
    match m.get("apiVersion") {
        None => {}
        Some(Value::String(v)) if v.is_empty() || *v == api_version => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version})",
                other.as_str().unwrap_or("?")
            )));
        }
    }
    m.insert("kind".into(), Value::String(def.kind.into()));
    m.insert("apiVersion".into(), Value::String(api_version));
    let meta = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(ApiError::bad_request("metadata must be a JSON object"));
    };
    if def.namespaced {
        let path_ns = ns.unwrap_or("");
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), Value::String(path_ns.into()));
            }
            Some(body_ns) if body_ns == path_ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn check_name(def: &ResourceDef, name: &str) -> ApiResult<()> {
    let r = match def.name_rule() {
        NameRule::Subdomain => util::check_subdomain(name),
        NameRule::Label1123 => util::check_label_1123(name),
        NameRule::Label1035 => util::check_label_1035(name),
    };
    r.map_err(|msg| ApiError::invalid(def.kind, name, "metadata.name", msg))
}

/// The event a watcher with `filter` sees for one logged change, like the apiserver's watch cache:
/// an object that starts matching is ADDED, one that stops matching is DELETED.
fn translate(
    filter: &Filter,
    etype: EventType,
    obj: &Arc<Value>,
    prev: Option<&Arc<Value>>,
    rv: u64,
) -> Option<WatchMsg> {
    match etype {
        EventType::Added => filter
            .matches(obj)
            .then(|| WatchMsg::Event("ADDED", obj.clone())),
        EventType::Deleted => filter
            .matches(obj)
            .then(|| WatchMsg::Event("DELETED", obj.clone())),
        EventType::Modified => {
            let now = filter.matches(obj);
            let before = prev.is_some_and(|p| filter.matches(p));
            match (before, now) {
                (true, true) => Some(WatchMsg::Event("MODIFIED", obj.clone())),
                (false, true) => Some(WatchMsg::Event("ADDED", obj.clone())),
                (true, false) => {
                    let mut gone = prev.map(|p| (**p).clone()).unwrap_or_default();
                    set_rv(&mut gone, rv);
                    Some(WatchMsg::Event("DELETED", Arc::new(gone)))
                }
                (false, false) => None,
            }
        }
    }
}

fn continue_token(rv: u64, ns: &str, name: &str) -> String {
    util::hex_encode(&format!("{rv}|{ns}|{name}"))
}

fn parse_continue(tok: &str) -> ApiResult<(u64, String, String)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let s = util::hex_decode(tok).ok_or_else(bad)?;
    let mut parts = s.splitn(3, '|');
    let rv = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    let ns = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((rv, ns, name))
}

// ---------------------------------------------------------------------------------------------

impl Store {
    pub fn new(history_limit: usize, cidr: Cidr, namespaces: &[String]) -> Store {
        let mut inner = Inner {
            rv: 1,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            floor_rv: 1,
            history_limit,
            watchers: Vec::new(),
            cidr,
            next_ip: 1,
            next_port: 30000,
            mirror_endpoints: true,
        };
        for ns in namespaces {
            let obj = json!({"metadata": {"name": ns}});
            // Failure here only means an invalid configured name; skip it like kubectl would fail.
            if let Err(e) = inner.create(NAMESPACES, None, obj, false) {
                tracing::warn!("initial namespace {ns:?} not created: {}", e.message);
            }
        }
        Store {
            inner: Mutex::new(inner),
        }
    }

    /// Whether Endpoints written by clients are mirrored into EndpointSlices (default on).
    pub fn set_mirror_endpoints(&self, on: bool) {
        self.lock().mirror_endpoints = on;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (writes are single inserts).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Drops all retained history: watches from any older resourceVersion now get 410 Expired.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.log.clear();
        g.floor_rv = g.rv;
    }

    /// Sends a progress bookmark to every watcher that asked for bookmarks.
    pub fn bookmark_tick(&self) {
        let g = self.lock();
        for w in g.watchers.iter().filter(|w| w.bookmarks) {
            // A full channel just skips this bookmark; the next event or tick carries progress.
            let _ = w.tx.try_send(WatchMsg::Bookmark {
                rv: g.rv,
                initial_end: false,
            });
        }
    }

    /// Closes all live watches (server shutdown).
    pub fn close_watchers(&self) {
        self.lock().watchers.clear();
    }

    pub fn get(&self, res: usize, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let g = self.lock();
        let key = (res, ns.unwrap_or("").to_string(), name.to_string());
        g.objects
            .get(&key)
            .map(|o| (**o).clone())
            .ok_or_else(|| ApiError::not_found(&RESOURCES[res], name))
    }

    pub fn create(
        &self,
        res: usize,
        ns: Option<&str>,
        obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let mut g = self.lock();
        let out = g.create(res, ns, obj, dry_run)?;
        g.after_write(res, &out, dry_run);
        Ok(out)
    }

    /// PUT; returns the object and whether it was created.
    pub fn update(
        &self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        let mut g = self.lock();
        let out = g.update(res, ns, name, body, status, dry_run)?;
        g.after_write(res, &out.0, dry_run);
        Ok(out)
    }

    /// PATCH; returns the object and whether it was created (server-side apply only).
    pub fn patch(
        &self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        p: Patch<'_>,
    ) -> ApiResult<(Value, bool)> {
        let dry_run = p.dry_run;
        let mut g = self.lock();
        let out = g.patch(res, ns, name, p)?;
        g.after_write(res, &out.0, dry_run);
        Ok(out)
    }

    pub fn delete(
        &self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let mut g = self.lock();
        let out = g.delete(res, ns, name, opts, dry_run)?;
        g.after_write(res, &out, dry_run);
        Ok(out)
    }

    pub fn delete_collection(&self, filter: &Filter, dry_run: bool) -> ApiResult<Value> {
        let mut g = self.lock();
        let keys: Vec<Key> = g
            .range(filter.res)
            .filter(|(_, o)| filter.matches(o))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for (res, ns, name) in keys {
            let ns = (!ns.is_empty()).then_some(ns);
            let gone = g.delete(res, ns.as_deref(), &name, &Value::Null, dry_run)?;
            g.after_write(res, &gone, dry_run);
            items.push(gone);
        }
        let def = &RESOURCES[filter.res];
        Ok(json!({
            "kind": def.list_kind(),
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": g.rv.to_string()},
            "items": items,
        }))
    }

    pub fn list(&self, filter: &Filter, p: &ListParams<'_>) -> ApiResult<Value> {
        self.lock().list(filter, p)
    }

    /// Registers a watch. `from` is None for "current state as synthetic ADDED" (rv absent or 0).
    pub fn watch(
        &self,
        filter: Filter,
        from: Option<u64>,
        send_initial_events: bool,
        bookmarks: bool,
    ) -> ApiResult<WatchStart> {
        let mut g = self.lock();
        let mut initial = Vec::new();
        if send_initial_events || from.is_none() {
            for (_, obj) in g.range(filter.res) {
                if filter.matches(obj) {
                    initial.push(WatchMsg::Event("ADDED", obj.clone()));
                }
            }
            if send_initial_events {
                initial.push(WatchMsg::Bookmark {
                    rv: g.rv,
                    initial_end: true,
                });
            }
        } else if let Some(from) = from {
            if from < g.floor_rv {
                return Err(ApiError::expired(format!(
                    "too old resource version: {from} ({})",
                    g.floor_rv
                )));
            }
            for e in g.log.iter().filter(|e| e.rv > from && e.res == filter.res) {
                if let Some(m) = translate(&filter, e.etype, &e.obj, e.prev.as_ref(), e.rv) {
                    initial.push(m);
                }
            }
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let overflow = Arc::new(AtomicBool::new(false));
        g.watchers.push(Watcher {
            filter,
            bookmarks,
            tx,
            overflow: overflow.clone(),
        });
        Ok(WatchStart {
            initial,
            rx,
            overflow,
        })
    }
}

impl Inner {
    fn range(&self, res: usize) -> impl Iterator<Item = (&Key, &Arc<Value>)> {
        self.objects
            .range((res, String::new(), String::new())..(res + 1, String::new(), String::new()))
    }

    /// Appends to the event log and fans the change out to matching watchers.
    fn record(&mut self, res: usize, etype: EventType, obj: Arc<Value>, prev: Option<Arc<Value>>) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            if w.filter.res != res {
                return !w.tx.is_closed();
            }
            let Some(msg) = translate(&w.filter, etype, &obj, prev.as_ref(), rv) else {
                return !w.tx.is_closed();
            };
            match w.tx.try_send(msg) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    // Slow consumer: drop it rather than block writers; it ends with 410.
                    w.overflow.store(true, Ordering::SeqCst);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        self.log.push_back(LogEntry {
            rv,
            res,
            etype,
            obj,
            prev,
        });
        while self.log.len() > self.history_limit {
            match self.log.pop_front() {
                Some(e) => self.floor_rv = e.rv,
                None => break,
            }
        }
        if self.history_limit == 0 {
            self.floor_rv = self.rv;
        }
    }

    fn put(
        &mut self,
        key: Key,
        mut obj: Value,
        etype: EventType,
        prev: Option<Arc<Value>>,
    ) -> Value {
        self.rv += 1;
        set_rv(&mut obj, self.rv);
        let arc = Arc::new(obj.clone());
        self.objects.insert(key.clone(), arc.clone());
        self.record(key.0, etype, arc, prev);
        obj
    }

    /// Removes an object now (cascading for namespaces); returns it with the deletion RV.
    fn remove_now(&mut self, key: &Key) -> Option<Value> {
        if key.0 == NAMESPACES {
            let contents: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| RESOURCES[k.0].namespaced && k.1 == key.2)
                .cloned()
                .collect();
            for k in contents {
                self.remove_now(&k);
            }
        }
        let old = self.objects.remove(key)?;
        self.rv += 1;
        let mut gone = (*old).clone();
        set_rv(&mut gone, self.rv);
        self.record(key.0, EventType::Deleted, Arc::new(gone.clone()), Some(old));
        Some(gone)
    }

    /// Follow-up writes a real cluster's controllers would make: today only EndpointSlice
    /// mirroring of Endpoints.
    fn after_write(&mut self, res: usize, obj: &Value, dry_run: bool) {
        if dry_run || !self.mirror_endpoints || res != ENDPOINTS {
            return;
        }
        let ns = meta_str(obj, "namespace").unwrap_or("").to_string();
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        self.mirror(&ns, &name);
    }

    /// Bring the mirrored slices of Endpoints `ns/name` in line with it (or remove them).
    fn mirror(&mut self, ns: &str, name: &str) {
        let want = self
            .objects
            .get(&(ENDPOINTS, ns.to_string(), name.to_string()))
            .map(|e| mirror::slices_for(e))
            .unwrap_or_default();
        let have: Vec<String> = self
            .range(ENDPOINTSLICES)
            .filter(|(k, o)| k.1 == ns && mirror::is_mirror_of(o, name))
            .map(|(k, _)| k.2.clone())
            .collect();
        let mut result = Ok(());
        for (sname, body) in &want {
            let key = (ENDPOINTSLICES, ns.to_string(), sname.clone());
            let r = if self.objects.contains_key(&key) {
                self.update(ENDPOINTSLICES, Some(ns), sname, body.clone(), false, false)
                    .map(|_| ())
            } else {
                self.create(ENDPOINTSLICES, Some(ns), body.clone(), false)
                    .map(|_| ())
            };
            result = result.and(r);
        }
        for sname in have.iter().filter(|h| !want.iter().any(|(w, _)| w == *h)) {
            let r = self
                .delete(ENDPOINTSLICES, Some(ns), sname, &Value::Null, false)
                .map(|_| ());
            result = result.and(r);
        }
        if let Err(e) = result {
            tracing::warn!(
                "mirroring endpoints {ns}/{name} into EndpointSlices: {}",
                e.message
            );
        }
    }

    fn namespace_usable(&self, ns: &str) -> ApiResult<()> {
        let key = (NAMESPACES, String::new(), ns.to_string());
        match self.objects.get(&key) {
            None => Err(ApiError::not_found(&RESOURCES[NAMESPACES], ns)),
            Some(o) if meta_str(o, "deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    fn create(
        &mut self,
        res: usize,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let def = &RESOURCES[res];
        normalize(def, ns, &mut obj)?;
        let mut name = meta_str(&obj, "name").unwrap_or("").to_string();
        if name.is_empty() {
            let Some(prefix) = meta_str(&obj, "generateName").map(str::to_string) else {
                return Err(ApiError::invalid(
                    def.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            };
            // Retry on the (unlikely) clash, as the apiserver's generator effectively does.
            for _ in 0..16 {
                name = format!("{prefix}{}", util::name_suffix());
                let k = (res, ns.unwrap_or("").to_string(), name.clone());
                if !self.objects.contains_key(&k) {
                    break;
                }
            }
            set_meta(&mut obj, "name", Value::String(name.clone()));
        }
        check_name(def, &name)?;
        if def.namespaced {
            self.namespace_usable(ns.unwrap_or(""))?;
        }
        let key = key_of(res, &obj);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(def, &name));
        }
        if meta_str(&obj, "resourceVersion").is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if let Some(m) = meta_mut(&mut obj) {
            for f in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(f);
            }
            m.insert("uid".into(), Value::String(util::new_uid()));
            m.insert(
                "creationTimestamp".into(),
                Value::String(util::now_rfc3339()),
            );
            m.insert("generation".into(), json!(1));
        }
        if res == 0 && obj.pointer("/status/phase").is_none() {
            // Pods start Pending, as the apiserver defaults them.
            if let Some(o) = obj.as_object_mut() {
                let st = o.entry("status").or_insert_with(|| json!({}));
                if let Some(st) = st.as_object_mut() {
                    st.insert("phase".into(), json!("Pending"));
                }
            }
        }
        self.admit(&key, None, &mut obj)?;
        if dry_run {
            return Ok(obj);
        }
        Ok(self.put(key, obj, EventType::Added, None))
    }

    fn update(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        status: bool,
        dry_run: bool,
    ) -> ApiResult<(Value, bool)> {
        let def = &RESOURCES[res];
        normalize(def, ns, &mut body)?;
        match meta_str(&body, "name") {
            None | Some("") => set_meta(&mut body, "name", Value::String(name.into())),
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let key = (res, ns.unwrap_or("").to_string(), name.to_string());
        let body_rv = meta_str(&body, "resourceVersion").unwrap_or("").to_string();
        let Some(old) = self.objects.get(&key).cloned() else {
            if def.create_on_update && !status && body_rv.is_empty() {
                return Ok((self.create(res, ns, body, dry_run)?, true));
            }
            return Err(ApiError::not_found(def, name));
        };
        if !body_rv.is_empty() && Some(body_rv.as_str()) != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(def, name));
        }
        Ok((self.apply_update(key, old, body, status, dry_run)?, false))
    }

    /// The shared tail of PUT and PATCH: keep server-owned fields, default, bump, record.
    fn apply_update(
        &mut self,
        key: Key,
        old: Arc<Value>,
        new: Value,
        status: bool,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let def = &RESOURCES[key.0];
        if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                def,
                &key.2,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or("")
                ),
            ));
        }
        let mut result = if status {
            // Status writes keep the spec; metadata goes through (ovn-k annotates pods this way).
            let mut r = (*old).clone();
            if let (Some(o), Some(n)) = (r.as_object_mut(), new.as_object()) {
                if let Some(m) = n.get("metadata") {
                    o.insert("metadata".into(), m.clone());
                }
                match n.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            r
        } else {
            let mut r = new;
            if def.has_status
                && r.get("status").is_none()
                && let (Some(o), Some(s)) = (r.as_object_mut(), old.get("status"))
            {
                o.insert("status".into(), s.clone());
            }
            r
        };
        if let (Some(m), Some(om)) = (
            meta_mut(&mut result),
            old.get("metadata").and_then(Value::as_object),
        ) {
            for f in ["managedFields", "selfLink"] {
                m.remove(f);
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "name",
                "namespace",
            ] {
                match om.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
        }
        self.admit(&key, Some(&old), &mut result)?;
        if spec_part(&result) != spec_part(&old) {
            let gen_ = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut result, "generation", json!(gen_ + 1));
        }
        if result == *old {
            // No-op writes bump nothing and emit nothing (avoids annotate/watch loops).
            return Ok(result);
        }
        if dry_run {
            return Ok(result);
        }
        let finalizers_done = result
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        if meta_str(&result, "deletionTimestamp").is_some() && finalizers_done {
            self.objects.insert(key.clone(), Arc::new(result));
            return self
                .remove_now(&key)
                .ok_or_else(|| ApiError::internal("object vanished during finalization"));
        }
        Ok(self.put(key, result, EventType::Modified, Some(old)))
    }

    fn patch(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        p: Patch<'_>,
    ) -> ApiResult<(Value, bool)> {
        let Patch {
            kind,
            body: patch,
            status,
            dry_run,
        } = p;
        let def = &RESOURCES[res];
        let key = (res, ns.unwrap_or("").to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            if kind == PatchKind::Apply && !status {
                let mut obj = patch.clone();
                if !obj.is_object() {
                    return Err(ApiError::bad_request("apply patch must be a JSON object"));
                }
                match meta_str(&obj, "name") {
                    Some(n) if n == name => {}
                    None | Some("") => {
                        if let Some(o) = obj.as_object_mut() {
                            let m = o.entry("metadata").or_insert_with(|| json!({}));
                            if let Some(m) = m.as_object_mut() {
                                m.insert("name".into(), Value::String(name.into()));
                            }
                        }
                    }
                    Some(n) => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )));
                    }
                }
                return Ok((self.create(res, ns, obj, dry_run)?, true));
            }
            return Err(ApiError::not_found(def, name));
        };
        let mut doc = (*old).clone();
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut doc, patch),
            PatchKind::Strategic => patch::strategic_merge(def, &mut doc, patch),
            PatchKind::Apply => {
                let mut p = patch.clone();
                if let Some(m) = meta_mut(&mut p) {
                    m.remove("managedFields");
                }
                patch::strategic_merge(def, &mut doc, &p)
            }
            PatchKind::Json => patch::json_patch(&mut doc, patch).map_err(|e| match e {
                JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                JsonPatchError::Failed(m) => ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {m}"),
                ),
            })?,
        }
        if !doc.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        // A resourceVersion inside the patch is an optimistic-concurrency precondition.
        if meta_str(&doc, "resourceVersion") != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(def, name));
        }
        normalize(def, ns, &mut doc)?;
        if meta_str(&doc, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "metadata.name may not be changed by a patch",
            ));
        }
        Ok((self.apply_update(key, old, doc, status, dry_run)?, false))
    }

    fn delete(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let def = &RESOURCES[res];
        let key = (res, ns.unwrap_or("").to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = opts
                .pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                && Some(want) != meta_str(&old, field)
            {
                return Err(ApiError::conflict(
                    def,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {}",
                        meta_str(&old, field).unwrap_or("")
                    ),
                ));
            }
        }
        if res == NAMESPACES && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        if dry_run {
            return Ok((*old).clone());
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            // Finalizers hold the object until a writer removes them (see apply_update).
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok((*old).clone());
            }
            let mut marked = (*old).clone();
            set_meta(
                &mut marked,
                "deletionTimestamp",
                Value::String(util::now_rfc3339()),
            );
            set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
            if res == NAMESPACES
                && let Some(o) = marked.as_object_mut()
            {
                o.insert("status".into(), json!({"phase": "Terminating"}));
            }
            return Ok(self.put(key, marked, EventType::Modified, Some(old)));
        }
        self.remove_now(&key)
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    fn list(&self, filter: &Filter, p: &ListParams<'_>) -> ApiResult<Value> {
        let def = &RESOURCES[filter.res];
        let (snap_rv, start) = match p.continue_token.filter(|t| !t.is_empty()) {
            Some(tok) => {
                let (rv, ns, name) = parse_continue(tok)?;
                (rv, Some((ns, name)))
            }
            None => {
                let exact = p.resource_version_match == Some("Exact");
                match p.resource_version.filter(|v| !v.is_empty() && *v != "0") {
                    Some(v) if exact => (parse_rv(v)?, None),
                    Some(v) => {
                        parse_rv(v)?;
                        (self.rv, None)
                    }
                    None => (self.rv, None),
                }
            }
        };
        if snap_rv > self.rv {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!(
                    "Too large resource version: {snap_rv}, current: {}",
                    self.rv
                ),
            ));
        }
        let snapshot: BTreeMap<(String, String), Arc<Value>> = if snap_rv == self.rv {
            self.range(filter.res)
                .map(|(k, v)| ((k.1.clone(), k.2.clone()), v.clone()))
                .collect()
        } else {
            if snap_rv < self.floor_rv {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ));
            }
            self.snapshot_at(filter.res, snap_rv)
        };
        let mut items = Vec::new();
        let mut next = None;
        let matching = snapshot
            .iter()
            .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
            .filter(|(_, o)| filter.matches(o));
        for (k, o) in matching {
            if p.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                next = Some(k.clone());
                break;
            }
            items.push((**o).clone());
        }
        let mut meta = json!({"resourceVersion": snap_rv.to_string()});
        if next.is_some()
            && let Some(last) = items.last()
        {
            meta["continue"] = json!(continue_token(
                snap_rv,
                meta_str(last, "namespace").unwrap_or(""),
                meta_str(last, "name").unwrap_or("")
            ));
        }
        Ok(json!({
            "kind": def.list_kind(),
            "apiVersion": def.api_version(),
            "metadata": meta,
            "items": items,
        }))
    }

    /// The objects of one resource as they were at `rv` (undoing newer logged events).
    fn snapshot_at(&self, res: usize, rv: u64) -> BTreeMap<(String, String), Arc<Value>> {
        let mut map: BTreeMap<(String, String), Arc<Value>> = self
            .range(res)
            .map(|(k, v)| ((k.1.clone(), k.2.clone()), v.clone()))
            .collect();
        for e in self.log.iter().rev() {
            if e.rv <= rv {
                break;
            }
            if e.res != res {
                continue;
            }
            let k = key_of(res, &e.obj);
            match (e.etype, &e.prev) {
                (EventType::Added, _) => {
                    map.remove(&(k.1, k.2));
                }
                (_, Some(prev)) => {
                    map.insert((k.1, k.2), prev.clone());
                }
                (_, None) => {}
            }
        }
        map
    }

    // -----------------------------------------------------------------------------------------
    // Admission: server-side defaults and allocation.

    fn admit(&mut self, key: &Key, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
        // Go structs always serialize these (non-pointer struct fields), so clients see `{}`.
        let always: &[&str] = match RESOURCES[key.0].kind {
            "Pod" | "Node" | "Namespace" | "Service" => &["spec", "status"],
            "NetworkPolicy" | "Lease" => &["spec"],
            _ => &[],
        };
        if let Some(o) = obj.as_object_mut() {
            for f in always {
                o.entry(*f).or_insert_with(|| json!({}));
            }
        }
        match key.0 {
            SERVICES => self.admit_service(key, old, obj),
            NAMESPACES => {
                let terminating = meta_str(obj, "deletionTimestamp").is_some();
                if let Some(m) = meta_mut(obj) {
                    let labels = m.entry("labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    labels["kubernetes.io/metadata.name"] = Value::String(key.2.clone());
                }
                if let Some(o) = obj.as_object_mut() {
                    let phase = if terminating { "Terminating" } else { "Active" };
                    let st = o.entry("status").or_insert_with(|| json!({}));
                    if !st.is_object() {
                        *st = json!({});
                    }
                    st["phase"] = json!(phase);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn admit_service(&mut self, key: &Key, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
        let name = key.2.clone();
        let invalid = |field: &str, msg: String| ApiError::invalid("Service", &name, field, msg);
        let mut used_ips = HashSet::new();
        let mut used_ports = HashSet::new();
        for (k, svc) in self.range(SERVICES) {
            if k == key {
                continue;
            }
            if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                used_ips.insert(ip.to_string());
            }
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                    used_ports.insert(np);
                }
            }
        }
        let Some(o) = obj.as_object_mut() else {
            return Ok(());
        };
        let spec = o.entry("spec").or_insert_with(|| json!({}));
        let Some(spec) = spec.as_object_mut() else {
            return Err(invalid("spec", "Invalid value: must be an object".into()));
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if !matches!(
            ty.as_str(),
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            return Err(invalid(
                "spec.type",
                format!(
                    "Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            ));
        }
        spec.insert("type".into(), json!(ty));
        spec.entry("sessionAffinity")
            .or_insert_with(|| json!("None"));
        if ty != "ExternalName" {
            let old_ip = old
                .and_then(|o| o.pointer("/spec/clusterIP"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut ip = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ip.is_empty() {
                ip = if old_ip.is_empty() {
                    self.allocate_ip(&used_ips)?
                } else {
                    old_ip
                };
            } else if !old_ip.is_empty() && old_ip != ip {
                return Err(invalid(
                    "spec.clusterIP",
                    format!("Invalid value: \"{ip}\": field is immutable"),
                ));
            } else if old_ip.is_empty() && ip != "None" {
                if !self.cidr.contains(&ip) {
                    return Err(invalid(
                        "spec.clusterIP",
                        format!("Invalid value: \"{ip}\": provided IP is not in the valid range"),
                    ));
                }
                if used_ips.contains(&ip) {
                    return Err(invalid(
                        "spec.clusterIP",
                        format!("Invalid value: \"{ip}\": provided IP is already allocated"),
                    ));
                }
            }
            spec.insert("clusterIP".into(), json!(ip));
            let ips_missing = spec
                .get("clusterIPs")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty());
            if ips_missing {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
            let family = if self.cidr.is_v6() { "IPv6" } else { "IPv4" };
            spec.entry("ipFamilies").or_insert_with(|| json!([family]));
            spec.entry("ipFamilyPolicy")
                .or_insert_with(|| json!("SingleStack"));
            spec.entry("internalTrafficPolicy")
                .or_insert_with(|| json!("Cluster"));
        }
        if ty == "LoadBalancer" {
            spec.entry("allocateLoadBalancerNodePorts")
                .or_insert(json!(true));
        }
        let wants_node_ports = matches!(ty.as_str(), "NodePort" | "LoadBalancer");
        let old_ports: Vec<Value> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let Some(p) = p.as_object_mut() else { continue };
                p.entry("protocol").or_insert_with(|| json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    p.entry("targetPort").or_insert(port);
                }
                if !wants_node_ports {
                    p.remove("nodePort");
                    continue;
                }
                match p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    Some(np) => {
                        let was_ours = old_ports
                            .iter()
                            .any(|op| op.get("nodePort").and_then(Value::as_i64) == Some(np));
                        if !was_ours && !(30000..=32767).contains(&np) {
                            return Err(invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                format!(
                                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                ),
                            ));
                        }
                        if used_ports.contains(&np) {
                            return Err(invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                format!("Invalid value: {np}: provided port is already allocated"),
                            ));
                        }
                        used_ports.insert(np);
                    }
                    None => {
                        let reuse = old_ports
                            .iter()
                            .find(|op| {
                                op.get("port") == p.get("port")
                                    && op.get("protocol") == p.get("protocol")
                            })
                            .and_then(|op| op.get("nodePort"))
                            .and_then(Value::as_i64)
                            .filter(|n| !used_ports.contains(n));
                        let np = match reuse {
                            Some(n) => n,
                            None => self.allocate_port(&used_ports)?,
                        };
                        used_ports.insert(np);
                        p.insert("nodePort".into(), json!(np));
                    }
                }
            }
        }
        Ok(())
    }

    fn allocate_ip(&mut self, used: &HashSet<String>) -> ApiResult<String> {
        let size = self.cidr.size();
        for _ in 0..size.min(1 << 20) {
            let off = self.next_ip;
            self.next_ip = if off >= size { 1 } else { off + 1 };
            let ip = self.cidr.nth(off);
            if !used.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a serviceIP: range is full",
        ))
    }

    fn allocate_port(&mut self, used: &HashSet<i64>) -> ApiResult<i64> {
        for _ in 30000..=32767 {
            let port = self.next_port;
            self.next_port = if port >= 32767 { 30000 } else { port + 1 };
            if !used.contains(&i64::from(port)) {
                return Ok(i64::from(port));
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            100,
            Cidr::parse("10.96.0.0/16").unwrap(),
            &["default".to_string()],
        )
    }

    fn all(res: usize) -> Filter {
        Filter {
            res,
            namespace: None,
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
        }
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pagination_is_a_consistent_snapshot() {
        let s = store();
        for i in 0..7 {
            s.create(
                0,
                Some("default"),
                json!({"metadata": {"name": format!("p{i}")}}),
                false,
            )
            .unwrap();
        }
        let p = |_: Option<&str>| ListParams {
            limit: Some(3),
            continue_token: None,
            resource_version: None,
            resource_version_match: None,
        };
        let first = s.list(&all(0), &p(None)).unwrap();
        assert_eq!(names(&first), ["p0", "p1", "p2"]);
        let tok = first["metadata"]["continue"].as_str().unwrap().to_string();
        // Changes after the first page must not show up in later pages.
        s.delete(0, Some("default"), "p4", &Value::Null, false)
            .unwrap();
        s.create(
            0,
            Some("default"),
            json!({"metadata": {"name": "p35"}}),
            false,
        )
        .unwrap();
        s.patch(
            0,
            Some("default"),
            "p5",
            Patch {
                kind: PatchKind::Merge,
                body: &json!({"metadata": {"labels": {"x": "y"}}}),
                status: false,
                dry_run: false,
            },
        )
        .unwrap();
        let mut got = names(&first);
        let mut tok = Some(tok);
        while let Some(t) = tok {
            let page = s
                .list(
                    &all(0),
                    &ListParams {
                        continue_token: Some(&t),
                        ..p(None)
                    },
                )
                .unwrap();
            assert_eq!(
                page["metadata"]["resourceVersion"],
                first["metadata"]["resourceVersion"]
            );
            got.extend(names(&page));
            for item in page["items"].as_array().unwrap() {
                assert!(item["metadata"].get("labels").is_none(), "{item}");
            }
            tok = page["metadata"]["continue"].as_str().map(str::to_string);
        }
        assert_eq!(got, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
        // Last page exactly at the limit carries no continue token.
        let six = s
            .list(
                &all(0),
                &ListParams {
                    limit: Some(7),
                    ..p(None)
                },
            )
            .unwrap();
        assert!(six["metadata"].get("continue").is_none());
        s.compact();
        let err = s
            .list(
                &all(0),
                &ListParams {
                    continue_token: first["metadata"]["continue"].as_str(),
                    ..p(None)
                },
            )
            .unwrap_err();
        assert_eq!(err.code, 410);
        let bad = s
            .list(
                &all(0),
                &ListParams {
                    continue_token: Some("zz"),
                    ..p(None)
                },
            )
            .unwrap_err();
        assert_eq!(bad.code, 400);
    }

    #[test]
    fn noop_patch_does_not_bump() {
        let s = store();
        s.create(
            0,
            Some("default"),
            json!({"metadata": {"name": "a", "annotations": {"k": "v"}}}),
            false,
        )
        .unwrap();
        let rv = s.resource_version();
        let (o, _) = s
            .patch(
                0,
                Some("default"),
                "a",
                Patch {
                    kind: PatchKind::Merge,
                    body: &json!({"metadata": {"annotations": {"k": "v"}}}),
                    status: false,
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(s.resource_version(), rv);
        assert_eq!(o["metadata"]["resourceVersion"], json!(rv.to_string()));
    }

    #[test]
    fn services_get_ips_and_node_ports() {
        let s = store();
        let svc = s
            .create(
                SERVICES,
                Some("default"),
                json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
                false,
            )
            .unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        // A PUT without clusterIP/nodePort keeps them.
        let (upd, _) = s
            .update(
                SERVICES,
                Some("default"),
                "s",
                json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
                false,
                false,
            )
            .unwrap();
        assert_eq!(upd["spec"], svc["spec"]);
        let dup = s
            .create(
                SERVICES,
                Some("default"),
                json!({"metadata": {"name": "t"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}),
                false,
            )
            .unwrap_err();
        assert_eq!(dup.code, 422);
        let headless = s
            .create(
                SERVICES,
                Some("default"),
                json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}),
                false,
            )
            .unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
