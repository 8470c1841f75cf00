"""The predictor as a real process on 127.0.0.1, driven by real clients.

The official ``openai`` client for generation, kserve's ``InferenceRESTClient`` for v2,
plain HTTP for admin, feedback and the bounded load test. Every server is stopped by
its PID in the fixture's teardown.
"""

import asyncio
import json
import time

import httpx
import openai
import pytest
from helpers.adapters import LABELS, make_lora_adapter
from helpers.predictor import predictor

pytestmark = pytest.mark.e2e
TOKEN = "e2e-admin-token-0123456789abcdef"
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def lm_server(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-lm")
    adapters = {name: make_lora_adapter(tiny_causal_lm, root / name, seed=i + 1)
                for i, name in enumerate(["bot-a", "bot-b"])}
    (root / "token").write_text(TOKEN)
    args = ["--base", str(tiny_causal_lm), "--log-dir", str(root / "logs"), "--admin-token-file", str(root / "token"),
            "--adapter-root", str(root),
            "--max-body-bytes", str(BODY_LIMIT), "--max-new-tokens-limit", "64", "--max-batch-size", "8",
            "--max-batch-wait-ms", "5"]
    for name, path in adapters.items():
        args += ["--adapter", f"{name}={path}"]
    with predictor(args, root) as url:
        yield url, root


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_picks_the_adapter_by_model(lm_server):
    url, _ = lm_server
    client = _openai(url)
    assert {m.id for m in client.models.list()} == {"base", "bot-a", "bot-b"}
    texts = {}
    for model in ("base", "bot-a", "bot-b"):
        done = client.completions.create(model=model, prompt="What is AI?", max_tokens=8)
        assert done.model == model and done.usage.completion_tokens <= 8
        texts[model] = done.choices[0].text
    assert len(set(texts.values())) == 3  # three different models answered
    chat = client.chat.completions.create(model="bot-a", max_tokens=6,
                                          messages=[{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "How are you?"}])
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")


def test_openai_client_sees_4xx_errors_with_messages(lm_server):
    client = _openai(lm_server[0])
    with pytest.raises(openai.NotFoundError, match="model 'ghost' is not served; served models: base, bot-a, bot-b"):
        client.completions.create(model="ghost", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="`max_tokens` must be between 1 and 64, got 65"):
        client.completions.create(model="bot-a", prompt="hi", max_tokens=65)
    with pytest.raises(openai.BadRequestError, match="`n` must be between 1 and 4, got 5"):
        client.chat.completions.create(model="bot-a", n=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="`response_format` is not supported by this predictor"):
        client.chat.completions.create(model="bot-a", response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "hi"}])


