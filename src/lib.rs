//! `ovnkube`: the OVN-Kubernetes network controller.
//!
//! See `docs/architecture.md` for the module map.

pub mod app;
pub mod config;
pub mod exec;
pub mod kube;
pub mod master;
pub mod ovn;
pub mod util;
