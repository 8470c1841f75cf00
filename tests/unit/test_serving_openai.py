"""The OpenAI routes' answers in process (tiny model through the real ASGI app): choices, n, echo and
logprobs shapes, exact usage, streaming events and their metrics, /models with digests."""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from helpers.adapters import make_lora_adapter

from aicd.components.serving.config import ServeConfig
from aicd.components.serving.server import build_app
from aicd.components.serving.service import Service

CHAT = [{"role": "user", "content": "What is AI?"}]


@pytest.fixture(scope="module")
def api(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-openai")
    adapter = make_lora_adapter(tiny_causal_lm, root / "a1", seed=1)
    service = Service(ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(adapter)}, max_new_tokens_limit=32,
                                  max_batch_wait_ms=1, max_n=3, log_dir=root / "logs"))
    asyncio.run(service.load_async())
    with TestClient(build_app(service, load=False)) as client:
        yield client, service


def _post(client, route: str, **body) -> dict:
    response = client.post(f"/openai/v1/{route}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _events(client, route: str, **body) -> list:
    with client.stream("POST", f"/openai/v1/{route}", json={**body, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    blocks = [b for b in raw.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks) and blocks[-1] == "data: [DONE]"
    return [json.loads(b[6:]) for b in blocks[:-1]]


def test_n_choices_per_prompt_with_exact_usage(api):
    client, service = api
    prompts = ["What is AI?", "How are you?"]
    body = _post(client, "completions", model="a1", prompt=prompts, max_tokens=5, n=3, temperature=1.0, seed=11,
                 logprobs=0)
    assert [c["index"] for c in body["choices"]] == list(range(6))
    prompt_tokens = sum(len(service.engine.tokenizer(p)["input_ids"]) for p in prompts)
    generated = [len(c["logprobs"]["tokens"]) for c in body["choices"]]
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == sum(generated) and all(g > 0 for g in generated)
    for first in (0, 3):  # the n seeded choices of one prompt really differ
        assert len({c["text"] for c in body["choices"][first:first + 3]}) > 1, body["choices"]
    again = _post(client, "completions", model="a1", prompt=prompts, max_tokens=5, n=3, temperature=1.0, seed=11,
                  logprobs=0)
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]
    assert body["usage"]["total_tokens"] == prompt_tokens + body["usage"]["completion_tokens"]


def test_a_seed_at_the_top_of_its_range_samples_every_choice(api):
    client, _ = api
    body = _post(client, "completions", model="a1", prompt="What is AI?", max_tokens=4, n=2, temperature=1.0,
                 seed=(1 << 64) - 1)
    assert len(body["choices"]) == 2 and all(c["finish_reason"] for c in body["choices"])


def _refused(client, route: str, **body) -> str:
    response = client.post(f"/openai/v1/{route}", json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


def test_chat_refuses_max_tokens_and_max_completion_tokens_that_differ(api):
    client, _ = api
    message = _refused(client, "chat/completions", model="a1", messages=CHAT, max_tokens=3, max_completion_tokens=5)
    assert message == "`max_tokens` (3) and `max_completion_tokens` (5) differ; send one of them"
    body = _post(client, "chat/completions", model="a1", messages=CHAT, max_tokens=2, max_completion_tokens=2,
                 logprobs=True)
    assert body["usage"]["completion_tokens"] <= 2


def test_sampling_fields_without_temperature_are_refused_by_name(api):
    client, _ = api
    message = _refused(client, "completions", model="a1", prompt="Hi", n=3, top_p=0.9, seed=7)
    assert message.startswith("`n` is 3 but decoding is greedy") and "set temperature > 0" in message
    message = _refused(client, "chat/completions", model="a1", messages=CHAT, top_p=0.9, temperature=0)
    assert message.startswith("`top_p` is 0.9 but decoding is greedy") and "set temperature > 0" in message
    _post(client, "completions", model="a1", prompt="Hi", max_tokens=2, seed=7)  # greedy is deterministic anyway


def test_usage_counts_the_tokens_of_the_logprobs(api):
    client, _ = api
    body = _post(client, "completions", model="base", prompt="Do you like sports?", max_tokens=7, logprobs=2)
    (choice,) = body["choices"]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == body["usage"]["completion_tokens"] == len(lp["token_logprobs"])
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
    assert all(len(top) <= 2 and max(top.values()) >= lp_ for top, lp_ in zip(lp["top_logprobs"],
                                                                             lp["token_logprobs"]))


def test_echo_with_token_ids_returns_prompt_logprobs_as_lm_eval_reads_them(api):
    client, service = api
    ids = service.engine.tokenizer("What is AI? Artificial intelligence")["input_ids"]
    body = _post(client, "completions", model="a1", prompt=[ids], max_tokens=1, logprobs=1, echo=True,
                 temperature=0, seed=1234)
    lp = body["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
    assert lp["top_logprobs"][0] is None and all(isinstance(x, float) for x in lp["token_logprobs"][1:])
    assert body["choices"][0]["text"].startswith(service.engine.tokenizer.decode(ids))
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}
    zero = _post(client, "completions", model="a1", prompt="What is AI?", max_tokens=0, logprobs=0, echo=True)
    assert zero["choices"][0]["text"] == "What is AI?" and zero["usage"]["completion_tokens"] == 0


def test_chat_logprobs_have_the_chat_shape(api):
    client, _ = api
    body = _post(client, "chat/completions", model="a1", messages=CHAT, max_tokens=4, logprobs=True, top_logprobs=3)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    assert all(len(e["top_logprobs"]) == 3 for e in content)
    # a byte-level token may hold part of a character: its bytes, joined, make the answer
    answer = bytes(b for e in content for b in e["bytes"]).decode("utf-8", errors="replace")
    assert body["choices"][0]["message"]["content"] == answer


def test_a_stream_adds_up_to_the_plain_answer_and_reports_usage(api):
    client, service = api
    plain = _post(client, "chat/completions", model="a1", messages=CHAT, max_tokens=8)
    events = _events(client, "chat/completions", model="a1", messages=CHAT, max_tokens=8,
                     stream_options={"include_usage": True})
    chunks, last = events[:-1], events[-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[0]["object"] == "chat.completion.chunk"
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert last["choices"] == [] and last["usage"] == plain["usage"]
    logged = [json.loads(line) for line in (service.payloads.path).read_text().splitlines()]
    (record,) = [r for r in logged if r["id"] == last["id"]]  # the stream, as the answer it adds up to
    assert record["response"]["choices"][0]["message"] == {"role": "assistant",
                                                           "content": plain["choices"][0]["message"]["content"]}
    assert record["response"]["usage"] == plain["usage"] and record["response"]["streamed"] is True
    metrics = client.get("/metrics").text
    assert 'aicd_time_to_first_token_seconds_count{adapter="a1"}' in metrics


def test_a_completions_stream_with_n_choices(api):
    client, _ = api
    events = _events(client, "completions", model="base", prompt="Tell me a joke.", max_tokens=6, n=2,
                     temperature=0.9, seed=5)
    texts = {0: "", 1: ""}
    for event in events:
        (choice,) = event["choices"]
        texts[choice["index"]] += choice["text"]
    plain = _post(client, "completions", model="base", prompt="Tell me a joke.", max_tokens=6, n=2,
                  temperature=0.9, seed=5)
    assert [texts[0], texts[1]] == [c["text"] for c in plain["choices"]]
    assert sum(e["choices"][0]["finish_reason"] is not None for e in events) == 2


def test_models_lists_the_base_and_adapters_with_their_digests(api):
    client, service = api
    data = client.get("/openai/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["base", "a1"]
    assert data[1]["digest"] == service.engine.adapters["a1"].digest and data[1]["parent"] == "base"
    assert data[0]["digest"] == service.engine.base_digest and data[0]["digest"].startswith("sha256:")


def test_echo_returns_and_scores_what_the_client_sent_not_the_template(tiny_causal_lm, tmp_path):
    from aicd.components.serving.prompts import PromptSettings

    service = Service(ServeConfig(base=str(tiny_causal_lm), max_new_tokens_limit=8, max_batch_wait_ms=1,
                                  log_dir=tmp_path / "logs",
                                  prompt=PromptSettings(template="### Secret house style\n{instruction}\n###")))
    asyncio.run(service.load_async())
    with TestClient(build_app(service, load=False)) as client:
        body = _post(client, "completions", model="base", prompt="What is AI?", max_tokens=0, logprobs=0, echo=True)
        plain = _post(client, "completions", model="base", prompt="What is AI?", max_tokens=1)
    sent = service.engine.tokenizer("What is AI?")["input_ids"]
    assert body["choices"][0]["text"] == "What is AI?" and "Secret" not in "".join(body["choices"][0]["logprobs"]
                                                                                       ["tokens"])
    assert body["usage"]["prompt_tokens"] == len(sent) == len(body["choices"][0]["logprobs"]["tokens"])
    assert plain["usage"]["prompt_tokens"] > len(sent)  # without echo the template still applies


def test_a_generated_eos_is_counted_with_its_logprobs_entry_and_no_text(api):
    """lm-eval's echo + max_tokens 1 + logprobs 1 reads token_logprobs[ctxlen:-1]: one generated entry, EOS or not."""
    from aicd.components.serving.decoding import GenItem, GenResult, Sampling, TokenLogprob
    from aicd.components.serving.openai_api import chat_prompt
    from aicd.components.serving.openai_response import completion_logprobs, token_bytes

    client, service = api
    engine = service.engine
    ids = engine.tokenizer("What is AI?")["input_ids"]
    text, special = chat_prompt({"messages": CHAT}, service, "base")
    chat_ids = engine.tokenizer(text, add_special_tokens=special)["input_ids"]
    greedy = engine.generate(None, [GenItem(p, 1, sampling=Sampling(logprobs=0)) for p in (ids, chat_ids)])
    core = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    saved = core.generation_config.eos_token_id
    core.generation_config.eos_token_id = [g.tokens[0].token for g in greedy]  # both prompts now stop at once
    try:
        echo = _post(client, "completions", model="base", prompt=[ids], max_tokens=1, logprobs=1, echo=True)
        chat = _post(client, "chat/completions", model="base", messages=CHAT, max_tokens=1, logprobs=True)
    finally:
        core.generation_config.eos_token_id = saved
    (choice,) = echo["choices"]
    assert choice["finish_reason"] == "stop" and echo["usage"]["completion_tokens"] == 1
    assert len(choice["logprobs"]["token_logprobs"]) == len(ids) + 1  # the prompt's entries, then the EOS's
    assert choice["text"] == engine.tokenizer.decode(ids)  # the EOS is not in the text
    content = chat["choices"][0]["logprobs"]["content"]
    assert chat["choices"][0]["finish_reason"] == "stop" and len(content) == chat["usage"]["completion_tokens"] == 1
    assert chat["choices"][0]["message"]["content"] == ""
    # the real EOS (a special token) reads as no text and no bytes, so pieces and bytes still add up to the text
    eos = engine.tokenizer.eos_token_id
    assert completion_logprobs(engine.tokenizer, GenResult("", 1, "stop", (TokenLogprob(eos, -0.1),)))["tokens"] == [""]
    assert token_bytes(engine.tokenizer, eos) == []


def test_a_stream_the_client_abandons_cancels_its_rows():
    """The streaming body's finally sets the rows' cancel event, which the decode loop checks each step."""
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    from aicd.components.serving.decoding import GenItem
    from aicd.components.serving.openai_api import _completion_chunk, _stream
    from aicd.components.serving.openai_request import options

    seen: list[GenItem] = []

    async def generate(name, items):
        seen.extend(items)
        items[0].sink("a piece", None)
        await asyncio.sleep(30)  # the model thread would still be decoding

    service = SimpleNamespace(label_of=lambda name: name, metrics=MagicMock(), generate=generate)
    opts = options({"model": "base", "stream": True}, "completions", 16, 1)

    async def abandon():
        response = _stream(service, "base", [GenItem([1, 2], 8)], {"id": "x"}, _completion_chunk, opts, 2)
        body = response.body_iterator
        first = await body.__anext__()
        assert not seen[0].cancel.is_set()
        await body.aclose()  # what the server does when the client disconnects
        return first

    assert b"a piece" in asyncio.run(abandon())
    assert seen[0].cancel.is_set()
