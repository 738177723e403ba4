//! Host primitives the node agent and the CNI plugin share: `ip` reads and writes (`ip`), and
//! moving a NIC's addresses and routes onto an OVS bridge and back (`nic`). Everything runs
//! through the exec seam, so the callers' plans stay testable without the kernel.

pub mod ip;
pub mod nic;
