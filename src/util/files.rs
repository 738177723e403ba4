//! Reading untrusted inputs and writing files without following someone else's links.
//!
//! Every input the process reads whole (the config file, CNI stdin, the CNI `configFilePath`)
//! is capped: `/dev/zero` or a multi-gigabyte file must fail at once with a clear error, not
//! grow the process until the kernel kills it. Temp files are created exclusively and never
//! through a symlink, so a local user who plants a link at the temp name cannot make us
//! overwrite another file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The largest input read whole: far above any real config (a few KiB).
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Read all of `r`, failing once more than `max` bytes arrive. `what` names the input in the
/// error ("config file /etc/x", "stdin").
pub fn read_capped(r: impl Read, max: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} is larger than {max} bytes; refusing to read it"),
        ));
    }
    Ok(buf)
}

/// A text file, at most [`MAX_INPUT_BYTES`], as UTF-8.
pub fn read_text_capped(path: &Path) -> io::Result<String> {
    let f = File::open(path)?;
    let bytes = read_capped(f, MAX_INPUT_BYTES, &format!("file {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file {} is not UTF-8 text", path.display()),
        )
    })
}

/// Open options that refuse a symlink as the last path component (`ELOOP`).
pub fn no_follow() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW);
    o
}

/// Replace `path` atomically with `data` (mode `mode`): a fresh temp file next to it, created
/// with `O_EXCL | O_NOFOLLOW`, synced, then renamed over `path`. The temp name starts with a
/// dot so directory watchers that load `*.conf` (kubelet) ignore it.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let (tmp, mut f) = create_temp(dir, &name.to_string_lossy(), mode)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let res = (|| -> io::Result<()> {
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {} (through {})", path.display(), tmp.display()))
}

/// A new file `.<name>.tmp<pid>.<n>` in `dir` that did not exist before. A name that exists
/// (a leftover, or a planted file or link) is skipped, never opened.
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut last = None;
    for n in 0..16u32 {
        let tmp = dir.join(format!(".{name}.tmp{pid}.{n}"));
        match no_follow()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovnkube-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn caps_reads() {
        let cases: &[(usize, u64, bool)] = &[(0, 10, true), (10, 10, true), (11, 10, false)];
        for &(len, max, ok) in cases {
            let r = read_capped(&vec![b'x'; len][..], max, "stdin");
            assert_eq!(r.is_ok(), ok, "{len} bytes, cap {max}");
            if let Err(e) = r {
                assert!(
                    e.to_string().contains("stdin is larger than 10 bytes"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn dev_zero_fails_fast() {
        let t = std::time::Instant::now();
        let e = read_text_capped(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("/dev/zero is larger than"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn atomic_write_skips_planted_temp_names_and_links() {
        let d = tmpdir("atomic");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let target = d.join("10-x.conf");
        // Every name the writer will try first is already taken: a link and a file.
        let pid = std::process::id();
        std::os::unix::fs::symlink(&victim, d.join(format!(".10-x.conf.tmp{pid}.0"))).unwrap();
        std::fs::write(d.join(format!(".10-x.conf.tmp{pid}.1")), "old").unwrap();
        write_atomic(&target, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // A link at the target itself is replaced by the rename, not written through.
        std::fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"new2", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        let _ = std::fs::remove_dir_all(&d);
    }
}
