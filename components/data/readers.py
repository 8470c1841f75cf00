"""Streaming readers: one data source (file, folder or zip archive) to raw records.

Formats: JSONL, CSV, TSV, Parquet, folders saved by ``datasets.save_to_disk``, and
the chatterbot corpus YAML (``format: chatterbot-yaml``: each file's
``conversations`` are lists ``[question, answer, ...]``; every consecutive pair is
a row ``{instruction, response, topic}``, ``topic`` being the file's first category,
lower-cased). ``format: auto`` picks the format from each file's extension.

Readers stream: JSONL and CSV/TSV line by line as bytes (also straight out of a zip
member), Parquet and Arrow batch by batch. Two exceptions, both small by nature: a
chatterbot YAML file is parsed whole, and a saved ``datasets`` folder inside a zip is
extracted to a temporary folder first (Arrow files need random access). Problems a reader can see (a line that is not
JSON, invalid UTF-8, NUL bytes, a byte-order mark inside the file, a bare carriage
return, a ragged CSV row) come out as records with a ``reason`` and the raw text,
for the quarantine. A byte-order mark at the start of a file and CRLF line endings
are normal and accepted.
"""

import fnmatch
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from aicd.components.data.delimited import read_delimited
from aicd.components.data.records import LINE_LIMIT, Record, lines
from aicd.components.data.records import bad_record as _bad
from aicd.components.errors import DataError
from aicd.components.uris import resolve_data

log = logging.getLogger(__name__)

EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".yml": "chatterbot-yaml", ".yaml": "chatterbot-yaml",
}
MAX_ARCHIVE_BYTES = 32 << 30  # uncompressed size of a zip source (a zip bomb is refused before reading)


def read_jsonl(fh: IO[bytes], name: str) -> Iterator[Record]:
    """JSON objects, one per line. Blank lines are skipped."""
    loads = json.loads
    for number, raw, too_long in lines(fh, LINE_LIMIT):
        if too_long:
            yield _bad(name, number, "line-too-long", f"the line is longer than {LINE_LIMIT} bytes; split the "
                       "record or shorten its text", raw)
            continue
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        if b"\x00" in line:
            yield _bad(name, number, "nul-byte", "the line contains NUL bytes", line.replace(b"\x00", b""))
            continue
        if line.startswith(b"\xef\xbb\xbf"):
            yield _bad(name, number, "bom", "a byte-order mark starts this line (were files concatenated?)",
                       line[3:])
            continue
        if b"\r" in line:
            yield _bad(name, number, "mixed-line-endings",
                       "a bare carriage return (CR) inside the line; use LF or CRLF line endings", line)
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _bad(name, number, "invalid-utf8", f"byte {err.start} is not UTF-8 ({err.reason})", line)
            continue
        try:
            value = loads(text)
        except ValueError as err:
            yield _bad(name, number, "invalid-json", str(err), text)
            continue
        if not isinstance(value, dict):
            yield _bad(name, number, "wrong-type", f"the line is a JSON {type(value).__name__}, expected an object",
                       text)
            continue
        yield Record(value, name, number)


def _parquet_batches(pf, name: str) -> Iterator[Record]:
    number = 0
    for batch in pf.iter_batches(batch_size=4096):
        for values in batch.to_pylist():
            number += 1
            yield Record(values, name, number)


