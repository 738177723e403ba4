//! A persistent OVSDB JSON-RPC (RFC 7047) connection: one tokio task owns the socket, numbers
//! the requests, routes each response to its caller by id, answers the server's `echo`, and
//! reconnects with the shared capped, jittered backoff whatever way the connection fails.
//!
//! Requests made while the connection is down fail at once with the last connect error: the
//! callers (controllers) already retry with their own backoff, and a request must never be
//! replayed by us on a new connection because it may have committed on the old one.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::cluster::{Leadership, Members};
use super::tls::{self, ClientTls};
use crate::util::retry::{self, Backoff};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database listens. `Ssl` needs the client's certificates ([`ClientTls`]), which
/// travel with the [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(SocketAddr),
    Ssl(SocketAddr),
}

impl Remote {
    /// One member: `unix:PATH`, `tcp:IP:PORT` or `ssl:IP:PORT` (`[v6]` for IPv6 hosts); `None`
    /// for anything else (a list of cluster members, passive remotes).
    pub fn parse(target: &str) -> Option<Remote> {
        if target.contains(',') {
            return None;
        }
        if let Some(p) = target.strip_prefix("unix:") {
            return (!p.is_empty()).then(|| Remote::Unix(PathBuf::from(p)));
        }
        if let Some(a) = target.strip_prefix("ssl:") {
            return a.parse().ok().map(Remote::Ssl);
        }
        target.strip_prefix("tcp:")?.parse().ok().map(Remote::Tcp)
    }
}

/// Where `ovs-vsctl` finds the local Open vSwitch database by default.
const OVS_DEFAULT_RUNDIR: &str = "/var/run/openvswitch";

/// Where `ovn-nbctl` finds the local NB database by default (Debian's `ovn-central`).
const OVN_DEFAULT_RUNDIR: &str = "/var/run/ovn";

