"""Fixtures of the browser tests: a real release `rmm-server` on SQLite in a temp dir, real
`rmm-agent`s, the users the tests need, Debian's chromium driven by Playwright, and a
screenshot per test under target/browser-screenshots/.

Run by scripts/browser-tests.sh, which installs what is missing and builds the binaries.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RMM_BROWSER_BIN", ROOT / "target" / "release"))
SHOTS = ROOT / "target" / "browser-screenshots"
CHROMIUM = os.environ.get("RMM_CHROMIUM", "/usr/bin/chromium")
ADMIN_PASSWORD = "admin-password-for-browser-tests"
TECH_PASSWORD = "tech-password-for-browser-tests"
JWT_SECRET = "browser-test-secret-browser-test-secret-0123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """Minimal JSON client of the server's API (urllib: nothing to install)."""

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


class Rig:
    """The server, its agents and users, for one test run."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="rmm-browser-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = Api(self.base)
        self.procs = {}
        self.logs = []
        self.server = None

    def _log(self, name):
        f = open(self.dir / f"{name}.log", "wb")
        self.logs.append(f)
        return f

    def start_server(self):
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.dir),
            "DATABASE_URL": f"sqlite://{self.dir / 'rmm.sqlite3'}",
            "RMM_DATA_DIR": str(self.dir / "data"),
            "RMM_LISTEN": f"127.0.0.1:{self.port}",
            "RMM_JWT_SECRET": JWT_SECRET,
            "RMM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RMM_MAINTENANCE_INTERVAL_MS": "500",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        log = self._log("rmm-server")
        self.server = subprocess.Popen([str(BIN / "rmm-server")], env=env, stdout=log, stderr=log, cwd=self.dir, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"rmm-server exited: see {self.dir / 'rmm-server.log'}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("rmm-server did not become healthy within 30 s")

    def setup_users_and_agents(self):
        self.admin = self.api.login("admin", ADMIN_PASSWORD)
        self.agents = {}
        for name in ("web-agent", "hidden-agent"):
            body = self.api.ok("POST", "/api/v1/agents", self.admin, {"name": name})
            self.agents[name] = (body["agent_id"], body["agent_key"])
        self.api.ok("POST", "/api/v1/groups", self.admin, {"name": "acme"})
        hidden_id = self.agents["hidden-agent"][0]
        self.api.ok("PATCH", f"/api/v1/agents/{hidden_id}", self.admin, {"group": "acme"})
        self.api.ok("POST", "/api/v1/users", self.admin, {"username": "tina", "password": TECH_PASSWORD, "role": "tech", "groups": ["default"]})

    def start_agent(self, name):
        if name in self.procs and self.procs[name].poll() is None:
            return
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(self.dir)),
            "SHELL": "/bin/bash",
            "RMM_SERVER": f"ws://127.0.0.1:{self.port}",
            "RMM_AGENT_KEY": self.agents[name][1],
            "RMM_AGENT_HEARTBEAT_SECS": "1",
            "RUST_LOG": "info",
        }
        log = self._log(name)
        self.procs[name] = subprocess.Popen([str(BIN / "rmm-agent")], env=env, stdout=log, stderr=log, cwd=self.dir, start_new_session=True)

    def agent_connected(self, name):
        _, agents = self.api.call("GET", "/api/v1/agents", self.admin)
        return any(a["name"] == name and a["connected"] for a in agents)

    def wait_connected(self, name, within=10):
        deadline = time.time() + within
        while time.time() < deadline:
            if self.agent_connected(name):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} not connected within {within} s")

    def stop(self):
        for proc in list(self.procs.values()) + ([self.server] if self.server else []):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in list(self.procs.values()) + ([self.server] if self.server else []):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for f in self.logs:
            f.close()
        if os.environ.get("RMM_BROWSER_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def rig():
    rig = Rig()
    try:
        rig.start_server()
        rig.setup_users_and_agents()
        # The agent the technician must not see is online all along.
        rig.start_agent("hidden-agent")
        rig.wait_connected("hidden-agent")
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser, rig):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True, base_url=rig.base)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def page(context):
    """One tab for a module's tests, in order (the token lives in the page's memory)."""
    page = context.new_page()
    page.tokens = []

    def note(request):
        auth = request.headers.get("authorization")
        if auth and auth.startswith("Bearer "):
            page.tokens.append(auth[len("Bearer "):])

    page.on("request", note)
    yield page


def save_screenshot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    if not page.is_closed():
        page.screenshot(path=str(SHOTS / f"{name}.png"))


@pytest.fixture(autouse=True)
def screenshot(request):
    """A screenshot of the module's shared tab after each test that uses it (a test with a
    page of its own saves it in that page's fixture)."""
    yield
    if "page" in request.fixturenames:
        save_screenshot(request.getfixturevalue("page"), request.node.name)
