"""import_labels: completed annotations from Label Studio -> the next data set version.

Per task (matched to its row by ``data.aicd_id``): the latest annotation of each
annotator counts; skipped (cancelled) annotations do not. An annotation with an
unknown label, an empty result or a result from another control is *quarantined*
with its reason (one annotator's slip does not block everyone's work), and the run
stops with an error when more than ``data.quality.max_bad_fraction`` of annotations
are unusable (then the project's configuration, not a person, is at fault).

Items with at least ``labeling.min_annotations`` usable annotations are resolved: an
annotation marked ground truth (an adjudicator's) wins; otherwise majority vote, or
with ``conflict_resolution: adjudicate`` any disagreement is left for a person. Items
left unresolved keep their previous values and are listed in quarantine.jsonl as
``needs-adjudication``; the next run picks them up once resolved in Label Studio.

The output is computed from the project's whole state and written atomically, so a
re-run (after a crash or new labels) is idempotent by task id and never half-written.
"""

import logging
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.errors import LabelingError
from aicd.components.labeling.agreement import agreement, resolve
from aicd.components.labeling.client import ID_KEY, LabelStudio
from aicd.components.labeling.configs import Kind, labeling_of, read_value, task_kind
from aicd.components.labeling.versions import parent_fingerprint, read_version, row_hash_of, write_version
from aicd.components.spec import LabelingSpec, Spec

log = logging.getLogger(__name__)


@dataclass
class Item:
    """The usable annotations of one task."""

    row_id: str
    task_id: int
    data: dict[str, Any]
    values: dict[Hashable, Any] = field(default_factory=dict)  # annotator -> value
    ground_truth: Any = None


@dataclass
class Collected:
    items: dict[str, Item]
    quarantine: list[dict[str, Any]]
    usable: int = 0
    skipped: int = 0
    foreign_tasks: int = 0


@dataclass
class ImportResult:
    out_dir: str
    fingerprint: str
    parent: str
    labeled: int
    new_rows: int
    pending: int
    adjudication: int
    invalid_annotations: int
    agreement: dict[str, Any]


def collect(kind: Kind, tasks: list[dict[str, Any]], labels: list[str] | None) -> Collected:
    """Usable annotation values per task from a Label Studio JSON export; the rest quarantined."""
    out = Collected({}, [])
    for task in tasks:
        data = task.get("data") or {}
        if ID_KEY not in data:
            out.foreign_tasks += 1
            continue
        item = Item(str(data[ID_KEY]), int(task["id"]), data)
        ordered = sorted(task.get("annotations") or [], key=lambda a: (str(a.get("updated_at")), a.get("id", 0)))
        for ann in ordered:
            if ann.get("was_cancelled"):
                out.skipped += 1
                continue
            read = read_value(kind, ann.get("result"), labels)
            annotator = ann.get("completed_by")
            if isinstance(annotator, dict):
                annotator = annotator.get("id")
            if read.problem is not None:
                item.values.pop(annotator, None)  # this person's latest answer is unusable
                out.quarantine.append({"kind": "invalid-annotation", "id": item.row_id, "task": item.task_id,
                                       "annotation": ann.get("id"), "annotator": annotator,
                                       "reason": read.problem, "result": ann.get("result")})
                continue
            out.usable += 1
            item.values[annotator] = read.value  # the latest annotation of an annotator wins
            if ann.get("ground_truth"):
                item.ground_truth = read.value
        out.items[item.row_id] = item
    return out


def _check_bad_fraction(collected: Collected, max_bad: float) -> None:
    bad = sum(1 for q in collected.quarantine if q["kind"] == "invalid-annotation")
    total = bad + collected.usable
    if total and bad / total > max_bad:
        examples = "; ".join(f"task {q['task']}: {q['reason']}" for q in collected.quarantine[:3])
        raise LabelingError(f"{bad} of {total} annotations ({bad / total:.0%}) are unusable, more than "
                            f"`data.quality.max_bad_fraction` ({max_bad:.0%}): {examples}",
                            "make the project's labeling configuration match the spec (run export_for_labeling), "
                            "fix or delete those annotations in Label Studio, then import again")


def _apply(kind: Kind, row: dict[str, Any], value: Any, item: Item, spec: Spec) -> dict[str, Any]:
    """The row with the people's value applied."""
    new = dict(row)
    new["annotations"] = len(item.values)
    if kind == "choices":
        field_name = spec.task.label_field
        new["previous_label"] = row.get(field_name)
        new[field_name] = value
    elif kind == "rating":
        new["rating"] = int(value)
    else:
        chosen_side, rejected_side = ("left", "right") if value == "left" else ("right", "left")
        new.update(prompt=item.data.get("prompt"), chosen=item.data.get(chosen_side),
                   rejected=item.data.get(rejected_side), chosen_from=item.data.get(f"aicd_{chosen_side}"))
        new[spec.task.response_field] = new["chosen"]  # the preferred answer is the SFT target too
    new["label_source"] = "annotators"
    return new


def _is_new(kind: Kind, before: dict[str, Any] | None, new: dict[str, Any], spec: Spec) -> bool:
    """A human value the earlier version did not have (or had differently)."""
    if before is None or before.get("label_source") != "annotators":
        return True
    keys = {"choices": spec.task.label_field, "rating": "rating", "pairwise": "chosen"}
    return before.get(keys[kind]) != new.get(keys[kind])


