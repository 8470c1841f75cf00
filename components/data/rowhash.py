"""Row-hashing schemes: how a data set's row ids, splits and duplicate digests are computed.

A data set is made under one scheme (``data.row_hash``, recorded as ``row_hash`` in its
card) and keeps it for life: another scheme gives other ids and other splits, so a new
version under it would move the champion's training rows into the test split.

- ``v1`` (the default; every data set made before schemes existed): blake2b digests, one
  per purpose (row id, exact content, normalised pair, normalised input, normalised
  target) and a sixth, salted one of the split key for the split. Ids are ``h`` + 16 hex.
- ``v2``: xxh3-64 (xxhash), a fast, stable, non-cryptographic 64-bit hash of the UTF-8
  bytes; at most three digests of text a row. The row id is the exact-content digest
  (classification: the text's, so a label correction keeps the id), ``x`` + 16 hex. The
  normalised input is hashed once, seeded with the split salt: that one digest is both
  the input's identity for duplicate and leakage checks and, with ``data.split.key``
  unset, the split's hash (near duplicates share it, so they share a split). The
  normalised pair is the two normalised digests combined, never the text hashed again.

Both are the same on every machine, interpreter and ``PYTHONHASHSEED`` (tests check it).
"""

from typing import Literal

import xxhash

from aicd.components.data.split import SPLIT_NAMES, hash64

RowHash = Literal["v1", "v2"]
ROW_HASHES: tuple[str, ...] = ("v1", "v2")
DEFAULT_ROW_HASH: RowHash = "v1"  # a card without ``row_hash`` was made under v1
ID_PREFIX = {"v1": "h", "v2": "x"}
MASK64 = (1 << 64) - 1
PAIR_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so h -> h * PAIR_MULTIPLIER is a bijection: pairs stay apart
xxh3_bytes = xxhash.xxh3_64_intdigest  # (bytes, seed=0) -> unsigned 64-bit int


def xxh64(text: str, seed: int = 0) -> int:
    """xxh3-64 of a text's UTF-8 bytes (lone surrogates kept, as in v1), unsigned."""
    return xxh3_bytes(text.encode("utf-8", "surrogatepass"), seed)


def salt_seed(salt: str) -> int:
    """The 64-bit seed the split salt becomes in v2."""
    return xxh64(f"aicd-split|{salt}")


def thresholds(ratios: tuple[float, float, float]) -> tuple[int, int]:
    """The 64-bit hash bounds of train and validation (a hash below the first is train)."""
    return int(ratios[0] * 2.0**64), int((ratios[0] + ratios[1]) * 2.0**64)


def split_index(h: int, bounds: tuple[int, int]) -> int:
    """0, 1 or 2 (train, validation, test) of an unsigned 64-bit split hash."""
    return 0 if h < bounds[0] else 1 if h < bounds[1] else 2


def assign_split_v2(key: str, ratios: tuple[float, float, float], salt: str) -> str:
    """The v2 split of a key (the normalised input text when ``data.split.key`` is unset)."""
    return SPLIT_NAMES[split_index(xxh64(key, salt_seed(salt)), thresholds(ratios))]


def pair_digest(h_in: int, h_target: int) -> int:
    """v2's normalised (input, target) digest from the two normalised digests."""
    return (h_in * PAIR_MULTIPLIER + h_target) & MASK64


def selection_digest(scheme: str, key: str, salt: str) -> int:
    """Order used by ``data.max_rows`` (lowest first), independent of the split hash."""
    if scheme == "v2":
        return xxh64(key, xxh64(f"aicd-select|{salt}"))
    return hash64("select", salt, key)


def tie_digest(scheme: str, row_id: str) -> int:
    """Breaks ``data.max_rows`` ties between rows with one key."""
    return xxh64(row_id) if scheme == "v2" else hash64(row_id)
