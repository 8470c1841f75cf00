"""KFP steps of delivery: gate, promote, analyse the canary (logic in runs.py, gate.py, gitops.py, canary.py).

Each step takes only the spec sections it reads, as dicts. ``gate_candidate`` outputs
whether the gate passed as ``Output`` (and the blessed ``digest``), so pipelines wrap the
promotion in ``dsl.If(gate_task.outputs["Output"] == True)``. The name is on purpose:
kfp.local 2.17 resolves a dsl.If condition only on an output named ``Output``; on any
other name (e.g. ``passed``) it logs "Could not resolve parent input" and silently skips
the branch.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gate_candidate(candidates: list, metrics: dict, candidate_report: Input[Artifact], blessing: Output[Artifact],
                   gate_metrics: Output[Metrics], candidate: Input[Model] = None,
                   comparison: Input[Artifact] = None, champion_report: Input[Artifact] = None
                   ) -> NamedTuple("GateOutputs", Output=bool, digest=str):
    """Bless the candidate: a model artifact (by its card digest), or the base model when ``candidate`` is
    absent or only refers to a base candidate, whose report must then have evaluated that candidate.
    A candidate with the serving champion's files and base is not blessed: it is ``already_serving``
    (in the blessing), so nothing is promoted or rolled out.

    Args:
        candidates: The spec's ``candidates``.
        metrics: The spec's ``metrics`` section (``gates``).
        candidate_report: evaluate_model's report of the candidate.
        candidate: The candidate's Model artifact; absent for the first base candidate.
        comparison: compare_models' paired comparison with the champion.
        champion_report: evaluate_model's report of the champion.
        blessing: Output: the blessing (decision, reasons, the digest it applies to).
        gate_metrics: Output: gate_passed as a metric.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.delivery.runs import run_gate_candidate

    result = run_gate_candidate(step_spec(candidates=candidates, metrics=metrics), candidate_report.path,
                                blessing.path, candidate.path if candidate is not None else None,
                                comparison.path if comparison is not None else None,
                                champion_report.path if champion_report is not None else None)
    blessing.metadata.update({"passed": result.passed, "candidate_digest": result.digest,
                              "already_serving": result.blessing["already_serving"] or "",
                              "reasons": result.blessing["reasons"]})
    gate_metrics.log_metric("gate_passed", float(result.passed))
    outputs = NamedTuple("GateOutputs", Output=bool, digest=str)
    return outputs(result.passed, result.digest)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve_champion_revision(delivery: dict) -> str:
    """The commit the GitOps branch points at now (``git ls-remote``, no clone; never cache): the key that
    lets find_champion cache, since it reads the champion at exactly that commit.

    Args:
        delivery: The spec's ``delivery`` section (``gitops``).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.delivery.revision import champion_revision

    return champion_revision(step_spec(delivery=delivery).delivery)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def find_champion(task: dict, candidates: list, delivery: dict, champion: Output[Model], revision: str = "") -> str:
    """The serving champion in the GitOps branch as a Model artifact for evaluate_model: a copy of its
    adapter or model, or a reference to the base candidate while none serves; its identity ("" for none).

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        delivery: The spec's ``delivery`` section (``gitops``).
        revision: The branch's commit to read the champion at (resolve_champion_revision's): with it the
            result depends only on the parameters and may be cached; '' reads the tip (never cache then).
        champion: Output: the champion as a Model artifact (a copy, or a base-model reference).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.delivery.gitops import write_champion

    found = write_champion(step_spec(task=task, candidates=candidates, delivery=delivery), champion.path, revision)
    champion.metadata.update(model_id=found.model_id, uri=found.model_uri)
    return found.model_id


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_adapter(task: dict, candidates: list, delivery: dict, blessing: Input[Artifact],
                    candidate: Input[Model] = None) -> str:
    """Commit the blessed candidate to the GitOps overlay (canary at the first step); the commit id.

    Args:
        task: The spec's ``task`` section (prompt template).
        candidates: The spec's ``candidates``.
        delivery: The spec's ``delivery`` section (gitops, canary, serving).
        blessing: gate_candidate's blessing.
        candidate: The blessed Model artifact; a base-candidate reference, or absent for the first
            candidate, is promoted as that base model in its mode.
    """
    from aicd.components.contracts import step_spec
    from aicd.components.delivery.runs import run_promote_adapter

    return run_promote_adapter(step_spec(task=task, candidates=candidates, delivery=delivery), blessing.path,
                               candidate.path if candidate is not None else None,
                               candidate.uri if candidate is not None else "")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def roll_out_canary(delivery: dict, evidence: Output[Markdown], decision: Output[Artifact], model_id: str = "",
                    commit: str = "", max_intervals: int = 0, in_stage: bool = False) -> str:
    """Drive the promoted canary to promotion or rollback: wait until ``commit`` is live and Ready, analyse
    Prometheus each interval, step traffic through Git.

    Returns the last action: promote, rollback, champion (the first champion: nothing to roll out), none,
    external (``in_stage`` and ``delivery.rollout: external``), awaiting-merge / done / rolled-back (through
    ``delivery.environments``, stage after stage), or step/wait when ``max_intervals`` ended an undecided
    canary. Every interval's state is in Git, so a retried step resumes.

    Args:
        delivery: The spec's ``delivery`` section (gitops, canary thresholds, sync, environments, prometheus_url).
        model_id: The canary to roll out ('' for the one in Git).
        commit: The promotion's commit (recorded in the decision).
        max_intervals: The most analysis intervals to run; 0 for no limit.
        in_stage: True when a stage pipeline started it right after its promotion.
        evidence: Output: the decision with its figures, queries and thresholds (Markdown, shown in the KFP UI).
        decision: Output: every analysis step as JSON.
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.delivery.canary import step_dict
    from aicd.components.delivery.environments import drive
    from aicd.components.delivery.evidence import render

    section = step_spec(delivery=delivery).delivery
    steps, final, stages, action = [], None, [], "external"
    if not (in_stage and section.rollout == "external"):
        steps, final, stages, action = drive(section, model_id or None, max_intervals or None)
    with open(evidence.path, "w", encoding="utf-8") as fh:
        fh.write(render(section, steps, final, stages, action))
    with open(decision.path, "w", encoding="utf-8") as fh:
        json.dump({"action": action, "promotion_commit": commit, "steps": [step_dict(s) for s in steps],
                   "stages": [vars(s) for s in stages]}, fh, indent=2)
    decision.metadata.update({"action": action, "intervals": len(steps)})
    return action
