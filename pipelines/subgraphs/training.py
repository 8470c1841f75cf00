"""Training sub-graph: train every method of the spec in parallel, evaluate each, keep the best.

A plain function that adds tasks to the pipeline being built (kfp.local cannot run a
nested pipeline taking an artifact input).
"""

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def compare_methods(s: SpecParams, dataset, platform: Platform | None = None,
                    split: str = "validation", methods=None, champion=None) -> dsl.PipelineTask:
    """ParallelFor over training.methods (or ``methods``: a task output listing some of their names):
    train_adapter, then evaluate_model on ``split``, light: only the metrics choose_method reads (the
    behavioural checks, probe and latency are for the gate, which evaluates the chosen one in full).
    ``champion`` (find_champion's Model artifact): what dpo methods start from (through choose_start);
    without it every method starts from the base.

    Returns the choose_method task: outputs ``best`` (the Model artifact of the method best on
    metrics.primary, the one to deliver), ``chosen`` (its name), ``table`` (JSON rows: method,
    digest, primary metric, train_seconds, peak_memory_mb, adapter_size_mb, pareto), ``plot``
    (HTML with the Pareto plot) and ``pareto`` (the methods on the Pareto front, JSON).
    """
    from aicd.components.evaluation.steps import evaluate_model  # the evaluation area's step
    from aicd.components.training.steps import choose_method, choose_start, list_methods

    platform = platform or Platform()
    if methods is None:
        methods = platform.apply(list_methods(**s.of(list_methods)), "evaluate").output
    start = None
    if champion is not None:
        start = platform.apply(choose_start(**s.of(choose_start), methods=methods, champion=champion),
                               "evaluate").outputs["start"]
    with dsl.ParallelFor(methods, name="methods") as method:
        train_task = train_one(s, dataset, method, platform, start=start)
        eval_task = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset,
                                                  model=train_task.outputs["model"], split=split, light=True),
                                    "evaluate")
    return platform.apply(choose_method(**s.of(choose_method), trainings=dsl.Collected(train_task.outputs["Output"]),
                                        evaluations=dsl.Collected(eval_task.outputs["Output"]),
                                        models=dsl.Collected(train_task.outputs["model"])), "evaluate")


def train_one(s: SpecParams, dataset, method, platform: Platform, start=None) -> dsl.PipelineTask:
    """train_adapter (method None: train_from_scratch) in the step's pod, or, under a profile with
    ``roles.train.engine: trainjob``, its TrainJob twin: a light pod (the train role's volumes, no GPU)
    that launches a Kubeflow Trainer TrainJob and waits for it. ``start``: the Model artifact a dpo
    method starts from (choose_start's)."""
    from aicd.components.training import steps

    train = platform.profile.roles.train
    inputs = {"dataset": dataset, **({"method": method} if method is not None else {})}
    if start is not None and method is not None:
        inputs["start"] = start
    if train.engine != "trainjob":
        step = steps.train_adapter if method is not None else steps.train_from_scratch
        return platform.apply(step(**s.of(step), **inputs), "train")
    step = steps.train_adapter_trainjob if method is not None else steps.train_from_scratch_trainjob
    claim = train.trainjob_claim or platform.profile.volume("checkpoints").claim
    return platform.launcher(step(**s.of(step), **inputs, claim=claim, runtime=train.trainjob_runtime,
                                  deadline_seconds=train.trainjob_deadline_seconds))
