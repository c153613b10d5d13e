//! Users: creating them and checking their passwords.

use std::net::IpAddr;
use std::time::Duration;

use rmm_domain::{Actor, GroupName, Role, UserId, Username};

use crate::app::{App, Ports};
use crate::ports::{
    AuditAction, AuditEvent, Clock, Credentials, HashingBusy, IdGenerator, StoreError,
    UserChangeOutcome, UserRecord, UserRepository,
};

/// The shortest password accepted.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password: deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins lately for this username or from this address: refused without
    /// checking the password, for `retry_after`.
    #[error("too many failed logins; retry in {} s", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    /// The password could not be checked now (hashing at capacity).
    #[error("password hashing is at capacity")]
    Busy,
    #[error("user store failed")]
    Store(#[source] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("username {0} is taken")]
    Taken(Username),
    #[error("password must be at least 8 characters")]
    WeakPassword,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("no group named {0}")]
    UnknownGroup(GroupName),
    #[error("user store failed")]
    Store(#[source] StoreError),
}

/// A hash to verify against when the user does not exist, so that a login for an unknown
/// name costs as much as one for a known name (no user enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$U2s6wTv9qFHTRz33M0lMXz/DhPJNPl5jZ5/GI9HM0Vg";

impl<P: Ports> App<P> {
    /// Checks a username and password from the client at `from` (when known), throttled: see
    /// [`crate::throttle`].
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] for an unknown user or a wrong password,
    /// [`LoginError::Throttled`] after too many of those, [`LoginError::Busy`] when the
    /// password cannot be checked now.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Actor, LoginError> {
        let name = Username::parse(username).ok();
        let attempt = self
            .login_throttle
            .begin(name.as_ref().map(Username::as_str), from, self.clock.now())
            .map_err(|retry_after| LoginError::Throttled { retry_after })?;
        let outcome = self.check_password(name.as_ref(), password).await;
        match &outcome {
            Ok(_) => self.login_throttle.succeeded(&attempt),
            Err(LoginError::InvalidCredentials) => {
                self.login_throttle.failed(&attempt, self.clock.now());
            }
            Err(_) => self.login_throttle.abandoned(&attempt),
        }
        outcome
    }

    async fn check_password(
        &self,
        name: Option<&Username>,
        password: &str,
    ) -> Result<Actor, LoginError> {
        let Some(name) = name else {
            return Err(LoginError::InvalidCredentials);
        };
        let user = self
            .users
            .find_user(name)
            .await
            .map_err(LoginError::Store)?;
        let hash = user
            .as_ref()
            .map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let matches = self
            .credentials
            .verify_password(password, hash)
            .await
            .map_err(|HashingBusy| LoginError::Busy)?;
        match user {
            Some(user) if matches && user.disabled => {
                tracing::warn!(user_id = %user.id, "login refused: the user is disabled");
                Err(LoginError::InvalidCredentials)
            }
            Some(user) if matches => Ok(Actor {
                id: user.id,
                role: user.role,
            }),
            Some(_) | None => Err(LoginError::InvalidCredentials),
        }
    }

    /// Creates a user with an argon2id-hashed password, with its `user_created` entry in the
    /// name of `by` (`None`: the server console or first start).
    ///
    /// # Errors
    /// [`CreateUserError::Taken`], [`CreateUserError::WeakPassword`], or a failure.
    pub async fn create_user(
        &self,
        by: Option<Actor>,
        username: Username,
        password: &str,
        role: Role,
    ) -> Result<UserId, CreateUserError> {
        let groups = vec![GroupName::default_group()];
        self.create_user_in(by, username, password, role, &groups)
            .await
    }

    /// [`Self::create_user`], granting `groups` (all must exist).
    ///
    /// # Errors
    /// As [`Self::create_user`], and [`CreateUserError::UnknownGroup`].
    pub async fn create_user_in(
        &self,
        by: Option<Actor>,
        username: Username,
        password: &str,
        role: Role,
        groups: &[GroupName],
    ) -> Result<UserId, CreateUserError> {
        if let Some(unknown) = self
            .unknown_group(groups)
            .await
            .map_err(CreateUserError::Store)?
        {
            return Err(CreateUserError::UnknownGroup(unknown));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(CreateUserError::WeakPassword);
        }
        let password_hash = self
            .credentials
            .hash_password(password)
            .await
            .map_err(CreateUserError::Hashing)?;
        let now = self.clock.now();
        let user = UserRecord {
            id: self.ids.user_id(),
            username: username.clone(),
            password_hash,
            role,
            created_at: now,
            disabled: false,
            last_login_at: None,
        };
        let mut entry = AuditEvent::new(now, AuditAction::UserCreated);
        entry.user = by.map(|a| a.id);
        entry.detail = Some(format!(
            "user_id={} username={} role={} groups={}",
            user.id,
            username,
            role.as_str(),
            crate::groups::joined(groups)
        ));
        match self.users.insert_user(&user, groups, &entry).await {
            Ok(UserChangeOutcome::UnknownGroup(name)) => Err(CreateUserError::UnknownGroup(name)),
            Ok(_) => {
                tracing::info!(user_id = %user.id, username = %username, role = role.as_str(), by = ?by.map(|a| a.id), "user created");
                Ok(user.id)
            }
            Err(StoreError::Conflict) => Err(CreateUserError::Taken(username)),
            Err(e) => Err(CreateUserError::Store(e)),
        }
    }

    /// How many users exist (zero on a first run).
    ///
    /// # Errors
    /// [`StoreError`] from the store.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        self.users.count_users().await
    }
}
