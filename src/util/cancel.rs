//! A minimal cancellation token on tokio's watch channel (no extra crate): the signal handler
//! cancels, every role's loop watches.

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct CancelToken(watch::Receiver<bool>);

#[derive(Debug)]
pub struct CancelSource(watch::Sender<bool>);

pub fn cancel_pair() -> (CancelSource, CancelToken) {
    let (tx, rx) = watch::channel(false);
    (CancelSource(tx), CancelToken(rx))
}

impl CancelSource {
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}

impl CancelToken {
    pub async fn cancelled(&mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                // The source is gone: nobody can cancel any more; wait forever.
                std::future::pending::<()>().await;
            }
        }
    }
}
