//! What the controllers learn about the northbound connection, whichever backend runs it.
//!
//! Two counters travel on a `watch` channel:
//! - `connection` goes up each time a connection becomes usable again after one was lost, so
//!   work that failed because the database was away is retried at once instead of waiting
//!   for each object's own backoff;
//! - `database` goes up when the server turns out to hold a different database than before
//!   (wiped, replaced or restored from a backup), so everything the controllers believe is
//!   programmed must be written again.
//!
//! A backend that cannot tell (plain `ovn-nbctl`) never changes either counter.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NbEpoch {
    pub connection: u64,
    pub database: u64,
}

/// The receiving side, one per consumer (clone it).
pub type NbSignals = watch::Receiver<NbEpoch>;

/// The sending side, kept by the backend that observes the connection.
#[derive(Debug)]
pub struct NbSignalSender(watch::Sender<NbEpoch>);

impl Default for NbSignalSender {
    fn default() -> Self {
        NbSignalSender(watch::channel(NbEpoch::default()).0)
    }
}

impl NbSignalSender {
    pub fn subscribe(&self) -> NbSignals {
        self.0.subscribe()
    }

    /// A connection became usable again after one was lost.
    pub fn reconnected(&self) {
        self.0.send_modify(|e| e.connection += 1);
    }

    /// The server holds a different database than before.
    pub fn new_database(&self) {
        self.0.send_modify(|e| e.database += 1);
    }

    pub fn current(&self) -> NbEpoch {
        *self.0.borrow()
    }
}

/// Signals that never change (for backends that cannot observe the connection).
pub fn constant() -> NbSignals {
    // The receiver keeps the last value after the sender is gone; `changed` reports the
    // closed channel, which `next_change` turns into "never".
    watch::channel(NbEpoch::default()).1
}

/// Wait for the next change; never returns when the sending side is gone, so it can sit in
/// a `select!` next to other work.
pub async fn next_change(rx: &mut NbSignals) -> NbEpoch {
    match rx.changed().await {
        Ok(()) => *rx.borrow_and_update(),
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reconnects_and_new_databases_are_counted_apart() {
        let tx = NbSignalSender::default();
        let mut rx = tx.subscribe();
        tx.reconnected();
        assert_eq!(
            next_change(&mut rx).await,
            NbEpoch {
                connection: 1,
                database: 0
            }
        );
        tx.new_database();
        assert_eq!(next_change(&mut rx).await.database, 1);
    }

    #[tokio::test]
    async fn constant_signals_never_fire() {
        let mut rx = constant();
        let waited = tokio::time::timeout(Duration::from_millis(50), next_change(&mut rx)).await;
        assert!(waited.is_err(), "a constant signal must not fire");
    }
}
