//! The HTTP API (poem-openapi), generic over the application's ports: one module per tag,
//! each with its DTOs, one response enum per operation, and the mapping from use-case errors
//! to status codes and [`rmm_protocol::api::ApiErrorCode`]s. Internal causes are logged,
//! never returned.

use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::Tags;
use rmm_application::{App, Ports};
use rmm_auth::Jwt;
use rmm_domain::Timestamp;

mod agent_admin;
pub mod agent_events;
mod agents;
mod allow;
mod audit;
mod audit_export;
mod auth;
pub mod client_addr;
mod commands;
mod enrollment;
pub mod error;
mod examples;
mod files;
mod groups;
mod path_params;
mod recordings;
mod rules;
mod terminals;
#[cfg(test)]
mod tests;
mod tunnels;
mod users;
pub mod wire_enum;

pub use allow::AllowHeader;
pub use auth::{Authenticate, Caller, TechAuth, authenticator, caller_of};
pub use error::{ErrorBody, error_as_json, json_error};
pub use path_params::PathParamNames;

#[derive(Tags)]
enum ApiTags {
    /// Logging in.
    Auth,
    /// Registering and listing agents.
    Agents,
    /// Opening, closing and inspecting tunnel sessions.
    Tunnel,
    /// Running commands in a tunnel and reading their output.
    Commands,
    /// The append-only audit log.
    Audit,
    /// Moving files to and from the agent.
    Files,
    /// Users and their roles (admins).
    Users,
    /// Groups of agents (customers, sites) that scope technicians.
    Groups,
    /// Enrollment tokens (admins), and machines enrolling themselves as agents.
    Enrollment,
    /// Interactive terminals (a PTY on the agent) in a tunnel.
    Terminals,
    /// Recordings of terminals (asciicast v2).
    Recordings,
}

/// The operations of one tag (`S` names which), over the application's ports. One type per
/// tag keeps each module's handlers beside their DTOs; [`Api`] puts them together.
pub struct Handlers<P: Ports, S> {
    app: Arc<App<P>>,
    jwt: Arc<Jwt>,
    section: PhantomData<fn() -> S>,
}

impl<P: Ports, S> Handlers<P, S> {
    fn new(app: &Arc<App<P>>, jwt: &Arc<Jwt>) -> Self {
        Self {
            app: Arc::clone(app),
            jwt: Arc::clone(jwt),
            section: PhantomData,
        }
    }
}

impl<P: Ports, S> std::fmt::Debug for Handlers<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}

/// Section markers of [`Handlers`].
#[derive(Debug)]
pub enum Auth {}
#[derive(Debug)]
pub enum Agents {}
#[derive(Debug)]
pub enum AgentAdmin {}
#[derive(Debug)]
pub enum Tunnels {}
#[derive(Debug)]
pub enum Commands {}
#[derive(Debug)]
pub enum Audit {}
#[derive(Debug)]
pub enum AuditExport {}
#[derive(Debug)]
pub enum Files {}
#[derive(Debug)]
pub enum Users {}
#[derive(Debug)]
pub enum Groups {}
#[derive(Debug)]
pub enum Enrollment {}
#[derive(Debug)]
pub enum Terminals {}
#[derive(Debug)]
pub enum Recordings {}

/// The whole API, as poem-openapi serves and documents it.
pub type Api<P> = (
    Handlers<P, Auth>,
    Handlers<P, Agents>,
    Handlers<P, AgentAdmin>,
    Handlers<P, Tunnels>,
    Handlers<P, Commands>,
    Handlers<P, Files>,
    Handlers<P, Audit>,
    Handlers<P, AuditExport>,
    Handlers<P, Users>,
    Handlers<P, Groups>,
    Handlers<P, Enrollment>,
    Handlers<P, Terminals>,
    Handlers<P, Recordings>,
);

/// The API over `app`, checking technicians' tokens with `jwt`.
pub fn api<P: Ports>(app: Arc<App<P>>, jwt: Arc<Jwt>) -> Api<P> {
    (
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
        Handlers::new(&app, &jwt),
    )
}

/// Converts a domain timestamp for the wire.
#[must_use]
pub fn to_datetime(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.as_unix_micros()).unwrap_or_default()
}

fn from_datetime(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_unix_micros(t.timestamp_micros())
}
