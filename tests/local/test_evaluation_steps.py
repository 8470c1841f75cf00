"""Evaluation steps and the benchmark sub-graph under kfp.local (SubprocessRunner, this environment)."""

import json
from pathlib import Path

import pytest
from helpers.artifacts import make_adapter
from helpers.data import TOPIC_QA as QA
from helpers.data import classification_dataset
from helpers.specs import sections, small_spec
from kfp import dsl
from kfp.dsl import Dataset, Model, Output

from aicd.components.cards import verify_card
from aicd.components.evaluation.steps import compare_models, evaluate_model
from aicd.components.labeling.review import leaderboard_reports
from aicd.pipelines.local import run_local
from aicd.pipelines.params import SpecParams
from aicd.pipelines.subgraphs.evaluation import benchmark_candidates


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def build_dataset(rows: list, task: str, dataset: Output[Dataset]):
    """Test input: a tiny data set written with the data area's writer."""
    from aicd.components.data.format import write_dataset

    write_dataset(dataset.path, {"train": rows * 3, "validation": rows, "test": rows}, task=task)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def import_dataset(path: str, dataset: Output[Dataset]):
    """Test input: a data set folder made by the test."""
    import shutil

    shutil.copytree(path, dataset.path)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def import_model(path: str, model: Output[Model]):
    """Test input: a Model artifact made by the test (a real PEFT adapter)."""
    import shutil

    shutil.copytree(path, model.path)


def _causal_rows():
    return [{"id": f"q{i}", "instruction": q, "response": a, "topic": t, "source": "test"}
            for i, (q, a, t) in enumerate(QA)]


def test_evaluate_and_compare_steps(tmp_path, tiny_causal_lm, support_bot_spec):
    spec = small_spec(support_bot_spec, tiny_causal_lm)
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter")
    few_shot = tmp_path / "few-shot"  # select_candidate's reference to a base model chosen few-shot
    few_shot.mkdir()
    (few_shot / "base-model.json").write_text(json.dumps({"candidate": "", "mode": "few-shot-2",
                                                          "shot_examples": [list(QA[0][:2]), list(QA[1][:2])]}))

    @dsl.pipeline(name="evaluation-steps")
    def evaluation_steps(task: dict, candidates: list, metrics: dict, rows: list, adapter: str, few_shot: str):
        s = {"task": task, "candidates": candidates, "metrics": metrics}
        data_task = build_dataset(rows=rows, task="causal-lm")
        base_task = evaluate_model(**s, dataset=data_task.outputs["dataset"])
        model_task = import_model(path=adapter)
        cand_task = evaluate_model(**s, dataset=data_task.outputs["dataset"], model=model_task.outputs["model"])
        compare_models(metrics=metrics, candidate_report=cand_task.outputs["report"],
                       champion_report=base_task.outputs["report"])
        ref_task = import_model(path=few_shot)
        evaluate_model(**s, dataset=data_task.outputs["dataset"], model=ref_task.outputs["model"])

    run = run_local(evaluation_steps, {**sections(spec, "task", "candidates", "metrics"), "rows": _causal_rows(),
                                       "adapter": str(adapter), "few_shot": str(few_shot)},
                    workdir=tmp_path / "work", cache=False)
    few = json.loads((run.artifact_path("evaluate-model-3", "report") / "report.json").read_text())
    assert few["model"]["digest"] is None and few["model"]["mode"] == "few-shot-2" and few["model"]["shots"] == 2
    assert QA[1][0] in few["prompt_example"] and QA[1][1] in few["prompt_example"]  # the examples, as earlier turns
    base = json.loads((run.artifact_path("evaluate-model", "report") / "report.json").read_text())
    cand = json.loads((run.artifact_path("evaluate-model-2", "report") / "report.json").read_text())
    assert base["complete"] and base["probe"] is None and base["n"] == len(QA)
    assert cand["probe"]["passed"] and cand["model"]["digest"].startswith("sha256:")
    comparison = json.loads((run.artifact_path("compare-models", "comparison") / "comparison.json").read_text())
    assert comparison["n"] == len(QA) and comparison["confidence"] == 0.95
    row = comparison["metrics"]["token_f1"]
    assert row["diff"] == pytest.approx(cand["metrics"]["token_f1"]["value"] - base["metrics"]["token_f1"]["value"])
    page = (run.artifact_path("compare-models", "comparison") / "comparison.html").read_text()
    assert "verdict" in page and "Examples that changed most" in page
    assert "data:image/png" in run.artifact_path("evaluate-model", "html").read_text()
    summary = json.loads(run.task("evaluate-model").outputs["Output"])
    assert summary["metrics"]["token_f1"] == base["metrics"]["token_f1"]["value"]


def _benchmark(spec: dict, dataset_dir: Path, workdir: Path):
    @dsl.pipeline(name="benchmark")
    def benchmark(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                  delivery: dict, labeling: dict, path: str):
        data_task = import_dataset(path=path)
        benchmark_candidates(SpecParams(name, task, data, candidates, metrics, training, delivery, labeling),
                             data_task.outputs["dataset"])

    return run_local(benchmark, {**sections(spec), "path": str(dataset_dir)}, workdir=workdir, cache=False)


