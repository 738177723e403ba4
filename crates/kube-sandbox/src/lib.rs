//! `kube-sandbox`: a small Kubernetes API server stand-in over real HTTP/1.1, for tests and demos.
//!
//! It serves core/v1 pods (+status), services (+status), endpoints, nodes (+status), namespaces
//! (+status) and events; networking.k8s.io/v1 networkpolicies; discovery.k8s.io/v1 endpointslices;
//! coordination.k8s.io/v1 leases; events.k8s.io/v1 events (a core/v1 event list also returns
//! them, converted, as the real apiserver's shared store does; watches do not). kube-rs
//! clients and watchers and the real `kubectl` (create/apply/patch/label/annotate/get -w/delete)
//! work against it unchanged.
//!
//! Semantics follow the real apiserver where clients can observe them: a global resourceVersion,
//! list pagination over a consistent snapshot, label/field selectors, watches that replay the
//! retained event log and go live atomically (or report `410 Expired` as a 200 + ERROR event),
//! selector-transition ADDED/DELETED, no-op writes that bump nothing, merge / strategic-merge /
//! JSON / apply patches, finalizers, service clusterIP and nodePort allocation, EndpointSlice
//! mirroring of core/v1 Endpoints (as kube-controller-manager does), and `Status`
//! errors with the usual codes and reasons. There is no schema validation and no admission
//! beyond the defaults listed above; authentication is off unless a test asks for a bearer
//! token (`SandboxHandle::require_tokens`). Every (verb, group, resource) served is recorded
//! (`SandboxHandle::api_calls`), for RBAC coverage checks.
//!
//! Request bodies are JSON, except that POST/PUT also accept Kubernetes protobuf
//! (`application/vnd.kubernetes.protobuf`, as sent by `kubectl create namespace` and
//! `kubectl create service ...`) for v1 Namespace and Service; other kinds get a 415 naming
//! the type. Responses are always JSON.
//!
//! # Library API
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube_sandbox::{Sandbox, SandboxConfig};
//! let sb = Sandbox::start("127.0.0.1:0".parse()?, SandboxConfig::default()).await?;
//! let url = sb.url();                                   // "http://127.0.0.1:PORT"
//! sb.write_kubeconfig(std::path::Path::new("/tmp/kc"))?; // context "sandbox", dummy token
//! sb.compact();                                         // forget history: old RVs now get 410
//! let handle = sb.handle();                             // cloneable, for spawned tasks
//! handle.compact();
//! sb.shutdown().await;                                  // also happens (abruptly) on drop
//! # let _ = url; Ok(()) }
//! ```
//!
//! The binary `kube-sandbox --listen 127.0.0.1:PORT [--kubeconfig-out FILE] [--history N]
//! [--service-cidr CIDR]` prints `kube-sandbox listening on http://127.0.0.1:PORT` once bound.

mod audit;
mod discovery;
mod error;
mod event_view;
mod mirror;
mod patch;
mod protobuf;
mod resources;
mod selector;
mod server;
mod store;
mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::audit::ApiCall;
use crate::server::Shared;
use crate::store::Store;

/// Server settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Number of events retained for watch replay (default 10000). Older RVs get 410 Expired.
    pub history_limit: usize,
    /// Service cluster IP range (default `10.96.0.0/16`; IPv6 works too).
    pub service_cidr: String,
    /// Period of progress BOOKMARKs for watches with `allowWatchBookmarks=true` (default 5 s).
    pub bookmark_interval: Duration,
    /// Namespaces that exist at start (default `default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`).
    pub namespaces: Vec<String>,
    /// Mirror core/v1 Endpoints written by clients into EndpointSlices, as a real cluster's
    /// endpointslice-mirroring controller does (default on).
    pub mirror_endpoints: bool,
    /// API groups not served at all, as on an older API server (e.g. `discovery.k8s.io`):
    /// their paths answer 404 and `/apis` does not list them. Default: none.
    pub hidden_groups: Vec<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            history_limit: 10_000,
            service_cidr: "10.96.0.0/16".into(),
            bookmark_interval: Duration::from_secs(5),
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"]
                .into_iter()
                .map(String::from)
                .collect(),
            mirror_endpoints: true,
            hidden_groups: Vec::new(),
        }
    }
}

