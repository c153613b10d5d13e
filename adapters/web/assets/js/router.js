// Hash routing: #/login, #/agents, #/agents/<id>, #/recordings, #/recordings/<id>, #/audit,
// #/admin/users, #/admin/agents, #/admin/enrollment.

import { logout, signedIn, whenSignedOut, whoami } from "./api.js";
import { attempt, clearError, showError } from "./ui.js";
import { loginPage } from "./pages/login.js";
import { agentsPage } from "./pages/agents.js";
import { agentPage } from "./pages/agent.js";
import { recordingsPage } from "./pages/recordings.js";
import { auditPage } from "./pages/audit.js";
import { adminPage } from "./pages/admin.js";

let leave = null; // the current page's clean-up (sockets, streams)
let keepError = false; // the refusal that signed us out stays shown on the sign-in page

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const [first, second] = parts;
  if (!signedIn()) return () => loginPage();
  switch (first) {
    case "agents":
      return second ? () => agentPage(decodeURIComponent(second)) : () => agentsPage();
    case "recordings":
      return () => recordingsPage(second ? decodeURIComponent(second) : null);
    case "audit":
      return () => auditPage();
    case "admin":
      return () => adminPage(second || "users");
    default:
      return null;
  }
}

function header() {
  const top = document.getElementById("top");
  const me = whoami();
  top.hidden = !me;
  if (!me) return;
  top.querySelector('[data-testid="whoami"]').textContent = `${me.username} (${me.role})`;
  top.querySelector('[data-testid="nav-admin"]').hidden = me.role !== "admin";
  const here = location.hash.split("/")[1] || "";
  for (const a of top.querySelectorAll("nav a")) {
    const target = a.getAttribute("href").split("/")[1];
    if (target === here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function render() {
  if (leave) {
    try {
      leave();
    } catch {
      // A page's clean-up must not stop the next page.
    }
    leave = null;
  }
  const show = route();
  if (!show) {
    location.hash = signedIn() ? "#/agents" : "#/login";
    return;
  }
  if (signedIn() && location.hash.startsWith("#/login")) {
    location.hash = "#/agents";
    return;
  }
  if (keepError) keepError = false;
  else clearError();
  header();
  try {
    leave = (await show()) || null;
  } catch (e) {
    showError(e);
  }
  const main = document.getElementById("main");
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

export function start() {
  window.addEventListener("hashchange", render);
  whenSignedOut(() => {
    keepError = true;
    if (!location.hash.startsWith("#/login")) location.hash = "#/login";
    header();
  });
  document.querySelector('[data-testid="signout"]').addEventListener("click", () =>
    attempt(async () => {
      await logout();
    }),
  );
  if (!location.hash || !signedIn()) {
    if (location.hash !== "#/login") {
      location.hash = "#/login";
      return;
    }
  }
  render();
}
