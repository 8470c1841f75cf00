"""ingest_dataset: sources -> validated, de-duplicated, split, versioned data set.

Rows stream from the readers through :class:`RowProcessor` (validation, duplicates,
leakage, split) into :class:`~aicd.components.data.format.DatasetWriter`; bad rows go
to ``quarantine.jsonl`` with a reason each. Nothing is held whole: memory is one
4,096-row part per split plus 8-byte hashes per valid row for the duplicate checks,
dropped before the splits are merged (and, with ``data.max_rows``, the ``max_rows`` rows
kept so far).
"""

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.cards import read_card, verify_card
from aicd.components.data.format import DatasetWriter
from aicd.components.data.readers import Record, SourceFiles
from aicd.components.data.rowhash import (
    DEFAULT_ROW_HASH,
    ID_PREFIX,
    MASK64,
    PAIR_MULTIPLIER,
    ROW_HASHES,
    salt_seed,
    selection_digest,
    thresholds,
    tie_digest,
    xxh3_bytes,
    xxh64,
)
from aicd.components.data.split import SPLIT_NAMES, DigestMap, Fingerprint, Stats, Tracker, assign_split, digest8
from aicd.components.data.validate import TOKEN_COUNT, RowError, RowValidator, approx_tokens
from aicd.components.errors import DataError
from aicd.components.spec import DataSource, Spec, parse_spec

log = logging.getLogger(__name__)
_EXAMPLES = 5
# Quarantined (so never silently dropped) but not "bad": removing copies is expected cleaning,
# and counting them would fail corpora that repeat pairs on purpose (chatterbot's tech_support).
DUPLICATE_REASONS = frozenset({"duplicate", "near-duplicate"})


@dataclass
class IngestResult:
    """What an ingest produced: the directory, its identity and its figures."""

    path: Path
    fingerprint: str
    parent: str | None
    counts: dict[str, int]
    quarantined: int
    quarantine_counts: dict[str, int]
    rows_read: int
    not_selected: int
    card: dict[str, Any] = field(repr=False)


