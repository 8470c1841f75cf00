"""The gate: bless one candidate digest, or refuse it with reasons (docs/design.md section 6.1).

Inputs follow docs/contracts.md: the candidate's evaluation report, the paired
comparison with the champion (``compare_models``; with no champion yet, the
comparison with the base model's report), and the digest of the artifact that was
evaluated. The blessing names that digest, so a different artifact can never ride
on it (:func:`aicd.components.delivery.gitops.promote_adapter` checks it).
"""

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_write_text, read_verified_json, write_card
from aicd.components.errors import DeliveryError, IntegrityError
from aicd.components.evaluation.trivial import BASELINES
from aicd.components.spec import CLASSIFICATION_METRICS, METRICS, Spec

log = logging.getLogger(__name__)
BLESSING = "blessing.json"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def model_id(model: dict[str, Any] | None) -> str | None:
    """The identity of a served model (a report's ``model``): its artifact digest, ``base:<uri>`` for a
    bare base model, or ``base:<uri>#<mode>`` for one evaluated with few-shot examples (the report
    counts the shots but does not hold them, so the hash of ``base:<uri>#<mode>:<hash>``, the identity
    in Git, is left out; :func:`aicd.components.delivery.isvc.same_model` matches the two)."""
    if not model:
        return None
    if model.get("digest"):
        return str(model["digest"])
    if model.get("uri"):
        shots = model.get("shots")
        if isinstance(shots, int) and not isinstance(shots, bool) and shots > 0 and model.get("mode"):
            return f"base:{model['uri']}#{model['mode']}"
        return f"base:{model['uri']}"
    return None


def already_serving(candidate: dict[str, Any] | None, champion: dict[str, Any] | None) -> str | None:
    """The champion's digest when the candidate (a report's ``model``) is the model the champion is: the
    same card digest, or the same ``content_digest`` (files and base,
    :func:`aicd.components.cards.model_content_digest`), as when the same adapter is trained again
    and only its timing fields differ. None otherwise, and always for a base model (no digest) or a
    report made before reports carried ``content_digest``.
    """
    if not candidate or not champion or not champion.get("digest"):
        return None
    same_card = candidate.get("digest") == champion["digest"]
    content = candidate.get("content_digest")
    return str(champion["digest"]) if same_card or (content and content == champion.get("content_digest")) else None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _completeness(spec: Spec, report: dict[str, Any]) -> list[Check]:
    needed = set(spec.metrics.gates.thresholds) | {spec.metrics.primary}
    missing = sorted(m for m in needed if not isinstance(report["metrics"].get(m), dict))
    checks = [Check("complete", report.get("complete") is True,
                    "the evaluation report is complete" if report.get("complete") is True
                    else "the evaluation report is marked incomplete; evaluate the whole split again")]
    if missing:
        checks.append(Check("metrics-present", False,
                            f"the report lacks gated metric(s) {', '.join(missing)}; evaluate them"))
    if report.get("light"):
        checks.append(Check("full-evaluation", False, "the report is a light evaluation (no behavioural checks, "
                            "probe or latency: made to choose between methods); evaluate the candidate in full"))
    return checks


def _thresholds(spec: Spec, metrics: dict[str, Any]) -> list[Check]:
    checks = []
    for metric, bound in sorted(spec.metrics.gates.thresholds.items()):
        if not isinstance(metrics.get(metric), dict):
            continue  # reported by _completeness
        value = float(metrics[metric]["value"])
        higher = METRICS[metric]
        ok = value >= bound if higher else value <= bound
        op = ">=" if higher else "<="
        checks.append(Check(f"threshold:{metric}", ok,
                            f"{metric} {_fmt(value)} {'' if ok else 'not '}{op} {_fmt(bound)} (threshold)"))
    return checks


def _paired(spec: Spec, comparison: dict[str, Any] | None) -> list[Check]:
    gates = spec.metrics.gates
    wanted = dict(gates.non_inferiority)
    if not wanted and not gates.require_improvement and not gates.superiority:
        return []
    if comparison is None:
        return [Check("comparison", False, "the gate needs a paired comparison with the champion (or the base model) "
                                           "for its non-inferiority/superiority gates; none was given")]
    checks = []
    if abs(float(comparison.get("confidence", 0.0)) - gates.confidence) > 1e-9:
        checks.append(Check("confidence", False, f"the comparison used confidence {comparison.get('confidence')}, "
                                                 f"the spec asks {gates.confidence}; compare again"))
    table = comparison.get("metrics", {})
    for metric, margin in sorted(wanted.items()):
        row = table.get(metric)
        if not isinstance(row, dict):
            checks.append(Check(f"non-inferiority:{metric}", False, f"the comparison lacks {metric}"))
            continue
        higher = METRICS[metric]
        bound = float(row["low"] if higher else row["high"])
        ok = bound >= -margin if higher else bound <= margin
        side = "lower" if higher else "upper"
        checks.append(Check(f"non-inferiority:{metric}", ok,
                            f"{metric} diff {_fmt(row['diff'])}, {side} bound {_fmt(bound)} "
                            f"{'within' if ok else 'beyond'} the margin {_fmt(margin)}"))
    checks += [_superiority(metric, table.get(metric), margin) for metric, margin in sorted(gates.superiority.items())]
    if gates.require_improvement:
        checks.append(_improvement(spec.metrics.primary, table.get(spec.metrics.primary)))
    return checks


