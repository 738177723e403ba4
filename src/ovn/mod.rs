//! The OVN/OVS layer: typed `ovn-nbctl`/`ovs-vsctl` transactions, OVSDB values, and names.

pub mod addrs;
pub mod ctl;
pub mod names;
pub mod ovsdb;

pub use ctl::{Ctl, CtlTarget, Nb, NbOp, NbTxn, Nbctl, RoutePolicy, Vs, VsOp, VsTxn, Vsctl};
pub use ovsdb::{ColVal, DbOp, Query, Row, Val};

use std::sync::Arc;

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
