//! `-loglevel` / `-logfile` through tracing-subscriber.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Map the reference's levels (5 debug, 4 info, 3 warn, 2 error, 1 fatal) onto tracing's.
pub fn level_filter(level: u8) -> &'static str {
    match level {
        0..=2 => "error",
        3 => "warn",
        4 => "info",
        _ => "debug",
    }
}

/// Install the global subscriber. A logfile that cannot be opened is reported on stderr and
/// logging stays on stderr, as the reference does. `RUST_LOG`, when set, overrides the level.
pub fn init(level: u8, logfile: Option<&Path>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{},kube=warn,hyper=warn", level_filter(level)))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if let Some(path) = logfile {
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o660)
            .open(path)
        {
            Ok(f) => {
                let _ = builder
                    .with_ansi(false)
                    .with_writer(Mutex::new(f))
                    .try_init();
                return;
            }
            Err(e) => eprintln!(
                "ovnkube: cannot open log file {}: {e}; logging to stderr",
                path.display()
            ),
        }
    }
    let _ = builder.with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_like_the_reference() {
        assert_eq!(level_filter(5), "debug");
        assert_eq!(level_filter(9), "debug");
        assert_eq!(level_filter(4), "info");
        assert_eq!(level_filter(3), "warn");
        assert_eq!(level_filter(2), "error");
        assert_eq!(level_filter(1), "error");
    }
}
