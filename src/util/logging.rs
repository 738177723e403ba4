//! `-loglevel` / `-logfile` through tracing-subscriber, with a log file that can be reopened
//! (SIGHUP, after logrotate moved it away) and colour only on a terminal.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Map the reference's levels (5 debug, 4 info, 3 warn, 2 error, 1 fatal) onto tracing's.
pub fn level_filter(level: u8) -> &'static str {
    match level {
        0..=2 => "error",
        3 => "warn",
        4 => "info",
        _ => "debug",
    }
}

/// Colour codes only make sense for a person at a terminal: a file, a pipe or a journal gets
/// plain text. `NO_COLOR` (any non-empty value) turns colour off even on a terminal.
pub fn use_ansi(to_file: bool, stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    !to_file && stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// A log file that cannot be opened; a start-up (configuration) error.
#[derive(Debug)]
pub struct LogFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for LogFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot open log file {} (-logfile): {}; fix the path or its permissions, or leave -logfile unset to log to stderr",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for LogFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn open_log(path: &Path) -> Result<File, LogFileError> {
    // create/append/write-only, 0660: as the reference opened it.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o660)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.to_path_buf(),
            source,
        })
}

/// The open `-logfile`, shared by the subscriber (writing) and the SIGHUP handler (reopening).
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    file: Mutex<File>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, File> {
        // A panic while holding the lock cannot leave a File half-updated; keep logging.
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The subscriber's writer for `-logfile`. Each event is formatted first and written with one
/// `write_all`, so holding the lock per write keeps lines whole across a reopen.
#[derive(Clone, Debug)]
struct FileWriter(Arc<Shared>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.lock().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().flush()
    }
}

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = FileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What `init` installed; `reopen` is what SIGHUP does.
#[derive(Clone, Debug, Default)]
pub struct Logging {
    file: Option<Arc<Shared>>,
}

impl Logging {
    /// Reopen `-logfile` by path (logrotate renamed the old one). Lines are never lost: until the
    /// new file is open, and if it cannot be opened, writes go on to the old one. Without
    /// `-logfile` there is nothing to reopen and this returns `Ok(None)`.
    pub fn reopen(&self) -> Result<Option<&Path>, LogFileError> {
        let Some(shared) = &self.file else {
            return Ok(None);
        };
        let fresh = open_log(&shared.path)?;
        *shared.lock() = fresh;
        Ok(Some(&shared.path))
    }
}

/// The default filter: `level` for ovnkube; the libraries' own chatter capped. kube-client
/// logs a WARN for every watch whose connection is cut ("eof in poll"), once per watch each
/// time the API server goes away; the watcher resumes it, and the outage itself is logged
/// once by `kube::outage`, so only kube-client's errors are kept.
fn directives(level: u8) -> String {
    format!(
        "{},kube=warn,kube_client=error,hyper=warn",
        level_filter(level)
    )
}

/// Install the global subscriber. A `-logfile` that cannot be opened is an error (the caller
/// exits 1): a daemon told to log to a file must not silently log somewhere else.
/// `RUST_LOG`, when set, overrides the level.
pub fn init(level: u8, logfile: Option<&Path>) -> Result<Logging, LogFileError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives(level)));
    let no_color = std::env::var("NO_COLOR").ok();
    let ansi = use_ansi(
        logfile.is_some(),
        std::io::stderr().is_terminal(),
        no_color.as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match logfile {
        Some(path) => {
            let shared = Arc::new(Shared {
                path: path.to_path_buf(),
                file: Mutex::new(open_log(path)?),
            });
            let _ = builder.with_writer(FileWriter(shared.clone())).try_init();
            Ok(Logging { file: Some(shared) })
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            Ok(Logging::default())
        }
    }
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

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        // (to_file, stderr is a terminal, NO_COLOR) -> ansi
        let cases = [
            ((false, true, None), true),
            ((false, true, Some("")), true),
            ((false, true, Some("1")), false),
            ((false, false, None), false),
            ((true, true, None), false),
            ((true, false, None), false),
        ];
        for ((file, tty, nc), want) in cases {
            assert_eq!(use_ansi(file, tty, nc), want, "{file} {tty} {nc:?}");
        }
    }

    #[test]
    fn reopen_follows_the_path_and_keeps_the_old_file_on_failure() {
        let dir = std::env::temp_dir().join(format!("ovnkube-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let shared = Arc::new(Shared {
            path: path.clone(),
            file: Mutex::new(open_log(&path).unwrap()),
        });
        let log = Logging {
            file: Some(shared.clone()),
        };
        let mut w = FileWriter(shared);
        w.write_all(b"one\n").unwrap();
        let rotated = dir.join("x.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(log.reopen().unwrap(), Some(path.as_path()));
        w.write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");

        // The directory vanished: reopen fails, naming the file, and writes go on.
        std::fs::remove_dir_all(&dir).unwrap();
        let e = log.reopen().unwrap_err();
        assert!(e.to_string().contains("x.log"), "{e}");
        w.write_all(b"four\n").unwrap();

        assert_eq!(Logging::default().reopen().unwrap(), None);
    }

    #[test]
    fn an_unopenable_file_is_an_error_naming_it() {
        let e = open_log(Path::new("/nonexistent-dir/ovnkube.log")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/nonexistent-dir/ovnkube.log"), "{text}");
        assert!(text.contains("-logfile"), "{text}");
    }
}
