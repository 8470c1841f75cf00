"""Prometheus metrics and the payload log of the predictor (names fixed in docs/contracts.md).

Metrics live in the process's default registry (where kserve keeps its own), created
once per process. The payload log is JSON lines in ``<log-dir>/payloads.jsonl``,
appended under a lock, one complete line per write; collect_feedback reads it.
"""

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PAYLOADS = "payloads.jsonl"
# Buckets for a CPU/GPU LLM predictor: 5 ms to 2 min.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The contract metrics and the streaming latencies; one instance per process (prometheus forbids duplicates)."""

    _instance: "Metrics | None" = None

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.requests = Counter("aicd_requests", "Inference requests by adapter and HTTP status code",
                                ["adapter", "code"])
        self.duration = Histogram("aicd_request_duration_seconds", "Inference request latency",
                                  ["adapter"], buckets=LATENCY_BUCKETS)
        self.tokens = Counter("aicd_generated_tokens", "Tokens generated", ["adapter"])
        self.feedback = Counter("aicd_feedback", "User feedback by rating", ["adapter", "rating"])
        self.first_token = Histogram("aicd_time_to_first_token_seconds",
                                     "Streamed requests: time from arrival to the first piece of text",
                                     ["adapter"], buckets=LATENCY_BUCKETS)
        self.token_gap = Histogram("aicd_inter_token_latency_seconds",
                                   "Streamed requests: time between consecutive pieces of text",
                                   ["adapter"], buckets=LATENCY_BUCKETS)

    @classmethod
    def get(cls) -> "Metrics":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def observe(self, adapter: str, code: int, seconds: float) -> None:
        self.requests.labels(adapter=adapter, code=str(code)).inc()
        self.duration.labels(adapter=adapter).observe(seconds)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PayloadLog:
    """Appends request and feedback records to ``payloads.jsonl``; a no-op without a folder.

    Bounded: the live file is rotated to ``payloads-<UTC time>.jsonl`` when it passes ``max_bytes``
    or is older than ``max_age_s``, and the oldest rotated files are deleted while the folder holds
    more than ``budget_bytes``. Fields named in ``mask_fields`` (at any depth of a request or
    response) are replaced by ``"[masked]"`` before anything is written. Each record is one
    ``write`` to a file opened for appending, so concurrent writers never interleave lines.
    """

    def __init__(self, log_dir: Path | None, max_bytes: int = 256 << 20, max_age_s: float = 86400.0,
                 budget_bytes: int = 4 << 30, mask_fields: tuple[str, ...] = ()):
        self.dir = Path(log_dir) if log_dir else None
        self.path = self.dir / PAYLOADS if self.dir else None
        self.max_bytes, self.max_age_s, self.budget_bytes = max_bytes, max_age_s, budget_bytes
        self.mask_fields = frozenset(mask_fields)
        self._lock = threading.Lock()
        self._opened = time.time()
        if self.dir is not None:  # a file found at start is aged from now (the start of this process)
            self.dir.mkdir(parents=True, exist_ok=True)

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            self._rotate_if_due(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _rotate_if_due(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self._opened = time.time()
            return
        if size and (size + incoming > self.max_bytes or time.time() - self._opened > self.max_age_s):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            os.replace(self.path, self.dir / f"payloads-{stamp}.jsonl")
            self._opened = time.time()
            self._enforce_budget(incoming)

    def _enforce_budget(self, incoming: int) -> None:
        rotated = sorted(self.dir.glob("payloads-*.jsonl"))
        total = sum(p.stat().st_size for p in rotated) + incoming
        while rotated and total > self.budget_bytes:
            oldest = rotated.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            log.warning("payload log over its %d-byte budget: deleted %s", self.budget_bytes, oldest.name)

    def _masked(self, value: Any) -> Any:
        if not self.mask_fields:
            return value
        if isinstance(value, dict):
            return {k: "[masked]" if k in self.mask_fields else self._masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._masked(v) for v in value]
        return value

    def request(self, request_id: str, adapter: str, endpoint: str, request: Any, response: Any,
                latency_ms: float) -> None:
        self._append({"type": "request", "id": request_id, "time": now_iso(), "adapter": adapter,
                      "endpoint": endpoint, "request": self._masked(request), "response": self._masked(response),
                      "latency_ms": round(latency_ms, 3)})

    def feedback(self, request_id: str, rating: str, correction: str | None, adapter: str | None = None) -> None:
        self._append({"type": "feedback", "id": request_id, "time": now_iso(), "rating": rating,
                      "correction": correction, "adapter": adapter})
