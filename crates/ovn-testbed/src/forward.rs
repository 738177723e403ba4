//! A TCP forwarder from a chassis netns's loopback to an address reachable from the root
//! netns (e.g. the Kubernetes API stand-in on 127.0.0.1 of the root netns, which a process
//! inside the chassis netns cannot reach, G8).
//!
//! A socket stays in the network namespace it was created in: the listener is bound by a
//! thread that first enters the chassis netns (`setns`), while the outbound connections are
//! made by a thread that never left the caller's namespace.

use anyhow::{Context, Result, anyhow, bail};
use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Forwards `127.0.0.1:<port>` inside a netns to a target; stopped (listener closed, open
/// connections shut down) on Drop.
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// The listening address inside the netns (useful when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` inside the netns.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn start(netns: &str, port: u16, target: SocketAddr) -> Result<Forwarder> {
        let ns_path = PathBuf::from(crate::NETNS_DIR).join(netns);
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr>>();
        let (conn_tx, conn_rx) = mpsc::channel::<TcpStream>();

        let stop_a = stop.clone();
        let acceptor = thread::Builder::new()
            .name(format!("fwd-accept-{port}"))
            .spawn(move || {
                let listener = match bind_in_netns(&ns_path, port) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(listener.local_addr().map_err(Into::into));
                // Non-blocking accept with a short sleep, so Drop can stop us.
                while !stop_a.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            if conn_tx.send(s).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .context("spawning the forwarder's accept thread")?;

        // Spawned from the caller's thread, so it (and what it spawns) stays in the caller's netns.
        let conns_d = conns.clone();
        let dispatcher = thread::Builder::new()
            .name(format!("fwd-dispatch-{port}"))
            .spawn(move || {
                for inbound in conn_rx {
                    let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    else {
                        continue; // Dropping `inbound` closes it: the client sees a reset.
                    };
                    let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
                        continue;
                    };
                    if let (Ok(mut l), Ok(a), Ok(b)) =
                        (conns_d.lock(), inbound.try_clone(), outbound.try_clone())
                    {
                        l.push(a);
                        l.push(b);
                    }
                    pipe(inbound, outbound);
                    pipe(out2, in2);
                }
            })
            .context("spawning the forwarder's dispatch thread")?;

        let mut fwd = Forwarder {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            stop,
            conns,
            acceptor: Some(acceptor),
            dispatcher: Some(dispatcher),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(addr)) => {
                fwd.addr = addr;
                Ok(fwd)
            }
            Ok(Err(e)) => Err(e.context(format!("forwarding 127.0.0.1:{port} in netns {netns}"))),
            Err(_) => Err(anyhow!(
                "forwarder for 127.0.0.1:{port} in netns {netns} did not start"
            )),
        }
    }
}

fn bind_in_netns(ns_path: &PathBuf, port: u16) -> Result<TcpListener> {
    let f = File::open(ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    // SAFETY: setns on a valid, open netns fd; it only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({}) failed: {}",
            ns_path.display(),
            std::io::Error::last_os_error()
        );
    }
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Copies `from` → `to` on its own thread; half-closes `to` at EOF.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = thread::Builder::new()
        .name("fwd-pipe".into())
        .spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // The acceptor is gone, so the dispatcher's channel is closed and it ends too.
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        let conns = match self.conns.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}
