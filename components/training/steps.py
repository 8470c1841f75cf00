"""KFP steps of training: thin wrappers over adapter.py, scratch.py, launcher.py, pareto.py.

Each step takes only the spec sections it reads, as dicts. train_adapter and
train_from_scratch return a JSON summary (method, artifact digest, training figures)
for dsl.Collected fan-ins such as choose_method's choice of the best method.
"""

from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE, TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_adapter(task: dict, candidates: list, training: dict, dataset: Input[Dataset], model: Output[Model],
                  metrics: Output[Metrics], method: str = "", start: Input[Model] = None) -> str:
    """Fine-tune the base model with one of training.methods (default: the first); resumes from checkpoints.

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``; the first is the base model.
        training: The spec's ``training`` section (methods, hyper-parameters, checkpoints).
        dataset: The data set to train on.
        method: The name of one of ``training.methods``; '' for the first.
        start: Optional: the Model artifact a dpo method starts from (choose_start's copy of the champion):
            an adapter on the same base is continued and is DPO's reference; a base-model reference, another
            base or a full model starts from the base. Other methods always start from the base.
        model: Output: the Model artifact (card.json with digests and lineage).
        metrics: Output: training figures (loss, time, memory, adapter size).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.runs import publish_training, run_train_adapter

    result = run_train_adapter(step_spec(task=task, candidates=candidates, training=training), dataset.path,
                               method, model.path, start.path if start is not None else None)
    return publish_training(result, model, metrics)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def choose_start(training: dict, methods: List[str], champion: Input[Model], start: Output[Model]) -> str:
    """The Model artifact train_adapter starts from: a copy of the champion when one of ``methods`` is dpo,
    else a base-model reference (so the other methods' inputs do not move with the champion); "base"
    or "champion <digest>".

    Args:
        training: The spec's ``training`` section (which methods are dpo).
        methods: The names of the methods this run trains.
        champion: find_champion's Model artifact (the serving champion, or a base-model reference).
        start: Output: the Model artifact to start from.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.start import choose_start as choose

    return choose(step_spec(training=training), methods, champion.path, start.path)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_from_scratch(task: dict, training: dict, dataset: Input[Dataset], model: Output[Model],
                       metrics: Output[Metrics]) -> str:
    """Stage 4: train training.from_scratch's model and tokenizer on the data set; resumes from checkpoints.

    Args:
        task: The spec's ``task`` section.
        training: The spec's ``training`` section (``from_scratch`` architecture, hyper-parameters).
        dataset: The data set to train on.
        model: Output: the Model artifact (card.json with digests and lineage).
        metrics: Output: training figures (loss, time, memory, model size).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.runs import publish_training, run_train_from_scratch

    result = run_train_from_scratch(step_spec(task=task, training=training), dataset.path, model.path)
    return publish_training(result, model, metrics)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def list_methods(training: dict) -> List[str]:
    """Names of training.methods, for a ParallelFor.

    Args:
        training: The spec's ``training`` section.
    """
    from aicd.components.contracts import step_spec

    return [m.name for m in step_spec(training=training).training.methods]


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def launch_trainjob(name: str, task: dict, candidates: list, training: dict, dataset_uri: str, output_uri: str,
                    method: str = "", namespace: str = "", claim: str = "aicd-checkpoints",
                    runtime: str = "torch-distributed", timeout_seconds: float = 604800.0) -> str:
    """Train one method as a Kubeflow Trainer TrainJob (pvc:// URIs on ``claim``); wait; return output_uri.

    Args:
        name: The spec's name (labels and the job's name).
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        training: The spec's ``training`` section (resources: nodes, processes, GPUs).
        dataset_uri: The data set's pvc:// URI.
        output_uri: Where the trained Model artifact goes (pvc:// URI).
        method: One of ``training.methods``; '' for the first.
        namespace: The namespace of the TrainJob.
        claim: The PersistentVolumeClaim mounted at /mnt/pvc.
        runtime: The Trainer ClusterTrainingRuntime.
        timeout_seconds: How long to wait for the job.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.runs import run_launch_trainjob

    spec = step_spec(name, task=task, candidates=candidates, training=training)
    return run_launch_trainjob(spec, dataset_uri, output_uri, method, namespace, claim, runtime, timeout_seconds)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_adapter_trainjob(task: dict, candidates: list, training: dict, dataset: Input[Dataset],
                           model: Output[Model], metrics: Output[Metrics], method: str = "",
                           claim: str = "aicd-checkpoints", namespace: str = "", runtime: str = "torch-distributed",
                           deadline_seconds: int = 604800, start: Input[Model] = None) -> str:
    """train_adapter through Kubeflow Trainer: the method runs as a TrainJob (torchrun on
    training.resources.num_nodes x procs_per_node) with data and checkpoints on ``claim``; a retried
    step follows the same job. Same inputs and outputs as train_adapter.

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``; the first is the base model.
        training: The spec's ``training`` section (methods, hyper-parameters, resources).
        dataset: The data set to train on (staged on ``claim``).
        method: The name of one of ``training.methods``; '' for the first.
        claim: The PersistentVolumeClaim holding the job's data, checkpoints and model.
        namespace: The TrainJob's namespace ('' for the one the step runs in).
        runtime: The Trainer ClusterTrainingRuntime.
        deadline_seconds: The job's activeDeadlineSeconds.
        start: Optional: the Model artifact a dpo method starts from (as train_adapter's; staged on ``claim``).
        model: Output: the Model artifact (card.json with digests and lineage).
        metrics: Output: training figures.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.trainjob import run_step

    spec = step_spec(task=task, candidates=candidates, training=training)
    summary, figures, metadata = run_step(spec, dataset.path, model.path, method or spec.training.methods[0].name,
                                          claim, namespace, runtime, deadline_seconds,
                                          start.path if start is not None else None)
    for name, value in figures.items():
        metrics.log_metric(name, value)
    model.metadata.update(metadata)
    return summary


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_from_scratch_trainjob(task: dict, training: dict, dataset: Input[Dataset], model: Output[Model],
                                metrics: Output[Metrics], claim: str = "aicd-checkpoints", namespace: str = "",
                                runtime: str = "torch-distributed", deadline_seconds: int = 604800) -> str:
    """train_from_scratch through Kubeflow Trainer (a TrainJob, as train_adapter_trainjob). Same outputs.

    Args:
        task: The spec's ``task`` section.
        training: The spec's ``training`` section (``from_scratch`` architecture, resources).
        dataset: The data set to train on (staged on ``claim``).
        claim: The PersistentVolumeClaim holding the job's data, checkpoints and model.
        namespace: The TrainJob's namespace ('' for the one the step runs in).
        runtime: The Trainer ClusterTrainingRuntime.
        deadline_seconds: The job's activeDeadlineSeconds.
        model: Output: the Model artifact.
        metrics: Output: training figures.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.training.trainjob import run_step

    summary, figures, metadata = run_step(step_spec(task=task, training=training), dataset.path, model.path, None,
                                          claim, namespace, runtime, deadline_seconds)
    for name, value in figures.items():
        metrics.log_metric(name, value)
    model.metadata.update(metadata)
    return summary


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def choose_method(metrics: dict, trainings: List[str], evaluations: List[str], models: Input[List[Model]],
                  table: Output[Artifact], plot: Output[HTML], best: Output[Model]) -> NamedTuple(
                      "Choice", chosen=str, pareto=str):
    """Table and Pareto plot of quality (metrics.primary) against training cost, and the best method's
    Model artifact copied to ``best`` (the one to deliver); its name, and the Pareto front as JSON.

    Args:
        metrics: The spec's ``metrics`` section (``primary``).
        trainings: train_adapter's summaries, one per method.
        evaluations: evaluate_model's summaries of the methods' models.
        models: The methods' Model artifacts.
        table: Output: the comparison table as JSON.
        plot: Output: the Pareto plot of quality against training cost (HTML).
        best: Output: the best method's Model artifact (the one to deliver).
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.training.pareto import copy_chosen, write_comparison

    primary = step_spec(metrics=metrics).metrics.primary
    rows = write_comparison(trainings, evaluations, primary, table.path, plot.path)
    chosen = copy_chosen(rows, primary, [m.path for m in models], best.path)
    best.metadata.update(method=chosen["method"], digest=chosen["digest"], quality=chosen["quality"])
    outputs = NamedTuple("Choice", chosen=str, pareto=str)
    return outputs(chosen["method"], json.dumps([r["method"] for r in rows if r["pareto"]]))
