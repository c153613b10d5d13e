// Run one command at a time in the session: POST .../command, its live output from the
// session stream (docs/protocol.md "The technicians' stream", filtered by the command's
// channel), and its end from GET .../commands/{id}?wait=.

import { api, wsUrl } from "./api.js";

const EARLY_FRAMES = 4096;

export class CommandRunner {
  constructor(sessionId, { stdout, stderr, exit, onError }) {
    this.sessionId = sessionId;
    this.out = stdout;
    this.err = stderr;
    this.exit = exit;
    this.onError = onError;
    this.stream = null;
    this.channel = null;
    this.heard = false;
    // Frames that arrive while the POST is still answering (its channel not yet known):
    // held, at most EARLY_FRAMES of them, and shown once the channel is known.
    this.early = null;
    this.missed = false;
  }

  /** The session stream, opened once and kept (resolves when open, or null if refused). */
  openStream() {
    if (this.stream && this.stream.readyState === WebSocket.OPEN) return Promise.resolve(this.stream);
    return new Promise((resolve) => {
      const ws = new WebSocket(wsUrl(`/api/v1/tunnel/${this.sessionId}/stream`));
      ws.addEventListener("open", () => {
        this.stream = ws;
        resolve(ws);
      });
      ws.addEventListener("message", (ev) => this.frame(ev.data));
      ws.addEventListener("close", () => {
        if (this.stream === ws) this.stream = null;
        resolve(null);
      });
    });
  }

  /** Parse one frame of the session stream. */
  frame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const p = msg.payload || {};
    if (this.channel === null && this.early && p.channel_id) {
      if (this.early.length < EARLY_FRAMES) this.early.push(msg);
      else this.missed = true;
      return;
    }
    this.show(msg);
  }

  show(msg) {
    const p = msg.payload || {};
    if (p.channel_id !== this.channel) return;
    if (msg.type === "tunnel_error") {
      this.onError(`command failed: ${p.error || "error"}`);
      return;
    }
    if (msg.type !== "tunnel_data" || !p.data || p.data.type !== "terminal_output") return;
    const o = p.data.payload || {};
    this.heard = true;
    if (o.stdout) this.out.textContent += o.stdout;
    if (o.stderr) this.err.textContent += o.stderr;
    if (o.exit_code !== null && o.exit_code !== undefined) this.showEnd(o.exit_code, o.signal);
  }

  showEnd(exitCode, signal) {
    this.exit.textContent = signal ? `exit ${exitCode} (${signal})` : `exit ${exitCode}`;
  }

  async run(command, timeoutSecs) {
    this.out.textContent = "";
    this.err.textContent = "";
    this.exit.textContent = "running…";
    this.heard = false;
    this.channel = null;
    this.early = [];
    this.missed = false;
    const stream = await this.openStream();
    const body = { command };
    if (timeoutSecs) body.timeout_secs = timeoutSecs;
    let started;
    try {
      started = await api("POST", `/api/v1/tunnel/${this.sessionId}/command`, body);
    } catch (e) {
      this.exit.textContent = "";
      this.early = null;
      throw e;
    }
    this.channel = started.channel_id;
    const early = this.early;
    this.early = null;
    for (const msg of early) this.show(msg);
    const path = `/api/v1/tunnel/${this.sessionId}/commands/${started.command_id}`;
    let done = null;
    while (!done) {
      const status = await api("GET", `${path}?wait=60`);
      if (status.status !== "running") done = status;
    }
    if (!stream || !this.heard || this.missed) {
      // No whole live output (the stream was refused or missed some): the stored output.
      this.out.textContent = done.stdout || "";
      this.err.textContent = done.stderr || "";
    }
    if (done.exit_code !== null && done.exit_code !== undefined) this.showEnd(done.exit_code, done.signal);
    // No exit code: the server ended it; say why, as the API does (`failed (agent_disconnected)`).
    else this.exit.textContent = done.end_reason ? `${done.status} (${done.end_reason})` : done.status;
    return done;
  }

  dispose() {
    if (this.stream) this.stream.close(1000, "page left");
    this.stream = null;
  }
}
