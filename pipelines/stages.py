"""The pipelines by name: each stage module has ``build(platform)`` returning a KFP pipeline.

A pipeline is built when asked for (not at import), so ``aicd compile`` can set the
image registry/tag and the platform profile first.
"""

import importlib
from typing import Any

from aicd.components.errors import AicdError, SpecError
from aicd.components.spec import Spec, load_spec, parse_spec
from aicd.pipelines.platform import Platform

PIPELINES = ("poc", "scoping", "finetune", "redesign", "continuous", "rollout")


class StepsMissing(AicdError):
    """A pipeline needs steps that are not installed in this environment."""


def build_pipeline(name: str, platform: Platform | None = None):
    """The KFP pipeline ``<name>_pipeline`` with the platform's settings applied to every task."""
    if name not in PIPELINES:
        raise AicdError(f"unknown pipeline {name!r}", f"use one of: {', '.join(PIPELINES)}")
    try:
        module = importlib.import_module(f"aicd.pipelines.{name}")
        return module.build(platform or Platform())
    except ImportError as err:
        raise StepsMissing(f"pipeline {name} cannot be built: {err}",
                           "install the aicd version that ships these steps (pip install -e .)") from err


def pipeline_argument(spec: Spec) -> dict[str, Any]:
    """The spec as the pipelines' ``spec`` parameter: plain JSON without nulls (KFP parameters hold none).

    Every optional field defaults to null, so leaving nulls out changes nothing; checked here.
    """
    value = spec.model_dump(mode="json", exclude_none=True)
    if parse_spec(value) != spec:
        raise SpecError(["the spec changes when its null fields are left out; give those fields values"])
    return value


def pipeline_arguments(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's run arguments from the spec argument: the rollout takes only the delivery section."""
    return {"delivery": spec["delivery"]} if name == "rollout" else {"spec": spec}


def load_pipeline_argument(path: str) -> dict[str, Any]:
    """Read, validate and convert a spec file for a pipeline run."""
    return pipeline_argument(load_spec(path))
