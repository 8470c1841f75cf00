"""Evaluate a candidate against the serving champion, gate it, and promote it only when the gate passed.

The one delivery path of every stage: a trained adapter or model (``model``), or a
bare base candidate by name (stage 1/2, the first champion), goes through the same
gate and the same GitOps promotion.
"""

from kfp import dsl

from aicd.pipelines.params import SpecParams
from aicd.pipelines.platform import Platform


def find_serving_champion(s: SpecParams, platform: Platform, revision=None) -> dsl.PipelineTask:
    """resolve_champion_revision (never cached: Git moves outside the pipeline; a light ``git ls-remote``)
    -> find_champion at that commit, cached on it: a re-run while the branch stays put reuses the champion,
    and any commit on the branch (a promotion, a rollback) makes it look again. ``revision``: that commit
    from a task already in the pipeline (fingerprint_inputs') instead. Output ``champion``, the Model
    artifact."""
    from aicd.components.delivery.steps import find_champion, resolve_champion_revision

    if revision is None:
        revision = platform.apply(resolve_champion_revision(delivery=s.delivery), "deliver", cache=False).output
    return platform.apply(find_champion(**s.of(find_champion), revision=revision), "deliver")


def evaluate_against_champion(s: SpecParams, dataset, model, platform: Platform,
                              champion=None) -> tuple[dsl.PipelineTask, ...]:
    """(candidate evaluation, champion evaluation, paired comparison) tasks for a Model artifact.

    The champion is what serves now according to the GitOps branch (find_champion, cached on the
    branch's commit that resolve_champion_revision reads every run): a copy of its Model artifact, or a reference to
    the base model it is (or that serves while nothing does). Both are evaluated on the same
    examples; the evaluation is keyed by content, so a champion an earlier run evaluated as
    its candidate comes from the cache. ``champion``: a find_champion task already in the pipeline (the
    one training started from), else one is added.
    """
    from aicd.components.evaluation.steps import compare_models, evaluate_model

    candidate_task = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset, model=model), "evaluate")
    candidate_task.set_display_name("evaluate-candidate")
    champion = champion if champion is not None else find_serving_champion(s, platform)
    champion_task = platform.apply(evaluate_model(**s.of(evaluate_model), dataset=dataset,
                                                  model=champion.outputs["champion"]),
                                   "evaluate")
    champion_task.set_display_name("evaluate-champion")
    compare_task = platform.apply(compare_models(**s.of(compare_models),
                                                 candidate_report=candidate_task.outputs["report"],
                                                 champion_report=champion_task.outputs["report"]), "evaluate")
    return candidate_task, champion_task, compare_task


def gate_and_promote(s: SpecParams, platform: Platform, candidate_report, *, model=None, comparison=None,
                     champion_report=None) -> dsl.PipelineTask:
    """gate_candidate -> dsl.If(passed) -> promote_adapter. The gate is cached: it reads only its input
    artifacts (reports, comparison, candidate) and the ``candidates``/``metrics`` sections, and the champion
    it compared comes keyed by the GitOps commit; promote (it writes to Git) is never cached.

    Returns the gate task (outputs ``Output`` (passed), ``digest``, ``blessing``, ``gate_metrics``).
    """
    from aicd.components.delivery.steps import gate_candidate, promote_adapter

    optional = {"candidate": model, "comparison": comparison, "champion_report": champion_report}
    inputs = {k: v for k, v in optional.items() if v is not None}
    gate_task = platform.apply(gate_candidate(**s.of(gate_candidate), candidate_report=candidate_report, **inputs),
                               "deliver")
    # kfp.local resolves a dsl.If only on an output named `Output`: the gate names `passed` so.
    with dsl.If(gate_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition
        promote = {"candidate": model} if model is not None else {}
        promote_task = platform.apply(promote_adapter(**s.of(promote_adapter), blessing=gate_task.outputs["blessing"],
                                                      **promote), "deliver", cache=False)
        roll_out(s.delivery, platform, model_id=gate_task.outputs["digest"], commit=promote_task.output, in_stage=True)
    return gate_task


def roll_out(delivery, platform: Platform, model_id="", commit="", max_intervals=0,
             in_stage: bool = False) -> dsl.PipelineTask:
    """roll_out_canary (never cached: it waits on the cluster and reads Prometheus and Git).

    Started after a promotion, it drives the new canary to promotion or rollback (the first champion
    has nothing to roll out; ``delivery.rollout: external`` leaves it to the rollout pipeline).
    """
    from aicd.components.delivery.steps import roll_out_canary

    return platform.apply(roll_out_canary(delivery=delivery, model_id=model_id, commit=commit,
                                          max_intervals=max_intervals, in_stage=in_stage), "deliver", cache=False)


def deliver_model(s: SpecParams, dataset, model, platform: Platform, champion=None) -> dsl.PipelineTask:
    """Evaluate a trained Model artifact against the serving champion (``champion``: the find_champion
    task training started from, if any), then gate and promote it."""
    candidate_task, champion_task, compare_task = evaluate_against_champion(s, dataset, model, platform, champion)
    return gate_and_promote(s, platform, candidate_task.outputs["report"], model=model,
                            comparison=compare_task.outputs["comparison"],
                            champion_report=champion_task.outputs["report"])