impl Remote {
    /// The local NB database, as `ovn-nbctl` finds it without `--db`: `$OVN_NB_DB` when set,
    /// else `unix:$OVN_RUNDIR/ovnnb_db.sock` (the caller parses it like `-nb-address`).
    pub fn local_nb_target() -> String {
        if let Some(db) = std::env::var("OVN_NB_DB").ok().filter(|d| !d.is_empty()) {
            return db;
        }
        let dir = std::env::var_os("OVN_RUNDIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(OVN_DEFAULT_RUNDIR));
        format!("unix:{}", dir.join("ovnnb_db.sock").display())
    }

    /// The local Open vSwitch database, as `ovs-vsctl` finds it without `--db`:
    /// `$OVS_RUNDIR/db.sock`.
    pub fn local_ovs() -> Remote {
        let dir = std::env::var_os("OVS_RUNDIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(OVS_DEFAULT_RUNDIR));
        Remote::Unix(dir.join("db.sock"))
    }
}

/// The first error in a `transact` reply (one result per operation, then possibly one for
/// the commit), or the reply's shape when it is not a list; `None` when every op succeeded.
pub fn transact_error(reply: &Value) -> Option<String> {
    let Some(results) = reply.as_array() else {
        return Some(format!("OVSDB transact reply is not an array: {reply}"));
    };
    results.iter().enumerate().find_map(|(i, r)| {
        let err = r.get("error").filter(|e| !e.is_null())?;
        let details = r.get("details").and_then(Value::as_str).unwrap_or("");
        Some(
            format!("operation {i}: {err} {details}")
                .trim_end()
                .to_string(),
        )
    })
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp(a) => write!(f, "tcp:{a}"),
            Remote::Ssl(a) => write!(f, "ssl:{a}"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn tcp(a: &SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(a).await?;
    // Small request/response messages: latency matters more than packing.
    s.set_nodelay(true)?;
    Ok(s)
}

/// A failure of the TLS layer (unusable certificate files, a server certificate the CA did
/// not sign, our certificate refused): the server is there, but will not be reached until an
/// operator fixes certificates, so the log says so even after it said "unreachable".
#[derive(Debug)]
struct TlsFailure(String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// How an attempt failed, for the log ([`LinkState`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// Refused, closed, reset, timed out, not JSON-RPC: the server may come back by itself.
    #[default]
    Unreachable,
    /// The TLS layer refused the session ([`TlsFailure`]).
    Tls,
}

impl FailKind {
    fn of(e: &anyhow::Error) -> FailKind {
        if e.chain().any(|c| c.downcast_ref::<TlsFailure>().is_some()) {
            FailKind::Tls
        } else {
            FailKind::Unreachable
        }
    }
}

/// A TLS session with the server at `a`. The files are read again for each connection, so a
/// rotated certificate is used from the next reconnect on.
async fn tls_session(a: &SocketAddr, tls: Option<&ClientTls>) -> Result<Box<dyn Io>> {
    let tls = tls
        .context("an ssl: remote needs the client's private key, certificate and CA certificate")?;
    let cfg = tls
        .client_config()
        .map_err(|e| anyhow!(TlsFailure(format!("{e:#}"))))?;
    let s = tcp(a).await.context("connecting")?;
    let session = tokio_rustls::TlsConnector::from(cfg)
        .connect(tls::server_name(a.ip()), s)
        .await
        .map_err(|e| {
            anyhow!(TlsFailure(format!(
                "TLS handshake failed: {e} ({})",
                tls.describe()
            )))
        })?;
    Ok(Box::new(session))
}

async fn connect(remote: &Remote, tls: Option<&ClientTls>) -> Result<Box<dyn Io>> {
    let fut = async {
        Ok::<Box<dyn Io>, anyhow::Error>(match remote {
            Remote::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            Remote::Tcp(a) => Box::new(tcp(a).await?),
            Remote::Ssl(a) => tls_session(a, tls).await?,
        })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("connecting to {remote} timed out"))?
        .with_context(|| format!("connecting to {remote}"))
}

/// Why a connection that was set up failed. In TLS 1.3 the server checks our certificate
/// after our side of the handshake is done, so its refusal (an alert) arrives as the first
/// read: a TLS session that fails before the server ever answered counts as a TLS failure,
/// with what the handshake checks.
fn session_failure(why: String, answered: bool, tls: Option<&ClientTls>) -> (String, FailKind) {
    match tls {
        Some(t) if !answered => (
            format!(
                "the TLS session failed before the server answered: {why} ({})",
                t.describe()
            ),
            FailKind::Tls,
        ),
        _ => (why, FailKind::Unreachable),
    }
}

/// What the connection task connects to: one server or a cluster's members, and the client
/// certificates for `ssl:` ones.
struct Link {
    members: Members,
    tls: Option<ClientTls>,
}

struct Req {
    method: &'static str,
    params: Value,
    reply: oneshot::Sender<Result<Value>>,
}

/// What the connection task tells a subscriber: each (re)connection, before any request is
/// served on it, and every notification the server sends (e.g. monitor `update`s), in order.
#[derive(Debug, Clone)]
pub enum Event {
    Connected,
    Notification(Value),
}

/// A handle on the connection task; cheap to clone. The task ends when every handle is gone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Req>,
    remote: Remote,
    timeout: Duration,
}

impl Client {
    /// Start the connection task (it connects at once and keeps reconnecting). Needs a tokio
    /// runtime. `timeout` bounds each request; a server that stays silent that long loses its
    /// connection.
    pub fn start(remote: Remote, timeout: Duration) -> Client {
        Client::start_with_events(remote, timeout, None)
    }

    /// Like [`Client::start`], with connection events and notifications sent to `events`.
    pub fn start_with_events(
        remote: Remote,
        timeout: Duration,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Client {
        Client::start_tls(remote, None, timeout, events)
    }

    /// Like [`Client::start_with_events`], with the client certificates an `ssl:` remote
    /// needs (ignored for other remotes).
    pub fn start_tls(
        remote: Remote,
        tls: Option<ClientTls>,
        timeout: Duration,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Client {
        Client::start_members(Members::single(remote), tls, timeout, events)
    }

    /// Like [`Client::start_tls`] for a list of members: each connection goes to the
    /// next member (see [`Members`]) and, for a cluster, serves requests only once the member
    /// has shown it is the leader; `Event::Connected` is sent then. `tls` serves every `ssl:`
    /// member.
    pub fn start_members(
        members: Members,
        tls: Option<ClientTls>,
        timeout: Duration,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let remote = members.first().clone();
        tokio::spawn(run(Link { members, tls }, rx, timeout, events));
        Client {
            tx,
            remote,
            timeout,
        }
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// One `transact` on database `db`; fails when the server rejects any operation (then
    /// nothing was applied).
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>> {
        let mut params = vec![json!(db)];
        params.extend(ops);
        let reply = self.call("transact", Value::Array(params)).await?;
        if let Some(e) = transact_error(&reply) {
            bail!("{} rejected the transaction on {db}: {e}", self.remote);
        }
        Ok(reply.as_array().cloned().unwrap_or_default())
    }

    /// One request; returns the `result`, or the server's `error` as an error.
    pub async fn call(&self, method: &'static str, params: Value) -> Result<Value> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Req {
                method,
                params,
                reply,
            })
            .map_err(|_| anyhow!("the OVSDB connection task to {} stopped", self.remote))?;
        // The task enforces the timeout; this is a backstop in case it is stuck.
        match tokio::time::timeout(self.timeout + Duration::from_secs(2), rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => bail!("the OVSDB connection task to {} stopped", self.remote),
            Err(_) => bail!("no reply from {} to {method} in time", self.remote),
        }
    }
}

/// What the connection log says, decided from the sequence of attempts: one line per change
/// of state (up, lost, failing), never one per attempt, so a peer that keeps
/// failing the same way costs one log line, not thousands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LinkState {
    up: bool,
    ever_up: bool,
    /// The first error (of the latest kind) since the connection was last up.
    failing: Option<(String, FailKind)>,
}

/// How one connection is vetted before it serves requests: not at all (one server), or by
/// the leadership watch on `_Server` (a cluster member).
struct Vet<'a> {
    leadership: Option<&'a mut Leadership>,
    events: Option<&'a mpsc::UnboundedSender<Event>>,
}

/// A log line [`LinkState`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkLog {
    /// The server answered on a new connection (`reconnect` = it had been up before).
    Established { reconnect: bool },
    /// A working connection failed.
    Lost(String),
    /// Not up (or never up) and failing: the first error.
    Failing(String),
}

impl LinkState {
    /// The server answered on the current connection.
    pub(crate) fn answered(&mut self) -> Option<LinkLog> {
        if self.up {
            return None;
        }
        let reconnect = self.ever_up;
        self.up = true;
        self.ever_up = true;
        self.failing = None;
        Some(LinkLog::Established { reconnect })
    }

