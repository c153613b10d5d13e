"""Contract fuzzing of the HTTP API (issue 17): schemathesis against the spec the real
`rmm-server` serves (/api/v1/openapi.json), as an admin, with every check and the four phases
(examples, coverage, fuzzing, stateful), while a real `rmm-agent` is connected so tunnels
open and commands, files and terminals reach a machine. Any failure fails the run: a 5xx, an
answer its operation does not document, a body or header unlike the spec, an invalid input
accepted or a valid one refused, a 405 without `Allow`...

Run by scripts/contract-tests.sh, inside a sandbox (own network namespace with loopback
only, read-only file system but for the work dir, own PID namespace):
    python contract.py --bin target/release --work DIR --examples N [--stateful-examples S]
        [--stateful-seconds T] [--seed SEED] --summary FILE

Two schemathesis runs: the examples, coverage and fuzzing phases with N cases per operation,
then the stateful phase for a time budget (suite after suite of scenarios). Writes FILE (JSON), per run:
requests sent, operations covered, server errors, failures per check, lock-out cases
contract_hooks.py held back; and for the stateful run its scenarios, the links it followed to
a 2xx and how many times it went all the way open -> command -> read.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rig import Api, Processes, free_port, wait_for

HERE = Path(__file__).resolve().parent
ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-for-contract-tests"
JWT_SECRET = "contract-test-secret-contract-test-secret-0123"
AGENT_NAME = "contract-agent"

# The server's timings, short so that what the fuzzer leaves behind (a session never closed,
# a command that reads its stdin, a terminal whose socket never came) ends within the run.
SERVER_ENV = {
    "RMM_IDLE_TIMEOUT_SECS": "3",
    "RMM_COMMAND_TIMEOUT_SECS": "10",
    "RMM_TERMINAL_GRACE_SECS": "5",
    "RMM_MAINTENANCE_INTERVAL_MS": "500",
    "RMM_OPEN_TIMEOUT_SECS": "10",
    # The run's own logins say they come from another address (contract_hooks.py).
    "RMM_TRUSTED_PROXIES": "127.0.0.1",
}


def setup(api, procs, base):
    """The admin's token and id, and the real agent, connected."""
    token = api.login(ADMIN, ADMIN_PASSWORD)
    users = api.ok("GET", "/api/v1/users", token)
    admin_id = next(u["user_id"] for u in users if u["username"] == ADMIN)
    agent = api.ok("POST", "/api/v1/agents", token, {"name": AGENT_NAME})
    state = procs.work / "agent-state"
    state.mkdir(exist_ok=True)
    procs.start_agent(base, agent["agent_key"], name=AGENT_NAME, extra_env={"RMM_AGENT_STATE_DIR": str(state)})

    def connected():
        agents = api.ok("GET", "/api/v1/agents", token)
        return any(a["agent_id"] == agent["agent_id"] and a["connected"] for a in agents)

    wait_for(f"{AGENT_NAME} connected", connected)
    return admin_id, agent["agent_id"]


def schemathesis(python, base, work, name, phases, examples, seconds, seed, admin_id, agent_id):
    """Runs schemathesis over `phases` (for `seconds` when given: the stateful phase repeats
    until they are spent); returns its exit code and the folder of its reports."""
    reports = work / f"schemathesis-{name}"
    files = work / "agent-files"
    files.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "RMM_CONTRACT_HOOKS": str(HERE / "contract_hooks.py"),
        "RMM_CONTRACT_BASE": base,
        "RMM_CONTRACT_ADMIN": ADMIN,
        "RMM_CONTRACT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "RMM_CONTRACT_ADMIN_ID": admin_id,
        "RMM_CONTRACT_AGENT_ID": agent_id,
        "RMM_CONTRACT_GUARDED": str(work / f"guarded-{name}.txt"),
        "RMM_CONTRACT_FILES": str(files),
        # Hypothesis keeps its example database under the work dir, nowhere else.
        "HOME": str(work),
    }
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    command = [
        str(Path(python).parent / "schemathesis"),
        "--config-file", str(HERE / "contract.toml"),
        "run", f"{base}/api/v1/openapi.json",
        "--phases", phases,
        "--max-examples", str(examples),
        "--workers", "1",
        "--request-timeout", "330",
        "--generation-database", "none",
        "--report", "ndjson,junit",
        "--report-dir", str(reports),
        "--no-color",
    ]
    if seconds is not None:
        command += ["--max-time", str(seconds)]
    if seed is not None:
        command += ["--seed", str(seed)]
    print("contract:", " ".join(command[1:]), flush=True)
    status = subprocess.call(command, env=env, cwd=work)
    return status, reports


def decode(content):
    if not content:
        return ""
    if "$base64" in content:
        return base64.b64decode(content["$base64"]).decode(errors="replace")
    return str(content)


def spec_operations(api):
    """`METHOD /path` of every operation the served spec documents."""
    status, spec = api.call("GET", "/api/v1/openapi.json")
    assert status == 200, status
    return {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}


