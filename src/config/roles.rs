//! What the daemon needs beyond a well-formed command line: at least one role, and the
//! certificate files of every OVN connection the chosen roles make. The CNI plugin shares the
//! flag parser but has no role, so these checks are separate from parsing.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, OvnAuth};

/// The role flags, as an error message names them.
pub const ROLE_FLAGS: &str =
    "-init-master NAME, -init-node NAME, -net-controller or -remove-node NAME";

/// `ovnkube` with no role used to connect, sync and exit 0, which looks like success.
pub fn require_role(cfg: &Config) -> Result<(), ConfigError> {
    let any = cfg.init_master.is_some()
        || cfg.init_node.is_some()
        || cfg.net_controller
        || cfg.remove_node.is_some();
    if any {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "nothing to do: give a role with {ROLE_FLAGS} (see ovnkube -h)"
    )))
}

/// One certificate or key file a role will hand to OVN, named for an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// e.g. `-nb-client-privkey`.
    pub flag: String,
    pub path: PathBuf,
}

/// The private key, certificate and CA certificate of `auth`, each with the flag that names it
/// (`prefix` is e.g. `nb-client`: `-nb-client-privkey`, `-nb-client-cert`, `-nb-client-cacert`);
/// `None` where no file is configured.
pub fn auth_cert_files(auth: &OvnAuth, prefix: &str) -> [Option<CertFile>; 3] {
    let named = [
        ("privkey", &auth.privkey),
        ("cert", &auth.cert),
        ("cacert", &auth.cacert),
    ];
    named.map(|(what, path)| {
        path.as_ref().map(|p| CertFile {
            flag: format!("-{prefix}-{what}"),
            path: p.clone(),
        })
    })
}

fn auth_files(auth: &OvnAuth, prefix: &str, out: &mut Vec<CertFile>) {
    out.extend(auth_cert_files(auth, prefix).into_iter().flatten());
}

/// The files the configured roles read: every role talks to the NB as a client; the master
/// also configures the NB and SB servers and talks to the SB; a node points ovn-controller at
/// the SB with the SB client certificates. `-remove-node` only uses the NB client.
pub fn cert_files(cfg: &Config) -> Vec<CertFile> {
    let mut out = Vec::new();
    let master = cfg.init_master.is_some();
    let node = cfg.init_node.is_some();
    if cfg.remove_node.is_some() {
        auth_files(&cfg.ovn_north.client, "nb-client", &mut out);
        return out;
    }
    auth_files(&cfg.ovn_north.client, "nb-client", &mut out);
    if master {
        auth_files(&cfg.ovn_north.server, "nb-server", &mut out);
        auth_files(&cfg.ovn_south.server, "sb-server", &mut out);
    }
    if master || node {
        auth_files(&cfg.ovn_south.client, "sb-client", &mut out);
    }
    out
}

/// Every file from [`cert_files`] is a readable regular file.
pub fn check_cert_files(cfg: &Config) -> Result<(), ConfigError> {
    for f in cert_files(cfg) {
        check_readable(&f.path).map_err(|why| {
            ConfigError::new(format!(
                "{} {}: {why} (fix the path or create the file; the ssl scheme needs it)",
                f.flag,
                f.path.display()
            ))
        })?;
    }
    Ok(())
}

fn check_readable(p: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    std::fs::File::open(p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Everything `ovnkube` (the daemon) checks before it starts any role.
pub fn check_runnable(cfg: &Config) -> Result<(), ConfigError> {
    require_role(cfg)?;
    check_cert_files(cfg)
}