    /// An attempt or a connection failed with `why`. Only the change of state is logged: the
    /// same peer can fail in alternating ways (closed, reset, broken pipe) from one attempt
    /// to the next, and each attempt is logged at DEBUG anyway. A change of [`FailKind`] is a
    /// change of state: a server that was not up yet and now refuses our certificates must
    /// not stay logged as "refused".
    pub(crate) fn failed(&mut self, why: &str, kind: FailKind) -> Option<LinkLog> {
        let was_up = std::mem::take(&mut self.up);
        let same_kind = self.failing.as_ref().is_some_and(|(_, k)| *k == kind);
        if !was_up && same_kind {
            return None;
        }
        self.failing = Some((why.to_string(), kind));
        Some(if was_up {
            LinkLog::Lost(why.to_string())
        } else {
            LinkLog::Failing(why.to_string())
        })
    }
}

fn emit(remote: &Remote, log: Option<LinkLog>, retry_in: Duration) {
    match log {
        None => {}
        Some(LinkLog::Established { reconnect }) => {
            tracing::info!(%remote, reconnect, "OVSDB connection established")
        }
        Some(LinkLog::Lost(e)) => {
            tracing::warn!(%remote, error = %e, ?retry_in, "OVSDB connection lost; reconnecting with backoff")
        }
        Some(LinkLog::Failing(e)) => {
            tracing::warn!(%remote, error = %e, ?retry_in, "OVSDB server unavailable; retrying with backoff (logged again once it is up)")
        }
    }
}

/// Owns the connection for its whole life: connect, serve, reconnect with the connection backoff.
/// Every failure waits (a peer that accepts and closes, or answers something that is not
/// JSON-RPC, is retried as slowly as one that refuses); the backoff starts over only after the
/// server has answered on a connection.
async fn run(
    link_to: Link,
    mut rx: mpsc::UnboundedReceiver<Req>,
    timeout: Duration,
    events: Option<mpsc::UnboundedSender<Event>>,
) {
    let Link { mut members, tls } = link_to;
    let mut backoff = Backoff::new(retry::RECONNECT);
    let mut link = LinkState::default();
    let mut retry_at = Instant::now();
    let mut last_err = String::from("not connected yet");
    let mut leadership = members.db().map(Leadership::new);
    let mut remote = members.first().clone();
    loop {
        if Instant::now() >= retry_at {
            remote = members.next_member();
            let (why, kind) = match connect(&remote, tls.as_ref()).await {
                Ok(io) => {
                    tracing::debug!(%remote, "OVSDB socket connected; probing with echo");
                    if let Some(l) = leadership.as_mut() {
                        l.reset();
                    }
                    let mut got_answer = false;
                    let vet = Vet {
                        leadership: leadership.as_mut(),
                        events: events.as_ref(),
                    };
                    let clustered = vet.leadership.is_some();
                    let mut answered = || {
                        got_answer = true;
                        backoff.reset();
                        if clustered {
                            tracing::info!(%remote, "OVSDB cluster member is connected and the leader; using it");
                        }
                        emit(&remote, link.answered(), Duration::ZERO);
                    };
                    match serve(io, &mut rx, timeout, vet, &mut answered).await {
                        None => return,
                        Some(e) => session_failure(e, got_answer, tls.as_ref()),
                    }
                }
                Err(e) => (format!("{e:#}"), FailKind::of(&e)),
            };
            // Members of a cluster are tried in turn; the backoff is per round.
            let delay = if members.round_done() {
                backoff.failed()
            } else {
                Duration::ZERO
            };
            tracing::debug!(%remote, error = %why, ?delay, attempt = backoff.failures(), "OVSDB attempt failed");
            let log = link.failed(&why, kind);
            if matches!(log, Some(LinkLog::Lost(_))) {
                crate::metrics::get().nb_disconnected();
            }
            emit(&remote, log, delay);
            last_err = why;
            retry_at = Instant::now() + delay;
        }
        tokio::select! {
            r = rx.recv() => match r {
                None => return,
                Some(req) => {
                    let what = if leadership.is_some() { members.describe() } else { remote.to_string() };
                    let _ = req.reply.send(Err(anyhow!(
                        "OVSDB server {what} unavailable: {last_err}"
                    )));
                }
            },
            _ = tokio::time::sleep_until(retry_at) => {}
        }
    }
}

struct InFlight {
    reply: oneshot::Sender<Result<Value>>,
    method: &'static str,
    deadline: Instant,
}

/// The request id of the leadership watch's `monitor` (ours count up from 1). Not `u64::MAX`:
/// ovsdb-server reads JSON integers as 64-bit signed and would echo a larger id as a double.
const VET_ID: u64 = i64::MAX as u64;

/// Serve one connection until it fails (`Some(why)`) or every handle is dropped (`None`).
/// In-flight requests of a failed connection get the failure: they may or may not have been
/// committed, which only the caller can sort out (by retrying an idempotent change).
/// The connection counts as working once the server answered something well-formed: an `echo`
/// is sent first so that a real server answers at once. A cluster member must also pass the
/// leadership watch before any request is sent to it, and fails as soon as it no longer does.
/// (Over 80 lines: one `select!` over the connection's event sources reads best in one place.)
async fn serve(
    io: Box<dyn Io>,
    rx: &mut mpsc::UnboundedReceiver<Req>,
    timeout: Duration,
    mut vet: Vet<'_>,
    answered: &mut (dyn FnMut() + Send),
) -> Option<String> {
    let (mut rd, mut wr) = tokio::io::split(io);
    // A separate writer so a large request never stalls reading (and vice versa).
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (werr_tx, mut werr_rx) = oneshot::channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(buf) = wrx.recv().await {
            // A TLS stream may hold written data in its session until flushed (a plain
            // socket's flush does nothing).
            let res = match wr.write_all(&buf).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                let _ = werr_tx.send(format!("writing: {e}"));
                return;
            }
        }
    });
    let mut pending: HashMap<u64, InFlight> = HashMap::new();
    let mut next_id: u64 = 1;
    let mut framer = Framer::default();
    let mut healthy = false;
    // The probe: its reply only marks the connection as working (nobody waits for it).
    let (probe, _) = oneshot::channel();
    send_internal(&wtx, &mut pending, 0, "echo", json!([]), probe, timeout);
    let (vet_tx, mut vet_rx) = oneshot::channel();
    let mut vetted = vet.leadership.is_none();
    if vetted {
        connected(vet.events);
    } else {
        let params = Leadership::monitor_params();
        send_internal(
            &wtx,
            &mut pending,
            VET_ID,
            "monitor",
            params,
            vet_tx,
            timeout,
        );
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let failure = loop {
        tokio::select! {
            r = rx.recv(), if vetted => {
                let Some(req) = r else { break None };
                let id = next_id;
                next_id += 1;
                let msg = json!({"method": req.method, "params": req.params, "id": id});
                // Serialising a Value cannot fail.
                let bytes = serde_json::to_vec(&msg).unwrap_or_default();
                pending.insert(id, InFlight {
                    reply: req.reply,
                    method: req.method,
                    deadline: Instant::now() + timeout,
                });
                if wtx.send(bytes).is_err() {
                    break Some("the writer stopped".to_string());
                }
            }
            v = &mut vet_rx, if !vetted => {
                let Some(l) = vet.leadership.as_deref_mut() else {
                    break Some("no leadership watch".to_string());
                };
                if let Err(why) = vet_reply(v, l) {
                    break Some(why);
                }
                vetted = true;
                connected(vet.events);
                if healthy {
                    answered();
                }
            }
            n = rd.read_buf(&mut framer.buf) => match n {
                Ok(0) => break Some("the server closed the connection".to_string()),
                Err(e) => break Some(format!("reading: {e}")),
                Ok(_) => match on_input(&mut framer, &mut pending, &wtx, vet.events, vet.leadership.as_deref_mut()) {
                    Err(e) => break Some(format!("{e:#}")),
                    Ok(n) if n > 0 && !healthy => {
                        healthy = true;
                        if vetted {
                            answered();
                        }
                    }
                    Ok(_) => {}
                },
            },
            e = &mut werr_rx => break Some(e.unwrap_or_else(|_| "the writer stopped".into())),
            _ = tick.tick() => {
                let now = Instant::now();
                if let Some(p) = pending.values().find(|p| p.deadline <= now) {
                    break Some(format!("no reply to {} within {timeout:?}", p.method));
                }
            }
        }
    };
    writer.abort();
    if let Some(why) = &failure {
        for (_, p) in pending.drain() {
            let _ = p.reply.send(Err(anyhow!(
                "OVSDB connection lost before the reply to {} ({why}); it may or may not have been applied",
                p.method
            )));
        }
    }
    failure
}

