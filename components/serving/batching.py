"""Dynamic batching: requests that arrive close together run as one forward pass.

Each item is queued under a key (the adapter it needs). The worker takes the key whose
oldest item waited longest, waits until that group holds ``max_batch_size`` items or
its oldest item has waited ``max_wait_s``, and runs up to ``max_batch_size`` items of
that one key in the model's single executor thread. Items of other keys stay queued,
so one batch never mixes adapters. With ``max_batch_size == 1`` every item runs alone
at once (one-at-a-time serving).

``ContinuousBatcher`` (generation) keeps the batch open while it runs: between decoding
steps the model thread takes items of the running key that arrived meanwhile (up to
``max_batch_size`` active rows) and answers each item as soon as its row stops. It takes
none while another key has items waiting, or while other work (a classification batch, an
adapter load or removal) waits for the model thread (``ModelThread.others_waiting``), so a busy
adapter cannot starve the others: the running batch drains and the waiting work runs next.
"""

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RunBatch = Callable[[str, list[Any]], Sequence[Any]]


class ModelThread(ThreadPoolExecutor):
    """The one thread that touches the model; it knows whether submitted work waits for it to get free."""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="aicd-model")
        self._queued = 0
        self._count_lock = threading.Lock()

    def _count(self, delta: int) -> None:
        with self._count_lock:
            self._queued += delta

    def submit(self, fn, /, *args, **kwargs) -> Future:
        started = threading.Event()

        def run():
            started.set()
            self._count(-1)
            return fn(*args, **kwargs)

        self._count(1)
        future = super().submit(run)
        future.add_done_callback(lambda f: None if started.is_set() else self._count(-1))  # cancelled unstarted
        return future

    def others_waiting(self) -> bool:
        """Work was submitted that has not started yet (the running task is not counted)."""
        with self._count_lock:
            return self._queued > 0


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Collects items per key and runs them in batches through ``run_batch(key, items)``.

    ``run_batch`` is a blocking function returning one result per item, in order; it
    runs in ``executor`` (one thread, shared with everything else that touches the
    model). An exception in it fails every item of that batch and nothing else.
    """

    def __init__(self, run_batch: RunBatch, executor: Executor, max_batch_size: int, max_wait_s: float):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_s)
        self._groups: OrderedDict[str, list[_Pending]] = OrderedDict()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._lock = threading.Lock()  # _groups: the event loop adds, a running continuous batch takes
        self.batch_sizes: list[int] = []  # recent batch sizes, for tests and logs

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, key: str, item: Any) -> Any:
        """Queue one item and wait for its result."""
        self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._groups.setdefault(key, []).append(_Pending(item, future))
        self._wakeup.set()
        return await future

    async def submit_many(self, key: str, items: Sequence[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self.submit(key, item) for item in items)))

    def _oldest_key(self) -> str | None:
        with self._lock:
            live = [(group[0].arrived, key) for key, group in self._groups.items() if group]
        return min(live)[1] if live else None

    def _take(self, key: str, limit: int | None = None) -> list[_Pending]:
        with self._lock:
            group = self._groups.get(key, [])
            limit = self.max_batch_size if limit is None else limit
            batch = [p for p in group[:limit] if not p.future.done()]
            del group[:limit]
            if not group:
                self._groups.pop(key, None)
        return batch

    async def _work(self) -> None:
        while True:
            key = self._oldest_key()
            if key is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = self._groups[key]
            deadline = group[0].arrived + self.max_wait_s
            if len(group) < self.max_batch_size and time.monotonic() < deadline:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    pass
                continue
            batch = self._take(key)
            if batch:
                await self._run(key, batch)

    async def _run(self, key: str, batch: list[_Pending]) -> None:
        self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, key, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as err:  # noqa: BLE001 - handed to each waiting request
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        for p, result in zip(batch, results):
            if p.future.done():
                continue
            if isinstance(result, Exception):  # one row failed alone: only its request gets the error
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        with self._lock:  # the model thread's more() may be taking items right now
            groups = list(self._groups.values())
            self._groups.clear()
        for group in groups:
            for p in group:
                if not p.future.done():
                    p.future.cancel()


class _Finisher:
    """Answers one request from the model thread; ``gone()`` once it was answered or abandoned (cancelled)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop, self.future = loop, future

    def _settle(self, result: Any) -> None:
        if self.future.done():
            return
        if isinstance(result, Exception):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)

    def __call__(self, result: Any) -> None:
        self.loop.call_soon_threadsafe(self._settle, result)

    def gone(self) -> bool:
        return self.future.done()


RunJobs = Callable[[str, list[tuple[Any, Callable[[Any], None]]], Callable[[int], list]], None]


class ContinuousBatcher(DynamicBatcher):
    """Runs ``run_jobs(key, entries, more)`` in the executor: ``entries`` are ``(item, finish)`` pairs,
    ``finish(result)`` (an Exception fails that item alone) may be called from the model thread as soon
    as an item is done, and ``more(room)`` returns further ``(item, finish)`` pairs of the same key that
    arrived meanwhile (at most ``room``). Every item must be finished once before ``run_jobs`` returns."""

    def __init__(self, run_jobs: RunJobs, executor: Executor, max_batch_size: int, max_wait_s: float):
        super().__init__(run_jobs, executor, max_batch_size, max_wait_s)
        self.joined = 0  # items that joined a running batch, for tests and logs
        self.stopping = threading.Event()  # set by close(): run_jobs fails its remaining rows between steps

    async def close(self) -> None:
        self.stopping.set()
        await super().close()

    def _waiting_elsewhere(self, key: str) -> bool:
        """Items of another key, or other work queued on the model thread, wait: the running batch takes none."""
        others_waiting = getattr(self.executor, "others_waiting", None)
        if others_waiting is not None and others_waiting():
            return True
        with self._lock:
            return any(group for k, group in self._groups.items() if k != key)

    async def _run(self, key: str, batch: list[_Pending]) -> None:
        self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
        loop = asyncio.get_running_loop()
        taken = list(batch)

        def more(room: int) -> list[tuple[Any, Callable[[Any], None]]]:  # called in the model thread
            if room <= 0 or self._waiting_elsewhere(key):
                return []
            joining = self._take(key, room)
            taken.extend(joining)
            self.joined += len(joining)
            return [(p.item, _Finisher(loop, p.future)) for p in joining]

        error: Exception = RuntimeError("the batch ended without answering this request")
        try:
            await loop.run_in_executor(self.executor, self.run_batch, key,
                                       [(p.item, _Finisher(loop, p.future)) for p in batch], more)
        except Exception as err:  # noqa: BLE001 - handed to every request the batch did not answer
            error = err
        for p in taken:  # answers were scheduled before the batch returned: they are set by now
            if not p.future.done():
                p.future.set_exception(error)
