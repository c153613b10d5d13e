// The audit log: the API's filters, newest first, paged with next_before.

import { api, whoami, withQuery } from "../api.js";
import { attempt, h, page, when } from "../ui.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function detail(e) {
  const parts = [];
  if (e.command) parts.push(e.command);
  if (e.path) parts.push(`${e.direction || ""} ${e.path}`.trim());
  if (e.status) parts.push(e.status);
  if (e.exit_code !== null && e.exit_code !== undefined) parts.push(`exit ${e.exit_code}`);
  if (e.size !== null && e.size !== undefined) parts.push(`${e.size} bytes`);
  if (e.result) parts.push(e.result);
  if (e.detail) parts.push(typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail));
  return parts.join(" · ");
}

export async function auditPage() {
  const agents = await api("GET", "/api/v1/agents").catch(() => []);
  let users = [];
  if (whoami().role === "admin") users = await api("GET", "/api/v1/users").catch(() => []);
  const agentName = new Map(agents.map((a) => [a.agent_id, a.name]));
  const userName = new Map(users.map((u) => [u.user_id, u.username]));

  const agentF = h("input", { id: "audit-filter-agent", testid: "audit-filter-agent", placeholder: "agent name or id", list: "audit-agents" });
  const userF = h("input", { id: "audit-filter-user", testid: "audit-filter-user", placeholder: "username or user id" });
  const sinceF = h("input", { id: "audit-filter-since", testid: "audit-filter-since", type: "datetime-local" });
  const apply = h("button", { type: "submit", testid: "audit-apply" }, "Apply");
  const next = h("button", { type: "button", testid: "audit-next", disabled: true }, "Older entries");
  const body = h("tbody");
  const status = h("p", { class: "hint", role: "status" });
  let before = null;
  let filters = {};

  function resolve(value, names, what) {
    const v = value.trim();
    if (!v) return undefined;
    if (UUID.test(v)) return v;
    for (const [id, name] of names) if (name === v) return id;
    throw new Error(`no ${what} named “${v}” (give its name or id)`);
  }

  async function load(reset) {
    if (reset) {
      filters = {
        agent_id: resolve(agentF.value, agentName, "agent"),
        tech_id: resolve(userF.value, userName, "user"),
        since: sinceF.value ? new Date(sinceF.value).toISOString() : undefined,
      };
      before = null;
      body.replaceChildren();
    }
    const page_ = await api("GET", withQuery("/api/v1/audit", { ...filters, limit: 50, before }));
    for (const e of page_.entries) {
      body.append(
        h(
          "tr",
          { testid: "audit-row" },
          h("td", {}, when(e.at)),
          h("td", {}, e.event),
          h("td", {}, e.tech_id ? userName.get(e.tech_id) || e.tech_id : ""),
          h("td", {}, e.agent_id ? agentName.get(e.agent_id) || e.agent_id : ""),
          h("td", { class: "detail" }, detail(e)),
        ),
      );
    }
    before = page_.next_before ?? null;
    next.disabled = before === null;
    status.textContent = `${body.children.length} entries shown${before === null ? " (the end)" : ""}`;
  }

  next.addEventListener("click", () => attempt(() => load(false)));
  const form = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (ev) => {
        ev.preventDefault();
        attempt(() => load(true));
      },
    },
    h("label", { for: "audit-filter-agent" }, "Agent"),
    agentF,
    h("datalist", { id: "audit-agents" }, ...agents.map((a) => h("option", { value: a.name }))),
    h("label", { for: "audit-filter-user" }, "User"),
    userF,
    h("label", { for: "audit-filter-since" }, "Since"),
    sinceF,
    apply,
  );
  page(
    "Audit log",
    form,
    h("table", { class: "list" }, h("thead", {}, h("tr", {}, ...["When", "Event", "User", "Agent", "Detail"].map((t) => h("th", { scope: "col" }, t)))), body),
    h("div", { class: "toolbar" }, next, status),
  );
  await load(true);
}
