"""Labeling configurations derived from the spec, and the values read back from results.

Three kinds of task, one per labeling job:

- ``choices``: text classification, one of ``task.labels`` per text;
- ``rating``: generation, a 1-5 rating of one response to an instruction;
- ``pairwise``: generation, which of two responses to a prompt is better.

Label Studio does not check results against the configuration, so :func:`read_value`
checks every annotation (unknown label, empty result, wrong control) and says why it
is unusable.
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Literal

from aicd.components.errors import LabelingError
from aicd.components.spec import LabelingSpec, Spec, TaskSpec, parse_spec

Kind = Literal["choices", "rating", "pairwise"]
MAX_RATING = 5
CONTROL = {"choices": "label", "rating": "rating", "pairwise": "pw"}


@dataclass(frozen=True)
class Value:
    """One annotation read back: the value, or why it is unusable."""

    value: str | int | None
    problem: str | None = None


def labeling_of(spec: Spec | dict[str, Any]) -> tuple[Spec, LabelingSpec]:
    """The parsed spec and its `labeling` section (an error naming the fix when it has none)."""
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    if parsed.labeling is None:
        raise LabelingError(f"spec {parsed.name!r} has no `labeling` section",
                            "add `labeling: {project: <title>}` (and url, token_secret) to the spec")
    return parsed, parsed.labeling


def task_kind(task: TaskSpec, labeling: LabelingSpec) -> Kind:
    if task.type == "text-classification":
        return "choices"
    return "pairwise" if labeling.generation_mode == "pairwise" else "rating"


def _text(view: ET.Element, name: str, value: str, header: str | None = None) -> None:
    if header:
        ET.SubElement(view, "Header", value=header)
    ET.SubElement(view, "Text", name=name, value=f"${value}")


def label_config(kind: Kind, labels: list[str] | None = None) -> str:
    """The Label Studio XML of a kind of task (labels only for ``choices``)."""
    view = ET.Element("View")
    if kind == "choices":
        if not labels or len(labels) < 2:
            raise ValueError("a choices configuration needs at least two labels")
        _text(view, "text", "text")
        choices = ET.SubElement(view, "Choices", name=CONTROL[kind], toName="text", choice="single",
                                showInLine="true")
        for label in labels:
            ET.SubElement(choices, "Choice", value=label)
    elif kind == "rating":
        _text(view, "instruction", "instruction", "Instruction")
        _text(view, "response", "response", "Response")
        ET.SubElement(view, "Rating", name=CONTROL[kind], toName="response", maxRating=str(MAX_RATING))
    elif kind == "pairwise":
        _text(view, "prompt", "prompt", "Prompt")
        _text(view, "text1", "left", "Left")
        _text(view, "text2", "right", "Right")
        ET.SubElement(view, "Pairwise", name=CONTROL[kind], toName="text1,text2")
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    return ET.tostring(view, encoding="unicode")


def result_for(kind: Kind, value: str | int) -> list[dict[str, Any]]:
    """The annotation result a person's click produces for ``value`` (used by tests and tools)."""
    if kind == "choices":
        return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [value]}}]
    if kind == "rating":
        return [{"from_name": "rating", "to_name": "response", "type": "rating", "value": {"rating": value}}]
    return [{"from_name": "pw", "to_name": "text1,text2", "type": "pairwise", "value": {"selected": value}}]


def _control(result: list[dict[str, Any]], kind: Kind) -> dict[str, Any] | None:
    for region in result:
        if isinstance(region, dict) and region.get("from_name") == CONTROL[kind]:
            return region.get("value") or {}
    return None


def read_value(kind: Kind, result: Any, labels: list[str] | None = None) -> Value:
    """The value of one annotation's result, or a Value with the problem that makes it unusable."""
    if not isinstance(result, list) or not result:
        return Value(None, "empty result (nothing was selected)")
    found = _control(result, kind)
    if found is None:
        names = sorted({str(r.get("from_name")) for r in result if isinstance(r, dict)})
        return Value(None, f"no result from the control {CONTROL[kind]!r} (found {', '.join(names) or 'none'}); "
                           "the project's labeling configuration differs from the spec")
    if kind == "choices":
        picked = found.get("choices") or []
        if len(picked) != 1:
            return Value(None, f"expected exactly one choice, got {len(picked)}")
        if labels is not None and picked[0] not in labels:
            return Value(None, f"label {picked[0]!r} is not one of task.labels {labels}")
        return Value(str(picked[0]))
    if kind == "rating":
        rating = found.get("rating")
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= MAX_RATING:
            return Value(None, f"rating {rating!r} is not an integer from 1 to {MAX_RATING}")
        return Value(rating)
    selected = found.get("selected")
    if selected not in ("left", "right"):
        return Value(None, f"pairwise selection {selected!r} is neither 'left' nor 'right'")
    return Value(selected)