def _previous_rows(previous_dir: str | Path | None) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    if previous_dir is None:
        return None, None
    card, splits = read_version(previous_dir)
    return {str(r["id"]): r for rows in splits.values() for r in rows}, parent_fingerprint(card)


def _resolve_items(kind: Kind, spec: Spec, labeling: LabelingSpec, collected: Collected,
                   splits: dict[str, list[dict[str, Any]]], previous: dict[str, dict[str, Any]] | None,
                   quarantine: list[dict[str, Any]]) -> Counter[str]:
    """Apply every resolvable item to its row in ``splits`` (in place); quarantine the rest."""
    counts: Counter[str] = Counter()
    where = {str(r["id"]): (name, n) for name, rows in splits.items() for n, r in enumerate(rows)}
    for row_id, item in sorted(collected.items.items()):
        if len(item.values) < labeling.min_annotations and item.ground_truth is None:
            counts["pending"] += 1
            continue
        if row_id not in where:
            quarantine.append({"kind": "unknown-row", "id": row_id, "task": item.task_id,
                               "reason": f"task {item.task_id} labels row {row_id!r}, which is not in the parent "
                                         "data set; import into the version the tasks were exported from"})
            continue
        res = resolve(list(item.values.values()), labeling.conflict_resolution, item.ground_truth)
        if res.value is None:
            counts["adjudication"] += 1
            quarantine.append({"kind": "needs-adjudication", "id": row_id, "task": item.task_id,
                               "votes": res.votes, "reason": res.reason})
            continue
        name, index = where[row_id]
        parent_row = splits[name][index]
        new = _apply(kind, parent_row, res.value, item, spec)
        counts["labeled"] += 1
        counts["new_rows"] += _is_new(kind, parent_row if previous is None else previous.get(row_id), new, spec)
        splits[name][index] = new
    return counts


def import_labels(spec: Spec | dict[str, Any], dataset_dir: str | Path, out_dir: str | Path,
                  client: LabelStudio | None = None, min_rating: int = 3,
                  previous_dir: str | Path | None = None) -> ImportResult:
    """Pull completed annotations and write the next version of the data set to ``out_dir``.

    ``new_rows`` counts rows whose human value is new relative to ``previous_dir`` (the
    last labeled version, e.g. what the continuous pipeline trained on), or to the
    parent ``dataset_dir`` when no previous version is given.
    """
    spec, labeling = labeling_of(spec)
    kind = task_kind(spec.task, labeling)
    parent_card, splits = read_version(dataset_dir)
    previous, previous_fp = _previous_rows(previous_dir)
    client = client or LabelStudio.from_spec(labeling)
    project = client.find_project(labeling.project)
    if project is None:
        raise LabelingError(f"Label Studio at {client.url} has no project titled {labeling.project!r}",
                            "run export_for_labeling first, or fix `labeling.project`")
    collected = collect(kind, client.export(project["id"]), spec.task.labels or None)
    _check_bad_fraction(collected, spec.data.quality.max_bad_fraction)
    figures = agreement({i: it.values for i, it in collected.items.items() if it.values})
    quarantine = list(collected.quarantine)
    counts = _resolve_items(kind, spec, labeling, collected, splits, previous, quarantine)
    labeled, new_rows, pending, adjudication = (counts[k] for k in ("labeled", "new_rows", "pending", "adjudication"))
    if kind == "rating":
        splits, low = _drop_low_ratings(splits, min_rating)
        quarantine.extend(low)
    parent = parent_fingerprint(parent_card)
    card = write_version(
        out_dir, spec.task, splits, quarantine, parent,
        list(parent_card.get("sources") or []) + [{"name": f"label-studio:{labeling.project}",
                                                     "kind": "label-studio", "url": client.url,
                                                     "project": labeling.project, "project_id": int(project["id"])}],
        row_hash=row_hash_of(parent_card), agreement=figures,
        labeling={"project": labeling.project, "project_id": int(project["id"]), "kind": kind,
                  "tasks": len(collected.items), "labeled": labeled, "new_rows": new_rows, "previous": previous_fp,
                  "pending": pending,
                  "adjudication": adjudication, "invalid_annotations": len(collected.quarantine),
                  "skipped_annotations": collected.skipped, "foreign_tasks": collected.foreign_tasks,
                  "conflict_resolution": labeling.conflict_resolution, "min_annotations": labeling.min_annotations})
    log.info("imported %d labeled rows (%d new) from %r; agreement %s=%s", labeled, new_rows,
             labeling.project, figures["method"], figures["value"])
    return ImportResult(str(out_dir), card["fingerprint"], parent, labeled, new_rows, pending, adjudication,
                        len(collected.quarantine), figures)


def _drop_low_ratings(splits: dict[str, list[dict[str, Any]]], min_rating: int):
    kept, low = {}, []
    for name, rows in splits.items():
        kept[name] = []
        for row in rows:
            rating = row.get("rating")
            if rating is not None and rating < min_rating:
                low.append({"kind": "low-rating", **row,
                            "reason": f"people rated the response {rating}/5, below {min_rating}"})
            else:
                kept[name].append(row)
    return kept, low
