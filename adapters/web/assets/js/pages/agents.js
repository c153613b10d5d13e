// The agents list: a filter box and live updates from the server's event stream
// (GET /api/v1/agents/events, Server-Sent Events), else the list as it was when loaded.

import { api, wsUrl } from "../api.js";
import { ago, attempt, h, page } from "../ui.js";

/** The state in words: "online · tunnel", "online · heartbeat", "offline", "revoked". */
export function stateWords(agent) {
  if (agent.revoked) return "offline · revoked";
  if (!agent.connected) return "offline";
  return agent.mode && agent.mode !== "offline" ? `online · ${agent.mode}` : "online";
}

function row(agent) {
  const state = stateWords(agent);
  return h(
    "tr",
    { testid: "agent-row", dataset: { agentId: agent.agent_id, agentName: agent.name } },
    h("td", {}, h("a", { href: `#/agents/${encodeURIComponent(agent.agent_id)}`, testid: "agent-open" }, agent.name)),
    h("td", { testid: "agent-group" }, agent.group || ""),
    h("td", {}, h("span", { class: `state ${agent.connected ? "on" : "off"}`, testid: "agent-state" }, state)),
    h("td", { testid: "agent-os" }, agent.os || "—"),
    h("td", { testid: "agent-hostname" }, agent.hostname || "—"),
    h("td", { testid: "agent-version" }, agent.agent_version || "—"),
    h("td", { testid: "agent-last-seen", title: agent.last_seen || "" }, agent.connected ? "now" : ago(agent.last_seen)),
  );
}

function matches(agent, needle) {
  if (!needle) return true;
  const hay = [agent.name, agent.group, agent.hostname, agent.os, stateWords(agent), agent.agent_version]
    .join(" ")
    .toLowerCase();
  return needle
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((w) => hay.includes(w));
}

export async function agentsPage() {
  let agents = [];
  const filter = h("input", { id: "agent-filter", testid: "agent-filter", type: "search", placeholder: "name, group, host, OS, online…" });
  const body = h("tbody");
  const live = h("p", { class: "hint", role: "status", testid: "agents-live" }, "connecting for live updates…");
  const count = h("span", { class: "hint" });

  function draw() {
    const shown = agents.filter((a) => matches(a, filter.value.trim()));
    body.replaceChildren(
      ...(shown.length
        ? shown.map(row)
        : [h("tr", {}, h("td", { colspan: 7, class: "empty" }, agents.length ? "No agent matches the filter." : "No agents yet."))]),
    );
    count.textContent = `${shown.length} of ${agents.length} agents`;
  }
  filter.addEventListener("input", draw);

  page(
    "Agents",
    h("div", { class: "toolbar" }, h("label", { for: "agent-filter" }, "Filter"), filter, count),
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ...["Name", "Group", "State", "OS", "Hostname", "Version", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
    live,
  );
  draw();

  let closed = false;
  let source = null;
  let loadedOnce = false;

  async function loadOnce(reason) {
    const list = await attempt(() => api("GET", "/api/v1/agents"));
    if (closed || !list) return;
    agents = list;
    loadedOnce = true;
    draw();
    live.textContent = `live updates unavailable (${reason}): this list is as of ${new Date().toLocaleTimeString()}; reload the page to refresh`;
  }

  // EventSource cannot send headers: the token goes as access_token (same origin).
  const url = wsUrl("/api/v1/agents/events").replace(/^ws/, "http");
  try {
    source = new EventSource(url);
  } catch {
    source = null;
  }
  if (source) {
    let gotEvent = false;
    source.addEventListener("agents", (ev) => {
      try {
        agents = JSON.parse(ev.data);
      } catch {
        return;
      }
      gotEvent = true;
      draw();
      live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    });
    source.addEventListener("error", () => {
      if (closed) return;
      if (!gotEvent) {
        // No such endpoint (or refused before any event): show the list once instead.
        source.close();
        if (!loadedOnce) loadOnce("the server offers no event stream");
      } else if (source.readyState === EventSource.CLOSED) {
        live.textContent = "live updates stopped: the server refused the stream (sign in again to resume)";
      } else {
        live.textContent = "live updates interrupted — reconnecting…";
      }
    });
  } else {
    loadOnce("this browser has no EventSource");
  }
  filter.focus();
  return () => {
    closed = true;
    if (source) source.close();
  };
}