/// A running sandbox API server. Dropping it stops the server too (without waiting).
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A cloneable handle to a running sandbox, for use from spawned tasks.
#[derive(Clone)]
pub struct SandboxHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops all retained watch history (see [`Sandbox::compact`]).
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// From now on, answer every request without `Authorization: Bearer <one of tokens>` with
    /// 401 Unauthorized (an empty list turns the check off again). Open watches are not cut.
    pub fn require_tokens(&self, tokens: &[&str]) {
        self.shared.audit.require_tokens(tokens);
    }

    /// Requests refused by [`SandboxHandle::require_tokens`] so far.
    pub fn rejected_requests(&self) -> u64 {
        self.shared.audit.rejected()
    }

    /// Freezes the server, as a stopped apiserver process looks to its clients: new
    /// connections are still accepted and open ones (watches included) stay open, but no
    /// request is answered and no watch event is sent until [`SandboxHandle::resume`].
    /// Writes made by the sandbox's own library API are not affected.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Ends a [`SandboxHandle::pause`]: held requests are answered, held watch events sent.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Takes the server down, as a stopped apiserver process looks to its clients: the
    /// listening socket is closed (connections are refused) and every open connection,
    /// watches included, is cut. The objects stay; [`SandboxHandle::start_serving`] brings the
    /// server back on the same address. Writes made by the sandbox's library API still work.
    pub fn stop_serving(&self) {
        self.shared.offline.send_replace(true);
    }

    /// Ends a [`SandboxHandle::stop_serving`]: the same address accepts connections again.
    pub fn start_serving(&self) {
        self.shared.offline.send_replace(false);
    }

    /// Every distinct (verb, group, resource) served so far (including requests that then
    /// failed, e.g. a 404 on get: RBAC is checked before the object is looked up).
    pub fn api_calls(&self) -> std::collections::BTreeSet<ApiCall> {
        self.shared.audit.calls()
    }
}

impl Sandbox {
    /// Binds `addr` (port 0 picks a free port) and starts serving on the current tokio runtime.
    pub async fn start(addr: SocketAddr, cfg: SandboxConfig) -> anyhow::Result<Sandbox> {
        let cidr = util::Cidr::parse(&cfg.service_cidr).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (tx, rx) = watch::channel(false);
        let store = Store::new(cfg.history_limit, cidr, &cfg.namespaces);
        store.set_mirror_endpoints(cfg.mirror_endpoints);
        let shared = Arc::new(Shared {
            store,
            audit: Default::default(),
            hidden_groups: cfg.hidden_groups.clone(),
            server_address: addr.to_string(),
            shutdown: rx.clone(),
            paused: watch::channel(false).0,
            offline: watch::channel(false).0,
        });
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            shared.clone(),
            rx.clone(),
        ))];
        if !cfg.bookmark_interval.is_zero() {
            let shared = shared.clone();
            let mut rx = rx;
            let period = cfg.bookmark_interval;
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => shared.store.bookmark_tick(),
                        _ = rx.changed() => break,
                    }
                }
            }));
        }
        Ok(Sandbox {
            addr,
            shared,
            shutdown: tx,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handle(&self) -> SandboxHandle {
        SandboxHandle {
            addr: self.addr,
            shared: self.shared.clone(),
        }
    }

    /// A kubeconfig (YAML) with cluster/user/context `sandbox` pointing at this server.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig())
            .with_context(|| format!("writing kubeconfig {}", path.display()))
    }

    /// Drops all retained watch history, so watches from any older resourceVersion get an
    /// ERROR event with a 410 Expired `Status` (and the client relists). Live watches continue.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// See [`SandboxHandle::require_tokens`].
    pub fn require_tokens(&self, tokens: &[&str]) {
        self.handle().require_tokens(tokens);
    }

    /// See [`SandboxHandle::pause`].
    pub fn pause(&self) {
        self.handle().pause();
    }

    /// See [`SandboxHandle::resume`].
    pub fn resume(&self) {
        self.handle().resume();
    }

    /// See [`SandboxHandle::stop_serving`].
    pub fn stop_serving(&self) {
        self.handle().stop_serving();
    }

    /// See [`SandboxHandle::start_serving`].
    pub fn start_serving(&self) {
        self.handle().start_serving();
    }

    /// See [`SandboxHandle::rejected_requests`].
    pub fn rejected_requests(&self) -> u64 {
        self.handle().rejected_requests()
    }

    /// See [`SandboxHandle::api_calls`].
    pub fn api_calls(&self) -> std::collections::BTreeSet<ApiCall> {
        self.handle().api_calls()
    }

    /// Stops accepting, ends all watches and connections, and waits for the server tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.shared.store.close_watchers();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.shared.store.close_watchers();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The kubeconfig text for a sandbox at `server` (e.g. `http://127.0.0.1:8080`).
pub fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server}
users:
- name: sandbox
  user:
    token: sandbox-dummy-token
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox
    namespace: default
current-context: sandbox
preferences: {{}}
"
    )
}
