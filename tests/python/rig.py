"""The real `rmm-server` and `rmm-agent` for the Python-driven tests (client_flow.py,
contract.py): a server on SQLite in a temp dir on 127.0.0.1 with a first admin, agents
connected to it, each process in its own process group with its log in the temp dir, and a
small JSON client of the API (urllib: nothing to install).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, within=30.0):
    deadline = time.time() + within
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s")


class Processes:
    """The server and the agents, each in its own process group, logs in the temp dir."""

    def __init__(self, bin_dir, work):
        self.bin = Path(bin_dir).resolve()
        self.work = Path(work)
        self.procs = []
        self.logs = []

    def start(self, name, env, log_name=None):
        log = open(self.work / f"{log_name or name}.log", "wb")
        self.logs.append(log)
        full = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.work), "RUST_LOG": "info", **env}
        proc = subprocess.Popen([str(self.bin / name)], env=full, stdout=log, stderr=log, cwd=self.work, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_server(self, port, admin_password, jwt_secret, extra_env=None):
        """`rmm-server` on 127.0.0.1:`port` with SQLite in the temp dir; returns once it
        accepts connections."""
        server = self.start("rmm-server", {
            "DATABASE_URL": f"sqlite://{self.work / 'rmm.sqlite3'}",
            "RMM_DATA_DIR": str(self.work / "data"),
            "RMM_LISTEN": f"127.0.0.1:{port}",
            "RMM_JWT_SECRET": jwt_secret,
            "RMM_ADMIN_PASSWORD": admin_password,
            **(extra_env or {}),
        })

        def listening():
            assert server.poll() is None, f"rmm-server exited: see {self.work / 'rmm-server.log'}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for("rmm-server listening", listening)
        return server

    def start_agent(self, base, key, name="rmm-agent", extra_env=None):
        """`rmm-agent` connected to the server at `base` (http://...) with `key`."""
        return self.start("rmm-agent", {
            "SHELL": "/bin/sh",
            "RMM_SERVER": base.replace("http://", "ws://"),
            "RMM_AGENT_KEY": key,
            "RMM_AGENT_HEARTBEAT_SECS": "1",
            **(extra_env or {}),
        }, log_name=name)

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self.logs:
            log.close()


class Api:
    """Minimal JSON client of the server's API."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, token=None, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def login(self, username, password):
        status, body = self.call("POST", "/api/v1/auth/login", body={"username": username, "password": password})
        assert status == 200, (status, body)
        return body["token"]

    def ok(self, method, path, token, body=None, expect=(200, 201, 204)):
        status, answer = self.call(method, path, token, body)
        assert status in expect, (method, path, status, answer)
        return answer
