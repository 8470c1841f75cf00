"""The data set artifact: Parquet splits plus a card (docs/design.md section 4).

Layout of a data set directory::

    train.parquet  validation.parquet  test.parquet   # rows: id, task fields, extras
    quarantine.jsonl                                 # rejected rows with a reason each
    card.json                                        # kind "dataset", fingerprint, counts, ...

Every row has a string ``id`` (stable across versions), the task's fields
(``instruction``/``response`` or ``text``/``label``), ``source``, and any extra
columns kept for slicing (``topic``, ...). Readers verify the card first.

Card fields written by ``ingest_dataset`` (docs/contracts.md plus figures):
``fingerprint``, ``parent``, ``task``, ``fields``, ``labels``, ``sources`` (per source:
files, rows read/valid/quarantined, reasons), ``counts``, ``label_distribution``
(label -> rows, all splits) and ``label_distribution_by_split``, ``length_stats`` and
``length_histogram`` (per text field, in ``token_count`` units), ``rows_per_source``,
``slice_distribution`` (extra columns with at most 50 values), ``quarantine_counts``,
``bad_fraction``, ``duplicate_fraction``, ``repairs``, ``split``, ``quality``,
``max_rows``, ``not_selected``, ``rows_read``, ``row_hash`` (the row-hashing scheme, v1 when absent:
components/data/README.md).

:func:`write_dataset` takes whole lists; :class:`DatasetWriter` takes rows one at a
time and keeps at most one part (4096 rows) per split in memory: parts go to temporary
files that are merged into each split's Parquet file on :meth:`DatasetWriter.finish`,
so an ingest of any size writes in bounded memory. Both write atomically.
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir, verify_card, write_card
from aicd.components.errors import DataError

SPLITS = ("train", "validation", "test")
QUARANTINE = "quarantine.jsonl"
_PARTS = ".parts"
# A batch is a run of parts: each is PART_ROWS rows (one row group of the merged file), the batch's last
# one what remains. Batches end at BATCH_ROWS rows or once their text passes BATCH_BYTES characters, so the
# files are laid out as when a whole batch was held in memory and read back in PART_ROWS slices.
BATCH_ROWS = 20_000
BATCH_BYTES = 32 << 20
PART_ROWS = 4096


class DatasetWriter:
    """Stream rows into a data set directory; call :meth:`finish` inside the ``with``.

    Leaving the ``with`` block without ``finish`` (or on an exception) leaves nothing
    behind: the output is built in a temporary sibling and renamed into place.
    """

    def __init__(self, out_dir: str | Path, batch_rows: int | None = None, batch_bytes: int | None = None):
        self.out_dir = Path(out_dir)
        self.batch_rows = batch_rows or BATCH_ROWS
        self.batch_bytes = batch_bytes or BATCH_BYTES
        self._rows = {name: 0 for name in SPLITS}  # rows and characters of each split's current batch
        self._sizes = {name: 0 for name in SPLITS}
        self.counts = {name: 0 for name in SPLITS}
        self.quarantined = 0
        self._batches: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
        self._parts: dict[str, list[Path]] = {name: [] for name in SPLITS}
        self._finished = False

    def __enter__(self) -> "DatasetWriter":
        self._ctx = atomic_dir(self.out_dir)
        self._tmp = self._ctx.__enter__()
        (self._tmp / _PARTS).mkdir()
        self._qfh = open(self._tmp / QUARANTINE, "w", encoding="utf-8")
        return self

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        self._qfh.close()
        if exc_type is None and not self._finished:
            err = DataError(f"the data set in {self.out_dir} was not finished", "call DatasetWriter.finish()")
            self._ctx.__exit__(DataError, err, None)
            raise err
        return self._ctx.__exit__(exc_type, exc, tb)

    def add(self, split: str, row: dict[str, Any]) -> None:
        if split not in self._batches:
            raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
        batch = self._batches[split]
        batch.append(row)
        self.counts[split] += 1
        self._rows[split] += 1
        self._sizes[split] += sum(len(v) if isinstance(v, str) else 8 for v in row.values())
        if self._rows[split] >= self.batch_rows or self._sizes[split] >= self.batch_bytes:
            self._flush(split)
            self._rows[split] = self._sizes[split] = 0
        elif len(batch) >= PART_ROWS:
            self._flush(split)

    def quarantine(self, entry: dict[str, Any]) -> None:
        try:
            self._qfh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        except UnicodeEncodeError:  # lone surrogates (from invalid UTF-8) stay as \\u escapes
            self._qfh.write(json.dumps(entry, default=str) + "\n")
        self.quarantined += 1

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._batches[split]
        if not rows:
            return
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        table = pa.table({name: [row.get(name) for row in rows] for name in names})
        part = self._tmp / _PARTS / f"{split}-{len(self._parts[split]):05d}.parquet"
        pq.write_table(table, part)
        self._parts[split].append(part)
        self._batches[split] = []

    def finish(self, **card_fields: Any) -> dict[str, Any]:
        """Merge the parts into one Parquet file per split and write the card."""
        import shutil

        for split in SPLITS:
            self._flush(split)
        schema = self._schema()
        for split in SPLITS:
            self._merge(split, schema)
        shutil.rmtree(self._tmp / _PARTS)
        self._qfh.close()
        self._finished = True
        return write_card(self._tmp, "dataset", counts=dict(self.counts), **card_fields)

    def _schema(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = [pq.read_schema(p) for parts in self._parts.values() for p in parts]
        if not schemas:
            return pa.schema([("id", pa.string())])
        try:
            merged = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise DataError(f"rows of the data set have conflicting column types ({err})",
                            "give every row the same type in each column") from None
        first = [n for n in ("id",) if n in merged.names]
        return pa.schema([merged.field(n) for n in first + [n for n in merged.names if n not in first]])

    def _merge(self, split: str, schema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Part by part on this thread (no pre-buffering on Arrow's I/O threads), handing the pool's free memory
        # back after each: reading whole 20,000-row parts grew the pool with the split (about 40 MB for 240,000
        # rows), and even part by part it kept freed pages until it held about 15 MB more, reached only for
        # larger splits, so the peak grew with the input.
        pool = pa.default_memory_pool()
        with pq.ParquetWriter(self._tmp / f"{split}.parquet", schema) as writer:
            for part in self._parts[split]:
                for batch in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=PART_ROWS,
                                                                                  use_threads=False):
                    columns = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                               else pa.nulls(len(batch), f.type) for f in schema]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                pool.release_unused()


def write_dataset(out_dir: str | Path, splits: dict[str, list[dict[str, Any]]],
                  quarantine: list[dict[str, Any]] | None = None, **card_fields: Any) -> dict[str, Any]:
    """Write splits (and quarantined rows) atomically; return the card."""
    return write_rows(out_dir, splits, quarantine or [], **card_fields)


def write_rows(out_dir: str | Path, splits: dict[str, Iterable[dict[str, Any]]],
               quarantine: Iterable[dict[str, Any]], **card_fields: Any) -> dict[str, Any]:
    """:func:`write_dataset` for iterables: rows are consumed one batch at a time."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DataError(f"unknown split(s) {', '.join(unknown)}", f"use {', '.join(SPLITS)}")
    with DatasetWriter(out_dir) as writer:
        for name, rows in splits.items():
            for row in rows:
                writer.add(name, row)
        for entry in quarantine:
            writer.quarantine(entry)
        return writer.finish(**card_fields)


def read_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split, after verifying the data set's card."""
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    verify_card(dataset_dir, kind="dataset")
    return pq.read_table(Path(dataset_dir) / f"{split}.parquet").to_pylist()


def read_quarantine(dataset_dir: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Quarantined rows (all, or the first ``limit``), each with its ``reason``."""
    path = Path(dataset_dir) / QUARANTINE
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(out) >= limit:
                break
            if line.strip():
                out.append(json.loads(line))
    return out
