//! One binary, chosen by argv[0]: `ovnkube` (the daemon), `ovn-k8s-cni-overlay` (the CNI
//! plugin) and `ovn-kube-util` (`nics-to-bridge`/`bridges-to-nic`/`trace`); `make install` links them.

use std::ffi::OsString;
use std::process::ExitCode;

use ovnkube::config::{self, Invocation};
use ovnkube::util::logging::{self, Logging};
use ovnkube::util::pidfile::PidFile;
use ovnkube::util::ready::Readiness;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = run_as_invoked_name(&args) {
        return code;
    }
    let cfg = match daemon_config(&args) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let logging = match logging::init(cfg.logging.level, cfg.logging.file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ovnkube: {e}");
            return ExitCode::from(1);
        }
    };

    let daemon = cfg.init_master.is_some() || cfg.net_controller || cfg.init_node.is_some();
    // Only daemons keep a pid file (the later fix; one-shot commands leave none behind).
    let _pidfile = match (&cfg.pidfile, daemon && cfg.remove_node.is_none()) {
        (Some(p), true) => match PidFile::create(p) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    run_roles(cfg, logging)
}

/// The CNI plugin or `ovn-kube-util` when argv[0] names one of them; `None` for `ovnkube`.
fn run_as_invoked_name(args: &[OsString]) -> Option<ExitCode> {
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some(ovnkube::cni::PLUGIN_NAME) {
        return Some(ovnkube::cni::main());
    }
    if invoked_as.as_deref() == Some(ovnkube::cli::util::UTIL_NAME) {
        let rest: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Some(ovnkube::cli::util::util_main(&rest));
    }
    None
}

/// The configuration to run with, or the exit code: help and version print and succeed;
/// configuration errors end the process before anything starts.
fn daemon_config(args: &[OsString]) -> Result<config::Config, ExitCode> {
    let cfg = match config::parse_args(args.iter().skip(1).cloned()) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return Err(ExitCode::SUCCESS);
        }
        Ok(Invocation::Version(text)) => {
            println!("{text}");
            return Err(ExitCode::SUCCESS);
        }
        Ok(Invocation::Run(cfg)) => *cfg,
        Err(e) => {
            eprintln!("ovnkube: {e}");
            return Err(ExitCode::from(1));
        }
    };
    // A -logfile that cannot be opened ends the process too (a daemon told to log to a file
    // must not log elsewhere).
    if let Err(e) = config::check_runnable(&cfg) {
        eprintln!("ovnkube: {e}");
        return Err(ExitCode::from(1));
    }
    Ok(cfg)
}

/// Runs the configured roles until they end or a signal stops them.
fn run_roles(cfg: config::Config, logging: Logging) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let cancel_src = cancel.clone();
    let ready = Readiness::new();
    let result = rt.block_on(async move {
        // Before any role starts, so an early SIGHUP (logrotate) cannot kill the process.
        let mut signals = Signals::install();
        tokio::spawn(notify_when_ready(ready.clone()));
        let run = ovnkube::app::run(cfg, cancel, ready);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            sig = signals.shutdown(&logging) => {
                tracing::info!(signal = sig, "shutting down");
                notify_systemd(&[NotifyState::Stopping]);
                cancel_src.cancel();
                // Give the roles a moment to stop; their child commands are killed on drop.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), run).await;
                Ok(())
            }
        }
    });
    // Dropping the runtime drops every task and, with it, every child process (kill_on_drop).
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// The signals a daemon handles: SIGTERM/SIGINT stop it, SIGHUP reopens `-logfile`.
struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    fn install() -> Signals {
        let get = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(signal = name, error = %e, "cannot handle the signal; it keeps its default action");
                None
            }
        };
        Signals {
            term: get(SignalKind::terminate(), "SIGTERM"),
            int: get(SignalKind::interrupt(), "SIGINT"),
            hup: get(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// Serve SIGHUP (reopen the log file) until SIGTERM or SIGINT arrives; returns its name.
    async fn shutdown(&mut self, logging: &Logging) -> &'static str {
        async fn recv(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        loop {
            tokio::select! {
                _ = recv(&mut self.term) => return "SIGTERM",
                _ = recv(&mut self.int) => return "SIGINT",
                _ = recv(&mut self.hup) => match logging.reopen() {
                    Ok(Some(path)) => tracing::info!(path = %path.display(), "SIGHUP: log file reopened"),
                    Ok(None) => tracing::info!("SIGHUP: no -logfile to reopen"),
                    // Logging goes on into the old file; the operator sees why here.
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                },
            }
        }
    }
}

/// Tell systemd (only when it asked: `NOTIFY_SOCKET` is set) about a state change.
fn notify_systemd(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// `READY=1` once every role has finished its initial sync (Type=notify units).
async fn notify_when_ready(ready: Readiness) {
    ready.wait().await;
    tracing::info!("initial sync done; ready");
    notify_systemd(&[NotifyState::Ready, NotifyState::Status("initial sync done")]);
}
