"""Stage 2, scoping: labels flow in; a leaderboard chooses the base model, which can ship as the first champion."""

from aicd.pipelines.platform import Platform


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.evaluation.steps import evaluate_model
    from aicd.components.labeling.steps import import_labels
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import gate_and_promote
    from aicd.pipelines.subgraphs.evaluation import benchmark_candidates

    @dsl.pipeline(name="aicd-scoping", description="Import labels with agreement figures, rank the candidates "
                                                    "on the spec's metrics, and deliver the chosen base model "
                                                    "through the gate and Git when no champion serves yet.")
    def scoping_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        labels_task = platform.apply(import_labels(spec=spec, dataset=ingest_task.outputs["dataset"]), "labeling",
                                     cache=False)
        labeled = labels_task.outputs["labeled"]
        chosen_task = benchmark_candidates(spec, labeled, platform)
        # Known gap: for text-classification the chosen entry is a linear probe (a Model folder inside the
        # benchmark's results), but this evaluates and delivers the bare encoder with an untrained head;
        # select_candidate must first expose the probe as a Model artifact (components/evaluation).
        chosen_eval = platform.apply(evaluate_model(spec=spec, dataset=labeled,
                                                    candidate=chosen_task.outputs["candidate"]), "evaluate")
        gate_and_promote(spec, platform, chosen_eval.outputs["report"])

    return scoping_pipeline
