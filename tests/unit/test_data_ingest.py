"""Ingest end to end: stable splits, versioning, max_rows, the card, the profile, the examples."""

import json
import random

import pytest
from helpers.data import jsonl, with_data, write

from aicd.components.cards import verify_card
from aicd.components.data import format as data_format
from aicd.components.data.format import SPLITS, DatasetWriter, read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.data.profile import profile_dataset
from aicd.components.errors import DataError, IntegrityError

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _rows(n: int, start: int = 0, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"r{i}", "text": f"{' '.join(rng.choices(WORDS, k=6))} number {i}",
             "label": rng.choice(["negative", "neutral", "positive"])} for i in range(start, start + n)]


def _placement(path) -> dict[str, str]:
    return {r["id"]: s for s in SPLITS for r in read_split(path, s)}


def _ingest(spec_base, tmp_path, rows, out, **data):
    uri = write(tmp_path / f"{out}.jsonl", jsonl(rows))
    return ingest_dataset(with_data(spec_base, [{"uri": uri, "name": "rows"}], **data), tmp_path / out)


@pytest.mark.parametrize("key", [None, "id"])
def test_appending_rows_never_moves_a_row(key, tmp_path, review_sentiment_spec):
    review_sentiment_spec["task"]["id_field"] = "id"
    split = {"key": key} if key else {}
    old = _rows(400)
    before = _placement(_ingest(review_sentiment_spec, tmp_path, old, "v1", split=split).path)
    after = _placement(_ingest(review_sentiment_spec, tmp_path, old + _rows(300, start=400, seed=1), "v2",
                               split=split).path)
    assert len(before) == 400 and len(after) == 700
    assert {i: after[i] for i in before} == before
    sizes = {s: list(after.values()).count(s) for s in SPLITS}
    assert 0.72 * 700 < sizes["train"] < 0.88 * 700 and sizes["validation"] > 30 and sizes["test"] > 30


def test_fingerprint_ignores_order_and_tracks_content(tmp_path, review_sentiment_spec):
    rows = _rows(60)
    a = _ingest(review_sentiment_spec, tmp_path, rows, "a")
    b = _ingest(review_sentiment_spec, tmp_path, list(reversed(rows)), "b")
    changed = [dict(r) for r in rows]
    changed[5]["text"] += " edited"
    c = _ingest(review_sentiment_spec, tmp_path, changed, "c")
    d = _ingest(review_sentiment_spec, tmp_path, rows, "d", split={"salt": "other"})
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert a.fingerprint.startswith("sha256:") and len(a.fingerprint) == 71


def test_parent_version_from_directory_or_fingerprint(tmp_path, review_sentiment_spec):
    first = _ingest(review_sentiment_spec, tmp_path, _rows(30), "v1")
    spec = with_data(review_sentiment_spec, [{"uri": str(tmp_path / "v1.jsonl")}])
    second = ingest_dataset(spec, tmp_path / "v2", parent=tmp_path / "v1")
    third = ingest_dataset(spec, tmp_path / "v3", parent=first.fingerprint)
    assert second.parent == third.parent == first.fingerprint == second.card["parent"]
    assert first.card["parent"] is None
    (tmp_path / "v1" / "train.parquet").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        ingest_dataset(spec, tmp_path / "v4", parent=tmp_path / "v1")


def test_max_rows_keeps_a_stable_subset_across_splits(tmp_path, review_sentiment_spec):
    small = _placement(_ingest(review_sentiment_spec, tmp_path, _rows(300), "s", max_rows=100).path)
    grown = _ingest(review_sentiment_spec, tmp_path, _rows(330), "g", max_rows=100)
    big = _placement(grown.path)
    assert len(small) == len(big) == 100 and grown.not_selected == 230
    assert len(set(small) & set(big)) >= 85  # a few low-hash newcomers displace old rows; the rest stay
    assert {i: big[i] for i in set(small) & set(big)} == {i: small[i] for i in set(small) & set(big)}
    assert set(big.values()) == set(SPLITS), "the subset spans every split, not just the lowest split hashes"


def test_card_fields_of_the_contract(tmp_path, review_sentiment_spec):
    rows = _rows(50) + [{"id": "bad", "text": "x y", "label": "great"}]
    result = _ingest(review_sentiment_spec, tmp_path, rows, "out")
    card = verify_card(result.path, kind="dataset")
    for name in ("fingerprint", "parent", "sources", "counts", "label_distribution", "length_stats",
                 "quarantine_counts", "task"):
        assert name in card, name
    assert card["task"] == "text-classification" and card["quarantine_counts"] == {"unknown-label": 1}
    assert sum(card["counts"].values()) == 50 == sum(card["label_distribution"].values())
    assert card["sources"][0] | {"files": None} == {
        "name": "rows", "uri": str(tmp_path / "out.jsonl"), "format": "auto", "files": None, "rows_read": 51,
        "rows_valid": 50, "rows_quarantined": 1, "quarantine_counts": {"unknown-label": 1}}
    assert card["length_stats"]["text"]["min"] >= 2 and card["length_stats"]["text"]["unit"] == "tokens"
    assert sum(card["length_histogram"]["text"]["counts"]) == 50
    assert card["rows_per_source"] == {"rows": 50}
    rows_out = read_split(result.path, "train")
    # The source's own `id` column is kept as `src_id`: without task.id_field, ids are content hashes.
    assert set(rows_out[0]) == {"id", "text", "label", "source", "src_id"} and rows_out[0]["source"] == "rows"
    assert rows_out[0]["id"].startswith("h") and rows_out[0]["src_id"].startswith("r")


