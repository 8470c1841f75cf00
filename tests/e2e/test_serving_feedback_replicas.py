"""Signed feedback across replicas: two real predictor processes behind a round-robin proxy.

Both predictors run on 127.0.0.1 with one signing key file (the Secret every replica
mounts) and one shared feedback-state folder (the payload-logs claim), each with its own
payload log. The proxy (a small threaded HTTP server in this test) alternates between
them, so with an odd number of responses every feedback reaches the replica that did NOT
serve the response, as behind a Service, a canary split or after a restart. Figures:
41 responses, 41 feedback posts all landing on the other replica, 0 lost; a forged id
and a replayed id are refused by either replica.
"""

import http.client
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from helpers.adapters import make_lora_adapter
from helpers.http_answers import send
from helpers.ports import free_port
from helpers.predictor import predictor

pytestmark = pytest.mark.e2e
RESPONSES = 41  # odd: feedback i goes to the other replica than request i


class RoundRobin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backends: list[int]):
        self.next = itertools.cycle(backends)
        self.lock = threading.Lock()
        self.hits: dict[int, int] = dict.fromkeys(backends, 0)
        super().__init__(("127.0.0.1", free_port()), _Forward)


class _Forward(BaseHTTPRequestHandler):
    def _forward(self) -> None:
        with self.server.lock:
            port = next(self.server.next)
            self.server.hits[port] += 1
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request(self.command, self.path, body=body, headers={k: v for k, v in self.headers.items()
                                                                   if k.lower() not in ("host", "connection")})
        reply = conn.getresponse()
        data = reply.read()
        send(self, reply.status, data, [(key, value) for key, value in reply.getheaders() if key.lower()
                                        not in ("content-length", "connection", "transfer-encoding", "date", "server")])
        conn.close()

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def replicas(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    adapter = make_lora_adapter(tiny_causal_lm, root / "a1", seed=1)
    (root / "key").write_text("feedback-signing-key-0123456789abcdef")
    common = ["--base", str(tiny_causal_lm), "--adapter", f"a1={adapter}", "--max-new-tokens-limit", "4",
              "--feedback-key-file", str(root / "key"), "--feedback-state-dir", str(root / "feedback-state"),
              "--max-batch-wait-ms", "1"]
    with predictor([*common, "--log-dir", str(root / "logs-0")], root) as first, \
            predictor([*common, "--log-dir", str(root / "logs-1")], root) as second:
        proxy = RoundRobin([int(first.rsplit(":", 1)[1]), int(second.rsplit(":", 1)[1])])
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{proxy.server_address[1]}", proxy, root
        finally:
            proxy.shutdown()
            proxy.server_close()


def _records(root, kind: str) -> list[tuple[int, dict]]:
    """(replica, record) of every ``kind`` record in both payload logs."""
    return [(i, r) for i in (0, 1) for line in (root / f"logs-{i}" / "payloads.jsonl").read_text().splitlines()
            if (r := json.loads(line))["type"] == kind]


def _wait_for_ids(root, kind: str, ids: list[str], timeout: float = 30.0) -> dict[str, int]:
    """id -> replica of the ``kind`` records, once every id is logged: the guard writes a request's record
    after its response went out, so a client can read the log a moment before the last line lands."""
    deadline = time.monotonic() + timeout
    while True:
        found = {r["id"]: i for i, r in _records(root, kind)}
        if set(ids) <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_41_feedback_posts_on_the_other_replica_are_all_recorded_and_forgeries_refused(replicas):
    url, proxy, root = replicas
    ids = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(RESPONSES):
            response = client.post("/openai/v1/completions", json={"model": "a1", "prompt": f"question {i}",
                                                                    "max_tokens": 2})
            assert response.status_code == 200, response.text
            ids.append(response.json()["id"])
        served = _wait_for_ids(root, "request", ids)
        assert set(served.values()) == {0, 1}  # both replicas answered
        for rid in ids:
            response = client.post("/v1/feedback", json={"id": rid, "rating": "up"})
            assert response.status_code == 202, response.text  # lands on the other replica: 0 lost
        _wait_for_ids(root, "feedback", ids)
        feedback = _records(root, "feedback")
        assert sorted(r["id"] for _, r in feedback) == sorted(ids) and {r["adapter"] for _, r in feedback} == {"a1"}
        landed = {r["id"]: i for i, r in feedback}
        assert all(landed[rid] != served[rid] for rid in ids)  # every one crossed replicas

        for _ in range(2):  # a replay is refused by either replica
            replay = client.post("/v1/feedback", json={"id": ids[0], "rating": "down"})
            assert replay.status_code == 409 and "already recorded" in replay.json()["error"]
        prefix, mac, label = ids[1].rsplit("_", 2)
        for forged in (f"{prefix}_{mac[::-1]}_{label}", f"{prefix}_{mac}_base", "made-up-id"):
            for _ in range(2):  # both replicas
                response = client.post("/v1/feedback", json={"id": forged, "rating": "down"})
                assert response.status_code == 403, response.text
    assert len(_records(root, "feedback")) == RESPONSES
    assert min(proxy.hits.values()) >= RESPONSES
