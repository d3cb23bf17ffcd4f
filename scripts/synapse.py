#!/usr/bin/env python3
"""A local Synapse for imstore's Matrix adapter: install, start, stop, url.

Synapse (AGPL) is never an imstore dependency: this script installs it from PyPI into its own
virtual environment (``.synapse/venv`` in the repository, git-ignored) and runs it as a separate
process, loopback only. Rules kept here:
- the config listens on 127.0.0.1 only, with the client API and nothing else: no federation
  listener, no key servers, no statistics reporting; SQLite and the media store live in the data
  directory;
- registration is open (``imstore demo --matrix URL`` registers its two users) and by shared
  secret (tests register admins); rate limits are raised far beyond anything a test does;
  password hashing is cheap (bcrypt_rounds 4): this is a loopback test server, never expose it;
- ``start`` records the PID it started in ``<data>/synapse.pid`` with the URL and the shared secret
  in ``<data>/state.json``; ``stop`` signals exactly that PID, never a name or a pattern.

Usage::

    python scripts/synapse.py install        # once: .synapse/venv with matrix-synapse
    python scripts/synapse.py start          # prints the URL once /_matrix/client/versions answers
    python scripts/synapse.py url            # the URL of the running server
    python scripts/synapse.py stop           # stops the recorded PID

``--dir`` (or IMSTORE_SYNAPSE_DIR) chooses the directory (default ``.synapse`` beside scripts/),
``--port`` the port (default: a free one). Imported by the conformance suite for pause/restart
faults (`state`, `start`, `stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = Path(os.environ.get("IMSTORE_SYNAPSE_DIR", ROOT / ".synapse"))
SERVER_NAME = "localhost"
START_TIMEOUT = 60.0
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

CONFIG = """\
# Written by scripts/synapse.py: a loopback-only Synapse for tests. Do not expose it.
server_name: "{server_name}"
public_baseurl: "http://127.0.0.1:{port}/"
pid_file: "{data}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{data}/homeserver.db"
log_config: "{data}/log.config"
media_store_path: "{data}/media_store"
signing_key_path: "{data}/signing.key"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
allow_public_rooms_over_federation: false
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "{secret}"
macaroon_secret_key: "{macaroon}"
form_secret: "{form}"
bcrypt_rounds: 4
enable_metrics: false
url_preview_enabled: false
max_upload_size: 50M
dynamic_thumbnails: true
presence:
  enabled: false
retention:
  enabled: true
  default_policy:
    max_lifetime: 180d
  purge_jobs:
    - interval: 1h
rc_message: {{per_second: 10000, burst_count: 100000}}
rc_registration: {{per_second: 10000, burst_count: 100000}}
rc_login:
  address: {{per_second: 10000, burst_count: 100000}}
  account: {{per_second: 10000, burst_count: 100000}}
  failed_attempts: {{per_second: 10000, burst_count: 100000}}
rc_joins:
  local: {{per_second: 10000, burst_count: 100000}}
rc_joins_per_room: {{per_second: 10000, burst_count: 100000}}
rc_invites:
  per_room: {{per_second: 10000, burst_count: 100000}}
  per_user: {{per_second: 10000, burst_count: 100000}}
  per_issuer: {{per_second: 10000, burst_count: 100000}}
rc_media_create: {{per_second: 10000, burst_count: 100000}}
rc_room_creation: {{per_second: 10000, burst_count: 100000}}
rc_admin_redaction: {{per_second: 10000, burst_count: 100000}}
rc_key_requests: {{per_second: 10000, burst_count: 100000}}
"""

LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {data}/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"""


def venv_python(base: Path) -> Path:
    return base / "venv" / "bin" / "python"


