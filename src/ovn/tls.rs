//! TLS for `ssl:` OVSDB remotes on the native connection: the client's private key,
//! certificate and CA certificate (the `-nb-client-*` / `-sb-client-*` files) turned into a
//! rustls client configuration.
//!
//! The files are read again for every connection attempt, so certificates rotated on disk are
//! picked up on the next reconnect, and a file that goes bad later only fails that attempt
//! (the connection keeps retrying and logs why). At start, [`ClientTls::check`] reads them once
//! so that a bad file is a configuration error before any role starts.
//!
//! Nothing here logs or formats key material: errors name the flag and the path only.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{CertFile, ConfigError, OvnAuth, OvnScheme, auth_cert_files};

/// The three files of a TLS client, each with the flag that configured it (for errors).
/// `Debug` shows flags and paths only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub privkey: CertFile,
    pub cert: CertFile,
    pub cacert: CertFile,
}

impl ClientTls {
    /// The client side of an `ssl:` address: `prefix` names its flags (`nb-client` for
    /// `-nb-client-privkey` …). `None` for other schemes; an `ssl:` address without all three
    /// files is refused by the configuration parser already, and is an error here too.
    pub fn from_auth(auth: &OvnAuth, prefix: &str) -> Result<Option<ClientTls>, ConfigError> {
        if auth.scheme != OvnScheme::Ssl {
            return Ok(None);
        }
        match auth_cert_files(auth, prefix) {
            [Some(privkey), Some(cert), Some(cacert)] => Ok(Some(ClientTls {
                privkey,
                cert,
                cacert,
            })),
            _ => Err(ConfigError::new(format!(
                "an ssl address needs -{prefix}-privkey, -{prefix}-cert and -{prefix}-cacert"
            ))),
        }
    }

    /// Reads the files once (at start): a missing, unreadable or malformed file is a
    /// configuration error naming the flag and the path.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.client_config()
            .map(|_| ())
            .map_err(|e| ConfigError::new(format!("{e:#}")))
    }

    /// A client configuration from the files as they are now on disk.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let key = read_key(&self.privkey)?;
        let chain = read_certs(&self.cert)?;
        let roots = read_roots(&self.cacert)?;
        // Named explicitly, so the process default (which kube may install) never decides
        // which crypto library runs here.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(CaOnlyVerifier {
            roots: Arc::new(roots),
            algs: provider.signature_verification_algorithms,
        });
        let cfg = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no safe protocol version")?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .with_context(|| {
                format!(
                    "{} {} and {} {} do not make a usable client certificate (does the key belong to the certificate?)",
                    self.privkey.flag,
                    self.privkey.path.display(),
                    self.cert.flag,
                    self.cert.path.display()
                )
            })?;
        Ok(Arc::new(cfg))
    }

    /// What a handshake checks, both ways, for its error message.
    pub fn describe(&self) -> String {
        format!(
            "the server's certificate must be signed by the CA in {} {}, and ours, {} {}, by \
             the CA the server trusts",
            self.cacert.flag,
            self.cacert.path.display(),
            self.cert.flag,
            self.cert.path.display()
        )
    }
}

/// The name a TLS client hands rustls for a server at `ip` (it sends no SNI for an address,
/// and [`CaOnlyVerifier`] does not match it against the certificate).
pub fn server_name(ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}

fn read(f: &CertFile) -> Result<Vec<u8>> {
    std::fs::read(&f.path).with_context(|| format!("reading {} {}", f.flag, f.path.display()))
}

fn bad(f: &CertFile, what: &str) -> anyhow::Error {
    anyhow!(
        "{} {}: {what} (give a PEM file, e.g. one made by ovs-pki)",
        f.flag,
        f.path.display()
    )
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC, as ovs-pki and openssl write them).
fn read_key(f: &CertFile) -> Result<PrivateKeyDer<'static>> {
    let pem = read(f)?;
    // The parser's error is about the PEM framing only; it never includes the key's bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(f, &format!("no private key in it ({e})")))
}

fn parse_certs(f: &CertFile, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(f, &format!("unreadable PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad(f, "no certificate in it"));
    }
    Ok(certs)
}

fn read_certs(f: &CertFile) -> Result<Vec<CertificateDer<'static>>> {
    parse_certs(f, &read(f)?)
}