class RowProcessor:
    """Validation, duplicate/leakage tracking and split assignment for rows of one spec."""

    def __init__(self, spec: Spec, count_tokens: Callable[[str], int] = approx_tokens):
        self.spec, self.count_tokens = spec, count_tokens
        task, data = spec.task, spec.data
        self.input_field, self.target_field = task.fields
        self.classify = task.type == "text-classification"
        self.key_field = data.split.key
        self.ratios = (data.split.train, data.split.validation, data.split.test)
        self.salt, self.scheme = data.split.salt, data.row_hash
        dedupe = data.quality.dedupe
        v2 = self.scheme == "v2"
        self.tracker = Tracker(dedupe=dedupe, track_ids=task.id_field is not None,
                               conflicts=self.classify and dedupe, leakage=self.key_field is not None, unsigned=v2)
        self.repeats = DigestMap(unsigned=v2) if not dedupe and task.id_field is None else None
        self.validators: dict[str, RowValidator] = {}
        self.process = self._process_v2 if v2 else self._process_v1
        self._seed, self._bounds = salt_seed(self.salt), thresholds(self.ratios)
        self._target_digests: dict[str, int] = {}  # classification: label -> its digest (v2)
        # v2 classification with dedupe keeps one digest map, not two (Tracker.check_labeled)
        self._one_map = v2 and self.tracker.conflicts and len(task.labels) <= 1 << 14
        self._label_index = {label: i for i, label in enumerate(task.labels)}

    def forget(self) -> None:
        """Drop the duplicate, id and leakage digests (16 bytes or more a valid row) once every row is read."""
        self.tracker = self.repeats = None

    def validator(self, source: DataSource, name: str) -> RowValidator:
        if name not in self.validators:
            self.validators[name] = RowValidator(self.spec.task, self.spec.data.quality, source,
                                                 self.count_tokens, self.key_field)
        return self.validators[name]

    def _generated_id(self, basis: int) -> str:
        """The id of a row without one: its content digest, counted when dedupe is off."""
        row_id = f"{ID_PREFIX[self.scheme]}{basis & 0xFFFFFFFFFFFFFFFF:016x}"
        if self.repeats is not None:  # dedupe is off: keep identical rows apart
            count = (self.repeats.get(basis) or 0) + 1
            self.repeats.put(basis, count)
            if count > 1:
                row_id = f"{row_id}-{count}"
        return row_id

    def _full_row(self, row_id: str, row: dict[str, Any], source_name: str) -> dict[str, Any]:
        full = {"id": row_id, self.input_field: row[self.input_field], self.target_field: row[self.target_field],
                "source": source_name}
        full.update(row)  # the extras (never named id or source) after these four columns
        return full

    def _process_v2(self, values: dict[str, Any], validator: RowValidator, source_name: str):
        """``process`` under row hash v2 (see rowhash.py): xxh3, at most three digests of text a row.

        The digests and the split are written out here (not through rowhash's helpers, which
        compute the same): a call costs as much as a digest, and this runs for every row.
        """
        row, row_id, key, n_in, n_tgt, norm_text, norm_target = validator.check(values)
        text, target = row[self.input_field], row[self.target_field]
        h_in = xxh3_bytes(norm_text.encode("utf-8", "surrogatepass"), self._seed)
        if self.classify:
            h_tgt = self._target_digests.get(target)
            if h_tgt is None:
                h_tgt = self._target_digests[target] = xxh64(target)
            h_text = xxh3_bytes(text.encode("utf-8", "surrogatepass"))
            exact = (h_text * PAIR_MULTIPLIER + h_tgt) & MASK64
        else:
            h_tgt = xxh64(norm_target)
            exact = h_text = xxh64(f"{text}\x1f{target}")
        id_hash = None
        if row_id is None:
            row_id = f"x{h_text:016x}" if self.repeats is None else self._generated_id(h_text)
        elif self.tracker.ids is not None:
            id_hash = xxh64(row_id)
        if self.key_field == "id":
            key = row_id
        h_split = h_in if key is None else xxh64(key, self._seed)
        index = 0 if h_split < self._bounds[0] else 1 if h_split < self._bounds[1] else 2
        if self._one_map:
            problem = self.tracker.check_labeled(row_id, id_hash, h_in,
                                                 (exact >> 16 << 16) | self._label_index[target] << 2 | index)
        else:
            pair = (h_in * PAIR_MULTIPLIER + h_tgt) & MASK64
            problem = self.tracker.check_digests(row_id, id_hash, exact, pair, h_in, (h_tgt >> 2 << 2) | index)
        if problem is not None:
            raise RowError(*problem)
        return SPLIT_NAMES[index], self._full_row(row_id, row, source_name), n_in, n_tgt, norm_text if key is None \
            else key

    def _process_v1(self, values: dict[str, Any], validator: RowValidator, source_name: str):
        """``(split, row, n_in, n_tgt, selection key)`` of a good row; raises RowError for a bad one."""
        row, row_id, key, n_in, n_tgt, norm_text, norm_target = validator.check(values)
        text, target = row[self.input_field], row[self.target_field]
        exact = digest8(f"{text}\x1f{target}")
        if row_id is None:
            # A text's id survives a label correction; a causal-LM row is its pair.
            row_id = self._generated_id(digest8(text) if self.classify else exact)
        if self.key_field == "id":
            key = row_id
        split_key = key if key is not None else norm_text
        split = assign_split(split_key, self.ratios, self.salt)
        problem = self.tracker.check(row_id, exact, norm_text, norm_target, split)
        if problem is not None:
            raise RowError(*problem)
        return split, self._full_row(row_id, row, source_name), n_in, n_tgt, split_key


class _Selector:
    """Keeps the ``limit`` rows with the lowest selection hash of their key (stable as data grows)."""

    def __init__(self, limit: int, salt: str, scheme: str):
        self.limit, self.salt, self.scheme = limit, salt, scheme
        self.heap: list[tuple[int, int, int, tuple]] = []
        self.seq = 0
        self.dropped = 0

    def offer(self, split_key: str, item: tuple) -> None:
        self.seq += 1
        tie = tie_digest(self.scheme, item[1]["id"])
        entry = (-selection_digest(self.scheme, split_key, self.salt), -tie, self.seq, item)
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, entry)
        else:
            heapq.heappushpop(self.heap, entry)
            self.dropped += 1

    def rows(self) -> Iterator[tuple]:
        for entry in sorted(self.heap, key=lambda e: e[2]):
            yield entry[3]


def _spec(spec: Spec | dict[str, Any]) -> Spec:
    return spec if isinstance(spec, Spec) else parse_spec(spec)


def parent_ref(card: dict[str, Any]) -> str:
    """How a pipeline passes a parent data set by value: ``<fingerprint>@<row_hash>`` (the ingest step's
    ``parent_fingerprint``), so ingest can check the scheme; the fingerprint alone hides it."""
    return f"{card['fingerprint']}@{card.get('row_hash') or DEFAULT_ROW_HASH}"


