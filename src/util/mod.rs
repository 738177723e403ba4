//! Process plumbing: logging, pid file, retry bookkeeping.

pub mod logging;
pub mod pidfile;
pub mod retry;
