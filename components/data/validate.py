"""Row validation: one raw record to a task row, or a quarantine reason.

Every reason a row can be rejected for is in :data:`REASONS`; the quarantine file
and the card use these codes. Token lengths use :func:`approx_tokens` unless a
caller passes an exact counter (e.g. ``lambda s: len(tokenizer(s).input_ids)``).

Repairs are not rejections and are counted in the card (``repairs``): CRLF or CR
inside a text becomes LF, and HTML character references (``&#039;``, ``&amp;``)
are unescaped when the source's ``unescape_html`` is on (the default).
"""

import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

from aicd.components.spec import DataSource, QualitySpec, TaskSpec

REASONS: dict[str, str] = {
    "invalid-json": "the line is not valid JSON",
    "invalid-csv": "the CSV/TSV parser rejected the row",
    "invalid-utf8": "bytes that are not UTF-8 (or lone surrogates)",
    "nul-byte": "NUL bytes in the line or a text field",
    "bom": "a byte-order mark inside the file or a text field (the file's first BOM is fine)",
    "mixed-line-endings": "a bare carriage return (CR) where rows should end with LF or CRLF",
    "ragged-row": "a CSV/TSV row whose number of cells differs from the header",
    "unclosed-quote": "a CSV/TSV line opens a quoted field that never closes (reading resumes at the next line)",
    "line-too-long": "a line longer than the reader's limit (1 MiB), set aside without being read whole",
    "wrong-type": "a field has the wrong type (text must be a string, labels a string or integer)",
    "missing-field": "a required field (task field, id or split key) is missing or null",
    "empty-text": "a text field is empty or only whitespace",
    "unknown-label": "the label (after label_map) is not one of task.labels",
    "too-short": "a text field has fewer tokens than data.quality.min_tokens",
    "too-long": "the row has more tokens than data.quality.max_tokens",
    "duplicate-id": "the id was already used by an earlier row",
    "duplicate": "an exact copy of an earlier row",
    "near-duplicate": "the same as an earlier row after normalisation (Unicode NFKC, case, whitespace)",
    "conflicting-label": "the same normalised text as an earlier row with a different label",
    "leakage": "the same normalised input as an earlier row placed in another split",
}

