//! Groups of agents (customers, sites): listed to everyone (technicians see their own),
//! created and deleted by admins.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use rmm_application::{GroupError, GroupRecord, Ports};
use rmm_domain::GroupName;
use rmm_protocol::api::ApiErrorCode;

use crate::auth::TechAuth;
use crate::error::{ErrorBody, error};
use crate::rules::{GroupNameRule, Text};
use crate::{ApiTags, Groups, Handlers};

#[derive(Debug, Object)]
struct GroupDto {
    group_id: String,
    name: String,
    /// How many agents are in the group.
    agents: u64,
}

#[derive(Debug, Object)]
struct CreateGroupBody {
    /// 1 to 64 characters, no control characters and no `/`.
    name: Text<GroupNameRule>,
}

#[derive(Debug, Object)]
struct CreatedGroup {
    group_id: String,
    name: String,
}

/// A response enum for one group operation: its success, then the failures they share.
macro_rules! group_response {
    ($name:ident { $($(#[$attr:meta])* $variant:ident $(($body:ty))?,)+ }) => {
        #[derive(ApiResponse)]
        enum $name {
            $($(#[$attr])* $variant $(($body))?,)+
            /// A bad group name.
            #[oai(status = 400)]
            #[allow(dead_code)] // Not every operation takes a name.
            BadRequest(Json<ErrorBody>),
            /// Missing, expired, revoked or invalid token.
            #[oai(status = 401)]
            #[allow(dead_code)] // Answered by the auth extractor; listed for the API docs.
            Unauthorized(Json<ErrorBody>),
            /// Only admins create and delete groups.
            #[oai(status = 403)]
            #[allow(dead_code)] // Everyone may list.
            Forbidden(Json<ErrorBody>),
            /// No such group (`group_not_found`).
            #[oai(status = 404)]
            #[allow(dead_code)] // Only a delete names a group.
            NotFound(Json<ErrorBody>),
            /// The name is taken (`group_exists`), or the group has agents (`group_not_empty`).
            #[oai(status = 409)]
            #[allow(dead_code)] // Listing conflicts with nothing.
            Conflict(Json<ErrorBody>),
            /// The database is unavailable; nothing was changed.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        }

        impl From<GroupError> for $name {
            fn from(e: GroupError) -> Self {
                let message = e.to_string();
                match e {
                    GroupError::Forbidden => Self::Forbidden(error(ApiErrorCode::Forbidden, message)),
                    GroupError::NotFound(_) => {
                        Self::NotFound(error(ApiErrorCode::GroupNotFound, message))
                    }
                    GroupError::Exists(_) => Self::Conflict(error(ApiErrorCode::GroupExists, message)),
                    GroupError::NotEmpty(_) => {
                        Self::Conflict(error(ApiErrorCode::GroupNotEmpty, message))
                    }
                    GroupError::Store(_) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "group operation failed");
                        Self::Unavailable(error(
                            ApiErrorCode::DatabaseUnavailable,
                            "the database is unavailable; nothing was changed",
                        ))
                    }
                }
            }
        }
    };
}

group_response!(ListGroupsResponse {
    /// The groups, by name.
    #[oai(status = 200)]
    Ok(Json<Vec<GroupDto>>),
});

group_response!(CreateGroupResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<CreatedGroup>),
    /// The body is not JSON: send `Content-Type: application/json`.
    #[oai(status = 415)]
    #[allow(dead_code)] // Answered by the body parser; listed for the API docs.
    UnsupportedMediaType(Json<ErrorBody>),
});

group_response!(DeleteGroupResponse {
    /// Deleted, with every user's grant of it.
    #[oai(status = 204)]
    NoContent,
});

impl From<GroupRecord> for GroupDto {
    fn from(g: GroupRecord) -> Self {
        Self {
            group_id: g.id,
            name: g.name.as_str().to_owned(),
            agents: g.agents,
        }
    }
}

#[OpenApi(prefix_path = "/api/v1")]
impl<P: Ports> Handlers<P, Groups> {
    /// List groups with their agent counts: every group for admins and auditors, their own
    /// for technicians.
    #[oai(
        path = "/groups",
        method = "get",
        tag = "ApiTags::Groups",
        operation_id = "listGroups"
    )]
    async fn list_groups(&self, auth: TechAuth) -> ListGroupsResponse {
        match self.app.list_groups(auth.0.actor).await {
            Ok(groups) => {
                ListGroupsResponse::Ok(Json(groups.into_iter().map(GroupDto::from).collect()))
            }
            Err(e) => e.into(),
        }
    }

    /// Create a group (admins only).
    #[oai(
        path = "/groups",
        method = "post",
        tag = "ApiTags::Groups",
        operation_id = "createGroup"
    )]
    async fn create_group(
        &self,
        auth: TechAuth,
        body: Json<CreateGroupBody>,
    ) -> CreateGroupResponse {
        let name = match GroupName::parse(&body.name) {
            Ok(name) => name,
            Err(e) => {
                return CreateGroupResponse::BadRequest(error(
                    ApiErrorCode::InvalidRequest,
                    e.to_string(),
                ));
            }
        };
        match self.app.create_group(auth.0.actor, name).await {
            Ok(g) => CreateGroupResponse::Created(Json(CreatedGroup {
                group_id: g.id,
                name: g.name.as_str().to_owned(),
            })),
            Err(e) => e.into(),
        }
    }

    /// Delete a group that has no agents (admins only); users lose their grant of it, and its
    /// enrollment tokens are deleted with it.
    #[oai(
        path = "/groups/:name",
        method = "delete",
        tag = "ApiTags::Groups",
        operation_id = "deleteGroup"
    )]
    async fn delete_group(
        &self,
        auth: TechAuth,
        /// The group's name.
        #[oai(name = "name", example = "crate::examples::group_name")]
        name: Path<String>,
    ) -> DeleteGroupResponse {
        let Ok(name) = GroupName::parse(&name.0) else {
            // No group can have this name.
            let message = format!("group {:?} not found", name.0);
            return DeleteGroupResponse::NotFound(error(ApiErrorCode::GroupNotFound, message));
        };
        match self.app.delete_group(auth.0.actor, name).await {
            Ok(()) => DeleteGroupResponse::NoContent,
            Err(e) => e.into(),
        }
    }
}
