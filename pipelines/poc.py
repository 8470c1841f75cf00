"""Stage 1, proof of concept: a versioned data set, the candidates tried on real prompts, review tasks."""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

DESCRIPTION = ("Ingest and profile the data, try every candidate on it, review their outputs side by side, and "
               "send a sample to Label Studio for labeling.")


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.evaluation.steps import evaluate_model
    from aicd.components.labeling.steps import export_for_labeling, review_leaderboard
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.evaluation import benchmark_candidates

    def poc_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                     delivery: dict, labeling: dict):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        dataset = prepare_data(s, platform).outputs["dataset"]
        chosen_task = benchmark_candidates(s, dataset, platform)
        # Every candidate's outputs on the same prompts, side by side (stage 1's manual evaluation).
        # Cached: its tasks are keyed by stable ids, so a re-run with the same leaderboard adds nothing anyway.
        platform.apply(review_leaderboard(**s.of(review_leaderboard), dataset=dataset,
                                          leaderboard=chosen_task.outputs["leaderboard"]), "labeling")
        # The chosen entry's evaluation (its probe, or its base model in its leaderboard mode) is what
        # labeling needs: its answers for pairwise comparison, its per-row scores (or its model, the
        # chosen `model` itself when it is one) for uncertainty sampling.
        chosen_eval = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset,
                                                    model=chosen_task.outputs["model"]), "evaluate")
        platform.apply(export_for_labeling(**s.of(export_for_labeling), dataset=dataset,
                                           evaluation=chosen_eval.outputs["report"],
                                           chosen=chosen_task.outputs["chosen"],
                                           chosen_model=chosen_task.outputs["model"]), "labeling", cache=False)

    return dsl.pipeline(name="aicd-poc", description=DESCRIPTION)(documented(poc_pipeline, DESCRIPTION))