def _parent(parent: str | Path | None, row_hash: str) -> str | None:
    """The parent's fingerprint; a parent data set (or card, or ``parent_ref``) made under another row hash
    is refused. A bare fingerprint carries no scheme: accepted under v1 (every lineage made before
    ``parent_ref``), refused under v2, which has no such lineage."""
    if parent is None or parent == "":
        return None
    if isinstance(parent, str) and parent.startswith("sha256:"):
        fingerprint, _, parent_hash = parent.partition("@")
        if parent_hash:
            _same_scheme(row_hash, parent_hash, parent)
        elif row_hash != DEFAULT_ROW_HASH:
            raise DataError(f"the parent fingerprint {parent} does not say its row hash, and `data.row_hash` is "
                            f"{row_hash!r}: a parent of another scheme would go unnoticed",
                            f"pass it as `{parent}@{row_hash}` (components.data.ingest.parent_ref of its card) or "
                            "pass the parent data set's directory")
        return fingerprint
    card = verify_card(parent, kind="dataset") if Path(parent).is_dir() else read_card(parent)
    _same_scheme(row_hash, card.get("row_hash", DEFAULT_ROW_HASH), parent)
    return card["fingerprint"]


def _same_scheme(row_hash: str, parent_hash: str, parent: str | Path) -> None:
    if parent_hash not in ROW_HASHES:
        raise DataError(f"the parent {parent} names row hash {parent_hash!r}, not one of {list(ROW_HASHES)}",
                        "pass `<fingerprint>@<row_hash>` as components.data.ingest.parent_ref writes it")
    if parent_hash != row_hash:
        raise DataError(f"`data.row_hash` is {row_hash!r} but the parent data set {parent} was made with "
                        f"{parent_hash!r}: its ids and splits would change, and rows the champion trained on "
                        "would land in the new test split",
                        f"set `data.row_hash: {parent_hash}` in the spec (absent means v1), or start a new "
                        "lineage without a parent and gate it against a champion trained on it")


def source_names(sources: list[DataSource]) -> list[str]:
    """Each source's name: its ``name``, else the last part of its URI without extension; unique."""
    names: list[str] = []
    for source in sources:
        base = source.name or Path(source.uri.rstrip("/").rsplit("/", 1)[-1]).stem or "source"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _quarantine_entry(record: Record, source: str, reason: str, detail: str) -> dict[str, Any]:
    entry = {"reason": reason, "detail": detail, "source": source, "file": record.file, "line": record.line}
    if record.values is not None:
        entry["row"] = record.values
    else:
        entry["raw"] = record.raw
    return entry


class _Run:
    """One ingest: counters, the writer and the figures."""

    def __init__(self, spec: Spec, writer: DatasetWriter, processor: RowProcessor):
        self.spec, self.writer, self.processor = spec, writer, processor
        self.stats = Stats(processor.input_field, processor.target_field, processor.classify)
        self.fingerprint = Fingerprint(spec.data.row_hash)
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []
        self.sources: list[dict[str, Any]] = []
        self.valid = self.read = 0
        limit = spec.data.max_rows
        self.selector = _Selector(limit, spec.data.split.salt, spec.data.row_hash) if limit else None

    def emit(self, split: str, row: dict[str, Any], n_in: int, n_tgt: int) -> None:
        self.writer.add(split, row)
        extras = [k for k in row if k not in ("id", "source", self.processor.input_field,
                                                self.processor.target_field)]
        self.stats.add(split, row, n_in, n_tgt, extras)
        self.fingerprint.add(split, row)

    def bad(self, record: Record, source: str, reason: str, detail: str) -> None:
        self.reasons[reason] += 1
        self.writer.quarantine(_quarantine_entry(record, source, reason, detail))
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{source}:{record.file}:{record.line} {reason} ({detail})")

    def read_source(self, source: DataSource, name: str) -> None:
        files = SourceFiles(source.uri, source.format, source.include)
        validator = self.processor.validator(source, name)
        read = valid = 0
        reasons: Counter[str] = Counter()
        for record in files.records():
            read += 1
            if record.values is None:
                reasons[record.reason] += 1
                self.bad(record, name, record.reason, record.detail)
                continue
            try:
                split, row, n_in, n_tgt, split_key = self.processor.process(record.values, validator, name)
            except RowError as err:
                reasons[err.reason] += 1
                self.bad(record, name, err.reason, err.detail)
                continue
            valid += 1
            if self.selector is not None:
                self.selector.offer(split_key, (split, row, n_in, n_tgt))
            else:
                self.emit(split, row, n_in, n_tgt)
        if valid == 0:
            raise DataError(f"source {name!r} ({source.uri}) has no valid row: {read} read, all quarantined "
                            f"({_summary(reasons)}); first problems: " + "; ".join(self.examples[:3]),
                            "check the source's `format`, `columns` and `label_map` against its files")
        self.read += read
        self.valid += valid
        self.sources.append({"name": name, "uri": source.uri, "format": source.format, "files": files.files,
                             "rows_read": read, "rows_valid": valid, "rows_quarantined": read - valid,
                             "quarantine_counts": dict(sorted(reasons.items()))})

    def check_quality(self) -> float:
        """The bad fraction: quarantined rows other than duplicates, over the rows read."""
        bad = sum(n for reason, n in self.reasons.items() if reason not in DUPLICATE_REASONS)
        fraction = bad / self.read if self.read else 0.0
        limit = self.spec.data.quality.max_bad_fraction
        if fraction > limit:
            bad_reasons = Counter({r: n for r, n in self.reasons.items() if r not in DUPLICATE_REASONS})
            raise DataError(f"{bad} of {self.read} rows ({fraction:.1%}) are bad, more than "
                            f"data.quality.max_bad_fraction {limit:g}: {_summary(bad_reasons)}; first problems: "
                            + "; ".join(self.examples),
                            "fix the sources (see the reasons), or raise data.quality.max_bad_fraction")
        return fraction