def _superiority(metric: str, row: dict[str, Any] | None, margin: float) -> Check:
    """The whole paired interval lies on the better side of ``margin`` (candidate minus champion)."""
    if not isinstance(row, dict):
        return Check(f"superiority:{metric}", False, f"the comparison lacks {metric}")
    higher = METRICS[metric]
    bound = float(row["low"] if higher else row["high"])
    ok = bound > margin if higher else bound < -margin
    side, op = ("lower", ">") if higher else ("upper", "<")
    return Check(f"superiority:{metric}", ok,
                 f"{metric} diff {_fmt(row['diff'])} [{_fmt(row['low'])}, {_fmt(row['high'])}]: {side} bound "
                 f"{'' if ok else 'not '}{op} {_fmt((margin if higher else -margin) + 0.0)} "
                 f"({'significantly better' if ok else 'no significant improvement'})")


def _baselines(spec: Spec, report: dict[str, Any]) -> list[Check]:
    """A classifier must beat every trivial baseline on the primary metric with its interval."""
    if report.get("task") != "text-classification":
        return []
    metric = spec.metrics.primary if spec.metrics.primary in CLASSIFICATION_METRICS else "macro_f1"
    found = report.get("baselines") or {}
    checks = []
    for name in BASELINES:
        row = ((found.get(name) or {}).get("vs_candidate") or {}).get(metric)
        if not isinstance(row, dict):
            checks.append(Check(f"baseline:{name}", False, f"the report has no {name} baseline on {metric}; "
                                                           "evaluate the candidate again with this aicd version"))
            continue
        ok = float(row["low"]) > 0
        checks.append(Check(f"baseline:{name}", ok,
                            f"{metric} {_fmt(row['candidate'])} vs the {name} baseline's {_fmt(row['baseline'])}: "
                            f"diff {_fmt(row['diff'])} [{_fmt(row['low'])}, {_fmt(row['high'])}] "
                            f"{'beats it' if ok else 'does not beat it significantly'}"))
    return checks


def _improvement(metric: str, row: dict[str, Any] | None) -> Check:
    if not isinstance(row, dict):
        return Check(f"improvement:{metric}", False, f"the comparison lacks the primary metric {metric}")
    higher = METRICS[metric]
    ok = float(row["low"]) > 0 if higher else float(row["high"]) < 0
    return Check(f"improvement:{metric}", ok,
                 f"{metric} diff {_fmt(row['diff'])} [{_fmt(row['low'])}, {_fmt(row['high'])}] "
                 f"{'is' if ok else 'is not'} a significant improvement")


def _behaviour(spec: Spec, report: dict[str, Any]) -> list[Check]:
    results = report.get("behavioural") or {}
    checks = []
    for wanted in spec.metrics.behavioural:
        got = results.get(wanted.name)
        if not isinstance(got, dict):
            checks.append(Check(f"behavioural:{wanted.name}", False,
                                f"behavioural check {wanted.name!r} is missing from the report"))
            continue
        checks.append(Check(f"behavioural:{wanted.name}", got.get("passed") is True,
                            f"behavioural {wanted.name} pass rate {_fmt(got.get('pass_rate', 0.0))} "
                            f"(min {_fmt(got.get('min_pass_rate', wanted.min_pass_rate))})"))
    for name, got in sorted(results.items()):
        if name not in {b.name for b in spec.metrics.behavioural} and not got.get("passed", False):
            checks.append(Check(f"behavioural:{name}", False,
                                f"behavioural check {name!r} failed"
                                + (f": {got['detail']}" if got.get("detail") else "")))
    probe = report.get("probe")
    if spec.metrics.probe_prompts and not isinstance(probe, dict):
        checks.append(Check("probe", False, "the spec lists probe prompts but the report has no probe result"))
    elif isinstance(probe, dict):
        checks.append(Check("probe", probe.get("passed") is True,
                            f"probe: {probe.get('changed')}/{probe.get('total')} prompts changed"))
    return checks


