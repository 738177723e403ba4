//! The OVN/OVS layer: typed `ovn-nbctl`/`ovs-vsctl` transactions, OVSDB values, and names.

pub mod ctl;
pub mod names;
pub mod ovsdb;

pub use ctl::{Ctl, CtlTarget, Nb, NbOp, NbTxn, Nbctl, RoutePolicy, Vs, VsOp, VsTxn, Vsctl};
pub use ovsdb::{ColVal, DbOp, Query, Row, Val};
