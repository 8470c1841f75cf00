"""Evaluation sub-graphs: the candidate benchmark (stage 2) and the hyper-parameter search.

Plain functions that add tasks to the pipeline being built (kfp.local cannot run a
nested pipeline taking an artifact input).
"""

from collections.abc import Callable

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def benchmark_candidates(s: SpecParams, dataset, platform: Platform | None = None) -> dsl.PipelineTask:
    """Fan out over the spec's candidates, add the classical baseline, choose one.

    Returns the select_candidate task: outputs ``candidate``, ``uri``, ``mode``,
    ``chosen`` (JSON), ``leaderboard`` (folder with leaderboard.json) and ``html``.
    """
    from aicd.components.evaluation.steps import (
        evaluate_baseline,
        evaluate_candidate,
        list_candidates,
        select_candidate,
    )

    platform = platform or Platform()
    names_task = platform.apply(list_candidates(**s.of(list_candidates)), "evaluate")
    with dsl.ParallelFor(names_task.output, name="candidates") as name:
        candidate_task = platform.apply(evaluate_candidate(**s.of(evaluate_candidate), dataset=dataset, candidate=name),
                                        "evaluate")
    baseline_task = platform.apply(evaluate_baseline(**s.of(evaluate_baseline), dataset=dataset), "evaluate")
    # The results artifacts go in too: a pod reads the entries' reports and probes from its own
    # downloaded inputs, never from another step's output URI.
    return platform.apply(select_candidate(**s.of(select_candidate),
                                           entries=dsl.Collected(candidate_task.outputs["Output"]),
                                           baseline=baseline_task.outputs["Output"],
                                           results=dsl.Collected(candidate_task.outputs["results"]),
                                           baseline_results=baseline_task.outputs["results"]), "evaluate")


def search_hyperparameters(s: SpecParams, dataset, train: Callable[..., dsl.PipelineTask],
                           platform: Platform | None = None) -> dsl.PipelineTask:
    """Grid or random search over ``training.search_space``: train and evaluate each trial in parallel.

    ``train(training=<trial's training section>, dataset=<data set>)`` adds the training task of one
    trial (for example the training area's train_adapter step with the other sections bound) and
    returns it; its ``model`` output is evaluated on the validation split. Returns the select_trial task.
    """
    from aicd.components.evaluation.steps import evaluate_model, plan_search, select_trial

    platform = platform or Platform()
    plan_task = platform.apply(plan_search(**s.of(plan_search)), "evaluate")
    with dsl.ParallelFor(plan_task.output, name="trials") as trial:
        train_task = platform.apply(train(training=trial, dataset=dataset), "train")
        eval_task = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset,
                                                  model=train_task.outputs["model"], split="validation"), "evaluate")
    return platform.apply(select_trial(**s.of(select_trial), results=dsl.Collected(eval_task.outputs["Output"])),
                          "evaluate")
