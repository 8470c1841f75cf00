"""Run one step of a compiled pipeline (KFP IR YAML) the way a KFP launcher does, in its image.

The executor input and the command come from kfp.local's own helpers (the same ones its
runners use); the container is started with ``podman run`` and the pod-like flags of
conftest.POD, the pipeline root bind-mounted at the same path.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2
from podman_tools import podman_run


@dataclass
class StepRun:
    image: str
    command: list[str]
    returncode: int
    log: str
    outputs: dict[str, Any]


def load_ir(path: Path) -> pipeline_spec_pb2.PipelineSpec:
    doc = next(yaml.safe_load_all(path.read_text()))
    return json_format.ParseDict(doc, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=True)


def step_arguments(component: pipeline_spec_pb2.ComponentSpec, spec: dict, extra: dict[str, Any]) -> dict[str, Any]:
    """Each declared input: ``extra[name]``, else the whole spec (``spec``) or its section of that name."""
    arguments = {}
    for name in [*component.input_definitions.parameters, *component.input_definitions.artifacts]:
        if name in extra:
            arguments[name] = extra[name]
        elif name == "spec":
            arguments[name] = spec
        elif name in spec:
            arguments[name] = spec[name]
    return arguments


def run_ir_step(ir: pipeline_spec_pb2.PipelineSpec, task: str, spec: dict, root: Path,
                extra: dict[str, Any] | None = None, mounts: dict[str, str] | None = None) -> StepRun:
    """Run the component of ``task`` from ``ir`` in its image; outputs under ``root`` (mounted rw)."""
    name = f"comp-{task}"
    component = ir.components[name]
    deployment = json_format.ParseDict(json_format.MessageToDict(ir.deployment_spec),
                                       pipeline_spec_pb2.PipelineDeploymentConfig())
    container = deployment.executors[component.executor_label].container
    task_root = executor_input_utils.construct_local_task_root(str(root), "ir", task)
    executor_input = executor_input_utils.construct_executor_input(
        component_spec=component, arguments=step_arguments(component, spec, extra or {}), task_root=task_root,
        block_input_artifact=False)
    command = placeholder_utils.replace_placeholders(
        full_command=[*container.command, *container.args],
        executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
        pipeline_resource_name="ir", task_resource_name=task, pipeline_root=str(root), unique_pipeline_id="ir-test")
    proc = podman_run(container.image, command, mounts={str(root): str(root), **(mounts or {})})
    outputs = {}
    if proc.returncode == 0:
        outputs = executor_output_utils.get_outputs_for_task(executor_input=executor_input, component_spec=component)
    return StepRun(container.image, command, proc.returncode, proc.stdout + proc.stderr, outputs)
