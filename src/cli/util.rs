//! `ovn-kube-util`: the NIC/bridge moves of `host::nic` and `trace`, as a command line.

use std::sync::Arc;

use crate::host::nic::Host;

/// The name of the program for argv[0] dispatch.
pub const UTIL_NAME: &str = "ovn-kube-util";

/// `ovn-kube-util [--help|-h] [--version|-v] COMMAND [ARGS]` (the reference's command set).
pub fn util_main(args: &[String]) -> std::process::ExitCode {
    use std::process::ExitCode;
    const HELP: &str = "NAME:\n   ovn-kube-util - Utils for kubernetes ovn\n\nUSAGE:\n   \
        ovn-kube-util [global options] command [command options] [arguments...]\n\nCOMMANDS:\n   \
        nics-to-bridge  Create ovs bridge for nic interfaces\n   \
        bridges-to-nic  Delete ovs bridge and move IP/routes to underlying NIC\n   \
        trace           Where a connection between pods/services goes (ovn-trace verdict)\n   \
        help, h         Shows a list of commands or help for one command\n";
    // Logging to stderr cannot fail to open.
    let _ = crate::util::logging::init(4, None);
    let (cmd, rest) = match args.split_first() {
        None => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some((c, r)) => (c.as_str(), r),
    };
    let (what, empty_msg) = match cmd {
        "--help" | "-h" | "help" | "h" => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        "--version" | "-v" => {
            println!("{UTIL_NAME} version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        "trace" => return crate::trace::main(rest),
        "nics-to-bridge" => (true, "Please specify list of nic interfaces"),
        "bridges-to-nic" => (false, "Please specify list of bridges"),
        other => {
            eprintln!("{UTIL_NAME}: No help topic for '{other}'");
            return ExitCode::from(3);
        }
    };
    if rest.is_empty() {
        tracing::error!("{empty_msg}");
        return ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let host = Host::new(Arc::new(crate::exec::RealExec::new(4)));
    let errors: Vec<String> = rt.block_on(async {
        let mut errors = Vec::new();
        for name in rest {
            let r = if what {
                host.nic_to_bridge(name).await.map(
                    |br| tracing::info!(nic = %name, bridge = %br, "NIC moved into its bridge"),
                )
            } else {
                host.bridge_to_nic(name)
                    .await
                    .map(|nic| tracing::info!(bridge = %name, %nic, "bridge removed; NIC restored"))
            };
            if let Err(e) = r {
                errors.push(format!("{name}: {e:#}"));
            }
        }
        errors
    });
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        tracing::error!("{}", errors.join("\n"));
        ExitCode::from(1)
    }
}
