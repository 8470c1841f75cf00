"""Property-based test of the predictor's whole public surface: no client mistake gets a 500.

Hypothesis generates 1,000 examples of 10 requests each: 10,000 generated requests per run,
spread over every public route (OpenAI completions and chat, KServe v1 and v2, feedback,
admin list/add/remove). Bodies are well-typed (then one field is swapped for arbitrary
JSON), arbitrary JSON, deeply nested JSON (up to 2,000 levels) or raw bytes. Each
response must be 2xx or 4xx, JSON, without a traceback or an exception's text; and
``/metrics`` must count exactly the 4xx answers of inference routes as 4xx and none as 5xx.

Requests go through the real ASGI application (kserve's v1/v2 routers, the OpenAI and
admin routes, the guard middleware, the real tiny models), not a server process: 10,000
requests over loopback HTTP would spend most of the test's time in connection setup on
a shared 2-core machine, while the code under test is the same (tests/e2e/test_serving_e2e.py
runs the important paths against a real process). The run is derandomized (a fixed
sequence, so a failure reproduces) and bounded: no per-example deadline, a 600 s timeout.
"""

import asyncio
import json
import re
import threading

import httpx
import pytest
from helpers.adapters import LABELS, make_lora_adapter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicd.components.serving.config import ServeConfig
from aicd.components.serving.server import build_app
from aicd.components.serving.service import Service

TOKEN = "fuzz-admin-token-0123456789abcdef"
EXAMPLES, PER_EXAMPLE = 1_000, 10  # 10,000 generated requests
_LEAK = re.compile(r"Traceback|File \"|\b(Type|Key|Value|Attribute|Index|Recursion|UnicodeDecode|Assertion|Runtime)"
                   r"Error\b|\bpydantic_core\b")
INFERENCE = re.compile(r"^/openai/v1/(chat/)?completions$|^/v1/models/[^/]+:predict$|^/v2/models/[^/]+/infer$")


class _Client:
    """httpx over the ASGI app on one event loop in a thread: a tenth of TestClient's cost per request."""

    def __init__(self, app, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://predictor")

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(self.http.request(method, path, **kwargs), self.loop).result(60)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture(scope="module")
def apps(tiny_causal_lm, tiny_encoder, tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("serving-fuzz")
    (root / "token").write_text(TOKEN)
    lm = Service(ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(make_lora_adapter(
        tiny_causal_lm, root / "a1", seed=1))}, log_dir=root / "lm-logs", max_body_bytes=64 * 1024,
        max_new_tokens_limit=2, admin_token_file=root / "token", max_batch_wait_ms=0))
    cls = Service(ServeConfig(base=str(tiny_encoder), task="text-classification", adapters={"c1": str(
        make_lora_adapter(tiny_encoder, root / "c1", "text-classification", LABELS, seed=1))},
        log_dir=root / "cls-logs", max_body_bytes=64 * 1024, max_batch_wait_ms=0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared machine
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        apps = {}
        for key, service in (("lm", lm), ("cls", cls)):
            asyncio.run_coroutine_threadsafe(service.load_async(), loop).result(300)
            apps[key] = _Client(build_app(service, load=False), loop)
        yield apps
    finally:
        for service in (lm, cls):
            asyncio.run_coroutine_threadsafe(service.close(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        torch.set_num_threads(threads)


# -- strategies ---------------------------------------------------------------------------------
texts = st.text(max_size=40)
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | texts
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                        max_leaves=6)
names = st.sampled_from(["a1", "a1", "base", "c1", "ghost", ""]) | texts


@st.composite
def nested(draw):
    depth = draw(st.integers(1, 2_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return (opener * depth + "1" + closer * depth).encode()


def _mutated(draw, body: dict) -> dict:
    """A well-typed body, or the same with one field replaced by arbitrary JSON or dropped."""
    choice = draw(st.integers(0, 2))
    if choice == 0 or not body:
        return body
    key = draw(st.sampled_from(sorted(body)))
    if choice == 1:
        return {**body, key: draw(anything)}
    return {k: v for k, v in body.items() if k != key}


@st.composite
def completion(draw):
    prompt = draw(texts | st.lists(texts, min_size=1, max_size=3))
    body = {"model": draw(names), "prompt": prompt, "max_tokens": draw(st.integers(0, 2)),
            "temperature": draw(st.floats(-1, 3)), "stop": draw(st.none() | texts | st.lists(texts, max_size=5))}
    return _mutated(draw, body)


@st.composite
def chat(draw):
    content = texts | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                                      "text": texts}), max_size=2)
    messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "robot"])
                                               | anything, "content": content | anything}), max_size=3)
    body = {"model": draw(names), "messages": draw(messages), "max_tokens": draw(st.integers(0, 3)),
            "n": draw(st.integers(0, 2)), "stream": draw(st.booleans())}
    return _mutated(draw, body)


@st.composite
def v2(draw):
    data = draw(st.lists(texts | anything, min_size=0, max_size=3))
    tensor = {"name": draw(st.sampled_from(["text", "x"])),
              "datatype": draw(st.sampled_from(["BYTES", "INT32", "FP32"])),
              "shape": draw(st.sampled_from([[len(data)], [len(data), 1], [3], []]) | anything), "data": data}
    body = {"inputs": [_mutated(draw, tensor)],
            "outputs": draw(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities", "x"])}),
                                     max_size=2))}
    return _mutated(draw, body)


