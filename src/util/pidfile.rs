//! `-pidfile` (only daemons keep one).
//!
//! The file is opened without following a symlink and held under an exclusive `flock` for
//! the life of the process. Whether another ovnkube owns it is judged by that lock alone: the
//! kernel drops it when the owner dies, so a stale file whose PID was reused by an unrelated
//! process does not block start-up, and a live owner always does.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::files::no_follow;

/// A pid file, locked while this value lives and removed when it is dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// Holds the lock; closing it releases the lock.
    _file: File,
}

impl PidFile {
    /// Lock `path` (created 0644 if absent) and write our pid into it. Fails when another
    /// process holds the lock, or when `path` is a symlink.
    pub fn create(path: &Path) -> Result<PidFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = no_follow()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::ELOOP) {
                    "it is a symbolic link; remove it or choose another -pidfile".to_string()
                } else {
                    e.to_string()
                };
                anyhow::anyhow!("cannot open pidfile {}: {why}", path.display())
            })?;
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            bail!(
                "pidfile {} is not a regular file; choose another -pidfile",
                path.display()
            );
        }
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = f.read_to_string(&mut owner);
                bail!(
                    "pidfile {} is locked: ovnkube is running (pid {}); stop it or use another -pidfile",
                    path.display(),
                    owner.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking pidfile {}", path.display()));
            }
        }
        // Only now, under the lock, is the old content ours to replace.
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(std::process::id().to_string().as_bytes()))
            .and_then(|()| f.flush())
            .with_context(|| format!("writing pidfile {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _file: f,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so no other process can have taken it over.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ovnkube-pidfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn writes_and_removes() {
        let p = tmp("a");
        {
            let _f = PidFile::create(&p).unwrap();
            assert_eq!(
                fs::read_to_string(&p).unwrap(),
                std::process::id().to_string()
            );
        }
        assert!(!p.exists());
    }

    #[test]
    fn a_live_unrelated_pid_does_not_block_but_a_lock_does() {
        let p = tmp("b");
        // PID 1 is alive but holds no lock on the file: the file is stale.
        fs::write(&p, "1").unwrap();
        let f = PidFile::create(&p).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            std::process::id().to_string()
        );
        // A second daemon (a separate open file description) is refused while we live.
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("is locked: ovnkube is running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(f);
        let again = PidFile::create(&p).unwrap();
        drop(again);
    }

    #[test]
    fn refuses_a_symlink_and_leaves_its_target_alone() {
        let target = tmp("c-target");
        let link = tmp("c-link");
        let _ = fs::remove_file(&link);
        fs::write(&target, "secret").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = PidFile::create(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "secret");
        let _ = fs::remove_file(&link);
        let _ = fs::remove_file(&target);
    }
}
