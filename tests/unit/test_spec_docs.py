"""The spec documents itself: every field described, `aicd schema`, and docs/spec.md kept current."""

import json
import subprocess
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from aicd.components.spec import Spec
from aicd.pipelines.specdoc import spec_markdown, spec_schema

ROOT = Path(__file__).resolve().parents[2]


def _models(annotation) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def _fields(model: type[BaseModel], seen: set) -> typing.Iterator[tuple[str, typing.Any]]:
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield f"{model.__name__}.{name}", field
        for inner in _models(field.annotation):
            yield from _fields(inner, seen)


def test_every_spec_field_has_a_description():
    fields = dict(_fields(Spec, set()))
    assert len(fields) > 140
    undocumented = [name for name, field in fields.items() if not (field.description or "").strip()]
    assert undocumented == [], "give these a Field(description=...): " + ", ".join(undocumented)


def test_docs_spec_md_is_current():
    page = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert page == spec_markdown(), "docs/spec.md is stale: run `aicd schema --markdown > docs/spec.md`"


@pytest.mark.parametrize("example", sorted(p.parent.name for p in (ROOT / "examples").glob("*/spec.yaml")))
def test_the_schema_accepts_the_examples_and_rejects_an_unknown_field(example):
    schema = spec_schema()
    data = yaml.safe_load((ROOT / "examples" / example / "spec.yaml").read_text())
    jsonschema.validate(data, schema)
    data["task"]["instruction_feild"] = "typo"
    with pytest.raises(jsonschema.ValidationError, match="instruction_feild"):
        jsonschema.validate(data, schema)


def test_aicd_schema_prints_json_and_markdown():
    # A process of its own, as a user runs it: in-process capture also catches whatever another
    # test's leftover thread prints meanwhile (seen once under CI, in the full suite only).
    def schema(*flags: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "aicd.pipelines.cli", "schema", *flags],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    printed = json.loads(schema())
    assert printed["properties"]["delivery"]["description"] and "GitOpsSpec" in printed["$defs"]
    assert schema("--markdown") == spec_markdown()