@st.composite
def request(draw):
    """(client, method, path, body bytes or None, headers)."""
    auth = draw(st.sampled_from([{}, {"authorization": f"Bearer {TOKEN}"}, {"authorization": "Bearer nope"},
                                 {"authorization": "Basic x"}]))
    route = draw(st.sampled_from(["completions", "chat", "v1", "v2", "feedback", "admin-list", "admin-add",
                                  "admin-remove"]))
    bodies = {
        "completions": completion(), "chat": chat(), "v1": st.fixed_dictionaries({"instances": anything}) | anything,
        "v2": v2(), "feedback": st.fixed_dictionaries({"id": texts | anything, "rating": st.sampled_from(["up", "down"])
                                                       | anything, "correction": st.none() | texts | anything}),
        "admin-add": st.fixed_dictionaries({"name": names, "uri": texts | st.sampled_from(["/", ".", "pvc://../x",
                                                                                          "pkg://os/../.."])}),
    }
    kind = draw(st.sampled_from(["typed", "typed", "json", "nested", "bytes"]))
    if kind == "typed" and route in bodies:
        raw = json.dumps(draw(bodies[route])).encode()
    elif kind == "json":
        raw = json.dumps(draw(anything)).encode()
    elif kind == "nested":
        raw = draw(nested())
    else:
        raw = draw(st.binary(max_size=60))
    client = "cls" if route in ("v1", "v2") else "lm"
    model = draw(st.sampled_from(["c1", "ghost", "base", "c%201"]))
    if route == "admin-list":
        return client, "GET", "/v1/admin/adapters", None, auth
    if route == "admin-remove":
        name = draw(st.text("abcz019%._-", min_size=1, max_size=12).filter(lambda n: n != "a1"))
        return client, "DELETE", f"/v1/admin/adapters/{name}", None, auth
    path = {"completions": "/openai/v1/completions", "chat": "/openai/v1/chat/completions",
            "v1": f"/v1/models/{model}:predict", "v2": f"/v2/models/{model}/infer", "feedback": "/v1/feedback",
            "admin-add": "/v1/admin/adapters"}[route]
    return client, "POST", path, raw, {**auth, "content-type": "application/json"}


def _counts(client: _Client) -> dict[str, float]:
    """aicd_requests_total summed by status class ("2xx", "4xx", "5xx")."""
    totals: dict[str, float] = {}
    for m in re.finditer(r'^aicd_requests_total\{adapter="[^"]*",code="(\d)\d\d"\} (\S+)$', client.get("/metrics").text,
                         re.M):
        totals[f"{m.group(1)}xx"] = totals.get(f"{m.group(1)}xx", 0.0) + float(m.group(2))
    return totals


@pytest.mark.timeout(900)
def test_10000_generated_requests_get_2xx_or_4xx_and_are_counted_as_such(apps):
    """10,000 generated requests (1,000 examples x 10) over all public routes: never a 5xx, never exception
    text, and /metrics counts the inference routes' 4xx answers as 4xx (and no 5xx)."""
    before = _counts(apps["lm"])
    seen = {"2xx": 0, "4xx": 0}
    sent = [0]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(request(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(batch):
        for client_name, method, path, raw, headers in batch:
            response = apps[client_name].request(method, path, content=raw, headers=headers)
            sent[0] += 1
            status = response.status_code
            assert 200 <= status < 300 or 400 <= status < 500, (method, path, raw[:200] if raw else raw, status,
                                                                 response.text[:500])
            if response.headers["content-type"].startswith("text/event-stream"):  # a chat request with stream
                assert status == 200 and path.endswith("/chat/completions"), (path, status)
                events = [line[len("data: "):] for line in response.text.splitlines() if line]
                assert events[-1] == "[DONE]", response.text[-200:]
                assert all(isinstance(json.loads(e), dict) for e in events[:-1]), response.text[:500]
            else:
                assert response.headers["content-type"].startswith("application/json"), (path, response.text[:200])
            assert not _LEAK.search(response.text), (path, raw[:200] if raw else raw, response.text[:500])
            if INFERENCE.match(path):
                seen[f"{status // 100}xx"] += 1

    check()
    after = _counts(apps["lm"])
    assert sent[0] == EXAMPLES * PER_EXAMPLE
    assert after.get("5xx", 0) == before.get("5xx", 0)
    assert after.get("4xx", 0) - before.get("4xx", 0) == seen["4xx"] > 1000
    assert after.get("2xx", 0) - before.get("2xx", 0) == seen["2xx"] > 10


REGRESSIONS = [  # each answered 500 with the exception's text before the schemas
    ("role of a wrong type", "/openai/v1/chat/completions", {"model": "a1", "messages": [{"role": [], "content": "x"}]},
     "`messages[0].role` must be the role system, user or assistant, got []"),
    ("deep nesting", "/openai/v1/completions", b'{"model": "a1", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "nests JSON more than 32 levels deep"),
    ("deep nesting on v1", "/v1/models/a1:predict", b"[" * 100_00 + b"]" * 100_00, "nests JSON more than 32 levels"),
]


@pytest.mark.parametrize("case, path, body, message", REGRESSIONS, ids=[c[0] for c in REGRESSIONS])
def test_one_line_requests_that_were_500s_are_400s(apps, case, path, body, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = apps["lm"].post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    assert message in response.text