fn read_roots(f: &CertFile) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(f, &read(f)?)? {
        roots
            .add(c)
            .map_err(|e| bad(f, &format!("not a usable CA certificate ({e})")))?;
    }
    Ok(roots)
}

/// Verifies the server the way Open vSwitch's own clients do (`ovn-nbctl`, `ovn-controller`):
/// the certificate must chain to the configured CA, be within its validity period, and the
/// server must prove it holds the certificate's key; its names are not matched.
///
/// Why no name check: OVS certificates name their holder, not an address (`ovs-pki` writes
/// `CN=<name> id:<uuid>` and the same text as a DNS alt name), and operators reach the
/// databases by IP address, so WebPKI's address match would refuse every stock certificate.
/// The trust decision is the one OVS makes: the CA given to `-nb-client-cacert` is the
/// deployment's own (ovs-pki creates a private CA per PKI), and only it can vouch for a
/// database server. Any certificate that CA signed is trusted to be the server, so that CA
/// must not be a public CA.
#[derive(Debug)]
struct CaOnlyVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn file(flag: &str, p: &Path) -> CertFile {
        CertFile {
            flag: flag.to_string(),
            path: p.to_path_buf(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovnkube-tls-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    }

    fn auth(scheme: OvnScheme, files: bool) -> OvnAuth {
        let p = |s: &str| files.then(|| PathBuf::from(s));
        OvnAuth {
            scheme,
            endpoints: Vec::new(),
            privkey: p("/k.pem"),
            cert: p("/c.pem"),
            cacert: p("/ca.pem"),
        }
    }

    #[test]
    fn only_ssl_addresses_take_tls() {
        assert_eq!(
            ClientTls::from_auth(&auth(OvnScheme::Tcp, false), "nb-client"),
            Ok(None)
        );
        let t = ClientTls::from_auth(&auth(OvnScheme::Ssl, true), "sb-client")
            .unwrap()
            .unwrap();
        assert_eq!(
            [&t.privkey.flag, &t.cert.flag, &t.cacert.flag],
            ["-sb-client-privkey", "-sb-client-cert", "-sb-client-cacert"]
        );
        assert_eq!(t.cacert.path, PathBuf::from("/ca.pem"));
        let e = ClientTls::from_auth(&auth(OvnScheme::Ssl, false), "nb-client").unwrap_err();
        assert!(e.message().contains("-nb-client-cacert"), "{e}");
    }

    /// Each bad file is named with its flag and path, whichever of the three it is.
    #[test]
    fn bad_files_name_the_flag_and_the_path() {
        let d = tmp("bad");
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not a pem file\n").unwrap();
        let garbled = d.join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = d.join("missing.pem");
        let cases: [(&str, &Path, &str); 4] = [
            ("-nb-client-privkey", &missing, "reading"),
            ("-nb-client-privkey", &junk, "no private key"),
            ("-nb-client-cert", &junk, "no certificate"),
            ("-nb-client-cert", &garbled, "unreadable PEM"),
        ];
        for (flag, path, want) in cases {
            let f = file(flag, path);
            let e = if flag.ends_with("privkey") {
                read_key(&f).map(|_| ()).unwrap_err()
            } else {
                read_certs(&f).map(|_| ()).unwrap_err()
            };
            let msg = format!("{e:#}");
            assert!(msg.contains(flag), "{flag}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{flag}: {msg}");
            assert!(msg.contains(want), "{flag}: {msg}");
        }
        let roots = read_roots(&file("-nb-client-cacert", &junk)).unwrap_err();
        assert!(
            format!("{roots:#}").contains("-nb-client-cacert"),
            "{roots:#}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A start-up check of a client whose key file is missing is a configuration error.
    #[test]
    fn check_is_a_configuration_error() {
        let d = tmp("check");
        let t = ClientTls {
            privkey: file("-nb-client-privkey", &d.join("nokey.pem")),
            cert: file("-nb-client-cert", &d.join("nocert.pem")),
            cacert: file("-nb-client-cacert", &d.join("noca.pem")),
        };
        let e = t.check().unwrap_err();
        assert!(e.message().contains("-nb-client-privkey"), "{e}");
        assert!(e.message().contains("nokey.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
