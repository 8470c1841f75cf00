"""The pooling a sentence-transformers encoder was trained with, kept when it becomes a classifier.

``AutoModelForSequenceClassification`` on a BERT-style encoder feeds its head the *pooler*: a
dense layer and tanh over the [CLS] vector. A sentence-transformers checkpoint (all-MiniLM,
all-mpnet, e5, ...) was trained to be read as the mean of its token vectors instead
(``1_Pooling/config.json``); its pooler weights were never trained for that objective, and
its [CLS] vector alone carries little of the sentence. :func:`apply_pooling` swaps the pooler
for a masked mean of the token vectors, so the head (and a linear probe) sees the embedding
the encoder was trained to produce. The choice is written into the model's config
(``aicd_pooling``), so full-weights artifacts saved from it load with the same pooling.
"""

import json
import logging
import threading
from pathlib import Path

from aicd.components.errors import ModelError

log = logging.getLogger(__name__)
CONFIG_KEY = "aicd_pooling"
POOLINGS = ("mean",)


def declared_pooling(model_dir: str | Path) -> str | None:
    """``"mean"`` when a sentence-transformers folder's Pooling module (``1_Pooling/config.json``, or
    the folder ``modules.json`` names) uses mean pooling, else None (the model's own head)."""
    folder = Path(model_dir)
    pooling_dir = folder / "1_Pooling"
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except (OSError, ValueError) as err:
            raise ModelError(f"{modules} is not valid JSON ({err})", "restore the model folder's modules.json") from err
        pooling = [m for m in entries if str(m.get("type", "")).endswith("Pooling")]
        pooling_dir = folder / pooling[0]["path"] if pooling and pooling[0].get("path") else pooling_dir
    path = pooling_dir / "config.json"
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{path} is not valid JSON ({err})", "restore the model folder's pooling config") from err
    return "mean" if settings.get("pooling_mode_mean_tokens") else None


# The attention mask of the encoder forward running on this thread, for the mean pooler to read. Kept
# outside the module so copies of it (peft's wrappers deep-copy modules) read the same mask.
_MASK = threading.local()


def mean_pooler():
    """A parameter-free module: the mean of the token vectors where the attention mask is 1."""
    import torch

    class MeanPooler(torch.nn.Module):
        def forward(self, hidden_states):
            mask, _MASK.value = getattr(_MASK, "value", None), None
            if mask is None or mask.shape[:2] != hidden_states.shape[:2]:
                return hidden_states.mean(dim=1)
            weights = mask.to(hidden_states.dtype).unsqueeze(-1)
            return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    return MeanPooler()


def _stash_mask(_module, args, kwargs) -> None:
    mask = kwargs.get("attention_mask")
    _MASK.value = args[1] if mask is None and len(args) > 1 else mask


def _pooled_encoder(model):
    """The encoder whose pooler feeds the head (BERT, MiniLM, ...), or None when the head reads no
    pooler (RoBERTa, MPNet, DistilBERT take the [CLS] vector inside their own head)."""
    encoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return encoder if getattr(encoder, "pooler", None) is not None else None


def apply_pooling(model, pooling: str | None, where: str = "model", *, declared: bool = False):
    """Give ``model`` (a ``*ForSequenceClassification``) the named pooling; None leaves it as it is.

    ``declared``: the pooling comes from the model folder rather than an aicd artifact, so an
    architecture without a pooler keeps its own head (logged) instead of failing.
    """
    if pooling is None:
        return model
    if pooling not in POOLINGS:
        raise ModelError(f"{where} asks for pooling {pooling!r}, which aicd does not know",
                         f"use one of {', '.join(POOLINGS)}")
    encoder = _pooled_encoder(model)
    if encoder is None:
        if declared:
            log.warning("%s declares %s pooling, but %s's head reads no pooler: it keeps its own", where, pooling,
                        type(model).__name__)
            return model
        raise ModelError(f"{where} asks for {pooling} pooling, but {type(model).__name__} has no pooler to replace",
                         "use a BERT-style encoder (BERT, MiniLM), or remove `aicd_pooling` from its config.json")
    encoder.pooler = mean_pooler()
    encoder.register_forward_pre_hook(_stash_mask, with_kwargs=True)
    setattr(model.config, CONFIG_KEY, pooling)
    log.info("%s: %s pooling of the token vectors feeds the classification head", where, pooling)
    return model
