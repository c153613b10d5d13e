//! The agent's TLS client configuration for `wss://`: rustls (ring provider, no aws-lc) trusting
//! the operating system's roots plus, for self-signed deployments, the certificates of a PEM
//! file. Built once at start-up: a bad CA file is a configuration error, not something to retry.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// Why no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("{0} contains no usable CA certificate")]
    EmptyCaFile(String),
    #[error("no trusted root certificates: the system store is empty and no CA file was given")]
    NoRoots,
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting the system roots and the certificates in `ca_file`.
///
/// # Errors
/// [`TlsError::CaFile`] / [`TlsError::EmptyCaFile`] when `ca_file` is unreadable or holds no
/// certificate, [`TlsError::NoRoots`] when nothing at all is trusted.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        // Common and harmless when one of several certificate locations is missing.
        tracing::debug!(error = %error, "while loading the system's root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, ignored, "system root certificates");
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| TlsError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::EmptyCaFile(shown));
        }
        tracing::info!(path = %shown, certificates = added, "trusting extra CA certificates");
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_certificate_free_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            client_config(Some(&missing)),
            Err(TlsError::CaFile { path, .. }) if path.contains("missing.pem")
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(Some(&empty)),
            Err(TlsError::EmptyCaFile(_))
        ));
    }

    #[test]
    fn a_pem_bundle_is_accepted_as_extra_roots() {
        // Any real CA bundle of this machine stands in for a deployment's self-signed CA.
        let bundle = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
        if let Some(bundle) = bundle {
            assert!(client_config(Some(bundle)).is_ok());
        }
    }
}
