//! Process plumbing: logging, pid file, readiness, retry bookkeeping.

pub mod files;
pub mod logging;
pub mod pidfile;
pub mod ready;
pub mod retry;
