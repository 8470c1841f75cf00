"""Stage 1, proof of concept: a versioned data set, the candidates tried on real prompts, review tasks."""

from aicd.pipelines.platform import Platform


def build(platform: Platform):
    from kfp import dsl

    from aicd.components.labeling.steps import export_for_labeling
    from aicd.pipelines.subgraphs.data import prepare_data
    from aicd.pipelines.subgraphs.evaluation import benchmark_candidates

    @dsl.pipeline(name="aicd-poc", description="Ingest and profile the data, try every candidate on it, "
                                                "and send a sample to Label Studio for review.")
    def poc_pipeline(spec: dict):
        ingest_task = prepare_data(spec, platform)
        dataset = ingest_task.outputs["dataset"]
        benchmark_candidates(spec, dataset, platform)
        platform.apply(export_for_labeling(spec=spec, dataset=dataset), "labeling", cache=False)

    return poc_pipeline
