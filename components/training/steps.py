"""KFP steps of training: thin wrappers over adapter.py, scratch.py, launcher.py, pareto.py.

train_adapter and train_from_scratch return a JSON summary (method, artifact digest,
training figures) for dsl.Collected fan-ins such as compare_methods' choice of the best method.
"""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE, TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_adapter(spec: dict, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
                  method: str = "") -> str:
    """Fine-tune the base model with one of training.methods (default: the first); resumes from checkpoints."""
    import json

    from aicd.components.spec import parse_spec
    from aicd.components.training.adapter import train_adapter as train
    from aicd.components.training.runtime import artifact_size_mb

    parsed = parse_spec(spec)
    result = train(parsed, dataset.path, method or parsed.training.methods[0].name, model.path)
    figures = {**result.metrics(), "adapter_size_mb": artifact_size_mb(model.path)}
    for name, value in figures.items():
        metrics.log_metric(name, value)
    card = result.card
    model.metadata.update({"digest": card["digest"], "kind": card["kind"], "method": card["method"],
                           "method_name": result.method, "base_model": card["base_model"] or ""})
    return json.dumps({"method": result.method, "method_kind": card["method"], "digest": card["digest"],
                       "metrics": figures})


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_from_scratch(spec: dict, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics]) -> str:
    """Stage 4: train training.from_scratch's model and tokenizer on the data set; resumes from checkpoints."""
    import json

    from aicd.components.spec import parse_spec
    from aicd.components.training.runtime import artifact_size_mb
    from aicd.components.training.scratch import train_from_scratch as train

    result = train(parse_spec(spec), dataset.path, model.path)
    figures = {**result.metrics(), "adapter_size_mb": artifact_size_mb(model.path)}
    for name, value in figures.items():
        metrics.log_metric(name, value)
    model.metadata.update({"digest": result.card["digest"], "kind": "model", "method": "from-scratch"})
    return json.dumps({"method": "from-scratch", "method_kind": "from-scratch", "digest": result.card["digest"],
                       "metrics": figures})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_methods(spec: dict) -> List[str]:
    """Names of training.methods, for a ParallelFor."""
    from aicd.components.spec import TrainingSpec

    return [m.name for m in TrainingSpec.model_validate(spec["training"]).methods]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def launch_trainjob(spec: dict, dataset_uri: str, output_uri: str, method: str = "", namespace: str = "",
                    claim: str = "aicd-data", runtime: str = "torch-distributed",
                    timeout_seconds: float = 604800.0) -> str:
    """Train one method as a Kubeflow Trainer TrainJob (pvc:// URIs on ``claim``); wait; return output_uri."""
    from kubernetes import client, config

    from aicd.components.spec import parse_spec
    from aicd.components.training.launcher import launch_trainjob as launch
    from aicd.components.training.launcher import train_adapter_args, trainjob_name, trainjob_manifest

    parsed = parse_spec(spec)
    method = method or parsed.training.methods[0].name
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    args = train_adapter_args(parsed, method, dataset_uri, output_uri)
    manifest = trainjob_manifest(parsed, trainjob_name(parsed, method, args), args,
                                 namespace=namespace or None, runtime=runtime, claim=claim or None)
    launch(client.CustomObjectsApi(), manifest, timeout_seconds=timeout_seconds)
    return output_uri


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_adapter_trainjob(spec: dict, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
                           method: str = "", claim: str = "aicd-checkpoints", namespace: str = "",
                           runtime: str = "torch-distributed", deadline_seconds: int = 604800) -> str:
    """train_adapter through Kubeflow Trainer: the method runs as a TrainJob (torchrun on
    training.resources.num_nodes x procs_per_node) with data and checkpoints on ``claim``; a retried
    step follows the same job. Same outputs as train_adapter."""
    from aicd.components.training.trainjob import run_step

    summary, figures, metadata = run_step(spec, dataset.path, model.path, method or spec["training"]["methods"][0][
        "name"], claim, namespace, runtime, deadline_seconds)
    for name, value in figures.items():
        metrics.log_metric(name, value)
    model.metadata.update(metadata)
    return summary


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_from_scratch_trainjob(spec: dict, dataset: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
                                claim: str = "aicd-checkpoints", namespace: str = "",
                                runtime: str = "torch-distributed", deadline_seconds: int = 604800) -> str:
    """train_from_scratch through Kubeflow Trainer (a TrainJob, as train_adapter_trainjob). Same outputs."""
    from aicd.components.training.trainjob import run_step

    summary, figures, metadata = run_step(spec, dataset.path, model.path, None, claim, namespace, runtime,
                                          deadline_seconds)
    for name, value in figures.items():
        metrics.log_metric(name, value)
    model.metadata.update(metadata)
    return summary


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def choose_method(spec: dict, trainings: List[str], evaluations: List[str], models: Input[List[Model]],
                  table: Output[Artifact], plot: Output[HTML], best: Output[Model]) -> NamedTuple(
                      "Choice", chosen=str, pareto=str):
    """Table and Pareto plot of quality (metrics.primary) against training cost, and the best method's
    Model artifact copied to ``best`` (the one to deliver); its name, and the Pareto front as JSON."""
    import json

    from aicd.components.spec import MetricsSpec
    from aicd.components.training.pareto import copy_chosen, write_comparison

    primary = MetricsSpec.model_validate(spec["metrics"]).primary
    rows = write_comparison(trainings, evaluations, primary, table.path, plot.path)
    chosen = copy_chosen(rows, primary, [m.path for m in models], best.path)
    best.metadata.update(method=chosen["method"], digest=chosen["digest"], quality=chosen["quality"])
    outputs = NamedTuple("Choice", chosen=str, pareto=str)
    return outputs(chosen["method"], json.dumps([r["method"] for r in rows if r["pareto"]]))
