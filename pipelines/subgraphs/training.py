"""Training sub-graph: train every method of the spec in parallel, evaluate each, keep the best.

A plain function that adds tasks to the pipeline being built (kfp.local cannot run a
nested pipeline taking an artifact input).
"""

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def compare_methods(s: SpecParams, dataset, platform: Platform | None = None,
                    split: str = "validation") -> dsl.PipelineTask:
    """ParallelFor over training.methods: train_adapter, then evaluate_model on ``split``.

    Returns the choose_method task: outputs ``best`` (the Model artifact of the method best on
    metrics.primary, the one to deliver), ``chosen`` (its name), ``table`` (JSON rows: method,
    digest, primary metric, train_seconds, peak_memory_mb, adapter_size_mb, pareto), ``plot``
    (HTML with the Pareto plot) and ``pareto`` (the methods on the Pareto front, JSON).
    """
    from aicd.components.evaluation.steps import evaluate_model  # the evaluation area's step
    from aicd.components.training.steps import choose_method, list_methods, train_adapter

    platform = platform or Platform()
    names_task = platform.apply(list_methods(**s.of(list_methods)), "evaluate")
    with dsl.ParallelFor(names_task.output, name="methods") as method:
        train_task = platform.apply(train_adapter(**s.of(train_adapter), dataset=dataset, method=method), "train")
        eval_task = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset,
                                                  model=train_task.outputs["model"], split=split), "evaluate")
    return platform.apply(choose_method(**s.of(choose_method), trainings=dsl.Collected(train_task.outputs["Output"]),
                                        evaluations=dsl.Collected(eval_task.outputs["Output"]),
                                        models=dsl.Collected(train_task.outputs["model"])), "evaluate")
