//! The CNI plugin's copies of the API credentials (`-cni-credentials-dir`).
//!
//! The plugin runs on the host, started by the container runtime, and reads the API token file
//! and CA certificate from the paths the node agent publishes in OVS `external_ids`. Under the
//! node DaemonSet the agent's own paths are inside its pod (the service-account mount), which
//! the host cannot see; so the agent copies both into a host directory it owns and publishes
//! those paths instead, and keeps the token copy current as the kubelet rotates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::util::files;
use tokio_util::sync::CancellationToken;

/// The copies' names inside the directory.
pub const TOKEN_NAME: &str = "token";
pub const CA_NAME: &str = "ca.crt";
/// Readable by root (the runtime that starts the plugin) only.
const MODE: u32 = 0o600;
/// How often a running agent compares the sources with the copies (projected tokens are
/// rotated well before they expire, typically after 80% of an hour).
pub const REFRESH: Duration = Duration::from_secs(10);

/// One file to copy: the agent's path and the host path published to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub src: PathBuf,
    pub dst: PathBuf,
}

/// What to copy: the configured token file and CA, when a credentials directory is given.
pub fn copies(cfg: &Config) -> Vec<Copy> {
    let Some(dir) = &cfg.cni_credentials_dir else {
        return Vec::new();
    };
    let k = &cfg.kubernetes;
    [(&k.token_file, TOKEN_NAME), (&k.cacert, CA_NAME)]
        .into_iter()
        .filter_map(|(src, name)| {
            Some(Copy {
                src: src.clone()?,
                dst: dir.join(name),
            })
        })
        .collect()
}

/// The path the plugin is told for `src` (the token file or the CA): its copy when there is
/// one, else `src` itself.
pub fn published(cfg: &Config, src: &Path) -> PathBuf {
    copies(cfg)
        .into_iter()
        .find(|c| c.src == src)
        .map_or_else(|| src.to_path_buf(), |c| c.dst)
}

/// Bring every copy up to date (atomic replace, mode 0600); returns the copies rewritten.
/// A source that cannot be read is an error naming it; the previous copy stays.
pub fn sync(copies: &[Copy]) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for c in copies {
        let dir = c.dst.parent().unwrap_or(Path::new("/"));
        create_private_dir(dir)?;
        let data = std::fs::File::open(&c.src)
            .and_then(|f| files::read_capped(f, files::MAX_INPUT_BYTES, "credential"))
            .with_context(|| {
                format!("reading {} to copy it for the CNI plugin", c.src.display())
            })?;
        if std::fs::read(&c.dst).is_ok_and(|old| old == data) {
            continue;
        }
        files::write_atomic(&c.dst, &data, MODE)?;
        changed.push(c.dst.clone());
    }
    Ok(changed)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "creating {} for the CNI plugin's credentials",
                dir.display()
            )
        })
}

/// Re-sync every [`REFRESH`] until `cancel` fires; failures are logged and retried (the last
/// good copy keeps serving the plugin).
pub async fn refresh(copies: Vec<Copy>, period: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match sync(&copies) {
            Ok(changed) if !changed.is_empty() => {
                tracing::info!(files = ?changed, "refreshed the CNI plugin's API credentials")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "refreshing the CNI plugin's API credentials failed; the previous copy stays"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(dir: Option<&str>, token: Option<&str>, ca: Option<&str>) -> Config {
        let mut c = Config {
            cni_credentials_dir: dir.map(PathBuf::from),
            ..Config::default()
        };
        c.kubernetes.token_file = token.map(PathBuf::from);
        c.kubernetes.cacert = ca.map(PathBuf::from);
        c
    }

    #[test]
    fn copies_and_published_paths() {
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        let (tok, ca) = (format!("{sa}/token"), format!("{sa}/ca.crt"));
        let d = "/var/run/ovn-kubernetes/credentials";
        // (dir, token, ca) -> published token, published ca
        let cases = [
            (None, Some(&tok), Some(&ca), tok.clone(), ca.clone()),
            (
                Some(d),
                Some(&tok),
                Some(&ca),
                format!("{d}/token"),
                format!("{d}/ca.crt"),
            ),
            (Some(d), Some(&tok), None, format!("{d}/token"), ca.clone()),
        ];
        for (dir, t, c, want_t, want_c) in cases {
            let cfg = cfg(dir, t.map(|s| s.as_str()), c.map(|s| s.as_str()));
            assert_eq!(published(&cfg, Path::new(&tok)), PathBuf::from(&want_t));
            assert_eq!(published(&cfg, Path::new(&ca)), PathBuf::from(&want_c));
        }
        assert!(copies(&cfg(Some(d), None, None)).is_empty());
    }

    #[test]
    fn sync_copies_private_rewrites_on_change_and_keeps_the_last_good_copy() {
        let root = std::env::temp_dir().join(format!("ovnkube-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let (tok, ca) = (root.join("src-token"), root.join("src-ca"));
        std::fs::write(&tok, "t1").unwrap();
        std::fs::write(&ca, "CA").unwrap();
        let dir = root.join("host/credentials");
        let c = cfg(dir.to_str(), tok.to_str(), ca.to_str());
        let list = copies(&c);
        assert_eq!(sync(&list).unwrap().len(), 2);
        assert_eq!(std::fs::read_to_string(dir.join(TOKEN_NAME)).unwrap(), "t1");
        assert_eq!(std::fs::read_to_string(dir.join(CA_NAME)).unwrap(), "CA");
        for f in [TOKEN_NAME, CA_NAME] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        // Nothing changed: nothing rewritten.
        assert!(sync(&list).unwrap().is_empty());
        // A rotated token: only the token copy is rewritten.
        std::fs::write(&tok, "t2").unwrap();
        assert_eq!(sync(&list).unwrap(), vec![dir.join(TOKEN_NAME)]);
        assert_eq!(std::fs::read_to_string(dir.join(TOKEN_NAME)).unwrap(), "t2");
        // The source vanishes: an error naming it, the copy stays.
        std::fs::remove_file(&tok).unwrap();
        let e = format!("{:#}", sync(&list).unwrap_err());
        assert!(e.contains("src-token"), "{e}");
        assert_eq!(std::fs::read_to_string(dir.join(TOKEN_NAME)).unwrap(), "t2");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn refresh_follows_a_rotated_token_until_cancelled() {
        let root = std::env::temp_dir().join(format!("ovnkube-credr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let tok = root.join("src-token");
        std::fs::write(&tok, "old").unwrap();
        let dir = root.join("creds");
        let list = copies(&cfg(dir.to_str(), tok.to_str(), None));
        sync(&list).unwrap();
        let cancel = CancellationToken::new();
        let src = cancel.clone();
        let task = tokio::spawn(refresh(list, Duration::from_millis(20), cancel));
        std::fs::write(&tok, "new").unwrap();
        let copy = dir.join(TOKEN_NAME);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&copy).unwrap() != "new" {
            assert!(
                std::time::Instant::now() < deadline,
                "the copy was not refreshed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        src.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("refresh stops when cancelled")
            .unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }
}
