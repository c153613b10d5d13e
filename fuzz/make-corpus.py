#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ from real frames: docs/protocol.md's examples
(ellipses in ids filled in) and the binary frames the tests send. Run it after changing the
seeds; the files are committed."""
import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
CMD = "cmd-0b6f6c0e-5f47-4d0e-9a2e-5f1f3f0f7a11"
PTY = "pty-3f1c6a2e-0d6b-4a3e-9d1f-2b7c8e9a0f11"
FILE = "file-1b0e7d2c-4f5a-4b6c-8d9e-0a1b2c3d4e5f"
SESSION = "550e8400-e29b-41d4-a716-446655440000"


def msg(kind, payload):
    return json.dumps({"type": kind, "payload": payload}, separators=(",", ":")).encode()


def frame(channel, offset, data):
    ident = channel.encode()
    return bytes([len(ident)]) + ident + struct.pack(">Q", offset) + data


def record(kind, body):
    return bytes([kind]) + struct.pack(">H", len(body)) + body


AGENT = [
    msg("tunnel_ready", {"session_id": SESSION}),
    msg("tunnel_data", {"channel_id": CMD, "data": {"type": "terminal_output", "payload": {"stdout": "total 8\n", "stderr": "", "exit_code": None}}}),
    msg("tunnel_data", {"channel_id": CMD, "data": {"type": "terminal_output", "payload": {"stdout": "ok\ufffd\n", "stderr": "", "exit_code": None, "stdout_b64": "b2v/Cg=="}}}),
    msg("tunnel_data", {"channel_id": CMD, "data": {"type": "terminal_output", "payload": {"stdout": "", "stderr": "", "exit_code": 143, "signal": "SIGTERM", "end_reason": "timed_out"}}}),
    msg("tunnel_error", {"channel_id": CMD, "error": "Failed to execute command: No such file or directory"}),
    msg("heartbeat", {"agent_version": "0.1.0", "hostname": "web-01", "os": "linux", "uptime_secs": 42}),
    msg("pty_exit", {"channel_id": PTY, "signal": 1}),
    msg("channel_ack", {"channel_id": CMD, "offset": 131072}),
    msg("file_error", {"channel_id": FILE, "code": "not_found", "message": "cannot open /var/log/nope"}),
    msg("file_listing", {"channel_id": FILE, "path": "/etc", "entries": [{"name": "hosts", "type": "file", "size": 221, "mode": 420, "modified": 1795000000}]}),
    msg("file_chunk", {}),  # a newer agent's type: unknown, tolerated
    # Found by agent_frame: a malformed known type was reported as unknown.
    b'{"type":"pty_exit","pay}oad":{"channel_id":"pty-3f1c6a2e-0d6b-4a3e-9d1f-2b7c8e9a0f11","signal":1}}',
]
SERVER = [
    msg("tunnel_open", {"session_id": SESSION, "tech_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}),
    msg("tunnel_close", {"session_id": SESSION}),
    msg("tunnel_data", {"channel_id": CMD, "data": {"type": "terminal", "payload": {"command": "ls -la /home", "timeout_secs": 300}}}),
    msg("tunnel_data", {"channel_id": CMD, "data": {"type": "terminal", "payload": {"command": "cat > /tmp/x", "stdin": True, "binary_output": True}}}),
    msg("command_cancel", {"channel_id": CMD}),
    msg("pty_open", {"channel_id": PTY, "cols": 80, "rows": 24, "term": "xterm-256color", "command": "top"}),
    msg("pty_resize", {"channel_id": PTY, "cols": 120, "rows": 40}),
    msg("stdin_end", {"channel_id": CMD}),
    msg("file_upload_end", {"channel_id": FILE, "size": 3000000, "sha256": "1199aa7e" * 8}),
    # Found by server_frame: a malformed known type was reported as unknown.
    msg("pty_open", {"channel_ie": PTY, "cols": 80, "rows": 24, "term": "xterm-256color"}),
]
OUTPUT = [
    frame(CMD + "/stdout", 0, b"total 8\n"),
    frame(CMD + "/stderr", (1 << 40) + 3, bytes(range(256))),
    frame(PTY, 0, b"\x1b[?1049h\x1b[H$ "),
    frame("c", 0, b""),
]

PTY_SESSION = b"".join([
    record(2, msg("pty_open", {"channel_id": PTY, "cols": 80, "rows": 24, "term": "xterm-256color"})),
    record(1, msg("pty_ready", {"channel_id": PTY})),
    record(0, frame(PTY, 0, b"$ ")),
    record(3, struct.pack(">H", 3)),
    record(4, frame(PTY, 0, b"ls\r")),
    record(1, msg("channel_ack", {"channel_id": PTY, "offset": 3})),
    record(0, frame(PTY, 2, b"ls\r\nbin etc\r\n$ ")),
    record(2, msg("channel_ack", {"channel_id": PTY, "offset": 17})),
    record(2, msg("pty_resize", {"channel_id": PTY, "cols": 120, "rows": 40})),
    record(2, msg("pty_close", {"channel_id": PTY})),
    record(1, msg("pty_exit", {"channel_id": PTY, "exit_code": 0})),
])
PTY_FLOOD = b"".join(record(0, frame("p", i, b"x")) for i in range(300))  # beyond the frame window
PTY_TYPING = b"".join(record(3, struct.pack(">I", 65536)) for _ in range(20))

UPLOAD = b"".join([
    record(1, msg("file_upload", {"channel_id": FILE, "path": "/srv/app.tar", "offset": 0})),
    record(0, frame(FILE, 0, b"\x00" * 1024)),
    record(0, frame(FILE, 1024, b"tar data")),
    record(2, msg("file_ack", {"channel_id": FILE, "offset": 1032})),
    record(1, msg("file_upload_end", {"channel_id": FILE, "size": 1032, "sha256": "1199aa7e" * 8})),
    record(2, msg("file_done", {"channel_id": FILE, "path": "/srv/app.tar", "size": 1032, "sha256": "1199aa7e" * 8})),
])
DOWNLOAD = b"".join([
    record(1, msg("file_download", {"channel_id": FILE, "path": "/var/log/syslog", "offset": 0})),
    record(2, msg("file_info", {"channel_id": FILE, "size": 12, "sha256": "1199aa7e" * 8, "mode": 420, "modified": 1795690000})),
    record(0, frame(FILE, 0, b"syslog data\n")),
    record(1, msg("file_ack", {"channel_id": FILE, "offset": 12})),
    record(2, msg("file_done", {"channel_id": FILE, "path": "/var/log/syslog", "size": 12, "sha256": "1199aa7e" * 8})),
])
FILE_OPS = b"".join([
    record(1, msg("file_list", {"channel_id": FILE, "path": "/etc"})),
    record(2, AGENT[9]),
    record(1, msg("file_upload_status", {"channel_id": FILE, "path": "C:\\Users\\x\\app.tar"})),
    record(2, msg("file_partial", {"channel_id": FILE, "path": "/srv/app.tar", "size": 1048576})),
    record(1, msg("file_cancel", {"channel_id": FILE})),
    record(2, AGENT[8]),
    record(0, frame(FILE, 18446744073709551615, b"x")),
])

CORPUS = {
    "agent_frame": AGENT + OUTPUT,
    "server_frame": SERVER + [frame(CMD, 0, b"input\n"), frame(FILE, 0, b"file bytes")],
    "client_stream": AGENT + OUTPUT,
    "terminal_frame": [PTY_SESSION, PTY_FLOOD, PTY_TYPING],
    "file_frame": [UPLOAD, DOWNLOAD, FILE_OPS],
}

for target, seeds in CORPUS.items():
    folder = ROOT / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"{target}: {len(seeds)} seeds")
