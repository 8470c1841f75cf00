"""Stage 4, redesign: a model trained from scratch, gated and delivered like an adapter."""

from aicd.pipelines.params import SpecParams, documented
from aicd.pipelines.platform import Platform

DESCRIPTION = ("Ingest the data, train the spec's custom model from scratch (checkpointed, resumable), evaluate "
               "it against the base model, gate it and promote it through Git.")


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model
    from aicd.pipelines.subgraphs.training import train_one

    def redesign_pipeline(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict,
                          delivery: dict, labeling: dict):
        s = SpecParams(name, task, data, candidates, metrics, training, delivery, labeling)
        dataset = prepare_data(s, platform).outputs["dataset"]
        train_task = train_one(s, dataset, None, platform)  # in the pod, or a TrainJob (the profile's engine)
        deliver_model(s, dataset, train_task.outputs["model"], platform)

    return dsl.pipeline(name="aicd-redesign", description=DESCRIPTION)(documented(redesign_pipeline, DESCRIPTION))
