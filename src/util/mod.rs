//! Process plumbing: logging, pid file, retry bookkeeping.

pub mod cancel;
pub mod files;
pub mod logging;
pub mod pidfile;
pub mod retry;
