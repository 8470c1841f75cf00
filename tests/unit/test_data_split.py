"""Split hashing, the compact digest map behind duplicate checks, and the fingerprint."""

import random

import pytest

from aicd.components.data.split import DigestMap, Fingerprint, assign_split, digest8, hash64


def test_digest_map_finds_entries_before_and_after_merging():
    rng = random.Random(0)
    keys = [rng.getrandbits(64) - 2**63 for _ in range(2500)] + [0, 2**63 - 1, -2**63]
    m = DigestMap(recent_limit=1000)
    for i, k in enumerate(keys):
        m.put(k, i)
    assert len(m.keys) == 2000 and len(m.recent) == 503 and len(m) == len(keys)
    assert all(m.get(k) == i for i, k in enumerate(keys))
    absent = [rng.getrandbits(64) - 2**63 for _ in range(500)]
    assert not any(k in m for k in absent if k not in set(keys))
    assert list(m.keys) == sorted(m.keys)


def test_digest_map_memory_is_compact():
    m = DigestMap(recent_limit=10_000)
    for k in range(100_000):
        m.put(digest8(str(k)))
    assert m.keys.nbytes + m.values.nbytes == 100_000 * 16 and not m.recent


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])
def test_split_fractions_follow_the_ratios(ratios):
    splits = [assign_split(f"key {i}", ratios, "aicd") for i in range(20_000)]
    for name, ratio in zip(("train", "validation", "test"), ratios):
        assert splits.count(name) / len(splits) == pytest.approx(ratio, abs=0.015)


def test_split_depends_on_key_and_salt_only():
    assert assign_split("abc", (0.5, 0.25, 0.25), "s") == assign_split("abc", (0.5, 0.25, 0.25), "s")
    moved = sum(assign_split(f"k{i}", (0.5, 0.25, 0.25), "s1") != assign_split(f"k{i}", (0.5, 0.25, 0.25), "s2")
                for i in range(1000))
    assert 400 < moved < 800
    assert hash64("a", "b") != hash64("ab") and hash64("a", "b") == hash64("a", "b")


def test_fingerprint_is_a_multiset_digest():
    rows = [("train", {"id": str(i), "text": f"t{i}"}) for i in range(10)]
    a, b, c = Fingerprint(), Fingerprint(), Fingerprint()
    for split, row in rows:
        a.add(split, row)
    for split, row in reversed(rows):
        b.add(split, row)
    for split, row in rows[:-1] + [("test", rows[-1][1])]:
        c.add(split, row)
    assert a.hexdigest() == b.hexdigest() != c.hexdigest()
