"""The pipelines by name: each stage module has ``build(platform)`` returning a KFP pipeline.

A pipeline is built when asked for (not at import), so ``aicd compile`` can set the
image registry/tag and the platform profile first.
"""

import importlib
from typing import Any

from aicd.components.errors import AicdError, UsageError
from aicd.components.spec import Spec, load_spec
from aicd.pipelines.platform import Platform

PIPELINES = ("poc", "scoping", "finetune", "redesign", "continuous", "rollout")


class StepsMissing(AicdError):
    """A pipeline needs steps that are not installed in this environment."""


def build_pipeline(name: str, platform: Platform | None = None):
    """The KFP pipeline ``<name>_pipeline`` with the platform's settings applied to every task."""
    if name not in PIPELINES:
        raise UsageError(f"unknown pipeline {name!r}", f"use one of: {', '.join(PIPELINES)}")
    try:
        module = importlib.import_module(f"aicd.pipelines.{name}")
        return module.build(platform or Platform())
    except ImportError as err:
        raise StepsMissing(f"pipeline {name} cannot be built: {err}",
                           "install the aicd version that ships these steps (pip install -e .)") from err


def pipeline_arguments(spec: Spec) -> dict[str, Any]:
    """The pipelines' arguments from a validated spec: ``name`` and one plain-JSON parameter per section
    (nulls left out: KFP parameters hold none; checked to rebuild the same sections)."""
    from aicd.components.contracts import pipeline_arguments as split

    return split(spec)


def load_pipeline_arguments(path: str) -> dict[str, Any]:
    """Read, validate and split a spec file into a pipeline run's arguments."""
    return pipeline_arguments(load_spec(path))