def test_profile_report_embeds_its_plots(tmp_path, review_sentiment_spec):
    rows = _rows(40) + [{"id": "bad", "text": "", "label": "neutral"}]
    result = _ingest(review_sentiment_spec, tmp_path, rows, "out")
    report = profile_dataset(result.path, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert report.plots == ["Length histogram", "Label distribution by split", "Rows per source",
                            "Quarantine reasons"]
    assert page.count('<img alt="') == 4 and page.count("src=\"data:image/png;base64,iVBORw0KGgo") == 4
    assert result.fingerprint in page and "empty-text" in page


def test_profile_refuses_a_damaged_dataset(tmp_path, review_sentiment_spec):
    result = _ingest(review_sentiment_spec, tmp_path, _rows(20), "out")
    (result.path / "quarantine.jsonl").write_text('{"reason": "forged"}\n')
    with pytest.raises(IntegrityError, match="quarantine.jsonl changed"):
        profile_dataset(result.path, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_writer_streams_batches_with_evolving_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(data_format, "BATCH_ROWS", 3)
    rows = [{"id": str(i), "text": f"t{i}"} for i in range(5)] + [{"id": "5", "text": "t5", "topic": "late"}]
    with DatasetWriter(tmp_path / "ds") as writer:
        for row in rows:
            writer.add("train", row)
        assert len(writer._parts["train"]) == 2  # two batches already on disk, none in memory
        writer.quarantine({"reason": "x"})
        card = writer.finish(task="causal-lm")
    got = read_split(tmp_path / "ds", "train")
    assert [r["id"] for r in got] == [str(i) for i in range(6)]
    assert got[0]["topic"] is None and got[5]["topic"] == "late"
    assert card["counts"] == {"train": 6, "validation": 0, "test": 0}
    assert sorted(card["files"]) == ["quarantine.jsonl", "test.parquet", "train.parquet", "validation.parquet"]


@pytest.mark.parametrize("batch_rows, batch_bytes, row_groups", [
    (5, None, [2, 2, 1, 2, 2, 1, 2]),  # batches of 5 rows
    (100, 15, [2, 1, 2, 1, 2, 1, 2, 1]),  # batches that reach 15 characters: 3 rows (ids "0".."11", texts "abcd")
])
def test_writer_holds_one_part_and_lays_out_each_batch(batch_rows, batch_bytes, row_groups, tmp_path, monkeypatch):
    """At most PART_ROWS rows a split wait in memory; the row groups are each batch's PART_ROWS slices, as when
    a whole batch was written as one part and read back in slices of that size."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(data_format, "PART_ROWS", 2)
    with DatasetWriter(tmp_path / "ds", batch_rows=batch_rows, batch_bytes=batch_bytes) as writer:
        for i in range(12):
            writer.add("train", {"id": str(i), "text": "abcd"})
            assert len(writer._batches["train"]) < 2
        writer.finish(task="causal-lm")
    meta = pq.ParquetFile(tmp_path / "ds" / "train.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == row_groups
    assert [r["id"] for r in read_split(tmp_path / "ds", "train")] == [str(i) for i in range(12)]


def test_writer_leaves_nothing_when_not_finished(tmp_path):
    with pytest.raises(DataError, match="was not finished"):
        with DatasetWriter(tmp_path / "ds") as writer:
            writer.add("train", {"id": "1"})
    assert list(tmp_path.iterdir()) == []


def _peak_ingest(tmp_path, spec_base, rows: int) -> tuple[int, int]:
    import tracemalloc

    path = tmp_path / f"big{rows}.jsonl"
    rng = random.Random(3)
    with open(path, "w") as fh:
        for i in range(rows):
            fh.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=1400)) + f" {i}", "label": "neutral"}) + "\n")
    spec = with_data(spec_base, [{"uri": str(path)}], quality={"max_tokens": 8192})
    tracemalloc.start()
    try:
        result = ingest_dataset(spec, tmp_path / f"out{rows}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(result.counts.values()) == rows
    return peak, path.stat().st_size


def test_memory_stays_bounded_for_a_large_jsonl(tmp_path, review_sentiment_spec, monkeypatch):
    """Doubling the input (long rows) barely moves the peak: rows stream, only batches and hashes stay.

    The card hashes each file in 1 MiB chunks (a constant ~2 MB); smaller chunks keep that out of the way.
    """
    from aicd.components import cards

    monkeypatch.setattr(data_format, "BATCH_BYTES", 128 << 10)
    monkeypatch.setattr(cards, "_CHUNK", 64 << 10)
    ingest_dataset(with_data(review_sentiment_spec, [{"uri": write(tmp_path / "w.jsonl", jsonl(_rows(5)))}]),
                   tmp_path / "warm")  # imports pyarrow & co. outside the measurement
    small_peak, small_size = _peak_ingest(tmp_path, review_sentiment_spec, 150)
    big_peak, big_size = _peak_ingest(tmp_path, review_sentiment_spec, 300)
    assert big_size > 2_500_000 and big_size > 1.9 * small_size
    assert big_peak - small_peak < 0.1 * (big_size - small_size), (small_peak, big_peak)
    assert big_peak < 0.5 * big_size, f"peak {big_peak / 1e6:.1f} MB for a {big_size / 1e6:.1f} MB file"


def test_support_bot_example_ingests(tmp_path, support_bot_spec):
    result = ingest_dataset(support_bot_spec, tmp_path / "out")
    card = result.card
    assert result.rows_read > 2000 and sum(result.counts.values()) > 1000
    assert card["quarantine_counts"]["duplicate"] > 1000  # tech_support.yml repeats its pairs on purpose
    assert card["bad_fraction"] < 0.2 and card["slice_distribution"]["topic"]["ai"] > 50
    row = read_split(result.path, "test")[0]
    assert {"id", "instruction", "response", "source", "topic"} <= set(row)


def test_review_sentiment_example_ingests(tmp_path, review_sentiment_spec):
    result = ingest_dataset(review_sentiment_spec, tmp_path / "out")
    card = result.card
    assert result.rows_read == 979 and sum(result.counts.values()) > 950
    assert set(card["label_distribution"]) == {"negative", "neutral", "positive"}
    assert card["sources"][0]["files"] == ["drugsComTest.tsv", "drugsComTrain.tsv"]
    texts = [r["text"] for s in SPLITS for r in read_split(result.path, s)]
    assert not any("&#039;" in t or "&amp;" in t for t in texts)
    assert sum("'" in t for t in texts) > 300 and card["repairs"]["html-entities"] > 500


def test_extra_columns_are_kept_as_strings(tmp_path, review_sentiment_spec):
    rows = [{**r, "meta": {"b": [1, 2], "a": None}, "score": 3.5, "flag": True} for r in _rows(12)]
    result = _ingest(review_sentiment_spec, tmp_path, rows, "out")
    row = read_split(result.path, "train")[0]
    assert (row["meta"], row["score"], row["flag"]) == ('{"a": null, "b": [1, 2]}', "3.5", "True")
    assert result.card["slice_distribution"]["flag"] == {"True": 12}


def test_ids_are_stable_content_hashes(tmp_path, review_sentiment_spec):
    rows = [{"text": r["text"], "label": r["label"]} for r in _rows(20)]
    first = _placement(_ingest(review_sentiment_spec, tmp_path, rows, "a").path)
    relabeled = [dict(r, label="neutral" if r["label"] != "neutral" else "positive") for r in rows]
    second = _placement(_ingest(review_sentiment_spec, tmp_path, relabeled, "b").path)
    assert first == second, "a label correction keeps the row's id and split"
    kept = _ingest(review_sentiment_spec, tmp_path, rows + rows[:3], "c", quality={"dedupe": False})
    ids = [i for i in _placement(kept.path)]
    assert len(ids) == 23 and sum(i.endswith("-2") for i in ids) == 3


def test_sources_are_merged_with_their_own_columns_and_label_maps(tmp_path, review_sentiment_spec):
    a = [{"text": r["text"], "label": r["label"]} for r in _rows(20)]
    b_rows = _rows(10, start=100, seed=7)
    b = "body,stars\n" + "".join(f"{r['text']},{ {'negative': 1, 'neutral': 3, 'positive': 5}[r['label']] }\n"
                                 for r in b_rows)
    b += f"{a[0]['text'].upper()},5\n"  # a near-duplicate of source a, across sources
    sources = [{"uri": write(tmp_path / "a.jsonl", jsonl(a)), "name": "app"},
               {"uri": write(tmp_path / "b.csv", b.encode()), "name": "survey", "columns": {"text": "body",
                "label": "stars"}, "label_map": {"1": "negative", "3": "neutral", "5": "positive"}}]
    result = ingest_dataset(with_data(review_sentiment_spec, sources), tmp_path / "out")
    card = result.card
    assert card["rows_per_source"] == {"app": 20, "survey": 10}
    assert [s["rows_read"] for s in card["sources"]] == [20, 11]
    expected = "near-duplicate" if a[0]["label"] == "positive" else "conflicting-label"
    assert card["quarantine_counts"] == {expected: 1}
    rows = {r["text"]: r for s in SPLITS for r in read_split(result.path, s)}
    assert all(rows[r["text"]]["label"] == r["label"] and rows[r["text"]]["source"] == "survey" for r in b_rows)
