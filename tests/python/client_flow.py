"""The whole technician flow through a client GENERATED from the committed OpenAPI document
(openapi-python-client), against the real release `rmm-server` and `rmm-agent`:

login -> agents -> open a tunnel -> run a command -> wait for its result -> close -> audit,

asserting each typed result: the generated model classes, the enum members of the statuses
and kinds, the command's stdout and exit code, the audit entries of the command. It also
asserts the generated module names (`open_tunnel`, `run_command`, ... rather than
`post_api_v1_...`) and that a bad path value is a typed `ErrorBody` naming `session_id`.

Run by scripts/python-client-tests.sh, which generates the client (package `rmm_client`) into
a temp folder and passes it here:
    python client_flow.py --client-dir DIR --bin target/release
"""

import argparse
import importlib
import os
import pkgutil
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from rig import Processes, free_port, wait_for

ADMIN_PASSWORD = "admin-password-for-python-client"
TECH_PASSWORD = "tech-password-for-python-client"
JWT_SECRET = "python-client-test-secret-python-client-test-0123"

# The operations the flow uses, as modules of the generated package: each must exist (a
# missing operationId makes them `post_api_v1_...`).
EXPECTED_MODULES = [
    "api.auth.login",
    "api.agents.list_agents",
    "api.agents.register_agent",
    "api.users.create_user",
    "api.users.list_users",
    "api.tunnel.open_tunnel",
    "api.tunnel.close_tunnel",
    "api.tunnel.get_tunnel_status",
    "api.commands.run_command",
    "api.commands.get_command",
    "api.commands.get_command_stdout",
    "api.commands.cancel_command",
    "api.audit.list_audit",
    "api.files.upload_file",
    "api.files.download_file",
]


def check_module_names():
    import rmm_client

    for name in EXPECTED_MODULES:
        importlib.import_module(f"rmm_client.{name}")
    api = importlib.import_module("rmm_client.api")
    generated = [m.name for m in pkgutil.walk_packages(api.__path__, "rmm_client.api.")]
    ugly = [m for m in generated if ".get_api_" in m or ".post_api_" in m or ".put_api_" in m or ".delete_api_" in m or ".patch_api_" in m]
    assert not ugly, f"modules named after paths (an operation without operationId): {ugly}"
    print(f"client_flow: {len(generated)} generated modules, none named after a path")
    return rmm_client


