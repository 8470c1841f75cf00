"""Deterministic splits, duplicate and leakage tracking, and the content fingerprint.

A row's split is a function of its key alone (``blake2b(salt, key)`` as a fraction
of 2**64 against the split ratios), so appending rows never moves an existing row.
The key is ``data.split.key`` when set, else the normalised input text (so the same
question never lands in two splits). ``data.max_rows`` keeps the rows with the lowest
*selection* hash of their key (a second, independent hash: the split hash would pick
train rows only). With the default key the same normalised input can never sit in two
splits, so the leakage check runs only when ``data.split.key`` is set.

Memory: duplicate and leakage checks keep 8-byte hashes of what they have seen, never
the rows or the raw lines: the newest ones in a small dict, the rest merged into sorted
numpy arrays (:class:`DigestMap`), so a valid row costs about 16 bytes per check.
"""

import hashlib
import json
from collections import Counter
from hashlib import blake2b as _blake2b
from typing import Any

SPLIT_NAMES = ("train", "validation", "test")
_MOD = 1 << 256


def hash64(*parts: str) -> int:
    """A stable 64-bit hash of strings (blake2b), the same on every machine and run."""
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def digest8(text: str) -> int:
    """64 bits of blake2b (signed, so numpy searches stay on int64): a text's identity in memory."""
    data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(_blake2b(data, digest_size=8).digest(), "little", signed=True)


class DigestMap:
    """A compact map of 64-bit digests to 64-bit values (a set when every value is 0).

    New entries go to a dict; every ``recent_limit`` entries they are merged into sorted
    numpy arrays (16 bytes an entry instead of ~120 in a dict), so memory grows by 16 bytes
    an entry past the first ``recent_limit``, plus 2 for a one-hash bit filter over the
    arrays (16 bits an entry: about 6% of absent keys pass it). Lookups check the dict,
    then the filter, and binary-search the arrays only for keys the filter lets through (a
    numpy search costs about a microsecond from Python, more than the rest of the lookup).
    ``unsigned`` holds unsigned 64-bit digests (row hash v2), else signed ones (v1).
    """

    def __init__(self, recent_limit: int = 50_000, unsigned: bool = False):
        import numpy as np

        self._np = np
        self.limit = recent_limit
        self.dtype = np.uint64 if unsigned else np.int64
        self._scalar = self.dtype
        self.recent: dict[int, int] = {}
        self.keys = np.empty(0, self.dtype)
        self.values = np.empty(0, self.dtype)
        self.merged = 0
        self._filter, self._shift = b"", 64

    def __len__(self) -> int:
        return len(self.recent) + len(self.keys)

    def get(self, key: int) -> int | None:
        value = self.recent.get(key)
        if value is None and self.merged:
            return self.merged_get(key)
        return value

    def merged_get(self, key: int) -> int | None:
        """The value of a key in the arrays only (the dict was checked)."""
        bit = (key & 0xFFFFFFFFFFFFFFFF) >> self._shift
        if not self._filter[bit >> 3] >> (bit & 7) & 1:
            return None
        # A numpy scalar of the arrays' type: a Python int above 2**63 would make numpy compare as floats,
        # converting the whole array on every search.
        i = int(self.keys.searchsorted(self._scalar(key)))
        if i < len(self.keys) and int(self.keys[i]) == key:
            return int(self.values[i])
        return None

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def put(self, key: int, value: int = 0) -> None:
        self.recent[key] = value
        if len(self.recent) >= self.limit:
            self._merge()

    def _merge(self) -> None:
        """Insert the dict's entries into the sorted arrays: one new array at a time (a transient 8 bytes an
        entry), each new entry before an equal older key, so a key put again finds its newest value."""
        np = self._np
        n = len(self.recent)
        keys = np.fromiter(self.recent.keys(), self.dtype, n)
        values = np.fromiter(self.recent.values(), self.dtype, n)
        self.recent = {}
        order = keys.argsort()
        keys, values = keys[order], values[order]
        at = self.keys.searchsorted(keys)
        self.keys = np.insert(self.keys, at, keys)
        self.values = np.insert(self.values, at, values)
        self.merged = len(self.keys)
        log2_bits = max(16, (16 * self.merged - 1).bit_length())
        self._shift = 64 - log2_bits
        filter_ = np.zeros(1 << (log2_bits - 3), np.uint8)
        shift, keys = np.uint64(self._shift), self.keys.view(np.uint64)
        for start in range(0, self.merged, 1 << 16):  # in slices: temporaries stay small
            bits = keys[start:start + (1 << 16)] >> shift
            np.bitwise_or.at(filter_, bits >> np.uint64(3), (1 << (bits & np.uint64(7))).astype(np.uint8))
        self._filter = filter_.tobytes()  # bytes: indexing gives a Python int, a numpy array a numpy scalar


