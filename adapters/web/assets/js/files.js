// The file browser: list a directory (GET .../files/list), go into directories, download
// (fetch with the token -> blob -> a link) and upload (XMLHttpRequest PUT, for its progress
// events; the answer carries the SHA-256 the agent computed).

import { api, currentToken, raw, withQuery } from "./api.js";
import { bytes, h, when } from "./ui.js";

function join(dir, name) {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

function parent(dir) {
  const trimmed = dir.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i <= 0 ? "/" : trimmed.slice(0, i);
}

export function fileBrowser(sessionId) {
  const pathInput = h("input", { id: "files-path", testid: "files-path", value: "/tmp", spellcheck: false });
  const go = h("button", { type: "submit", testid: "files-go" }, "Go");
  const error = h("p", { class: "files-error", testid: "files-error", role: "alert" });
  const list = h("tbody");
  const uploadInput = h("input", { id: "file-upload-input", testid: "file-upload-input", type: "file" });
  const progress = h("progress", { testid: "file-upload-progress", max: 100, value: 0 });
  const progressText = h("span", { class: "hint", role: "status" });
  const sha = h("code", { testid: "file-upload-sha256", class: "sha" });
  let current = "/tmp";

  function fail(e) {
    error.textContent = typeof e === "string" ? e : e.message;
  }

  async function list_(dir) {
    error.textContent = "";
    let listing;
    try {
      listing = await api("GET", withQuery(`/api/v1/tunnel/${sessionId}/files/list`, { path: dir }));
    } catch (e) {
      fail(e);
      return;
    }
    current = listing.path || dir;
    pathInput.value = current;
    const rows = [];
    if (current !== "/") {
      rows.push(
        h("tr", {}, h("td", {}, h("button", { type: "button", class: "link", onclick: () => list_(parent(current)) }, "⬑ parent directory")), h("td"), h("td"), h("td")),
      );
    }
    for (const e of listing.entries) {
      const full = join(current, e.name);
      const name =
        e.type === "dir"
          ? h("button", { type: "button", class: "link", onclick: () => list_(full) }, `${e.name}/`)
          : h("span", {}, e.name);
      const action =
        e.type === "file"
          ? h("button", { type: "button", testid: "file-download", onclick: () => download(full, e.name) }, "Download")
          : "";
      rows.push(
        h(
          "tr",
          { testid: "file-entry", dataset: { name: e.name, kind: e.type } },
          h("td", {}, name),
          h("td", {}, e.type),
          h("td", { class: "num" }, e.type === "file" ? bytes(e.size) : ""),
          h("td", {}, e.modified ? when(new Date(e.modified * 1000).toISOString()) : ""),
          h("td", {}, action),
        ),
      );
    }
    if (!listing.entries.length) rows.push(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "Empty directory.")));
    list.replaceChildren(...rows);
  }

  async function download(path, name) {
    error.textContent = "";
    try {
      const resp = await raw("GET", withQuery(`/api/v1/tunnel/${sessionId}/files`, { path }));
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      fail(e);
    }
  }

  function upload(file) {
    error.textContent = "";
    sha.textContent = "";
    progress.value = 0;
    const target = join(current, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", withQuery(`/api/v1/tunnel/${sessionId}/files`, { path: target }));
    xhr.setRequestHeader("Authorization", `Bearer ${currentToken()}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) {
        progress.value = Math.floor((ev.loaded / ev.total) * 100);
        progressText.textContent = `${bytes(ev.loaded)} of ${bytes(ev.total)}`;
      }
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // Not JSON: say the status.
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        progress.value = 100;
        progressText.textContent = `uploaded ${bytes(body.size)} to ${body.path}`;
        sha.textContent = body.sha256;
        list_(current);
      } else {
        progressText.textContent = "";
        fail(body && body.error ? `upload failed: ${body.error}` : `upload failed: ${xhr.status} ${xhr.statusText}`);
      }
    });
    xhr.addEventListener("error", () => fail("upload failed: the connection to the server broke"));
    xhr.addEventListener("abort", () => fail("upload cancelled"));
    xhr.send(file);
  }

  uploadInput.addEventListener("change", () => {
    const file = uploadInput.files && uploadInput.files[0];
    if (file) upload(file);
  });

  const form = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (ev) => {
        ev.preventDefault();
        list_(pathInput.value.trim() || "/");
      },
    },
    h("label", { for: "files-path" }, "Path"),
    pathInput,
    go,
  );
  const el = h(
    "section",
    { class: "card", "aria-labelledby": "files-h" },
    h("h2", { id: "files-h" }, "Files"),
    form,
    error,
    h("table", { class: "list files" }, h("thead", {}, h("tr", {}, ...["Name", "Type", "Size", "Modified", ""].map((t) => h("th", { scope: "col" }, t)))), list),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "file-upload-input" }, "Upload to this directory"),
      uploadInput,
      progress,
      progressText,
    ),
    h("p", {}, "SHA-256 of the last upload: ", sha),
  );
  return { el, refresh: () => list_(current) };
}