def _validate(report: Any, candidate_digest: str | None) -> None:
    if not isinstance(report, dict) or report.get("kind") != "evaluation" or not isinstance(
            report.get("metrics"), dict):
        raise DeliveryError("the candidate report is not an aicd evaluation report (kind 'evaluation' with metrics)",
                            "pass the report.json the evaluation step wrote")
    evaluated = (report.get("model") or {}).get("digest")
    if evaluated != candidate_digest:
        raise DeliveryError(f"the report evaluated {evaluated or 'the base model'}, but the candidate is "
                            f"{candidate_digest or 'the base model'}",
                            "gate the report of exactly the artifact you want to promote")


def _summary(spec: Spec, report: dict[str, Any], comparison: dict[str, Any] | None) -> dict[str, Any]:
    primary = spec.metrics.primary
    out: dict[str, Any] = {"primary": primary, "n": report.get("n"),
                           "candidate": report["metrics"].get(primary)}
    if comparison and isinstance(comparison.get("metrics", {}).get(primary), dict):
        out["comparison"] = comparison["metrics"][primary]
    baselines = {name: (b.get("vs_candidate") or {}).get(primary)
                 for name, b in (report.get("baselines") or {}).items()}
    if any(baselines.values()):
        out["baselines"] = baselines
    return out


def gate_candidate(spec: Spec, candidate_report: dict[str, Any], comparison: dict[str, Any] | None,
                   candidate_digest: str | None, champion: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the spec's gates; return the blessing (docs/contracts.md) for ``candidate_digest``.

    ``candidate_digest`` is the artifact card digest, or None for a bare base model.
    ``champion`` is the ``model`` section of the report the comparison was made against
    (the serving champion, or the base model when there is none yet).
    """
    _validate(candidate_report, candidate_digest)
    checks = (_completeness(spec, candidate_report) + _thresholds(spec, candidate_report["metrics"])
              + _paired(spec, comparison) + _baselines(spec, candidate_report) + _behaviour(spec, candidate_report))
    passed = all(c.passed for c in checks)
    failed = [c.detail for c in checks if not c.passed]
    reasons = failed if failed else [c.detail for c in checks] or ["no gates configured"]
    serving = already_serving(candidate_report.get("model"), champion)
    if serving:  # a copy of the champion: nothing to promote, whatever the paired checks say (diff 0)
        how = ("the candidate is that very artifact" if candidate_digest == serving else
               f"the candidate {candidate_digest} has its files and base; only how it was made differs, e.g. "
               "its training time")
        passed, reasons = False, [f"already serving {serving}: nothing to promote ({how})"]
    blessing = {
        "passed": passed,
        "already_serving": serving,
        "reasons": reasons,
        "candidate_digest": candidate_digest,
        "candidate": candidate_report.get("model") or {},
        "champion": champion,
        "checks": [asdict(c) for c in checks],
        "summary": _summary(spec, candidate_report, comparison),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    verdict = "passed" if passed else "already serving" if serving else "FAILED"
    log.info("gate %s for %s: %s", verdict, candidate_digest, "; ".join(blessing["reasons"]))
    return blessing


def write_blessing(out_dir: str | Path, blessing: dict[str, Any]) -> Path:
    """Write ``blessing.json`` and a ``blessing`` card over the folder (the promotion verifies it)."""
    path = Path(out_dir) / BLESSING
    atomic_write_text(path, json.dumps(blessing, indent=2, sort_keys=True) + "\n")
    write_card(out_dir, "blessing", candidate_digest=blessing.get("candidate_digest"), passed=blessing.get("passed"))
    return path


# What each document the gate and the promotion read is, and the card kind of the folder that holds it.
KINDS = {"report": ("report.json", "evaluation"), "comparison": ("comparison.json", "comparison"),
         "blessing": (BLESSING, "blessing")}


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A report, comparison or blessing written by another step, after its folder's card verified every
    file and field (a tampered or card-less document is refused with IntegrityError)."""
    name, kind = KINDS[what]
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise DeliveryError(f"the {what} {path} does not exist", f"pass the {what} the previous step wrote")
    try:
        data = read_verified_json(path.parent, path.name, kind=kind)
    except IntegrityError as err:
        raise IntegrityError(f"refusing the {what} {path}: {err.message}",
                             f"pass the {what} folder exactly as the aicd step wrote it (with its card.json), "
                             f"or run that step again; never edit a {what}") from None
    if not isinstance(data, dict):
        raise DeliveryError(f"the {what} {path} is not a JSON object", f"produce the {what} again")
    return data