def test_review_sentiment_leaderboard_with_tfidf_baseline(tmp_path, tiny_encoder, review_sentiment_spec):
    spec = small_spec(review_sentiment_spec, tiny_encoder)
    spec["candidates"].append({"name": "tiny-2", "uri": str(tiny_encoder)})
    run = _benchmark(spec, classification_dataset(tmp_path / "data"), tmp_path / "work")
    board = json.loads((run.artifact_path("select-candidate", "leaderboard") / "leaderboard.json").read_text())
    names = sorted(e["name"] for e in board["entries"])
    assert names == ["tfidf-logreg/baseline", "tiny-2/linear-probe", "tiny/linear-probe"]
    assert board["chosen"]["candidate"] in ("tiny", "tiny-2")
    assert run.task("select-candidate").outputs["candidate"] == board["chosen"]["candidate"]
    assert "data:image/png" in run.artifact_path("select-candidate", "html").read_text()
    # the chosen probe is select_candidate's own Model output (a verified copy, what scoping delivers),
    # and the entries' reports live inside the leaderboard artifact
    model = run.artifact_path("select-candidate", "model")
    card = verify_card(model, "model")
    assert card["method"] == "linear-probe" and card["name"] == f"{board['chosen']['candidate']}-linear-probe"
    assert Path(board["chosen"]["model_dir"]) == model
    assert json.loads(run.task("select-candidate").outputs["chosen"])["model_dir"] == board["chosen"]["model_dir"]
    folder = run.artifact_path("select-candidate", "leaderboard")
    assert set(leaderboard_reports(folder)) == set(names)
    assert all((folder / e["report"]).is_file() and e["report"].startswith("reports/") for e in board["entries"])


@pytest.mark.slow
def test_real_minilm_on_drug_reviews(tmp_path, review_sentiment_spec):
    """all-MiniLM-L6-v2 (linear probe) against TF-IDF on a small real subset of the drug reviews."""
    from aicd.components.data.ingest import ingest_dataset
    from aicd.components.spec import parse_spec

    review_sentiment_spec["data"]["max_rows"] = 700
    # MiniLM alone: the example's first candidate, SmolLM2, is covered by tests/quality (minutes per probe here)
    review_sentiment_spec["candidates"] = [c for c in review_sentiment_spec["candidates"]
                                           if c["name"] == "all-minilm-l6-v2"]
    # The example's p95 latency constraint (500 ms) is machine-dependent: on a loaded CI machine it can
    # disqualify every candidate. Selection under constraints is covered by the leaderboard unit tests.
    review_sentiment_spec["metrics"].update(max_examples=60, bootstrap_samples=200, constraints={})
    ingest_dataset(parse_spec(review_sentiment_spec), tmp_path / "drugs")
    run = _benchmark(review_sentiment_spec, tmp_path / "drugs", tmp_path / "work")
    board = json.loads((run.artifact_path("select-candidate", "leaderboard") / "leaderboard.json").read_text())
    by_mode = {e["mode"]: e for e in board["entries"]}
    assert set(by_mode) == {"linear-probe", "baseline"}
    assert board["chosen"]["candidate"] == "all-minilm-l6-v2"
    for e in by_mode.values():  # both learn something real: better than always answering one class (1/3)
        assert e["metrics"]["macro_f1"] > 0.34, e


@pytest.mark.slow
def test_support_bot_smollm2_evaluation(tmp_path, support_bot_spec):
    """SmolLM2-135M-Instruct on a few real chatterbot questions, through the evaluate_model step."""
    from aicd.components.data.ingest import ingest_dataset
    from aicd.components.spec import parse_spec

    support_bot_spec["metrics"].update(max_examples=8, max_new_tokens=12, bootstrap_samples=200)
    ingest_dataset(parse_spec(support_bot_spec), tmp_path / "chat")

    @dsl.pipeline(name="support-bot-eval")
    def support_bot_eval(task: dict, candidates: list, metrics: dict, path: str):
        data_task = import_dataset(path=path)
        evaluate_model(task=task, candidates=candidates, metrics=metrics, dataset=data_task.outputs["dataset"])

    run = run_local(support_bot_eval,
                    {**sections(support_bot_spec, "task", "candidates", "metrics"), "path": str(tmp_path / "chat")},
                    workdir=tmp_path / "work", cache=False)
    report = json.loads((run.artifact_path("evaluate-model", "report") / "report.json").read_text())
    assert report["complete"] and report["n"] == 8 and any(report["examples"]["predictions"])
    assert report["slices"] and all(name.startswith("topic=") for name in report["slices"])
    assert "You are a friendly support assistant" in report["prompt_example"]
    # a real instruction model finds the reference answers far likelier than chance (vocabulary 49,152)
    assert 1.0 < report["metrics"]["perplexity"]["value"] < 1000
