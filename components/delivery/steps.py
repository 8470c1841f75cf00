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
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gate_candidate(candidates: list, metrics: dict, candidate_report: Input[Artifact], blessing: Output[Artifact],
                   gate_metrics: Output[Metrics], candidate: Input[Model] = None,
                   comparison: Input[Artifact] = None, champion_report: Input[Artifact] = None
                   ) -> NamedTuple("GateOutputs", Output=bool, digest=str):
    """Bless the candidate: a model artifact (by its card digest), or the base model when ``candidate`` is
    absent or only refers to a base candidate, whose report must then have evaluated that candidate.

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
                              "reasons": result.blessing["reasons"]})
    gate_metrics.log_metric("gate_passed", float(result.passed))
    outputs = NamedTuple("GateOutputs", Output=bool, digest=str)
    return outputs(result.passed, result.digest)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def find_champion(task: dict, candidates: list, delivery: dict, champion: Output[Model]) -> str:
    """The serving champion in the GitOps branch as a Model artifact for evaluate_model: a copy of its
    adapter or model, or a reference to the base candidate while none serves; its identity ("" for none).

    Args:
        task: The spec's ``task`` section.
        candidates: The spec's ``candidates``.
        delivery: The spec's ``delivery`` section (``gitops``).
        champion: Output: the champion as a Model artifact (a copy, or a base-model reference).
    """
    from aicd.components.contracts import step_spec
    from aicd.components.delivery.gitops import write_champion

    found = write_champion(step_spec(task=task, candidates=candidates, delivery=delivery), champion.path)
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
def analyse_canary(delivery: dict, decision: Output[Artifact], max_intervals: int = 24) -> str:
    """Analyse the canary in Git until promoted or rolled back, at most ``max_intervals`` (0: no limit).

    Returns the last action: promote, rollback, or step/wait when the limit ended an undecided canary.

    Args:
        delivery: The spec's ``delivery`` section (gitops, canary thresholds, prometheus_url).
        max_intervals: The most analysis intervals to run; 0 for no limit.
        decision: Output: the last analysis step as JSON.
    """
    import json

    from aicd.components.contracts import step_spec
    from aicd.components.delivery.canary import run_canary, step_dict

    step = run_canary(step_spec(delivery=delivery), max_intervals=max_intervals or None)
    with open(decision.path, "w", encoding="utf-8") as fh:
        json.dump(step_dict(step), fh, indent=2)
    decision.metadata.update({"action": step.action, "decision": step.interval.decision})
    return step.action
