"""Real servers for the e2e tests. Label Studio: one per test session, on 127.0.0.1 (docs/servers.md).

The server runs from its own virtual environment (``$LABEL_STUDIO_BIN``, set by
``make test``, or ``.venv-label-studio/bin/label-studio``). Migrating a fresh data
folder takes about 25 s, so a migrated, user-less folder is kept under the aicd cache
(``label-studio/migrated-<version>``) and copied into a fresh temporary folder per
session; the first user is then created on start (about 3-5 s).

The session's server runs with Label Studio's default settings: legacy tokens are
disabled. The admin logs in as a person would (``/user/login/``) and creates a personal
access token through ``POST /api/token/``, what Account & Settings > Personal Access
Token does; every test uses that token. :func:`start` can also start a server with
legacy tokens enabled, or with access tokens that live only seconds (a settings module
that sets SimpleJWT's ``ACCESS_TOKEN_LIFETIME``, which Label Studio reads from Django
settings only). Tokens go to the server through its environment, never its argv.
"""

import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    token: str  # a personal access token (a JWT refresh token), or the legacy token of a legacy server
    kind: str  # "personal" or "legacy"
    legacy_token: str  # the admin's legacy token: refused unless the server enables legacy tokens
    password: str
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
    env.update(LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LABEL_STUDIO_LATEST_VERSION_CHECK="false", **extra)
    return env


def _short_access_settings(folder: Path, seconds: float) -> dict[str, str]:
    """Environment for a server whose access tokens live ``seconds``: a settings module over Label Studio's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "aicd_ls_settings.py").write_text(
        "import os\n"
        "from datetime import timedelta\n\n"
        "# Label Studio's settings read django.conf.settings while they import: let that see them, not this module.\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'label_studio.core.settings.label_studio'\n"
        "from label_studio.core.settings.label_studio import *  # noqa: E402,F403\n\n"
        f"SIMPLE_JWT = {{'ACCESS_TOKEN_LIFETIME': timedelta(seconds={seconds!r})}}\n")
    return {"DJANGO_SETTINGS_MODULE": "aicd_ls_settings", "PYTHONPATH": str(folder)}


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


def login(url: str, password: str, timeout: float = 10) -> requests.Session | None:
    """A browser-like session of the admin (``/user/login/``), or None if this server does not know us."""
    session = requests.Session()
    try:
        session.get(f"{url}/user/login/", timeout=timeout)
        csrf = session.cookies.get("csrftoken")
        resp = session.post(f"{url}/user/login/", data={"email": ADMIN, "password": password,
                                                          "csrfmiddlewaretoken": csrf or ""},
                            headers={"Referer": f"{url}/user/login/"}, allow_redirects=False, timeout=timeout)
    except requests.RequestException:
        session.close()
        return None
    if resp.status_code != 302 or "sessionid" not in session.cookies:
        session.close()
        return None
    return session


def create_personal_token(url: str, password: str) -> str:
    """A personal access token of the admin, made as Account & Settings > Personal Access Token makes it."""
    session = login(url, password)
    if session is None:
        raise RuntimeError(f"could not log in to Label Studio at {url} as {ADMIN}")
    with session:
        resp = session.post(f"{url}/api/token/", headers={"X-CSRFToken": session.cookies.get("csrftoken", ""),
                                                          "Referer": f"{url}/user/account/"}, timeout=30)
        if resp.status_code != 201:
            raise RuntimeError(f"POST /api/token/ answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["token"]


def _answering_port(port: int, password: str) -> int | None:
    """The port our server answers on: it moves to port+1 silently when the port is taken, and
    another session's server there does not know our admin's random password."""
    for candidate in range(port, port + 4):
        session = login(f"http://127.0.0.1:{candidate}", password, timeout=2)
        if session is not None:
            session.close()
            return candidate
    return None


def start(data_root: Path, timeout: float = 180.0, legacy: bool = False,
          access_seconds: float | None = None) -> tuple[LabelStudioServer, subprocess.Popen]:
    """A Label Studio with default settings and a personal access token; ``legacy=True`` enables legacy tokens
    (and the server's token is the legacy one); ``access_seconds`` shortens the access token's life."""
    bin_path = binary()
    template, migration = migrated_template(bin_path)
    data_dir = data_root / "data"
    shutil.copytree(template, data_dir)
    legacy_token, password, port = secrets.token_hex(20), secrets.token_hex(8), free_port()
    extra = {"LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"} if legacy else {}
    if access_seconds is not None:
        extra.update(_short_access_settings(data_root / "settings", access_seconds))
    env = _env(data_dir, LABEL_STUDIO_USERNAME=ADMIN, LABEL_STUDIO_PASSWORD=password,
               LABEL_STUDIO_USER_TOKEN=legacy_token, **extra)
    logfile = open(data_root / "label-studio.log", "w")
    began = time.monotonic()
    proc = subprocess.Popen([str(bin_path), "start", "--no-browser", "--internal-host", "127.0.0.1",
                             "--port", str(port), "--data-dir", str(data_dir)],
                            env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    logfile.close()
    while True:
        answered = _answering_port(port, password)
        if answered is not None:
            break
        if proc.poll() is not None or time.monotonic() - began > timeout:
            stop(proc)
            tail = (data_root / "label-studio.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"Label Studio did not come up on 127.0.0.1:{port}: {tail}")
        time.sleep(0.25)
    url = f"http://127.0.0.1:{answered}"
    token = legacy_token if legacy else create_personal_token(url, password)
    server = LabelStudioServer(url, token, "legacy" if legacy else "personal", legacy_token, password, data_dir,
                               proc.pid,
                               round(time.monotonic() - began, 2), migration and round(migration, 2))
    log.warning("Label Studio %s up on %s in %.1f s (%s token; fresh migration: %s s)", _version(bin_path),
                server.url, server.startup_seconds, server.kind, server.fresh_migration_seconds)
    return server, proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID (about 2 s), SIGKILL if it hangs."""
    stop_process(proc, grace=20)


@contextmanager
def running(data_root: Path, **options) -> Iterator[LabelStudioServer]:
    """A server of :func:`start` (same options), stopped on exit."""
    server, proc = start(data_root, **options)
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    with running(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture
def ls(label_studio, monkeypatch):
    """A client of the session's Label Studio; the token is also where the steps read it (they run as
    subprocesses of this process and take it from the environment)."""
    from aicd.components.labeling.client import LabelStudio

    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    client = LabelStudio(label_studio.url, label_studio.token, token_kind=label_studio.kind)
    yield client
    client.close()
