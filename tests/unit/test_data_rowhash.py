"""Row-hashing schemes (data.row_hash): v1 unchanged, v2 stable everywhere, no silent switch between them."""

import json
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from helpers.data import jsonl, with_data, write

from aicd.components.data.format import SPLITS, read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.data.rowhash import assign_split_v2, xxh64
from aicd.components.data.split import DigestMap
from aicd.components.data.validate import approx_tokens, normalise, normalise_and_count
from aicd.components.errors import DataError, SpecError
from aicd.components.labeling.versions import fingerprint, write_version
from aicd.components.spec import parse_spec

TEXTS = ["Great product, works well", "Terrible. Broke in a day!", "Café crème — très bien", "ＦＵＬＬ width ｔｅｘｔ",
         "straße und STRASSE", "ok", "meh, it's fine 👍", "Not what I expected"]
CLASSIFY = [{"text": f"{t} #{i}", "label": ["negative", "neutral", "positive"][i % 3]}
            for i, t in enumerate(TEXTS * 4)]
CAUSAL = [{"instruction": f"How do I {t.lower()} {i}?", "response": f"Answer {i}: {t}"}
          for i, t in enumerate(TEXTS * 4)]
# Fingerprints (ids, splits and content) of the rows above. v1: taken before row_hash existed, so every
# data set made then is reproduced; v2: pinned when it was introduced. Neither may ever change.
GOLDEN = {
    ("v1", "cls"): "sha256:7fa54e8a8d17d8025516ffafeab787260a9b64e66948bb7be67db6fe46116d23",
    ("v1", "lm"): "sha256:f1a45ef1be059e7b69f8d7c30fd29e0727d65bc92973bd87c774670685e56eee",
    ("v2", "cls"): "sha256:bd5ea10a06a150ecf1017557a8aaf746a143ddb9e36fc048cb8dbb0db4592ece",
    ("v2", "lm"): "sha256:60549d02f2c709aab965e51aa741875fe5013ec8c634cfbab0cf5450a2b1d462",
}


def _spec(base: dict, tmp_path: Path, rows: list[dict], row_hash: str | None) -> dict:
    uri = write(tmp_path / "rows.jsonl", jsonl(rows))
    return with_data(base, [{"uri": uri, "name": "rows"}], **({"row_hash": row_hash} if row_hash else {}))


def _placement(path) -> dict[str, str]:
    return {r["id"]: s for s in SPLITS for r in read_split(path, s)}


@pytest.mark.parametrize("row_hash", [None, "v1", "v2"])
@pytest.mark.parametrize("task", ["cls", "lm"])
def test_fingerprints_of_each_scheme_never_change(task, row_hash, tmp_path, review_sentiment_spec, support_bot_spec):
    """A spec without `data.row_hash` is v1, and v1 gives the ids and splits it gave before v2 existed."""
    base, rows = (review_sentiment_spec, CLASSIFY) if task == "cls" else (support_bot_spec, CAUSAL)
    result = ingest_dataset(_spec(base, tmp_path, rows, row_hash), tmp_path / "out")
    assert result.fingerprint == GOLDEN[(row_hash or "v1", task)]
    assert result.card["row_hash"] == (row_hash or "v1")
    prefix = "x" if row_hash == "v2" else "h"
    assert all(i.startswith(prefix) and len(i) == 17 for i in _placement(result.path))


_CHILD = """
import json, sys
from aicd.components.data.format import SPLITS, read_split
from aicd.components.data.ingest import ingest_dataset
result = ingest_dataset(json.loads(sys.argv[1]), sys.argv[2])
print(json.dumps([result.fingerprint, {r["id"]: s for s in SPLITS for r in read_split(result.path, s)}]))
"""


def test_v2_is_the_same_in_other_interpreters_and_hash_seeds(tmp_path, review_sentiment_spec):
    spec = _spec(review_sentiment_spec, tmp_path, CLASSIFY, "v2")
    runs = []
    for seed in ("0", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec), str(tmp_path / f"out-{seed}")],
                              env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    here = ingest_dataset(spec, tmp_path / "here")
    assert runs[0] == runs[1] == runs[2] == [here.fingerprint, _placement(here.path)]
    assert len(runs[0][1]) == len(CLASSIFY)


