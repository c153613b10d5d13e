// Terminal recordings: the list, and playing one in the page with asciinema-player (the
// file is fetched with the token and handed to the player as data; seeking is the player's).

import { api, raw } from "../api.js";
import { attempt, bytes, h, page, when } from "../ui.js";

export async function recordingsPage(selected) {
  const [list, agents] = await Promise.all([
    api("GET", "/api/v1/recordings"),
    api("GET", "/api/v1/agents").catch(() => []),
  ]);
  const names = new Map(agents.map((a) => [a.agent_id, a.name]));
  const speed = h(
    "select",
    { id: "player-speed", testid: "player-speed" },
    h("option", { value: "1" }, "1×"),
    h("option", { value: "2" }, "2×"),
    h("option", { value: "4" }, "4×"),
  );
  const playerBox = h("div", { testid: "player", class: "player" });
  const nowPlaying = h("p", { class: "hint", role: "status" }, "Choose a recording to play.");
  let player = null;
  let current = null;

  async function play(rec) {
    current = rec;
    nowPlaying.textContent = `loading ${rec.recording_id}…`;
    const resp = await raw("GET", `/api/v1/recordings/${rec.recording_id}`);
    const cast = await resp.text();
    if (!window.AsciinemaPlayer) throw new Error("the recording player did not load (vendor/asciinema-player)");
    if (player) player.dispose();
    playerBox.replaceChildren();
    player = window.AsciinemaPlayer.create({ data: cast }, playerBox, {
      speed: Number(speed.value),
      autoPlay: true,
      fit: "width",
      controls: true,
    });
    nowPlaying.textContent = `${names.get(rec.agent_id) || rec.agent_id} · ${when(rec.started_at)} · ${rec.cols}×${rec.rows}${rec.truncated ? " · truncated" : ""}`;
  }

  speed.addEventListener("change", () => {
    if (current) attempt(() => play(current));
  });

  const rows = list.recordings.map((rec) =>
    h(
      "tr",
      { testid: "recording-row", dataset: { recordingId: rec.recording_id } },
      h("td", {}, when(rec.started_at)),
      h("td", {}, names.get(rec.agent_id) || rec.agent_id),
      h("td", {}, rec.command || "login shell"),
      h("td", {}, `${rec.cols}×${rec.rows}`),
      h("td", { class: "num" }, bytes(rec.size)),
      h("td", {}, rec.ended_at ? when(rec.ended_at) : "live"),
      h(
        "td",
        {},
        h("button", { type: "button", testid: "recording-play", onclick: () => attempt(() => play(rec)) }, "Play"),
        " ",
        h("a", { href: `#/recordings/${encodeURIComponent(rec.recording_id)}` }, "link"),
      ),
    ),
  );
  page(
    "Recordings",
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ...["Started", "Agent", "Command", "Size", "Bytes", "Ended", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No recordings yet."))),
    ),
    h("section", { class: "card", "aria-labelledby": "player-h" }, h("h2", { id: "player-h" }, "Player"), h("div", { class: "toolbar" }, h("label", { for: "player-speed" }, "Speed"), speed), nowPlaying, playerBox),
  );
  if (selected) {
    const rec = list.recordings.find((r) => r.recording_id === selected);
    if (rec) await play(rec);
    else throw new Error(`no recording ${selected} in your list`);
  }
  return () => {
    if (player) player.dispose();
  };
}
