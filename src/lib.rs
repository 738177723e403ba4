//! `ovnkube`: the OVN-Kubernetes network controller.
//!
//! See `docs/architecture.md` for the module map.

pub mod exec;
pub mod ovn;