def test_v2_ids_and_splits_follow_the_documented_digests(tmp_path, review_sentiment_spec):
    """Id: xxh3 of the text (a label correction keeps it); split: the seeded digest of the normalised input."""
    rows = [{"text": f"Review {i}: {random.Random(i).choice(TEXTS)}", "label": "neutral"} for i in range(300)]
    placed = _placement(ingest_dataset(_spec(review_sentiment_spec, tmp_path, rows, "v2"), tmp_path / "a").path)
    expected = {f"x{xxh64(r['text']):016x}": assign_split_v2(normalise(r["text"]), (0.8, 0.1, 0.1), "aicd")
                for r in rows}
    assert placed == expected and len(set(placed.values())) == 3
    relabeled = [dict(r, label="positive") for r in rows]
    (tmp_path / "b").mkdir()
    again = ingest_dataset(_spec(review_sentiment_spec, tmp_path / "b", relabeled, "v2"), tmp_path / "b" / "out")
    assert _placement(again.path) == placed


def test_v2_near_duplicates_share_a_split_and_are_quarantined(tmp_path, review_sentiment_spec):
    rows = [{"text": "The tablets helped a lot", "label": "positive"},
            {"text": "  the TABLETS helped   a lot ", "label": "positive"},
            {"text": "The tablets helped a lot", "label": "positive"},
            {"text": "ＴＨＥ tablets helped a lot", "label": "negative"}]
    result = ingest_dataset(_spec(review_sentiment_spec, tmp_path, rows, "v2"), tmp_path / "out")
    assert result.quarantine_counts == {"near-duplicate": 1, "duplicate": 1, "conflicting-label": 1}
    keys = {assign_split_v2(normalise(r["text"]), (0.8, 0.1, 0.1), "aicd") for r in rows}
    assert len(keys) == 1


def test_v2_leakage_and_duplicate_ids_with_a_split_key(tmp_path, review_sentiment_spec):
    rows = [{"id": f"r{i}", "user": f"u{i}", "text": f"same words {i % 40}", "label": "neutral"} for i in range(200)]
    rows.append({"id": "r0", "user": "u0", "text": "a new text", "label": "neutral"})
    spec = _spec(review_sentiment_spec, tmp_path, rows, "v2")
    spec["task"]["id_field"] = "id"
    spec["data"]["split"] = {"key": "user"}
    spec["data"]["quality"]["dedupe"] = False
    result = ingest_dataset(spec, tmp_path / "out")
    assert result.quarantine_counts["duplicate-id"] == 1 and result.quarantine_counts["leakage"] > 0
    texts = {}
    for split in SPLITS:
        for row in read_split(result.path, split):
            assert texts.setdefault(normalise(row["text"]), split) == split


@pytest.mark.parametrize("parent_scheme,spec_scheme", [("v1", "v2"), ("v2", None)])
def test_a_parent_of_another_scheme_is_refused(parent_scheme, spec_scheme, tmp_path, review_sentiment_spec):
    parent = ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, parent_scheme), tmp_path / "parent")
    with pytest.raises(DataError) as err:
        ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, spec_scheme), tmp_path / "child",
                       parent=parent.path)
    assert str(err.value).startswith(f"`data.row_hash` is '{spec_scheme or 'v1'}' but the parent data set ")
    assert f"set `data.row_hash: {parent_scheme}` in the spec" in str(err.value)
    assert not (tmp_path / "child").exists()
    same = ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, parent_scheme), tmp_path / "ok",
                          parent=parent.path)
    assert same.parent == parent.fingerprint


def test_an_unknown_scheme_names_the_field(review_sentiment_spec):
    review_sentiment_spec["data"]["row_hash"] = "v3"
    with pytest.raises(SpecError, match=r"`data.row_hash` must be one of 'v1' or 'v2', got 'v3'"):
        parse_spec(review_sentiment_spec)


def test_a_version_written_by_labeling_keeps_its_scheme(tmp_path, review_sentiment_spec):
    task = parse_spec(review_sentiment_spec).task
    splits = {"train": [{"id": "a", "text": "good", "label": "positive", "source": "s"}], "validation": [],
              "test": []}
    card = write_version(tmp_path / "v", task, splits, [], None, [], row_hash="v2")
    assert card["row_hash"] == "v2" and card["fingerprint"] == fingerprint(splits, "v2") != fingerprint(splits)


def test_digest_map_returns_the_newest_value_of_a_key_put_again():
    m = DigestMap(recent_limit=3, unsigned=True)
    for value, key in enumerate([5, 2**64 - 1, 7, 5, 9, 2**63, 5]):
        m.put(key, value)
    assert m.get(5) == 6 and m.get(2**64 - 1) == 1 and m.get(2**63) == 5 and m.get(8) is None


