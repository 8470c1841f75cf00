"""Every kind of bad row is quarantined with its reason; good rows are never rejected."""

import json

import pytest
from helpers.data import good_pair_rows, good_review_rows, jsonl, with_data, write

from aicd.components.data.format import read_quarantine, read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.data.split import assign_split
from aicd.components.data.validate import REASONS, approx_tokens, normalise
from aicd.components.errors import DataError

GOOD = jsonl(good_review_rows())
GOOD_CSV = b"id,text,label\n" + b"".join(f"{i},{t},{lab}\n".encode() for i, t, lab in
                                          (r.values() for r in good_review_rows()))
LONG = " ".join(["word"] * 80)


def _ids_in_two_splits() -> tuple[str, str]:
    """Two ids that the default split (salt aicd, 0.8/0.1/0.1) puts in different splits."""
    first = assign_split("a0", (0.8, 0.1, 0.1), "aicd")
    for n in range(1, 200):
        if assign_split(f"a{n}", (0.8, 0.1, 0.1), "aicd") != first:
            return "a0", f"a{n}"
    raise AssertionError("no pair of ids in different splits")


A, B = _ids_in_two_splits()

# (case, task, file name, content, expected reason, rows expected good)
CASES = [
    ("invalid-json", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "cut off", "label": \n', "invalid-json"),
    ("json-list-line", "cls", "rows.jsonl", GOOD + b'["not", "an", "object"]\n', "wrong-type"),
    ("wrong-type", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": 42, "label": "positive"}\n', "wrong-type"),
    ("wrong-label-type", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "x y z", "label": [1]}\n', "wrong-type"),
    ("missing-field", "cls", "rows.jsonl", GOOD + b'{"id": "b", "label": "positive"}\n', "missing-field"),
    ("null-field", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": null, "label": "positive"}\n',
     "missing-field"),
    ("missing-id", "cls", "rows.jsonl", GOOD + b'{"text": "no id here", "label": "positive"}\n', "missing-field"),
    ("unknown-label", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "so so", "label": "great"}\n',
     "unknown-label"),
    ("empty-text", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "  \\t ", "label": "neutral"}\n',
     "empty-text"),
    ("too-long", "cls", "rows.jsonl", GOOD + jsonl([{"id": "b", "text": LONG, "label": "neutral"}]), "too-long"),
    ("too-short", "cls", "rows.jsonl", GOOD + jsonl([{"id": "b", "text": "ok", "label": "neutral"}]),
     "too-short"),
    ("invalid-utf8", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "caf\xe9 au lait", "label": "positive"}\n',
     "invalid-utf8"),
    ("bom-mid-file", "cls", "rows.jsonl",
     GOOD + b'\xef\xbb\xbf{"id": "b", "text": "after a bom", "label": "positive"}\n', "bom"),
    ("bom-in-text", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "zero\\ufeffwidth", "label": "positive"}\n',
     "bom"),
    ("mixed-line-endings", "cls", "rows.jsonl",
     GOOD.replace(b"\n", b"\r\n", 3) + b'{"id": "b", "text": "one c r", "label": "neutral"}\r'
     b'{"id": "c", "text": "glued on", "label": "neutral"}\n', "mixed-line-endings"),
    ("duplicate-id", "cls", "rows.jsonl", GOOD + b'{"id": "g1", "text": "another text entirely", "label": "neutral"}\n',
     "duplicate-id"),
    ("nul-byte-raw", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "nul\x00here", "label": "positive"}\n',
     "nul-byte"),
    ("nul-byte-escaped", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "nul\\u0000here", "label": "positive"}\n',
     "nul-byte"),
    ("lone-surrogate", "cls", "rows.jsonl", GOOD + b'{"id": "b", "text": "bad \\udc80 escape", "label": "positive"}\n',
     "invalid-utf8"),
    ("duplicate", "cls", "rows.jsonl",
     GOOD + jsonl([{"id": "b", "text": "the tablets helped my back pain a lot", "label": "positive"}]), "duplicate"),
    ("near-duplicate", "cls", "rows.jsonl",
     GOOD + jsonl([{"id": "b", "text": "The  tablets helped my BACK pain a lot", "label": "positive"}]),
     "near-duplicate"),
    ("conflicting-label", "cls", "rows.jsonl",
     GOOD + jsonl([{"id": "b", "text": "THE tablets helped\tmy back pain a lot", "label": "negative"}]),
     "conflicting-label"),
    ("ragged-csv-row", "cls", "rows.csv", GOOD_CSV + b"b,too,many,cells\n", "ragged-row"),
    ("csv-unclosed-quote", "cls", "rows.csv",  # every good row after it is still read
     b"\n".join(GOOD_CSV.split(b"\n")[:3]) + b'\nb,"never closed,positive\n' + b"\n".join(GOOD_CSV.split(b"\n")[3:]),
     "unclosed-quote"),
    ("line-too-long", "cls", "rows.jsonl",
     GOOD + b'{"id": "b", "text": "' + b"x " * (1 << 20) + b'", "label": "neutral"}\n', "line-too-long"),
    ("csv-invalid-utf8", "cls", "rows.csv", GOOD_CSV + b"b,caf\xe9 au lait,positive\n", "invalid-utf8"),
    ("csv-nul-byte", "cls", "rows.csv", GOOD_CSV + b"b,nul\x00here,positive\n", "nul-byte"),
    ("csv-bare-cr", "cls", "rows.csv", GOOD_CSV.replace(b"\n", b"\r\n") + b"b,one c\rr,positive\n",
     "mixed-line-endings"),
    ("leakage", "lm", "rows.jsonl", jsonl(good_pair_rows() + [
        {"id": A, "instruction": "Where is the station?", "response": "Two streets north."},
        {"id": B, "instruction": "where  is the STATION?", "response": "Next to the bank."}]), "leakage"),
]


