//! Building the Kubernetes client from the configuration: a kubeconfig wins; otherwise
//! `-k8s-apiserver` with a token (`-k8s-token`, or `-k8s-token-file`) and CA for https, or plain
//! http. In a pod with nothing configured, the configuration layer has already filled in the
//! service account (API server from `KUBERNETES_SERVICE_HOST`/`PORT`, its CA and token file).
//!
//! A token file is handed to kube-rs as `token_file`: kube-rs re-reads it at least once a
//! minute (keeping the last token if a read fails), which is how projected service-account
//! tokens, rotated by the kubelet well before they expire, are followed without a restart.

use anyhow::{Context, Result, bail};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesConfig;

pub async fn build(cfg: &KubernetesConfig) -> Result<kube::Client> {
    let config = if let Some(path) = &cfg.kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()))?
    } else {
        direct_config(cfg)?
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// The client configuration without a kubeconfig.
fn direct_config(cfg: &KubernetesConfig) -> Result<kube::Config> {
    let url: http::Uri = cfg
        .apiserver
        .parse()
        .with_context(|| format!("kubernetes API server address {:?} invalid", cfg.apiserver))?;
    let mut c = kube::Config::new(url);
    let https = cfg.apiserver.starts_with("https");
    if https {
        let Some(ca) = &cfg.cacert else {
            bail!("TLS-secured apiservers require a CA certificate (-k8s-cacert)");
        };
        c.root_cert_file = Some(ca.clone());
    }
    c.auth_info = auth_info(cfg, https)?;
    Ok(c)
}

/// The credentials: an inline token only over https (as the reference: plain http carries no
/// authentication); a token file whenever one is configured, since naming a file is an
/// explicit request to authenticate.
fn auth_info(cfg: &KubernetesConfig, https: bool) -> Result<AuthInfo> {
    let mut v = serde_json::Map::new();
    if let Some(file) = &cfg.token_file {
        v.insert(
            "tokenFile".into(),
            serde_json::Value::String(file.display().to_string()),
        );
    } else if https {
        let Some(token) = &cfg.token else {
            bail!(
                "TLS-secured apiservers require a token (-k8s-token-file or -k8s-token) and a CA certificate (-k8s-cacert)"
            );
        };
        v.insert("token".into(), serde_json::Value::String(token.clone()));
    }
    serde_json::from_value::<AuthInfo>(serde_json::Value::Object(v))
        .context("building bearer-token credentials")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kc(apiserver: &str, token: Option<&str>, file: Option<&str>) -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: None,
            apiserver: apiserver.into(),
            cacert: Some(PathBuf::from("/ca.crt")),
            token: token.map(String::from),
            token_file: file.map(PathBuf::from),
        }
    }

    #[test]
    fn credentials_table() {
        // (apiserver, token, token file) -> Ok((inline token?, token file?)) or an error.
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<(bool, bool)>,
        );
        let cases: &[Case] = &[
            ("http://a:8080", None, None, Some((false, false))),
            ("http://a:8080", Some("t"), None, Some((false, false))),
            ("http://a:8080", None, Some("/tok"), Some((false, true))),
            ("https://a:6443", Some("t"), None, Some((true, false))),
            (
                "https://a:6443",
                Some("t"),
                Some("/tok"),
                Some((false, true)),
            ),
            ("https://a:6443", None, Some("/tok"), Some((false, true))),
            ("https://a:6443", None, None, None),
        ];
        for (url, token, file, want) in cases {
            let c = kc(url, *token, *file);
            let got = auth_info(&c, url.starts_with("https"))
                .ok()
                .map(|a| (a.token.is_some(), a.token_file.is_some()));
            assert_eq!(got, *want, "{url} {token:?} {file:?}");
        }
        let c = direct_config(&kc("https://a:6443", None, Some("/tok"))).unwrap();
        assert_eq!(c.auth_info.token_file.as_deref(), Some("/tok"));
        assert_eq!(c.root_cert_file, Some(PathBuf::from("/ca.crt")));
    }
}
