//! A persistent OVSDB JSON-RPC (RFC 7047) connection: one tokio task owns the socket, numbers
//! the requests, routes each response to its caller by id, answers the server's `echo`, and
//! reconnects with backoff when the connection fails.
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

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the database listens. Only plain stream sockets: `ssl:` needs certificates and is
/// left to the exec backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Remote {
    /// `unix:PATH` or `tcp:IP:PORT` (`tcp:[v6]:PORT`); `None` for anything else (ssl, a list
    /// of cluster members, passive remotes).
    pub fn parse(target: &str) -> Option<Remote> {
        if target.contains(',') {
            return None;
        }
        if let Some(p) = target.strip_prefix("unix:") {
            return (!p.is_empty()).then(|| Remote::Unix(PathBuf::from(p)));
        }
        target.strip_prefix("tcp:")?.parse().ok().map(Remote::Tcp)
    }
}

/// Where `ovs-vsctl` finds the local Open vSwitch database by default.
const OVS_DEFAULT_RUNDIR: &str = "/var/run/openvswitch";

impl Remote {
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
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(remote: &Remote) -> Result<Box<dyn Io>> {
    let fut = async {
        Ok::<Box<dyn Io>, std::io::Error>(match remote {
            Remote::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            Remote::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                // Small request/response messages: latency matters more than packing.
                s.set_nodelay(true)?;
                Box::new(s)
            }
        })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("connecting to {remote} timed out"))?
        .with_context(|| format!("connecting to {remote}"))
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
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(remote.clone(), rx, timeout, events));
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

/// Owns the connection for its whole life: connect, serve, reconnect with backoff.
async fn run(
    remote: Remote,
    mut rx: mpsc::UnboundedReceiver<Req>,
    timeout: Duration,
    events: Option<mpsc::UnboundedSender<Event>>,
) {
    let mut delay = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut last_err = String::from("not connected yet");
    let mut was_up = false;
    loop {
        if Instant::now() >= retry_at {
            match connect(&remote).await {
                Ok(io) => {
                    tracing::info!(%remote, reconnect = was_up, "OVSDB connection established");
                    was_up = true;
                    delay = MIN_BACKOFF;
                    if let Some(ev) = &events {
                        let _ = ev.send(Event::Connected);
                    }
                    match serve(io, &mut rx, timeout, events.as_ref()).await {
                        None => return,
                        Some(e) => {
                            tracing::warn!(%remote, error = %e, "OVSDB connection lost; reconnecting");
                            last_err = e;
                            retry_at = Instant::now();
                            continue;
                        }
                    }
                }
                Err(e) => {
                    last_err = format!("{e:#}");
                    tracing::debug!(%remote, error = %last_err, ?delay, "OVSDB connect failed");
                    retry_at = Instant::now() + delay;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        tokio::select! {
            r = rx.recv() => match r {
                None => return,
                Some(req) => {
                    let _ = req.reply.send(Err(anyhow!(
                        "OVSDB server {remote} unavailable: {last_err}"
                    )));
                }
            },
            _ = tokio::time::sleep_until(retry_at) => {}
        }
    }
}

struct Pending {
    reply: oneshot::Sender<Result<Value>>,
    method: &'static str,
    deadline: Instant,
}

/// Serve one connection until it fails (`Some(why)`) or every handle is dropped (`None`).
/// In-flight requests of a failed connection get the failure: they may or may not have been
/// committed, which only the caller can sort out (by retrying an idempotent change).
async fn serve(
    io: Box<dyn Io>,
    rx: &mut mpsc::UnboundedReceiver<Req>,
    timeout: Duration,
    events: Option<&mpsc::UnboundedSender<Event>>,
) -> Option<String> {
    let (mut rd, mut wr) = tokio::io::split(io);
    // A separate writer so a large request never stalls reading (and vice versa).
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (werr_tx, mut werr_rx) = oneshot::channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(buf) = wrx.recv().await {
            if let Err(e) = wr.write_all(&buf).await {
                let _ = werr_tx.send(format!("writing: {e}"));
                return;
            }
        }
    });
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_id: u64 = 1;
    let mut framer = Framer::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let failure = loop {
        tokio::select! {
            r = rx.recv() => {
                let Some(req) = r else { break None };
                let id = next_id;
                next_id += 1;
                let msg = json!({"method": req.method, "params": req.params, "id": id});
                // Serialising a Value cannot fail.
                let bytes = serde_json::to_vec(&msg).unwrap_or_default();
                pending.insert(id, Pending {
                    reply: req.reply,
                    method: req.method,
                    deadline: Instant::now() + timeout,
                });
                if wtx.send(bytes).is_err() {
                    break Some("the writer stopped".to_string());
                }
            }
            n = rd.read_buf(&mut framer.buf) => match n {
                Ok(0) => break Some("the server closed the connection".to_string()),
                Err(e) => break Some(format!("reading: {e}")),
                Ok(_) => {
                    if let Err(e) = on_input(&mut framer, &mut pending, &wtx, events) {
                        break Some(format!("{e:#}"));
                    }
                }
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

/// Handle every complete message in the buffer.
fn on_input(
    framer: &mut Framer,
    pending: &mut HashMap<u64, Pending>,
    wtx: &mpsc::UnboundedSender<Vec<u8>>,
    events: Option<&mpsc::UnboundedSender<Event>>,
) -> Result<()> {
    let mut msgs = Vec::new();
    framer.frames(|bytes| {
        msgs.push(serde_json::from_slice::<Value>(bytes).context("malformed JSON-RPC message"));
    })?;
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
    Ok(())
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
        for other in [
            "ssl:127.0.0.1:6641",
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
            while got.len() < 3 {
                s.read_buf(&mut f.buf).await.unwrap();
                f.frames(|b| got.push(serde_json::from_slice(b).unwrap()))
                    .unwrap();
            }
            let echo = got.iter().find(|m| m["id"] == "echo").unwrap();
            assert_eq!(echo["result"], json!(["p"]));
            let reqs: Vec<&Value> = got.iter().filter(|m| m["method"].is_string()).collect();
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
}
