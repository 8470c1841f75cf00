"""Load base models and tokenizers the one safe way: safetensors, no remote code.

Every step that needs a model goes through these functions, so loading behaves the
same in data profiling, evaluation, training and serving.
"""

import logging
from pathlib import Path

from aicd.components.errors import ModelError
from aicd.components.uris import resolve_model

log = logging.getLogger(__name__)
_SAFE = {"trust_remote_code": False, "use_safetensors": True}


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_causal_lm(uri: str, dtype: str = "float32"):
    """(model, tokenizer, local_dir) of a causal LM given by any model URI."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = resolve_model(uri)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), **_SAFE)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load causal LM from {uri!r} ({model_dir}): {err}",
                         "point the URI at a transformers causal-LM folder with safetensors weights") from err
    model.eval()
    return model, load_tokenizer(model_dir), model_dir


def load_classifier(uri: str, labels: list[str]):
    """(model, tokenizer, local_dir) of a sequence classifier with the task's labels.

    A plain encoder gets a fresh classification head sized to ``labels``; a model
    that already has a head must have exactly these labels.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = resolve_model(uri)
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    existing = getattr(config, "id2label", None) or {}
    trained_head = getattr(config, "architectures", None) and any(
        a.endswith("ForSequenceClassification") for a in config.architectures)
    if trained_head and sorted(existing.values()) != sorted(labels):
        raise ModelError(f"model {uri!r} has labels {sorted(existing.values())}, the task has {sorted(labels)}",
                         "use a model trained for these labels, or a plain encoder to train a new head")
    id2label = {i: name for i, name in enumerate(labels)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=len(labels), id2label=id2label,
            label2id={v: k for k, v in id2label.items()}, **_SAFE)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load classifier from {uri!r} ({model_dir}): {err}",
                         "point the URI at a transformers encoder folder with safetensors weights") from err
    model.eval()
    return model, load_tokenizer(model_dir), model_dir


def format_prompt(tokenizer, instruction: str, template: str | None = None, system: str | None = None) -> str:
    """The text a causal LM sees for one instruction: the spec's template or the chat template."""
    if template is not None:
        return template.format(instruction=instruction)
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": instruction}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{instruction}\n"
