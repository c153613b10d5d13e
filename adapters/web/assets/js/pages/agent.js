// One agent: open or reuse a tunnel session, a terminal, a run-command box, a file browser,
// and closing the session.

import { ApiError, api, whoami, withQuery } from "../api.js";
import { CommandRunner } from "../command.js";
import { fileBrowser } from "../files.js";
import { TerminalView } from "../terminal.js";
import { ago, attempt, h, page, showError } from "../ui.js";
import { stateWords } from "./agents.js";

/** agent id -> the session id this page opened (memory only, like the token). */
const sessions = new Map();

/** The caller's own active session to `agentId`, if one can be found: the one this page
 * opened, else the newest `tunnel_open` of ours in the audit log (the server has no "my
 * sessions" list), as `rmm exec` reuses the session it remembered. */
async function ownActiveSession(agentId) {
  const candidates = [];
  if (sessions.has(agentId)) candidates.push(sessions.get(agentId));
  const me = whoami();
  try {
    const audit = await api("GET", withQuery("/api/v1/audit", { agent_id: agentId, tech_id: me.userId, limit: 50 }));
    for (const e of audit.entries) {
      if (e.event === "tunnel_open" && e.session_id && !candidates.includes(e.session_id)) candidates.push(e.session_id);
    }
  } catch {
    // Auditing may be refused to this role: only what this page remembers.
  }
  for (const id of candidates) {
    try {
      const s = await api("GET", `/api/v1/tunnel/status/${id}`);
      if (s.status === "active" && s.agent_id === agentId) return id;
    } catch {
      // Not ours, or gone.
    }
  }
  return null;
}

export async function agentPage(agentId) {
  const agents = await api("GET", "/api/v1/agents");
  const agent = agents.find((a) => a.agent_id === agentId);
  if (!agent) throw new Error(`no agent ${agentId} (it does not exist, or is outside your groups)`);

  let sessionId = null;
  let terminal = null;
  let runner = null;
  let files = null;

  const sessionState = h("span", { testid: "session-state", class: "badge", role: "status" }, "no session");
  const openBtn = h("button", { type: "button", testid: "session-open" }, "Open session");
  const closeBtn = h("button", { type: "button", testid: "session-close", disabled: true }, "Close session");

  const termState = h("span", { testid: "terminal-state", class: "badge", role: "status" }, "");
  const termOpen = h("button", { type: "button", testid: "terminal-open", disabled: true }, "Open terminal");
  const termBox = h("div", { testid: "terminal", class: "terminal", "aria-label": "Terminal" });

  const cmdInput = h("input", { id: "command-input", testid: "command-input", placeholder: "uname -a", spellcheck: false, autocomplete: "off" });
  const cmdRun = h("button", { type: "submit", testid: "command-run", disabled: true }, "Run");
  const stdout = h("pre", { testid: "command-stdout", class: "out", "aria-label": "Standard output" });
  const stderr = h("pre", { testid: "command-stderr", class: "out err", "aria-label": "Standard error" });
  const exit = h("span", { testid: "command-exit", class: "badge", role: "status" });
  const filesSlot = h("div");

  function setActive(id) {
    sessionId = id;
    sessions.set(agentId, id);
    sessionState.textContent = "active";
    openBtn.disabled = true;
    closeBtn.disabled = false;
    termOpen.disabled = false;
    cmdRun.disabled = false;
    runner = new CommandRunner(id, { stdout, stderr, exit, onError: showError });
    files = fileBrowser(id);
    filesSlot.replaceChildren(files.el);
    files.refresh();
  }

  function teardown() {
    if (terminal) terminal.dispose();
    terminal = null;
    if (runner) runner.dispose();
    runner = null;
  }

  function setClosed() {
    teardown();
    sessions.delete(agentId);
    sessionId = null;
    sessionState.textContent = "closed";
    openBtn.disabled = false;
    closeBtn.disabled = true;
    termOpen.disabled = true;
    cmdRun.disabled = true;
    if (termState.textContent && !termState.textContent.startsWith("ended")) termState.textContent = "closed";
    filesSlot.replaceChildren();
  }

  openBtn.addEventListener("click", () =>
    attempt(async () => {
      openBtn.disabled = true;
      sessionState.textContent = "opening…";
      try {
        const opened = await api("POST", "/api/v1/tunnel/open", { agent_id: agentId });
        setActive(opened.session_id);
      } catch (e) {
        if (e instanceof ApiError && e.code === "session_exists") {
          const own = await ownActiveSession(agentId);
          if (own) {
            setActive(own);
            return;
          }
        }
        sessionState.textContent = sessionId ? "active" : "no session";
        openBtn.disabled = false;
        throw e;
      }
    }),
  );

  closeBtn.addEventListener("click", () =>
    attempt(async () => {
      if (!sessionId) return;
      closeBtn.disabled = true;
      try {
        await api("POST", "/api/v1/tunnel/close", { session_id: sessionId });
      } catch (e) {
        closeBtn.disabled = false;
        throw e;
      }
      setClosed();
    }),
  );

  termOpen.addEventListener("click", () =>
    attempt(async () => {
      if (!sessionId) return;
      if (terminal) terminal.dispose();
      termBox.replaceChildren();
      termState.textContent = "opening…";
      terminal = new TerminalView(sessionId, termBox, (s) => (termState.textContent = s), showError);
      try {
        await terminal.open();
      } catch (e) {
        termState.textContent = "";
        terminal.dispose();
        terminal = null;
        throw e;
      }
    }),
  );

  const cmdForm = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (ev) => {
        ev.preventDefault();
        const command = cmdInput.value.trim();
        if (!command) {
          showError("type a command to run");
          return;
        }
        if (!runner) return;
        cmdRun.disabled = true;
        attempt(() => runner.run(command)).finally(() => {
          cmdRun.disabled = !sessionId;
        });
      },
    },
    h("label", { for: "command-input" }, "Command"),
    cmdInput,
    cmdRun,
    exit,
  );

  page(
    agent.name,
    h(
      "p",
      { class: "facts" },
      h("span", { class: `state ${agent.connected ? "on" : "off"}` }, stateWords(agent)),
      ` · group ${agent.group} · ${agent.os || "OS unknown"} · ${agent.hostname || "host unknown"} · agent ${agent.agent_version || "?"} · last seen ${agent.connected ? "now" : ago(agent.last_seen)}`,
    ),
    h("section", { class: "card", "aria-labelledby": "session-h" }, h("h2", { id: "session-h" }, "Session"), h("div", { class: "toolbar" }, "State: ", sessionState, openBtn, closeBtn)),
    h(
      "section",
      { class: "card", "aria-labelledby": "terminal-h" },
      h("h2", { id: "terminal-h" }, "Terminal"),
      h("div", { class: "toolbar" }, termOpen, "State: ", termState),
      termBox,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "command-h" },
      h("h2", { id: "command-h" }, "Run a command"),
      cmdForm,
      h("div", { class: "outputs" }, h("div", {}, h("h3", {}, "stdout"), stdout), h("div", {}, h("h3", {}, "stderr"), stderr)),
    ),
    filesSlot,
  );

  // A session this page (or an earlier visit) opened and that is still active is reused.
  if (sessions.has(agentId)) {
    const id = sessions.get(agentId);
    try {
      const s = await api("GET", `/api/v1/tunnel/status/${id}`);
      if (s.status === "active") setActive(id);
      else sessions.delete(agentId);
    } catch {
      sessions.delete(agentId);
    }
  }
  return () => teardown();
}
