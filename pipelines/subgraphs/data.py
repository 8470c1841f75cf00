"""Ingest and profile the spec's data: the first tasks of every pipeline."""

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def prepare_data(s: SpecParams, platform: Platform, parent_fingerprint: str = "") -> dsl.PipelineTask:
    """fingerprint_sources (never cached: the sources may change under the same URIs) -> ingest_dataset
    (cached on the sources' fingerprint and the ``task``/``data`` sections) -> profile_dataset.

    Returns the ingest task; its ``dataset`` output feeds every later step.
    """
    from aicd.components.data.steps import fingerprint_sources, ingest_dataset, profile_dataset

    sources_task = platform.apply(fingerprint_sources(**s.of(fingerprint_sources)), "data", cache=False)
    ingest_task = platform.apply(ingest_dataset(**s.of(ingest_dataset), sources_fingerprint=sources_task.output,
                                                parent_fingerprint=parent_fingerprint), "data")
    platform.apply(profile_dataset(dataset=ingest_task.outputs["dataset"]), "data")
    return ingest_task