@pytest.mark.parametrize("case,task,name,content,reason", CASES, ids=[c[0] for c in CASES])
def test_bad_row_is_quarantined_with_its_reason(case, task, name, content, reason, tmp_path,
                                               review_sentiment_spec, support_bot_spec):
    path = write(tmp_path / name, content)
    if task == "cls":
        review_sentiment_spec["task"]["id_field"] = "id"
        spec = with_data(review_sentiment_spec, [{"uri": path}], quality={"min_tokens": 2, "max_tokens": 40})
        good_ids = {r["id"] for r in good_review_rows()}
    else:
        support_bot_spec["task"]["id_field"] = "id"
        spec = with_data(support_bot_spec, [{"uri": path}], split={"key": "id"})
        good_ids = {r["id"] for r in good_pair_rows()} | {A}
    result = ingest_dataset(spec, tmp_path / "out")
    quarantine = read_quarantine(tmp_path / "out")
    assert [q["reason"] for q in quarantine] == [reason], quarantine
    assert quarantine[0]["detail"] and quarantine[0]["file"] == name and quarantine[0]["line"] >= 1
    assert "row" in quarantine[0] or quarantine[0]["raw"] is not None
    kept = {r["id"] for s in ("train", "validation", "test") for r in read_split(tmp_path / "out", s)}
    if case == "mixed-line-endings":  # CRLF lines are fine; only the row glued with a bare CR is quarantined
        assert kept == good_ids
    else:
        assert kept == good_ids, "a good row was rejected"
    assert result.quarantine_counts == {reason: 1}


def test_the_table_covers_every_reason():
    assert {c[4] for c in CASES} == set(REASONS) - {"invalid-csv"}
    assert len({c[4] for c in CASES}) >= 12


def test_bom_at_file_start_and_crlf_are_accepted(tmp_path, review_sentiment_spec):
    path = write(tmp_path / "rows.jsonl", b"\xef\xbb\xbf" + GOOD.replace(b"\n", b"\r\n"))
    spec = with_data(review_sentiment_spec, [{"uri": path}])
    result = ingest_dataset(spec, tmp_path / "out")
    assert sum(result.counts.values()) == len(good_review_rows()) and result.quarantined == 0


def test_repairs_html_entities_and_line_endings(tmp_path, review_sentiment_spec):
    rows = good_review_rows() + [{"id": "r", "text": "I&#039;m fine &amp; happy\r\nreally", "label": "positive"}]
    spec = with_data(review_sentiment_spec, [{"uri": write(tmp_path / "r.jsonl", jsonl(rows))}])
    card = ingest_dataset(spec, tmp_path / "out").card
    texts = {r["text"] for s in ("train", "validation", "test") for r in read_split(tmp_path / "out", s)}
    assert "I'm fine & happy\nreally" in texts
    assert card["repairs"] == {"html-entities": 1, "line-endings": 1}
    spec["data"]["sources"][0]["unescape_html"] = False
    ingest_dataset(spec, tmp_path / "raw")
    texts = {r["text"] for s in ("train", "validation", "test") for r in read_split(tmp_path / "raw", s)}
    assert "I&#039;m fine &amp; happy\nreally" in texts


