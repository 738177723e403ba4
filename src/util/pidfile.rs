//! `-pidfile` (reference §9.4, with the later fix: only daemons keep one).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A pid file that is removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Write our pid to `path`. An existing file naming a live process is an error; a stale one
    /// is overwritten.
    pub fn create(path: &Path) -> Result<PidFile> {
        if path.exists() {
            let content = fs::read_to_string(path)
                .with_context(|| format!("pidfile {} exists but can't be read", path.display()))?;
            let pid = content.trim();
            if !pid.is_empty()
                && pid.chars().all(|c| c.is_ascii_digit())
                && pid != std::process::id().to_string()
                && Path::new(&format!("/proc/{pid}/cmdline")).exists()
            {
                bail!(
                    "pidfile {} exists and ovnkube is running (pid {pid}); stop it or remove the file",
                    path.display()
                );
            }
        }
        fs::write(path, std::process::id().to_string())
            .with_context(|| format!("writing pidfile {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn refuses_a_live_pid_and_overwrites_a_stale_one() {
        let p = tmp("b");
        // PID 1 is always alive.
        fs::write(&p, "1").unwrap();
        let err = PidFile::create(&p).unwrap_err().to_string();
        assert!(err.contains("is running"), "{err}");
        fs::write(&p, "999999999").unwrap();
        let f = PidFile::create(&p).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            std::process::id().to_string()
        );
        drop(f);
    }
}