def read_parquet(fh: IO[bytes] | Path, name: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise DataError(f"{name} is not a readable Parquet file ({err})", "check the file or its format") from None
    yield from _parquet_batches(pf, name)


def read_chatterbot(fh: IO[bytes], name: str) -> Iterator[Record]:
    """Question/answer pairs of one chatterbot corpus YAML file."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as err:
        raise DataError(f"{name} is not valid YAML ({err})", "fix the YAML syntax of the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise DataError(f"{name} has no `conversations` list", "a chatterbot corpus file needs "
                        "`categories: [...]` and `conversations: [[question, answer], ...]`")
    categories = doc.get("categories") or []
    topic = str(categories[0]).strip().lower() if categories else None
    for number, conv in enumerate(doc["conversations"], 1):
        if not isinstance(conv, list) or len(conv) < 2:
            yield _bad(name, number, "wrong-type" if not isinstance(conv, list) else "missing-field",
                       "a conversation must be a list of at least two statements", json.dumps(conv, default=str))
            continue
        for question, answer in zip(conv, conv[1:]):
            yield Record({"instruction": question, "response": answer, "topic": topic}, name, number)


def read_datasets_folder(folder: Path, name: str) -> Iterator[Record]:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (Arrow files)."""
    import pyarrow as pa

    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        for split in splits:
            yield from read_datasets_folder(folder / split, f"{name}/{split}")
        return
    if not (folder / "state.json").is_file():
        raise DataError(f"{name} is not a folder saved by `datasets` (no state.json or dataset_dict.json)",
                        "save it with Dataset.save_to_disk, or set the source's `format` to match its files")
    state = json.loads((folder / "state.json").read_text())
    number = 0
    for entry in state.get("_data_files", []):
        with pa.memory_map(str(folder / entry["filename"])) as src:
            for batch in pa.ipc.open_stream(src):
                for values in batch.to_pylist():
                    number += 1
                    yield Record(values, f"{name}/{entry['filename']}", number)


def _is_datasets_folder(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _reader(fmt: str) -> Callable[[IO[bytes], str], Iterator[Record]]:
    return {
        "jsonl": read_jsonl,
        "csv": lambda fh, name: read_delimited(fh, name, ","),
        "tsv": lambda fh, name: read_delimited(fh, name, "\t"),
        "parquet": read_parquet,
        "chatterbot-yaml": read_chatterbot,
    }[fmt]


def _pick(names: list[str], fmt: str, include: str | None) -> list[tuple[str, str]]:
    """(name, format) of the files to read among ``names`` (relative posix paths)."""
    chosen = []
    for name in sorted(names):
        base = name.rsplit("/", 1)[-1]
        if base.startswith(".") or name.startswith("__MACOSX/"):
            continue
        by_ext = EXTENSIONS.get(Path(base).suffix.lower())
        if include is not None:
            if not (fnmatch.fnmatch(name, include) or fnmatch.fnmatch(base, include)):
                continue
            file_fmt = by_ext if fmt == "auto" else fmt
        elif fmt == "auto":
            file_fmt = by_ext
        else:
            file_fmt = fmt if by_ext == fmt or (fmt == "tsv" and base.endswith(".txt")) else None
        if file_fmt is None:
            log.info("skipping %s: not a file of format %s", name, fmt)
            continue
        chosen.append((name, file_fmt))
    return chosen


class SourceFiles:
    """The files of one source and the format of each; records from :meth:`records`."""

    def __init__(self, uri: str, fmt: str = "auto", include: str | None = None):
        self.uri, self.fmt, self.include = uri, fmt, include
        self.path = resolve_data(uri)
        self.files: list[str] = []

    def records(self) -> Iterator[Record]:
        path = self.path
        if path.is_dir() and (self.fmt == "datasets" or _is_datasets_folder(path)):
            yield from self._checked(read_datasets_folder(path, path.name), path.name)
        elif path.is_dir():
            names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
            for name, fmt in self._chosen(names):
                with open(path / name, "rb") as fh:
                    yield from self._checked(_reader(fmt)(fh, name), name)
        elif path.suffix.lower() == ".zip" or (self.fmt == "auto" and zipfile.is_zipfile(path)):
            yield from self._zip(path)
        else:
            fmt = self.fmt if self.fmt != "auto" else EXTENSIONS.get(path.suffix.lower())
            if fmt is None or fmt == "datasets":
                raise DataError(f"cannot tell the format of {self.uri!r} from its extension {path.suffix!r}",
                                "set `format` on the source (jsonl, csv, tsv, parquet, chatterbot-yaml)")
            with open(path, "rb") as fh:
                yield from self._checked(_reader(fmt)(fh, path.name), path.name)

    def _chosen(self, names: list[str]) -> list[tuple[str, str]]:
        chosen = _pick(names, self.fmt, self.include)
        if not chosen:
            what = f"matching {self.include!r}" if self.include else f"of format {self.fmt}"
            raise DataError(f"{self.uri!r} holds no data files {what}",
                            "point the source at a data file or set `format`/`include` to match its files")
        return chosen

    def _zip(self, path: Path) -> Iterator[Record]:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as err:
            raise DataError(f"{self.uri!r} is not a readable zip archive ({err})", "check the file") from None
        with archive, ExitStack() as stack:
            size = sum(i.file_size for i in archive.infolist())
            if size > MAX_ARCHIVE_BYTES:
                raise DataError(f"{self.uri!r} unpacks to {size} bytes, more than the limit of {MAX_ARCHIVE_BYTES}",
                                "split the archive, or point the source at the unpacked folder")
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
            if self.fmt == "datasets" or any(n.rsplit("/", 1)[-1] in ("state.json", "dataset_dict.json")
                                             for n in names):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aicd-zip-")))
                archive.extractall(tmp)  # a saved `datasets` folder needs random access to its Arrow files
                roots = sorted({(tmp / n).parent for n in names if n.endswith(("state.json", "dataset_dict.json"))},
                               key=lambda p: len(p.parts))
                yield from self._checked(read_datasets_folder(roots[0], path.name), path.name)
                return
            for name, fmt in self._chosen(names):
                with archive.open(name) as fh:
                    yield from self._checked(_reader(fmt)(fh, name), name)

    def _checked(self, records: Iterator[Record], name: str) -> Iterator[Record]:
        """Pass records through; a file that yields none is an error (an empty file)."""
        self.files.append(name)
        empty = True
        for record in records:
            empty = False
            yield record
        if empty:
            raise DataError(f"{self.uri!r}: {name} is empty (no rows after the header, if any)",
                            "check that the export finished, or remove the file from the source")
