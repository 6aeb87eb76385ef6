//! TLS for luastrip's TCP sides, with rustls: a TCP listener for tools that cannot use a socket
//! (`--listen tcp://…` with `--tls-cert`, `--tls-key`, `--tls-ca`), and a daemon reached over
//! TCP (`--upstream tcp://…:2376`, with the docker CLI's `DOCKER_CERT_PATH` files).
//!
//! The rules are dockerd's `--tlsverify`: a listener with a CA accepts only clients whose
//! certificate that CA signed, and luastrip verifies the daemon's certificate against its CA.
//! There is no code of our own here beyond reading PEM files and naming what is wrong in them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The PEM files of one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// The CA that signs the other side's certificates.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The docker CLI's files in `DOCKER_CERT_PATH` (`ca.pem`, `cert.pem`, `key.pem`), for those
    /// that exist.
    pub fn docker_cert_path(dir: &Path) -> TlsFiles {
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        TlsFiles {
            cert: file("cert.pem"),
            key: file("key.pem"),
            ca: file("ca.pem"),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

fn key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{flag} {}: no PEM private key in it", path.display())
        }
        e => format!("{flag} {}: {e}", path.display()),
    })
}

fn roots(flag: &str, path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in certs(flag, path)? {
        roots
            .add(c)
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// A listener's TLS: its certificate and key, and with `ca`, client certificates required and
/// verified against it. `prefix` names the flags in messages (`--tls`).
pub fn server_config(files: &TlsFiles, prefix: &str) -> Result<ServerTls, String> {
    let (Some(cert), Some(key_file)) = (&files.cert, &files.key) else {
        return Err(format!("{prefix}-cert and {prefix}-key go together"));
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots(&format!("{prefix}-ca"), ca)?,
                provider(),
            )
            .build()
            .map_err(|e| format!("{prefix}-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            certs(&format!("{prefix}-cert"), cert)?,
            key(&format!("{prefix}-key"), key_file)?,
        )
        .map_err(|e| format!("{prefix}-cert/{prefix}-key: {e}"))?;
    // The Docker API is HTTP/1.1 (hijacked sessions need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifies_clients: files.ca.is_some(),
    })
}

/// The server side of TLS, and whether it asks every client for a certificate signed by the CA
/// (what makes a listener safe off loopback).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub verifies_clients: bool,
}

/// TLS to a daemon: its certificate verified against `ca` (required: luastrip never talks to
/// an unverified daemon), and this side's certificate and key when the daemon asks for one.
pub fn client_config(files: &TlsFiles, prefix: &str) -> Result<Arc<ClientConfig>, String> {
    let Some(ca) = &files.ca else {
        return Err(format!(
            "{prefix}-ca (or ca.pem in DOCKER_CERT_PATH) is needed to verify the daemon's \
             certificate"
        ));
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(&format!("{prefix}-ca"), ca)?);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key_file)) => builder
            .with_client_auth_cert(
                certs(&format!("{prefix}-cert"), cert)?,
                key(&format!("{prefix}-key"), key_file)?,
            )
            .map_err(|e| format!("{prefix}-cert/{prefix}-key: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(format!("{prefix}-cert and {prefix}-key go together")),
    };
    Ok(Arc::new(config))
}
