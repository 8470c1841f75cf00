"""Specs for tests: a whole spec dict split into the per-section arguments steps and pipelines take."""

from typing import Any

ALL = ("name", "task", "data", "candidates", "metrics", "training", "delivery", "labeling")


def sections(spec: dict, *names: str) -> dict[str, Any]:
    """The named sections of ``spec`` (all of them, and ``name``, when none are named), validated first as
    the CLI does, so a test calls a step or pipeline exactly as ``aicd run`` would."""
    from aicd.components.contracts import pipeline_arguments
    from aicd.components.spec import parse_spec

    args = pipeline_arguments(parse_spec(spec))
    return {n: args[n] for n in (names or ALL)}
