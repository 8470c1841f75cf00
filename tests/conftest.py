"""Shared fixtures: tiny random models (fast) and the example specs."""

import copy
from pathlib import Path

import pytest
import yaml

from ci_skips import pytest_configure, pytest_runtest_makereport  # noqa: F401 - hooks: a skip fails under CI
from tiny_models import make_causal_lm, make_encoder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama (safetensors + BPE tokenizer with a chat template)."""
    return make_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT encoder, shaped like all-MiniLM-L6-v2."""
    return make_encoder(tmp_path_factory.mktemp("tiny-bert"))


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name / "spec.yaml").read_text())


@pytest.fixture
def support_bot_spec() -> dict:
    """The support-bot example spec as a plain dict (a fresh copy per test)."""
    return copy.deepcopy(_example("support-bot"))


@pytest.fixture
def review_sentiment_spec() -> dict:
    """The review-sentiment example spec as a plain dict (a fresh copy per test)."""
    return copy.deepcopy(_example("review-sentiment"))
