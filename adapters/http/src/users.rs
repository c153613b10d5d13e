//! Users, managed by admins: list, create, change (role, disabled, password, groups), delete.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{CreateUserError, Ports, UserAdminError, UserRecord, UserUpdate};
use rmm_domain::{GroupName, Role, UserId, Username};
use rmm_protocol::api::ApiErrorCode;
use uuid::Uuid;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error};
use crate::rules::{GroupNameRule, PasswordRule, RoleRule, Text, UsernameRule};
use crate::wire_enum::Wire;
use crate::{ApiTags, Handlers, Users, to_datetime};

#[derive(Debug, Object)]
struct UserDto {
    user_id: Uuid,
    username: String,
    // `admin`, `technician` or `auditor`.
    role: Wire<Role>,
    /// A disabled user cannot log in; their tokens are refused.
    disabled: bool,
    created_at: DateTime<Utc>,
    /// The last successful login; null if never.
    #[oai(nullable)]
    last_login_at: Option<DateTime<Utc>>,
    /// The groups granted (technicians see only these groups' agents).
    groups: Vec<String>,
}

impl UserDto {
    fn new(user: UserRecord, groups: &[GroupName]) -> Self {
        let mut dto = Self::from(user);
        dto.groups = groups.iter().map(|g| g.as_str().to_owned()).collect();
        dto
    }
}

