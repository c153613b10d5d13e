//! An extra CA to trust (`rmm --ca-file`), for a server whose certificate a private CA signed:
//! added to the system's roots, for the HTTP calls (reqwest) and the stream WebSocket alike.
//! Only for an `https://` server: for `http://` no roots are loaded at all (`ApiClient`), and
//! the stream WebSocket's system roots are loaded only when a `wss://` connection is made.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::ClientError;

/// The certificates of a CA file, checked to be there.
#[derive(Debug)]
pub(crate) struct ExtraCa {
    path: String,
    pem: Vec<u8>,
    certificates: Vec<CertificateDer<'static>>,
}

impl ExtraCa {
    /// Reads the PEM file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Self, ClientError> {
        let shown = path.display().to_string();
        let error = |reason: String| ClientError::CaFile {
            path: shown.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(format!("not valid PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(error("it holds no PEM certificate".into()));
        }
        Ok(Self {
            path: shown,
            pem,
            certificates,
        })
    }

    /// The certificates as reqwest takes them.
    pub(crate) fn for_reqwest(&self) -> Result<Vec<reqwest::Certificate>, ClientError> {
        reqwest::Certificate::from_pem_bundle(&self.pem).map_err(|e| ClientError::CaFile {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// A rustls client configuration (ring) trusting the system's roots and these.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let error = |reason: String| ClientError::CaFile {
            path: self.path.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        // A missing system store is fine here: the CA file is what this server needs.
        let system = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(system.certs);
        let (added, _) = roots.add_parsable_certificates(self.certificates.iter().cloned());
        if added == 0 {
            return Err(error("it holds no usable CA certificate".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_missing_or_certificate_free_file_is_a_ca_file_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("rmm-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = ExtraCa::read(&missing).unwrap_err();
        assert!(
            matches!(&e, ClientError::CaFile { path, .. } if path.contains("missing.pem")),
            "{e}"
        );
        assert!(e.to_string().contains("RMM_CA_FILE"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = ExtraCa::read(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_system_bundle_is_accepted_as_extra_cas() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Any real CA bundle of this machine stands in for a deployment's private CA.
        let bundle = ["/etc/ssl/certs/ca-certificates.crt"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        if let Some(bundle) = bundle {
            let ca = ExtraCa::read(bundle).unwrap();
            assert!(!ca.for_reqwest().unwrap().is_empty());
            assert!(ca.client_config().is_ok());
        }
    }
}
