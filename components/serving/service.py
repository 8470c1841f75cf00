"""The predictor's state: the engine, its batchers, the served names and readiness.

Everything that touches the model runs in one executor thread (batches, adapter
loads and removals), so an adapter never changes under a running batch.
"""

import asyncio
import logging

from aicd.components.errors import AicdError, ServingError
from aicd.components.serving.batching import ContinuousBatcher, DynamicBatcher, ModelThread
from aicd.components.serving.config import BASE_NAME, ServeConfig, check_name, read_admin_token
from aicd.components.serving.engine import Engine, GenItem, GenResult, Job
from aicd.components.serving.request_ids import RateLimiter, RequestIds
from aicd.components.serving.telemetry import Metrics, PayloadLog

log = logging.getLogger(__name__)
_BASE_KEY = "\x00base"  # batcher key of the base model (cannot collide with an adapter name)
_MIXED_KEY = "\x00mixed"  # the one generation key with --mix-adapters (rows of any adapters in a batch)


class Service:
    def __init__(self, config: ServeConfig, engine: Engine | None = None):
        self.config = config
        self.engine = engine or Engine(config)
        self.executor = ModelThread()  # a running generation batch yields to classification and admin work
        wait = config.max_batch_wait_ms / 1000.0
        self.generation = ContinuousBatcher(self._run_jobs, self.executor, config.max_batch_size, wait)
        self.classification = DynamicBatcher(self._run_classification, self.executor, config.max_batch_size, wait)
        self.metrics = Metrics.get()
        self.payloads = PayloadLog(config.log_dir, max_bytes=int(config.log_max_mb * (1 << 20)),
                                   max_age_s=config.log_max_age_hours * 3600,
                                   budget_bytes=int(config.log_budget_mb * (1 << 20)),
                                   mask_fields=config.log_mask_fields)
        self.admin_token = read_admin_token(config)
        self.request_ids = RequestIds(config.feedback_key_file, config.feedback_state_dir)
        self.feedback_limiter = RateLimiter(config.feedback_rate_per_minute)
        self.feedback_token = (config.feedback_token_file.read_text(encoding="utf-8").strip()
                               if config.feedback_token_file else None)
        self.ready = False
        self.load_error: str | None = None
        self.on_change: list = []  # callbacks(name, added: bool) (kserve model registry)
        self._admin_lock = asyncio.Lock()

    # -- names ----------------------------------------------------------------------------
    def served(self) -> list[str]:
        names = [self.config.model_name] if self.engine.serve_base or not self.ready else []
        return names + sorted(self.engine.adapters)

    def label_of(self, name: str) -> str | None:
        """Metric/payload label of a served name: ``base`` or the adapter name; None if not served."""
        if name == self.config.model_name and self.engine.serve_base:
            return BASE_NAME
        return name if name in self.engine.adapters else None

    def adapter_of(self, name: str) -> str | None:
        """The adapter to activate for a served name (None for the base); ServingError if not served."""
        if name == self.config.model_name and self.engine.serve_base:
            return None
        if name in self.engine.adapters:
            return name
        raise ServingError(f"model {name!r} is not served", f"served models: {', '.join(self.served()) or 'none'}")

    # -- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """Load the base and every adapter, verified; ready only when all succeeded. Blocking."""
        engine = self.engine
        engine.resolve_labels_from(self.config.adapters)
        engine.load_base()
        for name, uri in self.config.adapters.items():
            engine.attach(engine.verify(name, uri))
        if not engine.serve_base and not engine.adapters:
            raise ServingError("nothing to serve: the base encoder has no trained classification head and no "
                               "adapter was given", "pass --adapter NAME=URI of a trained classifier adapter")
        self.ready = True
        log.info("ready: serving %s", ", ".join(self.served()))

    async def load_async(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.load)
        except AicdError as err:
            self.load_error = str(err)
            log.error("loading failed: %s", err)
            raise
        for name in self.served():
            for callback in self.on_change:
                callback(name, True)

    # -- inference ------------------------------------------------------------------------
    def _jobs(self, entries: list) -> list[Job]:
        """(adapter, item) entries as jobs; one whose adapter was removed meanwhile gets its error alone."""
        jobs = []
        for (adapter, item), finish in entries:
            if adapter is not None and adapter not in self.engine.adapters:
                finish(ServingError(f"adapter {adapter!r} is not served"))
            else:
                jobs.append(Job(adapter, item, finish))
        return jobs

    def _run_jobs(self, key: str, entries: list, more) -> None:
        """A running generation batch (model thread): rows of one key join it between steps."""
        jobs = self._jobs(entries)
        if jobs:
            self.engine.run_jobs(jobs, lambda room: self._jobs(more(room)), self.config.max_batch_size,
                                 self.generation.stopping)

    def _run_classification(self, key: str, texts: list[str]) -> list[tuple[str, list[float]]]:
        return self.engine.classify(None if key == _BASE_KEY else key, texts)

    async def generate(self, name: str, items: list[GenItem]) -> list[GenResult]:
        """Answers in order; a removed adapter (ServingError) or a row that failed alone raises."""
        adapter = self.adapter_of(name)
        key = _MIXED_KEY if self.config.mix_adapters else adapter or _BASE_KEY
        return await self.generation.submit_many(key, [(adapter, item) for item in items])

    async def classify(self, name: str, texts: list[str]) -> list[tuple[str, list[float]]]:
        adapter = self.adapter_of(name)
        return await self.classification.submit_many(adapter or _BASE_KEY, texts)

    # -- admin ----------------------------------------------------------------------------
    async def add_adapter(self, name: str, uri: str) -> dict:
        check_name(name)
        loop = asyncio.get_running_loop()
        async with self._admin_lock:
            if name in self.engine.adapters or name == self.config.model_name:
                raise ServingError(f"model {name!r} is already served", "remove it first, or choose another name")
            # Hashing the files runs beside inference; only attaching takes the model thread.
            adapter = await loop.run_in_executor(None, self.engine.verify, name, uri)
            await loop.run_in_executor(self.executor, self.engine.attach, adapter)
        for callback in self.on_change:
            callback(name, True)
        return {"name": name, "digest": adapter.digest, "served": self.served()}

    async def remove_adapter(self, name: str) -> dict:
        async with self._admin_lock:
            if name not in self.engine.adapters:
                raise ServingError(f"adapter {name!r} is not served",
                                   f"served adapters: {', '.join(sorted(self.engine.adapters)) or 'none'}")
            for callback in self.on_change:
                callback(name, False)
            await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.detach, name)
        return {"name": name, "removed": True, "served": self.served()}

    def describe(self) -> list[dict]:
        base = [{"name": self.config.model_name, "adapter": None, "uri": self.config.base,
                 "digest": self.engine.base_digest}] if self.engine.serve_base else []
        return base + [{"name": a.name, "adapter": a.name, "uri": str(a.path), "digest": a.digest}
                       for a in sorted(self.engine.adapters.values(), key=lambda a: a.name)]

    async def close(self) -> None:
        await self.generation.close()
        await self.classification.close()
        # Queued work is dropped; a running batch (answers go out before its model thread is done with the
        # model) ends its rows first, so nothing touches the model after close() returns.
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.executor.shutdown(wait=True, cancel_futures=True))
