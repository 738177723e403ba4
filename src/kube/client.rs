//! Building the Kubernetes client from the configuration (reference §1.6, "Kubernetes client
//! construction"): a kubeconfig wins; otherwise `-k8s-apiserver` with a token and CA for https,
//! or plain http without authentication.

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
        let url: http::Uri = cfg.apiserver.parse().with_context(|| {
            format!("kubernetes API server address {:?} invalid", cfg.apiserver)
        })?;
        let mut c = kube::Config::new(url);
        if cfg.apiserver.starts_with("https") {
            let (Some(token), Some(ca)) = (&cfg.token, &cfg.cacert) else {
                bail!(
                    "TLS-secured apiservers require token and CA certificate (-k8s-token, -k8s-cacert)"
                );
            };
            c.root_cert_file = Some(ca.clone());
            c.auth_info = serde_json::from_value::<AuthInfo>(serde_json::json!({ "token": token }))
                .context("building bearer-token credentials")?;
        }
        c
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}
