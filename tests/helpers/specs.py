"""Specs for tests: the examples pointed at tiny models, and a spec split into the per-section arguments
steps and pipelines take."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

ALL = ("name", "task", "data", "candidates", "metrics", "training", "delivery", "labeling")


def sections(spec: dict, *names: str) -> dict[str, Any]:
    """The named sections of ``spec`` (all of them, and ``name``, when none are named), validated first as
    the CLI does, so a test calls a step or pipeline exactly as ``aicd run`` would."""
    from aicd.components.contracts import pipeline_arguments
    from aicd.components.spec import parse_spec

    args = pipeline_arguments(parse_spec(spec))
    return {n: args[n] for n in (names or ALL)}


def causal_spec(model_dir: Path, checkpoint_root: Path, **training) -> dict:
    """The support-bot spec pointed at a tiny model, with short training."""
    spec = yaml.safe_load((ROOT / "examples" / "support-bot" / "spec.yaml").read_text())
    spec["candidates"][0]["uri"] = str(model_dir)
    spec["training"].update({"max_steps": 4, "checkpoint": {"every_steps": 2, "root": str(checkpoint_root)},
                             **training})
    return spec


# A BERT-style encoder's layer names: what the tiny encoder takes in place of the example's SmolLM2 methods.
ENCODER_METHODS = [{"name": "full", "method": "full", "learning_rate": 0.0001},
                   {"name": "lora-r8", "method": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]}]


def classification_spec(model_dir: Path, checkpoint_root: Path, **training) -> dict:
    """The review-sentiment spec on a tiny encoder (its only candidate), with short training of a full and
    a LoRA method, without the example's early stopping (tests that want it pass it)."""
    spec = yaml.safe_load((ROOT / "examples" / "review-sentiment" / "spec.yaml").read_text())
    spec["candidates"] = [{"name": "tiny-encoder", "uri": str(model_dir)}]
    spec["training"].update({"max_steps": 4, "batch_size": 6, "learning_rate": 0.01, "early_stopping_patience": None,
                             "methods": [dict(m) for m in ENCODER_METHODS],
                             "checkpoint": {"every_steps": 2, "root": str(checkpoint_root)}, **training})
    return spec


def small_spec(spec: dict, model_dir: Path) -> dict:
    spec["candidates"] = [{"name": "tiny", "uri": str(model_dir)}]
    spec["metrics"].update(bootstrap_samples=50, max_new_tokens=6)
    if spec["task"]["type"] == "causal-lm":
        spec["metrics"]["probe_prompts"] = ["What is AI?", "How are you?"]
    return spec
