"""KFP steps of evaluation: thin wrappers over evaluate.py, compare.py, leaderboard.py, search.py.

Reports are folders (report.json, report.html, card.json); comparison and leaderboard
artifacts are folders holding comparison.json / leaderboard.json. Steps that feed a
dsl.Collected fan-in return their leaderboard entries as a JSON string.
"""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_model(spec: dict, dataset: Input[Dataset], report: Output[Artifact], html: Output[HTML],
                   metrics: Output[Metrics], confusion: Output[ClassificationMetrics], model: Input[Model] = None,
                   candidate: str = "", endpoint: str = "", split: str = "") -> str:
    """Evaluate a Model artifact, the base candidate (no ``model``, or a ``model`` that only refers to a
    base candidate, as find_champion and select_candidate write: then in the reference's leaderboard
    mode, few-shot examples included) or a live ``endpoint``; a summary as JSON."""
    import json
    import shutil

    from aicd.components.evaluation.evaluate import evaluate_model as evaluate
    from aicd.components.evaluation.leaderboard import evaluate_base, read_base_ref
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    model_path = model.path if model is not None else None
    ref = read_base_ref(model_path) if model_path is not None else None
    if ref is not None and ref["shot_examples"]:
        result = evaluate_base(parsed, dataset.path, report.path, ref["candidate"] or candidate or None,
                               ref["mode"], ref["shot_examples"], split or None)
    else:
        if ref is not None:
            model_path, candidate = None, ref["candidate"] or candidate
        result = evaluate(parsed, dataset.path, report.path, model=model_path, candidate=candidate or None,
                          endpoint=endpoint or None, split=split or None)
    shutil.copyfile(f"{report.path}/report.html", html.path)
    for name, value in result["metrics"].items():
        metrics.log_metric(name, value["value"])
    if result.get("classification"):  # the confusion matrix, as the KFP UI draws it
        confusion.log_confusion_matrix(result["classification"]["labels"], result["classification"]["confusion_matrix"])
    report.metadata.update({"model": result["model"]["name"], "digest": result["model"]["digest"] or "",
                            "n": result["n"], "complete": result["complete"]})
    return json.dumps({"model": result["model"], "description": parsed.description,
                       "metrics": {k: v["value"] for k, v in result["metrics"].items()}})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare_models(spec: dict, candidate_report: Input[Artifact], champion_report: Input[Artifact],
                   comparison: Output[Artifact], metrics: Output[Metrics]):
    """Paired bootstrap of the candidate against the champion at ``metrics.gates.confidence``."""
    import os

    from aicd.components.evaluation.compare import compare_models as compare, write_comparison
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    result = compare(candidate_report.path, champion_report.path, seed=parsed.metrics.seed,
                     confidence=parsed.metrics.gates.confidence)
    os.makedirs(comparison.path, exist_ok=True)
    write_comparison(result, os.path.join(comparison.path, "comparison.json"))
    for name, row in result["metrics"].items():
        metrics.log_metric(f"diff_{name}", row["diff"])
    comparison.metadata["n"] = result["n"]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_candidates(spec: dict) -> List[str]:
    """The spec's candidate names (the fan-out of the benchmark)."""
    from aicd.components.spec import parse_spec

    return [c.name for c in parse_spec(spec).candidates]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_candidate(spec: dict, dataset: Input[Dataset], candidate: str, results: Output[Artifact]) -> str:
    """One candidate in each of its modes (zero/few-shot, or linear probe); its leaderboard entries as JSON."""
    import json

    from aicd.components.evaluation.leaderboard import evaluate_candidate as run
    from aicd.components.spec import parse_spec

    entries = run(parse_spec(spec), dataset.path, candidate, results.path)
    for e in entries:  # other pods see this artifact by its URI, not by this pod's path
        for key in ("report", "model_dir"):
            if e.get(key):
                e[key] = e[key].replace(results.path, results.uri, 1)
    results.metadata["entries"] = [e["name"] for e in entries]
    return json.dumps(entries)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_baseline(spec: dict, dataset: Input[Dataset], results: Output[Artifact]) -> str:
    """The TF-IDF + logistic regression baseline (classification; an empty list otherwise), as JSON."""
    import json

    from aicd.components.evaluation.leaderboard import baseline_entries
    from aicd.components.spec import parse_spec

    entries = baseline_entries(parse_spec(spec), dataset.path, results.path)
    for e in entries:  # other pods see this artifact by its URI, not by this pod's path
        e["report"] = e["report"].replace(results.path, results.uri, 1)
    return json.dumps(entries)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_candidate(spec: dict, entries: List[str], baseline: str, leaderboard: Output[Artifact],
                     html: Output[HTML], model: Output[Model], results: Input[List[Artifact]] = None,
                     baseline_results: Input[Artifact] = None
                     ) -> NamedTuple("Chosen", candidate=str, uri=str, mode=str, chosen=str):
    """Rank every entry under the spec's weights and constraints; the chosen candidate.

    ``leaderboard`` holds leaderboard.json with every entry's report copied beside it (paths relative
    to the folder); ``model`` is the chosen entry to deliver: a copy of the model its mode produced
    (a linear probe), or a reference to its base candidate (zero-/few-shot). The entries name their
    reports and models by the URIs of the evaluate_candidate/evaluate_baseline outputs; passing those
    artifacts as ``results``/``baseline_results`` lets a pod read them as its downloaded inputs,
    otherwise they are looked up as paths, mounts or fetchable URIs (labeling.review.locate).
    """
    import json
    import shutil
    from pathlib import Path

    from aicd.components.evaluation.leaderboard import select_candidate as select, write_chosen_model, write_leaderboard
    from aicd.components.labeling.review import locate
    from aicd.components.spec import parse_spec

    known = [a for a in list(results or []) + ([baseline_results] if baseline_results is not None else [])
             if a.uri]

    def local(uri: str) -> Path:
        for art in known:
            root = art.uri.rstrip("/")
            if uri == root or uri.startswith(root + "/"):
                return Path(art.path.rstrip("/") + uri[len(root):])
        return locate(uri)

    rows = [e for text in list(entries) + [baseline] for e in json.loads(text)]
    board = select(parse_spec(spec), rows)
    delivered = write_chosen_model(board, model.path, local)
    chosen = board["chosen"]
    if chosen.get("model_dir"):  # what scoping delivers: select_candidate's own copy
        for e in board["entries"]:
            if e["name"] == chosen["name"]:
                e["model_dir"] = model.uri
        chosen["model_dir"] = model.uri
    write_leaderboard(board, leaderboard.path, local)
    shutil.copyfile(f"{leaderboard.path}/leaderboard.html", html.path)
    model.metadata.update({"chosen": chosen["name"], "candidate": chosen["candidate"], "mode": chosen["mode"],
                           "kind": delivered["kind"], "digest": delivered["digest"] or ""})
    leaderboard.metadata.update({"chosen": chosen["name"], "baseline_beats_chosen": board["baseline_beats_chosen"]})
    outputs = NamedTuple("Chosen", candidate=str, uri=str, mode=str, chosen=str)
    return outputs(chosen["candidate"], chosen["uri"], chosen["mode"], json.dumps(chosen))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_search(spec: dict) -> List[dict]:
    """One spec per hyper-parameter trial (grid or random over ``training.search_space``)."""
    from aicd.components.evaluation.search import plan_trials, trial_spec
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    method = parsed.training.methods[0].name
    return [{**trial_spec(parsed, params, method), "description": f"trial {params}"}
            for params in plan_trials(parsed)]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_trial(spec: dict, results: List[str], leaderboard: Output[Artifact], html: Output[HTML]) -> str:
    """The best hyper-parameter trial (evaluate_model summaries of the trials) under the selection rule."""
    import json
    import shutil

    from aicd.components.evaluation.leaderboard import select_candidate as select, write_leaderboard
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    rows = [json.loads(text) for text in results]
    entries = [{"name": f"{r['description']} ({(r['model']['digest'] or '')[:19]})", "mode": "trial",
                "candidate": parsed.candidate().name, "selectable": True, "metrics": r["metrics"],
                "intervals": {k: [v, v] for k, v in r["metrics"].items()}, "digest": r["model"]["digest"]}
               for r in rows]
    board = select(parsed, entries)
    write_leaderboard(board, leaderboard.path)
    shutil.copyfile(f"{leaderboard.path}/leaderboard.html", html.path)
    best = next(e for e in board["entries"] if e["name"] == board["chosen"]["name"])
    return json.dumps({"trial": best["name"], "digest": best["digest"], "score": best["score"]})
