//! NB transaction timing: one decorator around whichever `Nb` backend the process uses, so
//! every transaction of every controller is measured at one place.

use std::sync::Arc;
use std::time::Instant;

use crate::exec::BoxFuture;
use anyhow::Result;

use crate::ovn::{Nb, NbError, NbTxn, Query, Row};

pub struct MeteredNb(pub Arc<dyn Nb>);

impl Nb for MeteredNb {
    fn transact<'a>(&'a self, txn: &'a NbTxn) -> BoxFuture<'a, Result<(), NbError>> {
        Box::pin(async move {
            let start = Instant::now();
            let res = self.0.transact(txn).await;
            super::get().nb_transaction(start.elapsed(), res.is_ok());
            res
        })
    }

    fn query<'a>(&'a self, queries: &'a [Query]) -> BoxFuture<'a, Result<Vec<Vec<Row>>>> {
        self.0.query(queries)
    }

    fn signals(&self) -> crate::ovn::signals::NbSignals {
        self.0.signals()
    }
}

/// NB tables whose row counts are exported (what grows with policies, services and pods).
const COUNTED_TABLES: [&str; 5] = [
    "ACL",
    "Address_Set",
    "Port_Group",
    "Load_Balancer",
    "Logical_Switch_Port",
];

/// How often the master re-counts (a read of the `_uuid` column only).
const COUNT_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// The master's periodic row count of [`COUNTED_TABLES`], until `cancel` fires.
pub(crate) async fn count_nb_objects(nb: Arc<dyn Nb>, cancel: tokio_util::sync::CancellationToken) {
    let queries: Vec<Query> = COUNTED_TABLES
        .iter()
        .map(|t| Query::list(t, &["_uuid"]))
        .collect();
    loop {
        match nb.query(&queries).await {
            Ok(tables) => {
                for (t, rows) in COUNTED_TABLES.iter().zip(&tables) {
                    super::get().nb_objects(t, rows.len());
                }
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "counting NB rows for metrics"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(COUNT_PERIOD) => {}
        }
    }
}
