//! Passwords, agent keys and technicians' tokens.

use uuid::Uuid;

use super::*;

fn jwt() -> Jwt {
    Jwt::new(
        &JwtSecret::parse(&"k".repeat(32)).unwrap(),
        Duration::from_secs(3600),
    )
}

fn now() -> Timestamp {
    Timestamp::from_unix_micros(chrono::Utc::now().timestamp_micros())
}

const ACTOR: Actor = Actor {
    id: UserId::from_uuid(Uuid::from_u128(7)),
    role: Role::Admin,
};
const TOKEN: TokenId = TokenId::from_uuid(Uuid::from_u128(9));

/// A token of `ACTOR` issued at `at`, living as long as `jwt` says.
fn issue(jwt: &Jwt, at: Timestamp) -> IssuedToken {
    jwt.issue(ACTOR, TOKEN, at, at.plus(jwt.ttl())).unwrap()
}

/// Whose and which token `token` is, when it verifies.
fn verified(jwt: &Jwt, token: &str) -> Result<(UserId, TokenId), TokenError> {
    jwt.verify(token).map(|v| (v.user, v.id))
}

#[test]
fn short_secrets_are_refused_with_the_length() {
    let err = JwtSecret::parse("short").unwrap_err();
    assert!(err.to_string().contains("got 5"));
    assert!(!format!("{:?}", JwtSecret::parse(&"x".repeat(40)).unwrap()).contains("xxx"));
}

#[test]
fn an_issued_token_verifies_to_the_same_actor() {
    let jwt = jwt();
    let token = issue(&jwt, now());
    assert_eq!(verified(&jwt, &token.token).unwrap(), (ACTOR.id, TOKEN));
}

#[test]
fn expired_wrongly_signed_none_and_garbage_tokens_are_rejected() {
    let jwt = jwt();
    let old = issue(&jwt, now().minus(Duration::from_secs(7200)));
    assert!(matches!(jwt.verify(&old.token), Err(TokenError::Expired)));

    let other = Jwt::new(
        &JwtSecret::parse(&"z".repeat(32)).unwrap(),
        Duration::from_secs(60),
    );
    let forged = issue(&other, now());
    assert!(matches!(
        jwt.verify(&forged.token),
        Err(TokenError::Invalid)
    ));

    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let exp = now().as_unix_micros() / 1_000_000 + 3600;
    let body = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{}","role":"admin","exp":{exp},"iat":1}}"#,
        ACTOR.id
    ));
    assert!(matches!(
        jwt.verify(&format!("{header}.{body}.")),
        Err(TokenError::Invalid)
    ));
    assert!(matches!(jwt.verify("not.a.jwt"), Err(TokenError::Invalid)));
}

/// A token signed by hand (not through jsonwebtoken): `alg` in the header, `mac` the
/// HMAC over `header.body` keyed with `secret`.
fn hand_signed(alg: &str, body: &str, mac: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
    let body = URL_SAFE_NO_PAD.encode(body);
    let tag = URL_SAFE_NO_PAD.encode(mac(format!("{header}.{body}").as_bytes()));
    format!("{header}.{body}.{tag}")
}

