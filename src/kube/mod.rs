//! Kubernetes side: client construction, informers, annotations.

pub mod client;
pub mod informer;
pub mod names;
pub mod outage;
pub mod shared;
pub mod token_file;

pub use informer::{Change, informer, key};
pub use shared::{Informers, Watch};
pub mod annotations;
pub mod events;