def assign_split(key: str, ratios: tuple[float, float, float], salt: str) -> str:
    """The split of a key: train / validation / test by its hash fraction."""
    fraction = hash64(salt, key) / 2.0**64
    if fraction < ratios[0]:
        return "train"
    if fraction < ratios[0] + ratios[1]:
        return "validation"
    return "test"


class Tracker:
    """State across rows: ids, duplicates, label conflicts and leakage between splits.

    ``check`` returns ``None`` for a new row or ``(reason, detail)``; the first row seen
    wins, so appending rows can only quarantine the new ones. Only 8-byte hashes are kept.
    ``check`` hashes with row hash v1; ``check_digests`` takes digests a scheme computed.
    """

    def __init__(self, dedupe: bool, track_ids: bool, conflicts: bool, leakage: bool, unsigned: bool = False):
        self.dedupe, self.conflicts, self.leakage = dedupe, conflicts, leakage
        self.ids = DigestMap(unsigned=unsigned) if track_ids else None
        self.pairs = DigestMap(unsigned=unsigned)  # normalised (input, target) -> exact content digest
        # normalised input -> normalised target digest with its low 2 bits replaced by the split index
        self.inputs = DigestMap(unsigned=unsigned)

    def check(self, row_id: str | None, exact: int, norm_text: str, norm_target: str,
              split: str) -> tuple[str, str] | None:
        """``exact`` is :func:`digest8` of the row's exact content (row hash v1)."""
        id_hash = digest8(row_id) if self.ids is not None and row_id is not None else None
        pair = digest8(f"{norm_text}\x1f{norm_target}") if self.dedupe else 0
        h_in = packed = 0
        if self.conflicts or self.leakage:
            h_in = digest8(norm_text)
            packed = ((digest8(norm_target) >> 2 << 2) if self.conflicts else 0) | SPLIT_NAMES.index(split)
        return self.check_digests(row_id, id_hash, exact, pair, h_in, packed)

    def check_digests(self, row_id: str | None, id_hash: int | None, exact: int, pair: int, h_in: int,
                      packed: int) -> tuple[str, str] | None:
        """Digests of one row: its id (None without an id), exact content, normalised pair and input, and
        ``packed``: the normalised target's digest with its low 2 bits replaced by the split index."""
        if id_hash is not None and id_hash in self.ids:
            return "duplicate-id", f"id {row_id!r} was already used by an earlier row"
        if self.dedupe:
            seen = self.pairs.recent.get(pair)  # the map's get, without a call for its newest entries
            if seen is None and self.pairs.merged:
                seen = self.pairs.merged_get(pair)
            if seen is not None:
                if seen == exact:
                    return "duplicate", "an exact copy of an earlier row"
                return "near-duplicate", "the same as an earlier row after normalisation"
        if self.conflicts or self.leakage:
            seen_in = self.inputs.recent.get(h_in)
            if seen_in is None and self.inputs.merged:
                seen_in = self.inputs.merged_get(h_in)
            if seen_in is None:
                self.inputs.put(h_in, packed)
            else:
                if self.conflicts and seen_in >> 2 != packed >> 2:
                    return "conflicting-label", "an earlier row has the same normalised text and another label"
                if self.leakage and seen_in & 3 != packed & 3:
                    return "leakage", (f"the same normalised input is already in {SPLIT_NAMES[seen_in & 3]} "
                                       f"(this row's key puts it in {SPLIT_NAMES[packed & 3]})")
        if id_hash is not None:
            self.ids.put(id_hash)
        if self.dedupe:
            self.pairs.put(pair, exact)
        return None

    def check_labeled(self, row_id: str | None, id_hash: int | None, h_in: int, packed: int) -> tuple[str, str] | None:
        """Classification with dedupe under row hash v2: one map, normalised input -> ``packed``, the exact
        content's digest with its low 16 bits replaced by the label's index (14 bits) and the split's (2).

        The same answers as :meth:`check_digests`, which keeps a second map: with label conflicts checked,
        every kept (input, label) pair has its input's first label, so the pair is known from the input.
        """
        if id_hash is not None and id_hash in self.ids:
            return "duplicate-id", f"id {row_id!r} was already used by an earlier row"
        seen = self.inputs.recent.get(h_in)
        if seen is None and self.inputs.merged:
            seen = self.inputs.merged_get(h_in)
        if seen is not None:
            if (seen ^ packed) & 0xFFFC:
                return "conflicting-label", "an earlier row has the same normalised text and another label"
            if seen >> 16 == packed >> 16:
                return "duplicate", "an exact copy of an earlier row"
            return "near-duplicate", "the same as an earlier row after normalisation"
        self.inputs.put(h_in, packed)
        if id_hash is not None:
            self.ids.put(id_hash)
        return None


