"""Reading a data set version and writing the next one (labels or feedback added).

The artifact format is ``components/data/format.py`` (docs/contracts.md); this module
only fills the card fields a new version needs: fingerprint, parent, counts by
label, length figures, quarantine counts.
"""

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from aicd.components.cards import verify_card
from aicd.components.data.format import SPLITS, read_split, write_dataset
from aicd.components.spec import SplitSpec, TaskSpec


def read_version(dataset_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(card, split -> rows) of a data set version, after verifying its card."""
    card = verify_card(dataset_dir, kind="dataset")
    return card, {name: read_split(dataset_dir, name) for name in SPLITS}


def parent_fingerprint(card: dict[str, Any]) -> str:
    """The identity of a version for lineage: its fingerprint, or its digest when it has none."""
    return str(card.get("fingerprint") or card["digest"])


def fingerprint(splits: dict[str, list[dict[str, Any]]]) -> str:
    """sha256 over the rows of every split (sorted by id), independent of file encoding."""
    digest = hashlib.sha256()
    for name in SPLITS:
        for row in sorted(splits.get(name, []), key=lambda r: str(r.get("id"))):
            digest.update(f"{name}\t".encode())
            digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
            digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def split_of(key: str, split: SplitSpec) -> str:
    """The split a row belongs to, from a salted hash of its key (stable across versions)."""
    bucket = int(hashlib.sha256(f"{split.salt}:{key}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    if bucket < split.train:
        return "train"
    if bucket < split.train + split.validation:
        return "validation"
    return "test"


def uniform(splits: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every row with the same columns (missing ones None): Arrow takes the columns of the first row."""
    columns: list[str] = []
    for rows in splits.values():
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    return {name: [{c: row.get(c) for c in columns} for row in rows] for name, rows in splits.items()}


def _length_stats(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for field in fields:
        lengths = [len(str(r[field])) for r in rows if r.get(field) is not None]
        if lengths:
            out[field] = {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 2),
                          "unit": "characters"}
    return out


def write_version(out_dir: str | Path, task: TaskSpec, splits: dict[str, list[dict[str, Any]]],
                  quarantine: list[dict[str, Any]], parent: str | None, sources: list[str],
                  **extra: Any) -> dict[str, Any]:
    """Write a new data set version atomically; return its card."""
    splits = uniform(splits)
    rows = [r for name in SPLITS for r in splits.get(name, [])]
    label_field = task.label_field if task.type == "text-classification" else None
    labels = Counter(str(r.get(label_field)) for r in rows if label_field and r.get(label_field) is not None)
    return write_dataset(
        out_dir, splits, quarantine,
        fingerprint=fingerprint(splits), parent=parent, sources=sources, task=task.type,
        label_distribution=dict(sorted(labels.items())),
        length_stats=_length_stats(rows, task.fields),
        quarantine_counts=dict(sorted(Counter(q.get("kind", "other") for q in quarantine).items())),
        **extra)
