"""Stage 2, scoping: labels flow in; a leaderboard chooses the model (a base candidate in its mode, or
its linear probe), which can ship as the first champion."""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

DESCRIPTION = ("Import labels with agreement figures, rank the candidates on the spec's metrics, and deliver the "
               "chosen entry (base model or linear probe) through the gate and Git.")


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.labeling.steps import import_labels
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model
    from aicd.pipelines.subgraphs.evaluation import benchmark_candidates

    def scoping_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                         delivery: dict, labeling: dict):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        ingest_task = prepare_data(s, platform)
        labels_task = platform.apply(import_labels(**s.of(import_labels), dataset=ingest_task.outputs["dataset"]),
                                     "labeling", cache=False)
        labeled = labels_task.outputs["labeled"]
        chosen_task = benchmark_candidates(s, labeled, platform)
        # The chosen entry as select_candidate delivers it: a copy of the model its mode produced (a
        # classification candidate's linear probe), or a reference to a base candidate (zero-/few-shot),
        # evaluated in its leaderboard mode. One static graph for both: the gate and the promotion
        # read it as a ModelRef (aicd.components.contracts): a base reference is delivered as the base
        # model, anything else by its digest. Like every delivery, it is compared with the serving
        # champion (the base model while none serves) on the same examples.
        deliver_model(s, labeled, chosen_task.outputs["model"], platform)

    return dsl.pipeline(name="aicd-scoping", description=DESCRIPTION)(documented(scoping_pipeline, DESCRIPTION))
