"""Signed request ids: feedback is accepted only for responses this deployment served, once each.

An id is ``r1_<issued, hex seconds>_<nonce>_<mac>_<adapter label>``; the mac is an
HMAC-SHA256 (first 128 bits) over everything else, keyed by ``--feedback-key-file`` (a
Secret all replicas mount). The id carries the adapter it was served by, so any replica
(the other side of a canary split, a restarted pod) resolves it without shared memory.
"Once per id" is a marker file created with O_EXCL under ``--feedback-state-dir``, a
folder all replicas share (the payload-logs claim); without one it is kept in memory.
Without a key file each process signs with a random key of its own (a warning says
feedback then only works on the replica that served the response).
"""

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)
_ID = re.compile(r"^r1_([0-9a-f]{1,12})_([0-9a-f]{16})_([0-9a-f]{32})_([a-z0-9][a-z0-9._-]{0,62})$")
MAX_AGE_S = 7 * 86400


class RequestIds:
    def __init__(self, key_file: Path | None, state_dir: Path | None, max_age_s: float = MAX_AGE_S):
        if key_file is not None:
            key = Path(key_file).read_bytes().strip()
            if len(key) < 16:
                from aicd.components.errors import ServingError
                raise ServingError(f"the feedback signing key in {key_file} is shorter than 16 bytes",
                                   "write a long random key, e.g. `openssl rand -hex 32`")
        else:
            key = secrets.token_bytes(32)
            log.warning("no --feedback-key-file: request ids are signed with a key of this process only; feedback "
                        "reaching another replica or a restarted one will be refused")
        self._key, self.state_dir, self.max_age_s = key, state_dir, max_age_s
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, issued: str, nonce: str, label: str) -> str:
        return hmac.new(self._key, f"r1_{issued}_{nonce}_{label}".encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self, label: str) -> str:
        issued, nonce = f"{int(time.time()):x}", secrets.token_hex(8)
        return f"r1_{issued}_{nonce}_{self._mac(issued, nonce, label)}_{label}"

    def verify(self, rid: str) -> tuple[str | None, str]:
        """(adapter label, "") for an id this deployment signed and that has not expired, else (None, why)."""
        m = _ID.match(rid) if isinstance(rid, str) else None
        if m is None:
            return None, "it is not a response id of this predictor (its `id` field or x-request-id header)"
        issued, nonce, mac, label = m.groups()
        if not hmac.compare_digest(mac, self._mac(issued, nonce, label)):
            return None, "its signature does not match: it was not issued by this deployment"
        if time.time() - int(issued, 16) > self.max_age_s:
            return None, f"it is older than {self.max_age_s / 86400:g} days"
        return label, ""

    def claim(self, rid: str) -> bool:
        """True the first time feedback is recorded for ``rid`` (across replicas sharing state_dir)."""
        issued, _, mac = rid.split("_")[1:4]
        if self.state_dir is None:
            with self._lock:
                if mac in self._used:
                    return False
                self._used[mac] = time.time()
                if len(self._used) > 1_000_000:  # bounded: forget the oldest half
                    for key in list(self._used)[:500_000]:
                        del self._used[key]
                return True
        day = Path(self.state_dir) / str(int(issued, 16) // 86400)
        day.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(day / mac, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        self._prune()
        return True

    def _prune(self) -> None:
        """Drop the markers of days whose ids have all expired (their feedback is refused anyway)."""
        oldest = int((time.time() - self.max_age_s) // 86400) - 1
        for day in Path(self.state_dir).iterdir():
            if day.name.isdigit() and int(day.name) < oldest:
                for marker in day.iterdir():
                    marker.unlink(missing_ok=True)
                day.rmdir()


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int):
        self.rate, self.capacity = per_minute / 60.0, float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1.0, now)
            return True
