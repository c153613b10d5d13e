// Small DOM helpers and the page's error element.

/**
 * An element: h("button", { type: "button", dataset: { testid: "x" }, onclick: f }, "text", child).
 * Attributes starting with "on" become listeners (never inline handler attributes).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function errorBox() {
  return document.querySelector('[data-testid="error"]');
}

/** Shows `e` (an Error or words) in the page's error element. */
export function showError(e) {
  const box = errorBox();
  const text = typeof e === "string" ? e : e && e.message ? e.message : String(e);
  box.textContent = text;
  box.hidden = false;
}

export function clearError() {
  const box = errorBox();
  box.textContent = "";
  box.hidden = true;
}

/** Runs an async action, showing its error in words instead of failing silently. */
export async function attempt(f) {
  try {
    clearError();
    return await f();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

/** "3 min ago" style text for an ISO time (the exact time in the title). */
export function ago(iso) {
  if (!iso) return "never";
  const t = new Date(iso);
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  if (Number.isNaN(s)) return iso;
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return t.toLocaleString();
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function bytes(n) {
  if (n === undefined || n === null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** Replaces the main element's content with `nodes` and gives it a heading. */
export function page(title, ...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...nodes);
  document.title = `${title} — rmm console`;
  return main;
}
