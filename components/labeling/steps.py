"""KFP components of the labeling area: thin wrappers around the plain functions.

Each step takes only the spec sections it reads, as dicts, and the spec's ``name`` (Label Studio
project titles) where it needs it.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_for_labeling(name: str, task: dict, candidates: list, metrics: dict, labeling: dict,
                        dataset: Input[Dataset], counts: Output[Metrics],
                        scores: Input[Artifact] = None, responses: Input[Artifact] = None,
                        model: Input[Model] = None, evaluation: Input[Artifact] = None, chosen: str = "",
                        chosen_model: Input[Model] = None) -> int:
    """Sample rows and import them as Label Studio tasks; returns the number of new tasks.

    Without ``scores``, ``responses`` and ``model``, the chosen candidate's ``evaluation``
    (its report folder), ``chosen`` (select_candidate's JSON) and ``chosen_model`` (its
    ``model`` output) supply what the spec's labeling needs: see
    :func:`aicd.components.labeling.review.labeling_inputs`.

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section.
        labeling: The spec's ``labeling`` section (Label Studio, sampling).
        dataset: The data set to sample rows from.
        scores: Per-row scores for uncertainty sampling.
        responses: A model's answers for pairwise comparison.
        model: A model to score rows with for uncertainty sampling.
        evaluation: The chosen candidate's evaluation report folder.
        chosen: select_candidate's chosen entry (JSON).
        chosen_model: select_candidate's Model artifact.
        counts: Output: tasks created and open, for the KFP UI.
    """
    import tempfile

    from aicd.components.contracts import step_spec
    from aicd.components.labeling.export import export_for_labeling as run
    from aicd.components.labeling.review import labeling_inputs

    spec = step_spec(name, task=task, candidates=candidates, metrics=metrics, labeling=labeling)
    with tempfile.TemporaryDirectory() as tmp:
        if scores is None and responses is None and model is None:
            inputs = labeling_inputs(spec, dataset.path, tmp, evaluation.path if evaluation else None, chosen,
                                     chosen_model.path if chosen_model else None)
        else:
            inputs = {"dataset_dir": dataset.path, "scores": scores.path if scores else None,
                      "responses": responses.path if responses else None, "model_dir": model.path if model else None}
        result = run(spec, **inputs)
    counts.log_metric("tasks_created", result.created)
    counts.log_metric("open_tasks", result.open_tasks)
    counts.metadata["project_id"] = result.project_id
    return result.created


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def import_labels(name: str, task: dict, data: dict, labeling: dict, dataset: Input[Dataset],
                  labeled: Output[Dataset], metrics: Output[Metrics], previous_uri: str = "") -> int:
    """Pull completed annotations into the next data set version; returns the number of new labeled rows
    (relative to the last labeled version at ``previous_uri``, a path or pvc:// URI, when given).

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        data: The spec's ``data`` section (split).
        labeling: The spec's ``labeling`` section (Label Studio, agreement).
        dataset: The data set whose rows were sent for labeling.
        previous_uri: The last labeled version, to count new rows from.
        labeled: Output: the labeled data set version.
        metrics: Output: labeled, new, pending and adjudication counts and agreement.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.labeling.annotations import import_labels as run
    from aicd.components.uris import resolve_data

    spec = step_spec(name, task=task, data=data, labeling=labeling)
    result = run(spec, dataset.path, labeled.path, previous_dir=resolve_data(previous_uri) if previous_uri else None)
    labeled.metadata.update(fingerprint=result.fingerprint, parent=result.parent)
    for name in ("labeled", "new_rows", "pending", "adjudication", "invalid_annotations"):
        metrics.log_metric(name, getattr(result, name))
    if result.agreement.get("value") is not None:
        metrics.log_metric(result.agreement["method"], result.agreement["value"])
    return result.new_rows


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def collect_feedback(name: str, task: dict, data: dict, labeling: dict, log_uri: str, feedback: Output[Dataset],
                     metrics: Output[Metrics], parent: Input[Dataset] = None, parent_uri: str = "") -> int:
    """Turn the predictor's payload log (a path or pvc:// URI) into a feedback data set version on top of
    the previous one (``parent`` artifact, or ``parent_uri``); returns the number of new rows.

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        data: The spec's ``data`` section (split).
        labeling: The spec's ``labeling`` section (PII patterns).
        log_uri: The predictor's payload log folder.
        parent: The previous feedback version.
        parent_uri: The previous feedback version by URI, when ``parent`` is absent.
        feedback: Output: the feedback data set version.
        metrics: Output: rows, new rows, preference pairs and quarantined counts.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.labeling.feedback import collect_feedback as run
    from aicd.components.uris import resolve_data

    spec = step_spec(name, task=task, data=data, labeling=labeling)
    parent_dir = parent.path if parent else (resolve_data(parent_uri) if parent_uri else None)
    result = run(spec, resolve_data(log_uri), feedback.path, parent_dir=parent_dir)
    feedback.metadata["fingerprint"] = result.fingerprint
    for name in ("rows", "new_rows", "preference_pairs", "quarantined"):
        metrics.log_metric(name, getattr(result, name))
    return result.new_rows


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def review_candidates(name: str, task: dict, labeling: dict, predictions: Input[Artifact], review: Output[HTML],
                      push: bool = True) -> int:
    """Candidates' outputs ({"prompts", "outputs", "references"} JSON) to Label Studio and an HTML page.

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        labeling: The spec's ``labeling`` section.
        predictions: The candidates' outputs.
        push: Whether to create the Label Studio tasks (else only the page).
        review: Output: the side-by-side HTML page.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from aicd.components.contracts import step_spec
    from aicd.components.labeling.review import review_candidates as run

    spec = step_spec(name, task=task, labeling=labeling)
    data = json.loads(Path(predictions.path).read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(spec, data["prompts"], data["outputs"], Path(tmp) / "review",
                     references=data.get("references"), push=push)
        shutil.copyfile(result.html, review.path)
    return result.tasks_created


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def review_leaderboard(name: str, task: dict, labeling: dict, dataset: Input[Dataset], leaderboard: Input[Artifact],
                       review: Output[HTML], push: bool = True) -> int:
    """Stage 1 manual review: every benchmarked entry's outputs on the same prompts (the leaderboard's
    reports) side by side in an HTML page and, for generation, as Pairwise tasks in Label Studio.

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        labeling: The spec's ``labeling`` section.
        dataset: The data set the leaderboard was made on.
        leaderboard: select_candidate's leaderboard.
        push: Whether to create the Label Studio tasks (else only the page).
        review: Output: the side-by-side HTML page.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from aicd.components.contracts import step_spec
    from aicd.components.labeling.review import review_leaderboard as run

    spec = step_spec(name, task=task, labeling=labeling)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(spec, dataset.path, leaderboard.path, Path(tmp) / "review", push=push)
        shutil.copyfile(result.html, review.path)
    review.metadata.update(project_id=result.project_id or 0, tasks_total=result.tasks_total)
    return result.tasks_created
