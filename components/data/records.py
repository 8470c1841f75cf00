"""One raw row as the readers yield it, and the line reading they share (bounded per line)."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

BOM = "\ufeff"
RAW_LIMIT = 2000  # characters of a bad line kept in the quarantine
LINE_LIMIT = 1 << 20  # characters (CSV) or bytes (JSONL) of one line; a longer line is quarantined unread
MAX_RECORD_LINES = 200  # lines one quoted CSV field may span before its quote counts as never closed


@dataclass(slots=True)
class Record:
    """One raw row: parsed ``values``, or a reader-level ``reason`` with the ``raw`` text."""

    values: dict[str, Any] | None
    file: str
    line: int
    reason: str | None = None
    detail: str = ""
    raw: str | None = None


def bad_record(file: str, line: int, reason: str, detail: str, raw: bytes | str) -> Record:
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return Record(None, file, line, reason, detail, text[:RAW_LIMIT])


def header_names(cells: list[str]) -> list[str]:
    names: list[str] = []
    for i, cell in enumerate(cells):
        name = cell.strip().lstrip(BOM) or f"unnamed_{i}"
        while name in names:
            name += "_2"
        names.append(name)
    return names


def lines(fh: IO, limit: int) -> Iterator[tuple[int, Any, bool]]:
    """(number, line, too_long) of a binary or text stream, never holding more than ``limit`` units of one line:
    a longer line is skipped to its end and reported as too long."""
    number = 0
    newline = b"\n" if isinstance(fh.read(0), bytes) else "\n"
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(newline):
            while (rest := fh.readline(limit + 1)) and not rest.endswith(newline):
                pass
            yield number, line[:RAW_LIMIT], True
            continue
        yield number, line, False
