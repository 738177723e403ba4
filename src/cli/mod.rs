//! Command-line front ends that are not the `ovnkube` daemon itself, picked by argv[0]
//! (`main.rs`).

pub mod util;
