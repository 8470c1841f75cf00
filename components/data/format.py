"""The data set artifact: Parquet splits plus a card (DESIGN.md section 4).

Layout of a data set directory::

    train.parquet  validation.parquet  test.parquet   # rows: id, task fields, extras
    quarantine.jsonl                                 # rejected rows with a reason each
    card.json                                        # kind "dataset", fingerprint, counts, ...

Every row has a string ``id`` (stable across versions), the task's fields
(``instruction``/``response`` or ``text``/``label``), ``source``, and any extra
columns kept for slicing (``topic``, ...). Readers verify the card first.
"""

import json
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir, verify_card, write_card
from aicd.components.errors import DataError

SPLITS = ("train", "validation", "test")
QUARANTINE = "quarantine.jsonl"


def write_dataset(out_dir: str | Path, splits: dict[str, list[dict[str, Any]]],
                  quarantine: list[dict[str, Any]] | None = None, **card_fields: Any) -> dict[str, Any]:
    """Write splits (and quarantined rows) atomically; return the card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for name in SPLITS:
            rows = splits.get(name, [])
            table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
            pq.write_table(table, tmp / f"{name}.parquet")
        with open(tmp / QUARANTINE, "w", encoding="utf-8") as fh:
            for row in quarantine or []:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        counts = {name: len(splits.get(name, [])) for name in SPLITS}
        card = write_card(tmp, "dataset", counts=counts, **card_fields)
    return card


def read_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split, after verifying the data set's card."""
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    verify_card(dataset_dir, kind="dataset")
    return pq.read_table(Path(dataset_dir) / f"{split}.parquet").to_pylist()


def read_quarantine(dataset_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(dataset_dir) / QUARANTINE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
