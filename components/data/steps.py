"""KFP steps of the data area: thin wrappers over sources.py, ingest.py and profile.py.

Each step takes only the spec sections it reads (``task``, ``data``), as dicts.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fingerprint_sources(data: dict) -> str:
    """The fingerprint of the bytes behind ``data.sources`` (never cache: files change under one URI).

    Args:
        data: The spec's ``data`` section.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.data.sources import sources_fingerprint

    return sources_fingerprint(step_spec(data=data).data)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_dataset(task: dict, data: dict, dataset: Output[Dataset], sources_fingerprint: str = "",
                   parent_fingerprint: str = ""):
    """Read, validate, split and version the spec's data into a data set directory.

    Args:
        task: The spec's ``task`` section (fields, labels).
        data: The spec's ``data`` section (sources, split, quality).
        sources_fingerprint: fingerprint_sources' output: the cache key of the sources' content.
        parent_fingerprint: The previous data set version as ``ingest.parent_ref`` of its card
            (``<fingerprint>@<row_hash>``: its scheme is checked); its fingerprint is recorded in the card.
        dataset: Output: the versioned data set (splits, card.json with fingerprint and quarantine).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.data.ingest import ingest_dataset as ingest

    result = ingest(step_spec(task=task, data=data), dataset.path, parent=parent_fingerprint or None)
    dataset.metadata.update({
        "fingerprint": result.fingerprint,
        "parent": result.parent or "",
        "sources": sources_fingerprint,
        "rows_read": result.rows_read,
        "quarantined": result.quarantined,
        "not_selected": result.not_selected,
        "digest": result.card["digest"],
        **{f"rows_{split}": n for split, n in result.counts.items()},
        **{f"quarantine_{reason}": n for reason, n in result.quarantine_counts.items()},
    })


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def profile_dataset(dataset: Input[Dataset], report: Output[HTML]):
    """An HTML report of the data set with its plots, shown by the KFP UI.

    Args:
        dataset: The data set ingest_dataset wrote.
        report: Output: the HTML profile with plots.
    """
    from aicd.components.data.profile import profile_dataset as profile

    result = profile(dataset.path, report.path)
    report.metadata.update({"fingerprint": result.fingerprint, "plots": len(result.plots)})
