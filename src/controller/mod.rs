//! `-net-controller`: the controllers that turn cluster objects into NB state: pods (logical
//! ports, addresses, the `ovn` annotation) and services (load-balancer VIPs).

pub mod ipam;
pub mod pods;
pub mod pods_plan;
pub mod services;

use anyhow::Result;

use crate::app::Ctx;
use crate::master::tokio_util_shim::CancelToken;

/// Run the net-controller until `cancel` fires.
pub async fn run(ctx: Ctx, cancel: CancelToken) -> Result<()> {
    pods::PodController::new(ctx.nb.clone(), ctx.client.clone())
        .run(cancel)
        .await
}