/// A request of the connection's own (the probe, the leadership watch).
fn send_internal(
    wtx: &mpsc::UnboundedSender<Vec<u8>>,
    pending: &mut HashMap<u64, InFlight>,
    id: u64,
    method: &'static str,
    params: Value,
    reply: oneshot::Sender<Result<Value>>,
    timeout: Duration,
) {
    pending.insert(
        id,
        InFlight {
            reply,
            method,
            deadline: Instant::now() + timeout,
        },
    );
    let msg = json!({"method": method, "params": params, "id": id});
    let _ = wtx.send(serde_json::to_vec(&msg).unwrap_or_default());
}

fn connected(events: Option<&mpsc::UnboundedSender<Event>>) {
    if let Some(ev) = events {
        let _ = ev.send(Event::Connected);
    }
}

/// The initial rows of the leadership watch decide whether this member is used.
fn vet_reply(
    reply: Result<Result<Value>, oneshot::error::RecvError>,
    leadership: &mut Leadership,
) -> Result<(), String> {
    match reply {
        Ok(Ok(initial)) => leadership
            .apply(&initial)
            .map_err(|why| format!("{why}; trying another member")),
        Ok(Err(e)) => Err(format!("monitoring _Server failed: {e:#}")),
        Err(_) => Err("the _Server monitor got no reply".to_string()),
    }
}