def state(base: Path = DEFAULT_DIR) -> dict[str, Any] | None:
    """What `start` recorded: url, pid, shared secret, server name; None when not running."""
    path = base / "state.json"
    if not path.exists():
        return None
    info: dict[str, Any] = json.loads(path.read_text())
    if not _alive(int(info["pid"])):
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def install(base: Path = DEFAULT_DIR, version: str | None = None) -> float:
    """Create ``<base>/venv`` with matrix-synapse from PyPI; returns the seconds it took."""
    t0 = time.monotonic()
    py = venv_python(base)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    spec = f"matrix-synapse=={version}" if version else "matrix-synapse"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
                   check=True)
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(base: Path, port: int) -> tuple[Path, str]:
    data = (base / "data").resolve()
    data.mkdir(parents=True, exist_ok=True)
    secrets_file = data / "secrets.json"
    if secrets_file.exists():
        keys = json.loads(secrets_file.read_text())
    else:
        keys = {k: secrets.token_urlsafe(32) for k in ("secret", "macaroon", "form")}
        secrets_file.write_text(json.dumps(keys))
        secrets_file.chmod(0o600)
    cfg = data / "homeserver.yaml"
    cfg.write_text(CONFIG.format(server_name=SERVER_NAME, port=port, data=data, **keys))
    (data / "log.config").write_text(LOG_CONFIG.format(data=data))
    return cfg, str(keys["secret"])


def _versions_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(base: Path = DEFAULT_DIR, port: int | None = None) -> dict[str, Any]:
    """Start Synapse (unless the recorded one runs) and wait until it answers; returns state."""
    running = state(base)
    if running is not None:
        return running
    py = venv_python(base)
    if not py.exists():
        raise SystemExit(f"Synapse is not installed in {base}; run: {sys.argv[0]} install")
    old = base / "state.json"
    if port is None and old.exists():
        port = int(json.loads(old.read_text()).get("port", 0)) or None
    port = port or _free_port()
    cfg, secret = _write_config(base, port)
    t0 = time.monotonic()
    if not (base / "data" / "signing.key").exists():
        subprocess.run([str(py), "-m", "synapse.app.homeserver", "-c", str(cfg),
                        "--generate-keys"], check=True, stdout=subprocess.DEVNULL)
    with open(base / "data" / "stdout.log", "ab") as log:
        proc = subprocess.Popen([str(py), "-m", "synapse.app.homeserver", "-c", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _CHILDREN[proc.pid] = proc  # kept until `stop` reaps it (a dropped Popen warns)
    url = f"http://127.0.0.1:{port}"
    info = {"url": url, "pid": proc.pid, "port": port, "secret": secret,
            "server_name": SERVER_NAME, "dir": str(base.resolve())}
    (base / "synapse.pid").write_text(f"{proc.pid}\n")
    (base / "state.json").write_text(json.dumps(info))
    deadline = time.monotonic() + START_TIMEOUT
    while not _versions_ok(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(base)
            tail = (base / "data" / "stdout.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"Synapse did not start:\n{tail}")
        time.sleep(0.1)
    info["start_seconds"] = round(time.monotonic() - t0, 2)
    (base / "state.json").write_text(json.dumps(info))
    return info


def stop(base: Path = DEFAULT_DIR, timeout: float = 20.0) -> bool:
    """Stop the PID that `start` recorded (SIGCONT first, in case a test paused it, then
    SIGTERM, then SIGKILL). Returns whether a process was stopped."""
    pid_file = base / "synapse.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    stopped = False
    if _alive(pid):
        stopped = True
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                _reap(pid)
                time.sleep(0.05)
    _reap(pid)
    pid_file.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "url", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--version", default=os.environ.get("IMSTORE_SYNAPSE_VERSION"))
    args = parser.parse_args(argv)
    base: Path = args.dir
    base.mkdir(parents=True, exist_ok=True)
    if args.command == "install":
        print(f"installed matrix-synapse in {base / 'venv'} in {install(base, args.version):.1f} s")
    elif args.command == "start":
        info = start(base, args.port)
        extra = f" (started in {info['start_seconds']} s)" if "start_seconds" in info else ""
        print(f"{info['url']} pid {info['pid']}{extra}", file=sys.stderr)
        print(info["url"])
    elif args.command == "stop":
        print("stopped" if stop(base) else "not running", file=sys.stderr)
    elif args.command == "url":
        info = state(base)
        if info is None:
            print("Synapse is not running", file=sys.stderr)
            return 1
        print(info["url"])
    else:
        info = state(base)
        if info is None:
            print("not running")
            return 1
        print(f"{info['url']} pid {info['pid']} rss {rss_mb(int(info['pid'])):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
