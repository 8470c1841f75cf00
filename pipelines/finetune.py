"""Stage 3, fine-tuning: train the spec's adapter methods, keep the best, evaluate it against the serving
champion (the base model while none serves), gate, promote through Git."""

from aicd.pipelines.platform import Platform


def train_candidate(spec, dataset, platform: Platform):
    """The adapter to deliver: every method of ``training.methods`` trained in parallel and evaluated on
    the validation split (the test split stays for the gate); the best on metrics.primary."""
    from aicd.pipelines.subgraphs.training import compare_methods

    return compare_methods(spec, dataset, platform).outputs["best"]


def build(platform: Platform):
    from kfp import dsl

    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.delivery import deliver_model

    @dsl.pipeline(name="aicd-finetune", description="Ingest the data, train the spec's adapter methods and keep "
                                                     "the best, evaluate it against the serving champion (the "
                                                     "base model while none serves), gate it and promote it "
                                                     "through the GitOps repository.")
    def finetune_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        dataset = ingest_task.outputs["dataset"]
        model = train_candidate(spec, dataset, platform)
        deliver_model(spec, dataset, model, platform)

    return finetune_pipeline
