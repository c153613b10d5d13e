"""schemathesis hooks of the contract run (contract.py, scripts/contract-tests.sh).

Authentication: the run's admin logs in through the login operation, and again after a
request sent with its token answers 401 (the fuzzed logout revokes the token it is sent
with). The fuzzer's own logins fail, and after 5 failures in a minute the server refuses
every login from their address for a while (as it should); so the run's logins name another
client address in `X-Forwarded-For` (the server trusts it from 127.0.0.1 in this run:
RMM_TRUSTED_PROXIES), and the fuzzer never tries a login as the run's admin (5 wrong
passwords would lock that username out too).

Guards: the run fuzzes as an admin, and an admin may do what would end the run early without
any fault of the server: take away its own admin rights (PATCH or DELETE of its own user: a
new password, `disabled`, another role, deletion) or cut the one real agent off (revoke or
rotate its key: it is then refused, and every tunnel operation after it could only answer
404/409). Cases doing those to THE RUN'S ADMIN or THE REAL AGENT are not sent; the same
operations on every other user and agent (the ones the run creates) are. Revoking its own
token (logout) is not held back: the run logs in again on 401.

Links: the stateful phase follows OpenAPI links from one answer to the next call. The spec
has none (poem-openapi writes none), and schemathesis' inference finds the simple ones; the
ones that make a technician's session are added here: list agents -> open a tunnel to the
real agent -> run a command -> read it, its output, cancel it, feed its stdin; open a
terminal -> close it; files in the run's own folder; close the tunnel. And the admin's:
register an agent / create a user / group / enrollment token -> change or delete it. Before
each open, the sessions the run opened are closed (one tunnel per agent: a scenario should
find the agent free, not `session_exists`).

Everything else is sent as generated. `RMM_CONTRACT_GUARDED` names a file that gets one line
per case held back, so the driver can report how many.
"""

import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["RMM_CONTRACT_BASE"]
ADMIN = os.environ["RMM_CONTRACT_ADMIN"]
ADMIN_PASSWORD = os.environ["RMM_CONTRACT_ADMIN_PASSWORD"]
ADMIN_ID = os.environ["RMM_CONTRACT_ADMIN_ID"]
AGENT_ID = os.environ["RMM_CONTRACT_AGENT_ID"]
# A folder of the agent's machine the file operations use (inside the sandbox's writable dir).
FILES = os.environ["RMM_CONTRACT_FILES"]

SESSION = "$response.body#/session_id"
IN_SESSION = {"session_id": "$request.path.session_id"}
# (from operation, its status, to operation, parameters, request body)
LINKS = [
    ("listAgents", "200", "openTunnel", {}, {"agent_id": AGENT_ID}),
    ("openTunnel", "200", "getTunnelStatus", {"session_id": SESSION}, None),
    ("openTunnel", "200", "runCommand", {"session_id": SESSION}, None),
    ("openTunnel", "200", "openTerminal", {"session_id": SESSION}, None),
    ("openTunnel", "200", "listTerminals", {"session_id": SESSION}, None),
    ("openTunnel", "200", "listFiles", {"session_id": SESSION, "path": FILES}, None),
    ("openTunnel", "200", "uploadFile", {"session_id": SESSION, "path": f"{FILES}/file.bin"}, None),
    ("openTunnel", "200", "getUploadStatus", {"session_id": SESSION, "path": f"{FILES}/file.bin"}, None),
    ("openTunnel", "200", "closeTunnel", {}, {"session_id": SESSION}),
    ("uploadFile", "201", "downloadFile", {**IN_SESSION, "path": "$request.query.path"}, None),
    ("runCommand", "202", "getCommand", {**IN_SESSION, "command_id": "$response.body#/command_id"}, None),
    ("runCommand", "202", "getCommandStdout", {**IN_SESSION, "command_id": "$response.body#/command_id"}, None),
    ("runCommand", "202", "getCommandStderr", {**IN_SESSION, "command_id": "$response.body#/command_id"}, None),
    ("runCommand", "202", "cancelCommand", {**IN_SESSION, "command_id": "$response.body#/command_id"}, None),
    ("runCommand", "202", "writeCommandStdin", {**IN_SESSION, "command_id": "$response.body#/command_id"}, None),
    ("openTerminal", "201", "closeTerminal", {**IN_SESSION, "terminal_id": "$response.body#/terminal_id"}, None),
    ("registerAgent", "201", "updateAgent", {"agent_id": "$response.body#/agent_id"}, None),
    ("registerAgent", "201", "rotateAgentKey", {"agent_id": "$response.body#/agent_id"}, None),
    ("registerAgent", "201", "revokeAgent", {"agent_id": "$response.body#/agent_id"}, None),
    ("createUser", "201", "updateUser", {"user_id": "$response.body#/user_id"}, None),
    ("createUser", "201", "deleteUser", {"user_id": "$response.body#/user_id"}, None),
    ("createGroup", "201", "deleteGroup", {"name": "$request.body#/name"}, None),
    ("createEnrollmentToken", "201", "revokeEnrollmentToken", {"enrollment_id": "$response.body#/enrollment_id"}, None),
]


