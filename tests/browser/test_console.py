"""The web console in Debian's chromium against the real release binaries (issue 14's "Done
when"). The tests of this module share one signed-in tab and run in order: sign in, watch the
agent come online, a terminal, a command, files, a recording, sign out. Elements are found by
their data-testid only (the contract in the issue's design)."""

import hashlib
import os
import re
import time

from playwright.sync_api import expect

from conftest import ADMIN_PASSWORD

AGENT = "web-agent"


def tid(page, name):
    return page.get_by_test_id(name)


def row(page, name):
    return page.locator(f'[data-testid="agent-row"][data-agent-name="{name}"]')


def sign_in(page, username, password):
    page.goto("/#/login")
    tid(page, "login-username").fill(username)
    tid(page, "login-password").fill(password)
    tid(page, "login-submit").click()


def terminal_lines(page):
    return [line.rstrip() for line in tid(page, "terminal").inner_text().splitlines()]


def run_in_terminal(page, line):
    tid(page, "terminal").click()
    page.keyboard.type(line)
    page.keyboard.press("Enter")


def wait_line(page, pattern, within=15, newer_than=None):
    """The last terminal line matching `pattern` (a regex), waiting up to `within` s."""
    rx = re.compile(pattern)
    deadline = time.time() + within
    while time.time() < deadline:
        found = [m for m in (rx.fullmatch(l.strip()) for l in terminal_lines(page)) if m]
        if found and (newer_than is None or found[-1].group(0) != newer_than):
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no terminal line matching {pattern!r}:\n" + "\n".join(terminal_lines(page)))


def test_sign_in_wrong_then_right_password(page, rig):
    sign_in(page, "admin", "not-the-password")
    error = tid(page, "error")
    expect(error).to_be_visible()
    text = error.inner_text()
    assert re.search(r"password|credential|invalid", text, re.I), f"error not in words: {text!r}"
    tid(page, "login-password").fill(ADMIN_PASSWORD)
    tid(page, "login-submit").click()
    expect(row(page, AGENT)).to_be_visible()
    expect(tid(page, "whoami")).to_contain_text("admin")
    assert "#/agents" in page.url


def test_agents_page_shows_the_agent_go_online_without_reload(page, rig):
    state = row(page, AGENT).get_by_test_id("agent-state")
    expect(state).to_have_text(re.compile(r"^\s*offline"))
    # An admin sees every group's agents.
    expect(row(page, "hidden-agent")).to_be_visible()
    page.evaluate("window.__rmmNoReload = 'still here'")
    started = time.time()
    rig.start_agent(AGENT)
    expect(state).to_have_text(re.compile(r"^\s*online"), timeout=10_000)
    print(f"\nagent shown online {time.time() - started:.2f} s after its process started")
    assert page.evaluate("window.__rmmNoReload") == "still here", "the page reloaded"
    expect(row(page, AGENT).get_by_test_id("agent-hostname")).not_to_be_empty()


def test_terminal_echo_hi(page, rig):
    row(page, AGENT).get_by_test_id("agent-open").click()
    expect(page).to_have_url(re.compile(r"#/agents/[0-9a-f-]+$"))
    tid(page, "session-open").click()
    expect(tid(page, "session-state")).to_have_text("active")
    tid(page, "terminal-open").click()
    expect(tid(page, "terminal-state")).to_have_text("attached")
    run_in_terminal(page, "echo hi")
    wait_line(page, r"hi")


def test_terminal_follows_the_window_size(page, rig):
    run_in_terminal(page, "echo SIZE $(stty size)")
    before = wait_line(page, r"SIZE (\d+) (\d+)")
    page.set_viewport_size({"width": 900, "height": 560})
    deadline = time.time() + 15
    while True:
        run_in_terminal(page, "echo SIZE $(stty size)")
        try:
            after = wait_line(page, r"SIZE (\d+) (\d+)", within=3, newer_than=before.group(0))
            break
        except AssertionError:
            if time.time() > deadline:
                raise
    rows_before, cols_before = map(int, before.groups())
    rows_after, cols_after = map(int, after.groups())
    # Narrower window, fewer columns (the terminal's height may be set by its layout).
    assert cols_after < cols_before and rows_after <= rows_before, (before.group(0), after.group(0))
    page.set_viewport_size({"width": 1280, "height": 800})


def test_command_shows_output_and_exit_code(page, rig):
    tid(page, "command-input").fill("echo browser-out; echo browser-err >&2; exit 3")
    tid(page, "command-run").click()
    expect(tid(page, "command-exit")).to_have_text("exit 3", timeout=20_000)
    expect(tid(page, "command-stdout")).to_contain_text("browser-out")
    expect(tid(page, "command-stderr")).to_contain_text("browser-err")


def test_command_output_that_comes_before_the_run_answer_is_shown(page, rig):
    """Output can reach the session stream before the POST that started the command has
    answered (the console learns the channel from that answer). Delaying the answer makes it
    certain: the first line comes before it, the second after."""
    pattern = "**/api/v1/tunnel/*/command"

    def slow_answer(route):
        answer = route.fetch()
        time.sleep(0.6)
        route.fulfill(response=answer)

    page.route(pattern, slow_answer)
    try:
        tid(page, "command-input").fill("echo early-line; sleep 1.5; echo late-line")
        tid(page, "command-run").click()
        expect(tid(page, "command-exit")).to_have_text("exit 0", timeout=20_000)
    finally:
        page.unroute(pattern)
    expect(tid(page, "command-stdout")).to_have_text("early-line\nlate-line\n")


def test_upload_20_mb_and_download_it_back(page, rig, tmp_path):
    folder = rig.dir / "files"
    folder.mkdir(exist_ok=True)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    tid(page, "files-path").fill(str(folder))
    tid(page, "files-go").click()
    started = time.time()
    tid(page, "file-upload-input").set_input_files(str(blob))
    expect(tid(page, "file-upload-sha256")).to_have_text(digest, timeout=120_000)
    print(f"\n20 MB uploaded in {time.time() - started:.2f} s")
    expect(tid(page, "file-upload-progress")).to_be_attached()
    assert hashlib.sha256((folder / "blob.bin").read_bytes()).hexdigest() == digest
    entry = page.locator('[data-testid="file-entry"][data-name="blob.bin"]')
    expect(entry).to_be_visible()
    with page.expect_download(timeout=120_000) as download:
        entry.get_by_test_id("file-download").click()
    saved = tmp_path / "downloaded.bin"
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest


def test_terminal_exit_code_then_the_recording_plays(page, rig):
    run_in_terminal(page, "exit 7")
    expect(tid(page, "terminal-state")).to_have_text("ended (exit 7)")
    tid(page, "nav-recordings").click()
    first = tid(page, "recording-row").first
    expect(first).to_be_visible()
    first.get_by_test_id("recording-play").click()
    player = tid(page, "player")
    expect(player).to_be_visible()
    deadline = time.time() + 30
    while "echo hi" not in player.inner_text():
        if time.time() > deadline:
            raise AssertionError(f"the player never showed the session: {player.inner_text()!r}")
        if time.time() + 25 > deadline:
            player.click()  # starts playback when it does not start by itself
        time.sleep(0.5)


def test_sign_out_revokes_the_token(page, rig):
    assert page.tokens, "no request carried the token"
    token = page.tokens[-1]
    status, _ = rig.api.call("GET", "/api/v1/agents", token)
    assert status == 200
    tid(page, "signout").click()
    expect(tid(page, "login-username")).to_be_visible()
    status, body = rig.api.call("GET", "/api/v1/agents", token)
    assert status == 401, (status, body)
    assert body["code"] == "token_revoked", body
