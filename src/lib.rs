//! `ovnkube`: the OVN-Kubernetes network controller.
//!
//! See `docs/architecture.md` for the module map.

pub mod app;
pub mod cli;
pub mod cni;
pub mod config;
pub mod controller;
pub mod exec;
pub mod host;
pub mod kube;
pub mod master;
pub mod metrics;
pub mod node;
pub mod ovn;
pub mod trace;
pub mod util;

#[cfg(test)]
mod props;
