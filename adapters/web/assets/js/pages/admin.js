// Admin: users (create, disable, role), agents (revoke, rotate the key, move group) and
// enrollment tokens with the copy-paste install command.

import { api, whoami } from "../api.js";
import { ago, attempt, h, page, showError, when } from "../ui.js";
import { stateWords } from "./agents.js";

const ROLES = ["technician", "auditor", "admin"];

function tabs(current) {
  const link = (id, text) =>
    h("a", { href: `#/admin/${id}`, "aria-current": id === current ? "page" : false }, text);
  return h("nav", { class: "tabs", "aria-label": "Admin" }, link("users", "Users"), link("agents", "Agents"), link("enrollment", "Enrollment"));
}

function roleSelect(id, value) {
  return h("select", { id }, ...ROLES.map((r) => h("option", { value: r, selected: r === value }, r)));
}

async function users(content, redraw) {
  const list = await api("GET", "/api/v1/users");
  const name = h("input", { id: "user-new-username", testid: "user-new-username", autocomplete: "off", required: true });
  const password = h("input", { id: "user-new-password", testid: "user-new-password", type: "password", autocomplete: "new-password", required: true });
  const role = roleSelect("user-new-role", "technician");
  role.dataset.testid = "user-new-role";
  const create = h("button", { type: "submit", testid: "user-create" }, "Create user");
  const form = h(
    "form",
    {
      class: "toolbar card",
      onsubmit: (ev) => {
        ev.preventDefault();
        attempt(async () => {
          await api("POST", "/api/v1/users", { username: name.value.trim(), password: password.value, role: role.value });
          await redraw();
        });
      },
    },
    h("label", { for: "user-new-username" }, "Username"),
    name,
    h("label", { for: "user-new-password" }, "Password"),
    password,
    h("label", { for: "user-new-role" }, "Role"),
    role,
    create,
  );
  const rows = list.map((u) => {
    const sel = roleSelect(`role-${u.user_id}`, u.role);
    sel.setAttribute("aria-label", `Role of ${u.username}`);
    sel.addEventListener("change", () =>
      attempt(async () => {
        try {
          await api("PATCH", `/api/v1/users/${u.user_id}`, { role: sel.value });
        } finally {
          await redraw();
        }
      }),
    );
    const toggle = h(
      "button",
      {
        type: "button",
        onclick: () =>
          attempt(async () => {
            await api("PATCH", `/api/v1/users/${u.user_id}`, { disabled: !u.disabled });
            await redraw();
          }),
      },
      u.disabled ? "Enable" : "Disable",
    );
    return h(
      "tr",
      { testid: "user-row", dataset: { username: u.username, userId: u.user_id } },
      h("td", {}, u.username, u.username === whoami().username ? " (you)" : ""),
      h("td", {}, sel),
      h("td", {}, u.disabled ? "disabled" : "enabled"),
      h("td", {}, (u.groups || []).join(", ")),
      h("td", {}, u.last_login_at ? ago(u.last_login_at) : "never"),
      h("td", {}, toggle),
    );
  });
  content.replaceChildren(
    form,
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ...["Username", "Role", "State", "Groups", "Last sign-in", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

async function agents(content, redraw) {
  const [list, groups] = await Promise.all([api("GET", "/api/v1/agents"), api("GET", "/api/v1/groups")]);
  const keyBox = h("p", { class: "key", role: "status" });
  const rows = list.map((a) => {
    const move = h(
      "select",
      { testid: "agent-move-group", "aria-label": `Group of ${a.name}`, disabled: a.revoked },
      ...groups.map((g) => h("option", { value: g.name, selected: g.name === a.group }, g.name)),
    );
    move.addEventListener("change", () =>
      attempt(async () => {
        try {
          await api("PATCH", `/api/v1/agents/${a.agent_id}`, { group: move.value });
        } finally {
          await redraw();
        }
      }),
    );
    const revoke = h(
      "button",
      {
        type: "button",
        testid: "agent-revoke",
        disabled: a.revoked,
        onclick: () =>
          attempt(async () => {
            if (!window.confirm(`Revoke ${a.name}? Its key is refused from then on; this cannot be undone.`)) return;
            await api("DELETE", `/api/v1/agents/${a.agent_id}`);
            await redraw();
          }),
      },
      "Revoke",
    );
    const rotate = h(
      "button",
      {
        type: "button",
        testid: "agent-rotate",
        disabled: a.revoked,
        onclick: () =>
          attempt(async () => {
            const k = await api("POST", `/api/v1/agents/${a.agent_id}/rotate-key`);
            await redraw();
            showKey(`New key for ${a.name} (shown once; the old key is refused now): `, k.agent_key);
          }),
      },
      "Rotate key",
    );
    return h(
      "tr",
      { testid: "agent-admin-row", dataset: { agentId: a.agent_id, agentName: a.name } },
      h("td", {}, a.name),
      h("td", {}, a.revoked ? "revoked" : stateWords(a)),
      h("td", {}, move),
      h("td", {}, a.connected ? "now" : ago(a.last_seen)),
      h("td", {}, rotate, " ", revoke),
    );
  });
  function showKey(text, key) {
    const box = content.querySelector(".key");
    if (box) box.replaceChildren(text, h("code", { testid: "agent-new-key" }, key));
  }
  content.replaceChildren(
    keyBox,
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ...["Name", "State", "Group", "Last seen", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

async function enrollment(content, redraw) {
  const [tokens, groups] = await Promise.all([api("GET", "/api/v1/enrollment-tokens"), api("GET", "/api/v1/groups")]);
  const group = h("select", { id: "enroll-group", testid: "enroll-group" }, ...groups.map((g) => h("option", { value: g.name }, g.name)));
  const uses = h("input", { id: "enroll-uses", type: "number", min: 1, max: 10000, value: 1 });
  const create = h("button", { type: "submit", testid: "enroll-create" }, "Create token");
  const command = h("pre", { testid: "enroll-command", class: "command" });
  const copy = h("button", { type: "button", hidden: true }, "Copy");
  copy.addEventListener("click", () =>
    attempt(async () => {
      await navigator.clipboard.writeText(command.textContent);
      copy.textContent = "Copied";
    }),
  );
  const form = h(
    "form",
    {
      class: "toolbar card",
      onsubmit: (ev) => {
        ev.preventDefault();
        attempt(async () => {
          const t = await api("POST", "/api/v1/enrollment-tokens", { group: group.value, uses: Number(uses.value) || 1 });
          await redraw();
          const box = document.querySelector('[data-testid="enroll-command"]');
          box.textContent = `rmm-agent enroll --server ${location.origin} --token ${t.token}`;
          const note = document.querySelector(".enroll-note");
          note.textContent = `Run this on the machine to enroll (the token is shown once; it expires ${when(t.expires_at)}):`;
          document.querySelector(".enroll-copy").hidden = false;
        });
      },
    },
    h("label", { for: "enroll-group" }, "Group"),
    group,
    h("label", { for: "enroll-uses" }, "Uses"),
    uses,
    create,
  );
  copy.className = "enroll-copy";
  const rows = tokens.map((t) =>
    h(
      "tr",
      {},
      h("td", {}, t.group),
      h("td", {}, `${t.uses} of ${t.uses_allowed}`),
      h("td", {}, when(t.expires_at)),
      h("td", {}, t.revoked ? "revoked" : new Date(t.expires_at) < new Date() ? "expired" : "valid"),
      h(
        "td",
        {},
        t.revoked
          ? ""
          : h("button", { type: "button", onclick: () => attempt(async () => { await api("DELETE", `/api/v1/enrollment-tokens/${t.enrollment_id}`); await redraw(); }) }, "Revoke"),
      ),
    ),
  );
  content.replaceChildren(
    form,
    h("p", { class: "enroll-note hint" }, "Create a token to get the install command."),
    h("div", { class: "toolbar" }, command, copy),
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ...["Group", "Used", "Expires", "State", ""].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows)),
  );
}

export async function adminPage(tab) {
  if (whoami().role !== "admin") throw new Error("the admin pages are for admins");
  const views = { users, agents, enrollment };
  const view = views[tab];
  if (!view) throw new Error(`no admin page “${tab}”`);
  const content = h("div");
  page(`Admin · ${tab}`, tabs(tab), content);
  // Redraw keeps what the user just got (a new key, an install command) on screen.
  const redraw = async () => {
    const keep = [...content.querySelectorAll(".key, [data-testid=enroll-command], .enroll-note")].map((n) => [n.className || n.dataset.testid, n.cloneNode(true)]);
    await view(content, redraw);
    for (const [, node] of keep) {
      const sel = node.dataset.testid ? `[data-testid=${node.dataset.testid}]` : `.${node.className.split(" ")[0]}`;
      const target = content.querySelector(sel);
      if (target) target.replaceWith(node);
    }
  };
  await view(content, redraw);
}
