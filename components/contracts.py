"""Typed step contracts: the spec split into its sections, and the one model reference.

The CLI validates the whole spec once (:func:`aicd.components.spec.load_spec`) and
:func:`pipeline_arguments` splits it into the pipelines' parameters: one ``dict`` per
section (``task``, ``data``, ``candidates``, ``metrics``, ``training``, ``delivery``,
``labeling``) and the spec's ``name``. Each step takes only the sections it reads, so a
KFP backend's cache keys on exactly those, and rebuilds them with :func:`step_spec`: a
:class:`~aicd.components.spec.Spec` holding only the given sections, where reading any
other section is a loud error instead of a silent default.

A Model artifact either holds a model (an adapter or full weights with a verified card)
or only refers to one of the spec's base candidates in a mode (zero-/few-shot), as
find_champion and select_candidate write it. :func:`read_model_ref` is the one reader.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from aicd.components.errors import ModelError, SpecError
from aicd.components.models import BASE_MODEL_REF
from aicd.components.spec import (
    Candidate,
    DataSpec,
    DeliverySpec,
    LabelingSpec,
    MetricsSpec,
    Spec,
    TaskSpec,
    TrainingSpec,
    _problems,
)

SECTION_TYPES: dict[str, Any] = {
    "task": TaskSpec, "data": DataSpec, "candidates": list[Candidate], "metrics": MetricsSpec,
    "training": TrainingSpec, "delivery": DeliverySpec, "labeling": LabelingSpec,
}
SECTIONS = tuple(SECTION_TYPES)


class StepSpec(Spec):
    """A spec holding only the sections a step was given; reading another one names the fix."""

    def __getattr__(self, item: str) -> Any:
        if item in Spec.model_fields:
            raise SpecError([f"this step was not given the spec's `{item}`: add a `{item}` parameter to the step "
                             "and pass the pipeline's section to it"], "step contract")
        return super().__getattr__(item)


def pipeline_arguments(spec: Spec) -> dict[str, Any]:
    """The pipelines' parameters from a validated spec: ``name`` and one JSON dict per section.

    Nulls are left out (KFP parameters hold none; every optional field defaults to null) and a
    spec without ``labeling`` passes ``{}``. Checked: the sections rebuild the same spec.
    """
    whole = spec.model_dump(mode="json", exclude_none=True)
    args: dict[str, Any] = {"name": spec.name, **{s: whole.get(s, {}) for s in SECTIONS}}
    rebuilt = step_spec(**args)
    if any(getattr(rebuilt, s) != getattr(spec, s) for s in SECTIONS):
        raise SpecError(["the spec changes when its null fields are left out; give those fields values"])
    return args


def step_spec(name: str = "", **sections: Any) -> Spec:
    """A :class:`StepSpec` from section dicts (or parsed sections); ``labeling`` ``{}`` or None is no labeling.

    Every given section is validated with its model; a problem raises SpecError naming the field.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SpecError([f"`{u}` is not a spec section; use one of: {', '.join(SECTIONS)}" for u in unknown],
                        "step contract")
    values: dict[str, Any] = {"name": name or "aicd", "description": ""}
    problems: list[str] = []
    for section, raw in sections.items():
        if section == "labeling" and not raw:
            values["labeling"] = None
            continue
        try:
            values[section] = TypeAdapter(SECTION_TYPES[section]).validate_python(raw)
        except ValidationError as err:
            problems += [f"`{section}`: {p}" if not p.startswith("`") else p.replace("`", f"`{section}.", 1)
                         for p in _problems(err)]
    if problems:
        raise SpecError(problems, "step contract")
    spec = StepSpec.model_construct(**values)
    for missing in set(SECTIONS) - set(values):
        spec.__dict__.pop(missing, None)
    return spec


def section_args(spec: Spec, *names: str) -> dict[str, Any]:
    """The named sections of a whole spec as step arguments (plain JSON), e.g. for calling a step in a test."""
    whole = spec.model_dump(mode="json", exclude_none=True)
    return {n: (spec.name if n == "name" else whole.get(n, {})) for n in names}


@dataclass(frozen=True)
class ModelRef:
    """What a Model artifact stands for: a model with its files (``kind`` "artifact", verified card
    ``digest``) or one of the spec's base candidates (``kind`` "base") in a leaderboard ``mode``."""

    kind: Literal["artifact", "base"]
    path: str | None = None
    digest: str | None = None
    candidate: str = ""  # "" for the spec's first candidate
    mode: str = "zero-shot"
    shot_examples: tuple[tuple[str, str], ...] = ()

    @property
    def is_base(self) -> bool:
        return self.kind == "base"


def read_model_ref(path: str | Path | None, *, verify: bool = True) -> ModelRef:
    """The one reader of a Model artifact: a base-candidate reference (``base-model.json``), else a model whose
    card is verified (``verify``); no artifact at all (None) is the spec's first candidate, zero-shot."""
    if path is None:
        return ModelRef("base")
    ref_file = Path(path) / BASE_MODEL_REF
    if not ref_file.is_file():
        digest = None
        if verify:
            from aicd.components.cards import verify_card

            digest = verify_card(path)["digest"]
        return ModelRef("artifact", str(path), digest)
    fix = "pass the Model artifact find_champion or select_candidate wrote, or a trained Model artifact"
    try:
        data = json.loads(ref_file.read_text(encoding="utf-8"))
        candidate = str(data.get("candidate") or "")
    except (ValueError, AttributeError):
        raise ModelError(f"{ref_file} is not a JSON object with `candidate`", fix) from None
    shots = data.get("shot_examples") or []
    if not isinstance(shots, list) or not all(isinstance(s, list) and len(s) == 2 for s in shots):
        raise ModelError(f"{ref_file}: `shot_examples` is not a list of [question, answer]", fix)
    return ModelRef("base", str(path), None, candidate, str(data.get("mode") or "zero-shot"),
                    tuple((str(q), str(a)) for q, a in shots))
