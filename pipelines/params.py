"""The pipelines' spec parameters: the spec's name and one parameter per section.

Every pipeline declares the same parameters (``name``, ``task``, ``data``, ``candidates``,
``metrics``, ``training``, ``delivery``, ``labeling``); the CLI fills them from a spec it
validated once (:func:`aicd.components.contracts.pipeline_arguments`). :class:`SpecParams`
carries them through the sub-graphs, and :meth:`SpecParams.of` hands a step exactly the
sections its signature declares, so no step is wired to a section it does not read.
"""

from dataclasses import dataclass, fields
from typing import Any

from aicd.components.contracts import SECTIONS

PARAMETERS = ("name", *SECTIONS)


@dataclass(frozen=True)
class SpecParams:
    """The pipeline's spec parameters (KFP pipeline channels while a pipeline is built)."""

    name: Any
    task: Any
    data: Any
    candidates: Any
    metrics: Any
    training: Any
    delivery: Any
    labeling: Any

    def of(self, component: Any, **overrides: Any) -> dict[str, Any]:
        """The spec parameters ``component`` declares, as keyword arguments (``overrides`` replace some)."""
        declared = component.component_spec.inputs or {}
        picked = {f.name: getattr(self, f.name) for f in fields(self) if f.name in declared}
        return {**picked, **{k: v for k, v in overrides.items() if k in declared}}


ARGS_DOC = """
Args:
    name: The spec's name (Label Studio project titles, job labels).
    task: The spec's ``task`` section: task type, fields, labels, prompt template.
    data: The spec's ``data`` section: sources, split ratios and key, quality thresholds.
    candidates: The spec's ``candidates``: foundation models by URI; the first is the base model.
    metrics: The spec's ``metrics`` section: primary metric, gates, selection, evaluation settings.
    training: The spec's ``training`` section: methods, hyper-parameters, search, checkpoints, resources.
    delivery: The spec's ``delivery`` section: GitOps repository, canary, serving, Prometheus.
    labeling: The spec's ``labeling`` section ({} when the spec has none): Label Studio, sampling.
"""


def documented(pipeline_func: Any, summary: str, extra_args: str = "") -> Any:
    """``pipeline_func`` with a docstring naming every spec parameter (KFP carries it into the IR and UI)."""
    extra = "".join(f"    {line}\n" for line in extra_args.strip("\n").splitlines()) if extra_args else ""
    pipeline_func.__doc__ = f"{summary}\n{ARGS_DOC}{extra}"
    return pipeline_func
