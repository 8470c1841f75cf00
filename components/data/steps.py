"""KFP steps of the data area: thin wrappers over ingest.py and profile.py."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_dataset(spec: dict, dataset: Output[Dataset], parent_fingerprint: str = ""):
    """Read, validate, split and version the spec's data into a data set directory."""
    from aicd.components.data.ingest import ingest_dataset as ingest
    from aicd.components.spec import parse_spec

    result = ingest(parse_spec(spec), dataset.path, parent=parent_fingerprint or None)
    dataset.metadata.update({
        "fingerprint": result.fingerprint,
        "parent": result.parent or "",
        "rows_read": result.rows_read,
        "quarantined": result.quarantined,
        "not_selected": result.not_selected,
        "digest": result.card["digest"],
        **{f"rows_{split}": n for split, n in result.counts.items()},
        **{f"quarantine_{reason}": n for reason, n in result.quarantine_counts.items()},
    })


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def profile_dataset(dataset: Input[Dataset], report: Output[HTML]):
    """An HTML report of the data set with its plots, shown by the KFP UI."""
    from aicd.components.data.profile import profile_dataset as profile

    result = profile(dataset.path, report.path)
    report.metadata.update({"fingerprint": result.fingerprint, "plots": len(result.plots)})
