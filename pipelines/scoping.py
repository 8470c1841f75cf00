"""Stage 2, scoping: labels flow in; a leaderboard chooses the model (a base candidate in its mode, or
its linear probe), which can ship as the first champion."""

from aicd.pipelines.platform import Platform


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.labeling.steps import import_labels
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model
    from aicd.pipelines.subgraphs.evaluation import benchmark_candidates

    @dsl.pipeline(name="aicd-scoping", description="Import labels with agreement figures, rank the candidates "
                                                    "on the spec's metrics, and deliver the chosen entry (base model "
                                                    "or linear probe) through the gate and Git.")
    def scoping_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        labels_task = platform.apply(import_labels(spec=spec, dataset=ingest_task.outputs["dataset"]), "labeling",
                                     cache=False)
        labeled = labels_task.outputs["labeled"]
        chosen_task = benchmark_candidates(spec, labeled, platform)
        # The chosen entry as select_candidate delivers it: a copy of the model its mode produced (a
        # classification candidate's linear probe), or a reference to a base candidate (zero-/few-shot),
        # evaluated in its leaderboard mode. One static graph for both: the gate and the promotion
        # treat a base reference as the base model (promote_base_model), anything else by its digest.
        # Like every delivery, it is compared with the serving champion (the base model while none
        # serves) on the same examples, so the spec's non-inferiority gates apply here too.
        deliver_model(spec, labeled, chosen_task.outputs["model"], platform)

    return scoping_pipeline
