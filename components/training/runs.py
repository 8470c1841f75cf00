"""The training steps as plain typed functions (steps.py only parses, calls these and publishes)."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.spec import Spec


@dataclass(frozen=True)
class TrainStepResult:
    """What a training step publishes: the method, the artifact card's digest and kind, the figures."""

    method: str
    method_kind: str
    digest: str
    kind: str
    base_model: str
    figures: dict[str, float]

    def summary(self) -> str:
        """The JSON the step returns for dsl.Collected fan-ins (choose_method)."""
        return json.dumps({"method": self.method, "method_kind": self.method_kind, "digest": self.digest,
                           "metrics": self.figures})


def run_train_adapter(spec: Spec, dataset_dir: str | Path, method: str, out_dir: str | Path,
                      start: str | Path | None = None) -> TrainStepResult:
    """Train ``method`` (or the first of ``training.methods``) into ``out_dir``; reads task, candidates, training.

    ``start``: the Model artifact a dpo method starts from (choose_start's; a base-model reference or
    None starts from the base)."""
    from aicd.components.training.adapter import train_adapter
    from aicd.components.training.runtime import artifact_size_mb

    result = train_adapter(spec, dataset_dir, method or spec.training.methods[0].name, out_dir, start_adapter=start)
    card = result.card
    return TrainStepResult(result.method, card["method"], card["digest"], card["kind"], card["base_model"] or "",
                           {**result.metrics(), "adapter_size_mb": artifact_size_mb(out_dir)})


def run_train_from_scratch(spec: Spec, dataset_dir: str | Path, out_dir: str | Path) -> TrainStepResult:
    """Train ``training.from_scratch``'s model into ``out_dir``; reads task and training."""
    from aicd.components.training.runtime import artifact_size_mb
    from aicd.components.training.scratch import train_from_scratch

    result = train_from_scratch(spec, dataset_dir, out_dir)
    return TrainStepResult("from-scratch", "from-scratch", result.card["digest"], "model", "",
                           {**result.metrics(), "adapter_size_mb": artifact_size_mb(out_dir)})


def publish_training(result: TrainStepResult, model: Any, metrics: Any) -> str:
    """Log the figures on the Metrics artifact, describe the Model artifact; the step's JSON summary."""
    for name, value in result.figures.items():
        metrics.log_metric(name, value)
    model.metadata.update({"digest": result.digest, "kind": result.kind, "method": result.method_kind,
                           "method_name": result.method, "base_model": result.base_model})
    return result.summary()


def run_launch_trainjob(spec: Spec, dataset_uri: str, output_uri: str, method: str, namespace: str, claim: str,
                        runtime: str, timeout_seconds: float) -> str:
    """Train one method as a Kubeflow Trainer TrainJob with the cluster's credentials; wait; ``output_uri``."""
    from kubernetes import client, config

    from aicd.components.training.launcher import launch_trainjob, train_adapter_args, trainjob_manifest, trainjob_name

    method = method or spec.training.methods[0].name
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    args = train_adapter_args(spec, method, dataset_uri, output_uri)
    manifest = trainjob_manifest(spec, trainjob_name(spec, method, args), args, namespace=namespace or None,
                                 runtime=runtime, claim=claim or None)
    launch_trainjob(client.CustomObjectsApi(), manifest, timeout_seconds=timeout_seconds)
    return output_uri
