//! A private OVS public key infrastructure made with `ovs-pki` (package openvswitch-pki), the
//! way an operator makes one for OVN over SSL: `ovs-pki init` creates two CAs (`switchca`,
//! `controllerca`); `ovs-pki req+sign NAME [switch|controller]` makes a key and a certificate
//! signed by that CA. The database server and its clients both trust the switch CA.

use crate::proc::{self, CMD_TIMEOUT};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PKI directory, a `server` and a `client` key+certificate (signed by the switch CA) and
/// a `stranger` one (signed by the controller CA).
/// Dropping it removes the directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// The names given to `ovs-pki req+sign`.
const SERVER: &str = "server";
const CLIENT: &str = "client";
/// A client whose certificate the other CA signed (one the server does not trust).
const STRANGER: &str = "stranger";

impl Pki {
    /// `ovs-pki --dir=<dir>/pki init`, then `req+sign` for the server and the client.
    pub fn create() -> Result<Pki> {
        crate::sweep_dead();
        let pki = Pki {
            dir: crate::new_private_dir()?,
        };
        pki.ovs_pki(&["init"]).context("ovs-pki init")?;
        for (name, ca) in [
            (SERVER, "switch"),
            (CLIENT, "switch"),
            (STRANGER, "controller"),
        ] {
            // --batch: sign without asking to confirm the request's fingerprint.
            pki.ovs_pki(&["--batch", "req+sign", name, ca])
                .with_context(|| format!("ovs-pki req+sign {name} {ca}"))?;
        }
        Ok(pki)
    }

    fn ovs_pki(&self, args: &[&str]) -> Result<String> {
        // `req` writes NAME-privkey.pem, NAME-req.pem and NAME-cert.pem in the current dir.
        proc::run(
            Command::new("ovs-pki")
                .current_dir(&self.dir)
                .arg(format!("--dir={}", self.dir.join("pki").display()))
                .arg(format!("--log={}", self.dir.join("ovs-pki.log").display()))
                .args(args),
            CMD_TIMEOUT,
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The CA that signed both certificates.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/switchca/cacert.pem")
    }
    /// A CA of the same PKI that signed neither certificate (a wrong `-…-cacert`).
    pub fn other_ca_cert(&self) -> PathBuf {
        self.dir.join("pki/controllerca/cacert.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join(format!("{SERVER}-privkey.pem"))
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join(format!("{SERVER}-cert.pem"))
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join(format!("{CLIENT}-privkey.pem"))
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join(format!("{CLIENT}-cert.pem"))
    }
    /// A client key+certificate signed by [`Pki::other_ca_cert`]: the server refuses it.
    pub fn stranger_key(&self) -> PathBuf {
        self.dir.join(format!("{STRANGER}-privkey.pem"))
    }
    pub fn stranger_cert(&self) -> PathBuf {
        self.dir.join(format!("{STRANGER}-cert.pem"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        crate::remove_private_dir(&self.dir);
    }
}
