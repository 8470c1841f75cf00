"""Dynamic batching: size and wait limits, grouping by adapter, failure isolation."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aicd.components.serving.batching import DynamicBatcher


class Recorder:
    """A fake model: records each batch (key, items) and echoes the items, upper-cased."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.batches: list[tuple[str, list[str]]] = []
        self.delay, self.fail_on = delay, fail_on
        self.threads: set[str] = set()

    def __call__(self, key: str, items: list[str]) -> list[str]:
        self.threads.add(threading.current_thread().name)
        self.batches.append((key, list(items)))
        time.sleep(self.delay)
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [f"{key}:{item.upper()}" for item in items]


def _run(coro):
    return asyncio.run(coro)


def _batcher(model: Recorder, size: int, wait_s: float) -> DynamicBatcher:
    return DynamicBatcher(model, ThreadPoolExecutor(1, thread_name_prefix="model"), size, wait_s)


@pytest.mark.parametrize("size, count, expected_sizes", [
    (4, 8, [4, 4]),        # full batches go at once
    (8, 3, [3]),           # a partial batch goes when the wait is over
    (1, 3, [1, 1, 1]),     # max size 1: one at a time
])
def test_batches_respect_max_size(size, count, expected_sizes):
    model = Recorder()

    async def main():
        batcher = _batcher(model, size, 0.05)
        out = await asyncio.gather(*(batcher.submit("a", f"x{i}") for i in range(count)))
        await batcher.close()
        return out

    out = _run(main())
    assert out == [f"a:X{i}" for i in range(count)]
    assert [len(items) for _, items in model.batches] == expected_sizes
    assert model.threads == {"model_0"}


def test_requests_are_grouped_by_adapter_and_never_mixed():
    model = Recorder()

    async def main():
        batcher = _batcher(model, 8, 0.05)
        jobs = [batcher.submit("a" if i % 2 else "b", f"i{i}") for i in range(10)]
        out = await asyncio.gather(*jobs)
        await batcher.close()
        return out

    out = _run(main())
    assert out == [f"{'a' if i % 2 else 'b'}:I{i}" for i in range(10)]
    assert sorted(model.batches) == [("a", ["i1", "i3", "i5", "i7", "i9"]), ("b", ["i0", "i2", "i4", "i6", "i8"])]


def test_a_request_waits_for_company_within_max_wait():
    model = Recorder()

    async def main():
        batcher = _batcher(model, 8, 0.5)
        first = asyncio.ensure_future(batcher.submit("a", "early"))
        await asyncio.sleep(0.05)  # well inside the 0.5 s window
        await asyncio.gather(first, batcher.submit("a", "late"))
        await batcher.close()

    _run(main())
    assert [items for _, items in model.batches] == [["early", "late"]]


def test_requests_arriving_during_a_batch_form_the_next_one():
    model = Recorder(delay=0.2)

    async def main():
        batcher = _batcher(model, 8, 0.0)
        first = asyncio.ensure_future(batcher.submit("a", "first"))
        await asyncio.sleep(0.05)  # the first batch is running now
        rest = [batcher.submit("a", f"r{i}") for i in range(5)]
        await asyncio.gather(first, *rest)
        await batcher.close()

    _run(main())
    assert [items for _, items in model.batches] == [["first"], [f"r{i}" for i in range(5)]]


def test_a_failing_batch_fails_only_its_own_requests():
    model = Recorder(fail_on="boom")

    async def main():
        batcher = _batcher(model, 2, 0.01)
        results = await asyncio.gather(batcher.submit("a", "ok"), batcher.submit("a", "boom"),
                                       batcher.submit("b", "fine"), return_exceptions=True)
        after = await batcher.submit("a", "later")
        await batcher.close()
        return results, after

    (ok, boom, fine), after = _run(main())
    assert isinstance(ok, ValueError) and isinstance(boom, ValueError) and "bad item boom" in str(boom)
    assert fine == "b:FINE" and after == "a:LATER"


def test_rejects_a_zero_batch_size():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1, got 0"):
        DynamicBatcher(Recorder(), ThreadPoolExecutor(1), 0, 0.01)