def test_feedback_reaches_the_payload_log_and_metrics(lm_server):
    url, root = lm_server
    done = _openai(url).chat.completions.create(model="bot-b", max_tokens=4,
                                                messages=[{"role": "user", "content": "Tell me a joke."}])
    response = httpx.post(f"{url}/v1/feedback", json={"id": done.id, "rating": "up", "correction": None})
    assert response.status_code == 202
    records = [json.loads(x) for x in (root / "logs" / "payloads.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["id"] == done.id]
    assert [r["type"] for r in logged] == ["request", "feedback"]
    assert logged[0]["adapter"] == "bot-b" and logged[0]["endpoint"] == "/openai/v1/chat/completions"
    assert logged[0]["response"]["choices"][0]["message"]["content"] == done.choices[0].message.content
    metrics = httpx.get(f"{url}/metrics").text
    assert 'aicd_feedback_total{adapter="bot-b",rating="up"}' in metrics


def test_admin_adds_and_removes_an_adapter_without_restart(lm_server, tiny_causal_lm):
    url, root = lm_server
    path = make_lora_adapter(tiny_causal_lm, root / "bot-c", seed=7)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{url}/v1/admin/adapters", json={"name": "bot-c", "uri": str(path)}).status_code == 401
    assert httpx.post(f"{url}/v1/admin/adapters", json={"name": "bot-c", "uri": str(path)},
                      headers={"authorization": "Bearer nope"}).status_code == 403
    added = httpx.post(f"{url}/v1/admin/adapters", json={"name": "bot-c", "uri": str(path)}, headers=auth, timeout=60)
    assert added.status_code == 201, added.text
    client = _openai(url)
    assert client.completions.create(model="bot-c", prompt="Hi", max_tokens=3).model == "bot-c"
    assert httpx.get(f"{url}/v2/models/bot-c/ready").status_code == 200
    assert httpx.delete(f"{url}/v1/admin/adapters/bot-c", headers=auth).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="bot-c", prompt="Hi", max_tokens=3)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


# -- bounded load test: valid, oversized and malformed requests, every status checked ----------
def _load_plan(count: int) -> list[tuple[str, dict, int]]:
    """(kind, request kwargs, expected status) in a fixed interleaving."""
    valid = {"json": {"model": "bot-a", "prompt": "What is your name?", "max_tokens": 8}}
    junk = [
        ("oversized", {"json": {"model": "bot-a", "prompt": "x" * (BODY_LIMIT + 1)}}, 413),
        ("malformed-json", {"content": b'{"model": "bot-a", "prompt": ', "headers": {"content-type":
                                                                                    "application/json"}}, 400),
        ("wrong-type", {"json": {"model": "bot-a", "prompt": 42}}, 400),
        ("max-tokens", {"json": {"model": "bot-a", "prompt": "hi", "max_tokens": 10_000}}, 400),
        ("unknown-model", {"json": {"model": "ghost", "prompt": "hi"}}, 404),
    ]
    return [("valid", valid, 200) if i % 2 == 0 else junk[(i // 2) % len(junk)] for i in range(count)]


async def _drive(url: str, plan, concurrency: int, budget_s: float) -> list[tuple[str, int, int, float]]:
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results = []
    deadline = time.monotonic() + budget_s

    async def worker(client: httpx.AsyncClient):
        while not queue.empty() and time.monotonic() < deadline:
            kind, kwargs, expected = queue.get_nowait()
            start = time.perf_counter()
            response = await client.post(f"{url}/openai/v1/completions", **kwargs)
            results.append((kind, expected, response.status_code, time.perf_counter() - start))

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(concurrency))), budget_s + 60)
    return results


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_bounded_load_mixing_valid_oversized_and_malformed(lm_server):
    url, _ = lm_server
    chunked = httpx.post(f"{url}/openai/v1/completions", content=(b"x" * 8192 for _ in range(16)))
    assert chunked.status_code == 413  # no Content-Length: counted while streaming

    valid_only = [p for p in _load_plan(80) if p[0] == "valid"]
    before = asyncio.run(_drive(url, valid_only, 4, 60))
    mixed = asyncio.run(_drive(url, _load_plan(160), 8, 90))
    after = asyncio.run(_drive(url, valid_only, 4, 60))
    assert (len(before), len(mixed), len(after)) == (40, 160, 40), "the bounded run did not finish in its budget"
    wrong = [(kind, expected, got) for kind, expected, got, _ in mixed if expected != got]
    assert not wrong, wrong
    assert {kind for kind, *_ in mixed} == {"valid", "oversized", "malformed-json", "wrong-type", "max-tokens",
                                            "unknown-model"}
    # The same valid traffic (4 in flight) with as much junk beside it: junk is refused cheaply
    # and never queues for the model, so the valid requests' p99 stays within 2x of their p99
    # without junk (the worse of the runs before and after, plus 0.5 s for a noisy shared machine).
    unloaded = max(_p99([t for *_, t in before]), _p99([t for *_, t in after]))
    loaded = _p99([t for kind, _, _, t in mixed if kind == "valid"])
    assert loaded <= 2 * unloaded + 0.5, (loaded, unloaded)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'aicd_requests_total{adapter="unknown",code="413"}' in metrics
    assert 'aicd_requests_total{adapter="bot-a",code="400"}' in metrics


def test_classifier_answers_kserve_v2_client(tiny_encoder, tmp_path):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    adapter = make_lora_adapter(tiny_encoder, tmp_path / "sentiment", "text-classification", LABELS, seed=3)
    args = ["--base", str(tiny_encoder), "--task", "text-classification", "--adapter", f"sentiment={adapter}",
            "--labels", ",".join(LABELS)]
    with predictor(args, tmp_path) as url:
        labels, errors = asyncio.run(_v2_calls(url, InferenceRESTClient, InferInput, InferRequest, RESTConfig))
    assert len(labels) == 2 and set(labels) <= set(LABELS)
    assert errors == [400, 404]


async def _v2_calls(url, InferenceRESTClient, InferInput, InferRequest, RESTConfig):
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    try:
        assert await client.is_server_ready(url) and await client.is_model_ready(url, "sentiment")
        request = InferRequest(model_name="sentiment", infer_inputs=[
            InferInput("text", [2], "BYTES", ["This drug worked wonders.", "Awful side effects."])])
        response = await client.infer(url, request, model_name="sentiment")
        labels = response.outputs[0].data
        errors = []
        for name, data, dtype in (("sentiment", [1, 2], "INT32"), ("ghost", ["x"], "BYTES")):
            bad = InferRequest(model_name=name, infer_inputs=[InferInput("text", [len(data)], dtype, data)])
            try:
                await client.infer(url, bad, model_name=name)
            except httpx.HTTPStatusError as err:
                errors.append(err.response.status_code)
        return labels, errors
    finally:
        await client.close()


# -- served is what was gated: the predictor run with the flags delivery renders ---------------------------
SHOTS = (("What is AI?", "A field of computer science."), ("Hi!", "Hello, how can I help?"))
QUESTIONS = ["How do I reset my password?", "Where is my order?"]


@pytest.mark.parametrize("template", [None, "### Question: {instruction}\n### Answer:"])
def test_the_served_answer_is_the_evaluated_answer(tiny_causal_lm, support_bot_spec, tmp_path, template):
    """A few-shot base champion with the spec's system prompt (and a template): the predictor started with
    the arguments isvc.predictor_args renders answers each instruction with exactly the evaluation
    backend's prompt tokens and greedy answer, without the client sending the system prompt or shots."""
    from aicd.components.delivery import isvc
    from aicd.components.evaluation.backends import CausalLMBackend
    from aicd.components.models import load_causal_lm
    from aicd.components.spec import parse_spec

    spec = parse_spec(support_bot_spec)
    assert spec.task.system_prompt
    base = str(tiny_causal_lm)
    ref = isvc.ModelRef(isvc.base_model_id(base, "few-shot-2", SHOTS), base, prompt_template=template,
                        mode="few-shot-2", shots=SHOTS)
    model, tokenizer, _ = load_causal_lm(base)
    backend = CausalLMBackend(model_info={}, model=model, tokenizer=tokenizer, template=template,
                              system=spec.task.system_prompt, shots=SHOTS, max_new_tokens=8)
    expected = backend.predict(QUESTIONS).texts
    special = template is not None
    prompt_tokens = [len(tokenizer(backend.example_prompt(q), add_special_tokens=special)["input_ids"])
                     for q in QUESTIONS]
    name = spec.delivery.serving.name
    with predictor(isvc.predictor_args(spec, ref), tmp_path) as url:
        client = _openai(url)
        for question, answer, tokens in zip(QUESTIONS, expected, prompt_tokens):
            chat = client.chat.completions.create(model=name, max_tokens=8,
                                                  messages=[{"role": "user", "content": question}])
            assert chat.usage.prompt_tokens == tokens
            assert chat.choices[0].message.content.strip() == answer
            if template is not None:  # the completions endpoint formats the raw prompt the same way
                done = client.completions.create(model=name, prompt=question, max_tokens=8)
                assert done.usage.prompt_tokens == tokens and done.choices[0].text.strip() == answer
