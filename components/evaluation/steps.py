"""KFP steps of evaluation: thin wrappers over runs.py (which calls evaluate.py, compare.py, leaderboard.py).

Each step takes only the spec sections it reads, as dicts. Reports are folders
(report.json, report.html, card.json); comparison and leaderboard artifacts are folders
holding comparison.json / leaderboard.json. Steps that feed a dsl.Collected fan-in return
their leaderboard entries as a JSON string.
"""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_model(task: dict, candidates: list, metrics: dict, dataset: Input[Dataset], report: Output[Artifact],
                   html: Output[HTML], scores: Output[Metrics], confusion: Output[ClassificationMetrics],
                   model: Input[Model] = None, candidate: str = "",
                   endpoint: str = "", split: str = "", light: bool = False) -> str:
    """Evaluate a Model artifact, a base candidate (no ``model``, or a ``model`` that only refers to a base
    candidate, as find_champion and select_candidate write: then in the reference's leaderboard mode,
    few-shot examples included) or a live ``endpoint``; a summary as JSON.

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section (metrics, split, bootstrap, slices).
        dataset: The data set to evaluate on.
        model: The Model artifact to evaluate; absent for a base candidate or an endpoint.
        candidate: A candidate's name when evaluating a base candidate ('' for the first).
        endpoint: A live OpenAI-compatible endpoint to evaluate instead of a model.
        split: The split to evaluate on ('' for ``metrics.split``).
        light: Metrics only, to choose between trained methods: no behavioural checks, adapter probe or
            latency timing (a gate refuses such a report).
        report: Output: the evaluation report folder (report.json, report.html, card.json).
        html: Output: the HTML page of the result.
        scores: Output: every metric's value, for the KFP UI.
        confusion: Output: the confusion matrix of a classification evaluation, for the KFP UI.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.runs import copy_html, run_evaluate_model

    result = run_evaluate_model(step_spec(task=task, candidates=candidates, metrics=metrics), dataset.path,
                                report.path, model.path if model is not None else None, candidate, endpoint, split,
                                light)
    copy_html(result.html, html.path)
    for name, value in result.metrics.items():
        scores.log_metric(name, value)
    if result.report.get("classification"):  # the confusion matrix, as the KFP UI draws it
        classes = result.report["classification"]
        confusion.log_confusion_matrix(classes["labels"], classes["confusion_matrix"])
    model_info = result.report["model"]
    report.metadata.update({"model": model_info["name"], "digest": model_info["digest"] or "",
                            "n": result.report["n"], "complete": result.report["complete"]})
    return result.summary()


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare_models(metrics: dict, candidate_report: Input[Artifact], champion_report: Input[Artifact],
                   comparison: Output[Artifact], diffs: Output[Metrics]):
    """Paired bootstrap of the candidate against the champion at ``metrics.gates.confidence``.

    Args:
        metrics: The spec's ``metrics`` section (seed, gates.confidence).
        candidate_report: evaluate_model's report of the candidate.
        champion_report: evaluate_model's report of the champion, on the same examples.
        comparison: Output: comparison.json with every metric's paired difference and interval.
        diffs: Output: every metric's difference, for the KFP UI.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.runs import compare_reports

    result = compare_reports(step_spec(metrics=metrics), candidate_report.path, champion_report.path,
                             comparison.path)
    for name, row in result["metrics"].items():
        diffs.log_metric(f"diff_{name}", row["diff"])
    comparison.metadata["n"] = result["n"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_candidates(candidates: list) -> List[str]:
    """The spec's candidate names (the fan-out of the benchmark).

    Args:
        candidates: The spec's ``candidates``.
    """
    from aicd.components.contracts import step_spec

    return [c.name for c in step_spec(candidates=candidates).candidates]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_candidate(task: dict, candidates: list, metrics: dict, dataset: Input[Dataset], candidate: str,
                       results: Output[Artifact]) -> str:
    """One candidate in each of its modes (zero/few-shot, or linear probe); its leaderboard entries as JSON.

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section.
        dataset: The data set to benchmark on.
        candidate: The name of the candidate to evaluate.
        results: Output: the entries' reports (and probe models).
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.leaderboard import evaluate_candidate as run
    from aicd.components.evaluation.runs import relocate

    entries = run(step_spec(task=task, candidates=candidates, metrics=metrics), dataset.path, candidate,
                  results.path)
    results.metadata["entries"] = [e["name"] for e in entries]
    return json.dumps(relocate(entries, results.path, results.uri))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_baseline(task: dict, candidates: list, metrics: dict, dataset: Input[Dataset],
                      results: Output[Artifact]) -> str:
    """The TF-IDF + logistic regression baseline (classification; an empty list otherwise), as JSON.

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section.
        dataset: The data set to benchmark on.
        results: Output: the entries' reports (and probe models).
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.leaderboard import baseline_entries
    from aicd.components.evaluation.runs import relocate

    entries = baseline_entries(step_spec(task=task, candidates=candidates, metrics=metrics), dataset.path,
                               results.path)
    return json.dumps(relocate(entries, results.path, results.uri))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_candidate(task: dict, candidates: list, metrics: dict, entries: List[str], baseline: str,
                     leaderboard: Output[Artifact], html: Output[HTML], model: Output[Model],
                     results: Input[List[Artifact]] = None, baseline_results: Input[Artifact] = None
                     ) -> NamedTuple("Chosen", candidate=str, uri=str, mode=str, chosen=str):
    """Rank every entry under the spec's weights and constraints; the chosen candidate.

    ``leaderboard`` holds leaderboard.json with every entry's report copied beside it;
    ``model`` is the chosen entry to deliver: a copy of the model its mode produced (a linear
    probe), or a reference to its base candidate (zero-/few-shot).

    Args:
        task: The spec's ``task`` section (the leaderboard records the task type).
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section (selection_weights, constraints).
        entries: evaluate_candidate's entries, one JSON list per candidate.
        baseline: evaluate_baseline's entries (JSON list).
        results: evaluate_candidate's results artifacts: the entries' reports, read as inputs.
        baseline_results: evaluate_baseline's results artifact.
        leaderboard: Output: leaderboard.json with every entry's report beside it.
        html: Output: the HTML page of the result.
        model: Output: the chosen entry as a Model artifact (a model copy or a base-model reference).
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.runs import copy_html, run_select_candidate

    known = [(a.uri, a.path) for a in list(results or []) + [baseline_results] if a is not None and a.uri]
    result = run_select_candidate(step_spec(task=task, candidates=candidates, metrics=metrics),
                                  list(entries) + [baseline],
                                  known, leaderboard.path, model.path, model.uri)
    copy_html(f"{leaderboard.path}/leaderboard.html", html.path)
    chosen = result.chosen
    model.metadata.update({"chosen": chosen["name"], "candidate": chosen["candidate"], "mode": chosen["mode"],
                           "kind": result.kind, "digest": result.digest})
    leaderboard.metadata.update({"chosen": chosen["name"],
                                 "baseline_beats_chosen": result.board["baseline_beats_chosen"]})
    outputs = NamedTuple("Chosen", candidate=str, uri=str, mode=str, chosen=str)
    return outputs(chosen["candidate"], chosen["uri"], chosen["mode"], json.dumps(chosen))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_search(training: dict) -> List[dict]:
    """One ``training`` section per hyper-parameter trial (grid or random over ``training.search_space``).

    Args:
        training: The spec's ``training`` section.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.runs import plan_training_trials

    return plan_training_trials(step_spec(training=training))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_trial(task: dict, candidates: list, metrics: dict, results: List[str], leaderboard: Output[Artifact],
                 html: Output[HTML]) -> str:
    """The best hyper-parameter trial (evaluate_model summaries of the trials) under the selection rule.

    Args:
        task: The spec's ``task`` section (the leaderboard records the task type).
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section (selection_weights, constraints).
        results: evaluate_model's summaries of the trials' models.
        leaderboard: Output: leaderboard.json with every entry's report beside it.
        html: Output: the HTML page of the result.
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.evaluation.runs import copy_html, run_select_trial

    best = run_select_trial(step_spec(task=task, candidates=candidates, metrics=metrics), list(results),
                            leaderboard.path)
    copy_html(f"{leaderboard.path}/leaderboard.html", html.path)
    return json.dumps(best)
