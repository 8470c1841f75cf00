"""Stage 4, redesign: a model trained from scratch, gated and delivered like an adapter."""

from aicd.pipelines.platform import Platform


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model
    from aicd.pipelines.subgraphs.training import train_one

    @dsl.pipeline(name="aicd-redesign", description="Ingest the data, train the spec's custom model from scratch "
                                                     "(checkpointed, resumable), evaluate it against the base "
                                                     "model, gate it and promote it through Git.")
    def redesign_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        dataset = ingest_task.outputs["dataset"]
        train_task = train_one(spec, dataset, None, platform)  # in the pod, or a TrainJob (the profile's engine)
        deliver_model(spec, dataset, train_task.outputs["model"], platform)

    return redesign_pipeline
