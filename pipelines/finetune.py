"""Stage 3, fine-tuning: train the spec's adapter methods, keep the best, evaluate it against the serving
champion (the base model while none serves), gate, promote through Git."""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

DESCRIPTION = ("Ingest the data, train the spec's adapter methods and keep the best, evaluate it against the "
               "serving champion (the base model while none serves), gate it and promote it through the GitOps "
               "repository.")


def train_candidate(s: SpecParams, dataset, platform: Platform, methods=None, champion=None):
    """The adapter to deliver: every method of ``training.methods`` (or the ``methods`` names, a task
    output) trained in parallel and evaluated on the validation split (the test split stays for the
    gate); the best on metrics.primary. dpo methods start from ``champion`` (find_champion's task)."""
    from aicd.pipelines.subgraphs.training import compare_methods

    start = champion.outputs["champion"] if champion is not None else None
    return compare_methods(s, dataset, platform, methods=methods, champion=start).outputs["best"]


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.steps import fingerprint_inputs
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model, find_serving_champion

    def finetune_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                          delivery: dict, labeling: dict):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        # The one step that always runs: what the run reads outside the pipeline (sources, the GitOps commit).
        outside = platform.apply(fingerprint_inputs(data=data, delivery=delivery), "data", cache=False,
                                 also=("deliver",))  # the GitOps credentials too
        dataset = prepare_data(s, platform, sources=outside.outputs["sources"]).outputs["dataset"]
        # what dpo starts from, and the champion the gate compares
        champion = find_serving_champion(s, platform, revision=outside.outputs["revision"])
        deliver_model(s, dataset, train_candidate(s, dataset, platform, champion=champion), platform, champion)

    return dsl.pipeline(name="aicd-finetune", description=DESCRIPTION)(documented(finetune_pipeline, DESCRIPTION))