def test_columns_and_label_map(tmp_path, review_sentiment_spec):
    rows = [{"review": t, "stars": {"positive": 5, "negative": 1, "neutral": 3}[lab]} for _, t, lab in
            (r.values() for r in good_review_rows())]
    source = {"uri": write(tmp_path / "r.jsonl", jsonl(rows)), "columns": {"text": "review", "label": "stars"},
              "label_map": {"1": "negative", "3": "neutral", "5": "positive"}}
    ingest_dataset(with_data(review_sentiment_spec, [source]), tmp_path / "out")
    got = {(r["text"], r["label"]) for s in ("train", "validation", "test") for r in read_split(tmp_path / "out", s)}
    assert got == {(t, lab) for _, t, lab in (r.values() for r in good_review_rows())}


def test_too_many_bad_rows_fails_with_a_summary(tmp_path, review_sentiment_spec):
    content = GOOD + b"not json\n" * 3 + b'{"text": "x y", "label": "great"}\n'
    spec = with_data(review_sentiment_spec, [{"uri": write(tmp_path / "r.jsonl", content)}],
                     quality={"max_bad_fraction": 0.2})
    with pytest.raises(DataError) as info:
        ingest_dataset(spec, tmp_path / "out")
    msg = str(info.value)
    assert "4 of 10 rows (40.0%) are bad, more than data.quality.max_bad_fraction 0.2" in msg
    assert "3 invalid-json, 1 unknown-label" in msg and "r.jsonl:7 invalid-json" in msg
    assert "raise data.quality.max_bad_fraction" in info.value.hint
    assert not (tmp_path / "out").exists(), "nothing half-written"


def test_duplicates_are_quarantined_but_not_counted_as_bad(tmp_path, review_sentiment_spec):
    content = GOOD * 3
    spec = with_data(review_sentiment_spec, [{"uri": write(tmp_path / "r.jsonl", content)}],
                     quality={"max_bad_fraction": 0.0})
    result = ingest_dataset(spec, tmp_path / "out")
    assert result.quarantine_counts == {"duplicate": 12} and result.card["bad_fraction"] == 0.0
    assert result.card["duplicate_fraction"] == pytest.approx(12 / 18, abs=1e-5)


@pytest.mark.parametrize("content,uri_name,error", [
    (None, "absent.jsonl", "'{dir}/absent.jsonl' does not exist"),
    (b"", "empty.jsonl", "empty.jsonl is empty"),
    (b"\n\n  \n", "blank.jsonl", "blank.jsonl is empty"),
    (b"text,label\n", "header-only.csv", "header-only.csv is empty"),
    (b"not json\n{}\n", "all-bad.jsonl", "has no valid row: 2 read, all quarantined (1 invalid-json, 1 missing-field)"),
    (b"a,b\n", "data.xlsx", "cannot tell the format of"),
])
def test_unusable_sources_give_clear_errors(content, uri_name, error, tmp_path, review_sentiment_spec):
    from aicd.components.errors import AicdError

    path = tmp_path / uri_name
    if content is not None:
        path.write_bytes(content)
    spec = with_data(review_sentiment_spec, [{"uri": str(path)}])
    with pytest.raises(AicdError) as info:
        ingest_dataset(spec, tmp_path / "out")
    assert error.format(dir=tmp_path) in info.value.message
    assert info.value.hint
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,tokens", [("", 0), ("hello", 2), ("What is AI?", 3),
                                         ("a b c d e f g h", 8), ("x" * 40, 10)])
def test_approx_tokens(text, tokens):
    assert approx_tokens(text) == tokens


@pytest.mark.parametrize("a,b,same", [
    ("What is AI?", "  what IS\tai?", True), ("Ｆｕｌｌ width", "full WIDTH", True),
    ("What is AI?", "what is ai", False), ("C++", "C#", False), ("👍👍", "👎👎", False), ("1.5", "15", False),
    ("tabs\tand\nlines", "tabs and lines", True), ("Straße", "STRASSE", True),
    ("What is AI?", "What is ML?", False),
])
def test_normalise(a, b, same):
    assert (normalise(a) == normalise(b)) is same


def test_quarantine_keeps_the_raw_line(tmp_path, review_sentiment_spec):
    spec = with_data(review_sentiment_spec, [{"uri": write(tmp_path / "r.jsonl", GOOD + b"{broken\n")}])
    ingest_dataset(spec, tmp_path / "out")
    (entry,) = read_quarantine(tmp_path / "out")
    assert entry["raw"] == "{broken" and entry["line"] == 7 and entry["source"] == "r"
    assert json.loads(json.dumps(entry)) == entry
