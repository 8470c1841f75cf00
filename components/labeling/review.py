"""Stage 1 manual review: candidate models side by side, in Label Studio and in HTML.

The evaluation step produces each candidate's outputs on the same sample prompts
(``{candidate: [output per prompt]}``); optional reference answers join as the
candidate ``reference``. Every pair of candidates on every prompt becomes a Pairwise
task (sides alternate by a hash, so neither model always sits on the left), keyed
by a stable id so a re-run adds nothing twice; ``review.html`` shows all outputs of
a prompt in one row. :func:`review_wins` tallies the people's choices.
"""

import hashlib
import html
import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir
from aicd.components.errors import AicdError, LabelingError
from aicd.components.labeling.agreement import resolve
from aicd.components.labeling.client import ID_KEY, LabelStudio
from aicd.components.labeling.configs import label_config, labeling_of, read_value
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
REFERENCE = "reference"


@dataclass
class ReviewResult:
    html: str
    project_id: int | None
    tasks_created: int
    tasks_total: int


def review_project(spec: Spec) -> str:
    _, labeling = labeling_of(spec)
    return f"{labeling.project[:39]}-candidates"


def _check(prompts: list[str], outputs: dict[str, list[str]]) -> None:
    if not prompts:
        raise LabelingError("no sample prompts to review", "pass the prompts the candidates answered")
    for name, outs in outputs.items():
        if len(outs) != len(prompts):
            raise LabelingError(f"candidate {name!r} has {len(outs)} outputs for {len(prompts)} prompts",
                                "give one output per prompt, in the prompts' order")


