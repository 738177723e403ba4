//! One binary, chosen by argv[0]: `ovnkube` (the daemon), `ovn-k8s-cni-overlay` (the CNI
//! plugin) and `ovn-kube-util` (`nics-to-bridge`/`bridges-to-nic`/`trace`); `make install` links them.

use std::ffi::OsString;
use std::process::ExitCode;

use ovnkube::config::{self, Invocation};
use ovnkube::util::cancel::cancel_pair;
use ovnkube::util::{logging, pidfile::PidFile};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some(ovnkube::cni::PLUGIN_NAME) {
        return ovnkube::cni::main();
    }
    if invoked_as.as_deref() == Some(ovnkube::node::nic::UTIL_NAME) {
        let rest: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return ovnkube::node::nic::util_main(&rest);
    }
    let cfg = match config::parse_args(args.iter().skip(1).cloned()) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(cfg)) => *cfg,
        Err(e) => {
            eprintln!("ovnkube: {e}");
            return ExitCode::from(1);
        }
    };
    logging::init(cfg.logging.level, cfg.logging.file.as_deref());

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
    let (cancel_src, cancel) = cancel_pair();
    let result = rt.block_on(async move {
        let run = ovnkube::app::run(cfg, cancel);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            sig = shutdown_signal() => {
                tracing::info!(signal = sig, "shutting down");
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

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            std::future::pending::<()>().await;
            "none"
        }
    }
}
