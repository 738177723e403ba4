//! The daemon against NB peers that fail in every way (a port that accepts and closes, one
//! that answers `HTTP/1.0 400`, a refused port): it keeps running, connects at a capped,
//! backed-off rate, and its log says so once per state change, not once per attempt.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Env;

const WATCH: Duration = Duration::from_secs(4);

/// A loopback peer answering each connection with `reply` (nothing: close at once); counts
/// connections until dropped.
struct BadPeer {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl BadPeer {
    fn start(reply: &'static [u8]) -> BadPeer {
        let ip = ovn_testbed::free_loopback_addr().unwrap().ip();
        let l = TcpListener::bind((ip, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        if !reply.is_empty() {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                            let mut buf = [0u8; 512];
                            let _ = conn.read(&mut buf);
                            let _ = conn.write_all(reply);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        BadPeer { addr, count, stop }
    }
}

impl Drop for BadPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the net-controller (native NB backend) against `nb` for [`WATCH`]; returns its log.
fn run_against(env: &Env, name: &str, nb: SocketAddr) -> String {
    let args = vec![
        format!("-k8s-kubeconfig={}", env.kubeconfig.display()),
        "-net-controller".to_string(),
        format!("-nb-address=tcp://{nb}"),
        "-loglevel=4".to_string(),
        format!("-config-file={}", env.dir.join("empty.conf").display()),
    ];
    std::fs::write(env.dir.join("empty.conf"), "").unwrap();
    let mut d = env.spawn(name, &args);
    let end = Instant::now() + WATCH;
    while Instant::now() < end {
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("{name}: ovnkube exited ({st}):\n{}", d.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = d.terminate();
    assert!(st.success(), "{name}: SIGTERM exit {st}:\n{}", d.log_text());
    d.log_text()
}

fn lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_off_from_bad_nb_peers_and_logs_state_changes_once() {
    let env = Env::start("reconnect").await;
    let http = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    for (name, reply) in [("close", &b""[..]), ("http400", &http[..])] {
        let peer = BadPeer::start(reply);
        let log = tokio::task::block_in_place(|| run_against(&env, name, peer.addr));
        let n = peer.count.load(Ordering::Relaxed);
        let unavailable = lines(&log, "OVSDB server unavailable");
        eprintln!(
            "{name}: {n} connections in {WATCH:?}, {} log bytes, {} 'unavailable' lines",
            log.len(),
            unavailable.len()
        );
        // The native connection backs off to ~5-10 s; controllers' reads that fall back to
        // ovn-nbctl back off on their own. Without backoff this was tens of thousands.
        assert!(n >= 2, "{name}: the peer was never tried ({n})");
        assert!(n <= 20, "{name}: {n} connections in {WATCH:?}");
        assert_eq!(unavailable.len(), 1, "{name}: {unavailable:#?}");
        assert!(
            lines(&log, "OVSDB connection established").is_empty(),
            "{log}"
        );
        assert!(log.len() < 200_000, "{name}: {} bytes of log", log.len());
    }
    // Refused: nothing listens.
    let addr = ovn_testbed::free_loopback_addr().unwrap();
    let log = tokio::task::block_in_place(|| run_against(&env, "refused", addr));
    let unavailable = lines(&log, "OVSDB server unavailable");
    assert_eq!(unavailable.len(), 1, "{unavailable:#?}");
    assert!(unavailable[0].contains("refused"), "{}", unavailable[0]);
}
