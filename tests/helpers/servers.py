"""Real servers for the e2e tests. Label Studio: one per test session, on 127.0.0.1 (docs/servers.md).

The server runs from its own virtual environment (``$LABEL_STUDIO_BIN``, set by
``make test``, or ``.venv-label-studio/bin/label-studio``). Migrating a fresh data
folder takes about 25 s, so a migrated, user-less folder is kept under the aicd cache
(``label-studio/migrated-<version>``) and copied into a fresh temporary folder per
session; the first user is then created with a random token on start (about 3-5 s).
"""

import logging
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from aicd.components.cards import atomic_dir
from aicd.components.uris import cache_root
from aicd.pipelines.services import stop_process
from helpers.ports import free_port

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin@example.com"
# Variables Label Studio reads without its prefix (docs/servers.md, traps) and our own settings.
_DROP = ("PORT", "HOST", "USERNAME", "PASSWORD")


@dataclass
class LabelStudioServer:
    url: str
    token: str
    data_dir: Path
    pid: int
    startup_seconds: float
    fresh_migration_seconds: float | None


def binary() -> Path:
    path = Path(os.environ.get("LABEL_STUDIO_BIN") or ROOT / ".venv-label-studio" / "bin" / "label-studio")
    if not path.is_file():
        pytest.fail(f"Label Studio is not installed at {path}; run `make services` (or set LABEL_STUDIO_BIN)")
    return path


def _version(bin_path: Path) -> str:
    found = sorted((bin_path.parent.parent / "lib").glob("python*/site-packages/label_studio-*.dist-info"))
    return found[0].name.removesuffix(".dist-info") if found else "unknown"


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith("LABEL_STUDIO_")}
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LABEL_STUDIO_LATEST_VERSION_CHECK="false",
               LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true", **extra)
    return env


def migrated_template(bin_path: Path) -> tuple[Path, float | None]:
    """A migrated data folder without users (built once per Label Studio version)."""
    target = cache_root() / "label-studio" / f"migrated-{_version(bin_path)}"
    if (target / "label_studio.sqlite3").is_file():
        return target, None
    start = time.monotonic()
    with atomic_dir(target) as tmp:
        done = subprocess.run([str(bin_path), "init", "--quiet", "--no-browser", "--data-dir", str(tmp)],
                              env=_env(tmp), capture_output=True, text=True, timeout=900)  # minutes when loaded
        if done.returncode != 0 or not (tmp / "label_studio.sqlite3").is_file():
            raise RuntimeError(f"label-studio init failed ({done.returncode}): {done.stderr[-2000:]}")
        (tmp / ".env").unlink(missing_ok=True)  # each copy makes its own Django secret key
    return target, time.monotonic() - start


def _answering_port(port: int, token: str) -> int | None:
    """The port our server answers on: it moves to port+1 silently when the port is taken."""
    for candidate in range(port, port + 4):
        try:
            resp = requests.get(f"http://127.0.0.1:{candidate}/api/projects/", params={"page_size": 1},
                                headers={"Authorization": f"Token {token}"}, timeout=2)
        except requests.RequestException:
            continue
        if resp.status_code == 200:
            return candidate
    return None


def start(data_root: Path, timeout: float = 180.0) -> tuple[LabelStudioServer, subprocess.Popen]:
    bin_path = binary()
    template, migration = migrated_template(bin_path)
    data_dir = data_root / "data"
    shutil.copytree(template, data_dir)
    token, port = secrets.token_hex(20), free_port()
    env = _env(data_dir, LABEL_STUDIO_USERNAME=ADMIN, LABEL_STUDIO_PASSWORD=secrets.token_hex(8),
               LABEL_STUDIO_USER_TOKEN=token)
    logfile = open(data_root / "label-studio.log", "w")
    began = time.monotonic()
    proc = subprocess.Popen([str(bin_path), "start", "--no-browser", "--internal-host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data_dir)],
                            env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    logfile.close()
    while True:
        answered = _answering_port(port, token)
        if answered is not None:
            break
        if proc.poll() is not None or time.monotonic() - began > timeout:
            stop(proc)
            tail = (data_root / "label-studio.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"Label Studio did not come up on 127.0.0.1:{port}: {tail}")
        time.sleep(0.25)
    server = LabelStudioServer(f"http://127.0.0.1:{answered}", token, data_dir, proc.pid,
                               round(time.monotonic() - began, 2), migration and round(migration, 2))
    log.warning("Label Studio %s up on %s in %.1f s (fresh migration: %s s)", _version(bin_path), server.url,
                server.startup_seconds, server.fresh_migration_seconds)
    return server, proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID (about 2 s), SIGKILL if it hangs."""
    stop_process(proc, grace=20)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    server, proc = start(tmp_path_factory.mktemp("label-studio"))
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture
def ls(label_studio, monkeypatch):
    """A client of the session's Label Studio; the token is also where the steps read it (they run as
    subprocesses of this process and take it from the environment)."""
    from aicd.components.labeling.client import LabelStudio

    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    client = LabelStudio(label_studio.url, label_studio.token)
    yield client
    client.close()
