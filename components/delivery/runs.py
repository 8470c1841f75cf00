"""The delivery steps as plain typed functions (steps.py only parses, calls these and publishes).

The candidate's Model artifact is read once, by
:func:`aicd.components.contracts.read_model_ref`: a model blessed and promoted by its card
digest, or a reference to a base candidate, gated and promoted as that base model in its mode.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.contracts import ModelRef, read_model_ref
from aicd.components.errors import DeliveryError
from aicd.components.spec import Spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """The blessing (docs/contracts.md) and the digest it blesses ('' for a base model)."""

    blessing: dict[str, Any]
    digest: str

    @property
    def passed(self) -> bool:
        return bool(self.blessing["passed"])


def candidate_ref(model_dir: str | Path | None) -> ModelRef:
    """The candidate to gate or promote: its Model artifact, or the spec's first candidate when absent."""
    return read_model_ref(model_dir)


def run_gate_candidate(spec: Spec, candidate_report: str | Path, blessing_path: str | Path,
                       model_dir: str | Path | None = None, comparison: str | Path | None = None,
                       champion_report: str | Path | None = None) -> GateResult:
    """Bless the candidate under ``metrics.gates``: a model by its card digest, or a base candidate, whose
    report must then have evaluated exactly that candidate; the blessing is written to ``blessing_path``."""
    from aicd.components.delivery.gate import gate_candidate, read_json, write_blessing

    ref = candidate_ref(model_dir)
    report = read_json(candidate_report, "report")
    if ref.is_base and model_dir is not None:
        base = spec.candidate(ref.candidate or None)
        evaluated = (report.get("model") or {}).get("uri")
        if evaluated != base.uri:
            raise DeliveryError(f"the report evaluated {evaluated or 'no model'}, but the candidate is base model "
                                f"{base.name} ({base.uri})",
                                "gate the report of exactly the model you want to promote")
    champion = read_json(champion_report, "report").get("model") if champion_report is not None else None
    compared = read_json(comparison, "comparison") if comparison is not None else None
    blessing = gate_candidate(spec, report, compared, ref.digest, champion)
    write_blessing(blessing_path, blessing)
    return GateResult(blessing, ref.digest or "")


def run_promote_adapter(spec: Spec, blessing_path: str | Path, model_dir: str | Path | None = None,
                        model_uri: str = "") -> str:
    """Commit the blessed candidate to the GitOps overlay (canary at the first step); the commit id ('' for none).

    A model is promoted by its files at ``model_uri``; a base-candidate reference (or no artifact: the
    first candidate) as that base model in its mode (a few-shot choice is served with its examples)."""
    from aicd.components.delivery.gate import read_json
    from aicd.components.delivery.gitops import promote_adapter, promote_base_model

    blessed = read_json(blessing_path, "blessing")
    ref = read_model_ref(model_dir, verify=False)
    if model_dir is None:
        result = promote_base_model(spec, blessed)
    elif ref.is_base:
        result = promote_base_model(spec, blessed, ref.candidate or None, ref.mode,
                                    [list(s) for s in ref.shot_examples])
    else:
        result = promote_adapter(spec, blessed, model_dir, model_uri)
    if result.replaced:
        log.warning("%s replaced canary %s in Git (commit %s): that canary's rollout stops and reports it as "
                    "superseded", result.after.canary, result.replaced, (result.commit or "")[:12])
    return result.commit or ""
