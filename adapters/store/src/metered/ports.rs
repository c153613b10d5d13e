//! The [`Metered`] store's port implementations: each method times its call under its
//! `trait.method` name: one delegation per port method (a port method added later needs its
//! own here; the compiler says so).

use std::future::Future;

use rmm_application::*;
use rmm_domain::*;

use super::{Metered, command_ended, timed};

impl<S: SessionRepository> SessionRepository for Metered<S> {
    fn insert_pending(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed(
            "sessions.insert_pending",
            self.0.insert_pending(session, opened_with),
        )
    }

    fn insert_pending_capped(
        &self,
        session: &Session,
        opened_with: Option<TokenId>,
        cap: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed(
            "sessions.insert_pending_capped",
            self.0.insert_pending_capped(session, opened_with, cap),
        )
    }

    fn list_open_logged_out(
        &self,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send {
        timed(
            "sessions.list_open_logged_out",
            self.0.list_open_logged_out(),
        )
    }

    fn list_open_opened_with(
        &self,
        token: TokenId,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send {
        timed(
            "sessions.list_open_opened_with",
            self.0.list_open_opened_with(token),
        )
    }

    fn get(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send {
        timed("sessions.get", self.0.get(id))
    }

    fn list_open(&self) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send {
        timed("sessions.list_open", self.0.list_open())
    }

    fn activate(
        &self,
        id: SessionId,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed("sessions.activate", self.0.activate(id, now, note))
    }

    fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send {
        timed("sessions.close", self.0.close(id, reason, now, note))
    }

    fn close_all_open(
        &self,
        reason: CloseReason,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send {
        timed(
            "sessions.close_all_open",
            self.0.close_all_open(reason, now, note),
        )
    }

    fn close_idle(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send {
        timed("sessions.close_idle", self.0.close_idle(cutoff, now, note))
    }

    fn touch(
        &self,
        ids: &[SessionId],
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("sessions.touch", self.0.touch(ids, at))
    }
}

impl<S: AgentRepository> AgentRepository for Metered<S> {
    fn insert_agent(
        &self,
        agent: &AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("agents.insert_agent", self.0.insert_agent(agent))
    }

    fn find_agent_by_key(
        &self,
        digest: KeyDigest,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send {
        timed("agents.find_agent_by_key", self.0.find_agent_by_key(digest))
    }

    fn list_agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send {
        timed("agents.list_agents", self.0.list_agents())
    }

    fn record_seen(&self, seen: &[Seen]) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("agents.record_seen", self.0.record_seen(seen))
    }

    fn find_agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send {
        timed("agents.find_agent", self.0.find_agent(id))
    }

    fn revoke_agent(
        &self,
        id: AgentId,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send {
        timed("agents.revoke_agent", self.0.revoke_agent(id, entry))
    }

    fn set_agent_key(
        &self,
        id: AgentId,
        digest: KeyDigest,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send {
        timed(
            "agents.set_agent_key",
            self.0.set_agent_key(id, digest, entry),
        )
    }

    fn update_agent(
        &self,
        id: AgentId,
        change: &AgentChange,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<AgentChangeOutcome, StoreError>> + Send {
        timed(
            "agents.update_agent",
            self.0.update_agent(id, change, entry),
        )
    }
}

impl<S: UserRepository> UserRepository for Metered<S> {
    fn insert_user(
        &self,
        user: &UserRecord,
        groups: &[GroupName],
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send {
        timed("users.insert_user", self.0.insert_user(user, groups, entry))
    }

    fn find_user(
        &self,
        username: &Username,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send {
        timed("users.find_user", self.0.find_user(username))
    }

    fn find_user_by_id(
        &self,
        id: UserId,
    ) -> impl Future<Output = Result<Option<UserRecord>, StoreError>> + Send {
        timed("users.find_user_by_id", self.0.find_user_by_id(id))
    }

    fn list_users(&self) -> impl Future<Output = Result<Vec<UserRecord>, StoreError>> + Send {
        timed("users.list_users", self.0.list_users())
    }

    fn count_users(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("users.count_users", self.0.count_users())
    }

    fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        revoke: Option<(RevokeReason, Option<TokenId>)>,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send {
        timed(
            "users.update_user",
            self.0.update_user(id, change, revoke, entry),
        )
    }

    fn delete_user(
        &self,
        id: UserId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<UserChangeOutcome, StoreError>> + Send {
        timed("users.delete_user", self.0.delete_user(id, at, entry))
    }

    fn insert_token(
        &self,
        token: &TokenRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("users.insert_token", self.0.insert_token(token))
    }

    fn token_state(
        &self,
        id: TokenId,
    ) -> impl Future<Output = Result<Option<TokenState>, StoreError>> + Send {
        timed("users.token_state", self.0.token_state(id))
    }

    fn revoke_token(
        &self,
        id: TokenId,
        reason: RevokeReason,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed(
            "users.revoke_token",
            self.0.revoke_token(id, reason, at, entry),
        )
    }

    fn prune_tokens(
        &self,
        before: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("users.prune_tokens", self.0.prune_tokens(before))
    }
}

impl<S: GroupRepository> GroupRepository for Metered<S> {
    fn list_groups(&self) -> impl Future<Output = Result<Vec<GroupRecord>, StoreError>> + Send {
        timed("groups.list_groups", self.0.list_groups())
    }

    fn insert_group(
        &self,
        group: &GroupRecord,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("groups.insert_group", self.0.insert_group(group, entry))
    }

    fn delete_group(
        &self,
        name: &GroupName,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<GroupDeleteOutcome, StoreError>> + Send {
        timed("groups.delete_group", self.0.delete_group(name, entry))
    }

    fn user_groups(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<GroupName>, StoreError>> + Send {
        timed("groups.user_groups", self.0.user_groups(user))
    }

    fn all_user_groups(
        &self,
    ) -> impl Future<Output = Result<Vec<(UserId, GroupName)>, StoreError>> + Send {
        timed("groups.all_user_groups", self.0.all_user_groups())
    }

    fn may_see_agent(
        &self,
        user: UserId,
        agent: AgentId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed("groups.may_see_agent", self.0.may_see_agent(user, agent))
    }

    fn open_sessions_of(
        &self,
        user: UserId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("groups.open_sessions_of", self.0.open_sessions_of(user))
    }
}

impl<S: AuditLog> AuditLog for Metered<S> {
    fn append(&self, event: &AuditEvent) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("audit.append", self.0.append(event))
    }

    fn list_audit(
        &self,
        query: &AuditQuery,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send {
        timed("audit.list_audit", self.0.list_audit(query))
    }
}

impl<S: CommandRepository> CommandRepository for Metered<S> {
    fn stored_output_bytes(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("commands.stored_output_bytes", self.0.stored_output_bytes())
    }

    fn ended_output(
        &self,
        ended_before: Option<Timestamp>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredOutput>, StoreError>> + Send {
        timed(
            "commands.ended_output",
            self.0.ended_output(ended_before, limit),
        )
    }

    fn prune_output(
        &self,
        ids: &[CommandId],
        at: Timestamp,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send {
        timed("commands.prune_output", self.0.prune_output(ids, at))
    }

    fn insert_command(
        &self,
        command: &CommandRecord,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed(
            "commands.insert_command",
            self.0.insert_command(command, entry),
        )
    }

    fn get_command(
        &self,
        id: CommandId,
    ) -> impl Future<Output = Result<Option<CommandRecord>, StoreError>> + Send {
        timed("commands.get_command", self.0.get_command(id))
    }

    fn append_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        seq: u64,
        data: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed(
            "commands.append_output",
            self.0.append_output(id, stream, seq, data),
        )
    }

    fn read_output(
        &self,
        id: CommandId,
        stream: OutputStream,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, StoreError>> + Send {
        timed(
            "commands.read_output",
            self.0.read_output(id, stream, from, limit),
        )
    }

    fn finish_command(
        &self,
        id: CommandId,
        outcome: &CommandOutcome,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let status = outcome.status;
        timed("commands.finish_command", async move {
            let ended = self.0.finish_command(id, outcome, entry).await;
            if let Ok(true) = ended {
                command_ended(status);
            }
            ended
        })
    }

    fn fail_running_commands(
        &self,
        reason: CommandEndReason,
        at: Timestamp,
        note: &AuditNote,
    ) -> impl Future<Output = Result<Vec<CommandRecord>, StoreError>> + Send {
        timed("commands.fail_running_commands", async move {
            let ended = self.0.fail_running_commands(reason, at, note).await;
            for command in ended.iter().flatten() {
                command_ended(command.status);
            }
            ended
        })
    }
}

impl<S: EnrollmentRepository> EnrollmentRepository for Metered<S> {
    fn insert_enrollment(
        &self,
        enrollment: &NewEnrollment,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed(
            "enrollment.insert_enrollment",
            self.0.insert_enrollment(enrollment, entry),
        )
    }

    fn list_enrollments(
        &self,
    ) -> impl Future<Output = Result<Vec<EnrollmentRecord>, StoreError>> + Send {
        timed("enrollment.list_enrollments", self.0.list_enrollments())
    }

    fn revoke_enrollment(
        &self,
        id: EnrollmentId,
        at: Timestamp,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        timed(
            "enrollment.revoke_enrollment",
            self.0.revoke_enrollment(id, at, entry),
        )
    }

    fn enroll(
        &self,
        digest: KeyDigest,
        agent: &AgentRecord,
        entry: &AuditEvent,
    ) -> impl Future<Output = Result<EnrollOutcome, StoreError>> + Send {
        timed("enrollment.enroll", self.0.enroll(digest, agent, entry))
    }
}

impl<S: RecordingRepository> RecordingRepository for Metered<S> {
    fn ended_recordings(
        &self,
        ended_before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TerminalId>, StoreError>> + Send {
        timed(
            "recordings.ended_recordings",
            self.0.ended_recordings(ended_before, limit),
        )
    }

    fn prune_recordings(
        &self,
        ids: &[TerminalId],
        at: Timestamp,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + Send {
        timed(
            "recordings.prune_recordings",
            self.0.prune_recordings(ids, at),
        )
    }

    fn create(
        &self,
        recording: &RecordingRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("recordings.create", self.0.create(recording))
    }

    fn append(
        &self,
        id: TerminalId,
        seq: u32,
        data: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("recordings.append", self.0.append(id, seq, data))
    }

    fn finish(
        &self,
        id: TerminalId,
        ended_at: Timestamp,
        truncated: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("recordings.finish", self.0.finish(id, ended_at, truncated))
    }

    fn get_recording(
        &self,
        id: TerminalId,
    ) -> impl Future<Output = Result<Option<RecordingRecord>, StoreError>> + Send {
        timed("recordings.get_recording", self.0.get_recording(id))
    }

    fn list_recordings(
        &self,
        query: &RecordingQuery,
    ) -> impl Future<Output = Result<Vec<RecordingRecord>, StoreError>> + Send {
        timed("recordings.list_recordings", self.0.list_recordings(query))
    }

    fn chunk(
        &self,
        id: TerminalId,
        seq: u32,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        timed("recordings.chunk", self.0.chunk(id, seq))
    }

    fn finish_abandoned(
        &self,
        at: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        timed("recordings.finish_abandoned", self.0.finish_abandoned(at))
    }
}
