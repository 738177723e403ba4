//! The CNI plugin `ovn-k8s-cni-overlay` (the `ovnkube` binary invoked under that name).
//!
//! Driven by the container runtime: `CNI_*` environment, the network config on stdin, the
//! result (or a CNI error object) on stdout. Errors exit 1 (the reference exited 0 for some,
//! so the runtime took a failed ADD for a success). Logs go to stderr (or `-logfile` from the
//! config file).

mod linux;
pub mod types;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::Value;

pub use linux::host_ifname;
use types::{CniEnv, CniError, Command, NetConf, PLUGIN_VERSION, code, version_info};

/// argv[0] (file name) that selects the plugin.
pub const PLUGIN_NAME: &str = "ovn-k8s-cni-overlay";

/// Run the plugin for this process's environment and stdin; the process exit code.
pub fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let result = run();
    // Best effort, for the node agent's request-duration histogram (see metrics::cni).
    if let Some(cmd) = std::env::var_os("CNI_COMMAND") {
        crate::metrics::report_cni_request(&cmd.to_string_lossy(), started.elapsed());
    }
    let (out, status) = match result {
        Ok(Some(v)) => (Some(v), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err((e, version)) => {
            eprintln!("{PLUGIN_NAME}: {e}");
            (Some(e.to_json(&version)), ExitCode::from(1))
        }
    };
    if let Some(v) = out {
        let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
        let mut so = std::io::stdout().lock();
        if writeln!(so, "{text}").and_then(|_| so.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
    status
}

/// What the environment and stdin ask for, once both are validated.
#[derive(Debug)]
pub enum Request {
    /// VERSION: answered without a config.
    Version,
    Run(Box<Prepared>),
}

/// A validated ADD/DEL/CHECK/STATUS/GC request.
#[derive(Debug)]
pub struct Prepared {
    pub env: CniEnv,
    pub conf: NetConf,
    pub version: String,
}

/// Validate the `CNI_*` environment (`get`) and the network config read from `stdin` (at
/// most [`crate::util::files::MAX_INPUT_BYTES`]) before anything is touched. On error, the
/// CNI error and the version to report it in.
pub fn prepare(
    get: impl Fn(&str) -> Option<String>,
    stdin: impl Read,
) -> Result<Request, (CniError, String)> {
    let plugin_v = || PLUGIN_VERSION.to_string();
    let env = CniEnv::from_vars(get).map_err(|e| (e, plugin_v()))?;
    let read = crate::util::files::read_capped(
        stdin,
        crate::util::files::MAX_INPUT_BYTES,
        "the network configuration on stdin",
    );
    if env.command == Command::Version {
        // The config on stdin only names the runtime's version; the answer does not depend on it.
        return Ok(Request::Version);
    }
    let stdin = read.map_err(|e| {
        (
            CniError::new(
                code::IO,
                format!("cannot read the network configuration from stdin: {e}"),
            ),
            plugin_v(),
        )
    })?;
    let (conf, version) = NetConf::parse(&stdin, env.command).map_err(|e| (e, plugin_v()))?;
    if env.command == Command::Add {
        // The pod's names reach the API URL: reject bad ones before any work.
        env.pod().map_err(|e| (e, version.clone()))?;
    }
    Ok(Request::Run(Box::new(Prepared { env, conf, version })))
}

fn run() -> Result<Option<Value>, (CniError, String)> {
    let req = prepare(
        |k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()),
        std::io::stdin().lock(),
    )?;
    let Request::Run(p) = req else {
        return Ok(Some(version_info()));
    };
    let Prepared { env, conf, version } = *p;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            (
                CniError::new(
                    code::GENERIC,
                    format!("cannot start the async runtime: {e}"),
                ),
                version.clone(),
            )
        })?;
    let res = rt.block_on(linux::dispatch(&env, &conf, &version));
    // Child processes are killed on drop; don't wait for stragglers.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    res.map_err(|e| (e, version))
}