impl From<UserRecord> for UserDto {
    fn from(user: UserRecord) -> Self {
        Self {
            user_id: user.id.as_uuid(),
            username: user.username.as_str().to_owned(),
            role: Wire(user.role),
            disabled: user.disabled,
            created_at: to_datetime(user.created_at),
            last_login_at: user.last_login_at.map(to_datetime),
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Object)]
struct CreateUserBody {
    /// 1 to 64 characters of `a-z A-Z 0-9 . _ @ -`.
    username: Text<UsernameRule>,
    /// At least 8 characters.
    password: Text<PasswordRule>,
    /// `admin`, `technician` (or `tech`) or `auditor`.
    role: Text<RoleRule>,
    /// Groups to grant (each must exist); `default` when absent.
    #[oai(nullable)]
    groups: Option<Vec<Text<GroupNameRule>>>,
}

#[derive(Debug, Object)]
struct CreatedUser {
    user_id: Uuid,
}

#[derive(Debug, Object)]
struct UpdateUserBody {
    /// `admin`, `technician` (or `tech`) or `auditor`.
    #[oai(nullable)]
    role: Option<Text<RoleRule>>,
    /// Disabling a user revokes every token of theirs at once.
    #[oai(nullable)]
    disabled: Option<bool>,
    /// A new password (at least 8 characters); revokes every token of theirs.
    #[oai(nullable)]
    password: Option<Text<PasswordRule>>,
    /// The groups to grant instead of the current ones (each must exist).
    #[oai(nullable)]
    groups: Option<Vec<Text<GroupNameRule>>>,
}

/// Group names from a request body.
fn group_names(names: &[Text<GroupNameRule>]) -> Result<Vec<GroupName>, UserAdminError> {
    names
        .iter()
        .map(|n| {
            GroupName::parse(n).map_err(|e| bad_request(format!("group {:?}: {e}", n.as_str())))
        })
        .collect()
}

/// A response enum for one user operation: its success, then the failures every user
/// operation shares (so the API docs list exactly what each can answer).
macro_rules! user_response {
    ($name:ident { $($(#[$attr:meta])* $variant:ident $(($body:ty))?,)+ }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$attr])* $variant $(($body))?,)+
            /// A bad username, role or password.
            #[oai(status = 400)]
            BadRequest(Json<ErrorBody>),
            /// Missing, expired, revoked or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// Only admins manage users.
            #[oai(status = 403)]
            Forbidden(Json<ErrorBody>),
            /// No such user (`user_not_found`).
            #[oai(status = 404)]
            #[allow(dead_code)] // Not every operation names a user.
            NotFound(Json<ErrorBody>),
            /// The username is taken (`username_taken`), the change would leave no
            /// enabled admin (`last_admin`), or a group named does not exist
            /// (`group_not_found`).
            #[oai(status = 409)]
            Conflict(Json<ErrorBody>),
            /// The database is unavailable, or password hashing is at capacity; nothing changed.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        }

        impl From<UserAdminError> for $name {
            fn from(e: UserAdminError) -> Self {
                match failure(e) {
                    Failed::BadRequest(body) => Self::BadRequest(body),
                    Failed::Forbidden(body) => Self::Forbidden(body),
                    Failed::NotFound(body) => Self::NotFound(body),
                    Failed::Conflict(body) => Self::Conflict(body),
                    Failed::Unavailable(body) => Self::Unavailable(body),
                }
            }
        }
    };
}

/// A failed user operation's answer, before it takes its operation's enum.
enum Failed {
    BadRequest(Json<ErrorBody>),
    Forbidden(Json<ErrorBody>),
    NotFound(Json<ErrorBody>),
    Conflict(Json<ErrorBody>),
    Unavailable(Json<ErrorBody>),
}

fn failure(e: UserAdminError) -> Failed {
    let message = e.to_string();
    match e {
        UserAdminError::Forbidden => Failed::Forbidden(error(ApiErrorCode::Forbidden, message)),
        UserAdminError::WrongPassword => {
            Failed::Forbidden(error(ApiErrorCode::InvalidCredentials, message))
        }
        UserAdminError::NotFound(_) => Failed::NotFound(error(ApiErrorCode::UserNotFound, message)),
        UserAdminError::UnknownGroup(_) => {
            Failed::Conflict(error(ApiErrorCode::GroupNotFound, message))
        }
        UserAdminError::LastAdmin => Failed::Conflict(error(ApiErrorCode::LastAdmin, message)),
        UserAdminError::WeakPassword | UserAdminError::Invalid(_) => {
            Failed::BadRequest(error(ApiErrorCode::InvalidRequest, message))
        }
        UserAdminError::Busy => Failed::Unavailable(error(ApiErrorCode::ServerBusy, message)),
        UserAdminError::Hashing(_) | UserAdminError::Store(_) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "user operation failed");
            Failed::Unavailable(error(
                ApiErrorCode::DatabaseUnavailable,
                "the change could not be made; nothing was changed",
            ))
        }
    }
}

user_response!(ListUsersResponse {
    /// Every user who is not deleted, by username.
    #[oai(status = 200)]
    Ok(Json<Vec<UserDto>>),
});

user_response!(CreateUserResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<CreatedUser>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
});

user_response!(UpdateUserResponse {
    /// Changed; the user as they are now.
    #[oai(status = 200)]
    Ok(Json<UserDto>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
});

user_response!(DeleteUserResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
});

/// A 400 naming what is wrong.
fn bad_request(message: impl Into<String>) -> UserAdminError {
    UserAdminError::Invalid(message.into())
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Users> {
    /// List users (admins only), by username. Deleted users are not listed.
    #[oai(
        path = "/users",
        method = "get",
        tag = "ApiTags::Users",
        operation_id = "listUsers"
    )]
    async fn list_users(&self, auth: TechAuth) -> ListUsersResponse {
        let users = match self.app.list_users(Some(auth.0.actor)).await {
            Ok(users) => users,
            Err(e) => return e.into(),
        };
        let groups = match self.app.groups_of_users().await {
            Ok(groups) => groups,
            Err(e) => return UserAdminError::Store(e).into(),
        };
        let dto = |u: UserRecord| {
            let mine = groups.get(&u.id).map_or(&[][..], Vec::as_slice);
            UserDto::new(u, mine)
        };
        ListUsersResponse::Ok(Json(users.into_iter().map(dto).collect()))
    }