@schemathesis.hook
def before_load_schema(context, raw_schema):
    operations = {
        op["operationId"]: op
        for methods in raw_schema["paths"].values()
        for op in methods.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for source, status, target, parameters, body in LINKS:
        assert source in operations and target in operations, (source, target)
        link = {"operationId": target}
        if parameters:
            link["parameters"] = parameters
        if body is not None:
            link["requestBody"] = body
        response = operations[source]["responses"][status]
        response.setdefault("links", {})[f"{target[0].upper()}{target[1:]}"] = link


# (method, path template) -> (path parameter, the protected value).
PROTECTED = {
    ("PATCH", "/api/v1/users/{user_id}"): ("user_id", ADMIN_ID),
    ("DELETE", "/api/v1/users/{user_id}"): ("user_id", ADMIN_ID),
    ("DELETE", "/api/v1/agents/{agent_id}"): ("agent_id", AGENT_ID),
    ("POST", "/api/v1/agents/{agent_id}/rotate-key"): ("agent_id", AGENT_ID),
}

# The address the run's own logins come from (TEST-NET-1, RFC 5737).
OWN_ADDRESS = "192.0.2.17"


def own_call(method, path, body=None, token=None):
    """A request of the run itself (not a test case), from OWN_ADDRESS."""
    headers = {"X-Forwarded-For": OWN_ADDRESS}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{BASE}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response) if response.length else None
    except urllib.error.HTTPError as e:
        return e.code, None


class AdminToken:
    """The admin's current token: fetched when there is none, forgotten when a request sent
    with it answers 401. Every phase runs its cases through here (schemathesis' own replay
    on 401 does not cover the stateful phase)."""

    token = None
    lock = threading.Lock()

    @classmethod
    def current(cls):
        with cls.lock:
            if cls.token is None:
                status, body = own_call("POST", "/api/v1/auth/login", {"username": ADMIN, "password": ADMIN_PASSWORD})
                assert status == 200, f"the run's admin cannot log in: {status}"
                cls.token = body["token"]
            return cls.token

    @classmethod
    def forget(cls, token):
        with cls.lock:
            if token and cls.token == token:
                cls.token = None


@schemathesis.auth(refresh_interval=None)
class AdminLogin:
    """The admin's token on every case."""

    def get(self, case, context):
        return AdminToken.current()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# Sessions the run opened and may not have closed: closed before the next open, so that each
# scenario finds the agent free (one tunnel per agent) rather than `session_exists`.
OPENED = set()


def locks_out(case):
    if case.method.upper() == "POST" and case.path == "/api/v1/auth/login":
        return isinstance(case.body, dict) and case.body.get("username") == ADMIN
    rule = PROTECTED.get((case.method.upper(), case.path))
    if rule is None:
        return False
    name, value = rule
    return str((case.path_parameters or {}).get(name, "")).lower() == value.lower()


@schemathesis.hook
def filter_case(context, case):
    if not locks_out(case):
        return True
    guarded = os.environ.get("RMM_CONTRACT_GUARDED")
    if guarded:
        with open(guarded, "a") as f:
            f.write(f"{case.method.upper()} {case.path}\n")
    return False


@schemathesis.hook
def before_call(context, case, kwargs):
    # The filter above is the guard; this makes sure no phase went around it.
    assert not locks_out(case), f"lock-out case reached the server: {case.method} {case.formatted_path}"
    if case.method.upper() == "POST" and case.path == "/api/v1/tunnel/open":
        while OPENED:
            own_call("POST", "/api/v1/tunnel/close", {"session_id": OPENED.pop()}, AdminToken.current())


@schemathesis.hook
def after_call(context, case, response):
    if response.status_code == 401:
        sent = response.request.headers.get("Authorization") or ""
        AdminToken.forget(sent.removeprefix("Bearer "))
    if case.method.upper() == "POST" and case.path == "/api/v1/tunnel/open" and response.status_code == 200:
        OPENED.add(response.json()["session_id"])
