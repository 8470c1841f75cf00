"""Faults around continuous batching (code review of the merged predictor): other work on the model
thread is not starved by steady generation traffic, a failing joiner does not kill the running rows,
shutdown stops a running batch, abandoned rows stop, and close() takes the batcher's lock."""

import asyncio
import time

from aicd.components.serving.batching import ContinuousBatcher, ModelThread


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