def tally(reports, guarded_file, documented):
    """Requests, operations and failures from schemathesis' NDJSON event stream; prints
    each failure with its request and answer."""
    requests = {}
    operations = set()
    failures = Counter()
    server_errors = 0
    for path in sorted(reports.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            event = json.loads(line).get("ScenarioFinished")
            if not event:
                continue
            recorder = event.get("recorder", {})
            interactions = recorder.get("interactions", {})
            for case_id, interaction in interactions.items():
                requests[case_id] = interaction
                response = interaction.get("response") or {}
                if response.get("status_code", 0) >= 500:
                    server_errors += 1
            for case_id, case in recorder.get("cases", {}).items():
                value = case.get("value", {})
                operation = f"{value.get('method', '').upper()} {value.get('path', '')}"
                if case_id in interactions and operation in documented:
                    operations.add(operation)
            for case_id, checks in recorder.get("checks", {}).items():
                for check in checks:
                    if check.get("status") != "failure":
                        continue
                    failure = check.get("failure_info", {}).get("failure", {})
                    failures[f"{failure.get('code')} {check.get('name')}"] += 1
                    interaction = interactions.get(case_id, {})
                    request = interaction.get("request", {})
                    response = interaction.get("response") or {}
                    print(f"FAILURE {failure.get('code')} {failure.get('title')}: {failure.get('operation')}\n"
                          f"  {failure.get('message', '').splitlines()[0] if failure.get('message') else ''}\n"
                          f"  request: {request.get('method')} {request.get('uri')} {decode(request.get('body'))[:300]!r}\n"
                          f"  answer: {response.get('status_code')} {decode(response.get('content'))[:300]!r}")
    guarded = len(guarded_file.read_text().splitlines()) if guarded_file.exists() else 0
    return {
        "requests": len(requests),
        "operations": len(operations),
        "operations_documented": len(documented),
        "server_errors": server_errors,
        "failures": dict(failures),
        "guarded": guarded,
    }


def stateful_figures(reports):
    """What the stateful phase did: scenarios, links followed to a 2xx, and complete
    technician sequences (a tunnel opened -> a command run in it -> the command read)."""
    cases, answers = {}, {}
    scenarios = 0
    for path in sorted(reports.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            event = json.loads(line).get("ScenarioFinished")
            if not event or event.get("phase") != "stateful":
                continue
            scenarios += 1
            recorder = event.get("recorder", {})
            for case_id, case in recorder.get("cases", {}).items():
                cases[case_id] = case
                response = (recorder.get("interactions", {}).get(case_id) or {}).get("response") or {}
                answers[case_id] = response.get("status_code", 0)

    def step(case_id):
        value = cases[case_id].get("value", {})
        return f"{value.get('method', '').upper()} {value.get('path', '')}", answers.get(case_id, 0)

    links = set()
    sequences = 0
    for case_id, case in cases.items():
        transition = case.get("transition")
        if not transition or not 200 <= answers.get(case_id, 0) < 300:
            continue
        links.add(transition.get("id"))
        parent = transition.get("parent_id")
        grandparent = (cases.get(parent, {}).get("transition") or {}).get("parent_id")
        if parent in cases and grandparent in cases and (
            step(case_id)[0] == "GET /api/v1/tunnel/{session_id}/commands/{command_id}"
            and step(parent) == ("POST /api/v1/tunnel/{session_id}/command", 202)
            and step(grandparent) == ("POST /api/v1/tunnel/open", 200)
        ):
            sequences += 1
    return {"scenarios": scenarios, "links_followed": len(links), "open_command_read": sequences}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="folder of rmm-server and rmm-agent")
    parser.add_argument("--work", required=True, help="a writable, empty folder")
    parser.add_argument("--examples", type=int, default=10, help="test cases per operation and phase")
    parser.add_argument("--stateful-examples", type=int, help="scenarios per stateful suite (default: 5 x --examples, at least 50)")
    parser.add_argument("--stateful-seconds", type=int, help="how long the stateful phase runs, suite after suite (default: 0.6 s per --examples, at least 30)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--summary", required=True, help="where to write the figures (JSON)")
    args = parser.parse_args()

    work = Path(args.work).resolve()
    procs = Processes(args.bin, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.time()
    try:
        procs.start_server(port, ADMIN_PASSWORD, JWT_SECRET, extra_env=SERVER_ENV)
        api = Api(base)
        documented = spec_operations(api)
        admin_id, agent_id = setup(api, procs, base)
        # The stateful phase runs on its own, with its own (larger) number of scenarios: each
        # is a sequence of calls, and the long ones are where a session is used end to end.
        # Hypothesis ends a suite of scenarios when it sees fit (often after a few dozen);
        # under a time budget schemathesis starts another, so the phase runs that long.
        stateful_examples = args.stateful_examples or max(50, 5 * args.examples)
        stateful_seconds = args.stateful_seconds or max(30, (6 * args.examples) // 10)
        runs = [
            ("operations", "examples,coverage,fuzzing", args.examples, None),
            ("stateful", "stateful", stateful_examples, stateful_seconds),
        ]
        statuses = []
        for name, phases, examples, seconds in runs:
            statuses.append(schemathesis(sys.executable, base, work, name, phases, examples, seconds, args.seed, admin_id, agent_id))
        server_alive = procs.procs[0].poll() is None
    finally:
        procs.stop()
    figures = {}
    for (name, phases, examples, seconds), (status, reports) in zip(runs, statuses):
        figures[name] = {
            **tally(reports, work / f"guarded-{name}.txt", documented),
            "schemathesis_exit": status,
            "phases": phases,
            "examples": examples,
            "seconds": seconds,
        }
    figures["stateful"].update(stateful_figures(statuses[1][1]))
    figures["server_alive"] = server_alive
    figures["seconds"] = round(time.time() - started)
    Path(args.summary).write_text(json.dumps(figures))
    print(f"contract: {json.dumps(figures)}")
    ok = server_alive and all(
        run["schemathesis_exit"] == 0 and not run["failures"] and run["server_errors"] == 0
        for run in (figures["operations"], figures["stateful"])
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
