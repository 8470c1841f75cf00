"""Continuous batching on a tiny real model: rows that join a running batch between steps (of any
adapter) answer as they would alone, a row is answered the moment it stops, and the batcher hands
waiting requests of the running key to the batch but never starves another key."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.adapters import make_lora_adapter

from aicd.components.serving.batching import ContinuousBatcher
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.decoding import GenItem, Sampling
from aicd.components.serving.engine import Engine, Job

PROMPTS = ["What is AI?", "Tell me a joke about a computer and a doctor.", "How are you?", "Hello there, friend"]


@pytest.fixture(scope="module")
def engine(tiny_causal_lm, tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("continuous")
    adapters = {name: make_lora_adapter(tiny_causal_lm, root / name, seed=seed)
                for name, seed in (("a1", 1), ("a2", 2))}
    engine = Engine(ServeConfig(base=str(tiny_causal_lm), adapters={k: str(v) for k, v in adapters.items()}))
    engine.load_base()
    for name, path in adapters.items():
        engine.attach(engine.verify(name, str(path)))
    return engine


def _item(engine: Engine, text: str, max_tokens: int, **sampling) -> GenItem:
    return GenItem(engine.tokenizer(text)["input_ids"], max_tokens, sampling=Sampling(**sampling))


def _recorded(answers: dict, order: list, key):
    def finish(result):
        answers[key] = result
        order.append(key)
    return finish


@pytest.mark.parametrize("tags", [(None, None, None), (None, "a1", "a2")])
def test_rows_joining_between_steps_answer_as_alone(engine, tags):
    """The first row starts alone; one row joins at step 2 and one at step 5, each with its own adapter."""
    items = [_item(engine, p, 9, logprobs=0) for p in PROMPTS[:3]]
    answers, order, calls = {}, [], []
    later = {2: [Job(tags[1], items[1], _recorded(answers, order, 1))],
             5: [Job(tags[2], items[2], _recorded(answers, order, 2))]}

    def more(room: int) -> list[Job]:
        calls.append(room)
        return later.pop(len(calls), [])

    engine.run_jobs([Job(tags[0], items[0], _recorded(answers, order, 0))], more, max_rows=8)
    assert not later, "every joiner was taken"
    alone = [engine.generate(tag, [item])[0] for tag, item in zip(tags, items)]
    for i, expected in enumerate(alone):
        assert answers[i].text == expected.text and answers[i].completion_tokens == expected.completion_tokens
        assert [e.token for e in answers[i].tokens] == [e.token for e in expected.tokens]
        assert [e.logprob for e in answers[i].tokens] == pytest.approx([e.logprob for e in expected.tokens], abs=1e-4)
    assert order == [0, 1, 2]  # each answered when it stopped: 9 tokens after it joined


def test_a_short_row_is_answered_before_the_long_one_ends_and_leaves_the_batch(engine):
    items = [_item(engine, PROMPTS[0], 12), _item(engine, PROMPTS[1], 2), _item(engine, PROMPTS[2], 0)]
    answers, order = {}, []
    sizes = []

    def more(room: int) -> list[Job]:
        sizes.append(8 - room)  # active rows at each step
        return []

    engine.run_jobs([Job(None, item, _recorded(answers, order, i)) for i, item in enumerate(items)], more, 8)
    assert order == [2, 1, 0]
    assert answers[2].text == "" and answers[2].completion_tokens == 0
    # the finished rows left at once: most steps decode the long row alone; at the end it asks for more work
    assert sizes[0] == 2 and sizes.count(1) >= 9 and sizes[-1] == 0
    assert [answers[i].text for i in range(3)] == [r.text for r in engine.generate(None, items)]


def test_no_row_joins_beyond_the_batch_limit(engine):
    items = [_item(engine, p, 4) for p in PROMPTS]
    answers, order, rooms = {}, [], []
    waiting = [Job(None, item, _recorded(answers, order, i)) for i, item in enumerate(items[1:], start=1)]

    def more(room: int) -> list[Job]:
        rooms.append(room)
        taken, waiting[:] = waiting[:room], waiting[room:]
        return taken

    engine.run_jobs([Job(None, items[0], _recorded(answers, order, 0))], more, max_rows=2)
    assert sorted(answers) == [0, 1, 2, 3]
    assert all(0 < r <= 2 for r in rooms) and 1 in rooms  # asked only when a row is free, never beyond 2 rows


def _fake_runner(log: list):
    """A model thread stand-in for the batcher alone: runs rows one step per 20 ms, taking joiners."""

    def run(key, entries, more):
        active = [(item, finish, 0) for item, finish in entries]
        log.append(("start", key, [item for item, _ in entries]))
        while active:
            time.sleep(0.02)
            joined = more(4 - len(active))
            log.extend(("join", key, item) for item, _ in joined)
            active += [(item, finish, 0) for item, finish in joined]
            next_active = []
            for item, finish, steps in active:
                if steps + 1 >= 3:
                    finish(f"{key}:{item}")
                else:
                    next_active.append((item, finish, steps + 1))
            active = next_active
    return run


def test_the_batcher_hands_late_requests_to_the_running_batch():
    log: list = []
    batcher = ContinuousBatcher(_fake_runner(log), ThreadPoolExecutor(1), max_batch_size=4, max_wait_s=0.0)

    async def go():
        first = asyncio.ensure_future(batcher.submit("k", "a"))
        await asyncio.sleep(0.03)
        late = await asyncio.gather(batcher.submit("k", "b"), batcher.submit("k", "c"))
        return [await first, *late]

    assert asyncio.run(go()) == ["k:a", "k:b", "k:c"]
    assert batcher.batch_sizes == [1] and batcher.joined == 2
    assert [e[0] for e in log] == ["start", "join", "join"]


def test_the_running_batch_takes_no_joiners_while_another_key_waits():
    log: list = []
    batcher = ContinuousBatcher(_fake_runner(log), ThreadPoolExecutor(1), max_batch_size=4, max_wait_s=0.0)

    async def go():
        first = asyncio.ensure_future(batcher.submit("k", "a"))
        await asyncio.sleep(0.03)
        other = asyncio.ensure_future(batcher.submit("other", "x"))
        await asyncio.sleep(0.001)
        same = asyncio.ensure_future(batcher.submit("k", "b"))
        return await asyncio.gather(first, other, same)

    assert asyncio.run(go()) == ["k:a", "other:x", "k:b"]
    assert batcher.joined == 0 and [e[:2] for e in log] == [("start", "k"), ("start", "other"), ("start", "k")]


def test_a_broken_batch_fails_its_joined_requests_too():
    def run(key, entries, more):
        time.sleep(0.03)
        more(4)
        raise ValueError("the model broke")

    batcher = ContinuousBatcher(run, ThreadPoolExecutor(1), max_batch_size=4, max_wait_s=0.0)

    async def go():
        first = asyncio.ensure_future(batcher.submit("k", "a"))
        await asyncio.sleep(0.01)
        late = asyncio.ensure_future(batcher.submit("k", "b"))
        return await asyncio.gather(first, late, return_exceptions=True)

    results = asyncio.run(go())
    assert all(isinstance(r, ValueError) and "the model broke" in str(r) for r in results), results


def test_the_service_lets_a_late_request_join_and_answers_it_as_alone(tiny_causal_lm, engine):
    """A real Service: a second request arriving while the first decodes joins its batch (mixed adapters)."""
    from aicd.components.serving.service import Service

    service = Service(ServeConfig(base=str(tiny_causal_lm), mix_adapters=True, max_batch_wait_ms=0), engine=engine)
    service.ready = True
    first = _item(engine, PROMPTS[1], 24)
    second = _item(engine, PROMPTS[0], 6)
    started, submitted = threading.Event(), threading.Event()

    def hold(text, result):  # the model thread waits, mid-batch, until the second request is queued
        started.set()
        submitted.wait(10)
    first = GenItem(first.prompt_ids, first.max_tokens, sink=hold)

    async def both():
        try:
            one = asyncio.ensure_future(service.generate("base", [first]))
            while not started.is_set():
                await asyncio.sleep(0.001)
            two = asyncio.ensure_future(service.generate("a1", [second]))
            await asyncio.sleep(0)  # the request is queued now
            submitted.set()
            return await one, await two
        finally:
            submitted.set()
            await service.close()

    (long,), (short,) = asyncio.run(both())
    assert service.generation.batch_sizes == [1] and service.generation.joined == 1
    assert short.text == engine.generate("a1", [second])[0].text
    assert long.text == engine.generate(None, [first])[0].text


def test_stacked_lora_rows_equal_peft_mixed_batches(engine):
    """mixed_lora.py's two batched products per layer give the logits of peft's per-adapter sub-batches."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    from aicd.components.serving.mixed_lora import StackedLora, supported

    tags = [None, "a1", "a2", "a1"]
    enc = engine.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert supported(engine.model, list(engine.adapters))
    with torch.inference_mode():
        with engine.model._enable_peft_forward_hooks(adapter_names=["__base__" if t is None else t for t in tags]):
            peft_logits = engine.model(**enc).logits
        with StackedLora(engine.model).rows(tags, list(engine.adapters)):
            stacked = engine.model(**enc).logits
        with engine._selected("a1"):
            alone = engine.model(**enc).logits
    assert torch.allclose(stacked, peft_logits, atol=1e-5), (stacked - peft_logits).abs().max()
    assert not torch.allclose(stacked[0], stacked[1], atol=1e-3)  # the rows really use different weights
    layers = [m for m in engine.model.modules() if isinstance(m, LoraLinear)]
    assert layers and not any(m._forward_hooks or m.disable_adapters for m in layers)  # all undone afterwards
    assert torch.allclose(stacked[1], alone[1], atol=1e-5) and torch.allclose(stacked[3], alone[3], atol=1e-5)


