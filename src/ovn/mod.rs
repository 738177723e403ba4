//! The OVN/OVS layer: typed `ovn-nbctl`/`ovs-vsctl` transactions, OVSDB values, and names.

pub mod addrs;
pub mod cluster;
pub mod ctl;
pub mod ensure;
pub mod error;
pub mod jsonrpc;
#[cfg(test)]
pub mod mem;
pub mod names;
pub mod native;
pub mod ovsdb;
pub mod proto;
pub mod schema;
pub mod signals;
pub mod tls;

pub use ctl::{Ctl, CtlTarget, Nb, NbOp, NbTxn, Nbctl, RoutePolicy, Vs, VsOp, VsTxn, Vsctl};
pub use error::{NbError, TxnFailure};
pub use native::NativeNb;
pub use ovsdb::{ColVal, DbOp, Query, Row, Val};
pub use proto::Proto;

use std::sync::Arc;

use anyhow::Result;

use crate::config::OvnAuth;
use crate::exec::Exec;

/// An `ovn-nbctl`/`ovn-sbctl` target honouring the configured client address and certificates
/// everywhere (the 2018 net-controller ignored `-nb-address`).
pub fn db_ctl(exec: Arc<dyn Exec>, program: &str, auth: &OvnAuth) -> Ctl {
    let mut t = CtlTarget::new(program);
    t.db_args = auth.ssl_args();
    if let Some(db) = auth.client_target() {
        t.db_args.push(format!("--db={db}"));
    }
    Ctl::new(exec, t)
}

/// `ovs-vsctl` against the local Open vSwitch database (found through `OVS_RUNDIR`).
pub fn vs_ctl(exec: Arc<dyn Exec>) -> Ctl {
    Ctl::new(exec, CtlTarget::new("ovs-vsctl"))
}

/// The NB backend: a persistent OVSDB connection for `unix:`/`tcp:`/`ssl:` targets and lists of
/// them (raft cluster members: only the leader is used). Without `-nb-address`, a process that
/// writes the NB (`writes_nb`: the master roles) connects to the database `ovn-nbctl` would use
/// by default; any other (a node agent) keeps `ovn-nbctl`, so that a host without a local NB is
/// not told every few seconds that it has none. `OVNKUBE_NB_BACKEND=exec` forces `ovn-nbctl`
/// (for comparisons).
/// Needs a tokio runtime (the connection is a task). Certificate files that cannot be used are
/// a configuration error.
pub fn nb_backend(exec: Arc<dyn Exec>, auth: &OvnAuth, writes_nb: bool) -> Result<Arc<dyn Nb>> {
    // Every NB transaction of every role is timed here, whichever backend runs it.
    Ok(Arc::new(crate::metrics::MeteredNb(nb_backend_inner(
        exec, auth, writes_nb,
    )?)))
}

/// The prefix of the NB client's certificate flags (`-nb-client-privkey` …).
const NB_CLIENT_FLAGS: &str = "nb-client";

fn nb_backend_inner(exec: Arc<dyn Exec>, auth: &OvnAuth, writes_nb: bool) -> Result<Arc<dyn Nb>> {
    let ctl = db_ctl(exec, "ovn-nbctl", auth);
    let timeout = ctl.target().timeout;
    let nbctl: Arc<dyn Nb> = Arc::new(Nbctl(ctl));
    let forced_exec = std::env::var("OVNKUBE_NB_BACKEND").is_ok_and(|v| v == "exec");
    // Without -nb-address, the database ovn-nbctl itself would use (the local socket).
    let target = auth
        .client_target()
        .or_else(|| writes_nb.then(jsonrpc::Remote::local_nb_target));
    let members = target
        .filter(|_| !forced_exec)
        .and_then(|t| native_members(&t));
    let Some(members) = members else {
        tracing::info!("NB backend: ovn-nbctl");
        return Ok(nbctl);
    };
    let tls = tls::ClientTls::from_auth(auth, NB_CLIENT_FLAGS)?;
    if let Some(t) = &tls {
        t.check()?;
    }
    let remote = members.describe();
    tracing::info!(%remote, clustered = members.db().is_some(), "NB backend: native OVSDB connection");
    Ok(Arc::new(NativeNb::start_members(
        members, tls, nbctl, timeout,
    )))
}

/// One server, or the members of a cluster, when every one has a native form.
fn native_members(target: &str) -> Option<cluster::Members> {
    if let Some(list) = cluster::parse_members(target) {
        return Some(cluster::Members::cluster(list, native::DB));
    }
    jsonrpc::Remote::parse(target).map(cluster::Members::single)
}
