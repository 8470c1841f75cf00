"""evaluate_model against live endpoints: a real little HTTP server on 127.0.0.1 per test.

The server (http.server in a thread) answers like an OpenAI-compatible or KServe v2
endpoint, or with errors; it stands in for the aicd predictor, which has its own tests.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.data import causal_dataset, classification_dataset
from helpers.http_answers import send
from helpers.specs import small_spec

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.endpoints import endpoint_protocol
from aicd.components.evaluation.evaluate import evaluate_model

pytestmark = pytest.mark.e2e


def _handler(behaviour: str, seen: list):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            if behaviour == "500" or (behaviour == "fail-third" and len(seen) == 3):
                return self._send(500, b'{"error": "model crashed"}')
            if behaviour == "garbage":
                return self._send(200, b"<html>not json</html>")
            if "/v2/models/" in self.path:
                text = body["inputs"][0]["data"][0]
                label = "negative" if "awful" in text.lower() or "terrible" in text.lower() else "positive"
                return self._send(200, json.dumps({"outputs": [{"name": "label", "datatype": "BYTES",
                                                                "shape": [1], "data": [label]}]}).encode())
            if body.get("echo") and behaviour == "echo-window":  # an error that is no refusal of echo
                return self._send(400, b'{"error": {"message": "the prompt has 900 tokens: more than the window"}}')
            if body.get("echo"):  # like a server without prompt log-probabilities
                return self._send(400, b'{"error": {"message": "`echo` is not supported"}}')
            question = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
            answer = "I enjoy watching football." if "sports" in question.lower() else "I do not know."
            choice = {"message": {"role": "assistant", "content": answer}} if "messages" in body else {"text": answer}
            self._send(200, json.dumps({"choices": [choice], "usage": {"completion_tokens": 4}}).encode())

        def _send(self, code: int, payload: bytes):
            send(self, code, payload, [("Content-Type", "application/json")])
    return Handler


@pytest.fixture
def server():
    """Start a server with a given behaviour; yields (start(behaviour) -> base URL, requests seen)."""
    servers, seen = [], []

    def start(behaviour: str) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour, seen))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield start, seen
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/openai/v1/completions"])
def test_openai_endpoint_gives_a_complete_report(tmp_path, server, tiny_causal_lm, support_bot_spec, path):
    start, seen = server
    spec = small_spec(support_bot_spec, tiny_causal_lm)
    url = start("ok") + path
    report = evaluate_model(spec, causal_dataset(tmp_path / "data"), tmp_path / "eval", endpoint=url)
    assert report["complete"] and report["model"]["uri"] == url and report["probe"] is None
    ex = report["examples"]
    assert ex["predictions"][1] == "I enjoy watching football." and ex["scores"]["exact_match"][1] == 1.0
    assert report["metrics"]["exact_match"]["value"] == pytest.approx(1 / 6)
    assert "nll" not in report["metrics"]  # this endpoint refuses echo: answers, no likelihoods
    # 6 examples + 6 perturbed for the invariance check, all greedy, and the refused scoring request
    answers = [body for _, body in seen if not body.get("echo")]
    assert len(answers) == 12 and all(body["temperature"] == 0 for body in answers)
    assert [p for p, body in seen if body.get("echo")] == ["/openai/v1/completions"]
    assert report["system"]["tokens_per_second"] > 0


def test_kserve_v2_classification_endpoint(tmp_path, server, tiny_encoder, review_sentiment_spec):
    start, _ = server
    spec = small_spec(review_sentiment_spec, tiny_encoder)
    url = start("ok") + "/v2/models/review-sentiment/infer"
    report = evaluate_model(spec, classification_dataset(tmp_path / "data"), tmp_path / "eval", endpoint=url)
    # the server says negative for "awful"/"terrible" (2 of 2 negatives) and positive otherwise (2 of 4 others)
    assert report["metrics"]["accuracy"]["value"] == pytest.approx(4 / 6)
    assert report["metrics"]["recall/negative"]["value"] == 1.0
    assert report["behavioural"]["obvious-cases"]["pass_rate"] == 1.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("behaviour,message", [
    ("500", r"answered HTTP 500 for example 'q0'"),
    ("fail-third", r"answered HTTP 500 for example 'q2'"),
    ("garbage", r"gave a malformed openai-chat answer for example 'q0'"),
    ("down", r"did not answer for example 'q0'"),
    ("echo-window", r"answered HTTP 400 to the scoring request: 'the prompt has 900 tokens: more than the window'"),
])
def test_failing_endpoint_never_gives_a_partial_report(tmp_path, server, tiny_causal_lm, support_bot_spec,
                                                       behaviour, message):
    start, _ = server
    spec = small_spec(support_bot_spec, tiny_causal_lm)
    base = f"http://127.0.0.1:{_closed_port()}" if behaviour == "down" else start(behaviour)
    with pytest.raises(EvaluationError, match=message):
        evaluate_model(spec, causal_dataset(tmp_path / "data"), tmp_path / "eval",
                       endpoint=base + "/openai/v1/chat/completions")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("url,message", [
    ("ftp://x/v1/completions", "is not an http"),
    ("http://127.0.0.1:1/predict", "neither an OpenAI-compatible nor a KServe v2"),
])
def test_bad_endpoint_urls(url, message):
    with pytest.raises(EvaluationError, match=message):
        endpoint_protocol(url)


def test_classification_needs_a_v2_url(tmp_path, tiny_encoder, review_sentiment_spec):
    spec = small_spec(review_sentiment_spec, tiny_encoder)
    with pytest.raises(EvaluationError, match="text-classification is evaluated through KServe v2"):
        evaluate_model(spec, classification_dataset(tmp_path / "data"), tmp_path / "eval",
                       endpoint="http://127.0.0.1:1/openai/v1/completions")
