//! Certificates made at test time (rcgen): a private CA, and server certificates it signs for
//! `localhost` and `127.0.0.1`, written as PEM files the way an operator would have them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// A private CA; its certificate is at [`Self::ca_file`].
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

/// A server certificate's files, and its DER to compare with what a server presents.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub der: Vec<u8>,
}

impl TestCa {
    /// Makes a CA and writes its certificate to `dir/ca.pem`.
    ///
    /// # Errors
    /// When generating or writing fails.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "rmm end-to-end test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).context("writing ca.pem")?;
        Ok(Self { issuer, ca_file })
    }

    #[must_use]
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate, PEM.
    #[must_use]
    pub fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// Signs a certificate for `localhost` and `127.0.0.1` named `name` (its common name),
    /// written as `dir/name.crt` and `dir/name.key` (rename them over the live files to
    /// replace those whole).
    ///
    /// # Errors
    /// When generating or writing fails.
    pub fn server_cert(&self, dir: &Path, name: &str) -> anyhow::Result<ServerCert> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = ServerCert {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert_file, cert.pem()).context("writing the certificate")?;
        std::fs::write(&files.key_file, key.serialize_pem()).context("writing the key")?;
        Ok(files)
    }

    /// The leaf certificate the TLS server at `addr` presents for `localhost`, verified
    /// against this CA.
    ///
    /// # Errors
    /// When the connection or the handshake fails (an untrusted certificate included).
    pub async fn served_certificate(&self, addr: std::net::SocketAddr) -> anyhow::Result<Vec<u8>> {
        let ca = CertificateDer::from_pem_slice(&self.pem())?;
        tokio::task::spawn_blocking(move || handshake(addr, ca)).await?
    }
}

fn handshake(addr: std::net::SocketAddr, ca: CertificateDer<'static>) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost")?.to_owned();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut socket = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.set_write_timeout(Some(Duration::from_secs(10)))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut socket)?;
    }
    let leaf = tls
        .peer_certificates()
        .and_then(<[_]>::first)
        .context("the server presented no certificate")?;
    Ok(leaf.to_vec())
}