def test_a_cache_that_cannot_take_rows_keeps_its_shape_and_answers_early(engine, monkeypatch):
    """Caches other than plain growing layers (sliding windows): no joins, finished rows stay (fed padding)
    but are answered as they stop; the answers are those of the plain batch."""
    from aicd.components.serving import running

    items = [_item(engine, PROMPTS[0], 10), _item(engine, PROMPTS[1], 3), _item(engine, PROMPTS[2], 0)]
    expected = [r.text for r in engine.generate(None, items)]
    monkeypatch.setattr(running, "joinable", lambda past: False)
    answers, order, asked = {}, [], []

    def more(room: int) -> list[Job]:
        asked.append(room)
        return [Job(None, _item(engine, PROMPTS[3], 2), _recorded(answers, order, 9))]

    engine.run_jobs([Job(None, item, _recorded(answers, order, i)) for i, item in enumerate(items)], more, 8)
    assert order == [2, 1, 0] and not asked  # answered as they stopped; nobody was asked to join
    assert [answers[i].text for i in range(3)] == expected


def test_every_request_of_a_long_churning_batch_is_answered_once(engine):
    """Rows keep joining and leaving (freed rows' objects get reused): each job is answered exactly once."""
    items = [_item(engine, PROMPTS[i % len(PROMPTS)], 1 + (i * 7) % 6) for i in range(24)]
    calls: dict[int, int] = {}

    def recorder(i: int):
        return lambda result: calls.__setitem__(i, calls.get(i, 0) + 1)
    waiting = [Job(("a1", "a2", None)[i % 3], item, recorder(i)) for i, item in enumerate(items)]

    def more(room: int) -> list[Job]:
        taken, waiting[:] = waiting[:min(room, 2)], waiting[min(room, 2):]
        return taken

    engine.run_jobs(more(2), more, max_rows=4)
    assert calls == {i: 1 for i in range(24)}
