"""Prometheus metrics and the payload log of the predictor (names fixed in docs/contracts.md).

Metrics live in the process's default registry (where kserve keeps its own), created
once per process. The payload log is JSON lines in ``<log-dir>/payloads.jsonl``,
appended under a lock, one complete line per write; collect_feedback reads it.
"""

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PAYLOADS = "payloads.jsonl"
# Buckets for a CPU/GPU LLM predictor: 5 ms to 2 min.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The four contract metrics; one instance per process (prometheus forbids duplicates)."""

    _instance: "Metrics | None" = None

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.requests = Counter("aicd_requests", "Inference requests by adapter and HTTP status code",
                                ["adapter", "code"])
        self.duration = Histogram("aicd_request_duration_seconds", "Inference request latency",
                                  ["adapter"], buckets=LATENCY_BUCKETS)
        self.tokens = Counter("aicd_generated_tokens", "Tokens generated", ["adapter"])
        self.feedback = Counter("aicd_feedback", "User feedback by rating", ["adapter", "rating"])

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
    """Appends request and feedback records to ``payloads.jsonl``; a no-op without a folder."""

    def __init__(self, log_dir: Path | None):
        self.path = Path(log_dir) / PAYLOADS if log_dir else None
        self._lock = threading.Lock()
        self._adapters: dict[str, str] = {}  # request id -> adapter, for feedback metrics
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)

    def request(self, request_id: str, adapter: str, endpoint: str, request: Any, response: Any,
                latency_ms: float) -> None:
        with self._lock:
            self._adapters[request_id] = adapter
            if len(self._adapters) > 100_000:  # bounded: forget the oldest half
                for key in list(self._adapters)[:50_000]:
                    del self._adapters[key]
        self._append({"type": "request", "id": request_id, "time": now_iso(), "adapter": adapter,
                      "endpoint": endpoint, "request": request, "response": response,
                      "latency_ms": round(latency_ms, 3)})

    def adapter_of(self, request_id: str) -> str | None:
        with self._lock:
            return self._adapters.get(request_id)

    def feedback(self, request_id: str, rating: str, correction: str | None, adapter: str | None = None) -> None:
        self._append({"type": "feedback", "id": request_id, "time": now_iso(), "rating": rating,
                      "correction": correction, "adapter": adapter})
