"""The pipelines' own steps: decisions between the areas' steps (logic in checks.py)."""

from typing import NamedTuple

from kfp import dsl

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_new_data(spec: dict, labeled_rows: int, feedback_rows: int) -> NamedTuple("Check", Output=bool,
                                                                                      reason=str):
    """Whether enough new labeled or feedback rows arrived to fine-tune again (``Output``: kfp.local
    resolves a dsl.If only on an output of that name)."""
    from aicd.pipelines.checks import enough_new_data

    decision = enough_new_data(spec, int(labeled_rows), int(feedback_rows))
    outputs = NamedTuple("Check", Output=bool, reason=str)
    return outputs(decision.retrain, decision.reason)