class Fingerprint:
    """An order-independent digest of (split, row) pairs: sha256 of each, summed mod 2**256.

    The same rows in the same splits give the same fingerprint whatever order the
    sources list them in; any changed, added or removed row, or a row in another
    split, changes it. A v2 data set's fingerprint also names its row hash.
    """

    def __init__(self, row_hash: str = "v1") -> None:
        self.total = 0
        self.count = 0
        self.scheme = "" if row_hash == "v1" else f"|row_hash={row_hash}"

    def add(self, split: str, row: dict[str, Any]) -> None:
        data = json.dumps([split, row], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % _MOD
        self.count += 1

    def hexdigest(self) -> str:
        data = f"aicd-dataset-v1|{self.count}|{self.total:064x}{self.scheme}".encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()


class Stats:
    """Figures of the written rows for the card and the profile report."""

    SLICE_MAX_VALUES = 50

    def __init__(self, input_field: str, target_field: str, classify: bool):
        self.input_field, self.target_field, self.classify = input_field, target_field, classify
        self.lengths: dict[str, Counter[int]] = {input_field: Counter()}
        if not classify:
            self.lengths[target_field] = Counter()
        self.labels: dict[str, Counter[str]] = {s: Counter() for s in SPLIT_NAMES}
        self.sources: Counter[str] = Counter()
        self.slices: dict[str, Counter[str]] = {}
        self.dropped_slices: set[str] = set()

    def add(self, split: str, row: dict[str, Any], n_in: int, n_tgt: int, extras: list[str]) -> None:
        self.lengths[self.input_field][n_in] += 1
        if not self.classify:
            self.lengths[self.target_field][n_tgt] += 1
        else:
            self.labels[split][row[self.target_field]] += 1
        self.sources[row["source"]] += 1
        for column in extras:
            if column in self.dropped_slices:
                continue
            counter = self.slices.setdefault(column, Counter())
            counter[str(row.get(column))] += 1
            if len(counter) > self.SLICE_MAX_VALUES:
                self.dropped_slices.add(column)
                del self.slices[column]

    def card_fields(self) -> dict[str, Any]:
        return {
            "label_distribution": dict(sorted(sum(self.labels.values(), Counter()).items())),
            "label_distribution_by_split": ({s: dict(sorted(c.items())) for s, c in self.labels.items()}
                                            if self.classify else {}),
            "length_stats": {f: {**_summary(c), "unit": "tokens"} for f, c in self.lengths.items()},
            "length_histogram": {f: _histogram(c) for f, c in self.lengths.items()},
            "rows_per_source": dict(sorted(self.sources.items())),
            "slice_distribution": {k: dict(sorted(v.items())) for k, v in sorted(self.slices.items())},
        }


def _summary(counts: Counter[int]) -> dict[str, float]:
    n = sum(counts.values())
    if not n:
        return {"n": 0}
    ordered = sorted(counts.items())

    def quantile(q: float) -> int:
        target, running = q * (n - 1), 0
        for value, count in ordered:
            running += count
            if running > target:
                return value
        return ordered[-1][0]

    mean = sum(v * c for v, c in ordered) / n
    return {"n": n, "min": ordered[0][0], "max": ordered[-1][0], "mean": round(mean, 2),
            "p50": quantile(0.5), "p95": quantile(0.95)}


def _histogram(counts: Counter[int], bins: int = 30) -> dict[str, list[int]]:
    if not counts:
        return {"edges": [], "counts": []}
    low, high = min(counts), max(counts)
    width = max(1, -(-(high - low + 1) // bins))
    edges = list(range(low, high + width + 1, width))
    hist = [0] * (len(edges) - 1)
    for value, count in counts.items():
        hist[min((value - low) // width, len(hist) - 1)] += count
    return {"edges": edges, "counts": hist}