/// Handle every complete message in the buffer.
fn on_input(
    framer: &mut Framer,
    pending: &mut HashMap<u64, InFlight>,
    wtx: &mpsc::UnboundedSender<Vec<u8>>,
    events: Option<&mpsc::UnboundedSender<Event>>,
    mut leadership: Option<&mut Leadership>,
) -> Result<usize> {
    let mut msgs = Vec::new();
    framer.frames(|bytes| {
        msgs.push(serde_json::from_slice::<Value>(bytes).context("malformed JSON-RPC message"));
    })?;
    let n = msgs.len();
    for m in msgs {
        let m = m?;
        if let Some(method) = m.get("method").and_then(Value::as_str) {
            // Requests and notifications from the server. `echo` is the server's inactivity
            // probe and needs an answer; the rest goes to the subscriber, if any.
            if method == "echo" {
                let id = m.get("id").cloned().unwrap_or(Value::Null);
                let params = m.get("params").cloned().unwrap_or_else(|| json!([]));
                let reply = json!({"result": params, "error": null, "id": id});
                let _ = wtx.send(serde_json::to_vec(&reply).unwrap_or_default());
            } else if let Some(l) = leadership.as_deref_mut()
                && let Some(update) = Leadership::update_of(&m)
            {
                // A change of leader (or of the member's link to its cluster): drop it.
                l.apply(update)
                    .map_err(|why| anyhow!("{why}; moving to another member"))?;
            } else if let Some(ev) = events {
                let _ = ev.send(Event::Notification(m));
            }
            continue;
        }
        let Some(id) = m.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let Some(p) = pending.remove(&id) else {
            continue;
        };
        let res = match m.get("error") {
            Some(e) if !e.is_null() => Err(anyhow!("OVSDB server error to {}: {e}", p.method)),
            _ => Ok(m.get("result").cloned().unwrap_or(Value::Null)),
        };
        let _ = p.reply.send(res);
    }
    Ok(n)
}

/// Splits a byte stream of concatenated JSON objects (OVSDB does not delimit messages) by
/// tracking bracket depth outside strings; each byte is looked at once, so a multi-megabyte
/// reply arriving in many reads costs linear time.
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned (all belonging to the unfinished message).
    scanned: usize,
    depth: u32,
    in_str: bool,
    escaped: bool,
}

