//! Building the Kubernetes client from the configuration: a kubeconfig wins; otherwise
//! `-k8s-apiserver` with a token (`-k8s-token`, or `-k8s-token-file`) and CA for https, or plain
//! http. A token file given with a kubeconfig replaces the kubeconfig's credentials (its server
//! and CA still apply), the way an explicit token overrides a kubeconfig user in kubectl: the
//! node unit names both, and the CNI plugin uses that same file. In a pod with nothing configured, the configuration layer has already filled in the
//! service account (API server from `KUBERNETES_SERVICE_HOST`/`PORT`, its CA and token file).
//! A token file is re-read whenever it changes (`token_file`), so rotated projected
//! service-account tokens are followed without a restart.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use super::token_file::{TokenFile, TokenFileLayer};
use crate::config::KubernetesConfig;

pub async fn build(cfg: &KubernetesConfig) -> Result<kube::Client> {
    let config = if let Some(path) = &cfg.kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let c = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()))?;
        without_kubeconfig_credentials(c, cfg)
    } else {
        direct_config(cfg)?
    };
    let builder =
        kube::client::ClientBuilder::try_from(config).context("creating the Kubernetes client")?;
    match &cfg.token_file {
        Some(path) => {
            let layer = TokenFileLayer(Arc::new(TokenFile::open(path)?));
            Ok(builder.with_layer(&layer).build())
        }
        None => Ok(builder.build()),
    }
}

/// With a token file, the kubeconfig's user credentials (token, client certificate, exec
/// plugin) are dropped: the [`TokenFileLayer`] is the one credential, so requests never carry
/// two identities.
fn without_kubeconfig_credentials(mut c: kube::Config, cfg: &KubernetesConfig) -> kube::Config {
    if cfg.token_file.is_some() {
        c.auth_info = AuthInfo::default();
    }
    c
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

/// The credentials kube-rs adds itself: an inline token, only over https (as the reference:
/// plain http carries no authentication). A token file is not kube-rs's business here: the
/// [`TokenFileLayer`] sets the header (for http and https alike, since naming a file is an
/// explicit request to authenticate).
fn auth_info(cfg: &KubernetesConfig, https: bool) -> Result<AuthInfo> {
    let mut v = serde_json::Map::new();
    if https && cfg.token_file.is_none() {
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
        // (apiserver, token, token file) -> Ok((inline token?, kube-rs token file?)) or an
        // error; a token file is always left to the TokenFileLayer.
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<(bool, bool)>,
        );
        let cases: &[Case] = &[
            ("http://a:8080", None, None, Some((false, false))),
            ("http://a:8080", Some("t"), None, Some((false, false))),
            ("http://a:8080", None, Some("/tok"), Some((false, false))),
            ("https://a:6443", Some("t"), None, Some((true, false))),
            (
                "https://a:6443",
                Some("t"),
                Some("/tok"),
                Some((false, false)),
            ),
            ("https://a:6443", None, Some("/tok"), Some((false, false))),
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
        assert_eq!(c.root_cert_file, Some(PathBuf::from("/ca.crt")));
    }

    #[test]
    fn a_token_file_replaces_the_kubeconfig_credentials_only() {
        let from_kubeconfig = || {
            let mut c = kube::Config::new("https://a:6443".parse().unwrap());
            c.root_cert_file = Some(PathBuf::from("/kc-ca.crt"));
            c.auth_info.token = Some("kubeconfig-token".to_string().into());
            c.auth_info.client_certificate = Some("/kc.crt".into());
            c
        };
        // (token file given, kubeconfig credentials kept)
        for (file, kept) in [(None, true), (Some("/tok"), false)] {
            let c = without_kubeconfig_credentials(from_kubeconfig(), &kc("", None, file));
            assert_eq!(c.auth_info.token.is_some(), kept, "{file:?}");
            assert_eq!(c.auth_info.client_certificate.is_some(), kept, "{file:?}");
            // The server and its CA still come from the kubeconfig.
            assert_eq!(c.cluster_url.to_string(), "https://a:6443/");
            assert_eq!(c.root_cert_file, Some(PathBuf::from("/kc-ca.crt")));
        }
    }
}
