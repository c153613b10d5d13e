//! Status and kind fields as closed lists in the spec: [`Wire<T>`] documents a domain enum as
//! a string schema with its values (`enum`), named once, so generated clients get an enum
//! type. The wire strings stay the domain's own `as_str` (defined once, in the domain).

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use rmm_application::AuditAction;
use rmm_domain::{CloseReason, CommandEndReason, CommandStatus, Role, SessionStatus, TerminalEnd};

/// A domain enum with fixed wire strings.
pub trait WireEnum: Copy + Send + Sync + 'static {
    /// The schema's name in the spec.
    const NAME: &'static str;
    /// The schema's description.
    const DESCRIPTION: &'static str;
    /// A value to show as the schema's example, if any.
    const EXAMPLE: Option<Self> = None;
    /// Every value, in the order the spec lists them.
    fn all() -> &'static [Self];
    /// The value on the wire.
    fn wire(self) -> &'static str;
}

/// A [`WireEnum`] value as a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire<T>(pub T);

impl<T: WireEnum> Type for Wire<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        T::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(T::NAME.to_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(T::NAME.to_owned(), |_| MetaSchema {
            description: Some(T::DESCRIPTION),
            example: T::EXAMPLE.map(|v| v.wire().into()),
            enum_items: T::all()
                .iter()
                .map(|v| serde_json::Value::from(v.wire()))
                .collect(),
            ..MetaSchema::new("string")
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<T: WireEnum> ToJSON for Wire<T> {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.0.wire().into())
    }
}

impl<T: WireEnum> ParseFromJSON for Wire<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        value
            .as_str()
            .and_then(|s| T::all().iter().find(|v| v.wire() == s))
            .map(|v| Self(*v))
            .ok_or_else(|| ParseError::expected_type(value))
    }
}

/// An agent's connection as the agent list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentModeDto {
    /// Connected, no tunnel.
    Heartbeat,
    /// Connected, with a tunnel open.
    Tunnel,
    /// Not connected.
    Offline,
}

impl AgentModeDto {
    pub fn of(mode: Option<rmm_domain::AgentMode>) -> Self {
        match mode {
            None => Self::Offline,
            Some(rmm_domain::AgentMode::Heartbeat) => Self::Heartbeat,
            Some(rmm_domain::AgentMode::Tunnel { .. }) => Self::Tunnel,
        }
    }
}

impl WireEnum for AgentModeDto {
    const NAME: &'static str = "AgentMode";
    const DESCRIPTION: &'static str =
        "`heartbeat` (connected, no tunnel), `tunnel` (connected, a tunnel open) or `offline`.";
    fn all() -> &'static [Self] {
        &[Self::Heartbeat, Self::Tunnel, Self::Offline]
    }
    fn wire(self) -> &'static str {
        match self {
            Self::Heartbeat => rmm_domain::AgentMode::Heartbeat.as_str(),
            Self::Tunnel => rmm_domain::AgentMode::Tunnel {
                session: rmm_domain::SessionId::from_uuid(uuid::Uuid::nil()),
            }
            .as_str(),
            Self::Offline => "offline",
        }
    }
}

impl WireEnum for SessionStatus {
    const NAME: &'static str = "SessionStatus";
    const DESCRIPTION: &'static str = "A tunnel session's state: `pending` (waiting for the agent's confirmation), `active` or `closed`.";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for CloseReason {
    const NAME: &'static str = "CloseReason";
    const DESCRIPTION: &'static str =
        "Why a tunnel session closed (docs/protocol.md lists what each means).";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for CommandStatus {
    const NAME: &'static str = "CommandStatus";
    const DESCRIPTION: &'static str = "`running`, or how the command ended: `completed`, `timed_out`, `cancelled` or `failed` (it could not run to its end); `end_reason` says why for every end but `completed`.";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for CommandEndReason {
    const NAME: &'static str = "CommandEndReason";
    const DESCRIPTION: &'static str = "A command's `end_reason`, present for every end but `completed` (absent while it runs): why it ended other than by its process exiting on its own. Its session's close reason (`agent_disconnected`, `server_restart`, `closed_by_owner`, `idle`, ... as `CloseReason`) or its own: `agent_error` (the agent could not run it), `not_delivered` (it never reached the agent), `channel_in_use`, `timeout`, `cancelled_by_user`, `cancelled_by_agent` (the agent stopped it unasked, e.g. shutting down).";
    const EXAMPLE: Option<Self> = Some(Self::SessionClosed(CloseReason::AgentDisconnected));
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for Role {
    const NAME: &'static str = "Role";
    const DESCRIPTION: &'static str = "A user's role: `admin`, `technician` or `auditor`.";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for TerminalEnd {
    const NAME: &'static str = "TerminalEnd";
    const DESCRIPTION: &'static str = "Why a terminal ended: `exited` (the process exited), `closed` (by its user), `grace_expired` (no viewer reattached in time), `session_closed`, `agent_disconnected` or `failed`.";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}

impl WireEnum for AuditAction {
    const NAME: &'static str = "AuditEvent";
    const DESCRIPTION: &'static str =
        "What an audit entry records (docs/protocol.md lists the fields each kind carries).";
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn wire(self) -> &'static str {
        self.as_str()
    }
}
