"""Training steps and the compare_methods sub-graph under kfp.local (SubprocessRunner, this environment)."""

import json

from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec, sections
from kfp import dsl
from kfp.dsl import Dataset, Output

from aicd.components.models import load_model_artifact
from aicd.components.training.steps import train_from_scratch
from aicd.pipelines.local import run_local
from aicd.pipelines.params import SpecParams
from aicd.pipelines.subgraphs.training import compare_methods


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def import_dataset(path: str, dataset: Output[Dataset]):
    """Test input: a data set folder made by the test."""
    import shutil

    shutil.copytree(path, dataset.path)


def _spec(tiny_causal_lm, tmp_path) -> dict:
    spec = causal_spec(tiny_causal_lm, tmp_path / "ck", max_steps=3, batch_size=4, learning_rate=0.01,
                       methods=[{"name": "lora-r4", "method": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                                {"name": "ia3", "method": "ia3", "target_modules": ["k_proj", "v_proj", "down_proj"]}],
                       from_scratch={"hidden_size": 32, "num_layers": 1, "num_heads": 4, "intermediate_size": 64,
                                     "vocab_size": 300, "max_position_embeddings": 256})
    spec["task"]["max_length"] = 96
    spec["metrics"].update(max_examples=4, bootstrap_samples=20, max_new_tokens=4, behavioural=[], probe_prompts=[])
    return spec


def test_compare_methods_and_train_from_scratch(tiny_causal_lm, tmp_path):
    data = make_dataset(tmp_path / "ds", causal_rows(16))

    @dsl.pipeline(name="training-steps")
    def training_steps(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                       delivery: dict, labeling: dict, path: str):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        data_task = import_dataset(path=path)
        compare_methods(s, data_task.outputs["dataset"])
        train_from_scratch(**s.of(train_from_scratch), dataset=data_task.outputs["dataset"])

    run = run_local(training_steps, {**sections(_spec(tiny_causal_lm, tmp_path)), "path": str(data)},
                    workdir=tmp_path / "work", cache=False)
    table = json.loads(run.artifact_path("choose-method", "table").read_text())
    assert table["primary"] == "token_f1"
    assert sorted(r["method"] for r in table["rows"]) == ["ia3", "lora-r4"]
    assert all(r["quality"] is not None and r["train_seconds"] > 0 and r["adapter_size_mb"] > 0
               for r in table["rows"])
    assert any(r["pareto"] for r in table["rows"])
    assert "data:image/png;base64," in run.artifact_path("choose-method", "plot").read_text()
    choice = run.task("choose-method").outputs
    assert set(json.loads(choice["pareto"])) == {r["method"] for r in table["rows"] if r["pareto"]}
    best = max(table["rows"], key=lambda r: r["quality"])
    if sum(r["quality"] == best["quality"] for r in table["rows"]) == 1:
        assert choice["chosen"] == best["method"]
    # the delivered artifact is the chosen method's own, byte for byte (same card digest)
    _, _, chosen_card = load_model_artifact(run.artifact_path("choose-method", "best"))
    assert chosen_card["digest"] == next(r["digest"] for r in table["rows"] if r["method"] == choice["chosen"])
    scratch = run.artifact_path("train-from-scratch", "model")
    model, _, card = load_model_artifact(scratch)
    assert card["kind"] == "model" and model.config.num_hidden_layers == 1
    summary = json.loads(run.task("train-from-scratch").outputs["Output"])
    assert summary["digest"] == card["digest"] and summary["metrics"]["steps"] == 3
