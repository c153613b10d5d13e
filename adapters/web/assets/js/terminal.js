// One terminal on the agent: xterm.js + the fit addon in `container`, over the terminal
// socket (docs/protocol.md "The terminal socket"): binary frames both ways, JSON text frames
// for control. It reattaches by itself (with ?offset=, so nothing shows twice) while the
// server keeps the terminal (the grace period), and says whether it is attached,
// detached or ended.

import { api, wsUrl } from "./api.js";

/** How long to keep trying to reattach (the server's default grace period is 60 s). */
const REATTACH_FOR_MS = 60_000;

export class TerminalView {
  /**
   * @param {string} sessionId
   * @param {HTMLElement} container the xterm element
   * @param {(state: string) => void} onState the state in words
   * @param {(err: Error|string) => void} onError
   */
  constructor(sessionId, container, onState, onError) {
    this.sessionId = sessionId;
    this.container = container;
    this.onState = onState;
    this.onError = onError;
    this.terminalId = null;
    this.socket = null;
    this.position = null; // output bytes received, counted from the terminal's first
    this.ended = false;
    this.lostAt = null;
    this.retry = null;
    this.encoder = new TextEncoder();
    this.resizeTimer = null;
  }

  async open() {
    if (!window.Terminal || !window.FitAddon) throw new Error("the terminal library did not load (vendor/xterm)");
    this.term = new window.Terminal({
      cursorBlink: true,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace",
      fontSize: 14,
      scrollback: 5000,
    });
    this.fit = new window.FitAddon.FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(this.container);
    this.fit.fit();
    const { cols, rows } = this.term;
    const created = await api("POST", `/api/v1/tunnel/${this.sessionId}/terminals`, {
      cols,
      rows,
      term: "xterm-256color",
    });
    this.terminalId = created.terminal_id;
    this.term.onData((s) => this.send(this.encoder.encode(s)));
    this.term.onBinary((s) => this.send(Uint8Array.from(s, (c) => c.charCodeAt(0))));
    this.term.onResize(({ cols: c, rows: r }) => {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify({ type: "resize", cols: c, rows: r }));
      }
    });
    this.onWindowResize = () => {
      clearTimeout(this.resizeTimer);
      this.resizeTimer = setTimeout(() => this.fitNow(), 100);
    };
    window.addEventListener("resize", this.onWindowResize);
    this.attach();
    this.term.focus();
  }

  fitNow() {
    if (this.term && !this.ended) {
      try {
        this.fit.fit();
      } catch {
        // Not laid out (hidden): the next resize fits it.
      }
    }
  }

  send(bytes) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  attach() {
    const params = this.position === null ? {} : { offset: this.position };
    const path = `/api/v1/tunnel/${this.sessionId}/terminals/${this.terminalId}/ws`;
    const ws = new WebSocket(wsUrl(path, params));
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") {
        this.control(ev.data);
        return;
      }
      const bytes = new Uint8Array(ev.data);
      if (this.position !== null) this.position += bytes.byteLength;
      this.term.write(bytes);
    });
    ws.addEventListener("close", (ev) => this.closed(ws, ev));
  }

  control(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === "attached") {
      this.position = Number(msg.offset);
      this.lostAt = null;
      this.onState("attached");
      // The server's idea of our size may be stale after a reattach.
      const { cols, rows } = this.term;
      this.socket.send(JSON.stringify({ type: "resize", cols, rows }));
    } else if (msg.type === "exit") {
      this.finish(msg.signal !== undefined && msg.signal !== null ? `ended (signal ${msg.signal})` : `ended (exit ${msg.exit_code})`);
    }
  }

  finish(state) {
    if (this.ended) return;
    this.ended = true;
    this.onState(state);
    if (this.term) this.term.options.disableStdin = true;
  }

  closed(ws, ev) {
    if (ws !== this.socket || this.ended) return;
    this.socket = null;
    if (ev.code === 1000) {
      this.finish(ev.reason === "terminal ended" ? "ended" : "closed");
      if (ev.reason && ev.reason !== "terminal ended") this.onError(`terminal ${ev.reason}`);
      return;
    }
    if (ev.code === 4000) {
      this.onState("detached");
      this.onError("this terminal was attached from another window (the newest attach wins)");
      return;
    }
    if (ev.code === 1008) {
      this.onState("detached");
      this.onError(`terminal socket closed: ${ev.reason || "refused"}`);
      return;
    }
    if (this.lostAt === null) this.lostAt = Date.now();
    this.onState("detached — reconnecting…");
    this.retry = setTimeout(() => this.reattach(), 1000);
  }

  async reattach() {
    this.retry = null;
    if (this.ended) return;
    if (Date.now() - this.lostAt > REATTACH_FOR_MS) {
      this.finish("closed");
      this.onError("the terminal could not be reattached within the grace period");
      return;
    }
    // Still there? A terminal that ended while we were away is gone from the list.
    try {
      const list = await api("GET", `/api/v1/tunnel/${this.sessionId}/terminals`);
      if (!list.terminals.some((t) => t.terminal_id === this.terminalId)) {
        this.finish("closed");
        return;
      }
    } catch (e) {
      if (e.status && e.status !== 0 && e.status < 500) {
        this.finish("closed");
        this.onError(e);
        return;
      }
    }
    if (!this.ended) this.attach();
  }

  /** Stops reattaching and drops the socket (the terminal lives on for the grace period). */
  detach() {
    clearTimeout(this.retry);
    clearTimeout(this.resizeTimer);
    if (this.onWindowResize) window.removeEventListener("resize", this.onWindowResize);
    this.ended = true;
    if (this.socket) this.socket.close(1000, "page left");
    this.socket = null;
  }

  /** Ends the terminal on the agent, then drops everything. */
  async close() {
    const id = this.terminalId;
    this.detach();
    if (id) await api("DELETE", `/api/v1/tunnel/${this.sessionId}/terminals/${id}`);
  }

  dispose() {
    this.detach();
    if (this.term) this.term.dispose();
  }
}
