//! Kubernetes side: client construction, informers, annotations.

pub mod client;
pub mod informer;
pub mod names;
pub mod token_file;

pub use informer::{Change, informer, key};
pub mod annotations;
pub mod events;