def _summary(reasons: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())


def ingest_dataset(spec: Spec | dict[str, Any], out_dir: str | Path, parent: str | Path | None = None,
                   count_tokens: Callable[[str], int] = approx_tokens) -> IngestResult:
    """Read, validate, split and version the spec's data sources into a data set directory.

    ``parent`` is the previous version (a data set directory, or ``parent_ref`` of its card); the
    card records its fingerprint. Raises DataError (nothing written) when a source is
    missing or empty, has no valid row, or the bad fraction passes the spec's limit.
    """
    spec = _spec(spec)
    data = spec.data
    parent_fp = _parent(parent, data.row_hash)
    processor = RowProcessor(spec, count_tokens)
    with DatasetWriter(out_dir) as writer:
        run = _Run(spec, writer, processor)
        for source, name in zip(data.sources, source_names(data.sources)):
            run.read_source(source, name)
        processor.forget()  # merging the splits below gets their memory
        fraction = run.check_quality()
        not_selected = 0
        if run.selector is not None:
            for item in run.selector.rows():
                run.emit(*item)
            not_selected = run.selector.dropped
        repairs: Counter[str] = Counter()
        for validator in processor.validators.values():
            repairs.update(validator.repairs)
        card = writer.finish(
            task=spec.task.type, fields={"input": processor.input_field, "target": processor.target_field,
                                         "id": spec.task.id_field},
            labels=list(spec.task.labels), fingerprint=run.fingerprint.hexdigest(), parent=parent_fp,
            sources=run.sources, rows_read=run.read, bad_fraction=round(fraction, 6),
            duplicate_fraction=round(sum(run.reasons[r] for r in DUPLICATE_REASONS) / run.read, 6),
            quarantine_counts=dict(sorted(run.reasons.items())), repairs=dict(sorted(repairs.items())),
            split={"ratios": dict(zip(("train", "validation", "test"), processor.ratios)),
                   "key": data.split.key or "normalised input", "salt": data.split.salt},
            row_hash=data.row_hash,
            quality=data.quality.model_dump(), max_rows=data.max_rows, not_selected=not_selected,
            token_count=TOKEN_COUNT if count_tokens is approx_tokens else getattr(count_tokens, "__name__", "custom"),
            **run.stats.card_fields())
    log.info("ingested %s rows (%s), quarantined %s, fingerprint %s", run.valid - not_selected,
             card["counts"], sum(run.reasons.values()), card["fingerprint"])
    return IngestResult(Path(out_dir), card["fingerprint"], parent_fp, card["counts"], sum(run.reasons.values()),
                        card["quarantine_counts"], run.read, not_selected, card)


def validate_rows(spec: Spec | dict[str, Any], rows: Iterable[dict[str, Any]],
                  count_tokens: Callable[[str], int] = approx_tokens) -> Counter[str]:
    """Validate raw rows (as a reader yields them) for the spec's first source, writing nothing.

    Returns counts by outcome: split names for good rows, reason codes for bad ones.
    The benchmarks call this to measure validation throughput.
    """
    spec = _spec(spec)
    processor = RowProcessor(spec, count_tokens)
    source = spec.data.sources[0]
    validator = processor.validator(source, "bench")
    splits = dict.fromkeys(SPLIT_NAMES, 0)
    reasons: Counter[str] = Counter()
    process = processor.process
    for values in rows:
        try:
            splits[process(values, validator, "bench")[0]] += 1
        except RowError as err:
            reasons[err.reason] += 1
    return Counter({s: n for s, n in splits.items() if n}) + reasons
