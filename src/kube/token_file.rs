//! `-k8s-token-file`: a bearer token read from a file and re-read whenever the file changes
//! (projected service-account tokens are replaced by the kubelet, usually by renaming a new
//! file over the old one).
//!
//! kube-rs has a `token_file` of its own, but it re-reads only once a minute and sends the
//! file's bytes as they are, so a token file ending in a newline (`echo $TOKEN > file`) gives
//! an invalid header. This layer checks the file's identity (inode, size, mtime) on every
//! request, which costs one `stat`, trims whitespace as client-go does, and keeps the last
//! good token when the file is briefly missing or unreadable during a rotation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};
use http::header::{AUTHORIZATION, HeaderValue};

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// The `Authorization` value for a token file's contents (trimmed; never logged).
fn header_for(text: &str) -> Result<HeaderValue> {
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file is empty");
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token contains characters not allowed in an HTTP header")?;
    v.set_sensitive(true);
    Ok(v)
}

#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    current: Mutex<(Stamp, HeaderValue)>,
}

impl TokenFile {
    /// Reads the token now: a missing or bad file at start is a configuration error.
    pub fn open(path: &Path) -> Result<TokenFile> {
        let what = || format!("reading the Kubernetes token file {}", path.display());
        let st = stamp(path).with_context(what)?;
        let text = std::fs::read_to_string(path).with_context(what)?;
        let header = header_for(&text).with_context(what)?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            current: Mutex::new((st, header)),
        })
    }

    /// The header to send: re-read first if the file changed.
    pub fn header(&self) -> HeaderValue {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(st) = stamp(&self.path)
            && st != cur.0
        {
            match std::fs::read_to_string(&self.path)
                .map_err(anyhow::Error::from)
                .and_then(|t| header_for(&t))
            {
                Ok(h) => {
                    tracing::info!(path = %self.path.display(), "Kubernetes token file changed; using the new token");
                    *cur = (st, h);
                }
                // Keep the last good token (a rotation may be half-way); try again next time.
                Err(e) => tracing::warn!(path = %self.path.display(), error = %format!("{e:#}"),
                    "cannot use the changed Kubernetes token file; keeping the previous token"),
            }
        }
        cur.1.clone()
    }
}

/// The tower layer that sets `Authorization` from a [`TokenFile`] on every request.
#[derive(Clone)]
pub struct TokenFileLayer(pub Arc<TokenFile>);

impl<S> tower_layer::Layer<S> for TokenFileLayer {
    type Service = TokenFileService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TokenFileService {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TokenFileService<S> {
    inner: S,
    token: Arc<TokenFile>,
}

impl<S, B> tower_service::Service<http::Request<B>> for TokenFileService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.headers_mut().insert(AUTHORIZATION, self.token.header());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        for (text, want) in [
            ("abc", Some("Bearer abc")),
            ("abc\n", Some("Bearer abc")),
            ("  abc \r\n", Some("Bearer abc")),
            ("", None),
            ("\n", None),
            ("a\nb", None),
        ] {
            let got = header_for(text).ok();
            assert_eq!(got.as_ref().map(|h| h.to_str().unwrap()), want, "{text:?}");
            if let Some(h) = got {
                assert!(h.is_sensitive());
            }
        }
    }

    #[test]
    fn follows_rewrites_and_renames_and_keeps_the_last_good_token() {
        let dir = std::env::temp_dir().join(format!("ovnkube-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "one\n").unwrap();
        let tf = TokenFile::open(&path).unwrap();
        assert_eq!(tf.header(), "Bearer one");
        // In-place rewrite (same length, new content).
        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(tf.header(), "Bearer two");
        // The kubelet's way: a new file renamed over the old one.
        let tmp = dir.join("token.tmp");
        std::fs::write(&tmp, "three").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(tf.header(), "Bearer three");
        // Gone or empty for a moment: the last good token stays.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tf.header(), "Bearer three");
        std::fs::write(&path, "").unwrap();
        assert_eq!(tf.header(), "Bearer three");
        std::fs::write(&path, "four").unwrap();
        assert_eq!(tf.header(), "Bearer four");
        assert!(TokenFile::open(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
