"""Ingest and profile the spec's data: the first tasks of every pipeline."""

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def prepare_data(s: SpecParams, platform: Platform, parent_fingerprint: str = "", sources=None) -> dsl.PipelineTask:
    """fingerprint_sources (never cached: the sources may change under the same URIs) -> ingest_dataset
    (cached on the sources' fingerprint and the ``task``/``data`` sections) -> profile_dataset.
    ``sources``: that fingerprint from a task already in the pipeline (fingerprint_inputs') instead.
    ``parent_fingerprint``: the parent data set as ``components.data.ingest.parent_ref`` of its card
    (``<fingerprint>@<row_hash>``), so ingest refuses a parent of another row-hash scheme.

    Returns the ingest task; its ``dataset`` output feeds every later step.
    """
    from aicd.components.data.steps import fingerprint_sources, ingest_dataset, profile_dataset

    if sources is None:
        sources = platform.apply(fingerprint_sources(**s.of(fingerprint_sources)), "data", cache=False).output
    ingest_task = platform.apply(ingest_dataset(**s.of(ingest_dataset), sources_fingerprint=sources,
                                                parent_fingerprint=parent_fingerprint), "data")
    platform.apply(profile_dataset(dataset=ingest_task.outputs["dataset"]), "data")
    return ingest_task
