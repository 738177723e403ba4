//! CNI request durations. The plugin is a short-lived process started by the container
//! runtime, so it cannot be scraped: after each request it sends one datagram
//! (`<COMMAND> <seconds>`) to a unix datagram socket that the node agent listens on and turns
//! into `ovnkube_node_cni_request_duration_seconds`. A datagram never blocks the plugin and
//! needs no cleanup: when no node agent listens (metrics off, agent restarting) the send fails
//! at once and the sample is dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use tokio_util::sync::CancellationToken;

/// Where the node agent listens and the plugin sends, unless overridden by
/// [`CNI_METRICS_SOCKET_ENV`].
pub const DEFAULT_CNI_METRICS_SOCKET: &str = "/var/run/ovn-kubernetes/cni-metrics.sock";
/// Overrides the socket path in both the node agent and the plugin.
pub const CNI_METRICS_SOCKET_ENV: &str = "OVNKUBE_CNI_METRICS_SOCKET";

/// One CNI request as the plugin reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct CniSample {
    pub command: String,
    pub seconds: f64,
}

impl CniSample {
    fn encode(&self) -> String {
        format!("{} {:.6}", self.command, self.seconds)
    }

    /// Parses a datagram; anything unexpected (another sender, garbage) is `None`.
    fn parse(text: &str) -> Option<CniSample> {
        let mut it = text.split_ascii_whitespace();
        let command = it.next()?;
        let seconds: f64 = it.next()?.parse().ok()?;
        let known = ["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&command);
        if !known || it.next().is_some() || !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        Some(CniSample {
            command: command.to_string(),
            seconds,
        })
    }
}

pub(crate) fn socket_path() -> PathBuf {
    std::env::var_os(CNI_METRICS_SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CNI_METRICS_SOCKET))
}

/// Called by the plugin once per request; best effort, never fails the request.
pub fn report_cni_request(command: &str, took: Duration) {
    let sample = CniSample {
        command: command.to_ascii_uppercase(),
        seconds: took.as_secs_f64(),
    };
    if CniSample::parse(&sample.encode()).is_none() {
        return;
    }
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(sample.encode().as_bytes(), socket_path());
    }
}

/// The node agent's side: bind the socket (replacing a stale one) and record every sample
/// until `cancel` fires.
pub(crate) fn listen(cancel: CancellationToken) -> Result<impl Future<Output = ()> + Send> {
    let path = socket_path();
    let sock = bind(&path)?;
    tracing::info!(path = %path.display(), "receiving CNI request durations");
    Ok(async move {
        let mut buf = [0u8; 256];
        let mut failing =
            crate::util::retry::Retrying::new("CNI metrics socket", crate::util::retry::DEPENDENCY);
        loop {
            let got = tokio::select! {
                _ = cancel.cancelled() => break,
                r = sock.recv(&mut buf) => r,
            };
            match got {
                Ok(n) => {
                    failing.succeeded();
                    match CniSample::parse(&String::from_utf8_lossy(&buf[..n])) {
                        Some(s) => super::get().cni_request(&s),
                        None => tracing::debug!("ignoring a malformed CNI metrics datagram"),
                    }
                }
                Err(e) => {
                    if failing.failed(e.into(), &cancel).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    })
}

fn bind(path: &Path) -> Result<tokio::net::UnixDatagram> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the CNI metrics socket", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing the stale socket {}", path.display()));
        }
    }
    tokio::net::UnixDatagram::bind(path)
        .with_context(|| format!("binding the CNI metrics socket {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_format_round_trips_and_rejects_garbage() {
        let s = CniSample {
            command: "ADD".into(),
            seconds: 0.25,
        };
        assert_eq!(s.encode(), "ADD 0.250000");
        assert_eq!(CniSample::parse(&s.encode()), Some(s));
        for bad in [
            "",
            "ADD",
            "ADD x",
            "ADD -1",
            "ADD NaN",
            "ADD 1 2",
            "VERSION 0.1",
            "add 0.1",
        ] {
            assert_eq!(CniSample::parse(bad), None, "{bad:?}");
        }
    }
}
