"""Stage 4 under kfp.local: a model trained from scratch goes the same gate and Git path as an adapter.

Real steps on the tiny random model's tokenizer and a 1-layer Llama trained for 3 steps; the
GitOps repository is a real bare one.
"""

import subprocess
from pathlib import Path

import yaml
from tiny_models import tiny_finetune_spec

from aicd.components.cards import verify_card
from aicd.components.spec import parse_spec
from aicd.pipelines.cache import source_digest
from aicd.pipelines.gitops import head_commit
from aicd.pipelines.local import run_local
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

ROOT = Path(__file__).resolve().parents[2]


def test_redesign_trains_from_scratch_gates_and_promotes_the_full_model(support_bot_spec, tiny_causal_lm, tmp_path):
    spec = tiny_finetune_spec(support_bot_spec, tiny_causal_lm, tmp_path, ROOT / "manifests")
    spec["training"].update(max_steps=3, from_scratch={"hidden_size": 32, "num_layers": 1, "num_heads": 4,
                                                      "intermediate_size": 64, "vocab_size": 300,
                                                      "max_position_embeddings": 256})
    spec["task"]["max_length"] = 96
    argument = pipeline_arguments(parse_spec(spec))
    run = run_local(build_pipeline("redesign"), argument, tmp_path / "work", code_digest=source_digest())
    assert all(t.status == "ran" for t in run.tasks), [(t.name, t.status) for t in run.tasks]
    model = run.task("train-from-scratch").outputs["model"]
    card = verify_card(model.path, "model")
    assert card["kind"] == "model"
    # compared with the base model (nothing serves yet), gated, and declared as the first champion
    assert run.task("find-champion").outputs["Output"] == ""
    gate = run.task("gate-candidate")
    assert gate.outputs["Output"] is True and gate.outputs["digest"] == card["digest"], \
        gate.outputs["blessing"].metadata
    repo = argument["delivery"]["gitops"]["repo"]
    sha, _ = head_commit(repo, "main")
    assert run.task("promote-adapter").outputs["Output"] == sha
    doc = yaml.safe_load(subprocess.run(["git", "--git-dir", repo, "show",
                                         "main:manifests/overlays/production/inferenceservice.yaml"],
                                        capture_output=True, text=True, check=True).stdout)
    predictor = doc["spec"]["predictor"]
    assert predictor["annotations"]["aicd.dev/model-id"] == card["digest"]
    args = predictor["model"]["args"]
    assert not any(str(a).startswith("--adapter") for a in args)  # a full model: its own weights are the base
    assert any(model.path in str(a) or model.uri in str(a) for a in args), args