TOKEN_COUNT = "approx: max(words, ceil(characters / 4))"
_BAD_TEXT = re.compile("[\x00\ufeff\ud800-\udfff]")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def approx_tokens(text: str) -> int:
    """A fast token count: the larger of the word count and a quarter of the characters.

    English text through a BPE tokenizer (GPT-2, Llama, SmolLM2) is about 4 characters
    or 0.75 words a token, so this is within about 30% of the real count for prose, at
    well under a microsecond a row. Pass an exact counter to :class:`RowValidator` when
    the bounds must be exact.
    """
    return max(len(text.split()), (len(text) + 3) // 4)


def normalise(text: str) -> str:
    """Text for duplicate and leakage checks: NFKC, case-folded, whitespace collapsed; symbols, punctuation and
    emoji are kept ("C++" and "C#", "👍👍" and "👎👎" are different texts)."""
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold() of ASCII is lower()
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalise_and_count(text: str, count: Callable[[str], int]) -> tuple[str, int]:
    """``(normalise(text), count(text))``, splitting an ASCII text into words once for both (the default count)."""
    if count is approx_tokens and text.isascii():
        words = text.split()
        return " ".join(words).lower(), max(len(words), (len(text) + 3) // 4)
    return normalise(text), count(text)


def _char_error(column: str, char: str) -> "RowError":
    if char == "\x00":
        return RowError("nul-byte", f"`{column}` contains a NUL character")
    if char == "\ufeff":
        return RowError("bom", f"`{column}` contains a byte-order mark (U+FEFF)")
    return RowError("invalid-utf8", f"`{column}` has bytes that are not UTF-8 (or lone surrogates)")


class RowError(Exception):
    """A row is rejected: ``reason`` is a code of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class RowValidator:
    """Checks of one row against the task and the quality section (no state across rows)."""

    def __init__(self, task: TaskSpec, quality: QualitySpec, source: DataSource,
                 count_tokens: Callable[[str], int] = approx_tokens, key_field: str | None = None):
        self.task, self.quality, self.count = task, quality, count_tokens
        self.input_field, self.target_field = task.fields
        self.classify = task.type == "text-classification"
        self.unescape = getattr(source, "unescape_html", True)
        self.label_map = {str(k): v for k, v in source.label_map.items()}
        self.labels = set(task.labels)
        self._known_labels: dict[str, str] = {}  # raw string label -> its valid label, filled as rows come
        cols = source.columns
        self.col_in = cols.get(self.input_field, self.input_field)
        self.col_tgt = cols.get(self.target_field, self.target_field)
        self.col_id = cols.get(task.id_field, task.id_field) if task.id_field else None
        self.key_field = key_field
        self.col_key = cols.get(key_field, key_field) if key_field not in (None, "id") else None
        self.reserved = {self.col_in, self.col_tgt, self.col_id}
        self.renamed = {src: dst for dst, src in cols.items()}
        self.repairs: Counter[str] = Counter()

    def _text(self, values: dict[str, Any], column: str, field: str) -> str:
        value = values.get(column)
        if value is None:
            raise RowError("missing-field", f"`{column}` (task field `{field}`) is missing or null")
        if not isinstance(value, str):
            raise RowError("wrong-type", f"`{column}` must be a string, got {type(value).__name__} {value!r:.60}")
        bad = ("\x00" if "\x00" in value else None) if value.isascii() else _BAD_TEXT.search(value)
        if bad:
            raise _char_error(column, bad if isinstance(bad, str) else bad.group())
        if "\r" in value:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
            self.repairs["line-endings"] += 1
        if self.unescape and "&" in value:
            fixed = _ENTITY.sub(lambda m: html.unescape(m.group()), value)
            if fixed != value:
                value = fixed
                self.repairs["html-entities"] += 1
        if not value or value.isspace():
            raise RowError("empty-text", f"`{column}` is empty or whitespace")
        return value

    def _label(self, values: dict[str, Any]) -> str:
        raw = values.get(self.col_tgt)
        if type(raw) is str and raw in self._known_labels:
            return self._known_labels[raw]
        if raw is None:
            raise RowError("missing-field", f"`{self.col_tgt}` (task field `{self.target_field}`) is missing or null")
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise RowError("wrong-type", f"`{self.col_tgt}` must be a string or integer label, "
                           f"got {type(raw).__name__} {raw!r:.60}")
        text = str(raw).strip()
        label = self.label_map.get(text, text)
        if label not in self.labels:
            raise RowError("unknown-label", f"label {text!r} is not one of {', '.join(self.task.labels)}; add it "
                           "to task.labels or map it with the source's label_map")
        if type(raw) is str and len(self._known_labels) < 10_000:
            self._known_labels[raw] = label
        return label

    def _lengths(self, n_in: int, n_tgt: int) -> None:
        q = self.quality
        if n_in < q.min_tokens or (n_tgt < q.min_tokens and not self.classify):
            field, n = (self.input_field, n_in) if n_in < q.min_tokens else (self.target_field, n_tgt)
            raise RowError("too-short", f"`{field}` has {n} token(s), data.quality.min_tokens is {q.min_tokens}")
        if n_in + n_tgt > q.max_tokens:
            raise RowError("too-long", f"{n_in + n_tgt} tokens, data.quality.max_tokens is {q.max_tokens}")

    def _id(self, values: dict[str, Any]) -> str | None:
        if self.col_id is None:
            return None
        value = values.get(self.col_id)
        if value is None or value == "":
            raise RowError("missing-field", f"`{self.col_id}` (task.id_field) is missing or null")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RowError("wrong-type", f"`{self.col_id}` (task.id_field) must be a string or integer, "
                           f"got {type(value).__name__}")
        return str(value)

    def _extras(self, values: dict[str, Any]) -> dict[str, str | None]:
        extras: dict[str, str | None] = {}
        if values.keys() <= self.reserved:
            return extras
        for column, value in values.items():
            if column in self.reserved:
                continue
            name = self.renamed.get(column, column)
            if name in ("id", "source", self.input_field, self.target_field):
                name = f"src_{name}"
            if value is None or isinstance(value, str):
                extras[name] = value
            elif isinstance(value, dict | list):
                extras[name] = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
            else:
                extras[name] = str(value)
            bad = _BAD_TEXT.search(extras[name]) if extras[name] else None
            if bad:
                raise _char_error(column, bad.group())
        return extras

    def check(self, values: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None, int, int, str, str]:
        """(row without id/source, id or None, split key or None, input tokens, target tokens, normalised
        input, normalised target (a label as it is)).

        Raises :class:`RowError` with the reason of the first problem found.
        """
        text = self._text(values, self.col_in, self.input_field)
        target = self._label(values) if self.classify else self._text(values, self.col_tgt, self.target_field)
        row_id = self._id(values) if self.col_id is not None else None
        key = None
        if self.col_key is not None:
            raw_key = values.get(self.col_key)
            if raw_key is None or raw_key == "":
                raise RowError("missing-field", f"`{self.col_key}` (data.split.key) is missing or null")
            key = str(raw_key)
        norm_text, n_in = normalise_and_count(text, self.count)
        norm_target, n_tgt = (target, 0) if self.classify else normalise_and_count(target, self.count)
        self._lengths(n_in, n_tgt)
        row = {self.input_field: text, self.target_field: target, **self._extras(values)}
        return row, row_id, key, n_in, n_tgt, norm_text, norm_target
