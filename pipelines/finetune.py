"""Stage 3, fine-tuning: train an adapter, evaluate it against the base, gate, promote through Git."""

from aicd.pipelines.platform import Platform


def train_candidate(spec, dataset, platform: Platform):
    """The adapter to deliver: the spec's first training method (its Model output)."""
    from aicd.components.training.steps import train_adapter

    train_task = platform.apply(train_adapter(spec=spec, dataset=dataset), "train")
    return train_task.outputs["model"]


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model

    @dsl.pipeline(name="aicd-finetune", description="Ingest the data, train the spec's adapter methods and keep "
                                                     "the best, evaluate it against the base model, gate it and "
                                                     "promote it through the GitOps repository.")
    def finetune_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        dataset = ingest_task.outputs["dataset"]
        model = train_candidate(spec, dataset, platform)
        deliver_model(spec, dataset, model, platform)

    return finetune_pipeline