impl Framer {
    fn frames(&mut self, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
            } else {
                match b {
                    b'"' => self.in_str = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        if self.depth == 0 {
                            bail!("unbalanced JSON from the server");
                        }
                        self.depth -= 1;
                        if self.depth == 0 {
                            each(&self.buf[start..=i]);
                            start = i + 1;
                        }
                    }
                    b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => start = i + 1,
                    _ if self.depth == 0 => {
                        bail!("unexpected byte {b:#04x} between JSON-RPC messages")
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn split(chunks: &[&str]) -> Vec<String> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.buf.extend_from_slice(c.as_bytes());
            f.frames(|b| out.push(String::from_utf8_lossy(b).into_owned()))
                .unwrap();
        }
        out
    }

    #[test]
    fn frames_concatenated_and_split_messages() {
        assert_eq!(
            split(&[
                r#"{"a":1}{"b":"}{"}"#,
                "\n",
                r#"{"c":["x\"]",{"#,
                r#""d":2}]}"#
            ]),
            [r#"{"a":1}"#, r#"{"b":"}{"}"#, r#"{"c":["x\"]",{"d":2}]}"#]
        );
        assert_eq!(split(&[r#"{"s":"a\\"}"#]), [r#"{"s":"a\\"}"#]);
        let mut f = Framer::default();
        f.buf.extend_from_slice(b"x{}");
        assert!(f.frames(|_| {}).is_err());
    }

    #[test]
    fn transact_errors() {
        let cases = [
            (json!([{"count": 1}, {}]), None),
            (
                json!([{"count": 1}, {"error": "constraint violation", "details": "x"}]),
                Some("operation 1: \"constraint violation\" x"),
            ),
            (json!([{"error": null}]), None),
            (
                json!({"error": "e"}),
                Some("OVSDB transact reply is not an array: {\"error\":\"e\"}"),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(transact_error(&reply).as_deref(), want, "{reply}");
        }
    }

    #[test]
    fn parses_remotes() {
        assert_eq!(
            Remote::parse("unix:/run/ovn/ovnnb_db.sock"),
            Some(Remote::Unix("/run/ovn/ovnnb_db.sock".into()))
        );
        assert_eq!(
            Remote::parse("tcp:127.0.0.1:6641"),
            Some(Remote::Tcp("127.0.0.1:6641".parse().unwrap()))
        );
        assert_eq!(
            Remote::parse("tcp:[::1]:6641").map(|r| r.to_string()),
            Some("tcp:[::1]:6641".to_string())
        );
        assert_eq!(
            Remote::parse("ssl:127.0.0.1:6641"),
            Some(Remote::Ssl("127.0.0.1:6641".parse().unwrap()))
        );
        assert_eq!(
            Remote::parse("ssl:[::1]:6641").map(|r| r.to_string()),
            Some("ssl:[::1]:6641".to_string())
        );
        for other in [
            "ssl:1.1.1.1:1,ssl:1.1.1.2:1",
            "ssl:host:6641",
            "pssl:6641",
            "tcp:1.1.1.1:1,tcp:1.1.1.2:1",
            "ptcp:6641",
            "unix:",
        ] {
            assert_eq!(Remote::parse(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn answers_echo_and_routes_replies_by_id() {
        let dir = std::env::temp_dir().join(format!("ovnkube-jsonrpc-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Probe first, then answer two requests in reverse order, split oddly.
            s.write_all(br#"{"method":"echo","params":["p"],"id":"echo"}"#)
                .await
                .unwrap();
            let mut f = Framer::default();
            let mut got: Vec<Value> = Vec::new();
            // Our own echo probe, the two requests, and the answer to the server's echo.
            while got.len() < 4 {
                s.read_buf(&mut f.buf).await.unwrap();
                f.frames(|b| got.push(serde_json::from_slice(b).unwrap()))
                    .unwrap();
            }
            let echo = got.iter().find(|m| m["id"] == "echo").unwrap();
            assert_eq!(echo["result"], json!(["p"]));
            let reqs: Vec<&Value> = got.iter().filter(|m| m["method"] == "transact").collect();
            let ids: Vec<u64> = reqs.iter().map(|m| m["id"].as_u64().unwrap()).collect();
            let r1 = json!({"id": ids[1], "result": reqs[1]["params"], "error": null});
            let r0 = json!({"id": ids[0], "result": null, "error": "boom"});
            let all = format!("{r1}{r0}");
            let (a, b) = all.split_at(5);
            s.write_all(a.as_bytes()).await.unwrap();
            s.write_all(b.as_bytes()).await.unwrap();
            s
        });
        let c = Client::start(Remote::Unix(sock.clone()), Duration::from_secs(5));
        let (r0, r1) = tokio::join!(
            c.call("transact", json!(["x"])),
            c.call("transact", json!(["y"]))
        );
        let (first, second) = if r0.is_err() { (r0, r1) } else { (r1, r0) };
        assert!(format!("{:#}", first.unwrap_err()).contains("boom"));
        assert!(second.unwrap().is_array());
        drop(server.await.unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tls_session_that_fails_before_any_answer_is_a_tls_failure() {
        let f = |flag: &str| crate::config::CertFile {
            flag: flag.into(),
            path: "/x.pem".into(),
        };
        let tls = ClientTls {
            privkey: f("-nb-client-privkey"),
            cert: f("-nb-client-cert"),
            cacert: f("-nb-client-cacert"),
        };
        for (answered, tls, kind) in [
            (false, Some(&tls), FailKind::Tls),
            (true, Some(&tls), FailKind::Unreachable),
            (false, None, FailKind::Unreachable),
        ] {
            let (why, got) = session_failure("reading: alert".into(), answered, tls);
            assert_eq!(got, kind, "answered={answered}");
            assert!(why.contains("reading: alert"), "{why}");
            assert_eq!(
                why.contains("-nb-client-cert"),
                kind == FailKind::Tls,
                "{why}"
            );
        }
    }

    #[test]
    fn link_state_logs_once_per_change_of_state() {
        use FailKind::{Tls, Unreachable};
        use LinkLog::*;
        let mut l = LinkState::default();
        let steps: Vec<Option<LinkLog>> = vec![
            l.failed("refused", Unreachable),
            l.failed("refused", Unreachable),
            l.failed("closed", Unreachable),
            l.answered(),
            l.answered(),
            l.failed("closed", Unreachable),
            l.failed("reset", Unreachable),
            l.answered(),
            l.failed("refused", Unreachable),
            l.failed("bad CA", Tls),
            l.failed("bad CA", Tls),
            l.answered(),
        ];
        assert_eq!(
            steps,
            [
                Some(Failing("refused".into())),
                None,
                None,
                Some(Established { reconnect: false }),
                None,
                Some(Lost("closed".into())),
                None,
                Some(Established { reconnect: true }),
                Some(Lost("refused".into())),
                Some(Failing("bad CA".into())),
                None,
                Some(Established { reconnect: true }),
            ]
        );
    }

    /// A log sink for one test (the subscriber is per thread; `#[tokio::test]` runs the
    /// connection task on that thread).
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn install(&self) -> tracing::subscriber::DefaultGuard {
            let me = self.clone();
            let sub = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || me.clone())
                .finish();
            tracing::subscriber::set_default(sub)
        }
        fn lines(&self, needle: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect()
        }
    }

    /// A loopback peer that answers every connection with `reply` (after reading what the
    /// client sent first) and closes it; counts the connections.
    async fn bad_peer(
        reply: &'static [u8],
    ) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        let count = n.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if !reply.is_empty() {
                    let mut buf = [0u8; 512];
                    let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
                    let _ = s.write_all(reply).await;
                }
                drop(s);
            }
        });
        (addr, n)
    }

    /// Watch a client against `addr` for `secs`; returns (requests that failed, logs).
    async fn watch(addr: SocketAddr, secs: u64) -> Logs {
        let logs = Logs::default();
        let _guard = logs.install();
        let c = Client::start(Remote::Tcp(addr), Duration::from_secs(2));
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            // Callers keep asking meanwhile; they must get errors, not hangs.
            let r = c.call("list_dbs", json!([])).await;
            assert!(r.is_err(), "a bad peer cannot answer: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(c);
        logs
    }

    fn assert_backed_off(what: &str, attempts: usize, logs: &Logs) {
        // 3 s of 100 ms doubling (jittered to half..full): 5 or 6 attempts; without backoff
        // a peer that closes at once sees tens of thousands.
        assert!(
            (3..=8).contains(&attempts),
            "{what}: {attempts} connection attempts in 3 s"
        );
        let warns = logs.lines("WARN");
        assert_eq!(
            warns.len(),
            1,
            "{what}: one log line per state change: {warns:#?}"
        );
        assert!(
            warns[0].contains("OVSDB server unavailable"),
            "{}",
            warns[0]
        );
        assert!(logs.lines("connection established").is_empty());
    }

    #[tokio::test]
    async fn backs_off_from_a_peer_that_accepts_and_closes() {
        let (addr, n) = bad_peer(b"").await;
        let logs = watch(addr, 3).await;
        assert_backed_off(
            "accept+close",
            n.load(std::sync::atomic::Ordering::SeqCst),
            &logs,
        );
    }

    #[tokio::test]
    async fn backs_off_from_a_peer_that_answers_http() {
        let (addr, n) = bad_peer(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        let logs = watch(addr, 3).await;
        assert_backed_off(
            "HTTP 400",
            n.load(std::sync::atomic::Ordering::SeqCst),
            &logs,
        );
    }

    #[tokio::test]
    async fn backs_off_from_a_refused_port_and_logs_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let logs = watch(addr, 2).await;
        let warns = logs.lines("WARN");
        assert_eq!(warns.len(), 1, "{warns:#?}");
        assert!(warns[0].contains("refused"), "{}", warns[0]);
    }

    /// A fake cluster member on a unix socket: answers `echo`, the `_Server` monitor (with a
    /// leader flag the test flips, pushed as an `update` on every flip) and `transact` (counted).
    async fn fake_member(
        sock: PathBuf,
        leader: tokio::sync::watch::Receiver<bool>,
        transacts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let row = |leader: bool| {
            json!({"Database": {"u1": {"new": {"name": "OVN_Northbound", "model": "clustered",
                "connected": true, "leader": leader, "index": 5}}}})
        };
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        while let Ok((s, _)) = listener.accept().await {
            let (mut leader, transacts) = (leader.clone(), transacts.clone());
            tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(s);
                let mut f = Framer::default();
                loop {
                    let mut msgs: Vec<Value> = Vec::new();
                    tokio::select! {
                        n = rd.read_buf(&mut f.buf) => {
                            if !matches!(n, Ok(n) if n > 0) {
                                return;
                            }
                            f.frames(|b| msgs.push(serde_json::from_slice(b).unwrap())).unwrap();
                        }
                        c = leader.changed() => {
                            if c.is_err() {
                                return;
                            }
                            let now = *leader.borrow_and_update();
                            let up = json!({"method": "update", "id": null,
                                            "params": [super::super::cluster::LEADERSHIP_MONITOR, row(now)]});
                            let _ = wr.write_all(up.to_string().as_bytes()).await;
                        }
                    }
                    for m in msgs {
                        let result = match m["method"].as_str() {
                            Some("monitor") => row(*leader.borrow_and_update()),
                            Some("transact") => {
                                transacts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                json!([])
                            }
                            _ => m["params"].clone(),
                        };
                        let reply = json!({"id": m["id"], "result": result, "error": null});
                        let _ = wr.write_all(reply.to_string().as_bytes()).await;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_cluster_is_served_by_its_leader_and_a_leader_change_moves_the_connection() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let dir = std::env::temp_dir().join(format!("ovnkube-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a_tx, a_rx) = tokio::sync::watch::channel(false);
        let (b_tx, b_rx) = tokio::sync::watch::channel(true);
        let (a_n, b_n) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        tokio::spawn(fake_member(dir.join("a.sock"), a_rx, a_n.clone()));
        tokio::spawn(fake_member(dir.join("b.sock"), b_rx, b_n.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let members = Members::cluster(
            vec![
                Remote::Unix(dir.join("a.sock")),
                Remote::Unix(dir.join("b.sock")),
            ],
            "OVN_Northbound",
        );
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let c = Client::start_members(members, None, Duration::from_secs(5), Some(ev_tx));
        let until_ok = || async {
            for _ in 0..100 {
                if c.call("transact", json!(["OVN_Northbound"])).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no member served the request");
        };
        until_ok().await;
        assert_eq!(
            (a_n.load(SeqCst), b_n.load(SeqCst)),
            (0, 1),
            "only the leader serves"
        );
        // Leadership moves from b to a without any connection failing: the update alone
        // moves the client, and the next request lands on a.
        let next_event = |rx: &mut mpsc::UnboundedReceiver<Event>| {
            let ev = rx.try_recv();
            match ev {
                // The watch's own updates are not passed on.
                Ok(Event::Notification(m)) => panic!("leaked notification {m}"),
                other => other.ok(),
            }
        };
        assert!(matches!(next_event(&mut ev_rx), Some(Event::Connected)));
        assert!(next_event(&mut ev_rx).is_none());
        a_tx.send(true).unwrap();
        b_tx.send(false).unwrap();
        // No request is made meanwhile: the update alone must move the connection.
        let ev = tokio::time::timeout(Duration::from_secs(5), ev_rx.recv()).await;
        assert!(
            matches!(ev, Ok(Some(Event::Connected))),
            "no move to the new leader: {ev:?}"
        );
        until_ok().await;
        assert_eq!(
            (a_n.load(SeqCst), b_n.load(SeqCst)),
            (1, 1),
            "served by the new leader"
        );
        assert!(next_event(&mut ev_rx).is_none());
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
