"""Where preference tuning starts: the serving champion's adapter, or the base model.

The finetune and continuous pipelines find the champion first (find_champion) and hand it to
choose_start, which passes it on to train_adapter only when one of the methods that run is dpo
(the others always start from the base, and a champion that moved must not change their cache
key). train_adapter's dpo method then continues the champion's adapter when it is a causal-LM
adapter on the same base (same weights digest); anything else (a base-model reference, a full
model, an adapter on another base or for another task) starts a fresh LoRA on the base, and says
why. The card's hyperparameters record ``start: base`` or ``start: champion <digest>``.
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from aicd.components.cards import atomic_dir
from aicd.components.spec import Spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartPoint:
    """The adapter to continue (None: a fresh LoRA on the base) and the card's ``start`` entry."""

    adapter: Path | None
    record: str
    reason: str = ""


BASE = StartPoint(None, "base", "no champion adapter to start from")


def choose_start(spec: Spec, methods: list[str], champion_dir: str | Path | None, out_dir: str | Path) -> str:
    """Write the Model artifact train_adapter starts from at ``out_dir``: a copy of the champion when one
    of ``methods`` (names in ``training.methods``) is dpo, else a reference to the base; what it wrote."""
    from aicd.components.contracts import read_model_ref
    from aicd.components.models import BASE_MODEL_REF

    kinds = {m.name: m.method for m in spec.training.methods}
    preference = [name for name in methods if kinds.get(name) == "dpo"]
    ref = read_model_ref(champion_dir) if champion_dir is not None else None
    with atomic_dir(out_dir) as tmp:
        if preference and ref is not None and not ref.is_base:
            shutil.copytree(Path(champion_dir), tmp, dirs_exist_ok=True)
            log.info("%s start from the champion %s (if it fits their base)", ", ".join(preference), ref.digest)
            return f"champion {ref.digest}"
        (tmp / BASE_MODEL_REF).write_text(json.dumps({"candidate": ""}, sort_keys=True) + "\n", encoding="utf-8")
    log.info("training starts from the base model (%s)",
             "no dpo method runs" if not preference else "no champion adapter serves")
    return "base"


def start_point(start: str | Path | None, base_uri: str, base_digest: str) -> StartPoint:
    """Whether a dpo method continues the Model artifact ``start`` (verified) on the base ``base_uri``
    whose weights digest is ``base_digest``, or starts from the base; the reason is logged."""
    from aicd.components.cards import read_card
    from aicd.components.contracts import read_model_ref

    ref = read_model_ref(start) if start is not None else None
    if ref is None or ref.is_base:
        return BASE
    card = read_card(start)
    what = f"the champion {ref.digest}"
    if card.get("kind") != "adapter" or card.get("task", "causal-lm") != "causal-lm":
        reason = (f"{what} is a {card.get('task', 'causal-lm')} {card.get('kind')} ({card.get('method')}), not a "
                  "causal-LM adapter that DPO can continue")
    elif card.get("base_digest") != base_digest:
        reason = (f"{what} is an adapter on another base ({card.get('base_model')}, weights "
                  f"{card.get('base_digest')}) than {base_uri} (weights {base_digest})")
    else:
        log.info("dpo continues %s (%s on %s)", what, card.get("method"), base_uri)
        return StartPoint(Path(start), f"champion {ref.digest}")
    log.warning("%s: dpo starts from the base model %s instead", reason, base_uri)
    return StartPoint(None, "base", reason)


def load_start(uri: str, start: str | Path | None, digest: str | None = None):
    """(model, tokenizer, local dir, StartPoint): the base model ``uri`` (``digest``: its pin) with the
    champion adapter ``start`` loaded as trainable when it fits (:func:`start_point`), else the bare base."""
    from peft import PeftModel

    from aicd.components.models import load_causal_lm
    from aicd.components.training.runtime import base_digest

    model, tokenizer, model_dir = load_causal_lm(uri, digest=digest)
    point = start_point(start, uri, base_digest(model_dir))
    if point.adapter is None:
        return model, tokenizer, model_dir, point
    return PeftModel.from_pretrained(model, str(point.adapter), is_trainable=True), tokenizer, model_dir, point
