"""The pipelines' own steps: decisions between the areas' steps (logic in checks.py)."""

from typing import NamedTuple

from kfp import dsl

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_new_data(spec: dict, labeled_rows: int, feedback_rows: int, trained_base: str = "") -> NamedTuple(
        "Check", Output=bool, reason=str):
    """Whether enough new labeled or feedback rows arrived, or the base model changed since the last
    training (``trained_base``), to fine-tune again (``Output``: kfp.local resolves a dsl.If only on an
    output of that name)."""
    from aicd.pipelines.checks import enough_new_data

    decision = enough_new_data(spec, int(labeled_rows), int(feedback_rows), trained_base)
    outputs = NamedTuple("Check", Output=bool, reason=str)
    return outputs(decision.retrain, decision.reason)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def previous_versions(state_uri: str, previous_labels: str, previous_feedback: str) -> NamedTuple(
        "Previous", labels=str, feedback=str, base_model=str):
    """The URIs of the labeled and feedback versions new rows are counted from: the given ones, else the
    ones the last training used (kept under ``state_uri``), else ''; and the base model that training
    started from ('' when unknown). Never cache: the state changes."""
    from aicd.pipelines.checks import previous_versions as run

    labels, feedback, base_model = run(state_uri, previous_labels, previous_feedback)
    outputs = NamedTuple("Previous", labels=str, feedback=str, base_model=str)
    return outputs(labels, feedback, base_model)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_training_data(spec: dict, labeled: dsl.Input[dsl.Dataset], feedback: dsl.Input[dsl.Dataset],
                        dataset: dsl.Output[dsl.Dataset]) -> int:
    """The labeled version with the feedback rows added: what continuous fine-tuning trains on; returns
    the number of feedback rows added."""
    from aicd.components.labeling.feedback import add_feedback

    result = add_feedback(spec, labeled.path, feedback.path, dataset.path)
    dataset.metadata.update(fingerprint=result.fingerprint, rows=result.rows, feedback_rows=result.added)
    return result.added


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def record_trained_versions(spec: dict, state_uri: str, labeled: dsl.Input[dsl.Dataset],
                            feedback: dsl.Input[dsl.Dataset], model_digest: str = "") -> str:
    """Keep the versions this training used under ``state_uri`` so the next recurring run counts new rows
    from them (never cache); returns the folder written, '' without a state URI."""
    if not state_uri.strip():
        return ""
    from aicd.pipelines.checks import base_model_uri, record_trained_versions as run

    return str(run(state_uri, labeled.path, feedback.path, model_digest, base_model_uri(spec)))