    /// Create a user (admins only).
    #[oai(
        path = "/users",
        method = "post",
        tag = "ApiTags::Users",
        operation_id = "createUser"
    )]
    async fn create_user(&self, auth: TechAuth, body: Json<CreateUserBody>) -> CreateUserResponse {
        let actor = auth.0.actor;
        if actor.role != Role::Admin {
            return UserAdminError::Forbidden.into();
        }
        let username = match Username::parse(&body.username) {
            Ok(name) => name,
            Err(e) => return bad_request(e.to_string()).into(),
        };
        let role = match Role::parse(&body.role) {
            Ok(role) => role,
            Err(e) => return bad_request(e.to_string()).into(),
        };
        let groups = match body.groups.as_deref().map(group_names).transpose() {
            Ok(groups) => groups.unwrap_or_else(|| vec![GroupName::default_group()]),
            Err(e) => return e.into(),
        };
        match self
            .app
            .create_user_in(Some(actor), username, &body.password, role, &groups)
            .await
        {
            Ok(id) => CreateUserResponse::Created(Json(CreatedUser {
                user_id: id.as_uuid(),
            })),
            Err(e @ CreateUserError::Taken(_)) => {
                CreateUserResponse::Conflict(error(ApiErrorCode::UsernameTaken, e.to_string()))
            }
            Err(CreateUserError::WeakPassword) => UserAdminError::WeakPassword.into(),
            Err(e @ CreateUserError::UnknownGroup(_)) => {
                CreateUserResponse::Conflict(error(ApiErrorCode::GroupNotFound, e.to_string()))
            }
            Err(CreateUserError::Hashing(why)) => UserAdminError::Hashing(why).into(),
            Err(CreateUserError::Store(e)) => UserAdminError::Store(e).into(),
        }
    }

    /// Change a user's role, state or password (admins only). Disabling a user, or setting
    /// their password, revokes every token of theirs at once.
    #[oai(
        path = "/users/:user_id",
        method = "patch",
        tag = "ApiTags::Users",
        operation_id = "updateUser"
    )]
    async fn update_user(
        &self,
        auth: TechAuth,
        /// The user's id (from `listUsers`).
        #[oai(name = "user_id", example = "crate::examples::id")]
        user_id: Path<Uuid>,
        body: Json<UpdateUserBody>,
    ) -> UpdateUserResponse {
        let body = body.0;
        let role = match body.role.as_deref().map(Role::parse).transpose() {
            Ok(role) => role,
            Err(e) => return bad_request(e.to_string()).into(),
        };
        let groups = match body.groups.as_deref().map(group_names).transpose() {
            Ok(groups) => groups,
            Err(e) => return e.into(),
        };
        let update = UserUpdate {
            role,
            disabled: body.disabled,
            password: body.password.map(Text::into_string),
            groups,
        };
        let id = UserId::from_uuid(user_id.0);
        let user = match self.app.update_user(Some(auth.0.actor), id, update).await {
            Ok(user) => user,
            Err(e) => return e.into(),
        };
        match self.app.groups_of_user(id).await {
            Ok(groups) => UpdateUserResponse::Ok(Json(UserDto::new(user, &groups))),
            Err(e) => UserAdminError::Store(e).into(),
        }
    }

    /// Delete a user (admins only): they can no longer log in, every token of theirs is
    /// revoked, and their audit history stays.
    #[oai(
        path = "/users/:user_id",
        method = "delete",
        tag = "ApiTags::Users",
        operation_id = "deleteUser"
    )]
    async fn delete_user(
        &self,
        auth: TechAuth,
        /// The user's id (from `listUsers`).
        #[oai(name = "user_id", example = "crate::examples::id")]
        user_id: Path<Uuid>,
    ) -> DeleteUserResponse {
        let id = UserId::from_uuid(user_id.0);
        match self.app.delete_user(Some(auth.0.actor), id).await {
            Ok(()) => DeleteUserResponse::NoContent,
            Err(e) => e.into(),
        }
    }
}
