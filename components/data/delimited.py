"""CSV and TSV records: line limits, and recovery from a quoted field that never closes.

A quoted field may span lines (the csv module's rules); one that does not close within
``MAX_RECORD_LINES`` lines, before the end of the file, or RFC-strictly with the header's
number of cells sets aside only the line that opened it (``unclosed-quote``) and reading
resumes at the next line, so one stray quote never swallows the rows after it.
"""

import csv
import io
import re
from collections.abc import Iterator
from typing import IO, Any

from aicd.components.data.records import BOM, LINE_LIMIT, MAX_RECORD_LINES, Record
from aicd.components.data.records import bad_record as _bad
from aicd.components.data.records import header_names as _header
from aicd.components.data.records import lines as _lines

_BAD_CSV_CHARS = re.compile("[\x00\ufeff\udc80-\udcff]")


def _quote_state(line: str, delimiter: str, quoted: bool, at_start: bool) -> tuple[bool, bool]:
    """(inside a quoted field, at the start of a field) after ``line``, by the csv module's rules: a quote
    opens a quoted field only at the start of a field, ``""`` inside one is a quote, and a quote elsewhere
    is an ordinary character."""
    if '"' not in line and not quoted:
        return False, line.endswith(("\n", delimiter))
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if quoted:
            if char == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 1
                else:
                    quoted = False
        elif char == '"' and at_start:
            quoted = True
        at_start = not quoted and char in (delimiter, "\n", "\r")
        i += 1
    return quoted, at_start


class _CsvRecords:
    """(first line number, text of one CSV record, its lines), or a bad Record. A quoted field that never
    closes (within MAX_RECORD_LINES lines or before the end) sets aside only the line that opened it:
    reading resumes at the next line. :meth:`push_back` re-reads lines (a merge the caller refuses)."""

    def __init__(self, text: IO[str], name: str, delimiter: str):
        self.lines = _lines(text, LINE_LIMIT)
        self.name, self.delimiter = name, delimiter
        self.pushed: list[tuple[int, str | None]] = []

    def push_back(self, lines: list[tuple[int, str | None]]) -> None:
        self.pushed.extend(reversed(lines))

    def _take(self) -> tuple[int, str | None] | None:
        if self.pushed:
            return self.pushed.pop()
        item = next(self.lines, None)
        return None if item is None else (item[0], None if item[2] else item[1])

    def __iter__(self) -> Iterator[Any]:
        while (first := self._take()) is not None:
            if first[1] is None:
                yield _bad(self.name, first[0], "line-too-long", f"the line is longer than {LINE_LIMIT} "
                           "characters; split it", "")
                continue
            block = [first]
            quoted, at_start = _quote_state(first[1], self.delimiter, False, True)
            while quoted and len(block) < MAX_RECORD_LINES:
                more = self._take()
                if more is None:
                    break
                if more[1] is None:
                    self.pushed.append(more)
                    break
                block.append(more)
                quoted, at_start = _quote_state(more[1], self.delimiter, quoted, at_start)
            if quoted:
                self.push_back(block[1:])
                yield _unclosed(self.name, first)
                continue
            yield first[0], "".join(line for _, line in block), block


def _strict_record(block: str, delimiter: str, header: list[str] | None) -> bool:
    """Whether a record spanning lines is one well-formed row: every quote closes right before a delimiter
    or the line's end (RFC 4180), and it has the header's number of cells."""
    try:
        rows = list(csv.reader(io.StringIO(block), delimiter=delimiter, strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and (header is None or len(rows[0]) == len(header))


def _unclosed(name: str, first: tuple[int, str]) -> Record:
    return _bad(name, first[0], "unclosed-quote", "a quoted field opened on this line is never closed; "
                "the line is set aside and reading resumes at the next line (close the quote, or double \"\" "
                "a quote inside a quoted field)", first[1].rstrip("\r\n"))


def read_delimited(fh: IO[bytes], name: str, delimiter: str) -> Iterator[Record]:
    """CSV or TSV with a header row; invalid UTF-8 survives as surrogates and is reported per row."""
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="\n")
    header: list[str] | None = None
    records = _CsvRecords(text, name, delimiter)
    for item in records:
        if isinstance(item, Record):
            yield item
            continue
        number, block, lines = item
        if len(lines) > 1 and not _strict_record(block, delimiter, header):
            records.push_back(lines[1:])  # the quote "closed" inside a later row: it was never closed
            yield _unclosed(name, lines[0])
            continue
        try:
            rows = list(csv.reader(io.StringIO(block), delimiter=delimiter))
        except csv.Error as err:
            reason = "mixed-line-endings" if "new-line" in str(err) else "invalid-csv"
            detail = ("a bare carriage return (CR) in an unquoted field; use LF or CRLF line endings"
                      if reason == "mixed-line-endings" else str(err))
            yield _bad(name, number, reason, detail, block.encode("utf-8", "surrogateescape"))
            continue
        cells = rows[0] if rows else []
        if header is None:
            header = _header(cells)
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        yield from _row(name, number, delimiter, header, cells)


def _row(name: str, number: int, delimiter: str, header: list[str], cells: list[str]) -> Iterator[Record]:
    joined = delimiter.join(cells)
    if len(cells) != len(header):
        yield _bad(name, number, "ragged-row", f"{len(cells)} cells, the header has {len(header)}",
                   joined.encode("utf-8", "surrogateescape"))
        return
    bad = _BAD_CSV_CHARS.search(joined)
    if bad:
        char = bad.group()
        reason, detail = (("nul-byte", "the row contains NUL bytes") if char == "\x00" else
                          ("bom", "a byte-order mark inside the row (were files concatenated?)")
                          if char == BOM else ("invalid-utf8", "the row has bytes that are not UTF-8"))
        yield _bad(name, number, reason, detail, joined.replace("\x00", "").encode("utf-8", "surrogateescape"))
        return
    yield Record(dict(zip(header, cells)), name, number)


