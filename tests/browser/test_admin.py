"""The console's admin pages against the real server: a user created from the form can sign
in, an enrollment token's install command enrolls nothing by itself but names the server and a
token the API accepts, and an agent is moved, given a new key and revoked from the agents
table. Each change is checked through the API, not only on the page."""

import re

from playwright.sync_api import expect

from conftest import ADMIN_PASSWORD


def tid(page, name):
    return page.get_by_test_id(name)


def admin_row(page, name):
    return page.locator(f'[data-testid="agent-admin-row"][data-agent-name="{name}"]')


def test_admin_pages_change_users_enrollment_and_agents(page, rig):
    page.goto("/#/login")
    tid(page, "login-username").fill("admin")
    tid(page, "login-password").fill(ADMIN_PASSWORD)
    tid(page, "login-submit").click()
    expect(tid(page, "whoami")).to_contain_text("admin")
    expect(tid(page, "nav-admin")).to_be_visible()

    # Users: a technician created from the form signs in with its password.
    page.goto("/#/admin/users")
    tid(page, "user-new-username").fill("bob")
    tid(page, "user-new-password").fill("bob-password-for-browser-tests")
    tid(page, "user-new-role").select_option("technician")
    tid(page, "user-create").click()
    expect(page.locator('[data-testid="user-row"][data-username="bob"]')).to_be_visible()
    assert rig.api.login("bob", "bob-password-for-browser-tests")
    # A taken username is refused in words.
    tid(page, "user-new-username").fill("bob")
    tid(page, "user-new-password").fill("another-password-for-bob")
    tid(page, "user-create").click()
    expect(tid(page, "error")).to_contain_text(re.compile("exists|taken", re.I))

    # Enrollment: the copy-paste command names this server and a fresh token.
    page.goto("/#/admin/enrollment")
    tid(page, "enroll-group").select_option("acme")
    tid(page, "enroll-create").click()
    command = tid(page, "enroll-command")
    expect(command).to_contain_text("rmm-agent enroll")
    text = command.inner_text()
    assert rig.base in text or f"127.0.0.1:{rig.port}" in text, text
    listed = rig.api.ok("GET", "/api/v1/enrollment-tokens", rig.admin)
    assert any(t["group"] == "acme" and not t["revoked"] for t in listed), listed

    # Agents: move, rotate, revoke a spare agent, each confirmed by the API.
    spare = rig.api.ok("POST", "/api/v1/agents", rig.admin, {"name": "spare-agent"})
    page.goto("/#/admin/users")
    page.goto("/#/admin/agents")
    row = admin_row(page, "spare-agent")
    expect(row).to_be_visible()
    # The move is a PATCH the page sends on change; the select shows "acme" at once, before
    # the server has it, so wait for the server's answer before asking the API.
    with page.expect_response(
        lambda r: r.request.method == "PATCH" and f"/api/v1/agents/{spare['agent_id']}" in r.url
    ) as moved:
        row.get_by_test_id("agent-move-group").select_option("acme")
    assert moved.value.ok, moved.value.status

    def spare_now():
        agents = rig.api.ok("GET", "/api/v1/agents", rig.admin)
        return next(a for a in agents if a["agent_id"] == spare["agent_id"])

    expect(admin_row(page, "spare-agent").get_by_test_id("agent-move-group")).to_have_value("acme")
    assert spare_now()["group"] == "acme"
    admin_row(page, "spare-agent").get_by_test_id("agent-rotate").click()
    new_key = tid(page, "agent-new-key")
    expect(new_key).to_be_visible()
    assert new_key.inner_text() != spare["agent_key"]
    page.once("dialog", lambda d: d.accept())
    admin_row(page, "spare-agent").get_by_test_id("agent-revoke").click()
    expect(admin_row(page, "spare-agent").get_by_test_id("agent-revoke")).to_be_disabled()
    assert spare_now()["revoked"] is True