_ALPHABET = "aZ09 \t\n.,!?'&-_ßÄéİıﬁ²①ＡⅣ\u00a0\u2003\u0301😀"


@pytest.mark.parametrize("seed", range(5))
def test_fast_normalise_and_count_equal_the_definitions(seed):
    rng = random.Random(seed)
    texts = ["".join(rng.choice(_ALPHABET[: 17 if i % 2 else None]) for _ in range(rng.randint(0, 40)))
             for i in range(2000)]
    for text in texts:
        slow = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
        assert normalise(text) == slow
        assert normalise_and_count(text, approx_tokens) == (slow, approx_tokens(text))
        assert normalise_and_count(text, len) == (slow, len(text))


@pytest.mark.parametrize("task", ["cls", "lm"])
def test_v1_and_v2_reject_the_same_rows_for_the_same_reasons(task, tmp_path, review_sentiment_spec,
                                                             support_bot_spec, monkeypatch):
    """Only ids and splits depend on the scheme (v2 classification keeps one digest map instead of two).

    The digest maps fold into their sorted arrays every 100 entries here, so lookups go through the
    bit filter and the arrays too."""
    monkeypatch.setattr(DigestMap.__init__, "__defaults__", (100, False))
    rng = random.Random(3)
    words = ["Good", "bad", "ＯＫ", "fine", "slow", "fast", "café", "CAFÉ"]
    rows = []
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _word in range(3)) + rng.choice(["", " ", "  !"])
        if task == "cls":
            rows.append({"text": text, "label": rng.choice(["negative", "neutral", "positive"])})
        else:
            rows.append({"instruction": text, "response": rng.choice(["Yes.", "yes", "No.", "Maybe"])})
    base = review_sentiment_spec if task == "cls" else support_bot_spec
    fields = ("text", "label") if task == "cls" else ("instruction", "response")
    kept = {}
    for scheme in ("v1", "v2"):
        result = ingest_dataset(_spec(base, tmp_path, rows, scheme), tmp_path / scheme)
        kept[scheme] = (result.quarantine_counts, sorted(tuple(r[f] for f in fields) for s in SPLITS
                                                         for r in read_split(result.path, s)))
    assert kept["v1"] == kept["v2"]
    reasons = kept["v2"][0]
    assert reasons["duplicate"] > 0 and reasons["near-duplicate"] > 0
    assert task == "lm" or reasons["conflicting-label"] > 0


@pytest.mark.parametrize("parent_scheme,spec_scheme", [("v1", "v2"), ("v2", None)])
def test_a_parent_passed_by_reference_has_its_scheme_checked(parent_scheme, spec_scheme, tmp_path,
                                                             review_sentiment_spec):
    """The pipeline passes the parent as a string (the ingest step's parent_fingerprint): parent_ref puts
    the scheme next to the fingerprint, so the check runs there as for a directory; fingerprints stay."""
    from aicd.components.data.ingest import parent_ref

    parent = ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, parent_scheme), tmp_path / "parent")
    ref = parent_ref(parent.card)
    assert ref == f"{parent.fingerprint}@{parent_scheme}"
    with pytest.raises(DataError) as err:
        ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, spec_scheme), tmp_path / "child", parent=ref)
    assert str(err.value).startswith(f"`data.row_hash` is '{spec_scheme or 'v1'}' but the parent data set {ref} ")
    assert not (tmp_path / "child").exists()
    same = ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, parent_scheme), tmp_path / "ok", parent=ref)
    assert same.parent == same.card["parent"] == parent.fingerprint  # the card records the bare fingerprint


def test_a_bare_parent_fingerprint_is_refused_under_v2_and_an_unknown_scheme_everywhere(tmp_path,
                                                                                         review_sentiment_spec):
    fp = "sha256:" + "0" * 64
    with pytest.raises(DataError) as err:
        ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, "v2"), tmp_path / "a", parent=fp)
    assert "does not say its row hash" in str(err.value) and f"{fp}@v2" in str(err.value)
    with pytest.raises(DataError) as err:
        ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, None), tmp_path / "b", parent=f"{fp}@v3")
    assert "'v3', not one of ['v1', 'v2']" in str(err.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    legacy = ingest_dataset(_spec(review_sentiment_spec, tmp_path, CLASSIFY, None), tmp_path / "c", parent=fp)
    assert legacy.parent == fp  # v1 lineages made before parent_ref keep working
