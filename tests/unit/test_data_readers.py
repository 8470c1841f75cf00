"""Readers: every supported format, folders, zip archives and the chatterbot YAML, streamed."""

import io
import zipfile

import pytest
from helpers.data import good_review_rows, jsonl, write

from aicd.components.data.readers import Record, SourceFiles
from aicd.components.errors import DataError

ROWS = good_review_rows()


def _parquet_bytes(rows) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _delimited(rows, sep: str) -> bytes:
    lines = [sep.join(rows[0])] + [sep.join(str(v) for v in r.values()) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _values(uri: str, fmt: str = "auto", include: str | None = None) -> list[dict]:
    records = list(SourceFiles(uri, fmt, include).records())
    assert all(isinstance(r, Record) and r.reason is None for r in records), records
    return [r.values for r in records]


@pytest.mark.parametrize("name,content,fmt", [
    ("rows.jsonl", jsonl(ROWS), "auto"),
    ("rows.ndjson", jsonl(ROWS), "auto"),
    ("rows.csv", _delimited(ROWS, ","), "auto"),
    ("rows.tsv", _delimited(ROWS, "\t"), "auto"),
    ("rows.txt", _delimited(ROWS, "\t"), "tsv"),
    ("rows.parquet", _parquet_bytes(ROWS), "auto"),
    ("rows.data", jsonl(ROWS), "jsonl"),
])
def test_single_files(name, content, fmt, tmp_path):
    assert _values(write(tmp_path / name, content), fmt) == ROWS


def test_csv_quoting_multiline_and_unnamed_index(tmp_path):
    content = b'\tdrug\treview\trating\n7\tA\t"""Good, &#039;really&#039;\nstill good"""\tpositive\n'
    (values,) = _values(write(tmp_path / "d.tsv", content))
    assert values == {"unnamed_0": "7", "drug": "A", "review": '"Good, &#039;really&#039;\nstill good"',
                      "rating": "positive"}


def test_folder_reads_known_files_in_order_and_include_filters(tmp_path):
    write(tmp_path / "src" / "b.jsonl", jsonl(ROWS[3:]))
    write(tmp_path / "src" / "a" / "first.csv", _delimited(ROWS[:3], ","))
    write(tmp_path / "src" / "README.md", b"# not data\n")
    write(tmp_path / "src" / ".hidden.jsonl", b"garbage\n")
    files = SourceFiles(str(tmp_path / "src"))
    assert [r.values for r in files.records()] == ROWS
    assert files.files == ["a/first.csv", "b.jsonl"]
    assert _values(str(tmp_path / "src"), include="*.jsonl") == ROWS[3:]


def test_zip_of_mixed_formats(tmp_path):
    path = tmp_path / "bundle.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("part1.jsonl", jsonl(ROWS[:2]))
        zf.writestr("dir/part2.parquet", _parquet_bytes(ROWS[2:4]))
        zf.writestr("part3.csv", _delimited(ROWS[4:], ","))
        zf.writestr("__MACOSX/._part1.jsonl", b"\x00junk")
    assert sorted(_values(str(path)), key=lambda r: r["id"]) == ROWS


def test_zip_with_explicit_format_and_include(tmp_path):
    path = tmp_path / "reviews.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.tsv", _delimited(ROWS[:4], "\t"))
        zf.writestr("test.tsv", _delimited(ROWS[4:], "\t"))
        zf.writestr("notes.csv", b"a,b\n1,2\n")
    assert len(_values(str(path), "tsv")) == 6
    assert _values(str(path), "tsv", include="train*") == ROWS[:4]


def test_saved_datasets_folder_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert _values(str(tmp_path / "ds")) == ROWS
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                          "test": datasets.Dataset.from_list(ROWS[4:])}).save_to_disk(str(tmp_path / "dd"))
    assert _values(str(tmp_path / "dd"), "datasets") == ROWS
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in (tmp_path / "ds").rglob("*"):
            zf.write(p, f"export/{p.relative_to(tmp_path / 'ds')}")
    assert _values(str(archive)) == ROWS


def test_chatterbot_yaml_pairs_and_topic(tmp_path):
    content = (b"categories:\n- Greetings\n- hello\nconversations:\n- - Hi\n  - Hello there\n  - How are you?\n"
               b"- - Bye\n  - See you\n- - lonely\n")
    records = list(SourceFiles(write(tmp_path / "greet.yml", content)).records())
    assert [r.values for r in records if r.reason is None] == [
        {"instruction": "Hi", "response": "Hello there", "topic": "greetings"},
        {"instruction": "Hello there", "response": "How are you?", "topic": "greetings"},
        {"instruction": "Bye", "response": "See you", "topic": "greetings"},
    ]
    assert [(r.reason, r.line) for r in records if r.reason] == [("missing-field", 3)]


def test_chatterbot_corpus_package():
    files = SourceFiles("pkg://chatterbot_corpus/data/english", "chatterbot-yaml")
    records = list(files.records())
    assert len(files.files) == 21 and len(records) > 2000
    topics = {r.values["topic"] for r in records if r.values}
    assert {"ai", "greetings", "tech support"} <= topics


@pytest.mark.parametrize("setup,fmt,message", [
    (lambda p: write(p / "x.yml", b"just: [a mapping"), "auto", "x.yml is not valid YAML"),
    (lambda p: write(p / "x.yml", b"categories: [a]\n"), "auto", "x.yml has no `conversations` list"),
    (lambda p: write(p / "x.parquet", b"PAR1 not really"), "auto", "x.parquet is not a readable Parquet file"),
    (lambda p: write(p / "x.zip", b"PK\x03\x04 broken"), "auto", "is not a readable zip archive"),
    (lambda p: (write(p / "d" / "notes.md", b"hi"), str(p / "d"))[1], "auto", "holds no data files of format auto"),
    (lambda p: (write(p / "d" / "a.csv", b"a\n1\n"), str(p / "d"))[1], "jsonl", "holds no data files of format jsonl"),
    (lambda p: (write(p / "d" / "a.csv", b"a\n1\n"), str(p / "d"))[1], "datasets",
     "is not a folder saved by `datasets`"),
])
def test_unreadable_sources(setup, fmt, message, tmp_path):
    uri = setup(tmp_path)
    with pytest.raises(DataError) as info:
        list(SourceFiles(uri, fmt).records())
    assert message in info.value.message and info.value.hint


def test_jsonl_is_streamed_not_read_whole(tmp_path):
    """The reader pulls lines lazily: the first record arrives before the file is consumed."""
    path = write(tmp_path / "big.jsonl", jsonl(ROWS) * 2000)
    files = SourceFiles(path)
    records = files.records()
    first = next(records)
    assert first.values == ROWS[0]
    import gc

    handles = [o for o in gc.get_objects() if isinstance(o, io.BufferedReader) and getattr(o, "name", "") == path]
    assert handles and handles[0].tell() < 200_000  # one buffer in, not the ~480 kB file
    records.close()
