"""Faults around continuous batching (code review of the merged predictor): other work on the model
thread is not starved by steady generation traffic, a failing joiner does not kill the running rows,
shutdown stops a running batch, abandoned rows stop, and close() takes the batcher's lock."""

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict

import pytest
from helpers.adapters import make_lora_adapter

from aicd.components.errors import ServingError
from aicd.components.serving.batching import ContinuousBatcher, ModelThread, _Pending
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.decoding import GenItem
from aicd.components.serving.engine import Engine, Job
from aicd.components.serving.running import run_jobs
from aicd.components.serving.service import Service


def _steady_runner(run, steps_per_row: int = 3):
    """A model thread stand-in for the batcher alone: rows take ``steps_per_row`` steps of 5 ms; joiners
    are taken between steps (as running.run_jobs does). Counts the batches it ran in ``run``."""

    def runner(key, entries, more):
        run.append(key)
        active = [(finish, 0) for _, finish in entries]
        while active:
            time.sleep(0.005)
            active += [(finish, 0) for _, finish in more(8 - len(active))]
            for finish, _ in [(f, s) for f, s in active if s + 1 >= steps_per_row]:
                finish("done")
            active = [(f, s + 1) for f, s in active if s + 1 < steps_per_row]
    return runner


def test_a_running_batch_yields_the_model_thread_to_other_queued_work():
    """One generation request every 5 ms; work queued on the model thread at 0.1 s (a classification
    batch, an adapter removal) runs while the traffic still arrives, not only when it stops."""
    batches: list = []
    executor = ModelThread()
    batcher = ContinuousBatcher(_steady_runner(batches), executor, max_batch_size=8, max_wait_s=0.0)

    async def go():
        loop = asyncio.get_running_loop()
        other_done = asyncio.Event()
        traffic_ended_before: list[bool] = []
        requests = []

        async def other():
            await asyncio.sleep(0.1)
            await loop.run_in_executor(executor, lambda: "removed")
            other_done.set()

        async def traffic():
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and not other_done.is_set():
                requests.append(asyncio.ensure_future(batcher.submit("k", "row")))
                await asyncio.sleep(0.005)
            traffic_ended_before.append(not other_done.is_set())

        await asyncio.gather(other(), traffic())
        await asyncio.gather(*requests)
        await batcher.close()
        return traffic_ended_before[0]

    try:
        starved = asyncio.run(go())
    finally:
        executor.shutdown(wait=True)
    assert not starved, "the queued work ran only after 3 s of generation traffic had stopped"
    assert len(batches) >= 2  # the running batch drained, the other work ran, generation went on
    assert not executor.others_waiting()