def flow(base, procs):
    rmm_client = check_module_names()
    from rmm_client import AuthenticatedClient, Client
    from rmm_client.api.agents import list_agents, register_agent
    from rmm_client.api.audit import list_audit
    from rmm_client.api.auth import login
    from rmm_client.api.commands import get_command, get_command_stdout, run_command
    from rmm_client.api.tunnel import close_tunnel, get_tunnel_status, open_tunnel
    from rmm_client.api.users import create_user, list_users
    from rmm_client.models import (
        AgentDto,
        AgentMode,
        AuditEvent,
        AuditPage,
        CloseBody,
        ClosedResponse,
        CloseReason,
        CommandBody,
        CommandDto,
        CommandStartedDto,
        CommandStatus,
        CreateUserBody,
        CreateUserBodyRole,
        CreatedUser,
        ErrorBody,
        ErrorCode,
        LoginBody,
        OpenBody,
        OpenedResponse,
        RegisterAgentBody,
        RegisteredAgentResponse,
        Role,
        SessionStatus,
        StatusDto,
        TokenResponse,
        UserDto,
    )
    from rmm_client.types import File

    anonymous = Client(base_url=base, raise_on_unexpected_status=True)

    # Login: a typed token; a wrong password a typed error with its enum code.
    refused = login.sync(client=anonymous, body=LoginBody(username="admin", password="wrong-password"))
    assert isinstance(refused, ErrorBody), refused
    assert refused.code is ErrorCode.INVALID_CREDENTIALS, refused.code
    token = login.sync(client=anonymous, body=LoginBody(username="admin", password=ADMIN_PASSWORD))
    assert isinstance(token, TokenResponse), token
    admin = AuthenticatedClient(base_url=base, token=token.token, raise_on_unexpected_status=True)

    # A technician (a role enum in the request and the answer) and an agent (its key, to
    # start the real agent).
    created = create_user.sync(client=admin, body=CreateUserBody(username="tina", password=TECH_PASSWORD, role=CreateUserBodyRole.TECHNICIAN, groups=["default"]))
    assert isinstance(created, CreatedUser), created
    users = list_users.sync(client=admin)
    assert isinstance(users, list) and all(isinstance(u, UserDto) for u in users), users
    roles = {u.username: u.role for u in users}
    assert roles == {"admin": Role.ADMIN, "tina": Role.TECHNICIAN}, roles
    registered = register_agent.sync(client=admin, body=RegisterAgentBody(name="py-agent"))
    assert isinstance(registered, RegisteredAgentResponse), registered
    procs.start_agent(base, registered.agent_key)

    tech_token = login.sync(client=anonymous, body=LoginBody(username="tina", password=TECH_PASSWORD))
    assert isinstance(tech_token, TokenResponse), tech_token
    tech = AuthenticatedClient(base_url=base, token=tech_token.token, raise_on_unexpected_status=True)

    # Agents: typed list, the agent connected in heartbeat mode.
    def our_agent():
        agents = list_agents.sync(client=tech)
        assert isinstance(agents, list) and all(isinstance(a, AgentDto) for a in agents), agents
        return next((a for a in agents if a.name == "py-agent" and a.connected), None)

    agent = wait_for("py-agent connected", our_agent)
    assert agent.agent_id == registered.agent_id, (agent.agent_id, registered.agent_id)
    assert agent.mode is AgentMode.HEARTBEAT, agent.mode

    # Open: typed, active; the agent is now in tunnel mode.
    opened = open_tunnel.sync(client=tech, body=OpenBody(agent_id=agent.agent_id))
    assert isinstance(opened, OpenedResponse), opened
    assert opened.status is SessionStatus.ACTIVE, opened.status
    session = opened.session_id
    assert isinstance(session, uuid.UUID), session
    assert our_agent().mode is AgentMode.TUNNEL
    status = get_tunnel_status.sync(session, client=tech)
    assert isinstance(status, StatusDto) and status.status is SessionStatus.ACTIVE, status

    # A bad path value: a typed 400 naming the parameter as the spec does.
    bad = get_tunnel_status.sync_detailed("not-a-uuid", client=tech)
    assert bad.status_code == 400, bad.status_code
    assert isinstance(bad.parsed, ErrorBody) and bad.parsed.code is ErrorCode.INVALID_REQUEST, bad.parsed
    assert "`session_id`" in bad.parsed.error and "param0" not in bad.parsed.error, bad.parsed.error

    # Run a command and wait for its result.
    started = run_command.sync(session, client=tech, body=CommandBody(command="echo hello-from-python; echo oops >&2; exit 3"))
    assert isinstance(started, CommandStartedDto), started
    command = started.command_id

    def ended():
        result = get_command.sync(session, command, client=tech, wait=30)
        assert isinstance(result, CommandDto), result
        return result if result.status is not CommandStatus.RUNNING else None

    result = wait_for("the command's end", ended, within=60)
    assert result.status is CommandStatus.COMPLETED, result.status
    assert result.exit_code == 3, result.exit_code
    assert result.stdout == "hello-from-python\n", repr(result.stdout)
    assert result.stderr == "oops\n", repr(result.stderr)
    raw = get_command_stdout.sync(session, command, client=tech)
    assert isinstance(raw, File), raw
    assert raw.payload.read() == b"hello-from-python\n"

    # Close: typed, closed by its owner.
    closed = close_tunnel.sync(client=tech, body=CloseBody(session_id=session))
    assert isinstance(closed, ClosedResponse), closed
    assert closed.status is SessionStatus.CLOSED and closed.close_reason is CloseReason.CLOSED_BY_OWNER, closed
    after = get_tunnel_status.sync(session, client=tech)
    assert after.status is SessionStatus.CLOSED and after.close_reason is CloseReason.CLOSED_BY_OWNER, after

    # Audit of the session: typed entries, enum kinds, the command's with its result.
    page = list_audit.sync(client=tech, session_id=session)
    assert isinstance(page, AuditPage), page
    events = [e.event for e in page.entries]
    for kind in (AuditEvent.TUNNEL_OPEN, AuditEvent.COMMAND, AuditEvent.COMMAND_END, AuditEvent.TUNNEL_CLOSE):
        assert kind in events, (kind, events)
    assert all(isinstance(e, AuditEvent) for e in events), events
    end = next(e for e in page.entries if e.event is AuditEvent.COMMAND_END)
    assert end.command_id == command, (end.command_id, command)
    assert end.command == "echo hello-from-python; echo oops >&2; exit 3", end.command
    assert end.exit_code == 3 and end.status == "completed", (end.exit_code, end.status)
    assert end.username == "tina" and end.session_id == session, (end.username, end.session_id)
    print(f"client_flow: ok ({len(page.entries)} audit entries of the session: {[e.value for e in events]})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client-dir", required=True, help="folder holding the generated package rmm_client")
    parser.add_argument("--bin", required=True, help="folder of the release rmm-server and rmm-agent")
    args = parser.parse_args()
    sys.path.insert(0, args.client_dir)

    work = Path(tempfile.mkdtemp(prefix="rmm-pyclient-"))
    procs = Processes(args.bin, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ok = False
    try:
        procs.start_server(port, ADMIN_PASSWORD, JWT_SECRET)
        flow(base, procs)
        ok = True
    finally:
        procs.stop()
        if ok and os.environ.get("RMM_PYCLIENT_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"client_flow: FAILED; server and agent logs in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
