"""finetune and continuous wire where training starts: one find_champion task is both what choose_start
hands to train_adapter (dpo methods continue it) and the champion the gate's evaluation compares with."""

from pathlib import Path

import pytest
import yaml
from helpers.ir import tasks

from aicd.pipelines.stages import build_pipeline
from aicd.pipelines.submit import compile_pipeline


def _producer(spec: dict, name: str) -> str:
    source = spec["inputs"]["artifacts"][name]
    return source.get("taskOutputArtifact", {}).get("producerTask") or source.get("componentInputArtifact")


@pytest.mark.parametrize("pipeline", ["finetune", "continuous"])
def test_training_starts_from_the_champion_the_gate_compares_with(pipeline, tmp_path):
    path = compile_pipeline(build_pipeline(pipeline), Path(tmp_path) / f"{pipeline}.yaml")
    ir = list(yaml.safe_load_all(path.read_text()))[0]
    found = {name: spec for name, spec, _ in tasks(ir)}
    assert [n for n in found if n.startswith("find-champion")] == ["find-champion"]
    assert _producer(found["choose-start"], "champion") == "find-champion"
    assert _producer(found["train-adapter"], "start") == "pipelinechannel--choose-start-start"
    champion_evaluations = [n for n, s in found.items() if n.startswith("evaluate-model")
                            and _producer(s, "model") == "find-champion"]
    assert len(champion_evaluations) == 1, champion_evaluations