def pairwise_tasks(prompts: list[str], outputs: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One Pairwise task per prompt and pair of candidates."""
    tasks = []
    for i, prompt in enumerate(prompts):
        for a, b in itertools.combinations(sorted(outputs), 2):
            key = hashlib.sha256(json.dumps([prompt, a, b]).encode()).hexdigest()[:20]
            left, right = (a, b) if int(key, 16) % 2 == 0 else (b, a)
            tasks.append({"data": {ID_KEY: f"review-{key}", "prompt": prompt, "left": outputs[left][i],
                                   "right": outputs[right][i], "aicd_left": left, "aicd_right": right}})
    return tasks


def render_html(title: str, prompts: list[str], outputs: dict[str, list[str]]) -> str:
    names = sorted(outputs)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        "<tr><td class=p>" + html.escape(p) + "</td>"
        + "".join(f"<td>{html.escape(outputs[n][i])}</td>" for n in names) + "</tr>\n"
        for i, p in enumerate(prompts))
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}"
             "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;white-space:pre-wrap}"
             "th{background:#f3f3f3}td.p{font-weight:bold;width:20%}")
    return (f"<!doctype html>\n<html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(prompts)} prompts, {len(names)} candidates, side by side.</p>"
            f"<table><tr><th>prompt</th>{head}</tr>\n{body}</table></body></html>\n")


def review_candidates(spec: Spec | dict[str, Any], prompts: list[str], outputs: dict[str, list[str]],
                      out_dir: str | Path, references: list[str] | None = None,
                      client: LabelStudio | None = None, push: bool = True) -> ReviewResult:
    """Write review.html (+ review.json) to ``out_dir`` and, with push, the Pairwise tasks to Label Studio."""
    spec, labeling = labeling_of(spec)
    outputs = {k: [str(o) for o in v] for k, v in outputs.items()}
    if references is not None:
        outputs[REFERENCE] = [str(r) for r in references]
    _check(prompts, outputs)
    if len(outputs) < 2:
        raise LabelingError(f"a side-by-side review needs two candidates, got {len(outputs)}",
                            "add a candidate to the spec, or pass reference answers to compare with")
    title = review_project(spec)
    project_id, created, tasks = None, 0, pairwise_tasks(prompts, outputs)
    if push:
        client = client or LabelStudio.from_spec(labeling)
        project = client.get_or_create_project(title, label_config("pairwise"), f"aicd: {spec.name} candidates")
        project_id = int(project["id"])
        present = {str(t.get("data", {}).get(ID_KEY)) for t in client.tasks(project_id)}
        new = [t for t in tasks if t["data"][ID_KEY] not in present]
        created = client.import_tasks(project_id, new) if new else 0
    with atomic_dir(out_dir) as tmp:
        (tmp / "review.html").write_text(render_html(f"{spec.name}: candidate review", prompts, outputs),
                                          encoding="utf-8")
        (tmp / "review.json").write_text(json.dumps({"prompts": prompts, "outputs": outputs, "project": title,
                                                     "project_id": project_id}, indent=1, ensure_ascii=False),
                                         encoding="utf-8")
    log.info("review: %d prompts x %d candidates; %d new Label Studio task(s)", len(prompts), len(outputs), created)
    return ReviewResult(str(Path(out_dir) / "review.html"), project_id, created, len(tasks))


def outputs_from_reports(spec: Spec | dict[str, Any], dataset_dir: str | Path,
                         reports: dict[str, str | Path], limit: int = 20) -> dict[str, Any]:
    """``{"prompts", "outputs", "references"}`` for review from candidates' evaluation reports.

    The prompts are the data set rows every report predicted (``examples.ids`` /
    ``examples.predictions``), in the first report's order, at most ``limit``; the
    references are those rows' responses.
    """
    from aicd.components.labeling.export import load_responses
    from aicd.components.labeling.versions import read_version

    spec, _ = labeling_of(spec)
    instruction, response = spec.task.fields
    predicted = {name: load_responses(path) for name, path in reports.items()}
    if not predicted:
        raise LabelingError("no evaluation reports to review", "pass {candidate: report.json}")
    _, splits = read_version(dataset_dir)
    rows = {str(r["id"]): r for part in splits.values() for r in part}
    first = next(iter(predicted.values()))
    ids = [i for i in first if i in rows and all(i in p for p in predicted.values())][:limit]
    if not ids:
        raise LabelingError("the reports share no predicted rows of this data set",
                            "evaluate every candidate on the same data set version")
    return {"prompts": [str(rows[i][instruction]) for i in ids],
            "outputs": {name: [p[i] for i in ids] for name, p in predicted.items()},
            "references": [str(rows[i].get(response) or "") for i in ids]}


def review_wins(spec: Spec | dict[str, Any], client: LabelStudio | None = None) -> dict[str, int]:
    """Candidate -> comparisons won (majority of each task's annotations; ties count for nobody)."""
    spec, labeling = labeling_of(spec)
    client = client or LabelStudio.from_spec(labeling)
    project = client.find_project(review_project(spec))
    if project is None:
        raise LabelingError(f"no review project {review_project(spec)!r}", "run review_candidates first")
    wins: Counter[str] = Counter()
    for task in client.export(project["id"]):
        values = [read_value("pairwise", a.get("result")).value for a in task.get("annotations") or []
                  if not a.get("was_cancelled")]
        values = [v for v in values if v is not None]
        if values:
            side = resolve(values, "majority").value
            if side is not None:
                wins[task["data"][f"aicd_{side}"]] += 1
    return dict(wins)


def locate(uri: str, base: str | Path | None = None) -> Path:
    """A report path or URI written by another step, as a local path.

    A relative path is taken relative to ``base`` (the leaderboard folder, which holds copies of
    its entries' reports). Locally (kfp.local) it is a path already; in a KFP pod, object-store
    URIs are first looked for under the launcher's mounts (``/gcs``, ``/s3``, ``/minio``), then
    fetched through :func:`aicd.components.uris.resolve_path`.
    """
    path = Path(uri)
    if base is not None and "://" not in uri and not path.is_absolute():
        return Path(base) / path
    if path.exists():
        return path
    for scheme, mount in (("gs://", "/gcs/"), ("s3://", "/s3/"), ("minio://", "/minio/")):
        if uri.startswith(scheme) and Path(mount + uri[len(scheme):]).exists():
            return Path(mount + uri[len(scheme):])
    from aicd.components.uris import resolve_path

    return resolve_path(uri)


def _has_predictions(report: dict[str, Any]) -> bool:
    examples = report.get("examples") or {}
    ids, preds = examples.get("ids") or [], examples.get("predictions") or []
    return bool(ids) and len(ids) == len(preds)


def leaderboard_reports(leaderboard: str | Path | dict[str, Any]) -> dict[str, Path]:
    """Entry name -> report.json of every leaderboard entry whose report kept per-example predictions.

    ``leaderboard`` is the leaderboard folder, its leaderboard.json, or the loaded board. Report
    paths relative to the folder (select_candidate copies the reports there) are read from it;
    a loaded board's relative paths are taken from the working directory.
    Entries without a report, or whose report has no predictions, are left out (logged).
    """
    folder = None
    if not isinstance(leaderboard, dict):
        path = Path(leaderboard)
        path = path / "leaderboard.json" if path.is_dir() else path
        folder = path.parent
        try:
            leaderboard = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LabelingError(f"leaderboard {path} cannot be read as JSON ({err})",
                                "pass the leaderboard artifact select_candidate wrote") from None
    if leaderboard.get("kind") != "leaderboard" or not isinstance(leaderboard.get("entries"), list):
        raise LabelingError("the leaderboard has no `entries` (kind 'leaderboard' expected)",
                            "pass the leaderboard artifact select_candidate wrote")
    reports: dict[str, Path] = {}
    for entry in leaderboard["entries"]:
        name, where = entry.get("name"), entry.get("report")
        if not where:
            log.info("review: leaderboard entry %r has no report; left out", name)
            continue
        try:
            path = locate(str(where), folder)
        except AicdError as err:
            raise LabelingError(f"report {where} of leaderboard entry {name!r} cannot be found ({err})",
                                "run the benchmark again; its reports must stay where the leaderboard points") from None
        path = path / "report.json" if path.is_dir() else path
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LabelingError(f"report {path} of leaderboard entry {name!r} cannot be read ({err})",
                                "run the benchmark again; its reports must stay where the leaderboard points") from None
        if not _has_predictions(report):
            log.info("review: leaderboard entry %r kept no per-example predictions; left out", name)
            continue
        reports[str(name)] = path
    return reports


def review_leaderboard(spec: Spec | dict[str, Any], dataset_dir: str | Path, leaderboard: str | Path | dict[str, Any],
                       out_dir: str | Path, client: LabelStudio | None = None, push: bool = True,
                       limit: int = 20) -> ReviewResult:
    """The side-by-side review of every benchmarked entry's outputs on the same prompts.

    Generation: each entry (candidate and mode, e.g. ``tiny/zero-shot``) and the
    reference answer side by side in review.html, and Pairwise tasks in Label Studio.
    Classification: the entries' predicted labels (the TF-IDF baseline included) and
    the gold label side by side in review.html only; a preference between two labels
    is no judgement a person should make, so Label Studio gets no review tasks (the
    labels themselves are labeled in the spec's labeling project).
    """
    spec, _ = labeling_of(spec)
    reports = leaderboard_reports(leaderboard)
    if not reports:
        raise LabelingError("no leaderboard entry kept per-example predictions to review",
                            "evaluate the candidates with predictions kept (`examples.predictions`)")
    data = outputs_from_reports(spec, dataset_dir, reports, limit)
    if push and spec.task.type == "text-classification":
        log.info("review: %s is text-classification; the %d entries' labels go to review.html only, "
                 "no Pairwise tasks to Label Studio", spec.name, len(reports))
        push = False
    return review_candidates(spec, data["prompts"], data["outputs"], out_dir, references=data["references"],
                             client=client, push=push)


# Stage 1 also sends the chosen candidate's work to labeling: what export_for_labeling needs from it.
def labeling_inputs(spec: Spec | dict[str, Any], dataset_dir: str | Path, work_dir: str | Path,
                    evaluation_dir: str | Path | None = None, chosen: str = "",
                    chosen_model_dir: str | Path | None = None) -> dict[str, Any]:
    """export_for_labeling's keyword arguments from the chosen candidate's evaluation.

    - ``generation_mode: pairwise``: the evaluation report's predictions are the model side.
    - ``sampling: uncertainty``: a chosen model folder (``chosen_model_dir``, select_candidate's
      ``model`` output unless it only refers to a base candidate; else ``chosen["model_dir"]``),
      e.g. the linear probe of an encoder, scores every row itself; otherwise the report's
      per-example scores rank the rows, and the pool is cut to the rows the report
      scored (a copy of the data set under ``work_dir``), so no unscored row is sampled.

    Returns ``dataset_dir`` (maybe the cut copy) and ``responses``/``scores``/``model_dir``.
    """
    from aicd.components.labeling.configs import task_kind
    from aicd.components.labeling.export import load_responses

    parsed, labeling = labeling_of(spec)
    out: dict[str, Any] = {"dataset_dir": str(dataset_dir)}
    report = str(Path(evaluation_dir) / "report.json") if evaluation_dir else None
    if task_kind(parsed.task, labeling) == "pairwise" and report:
        out["responses"] = report
    if labeling.sampling != "uncertainty":
        return out
    from aicd.components.models import base_model_ref

    if chosen_model_dir and base_model_ref(chosen_model_dir) is None:
        out["model_dir"] = str(chosen_model_dir)
        return out
    try:
        model_dir = (json.loads(chosen) or {}).get("model_dir") if chosen else None
    except (ValueError, AttributeError):
        raise LabelingError(f"`chosen` is not select_candidate's JSON object: {chosen[:80]!r}",
                            "pass select_candidate's `chosen` output") from None
    if model_dir:
        out["model_dir"] = str(locate(model_dir))
        return out
    if not report:
        return out  # export_for_labeling says what is missing
    from aicd.components.data.format import write_dataset
    from aicd.components.labeling.versions import read_version

    out["scores"] = report
    scored = set(load_responses(report))
    card, splits = read_version(dataset_dir)
    cut = {name: [r for r in rows if str(r["id"]) in scored] for name, rows in splits.items()}
    out["dataset_dir"] = str(Path(work_dir) / "scored-rows")
    write_dataset(out["dataset_dir"], cut, [], fingerprint=card.get("fingerprint"), parent=card.get("parent"),
                  sources=card.get("sources"), task=card.get("task"))
    return out
