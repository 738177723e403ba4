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

/// The API stand-in, in-process (no root), and a client for it: for unit tests.
#[cfg(test)]
pub async fn test_sandbox() -> (kube_sandbox::Sandbox, kube::Client) {
    let sandbox = kube_sandbox::Sandbox::start(
        ([127, 0, 0, 1], 0).into(),
        kube_sandbox::SandboxConfig::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("starting the in-process API sandbox: {e:#}"));
    let url: http::Uri = sandbox
        .url()
        .parse()
        .unwrap_or_else(|e| panic!("the sandbox URL: {e}"));
    let client = kube::Client::try_from(kube::Config::new(url))
        .unwrap_or_else(|e| panic!("a client for the sandbox: {e}"));
    (sandbox, client)
}
