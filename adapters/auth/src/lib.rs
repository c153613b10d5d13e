//! Secrets: argon2id password hashes, agent keys (256-bit random, stored as SHA-256), and the
//! JWTs technicians present (HS256).

use std::fmt;
use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rmm_application::{AgentKey, Credentials, HashingBusy, KeyDigest};
use rmm_domain::{Actor, Role, Timestamp, TokenId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod hs256;
mod pool;

pub use pool::HashLimits;
use pool::HashPool;

/// Prefix of agent keys, so a leaked key is recognisable in logs and secret scanners.
const AGENT_KEY_PREFIX: &str = "rmmk_";

/// Argon2id with the crate's defaults (RFC 9106 second recommendation: 19 MiB and tens of
/// milliseconds of CPU per hash, by design). Hashes run on a few dedicated threads (see
/// [`HashLimits`]), so memory and CPU stay bounded whatever the number of logins: beyond the
/// limits a hash is refused with [`HashingBusy`] instead of queued without end.
#[derive(Debug, Clone, Default)]
pub struct Argon2Credentials {
    pool: HashPool,
}

impl Argon2Credentials {
    /// Credentials hashing within `limits`. The hashing threads start on the first hash.
    #[must_use]
    pub fn new(limits: HashLimits) -> Self {
        Self {
            pool: HashPool::new(limits),
        }
    }

    /// The limits hashing runs within.
    #[must_use]
    pub fn limits(&self) -> HashLimits {
        self.pool.limits()
    }
}

impl Credentials for Argon2Credentials {
    async fn hash_password(&self, password: &str) -> Result<String, String> {
        let password = password.to_owned();
        self.pool
            .run(move |_| {
                Argon2::default()
                    .hash_password(password.as_bytes())
                    .map(|h| h.to_string())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
    }

    async fn verify_password(&self, password: &str, hash: &str) -> Result<bool, HashingBusy> {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.pool
            .run(move |memory| verify_with_memory(memory, password.as_bytes(), &hash))
            .await
    }

    fn new_agent_key(&self) -> AgentKey {
        let secret = format!("{AGENT_KEY_PREFIX}{}", random_secret(32));
        let digest = self.digest_agent_key(&secret);
        AgentKey { secret, digest }
    }

    fn digest_agent_key(&self, key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }
}

/// Whether `password` matches the PHC string `hash` (argon2 of any variant and parameters),
/// computed in `memory`, which is grown to the parameters' size once and then reused.
fn verify_with_memory(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Argon2Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let Some(working) = memory.get_mut(..blocks) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, working)
        .is_ok()
        // `Output`'s comparison takes constant time.
        && Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// `bytes` random bytes from the OS, URL-safe base64 encoded: passwords and secrets that are
/// printed or stored in files.
#[must_use]
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not recoverable for a server that mints secrets.
    getrandom::fill(&mut buf).unwrap_or_else(|e| panic!("OS random source failed: {e}"));
    URL_SAFE_NO_PAD.encode(buf)
}

/// The HS256 secret. Debug output never shows it.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum JwtSecretError {
    #[error(
        "RMM_JWT_SECRET must be at least 32 bytes (got {0}); generate one with `openssl rand -base64 48`"
    )]
    TooShort(usize),
}

impl JwtSecret {
    pub const MIN_LEN: usize = 32;

    /// # Errors
    /// [`JwtSecretError::TooShort`] under 32 bytes.
    pub fn parse(secret: &str) -> Result<Self, JwtSecretError> {
        if secret.len() < Self::MIN_LEN {
            return Err(JwtSecretError::TooShort(secret.len()));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret([redacted])")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: i64,
    iat: i64,
    /// The token's id: what the server stores, revokes and checks on every request.
    jti: String,
}

/// Issues and checks technicians' tokens.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A token and when it expires.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: Timestamp,
}

/// What a validly signed, unexpired token says: whose it is and which one it is. Whether it
/// is still live (not revoked, its user enabled) is the application's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user: UserId,
    pub id: TokenId,
    pub expires_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
}

impl Jwt {
    #[must_use]
    pub fn new(secret: &JwtSecret, ttl: Duration) -> Self {
        // jsonwebtoken has no crypto backend of its own here (see `hs256`).
        hs256::install();
        // Only HS256: `alg: none` and every other algorithm are rejected by the validation.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
            ttl,
        }
    }

    /// How long a token lives.
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs token `id` of `actor`, issued at `issued_at`, valid until `expires_at`.
    ///
    /// # Errors
    /// A message if signing fails (it does not with an HMAC key).
    pub fn issue(
        &self,
        actor: Actor,
        id: TokenId,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<IssuedToken, String> {
        let claims = Claims {
            sub: actor.id.to_string(),
            role: actor.role.as_str().to_owned(),
            exp: expires_at.as_unix_micros() / 1_000_000,
            iat: issued_at.as_unix_micros() / 1_000_000,
            jti: id.to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())?;
        Ok(IssuedToken { token, expires_at })
    }

    /// # Errors
    /// [`TokenError::Expired`], or [`TokenError::Invalid`] for a bad signature, algorithm,
    /// shape or claim (a token without `jti`, from before tokens could be revoked, included).
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user = UserId::parse(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        let id = TokenId::parse(&data.claims.jti).map_err(|_| TokenError::Invalid)?;
        Role::parse(&data.claims.role).map_err(|_| TokenError::Invalid)?;
        Ok(VerifiedToken {
            user,
            id,
            expires_at: Timestamp::from_unix_micros(data.claims.exp.saturating_mul(1_000_000)),
        })
    }
}

#[cfg(test)]
mod tests;
