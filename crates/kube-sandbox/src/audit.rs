//! Optional bearer-token check and a record of the API calls served, so tests can prove that
//! a client uses a rotated token and that an RBAC role covers every call a program makes.

use std::collections::BTreeSet;
use std::sync::Mutex;

use http::Method;

/// One kind of API request in RBAC terms: the verb, the API group ("" for core) and the
/// resource (with its subresource, e.g. `pods/status`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

#[derive(Default)]
pub struct Audit {
    tokens: Mutex<Vec<String>>,
    calls: Mutex<BTreeSet<ApiCall>>,
    rejected: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Audit {
    /// Require `Authorization: Bearer <one of tokens>` on every request (empty: accept anything).
    pub fn require_tokens(&self, tokens: &[&str]) {
        *lock(&self.tokens) = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Whether a request with this `Authorization` header value may proceed; counts refusals.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        let want = lock(&self.tokens).clone();
        let ok = want.is_empty()
            || header
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|got| want.iter().any(|t| t == got.trim()));
        if !ok {
            *lock(&self.rejected) += 1;
        }
        ok
    }

    pub fn rejected(&self) -> u64 {
        *lock(&self.rejected)
    }

    pub fn record(&self, call: ApiCall) {
        lock(&self.calls).insert(call);
    }

    pub fn calls(&self) -> BTreeSet<ApiCall> {
        lock(&self.calls).clone()
    }
}

/// The RBAC verb of a request: `watch`/`list`/`create`/`deletecollection` on a collection,
/// `get`/`update`/`patch`/`delete` on an object.
pub fn verb(method: &Method, collection: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), collection) {
        ("GET", true) if watch => "watch",
        ("GET", true) => "list",
        ("POST", true) => "create",
        ("DELETE", true) => "deletecollection",
        ("GET", false) => "get",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_tokens() {
        let cases = [
            (Method::GET, true, true, Some("watch")),
            (Method::GET, true, false, Some("list")),
            (Method::POST, true, false, Some("create")),
            (Method::DELETE, true, false, Some("deletecollection")),
            (Method::GET, false, false, Some("get")),
            (Method::PUT, false, false, Some("update")),
            (Method::PATCH, false, false, Some("patch")),
            (Method::DELETE, false, false, Some("delete")),
            (Method::POST, false, false, None),
        ];
        for (m, coll, w, want) in cases {
            assert_eq!(verb(&m, coll, w), want, "{m} {coll} {w}");
        }
        let a = Audit::default();
        assert!(a.authorized(None));
        a.require_tokens(&["admin", "t2"]);
        assert!(!a.authorized(None));
        assert!(!a.authorized(Some("Bearer t1")));
        assert!(a.authorized(Some("Bearer t2")));
        assert_eq!(a.rejected(), 2);
    }
}
