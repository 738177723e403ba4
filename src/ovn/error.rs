//! Why an NB transaction failed, in the terms a caller decides on: try the same again later,
//! re-read the database and plan again, or give up on this transaction. Every backend
//! classifies its own failures here, so no caller reads error text.

use std::fmt;

/// What kind of failure an [`NbError`] is. Nothing of the transaction was applied in any case
/// (a timeout may hide a commit: the next plan, made from a fresh read, finds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnFailure {
    /// The database could not be reached or did not answer in time (connection down, no
    /// replica yet, a timeout, this process not the leader). The same transaction may work
    /// later; re-reading now would fail alike.
    Unavailable,
    /// The database refused the transaction against what it holds now: a concurrent change
    /// aborted it, a constraint or a reference failed, or a command's object is missing or
    /// held by another (what `ovn-nbctl` refuses). Re-read and plan again.
    Conflict,
    /// The transaction or the configuration is wrong (a record name the command line would
    /// misread, a request the server cannot parse, certificates that cannot be used):
    /// the same transaction fails again whatever the database holds.
    Invalid,
}

/// A failed NB transaction: its [`TxnFailure`] and the error with its context. It reads as
/// the error it wraps (`{}` its outermost message, `{:#}` the whole chain) and its sources
/// are that error's causes, so wrapping it in `anyhow` context changes no message and
/// `downcast_ref` still finds the causes (a [`crate::config::ConfigError`], say).
pub struct NbError {
    kind: TxnFailure,
    error: anyhow::Error,
}

impl NbError {
    pub fn new(kind: TxnFailure, error: impl Into<anyhow::Error>) -> Self {
        NbError {
            kind,
            error: error.into(),
        }
    }

    pub fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        NbError::new(TxnFailure::Unavailable, error)
    }

    pub fn conflict(error: impl Into<anyhow::Error>) -> Self {
        NbError::new(TxnFailure::Conflict, error)
    }

    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        NbError::new(TxnFailure::Invalid, error)
    }

    pub fn kind(&self) -> TxnFailure {
        self.kind
    }

    /// The same failure with `context` in front of its message.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Self {
        NbError {
            kind: self.kind,
            error: self.error.context(context),
        }
    }

    /// The kind of the NB failure somewhere in `e`'s chain (after callers added context).
    pub fn kind_of(e: &anyhow::Error) -> Option<TxnFailure> {
        e.chain()
            .find_map(|c| c.downcast_ref::<NbError>())
            .map(NbError::kind)
    }
}

impl fmt::Display for NbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl fmt::Debug for NbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.error, self.kind)
    }
}

impl std::error::Error for NbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.chain().nth(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn reads_as_the_error_it_wraps_and_keeps_its_kind_under_context() {
        let cause = anyhow::anyhow!("connection refused").context("NB transaction of 2 commands");
        let plain = format!("{cause:#}");
        let e = NbError::unavailable(cause);
        assert_eq!(format!("{e:#}"), plain);
        assert_eq!(e.to_string(), "NB transaction of 2 commands");
        let wrapped = Err::<(), _>(e)
            .context("creating the node switch")
            .unwrap_err();
        assert_eq!(
            format!("{wrapped:#}"),
            format!("creating the node switch: {plain}")
        );
        assert_eq!(NbError::kind_of(&wrapped), Some(TxnFailure::Unavailable));
        assert_eq!(NbError::kind_of(&anyhow::anyhow!("other")), None);
        // The causes stay reachable, e.g. for retry::is_config_error.
        let config = NbError::invalid(anyhow::Error::new(crate::config::ConfigError::new(
            "bad certificate".to_string(),
        )))
        .context("NB transaction");
        let e = anyhow::Error::new(config);
        assert!(crate::util::retry::is_config_error(&e));
    }
}
