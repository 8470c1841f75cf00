"""Ingest and profile the spec's data: the first tasks of every pipeline."""

from kfp import dsl

from aicd.pipelines.platform import Platform


def prepare_data(spec, platform: Platform, parent_fingerprint: str = "") -> dsl.PipelineTask:
    """ingest_dataset (never cached: the sources may change under the same URIs) -> profile_dataset.

    Returns the ingest task; its ``dataset`` output feeds every later step.
    """
    from aicd.components.data.steps import ingest_dataset, profile_dataset

    ingest_task = platform.apply(ingest_dataset(spec=spec, parent_fingerprint=parent_fingerprint), "data",
                                 cache=False)
    platform.apply(profile_dataset(dataset=ingest_task.outputs["dataset"]), "data")
    return ingest_task