fn hs256(secret: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> {
    move |msg| {
        let mut mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(secret).unwrap();
        hmac::Mac::update(&mut mac, msg);
        hmac::Mac::finalize(mac).into_bytes().to_vec()
    }
}

fn claims(exp: i64) -> String {
    format!(
        r#"{{"sub":"{}","role":"admin","exp":{exp},"iat":1,"jti":"{TOKEN}"}}"#,
        ACTOR.id
    )
}

#[test]
fn a_token_without_an_id_is_refused() {
    let body = format!(
        r#"{{"sub":"{}","role":"admin","exp":{},"iat":1}}"#,
        ACTOR.id,
        in_an_hour()
    );
    let token = hand_signed("HS256", &body, hs256(&[b'k'; 32]));
    assert!(matches!(jwt().verify(&token), Err(TokenError::Invalid)));
}

fn in_an_hour() -> i64 {
    now().as_unix_micros() / 1_000_000 + 3600
}

#[test]
fn a_standard_hs256_token_signed_elsewhere_verifies() {
    let token = hand_signed("HS256", &claims(in_an_hour()), hs256(&[b'k'; 32]));
    assert_eq!(verified(&jwt(), &token).unwrap(), (ACTOR.id, TOKEN));
}

#[test]
fn tokens_of_another_algorithm_with_the_right_secret_are_refused() {
    let secret = [b'k'; 32];
    let hs384 = |msg: &[u8]| {
        let mut mac = <hmac::Hmac<sha2::Sha384> as hmac::KeyInit>::new_from_slice(&secret).unwrap();
        hmac::Mac::update(&mut mac, msg);
        hmac::Mac::finalize(mac).into_bytes().to_vec()
    };
    let hs512 = |msg: &[u8]| {
        let mut mac = <hmac::Hmac<sha2::Sha512> as hmac::KeyInit>::new_from_slice(&secret).unwrap();
        hmac::Mac::update(&mut mac, msg);
        hmac::Mac::finalize(mac).into_bytes().to_vec()
    };
    let body = claims(in_an_hour());
    let jwt = jwt();
    for token in [
        hand_signed("HS384", &body, hs384),
        hand_signed("HS512", &body, hs512),
        // An HS256 tag under another algorithm's name.
        hand_signed("HS512", &body, hs256(&secret)),
        hand_signed("RS256", &body, hs256(&secret)),
        hand_signed("ES256", &body, hs256(&secret)),
    ] {
        assert!(
            matches!(jwt.verify(&token), Err(TokenError::Invalid)),
            "{token}"
        );
    }
}

#[test]
fn a_wrong_secret_or_a_changed_tag_or_body_is_refused() {
    let jwt = jwt();
    let body = claims(in_an_hour());
    let wrong = hand_signed("HS256", &body, hs256(&[b'z'; 32]));
    assert!(matches!(jwt.verify(&wrong), Err(TokenError::Invalid)));

    let good = issue(&jwt, now()).token;
    let (signed, tag) = good.rsplit_once('.').unwrap();
    let mut tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
    tag[31] ^= 1;
    let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&tag));
    assert!(matches!(jwt.verify(&flipped), Err(TokenError::Invalid)));
    let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&tag[..16]));
    assert!(matches!(jwt.verify(&short), Err(TokenError::Invalid)));
    let (_, old_tag) = good.rsplit_once('.').unwrap();
    let (header, _) = signed.split_once('.').unwrap();
    let other_body = URL_SAFE_NO_PAD.encode(claims(in_an_hour() + 60));
    let swapped = format!("{header}.{other_body}.{old_tag}");
    assert!(matches!(jwt.verify(&swapped), Err(TokenError::Invalid)));
}

#[test]
fn exp_is_enforced_without_leeway_and_required() {
    let jwt = jwt();
    let secret = [b'k'; 32];
    let just_expired = hand_signed("HS256", &claims(in_an_hour() - 3601), hs256(&secret));
    assert!(matches!(
        jwt.verify(&just_expired),
        Err(TokenError::Expired)
    ));
    let no_exp = hand_signed(
        "HS256",
        &format!(r#"{{"sub":"{}","role":"admin","iat":1}}"#, ACTOR.id),
        hs256(&secret),
    );
    assert!(matches!(jwt.verify(&no_exp), Err(TokenError::Invalid)));
}

#[test]
fn agent_keys_are_random_prefixed_and_digested() {
    let creds = Argon2Credentials::default();
    let a = creds.new_agent_key();
    let b = creds.new_agent_key();
    assert!(a.secret.starts_with("rmmk_"));
    assert_eq!(a.secret.len(), 5 + 43);
    assert_ne!(a.secret, b.secret);
    assert!(creds.digest_agent_key(&a.secret).ct_eq(&a.digest));
    assert!(!creds.digest_agent_key(&b.secret).ct_eq(&a.digest));
}

#[tokio::test]
async fn passwords_hash_with_argon2id_and_verify() {
    let creds = Argon2Credentials::default();
    let hash = creds.hash_password("correct horse").await.unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert_eq!(
        creds.verify_password("correct horse", &hash).await,
        Ok(true)
    );
    assert_eq!(creds.verify_password("wrong horse", &hash).await, Ok(false));
    assert_eq!(
        creds.verify_password("correct horse", "not a hash").await,
        Ok(false)
    );
}
