"""Token kinds, the refresh-once on 401, and which failures are retried.

The kind is read from the token alone (no server). The refresh and retry cases need
answers a real Label Studio gives only by accident (a 401 to a fresh access token, a 503),
so a small HTTP server on 127.0.0.1 plays those answers from a script: a stand-in for
Label Studio's token endpoint and project list, and the only one in these tests. The real
server's refresh is exercised in tests/e2e/test_labeling_tokens.py.
"""

import base64
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.http_answers import send_json

from aicd.components.errors import LabelingError
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.tokens import REFRESH_PATH, jwt_claims, token_kind


def jwt(**claims) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{'s' * 43}"


REFRESH = jwt(token_type="refresh", exp=time.time() + 10**9, iat=time.time(), jti="r1", user_id=1)
LEGACY = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("token", "declared", "kind", "error"), [
    (REFRESH, "auto", "personal", None),
    (REFRESH, "personal", "personal", None),
    (LEGACY, "auto", "legacy", None),
    (LEGACY, "legacy", "legacy", None),
    ("short-legacy-token", "auto", "legacy", None),
    (REFRESH, "legacy", None, r"`labeling.token_kind` is legacy, but the Secret holds a personal access token"),
    (LEGACY, "personal", None, r"(?s)`labeling.token_kind` is personal, but the token in the Secret is not a "
                               r"personal access token.*Account & Settings > Personal Access Token"),
    (jwt(token_type="access", exp=1), "auto", None, r"short-lived access token .* not a personal access token"),
])
def test_token_kind(token, declared, kind, error):
    if error:
        with pytest.raises(LabelingError, match=error) as err:
            token_kind(token, declared)
        assert token not in str(err.value)
    else:
        assert token_kind(token, declared) == kind


def test_jwt_claims_reads_only_jwts():
    assert jwt_claims(REFRESH)["token_type"] == "refresh"
    assert jwt_claims(LEGACY) is None and jwt_claims("a.b") is None and jwt_claims("a.!!.c") is None


class Script(BaseHTTPRequestHandler):
    """Answers from ``server.plan``: path -> list of statuses, consumed in order (the last one repeats)."""

    def log_message(self, *args):  # quiet
        pass

    def _answer(self):
        srv = self.server
        srv.calls.append((self.command, self.path.split("?")[0], self.headers.get("Authorization")))
        if self.command == "POST" and self.path.startswith(REFRESH_PATH):
            length = int(self.headers.get("content-length", 0))
            assert json.loads(self.rfile.read(length))["refresh"] == REFRESH
            srv.issued += 1
            body = {"access": jwt(token_type="access", exp=time.time() + 300, iat=time.time(), n=srv.issued)}
            return self._send(200, body)
        plan = srv.plan[self.path.split("?")[0]]
        status = plan.pop(0) if len(plan) > 1 else plan[0]
        self._send(status, {"results": [], "next": None} if status == 200 else {"detail": f"scripted {status}"})

    def _send(self, status, body):
        send_json(self, status, body)

    do_GET = do_POST = _answer


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Script)
    server.calls, server.issued, server.plan = [], 0, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def client_of(server, token=REFRESH) -> LabelStudio:
    return LabelStudio(f"http://127.0.0.1:{server.server_address[1]}", token, timeout=5, retries=3, backoff=0.01)


def test_refreshes_once_on_401_then_succeeds(scripted, caplog):
    scripted.plan["/api/projects/"] = [401, 200]  # the first access token was revoked meanwhile
    client = client_of(scripted)
    with caplog.at_level(logging.DEBUG):
        assert client.find_project("demo") is None
    bearer = [auth for method, path, auth in scripted.calls if path == "/api/projects/"]
    assert scripted.issued == 2 and len(bearer) == 2 and bearer[0] != bearer[1]
    assert all(auth.startswith("Bearer ") for auth in bearer)
    assert REFRESH not in caplog.text and not any(auth[7:] in caplog.text for auth in bearer)
    assert "refreshing the access token once" in caplog.text


def test_refreshes_only_once_on_a_second_401(scripted, caplog):
    scripted.plan["/api/projects/"] = [401]
    client = client_of(scripted)
    with caplog.at_level(logging.DEBUG), pytest.raises(LabelingError) as err:
        client.find_project("demo")
    assert scripted.issued == 2 and len([c for c in scripted.calls if c[1] == "/api/projects/"]) == 2
    assert "refused the personal access token (HTTP 401 on GET /api/projects/: scripted 401)" in str(err.value)
    assert "Access Token Settings" in str(err.value)
    for secret in [REFRESH] + [auth[7:] for _, _, auth in scripted.calls if auth]:
        assert secret not in str(err.value) and secret not in caplog.text and secret not in repr(client.credentials)


@pytest.mark.parametrize(("method", "plan", "calls", "ok"), [
    ("GET", [503, 502, 200], 3, True),  # 5xx of a repeatable request: retried with backoff
    ("GET", [500], 4, False),  # ... until the retries (3) run out
    ("GET", [400, 200], 1, False),  # 4xx: never retried
    ("POST", [503, 200], 1, False),  # an import the server may have applied: never repeated
])
def test_retries(scripted, method, plan, calls, ok):
    path = "/api/projects/" if method == "GET" else "/api/projects/7/import"
    scripted.plan[path] = list(plan)
    client = client_of(scripted)
    call = (lambda: client.find_project("demo")) if method == "GET" else (
        lambda: client.import_tasks(7, [{"data": {"text": "x"}}]))
    if ok:
        call()
    else:
        with pytest.raises(LabelingError, match=rf"HTTP {plan[-1] if calls > 1 else plan[0]}"):
            call()
    assert len([c for c in scripted.calls if c[1] == path]) == calls


def test_legacy_token_sends_token_header_and_never_refreshes(scripted):
    scripted.plan["/api/projects/"] = [401]
    client = client_of(scripted, LEGACY)
    with pytest.raises(LabelingError, match=r"refused the API token \(HTTP 401") as err:
        client.find_project("demo")
    assert scripted.issued == 0 and scripted.calls == [("GET", "/api/projects/", f"Token {LEGACY}")]
    assert LEGACY not in str(err.value) and "Personal Access Token" in str(err.value)


def test_connection_errors_are_retried_until_the_server_answers():
    """Nothing listens on the port for the first 0.3 s; the retries (after 0, 1 and 2 s) reach it once it does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Script)
    port = server.server_address[1]
    server.server_close()  # the port is free again: connections are refused
    late = {}

    def come_up():
        time.sleep(0.3)
        late["server"] = srv = ThreadingHTTPServer(("127.0.0.1", port), Script)
        srv.calls, srv.issued, srv.plan = [], 0, {"/api/projects/": [200]}
        srv.serve_forever()

    threading.Thread(target=come_up, daemon=True).start()
    client = LabelStudio(f"http://127.0.0.1:{port}", LEGACY, timeout=5, retries=4, backoff=0.5)
    try:
        assert client.find_project("demo") is None
        assert late["server"].calls == [("GET", "/api/projects/", f"Token {LEGACY}")]
    finally:
        late["server"].shutdown()
        late["server"].server_close()
