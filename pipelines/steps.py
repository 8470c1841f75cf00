"""The pipelines' own steps: decisions between the areas' steps (logic in checks.py).

Each step takes only the spec sections it reads, as dicts.
"""

from typing import NamedTuple

from kfp import dsl

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fingerprint_inputs(data: dict, delivery: dict) -> NamedTuple("Inputs", sources=str, revision=str):
    """What a run reads from outside the pipeline, in one light step (never cache; no model library): the
    fingerprint of the bytes behind ``data.sources`` (ingest is cached on it) and the commit the GitOps
    branch points at (find_champion is cached on it).

    Args:
        data: The spec's ``data`` section (sources).
        delivery: The spec's ``delivery`` section (gitops).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.data.sources import sources_fingerprint
    from aicd.components.delivery.revision import champion_revision

    spec = step_spec(data=data, delivery=delivery)
    outputs = NamedTuple("Inputs", sources=str, revision=str)
    return outputs(sources_fingerprint(spec.data), champion_revision(spec.delivery))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_new_data(candidates: list, training: dict, labeling: dict, labeled_rows: int, feedback_rows: int,
                   new_pairs: int = 0, trained_base: str = "") -> NamedTuple("Check", Output=bool, methods=list,
                                                                             reason=str):
    """Whether to fine-tune again, and which ``training.methods``: the supervised ones when enough new labeled
    or feedback rows arrived, or the base model changed since the last training (``trained_base``); the dpo
    ones when enough new preference pairs arrived (``Output``: kfp.local resolves a dsl.If only on an
    output of that name).

    Args:
        candidates: The spec's ``candidates``; the first is the base model.
        training: The spec's ``training`` section (``methods``).
        labeling: The spec's ``labeling`` section (``retrain_min_new_rows``, ``retrain_min_new_pairs``).
        labeled_rows: import_labels' count of new labeled rows.
        feedback_rows: collect_feedback's count of new feedback rows.
        new_pairs: count_new_pairs' count of new preference pairs.
        trained_base: The base model URI the last training started from ('' when unknown).
    """
    from aicd.pipelines.checks import plan_training

    plan = plan_training({"candidates": candidates, "training": training, "labeling": labeling}, int(labeled_rows),
                         int(feedback_rows), int(new_pairs), trained_base)
    outputs = NamedTuple("Check", Output=bool, methods=list, reason=str)
    return outputs(plan.retrain, plan.methods, plan.reason)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def count_new_pairs(task: dict, labeled: dsl.Input[dsl.Dataset], feedback: dsl.Input[dsl.Dataset],
                    previous_labels: str = "", previous_feedback: str = "") -> int:
    """The preference pairs in the labeled and feedback versions that the versions the last training used
    did not hold (never cache: the previous versions live outside the pipeline).

    Args:
        task: The spec's ``task`` section (fields).
        labeled: import_labels' labeled version.
        feedback: collect_feedback's feedback version.
        previous_labels: The labeled version the last training used ('' for none).
        previous_feedback: The feedback version the last training used ('' for none).
    """
    from aicd.components.uris import resolve_data
    from aicd.pipelines.checks import new_preference_pairs

    previous = [resolve_data(uri) if uri else None for uri in (previous_labels, previous_feedback)]
    return new_preference_pairs(task, [labeled.path, feedback.path], previous)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def previous_versions(state_uri: str, previous_labels: str, previous_feedback: str) -> NamedTuple(
        "Previous", labels=str, feedback=str, base_model=str):
    """The URIs of the labeled and feedback versions new rows are counted from: the given ones, else the
    ones the last training used (kept under ``state_uri``), else ''; and the base model that training
    started from ('' when unknown). Never cache: the state changes.

    Args:
        state_uri: Where the continuous pipeline keeps the last trained versions.
        previous_labels: A labeled version's URI to count from, overriding the state.
        previous_feedback: A feedback version's URI to count from, overriding the state.
    """
    from aicd.pipelines.checks import previous_versions as run

    labels, feedback, base_model = run(state_uri, previous_labels, previous_feedback)
    outputs = NamedTuple("Previous", labels=str, feedback=str, base_model=str)
    return outputs(labels, feedback, base_model)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_training_data(name: str, task: dict, data: dict, labeling: dict, labeled: dsl.Input[dsl.Dataset],
                        feedback: dsl.Input[dsl.Dataset], dataset: dsl.Output[dsl.Dataset]) -> int:
    """The labeled version with the feedback rows added: what continuous fine-tuning trains on; returns
    the number of feedback rows added.

    Args:
        name: The spec's name.
        task: The spec's ``task`` section.
        data: The spec's ``data`` section.
        labeling: The spec's ``labeling`` section.
        labeled: import_labels' labeled version.
        feedback: collect_feedback's feedback version.
        dataset: Output: the data set to train on.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.labeling.feedback import add_feedback

    result = add_feedback(step_spec(name, task=task, data=data, labeling=labeling), labeled.path, feedback.path,
                          dataset.path)
    dataset.metadata.update(fingerprint=result.fingerprint, rows=result.rows, feedback_rows=result.added)
    return result.added


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def record_trained_versions(candidates: list, state_uri: str, labeled: dsl.Input[dsl.Dataset],
                            feedback: dsl.Input[dsl.Dataset], model_digest: str = "") -> str:
    """Keep the versions this training used under ``state_uri`` so the next recurring run counts new rows
    from them (never cache); returns the folder written, '' without a state URI.

    Args:
        candidates: The spec's ``candidates``; the first is the base model trained from.
        state_uri: Where to keep the versions.
        labeled: The labeled version trained on.
        feedback: The feedback version trained on.
        model_digest: The digest of the model the training produced.
    """
    if not state_uri.strip():
        return ""
    from aicd.pipelines.checks import base_model_uri
    from aicd.pipelines.checks import record_trained_versions as run

    return str(run(state_uri, labeled.path, feedback.path, model_digest, base_model_uri({"candidates": candidates})))