@pytest.fixture(scope="module")
def engine(tiny_causal_lm, tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("faults")
    adapter = make_lora_adapter(tiny_causal_lm, root / "a1", seed=1)
    engine = Engine(ServeConfig(base=str(tiny_causal_lm), adapters={"a1": str(adapter)}))
    engine.load_base()
    engine.attach(engine.verify("a1", str(adapter)))
    return engine


def _item(engine: Engine, text: str, max_tokens: int) -> GenItem:
    return GenItem(engine.tokenizer(text)["input_ids"], max_tokens)


def test_a_joiner_that_fails_gets_the_error_alone_and_the_running_row_goes_on(engine):
    """The adapter context of the joining rows breaks (as a bad adapter would): only the joiner fails."""
    answers: dict = {}
    broken = "broken-adapter"

    @contextlib.contextmanager
    def context(tags):
        if broken in tags:
            raise RuntimeError("cannot apply this adapter")
        with engine._rows_context(tags):
            yield

    later = [Job(broken, _item(engine, "Hello there, friend", 4), lambda r: answers.__setitem__("joiner", r))]
    item = _item(engine, "What is AI?", 8)
    run_jobs(engine.model.get_base_model(), engine.tokenizer,
             [Job(None, item, lambda r: answers.__setitem__("running", r))], context,
             lambda room: [later.pop()] if later else [], max_rows=4)
    assert isinstance(answers["joiner"], RuntimeError) and "cannot apply" in str(answers["joiner"])
    assert not isinstance(answers["running"], Exception), answers["running"]
    assert answers["running"].text == engine.generate(None, [item])[0].text


def test_a_stop_request_fails_the_running_rows_between_steps(engine):
    """Shutdown: rows still decoding get a 'shutting down' ServingError after the current step, not after
    running to max_tokens."""
    answers: dict = {}
    stop = threading.Event()
    steps: list = []

    def more(room):
        steps.append(room)
        if len(steps) == 2:
            stop.set()
        return []

    engine.run_jobs([Job(None, _item(engine, "What is AI?", 200), lambda r: answers.__setitem__(0, r))],
                    more, max_rows=4, stop=stop)
    assert isinstance(answers[0], ServingError) and "shutting down" in answers[0].message
    assert len(steps) == 2  # stopped at once: no further step ran


def test_service_close_returns_before_a_long_generation_ends(tiny_causal_lm, engine):
    """A real Service closing while a 200-token request decodes: the request fails as shutting down."""
    service = Service(ServeConfig(base=str(tiny_causal_lm), max_batch_wait_ms=0), engine=engine)
    service.ready = True
    started = threading.Event()
    tokens: list = []

    def sink(text, result):
        tokens.append(text)
        started.set()
    item = GenItem(_item(engine, "What is AI?", 200).prompt_ids, 200, sink=sink)

    async def go():
        request = asyncio.ensure_future(service.generate("base", [item]))
        while not started.is_set():
            await asyncio.sleep(0.001)
        await service.close()
        return await asyncio.gather(request, return_exceptions=True)

    (result,) = asyncio.run(go())
    assert isinstance(result, ServingError) and "shutting down" in result.message, result
    assert len(tokens) < 200


def test_an_abandoned_request_stops_decoding(engine):
    """A non-streaming request whose caller went away (its future cancelled) leaves the batch at the next
    step instead of decoding to max_tokens."""
    batches: list = []

    def run(key, entries, more):
        jobs = [Job(None, item, finish) for item, finish in entries]
        steps: list = []
        engine.run_jobs(jobs, lambda room: steps.append(room) or [], max_rows=4)  # asked once per step
        batches.append(len(steps))

    tokens: list = []
    started = threading.Event()

    def sink(text, result):
        tokens.append(text)
        started.set()
    item = GenItem(_item(engine, "What is AI?", 200).prompt_ids, 200, sink=sink)
    executor = ModelThread()
    batcher = ContinuousBatcher(run, executor, max_batch_size=4, max_wait_s=0.0)

    async def go():
        request = asyncio.ensure_future(batcher.submit("k", item))
        while not started.is_set():
            await asyncio.sleep(0.001)
        request.cancel()
        while not batches:
            await asyncio.sleep(0.01)
        await batcher.close()

    try:
        asyncio.run(go())
    finally:
        executor.shutdown(wait=True)
    assert batches[0] < 100, f"the abandoned row decoded {batches[0]} of its 200 steps"


def test_close_takes_the_lock_while_it_drops_queued_items():
    """close() empties the groups under the lock the model thread's more()/_take use."""
    batcher = ContinuousBatcher(lambda *a: None, ModelThread(), max_batch_size=4, max_wait_s=10.0)
    seen: list[bool] = []

    class Watched(OrderedDict):
        def values(self):
            seen.append(batcher._lock.locked())
            return super().values()

        def clear(self):
            seen.append(batcher._lock.locked())
            super().clear()

    async def go():
        loop = asyncio.get_running_loop()
        batcher._groups = Watched(k=[_Pending("x", loop.create_future())])
        await batcher.close()

    asyncio.run(go())
    batcher.executor.shutdown()
    assert seen and all(seen)


def test_stacked_lora_is_not_used_when_an_adapter_targets_the_output_head(engine, tiny_causal_lm):
    """An adapter trained on lm_head too (training accepts any Linear): the stacked path is refused, so the
    engine uses peft's per-row path, whose head runs right for one request's echo positions."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from aicd.components.serving.mixed_lora import supported

    assert supported(engine.model, list(engine.adapters))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_causal_lm))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "lm_head"]), adapter_name="h")
    assert not supported(model, ["h"])
