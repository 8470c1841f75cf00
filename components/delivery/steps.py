"""KFP steps of delivery: gate, promote, analyse the canary (logic in gate.py, gitops.py, canary.py).

``gate_candidate`` outputs whether the gate passed as ``Output`` (and the blessed
``digest``), so pipelines wrap the promotion in ``dsl.If(gate_task.outputs["Output"] == True)``.
The name is on purpose: kfp.local 2.17 resolves a dsl.If condition only on an output
named ``Output``; on any other name (e.g. ``passed``) it logs "Could not resolve parent
input" and silently skips the branch.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from aicd.components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def gate_candidate(spec: dict, candidate_report: Input[Artifact], blessing: Output[Artifact],
                   metrics: Output[Metrics], candidate: Input[Model] = None, comparison: Input[Artifact] = None,
                   champion_report: Input[Artifact] = None) -> NamedTuple("GateOutputs", Output=bool, digest=str):
    """Bless the candidate: an adapter/model artifact (by its card digest), or the base model when
    ``candidate`` is absent or only refers to a base candidate (``BASE_MODEL_REF``, as select_candidate
    writes for a zero-/few-shot choice), whose report must then have evaluated that candidate."""
    from aicd.components.cards import verify_card
    from aicd.components.delivery.gate import gate_candidate as gate, read_json, write_blessing
    from aicd.components.errors import DeliveryError
    from aicd.components.models import base_model_ref
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    ref = base_model_ref(candidate.path) if candidate is not None else None
    digest = verify_card(candidate.path)["digest"] if candidate is not None and ref is None else None
    report = read_json(candidate_report.path, "report")
    if ref is not None:
        base = parsed.candidate(ref or None)
        evaluated = (report.get("model") or {}).get("uri")
        if evaluated != base.uri:
            raise DeliveryError(f"the report evaluated {evaluated or 'no model'}, but the candidate is base model "
                                f"{base.name} ({base.uri})",
                                "gate the report of exactly the model you want to promote")
    champion = read_json(champion_report.path, "report").get("model") if champion_report is not None else None
    result = gate(parsed, report, read_json(comparison.path, "comparison") if comparison is not None else None,
                  digest, champion)
    write_blessing(blessing.path, result)
    blessing.metadata.update({"passed": result["passed"], "candidate_digest": digest or "",
                              "reasons": result["reasons"]})
    metrics.log_metric("gate_passed", float(result["passed"]))
    outputs = NamedTuple("GateOutputs", Output=bool, digest=str)
    return outputs(result["passed"], digest or "")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def find_champion(spec: dict, champion: Output[Model]) -> str:
    """The serving champion in the GitOps branch as a Model artifact for evaluate_model: a copy of its
    adapter or model, or a reference to the base candidate while none serves; its identity ("" for none)."""
    from aicd.components.delivery.gitops import write_champion
    from aicd.components.spec import parse_spec

    found = write_champion(parse_spec(spec), champion.path)
    champion.metadata.update(model_id=found.model_id, uri=found.model_uri)
    return found.model_id


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_adapter(spec: dict, blessing: Input[Artifact], candidate: Input[Model] = None) -> str:
    """Commit the blessed candidate to the GitOps overlay (canary at the first step); the commit id.

    A ``candidate`` that only refers to a base candidate (``BASE_MODEL_REF``) is promoted as that
    base model, in the reference's mode (a few-shot choice is served with its examples), as is the
    first candidate when ``candidate`` is absent."""
    from aicd.components.delivery.gate import read_json
    from aicd.components.delivery.gitops import promote_adapter as promote, promote_base_model
    from aicd.components.evaluation.leaderboard import read_base_ref
    from aicd.components.spec import parse_spec

    parsed = parse_spec(spec)
    blessed = read_json(blessing.path, "blessing")
    ref = read_base_ref(candidate.path) if candidate is not None else None
    if candidate is None:
        result = promote_base_model(parsed, blessed)
    elif ref is not None:
        result = promote_base_model(parsed, blessed, ref["candidate"] or None, ref["mode"], ref["shot_examples"])
    else:
        result = promote(parsed, blessed, candidate.path, candidate.uri)
    return result.commit or ""


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def roll_out_canary(delivery: dict, evidence: Output[Markdown], decision: Output[Artifact], model_id: str = "",
                    commit: str = "", max_intervals: int = 0, in_stage: bool = False) -> str:
    """Drive the promoted canary to promotion or rollback: wait until ``commit`` is live and Ready, analyse
    Prometheus each interval, step traffic through Git. The last action: promote, rollback, champion (the
    first champion: nothing to roll out), none, external (``in_stage`` and ``delivery.rollout: external``),
    awaiting-merge / done / rolled-back (through ``delivery.environments``, stage after stage), or step/wait
    when ``max_intervals`` (0: no limit) ended an undecided canary. Every interval's state is
    in Git, so a retried step resumes; ``evidence`` is the decision with its figures, queries and thresholds.
    ``delivery`` is the spec's delivery section (a whole spec is accepted until every pipeline passes sections).
    """
    import json

    from aicd.components.delivery.canary import step_dict
    from aicd.components.delivery.environments import drive
    from aicd.components.delivery.evidence import render
    from aicd.components.spec import DeliverySpec

    section = DeliverySpec.model_validate(delivery["delivery"] if "gitops" not in delivery else delivery)
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
