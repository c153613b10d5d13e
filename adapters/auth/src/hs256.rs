//! jsonwebtoken's cryptography, HS256 only: HMAC-SHA-256 from the RustCrypto `hmac` and `sha2`
//! crates, with a constant-time tag comparison (`Mac::verify_slice`).
//!
//! jsonwebtoken's own backends (`rust_crypto`, `aws_lc_rs`) bring every JWS algorithm; the
//! `rust_crypto` one pulls in the `rsa` crate (RUSTSEC-2023-0071, Marvin timing attack) for
//! RS*/PS* tokens this server never issues nor accepts. With neither feature enabled,
//! jsonwebtoken uses the process-wide [`CryptoProvider`] installed here, which refuses every
//! algorithm but HS256 and every key that is not an HMAC secret.

use std::sync::Once;

use hmac::{Hmac, KeyInit as _, Mac as _};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The provider: HS256 signers and verifiers; JWK helpers refuse (no JWKs are used).
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| no_ec(),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::UnsupportedAlgorithm.into()),
        compute_digest: |_, _: ThumbprintHash| Err(ErrorKind::UnsupportedAlgorithm.into()),
    },
};

fn no_ec() -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

/// Installs the HS256 provider as jsonwebtoken's process default. Idempotent: later calls do
/// nothing. Must run before jsonwebtoken's first `encode`/`decode` in the process, which
/// [`crate::Jwt::new`] guarantees for this crate (nothing else in the workspace uses
/// jsonwebtoken).
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only when a provider is installed already; there is no other in this program.
        let _ = PROVIDER.install_default();
    });
}

/// The HMAC secret of `family`'s key, or `InvalidKeyFormat` for any other kind of key.
fn hmac_key(family: AlgorithmFamily, bytes: &[u8]) -> Result<HmacSha256> {
    if family != AlgorithmFamily::Hmac {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    HmacSha256::new_from_slice(bytes).map_err(|_| ErrorKind::InvalidKeyFormat.into())
}

fn only_hs256(algorithm: Algorithm) -> Result<()> {
    if algorithm == Algorithm::HS256 {
        Ok(())
    } else {
        Err(ErrorKind::UnsupportedAlgorithm.into())
    }
}

fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    only_hs256(*algorithm)?;
    Ok(Box::new(Hs256(hmac_key(key.family(), key.as_bytes())?)))
}

fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    only_hs256(*algorithm)?;
    Ok(Box::new(Hs256(hmac_key(
        key.family(),
        key.try_get_as_bytes()?,
    )?)))
}

/// HMAC-SHA-256 keyed with the secret; each use starts from a clone of the keyed state.
struct Hs256(HmacSha256);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant-time comparison (subtle); a tag of the wrong length is refused too.
        mac.verify_slice(tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// RFC 4231 test case 2: HMAC-SHA-256 with key "Jefe".
    #[test]
    fn signs_the_rfc_4231_vector() {
        install();
        let signer = signer_factory(&Algorithm::HS256, &EncodingKey::from_secret(b"Jefe")).unwrap();
        let tag = signer.try_sign(b"what do ya want for nothing?").unwrap();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let verifier =
            verifier_factory(&Algorithm::HS256, &DecodingKey::from_secret(b"Jefe")).unwrap();
        assert!(
            verifier
                .verify(b"what do ya want for nothing?", &tag)
                .is_ok()
        );
        assert!(
            verifier
                .verify(b"what do ya want for nothing!", &tag)
                .is_err()
        );
        assert!(
            verifier
                .verify(b"what do ya want for nothing?", &tag[..31].to_vec())
                .is_err()
        );
    }

    #[test]
    fn every_other_algorithm_is_refused() {
        for alg in [
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let signer = signer_factory(&alg, &EncodingKey::from_secret(SECRET));
            assert!(
                matches!(
                    signer.err().map(|e| e.into_kind()),
                    Some(ErrorKind::UnsupportedAlgorithm)
                ),
                "{alg:?} signer"
            );
            let verifier = verifier_factory(&alg, &DecodingKey::from_secret(SECRET));
            assert!(
                matches!(
                    verifier.err().map(|e| e.into_kind()),
                    Some(ErrorKind::UnsupportedAlgorithm)
                ),
                "{alg:?} verifier"
            );
        }
    }

    #[test]
    fn keys_that_are_not_hmac_secrets_are_refused() {
        let rsa = DecodingKey::from_rsa_raw_components(b"\x01\x00\x01", b"\x01\x00\x01");
        assert!(verifier_factory(&Algorithm::HS256, &rsa).is_err());
        let ec = EncodingKey::from_ec_der(SECRET);
        assert!(signer_factory(&Algorithm::HS256, &ec).is_err());
    }

    #[test]
    fn installing_twice_is_harmless() {
        install();
        install();
        assert!(PROVIDER.install_default().is_err(), "already installed");
    }
}
