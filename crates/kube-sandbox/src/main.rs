//! `kube-sandbox` binary: run the sandbox API server until SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kube_sandbox::{Sandbox, SandboxConfig};

/// A small Kubernetes API server stand-in for tests and local demos.
#[derive(Parser, Debug)]
#[command(name = "kube-sandbox", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this server (context `sandbox`) to this file.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Number of watch events retained for replay.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Service cluster IP range.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = SandboxConfig {
        history_limit: args.history,
        service_cidr: args.service_cidr,
        ..SandboxConfig::default()
    };
    // Handlers first: whoever waits for the "listening" line may signal us right after it.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let sandbox = Sandbox::start(args.listen, cfg).await?;
    if let Some(path) = &args.kubeconfig_out {
        sandbox.write_kubeconfig(path)?;
    }
    // Scripts wait for this exact line, so print it only after binding (and the kubeconfig).
    let mut out = std::io::stdout();
    writeln!(out, "kube-sandbox listening on {}", sandbox.url())?;
    out.flush()?;

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    sandbox.shutdown().await;
    Ok(())
}
