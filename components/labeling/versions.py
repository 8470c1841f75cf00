"""Reading a data set version and writing the next one (labels or feedback added).

The artifact format and its figures belong to the data area: rows are written with
``components/data/format.py``, the fingerprint is ``data.split.Fingerprint``, split
assignment ``data.split.assign_split`` (``data.rowhash.assign_split_v2`` for a data set made
under ``row_hash: v2``, which its versions keep) over ``data.validate.normalise``d text, and the
card's label and length figures come from ``data.split.Stats`` (token units of
``data.validate.approx_tokens``), so a labeled or feedback version reads like an
ingested one. This module only adds the lineage (``parent``, ``sources``).
"""

from collections import Counter
from pathlib import Path
from typing import Any

from aicd.components.cards import verify_card
from aicd.components.data.format import SPLITS, read_split, write_dataset
from aicd.components.data.rowhash import DEFAULT_ROW_HASH, assign_split_v2
from aicd.components.data.split import Fingerprint, Stats, assign_split
from aicd.components.data.validate import TOKEN_COUNT, approx_tokens, normalise
from aicd.components.spec import SplitSpec, TaskSpec

__all__ = ["normalise", "parent_fingerprint", "read_version", "row_hash_of", "split_of", "fingerprint",
           "write_version"]


def read_version(dataset_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(card, split -> rows) of a data set version, after verifying its card."""
    card = verify_card(dataset_dir, kind="dataset")
    return card, {name: read_split(dataset_dir, name) for name in SPLITS}


def parent_fingerprint(card: dict[str, Any]) -> str:
    """The identity of a version for lineage: its fingerprint, or its digest when it has none."""
    return str(card.get("fingerprint") or card["digest"])


def row_hash_of(card: dict[str, Any]) -> str:
    """The row-hashing scheme a version was made with (a card without one: v1)."""
    return str(card.get("row_hash") or DEFAULT_ROW_HASH)


def fingerprint(splits: dict[str, list[dict[str, Any]]], row_hash: str = DEFAULT_ROW_HASH) -> str:
    """The data area's order-independent fingerprint of (split, row) pairs."""
    fp = Fingerprint(row_hash)
    for name in SPLITS:
        for row in splits.get(name, []):
            fp.add(name, row)
    return fp.hexdigest()


def split_of(text: str, split: SplitSpec, row_hash: str = DEFAULT_ROW_HASH) -> str:
    """The split of a new row keyed by its input text, as ingest assigns it under ``row_hash``."""
    assign = assign_split_v2 if row_hash == "v2" else assign_split
    return assign(normalise(text), (split.train, split.validation, split.test), split.salt)


def _stats(task: TaskSpec, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    source, target = task.fields
    classify = task.type == "text-classification"
    stats = Stats(source, target, classify)
    for name in SPLITS:
        for row in splits.get(name, []):
            if classify and row.get(target) is None:
                continue  # an unlabeled row has no label to count
            extras = [k for k in row if k not in ("id", "source", source, target)]
            stats.add(name, {**row, "source": str(row.get("source"))}, approx_tokens(str(row.get(source) or "")),
                      approx_tokens(str(row.get(target) or "")), extras)
    return stats.card_fields()


def write_version(out_dir: str | Path, task: TaskSpec, splits: dict[str, list[dict[str, Any]]],
                  quarantine: list[dict[str, Any]], parent: str | None, sources: list[Any],
                  row_hash: str = DEFAULT_ROW_HASH, **extra: Any) -> dict[str, Any]:
    """Write a new data set version atomically; return its card. ``row_hash`` is the parent's scheme."""
    figures = _stats(task, splits)
    figures.pop("slice_distribution", None)  # label bookkeeping columns are not slices
    return write_dataset(
        out_dir, splits, quarantine,
        fingerprint=fingerprint(splits, row_hash), row_hash=row_hash, parent=parent, sources=sources, task=task.type,
        fields={"input": task.fields[0], "target": task.fields[1], "id": task.id_field},
        labels=list(task.labels), token_count=TOKEN_COUNT,
        quarantine_counts=dict(sorted(Counter(q.get("kind", "other") for q in quarantine).items())),
        **figures, **extra)
