"""export_for_labeling: choose rows for people to label and send them to Label Studio.

The project (found or created by ``labeling.project``) gets a labeling configuration
derived from the spec. Every task carries the row's stable id in ``data.aicd_id``;
rows already in the project are never imported again (Label Studio's own task ids
are reused after a project is deleted, so they identify nothing).

``labeling.batch_size`` is the size of the open labeling queue: a run adds tasks only
until the project has that many tasks with fewer than ``labeling.min_annotations``
annotations. A re-run with nothing labeled in between adds nothing; once people
label, the next run tops the queue up with the next rows of the sampling order.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.data.format import SPLITS
from aicd.components.errors import LabelingError
from aicd.components.labeling.client import ID_KEY, LabelStudio
from aicd.components.labeling.configs import Kind, label_config, labeling_of, task_kind
from aicd.components.labeling.sampling import hash_order, load_scores, select
from aicd.components.labeling.versions import read_version
from aicd.components.spec import Spec

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    project_id: int
    project: str
    kind: Kind
    created: int
    already_in_project: int
    open_tasks: int
    selected_ids: list[str] = field(default_factory=list)


def load_responses(responses: str | Path | Mapping[str, str]) -> dict[str, str]:
    """Row id -> a model's response, from a mapping, a JSON file of one, or an evaluation report."""
    if isinstance(responses, (str, Path)):
        path = Path(responses)
        path = path / "report.json" if path.is_dir() else path
        try:
            responses = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LabelingError(f"responses file {path} cannot be read as JSON ({err})",
                                "pass {\"row-id\": \"response\"} or the evaluation report.json") from None
    if isinstance(responses, Mapping) and responses.get("kind") == "evaluation":
        examples = responses.get("examples") or {}
        ids, preds = examples.get("ids") or [], examples.get("predictions") or []
        if len(ids) != len(preds) or not ids:
            raise LabelingError("the evaluation report has no per-example predictions to compare",
                                "evaluate with predictions kept (`examples.predictions`)")
        return {str(i): str(p) for i, p in zip(ids, preds)}
    if not isinstance(responses, Mapping):
        raise LabelingError("responses must map row ids to response texts", "pass {\"row-id\": \"response\"}")
    return {str(k): str(v) for k, v in responses.items()}


def _task(kind: Kind, spec: Spec, row: dict[str, Any], split: str, other: dict[str, str]) -> dict[str, Any] | None:
    """The task data of one row, or None when the row cannot make this kind of task."""
    task = spec.task
    data: dict[str, Any] = {ID_KEY: str(row["id"]), "aicd_split": split}
    if kind == "choices":
        if not row.get(task.text_field):
            return None
        data["text"] = str(row[task.text_field])
        return data
    instruction, response = row.get(task.instruction_field), row.get(task.response_field)
    if not instruction:
        return None
    if kind == "rating":
        if not response:
            return None
        data.update(instruction=str(instruction), response=str(response))
        return data
    alternative = other.get(str(row["id"]))
    if not response or alternative is None:
        return None
    pair = [("dataset", str(response)), ("model", alternative)]
    if int(hash_order(str(row["id"]), "sides"), 16) % 2:  # no position bias: the sides alternate
        pair.reverse()
    data.update(prompt=str(instruction), left=pair[0][1], right=pair[1][1],
                aicd_left=pair[0][0], aicd_right=pair[1][0])
    return data


def _stratify_column(spec: Spec, rows: list[dict[str, Any]], stratify_by: str | None) -> str | None:
    if stratify_by:
        return stratify_by
    if spec.task.type == "text-classification":
        return spec.task.label_field
    return "topic" if any("topic" in r for r in rows) else "source"


def export_for_labeling(spec: Spec | dict[str, Any], dataset_dir: str | Path,
                        scores: str | Path | Mapping[str, Any] | None = None,
                        responses: str | Path | Mapping[str, str] | None = None,
                        client: LabelStudio | None = None, seed: int = 0, stratify_by: str | None = None,
                        splits: tuple[str, ...] = SPLITS, score_metric: str | None = None,
                        model_dir: str | Path | None = None) -> ExportResult:
    """Sample rows of a data set version and import them as tasks of the spec's project.

    Uncertainty sampling ranks rows by ``scores`` (see sampling.py for the forms), or by
    the Model artifact at ``model_dir`` scoring the rows itself.
    """
    spec, labeling = labeling_of(spec)
    kind = task_kind(spec.task, labeling)
    uncertainty = load_scores(scores, score_metric, spec.metrics.primary) if scores is not None else None
    _, by_split = read_version(dataset_dir)
    candidates = [(row, name) for name in splits for row in by_split[name]]
    if uncertainty is None and model_dir is not None and labeling.sampling == "uncertainty":
        from aicd.components.labeling.uncertainty import model_uncertainty

        uncertainty = model_uncertainty(spec.task, model_dir, [row for row, _ in candidates])
    if labeling.sampling == "uncertainty" and not uncertainty:
        raise LabelingError("`labeling.sampling` is uncertainty but no model scores were given",
                            "pass scores (per-row class probabilities or an evaluation report.json) or the "
                            "current Model artifact, or set `labeling.sampling` to random or stratified")
    other = load_responses(responses) if responses is not None else {}
    if kind == "pairwise" and not other:
        raise LabelingError("`labeling.generation_mode` is pairwise but no model responses were given to compare "
                            "with the data set's responses",
                            "pass responses (an evaluation report.json with predictions, or {id: response}), "
                            "or set `labeling.generation_mode: rating`")

    client = client or LabelStudio.from_spec(labeling)
    config = label_config(kind, spec.task.labels)
    project = client.get_or_create_project(labeling.project, config,
                                           f"aicd: {spec.name} ({kind})",
                                           {"maximum_annotations": labeling.min_annotations})
    existing = client.tasks(project["id"])
    present = {str(t["data"][ID_KEY]) for t in existing if ID_KEY in (t.get("data") or {})}
    open_tasks = sum(1 for t in existing if int(t.get("total_annotations") or 0) < labeling.min_annotations)
    budget = max(0, labeling.batch_size - open_tasks)

    pool, task_data = [], {}
    for row, name in candidates:
        if str(row["id"]) in present:
            continue
        data = _task(kind, spec, row, name, other)
        if data is not None:
            pool.append(row)
            task_data[str(row["id"])] = data
    chosen = select(pool, budget, labeling.sampling, seed,
                    _stratify_column(spec, pool, stratify_by), uncertainty)
    tasks = [{"data": task_data[str(r["id"])]} for r in chosen]
    created = client.import_tasks(project["id"], tasks) if tasks else 0
    log.info("project %r: %d new task(s), %d already there, %d open before this run",
             labeling.project, created, len(present), open_tasks)
    return ExportResult(project_id=int(project["id"]), project=labeling.project, kind=kind, created=created,
                        already_in_project=len(present), open_tasks=open_tasks + created,
                        selected_ids=[str(r["id"]) for r in chosen])
