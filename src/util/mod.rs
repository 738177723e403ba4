//! Process plumbing: logging, pid file.

pub mod logging;
pub mod pidfile;
