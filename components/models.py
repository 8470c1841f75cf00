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


def task_tokenizer(tokenizer, task, saved: bool = False):
    """``tokenizer`` as the task reads text, changed in its backend so that ``save_pretrained`` writes it into
    ``tokenizer.json`` and whatever loads a trained model's tokenizer (evaluation, serving) reads text as
    training did: with ``task.lowercase`` a ``Lowercase`` normalizer after its own (none is added to a
    tokenizer that lower-cases already); with ``task.text_template`` the template's words around every text
    (:func:`add_text_template`). ``saved``: the tokenizer will be saved with a trained model, so a template
    it would lose on loading is refused."""
    lowercase, template = getattr(task, "lowercase", False), getattr(task, "text_template", None)
    if not (lowercase or template):
        return tokenizer
    if not getattr(tokenizer, "is_fast", False):
        field = "task.lowercase" if lowercase else "task.text_template"
        raise ModelError(f"`{field}` needs a fast (Rust) tokenizer; {type(tokenizer).__name__} is not one",
                         f"use a model folder with a tokenizer.json, or remove `{field}`")
    if lowercase:
        from tokenizers import normalizers

        backend = tokenizer.backend_tokenizer
        current = backend.normalizer
        if current is None or current.normalize_str("Ab") != "ab":
            backend.normalizer = normalizers.Lowercase() if current is None else normalizers.Sequence(
                [current, normalizers.Lowercase()])
    if template:
        add_text_template(tokenizer, template, saved)
    return tokenizer


# The names of a text template's two pieces in a tokenizer's post-processor.
TEMPLATE_PIECES = ("<aicd-text-prefix>", "<aicd-text-suffix>")


def add_text_template(tokenizer, template: str, saved: bool = False) -> None:
    """Put ``template``'s words (``{text}`` once) around every single text the fast ``tokenizer`` encodes, as
    token ids its post-processor adds (inside the model's own special tokens: ``[CLS] prefix text suffix
    [SEP]``). Added tokens count against truncation, so a long text is shortened and the template kept
    whole. A tokenizer that carries a template already keeps it (a trained model's is never replaced).
    ``saved``: check that the template survives ``save_pretrained`` and loading (some tokenizer classes
    rebuild their post-processor when loaded) and refuse the template if not."""
    import json

    from tokenizers import Tokenizer

    backend = tokenizer.backend_tokenizer
    full = json.loads(backend.to_str())
    state = full.get("post_processor")
    if state and any(name in json.dumps(state) for name in TEMPLATE_PIECES):
        return
    pieces = {}
    # format, not split: a template's escaped braces ({{ }}) are single braces in what the model reads
    for name, words in zip(TEMPLATE_PIECES, template.format(text="\0").split("\0")):
        if words:
            ids = tokenizer(words, add_special_tokens=False, padding=False, truncation=False)["input_ids"]
            pieces[name] = {"id": name, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}
    full["post_processor"] = _with_template(state, pieces)
    original = backend.post_processor
    backend.post_processor = Tokenizer.from_str(json.dumps(full)).post_processor
    if not saved:
        return
    probe = tokenizer("a probe")["input_ids"]
    if _reloaded(tokenizer)("a probe")["input_ids"] != probe:
        backend.post_processor = original
        raise ModelError(f"`task.text_template` cannot be carried by this model's tokenizer "
                         f"({type(tokenizer).__name__}): its class rebuilds the post-processor when loaded, so "
                         "evaluation and serving would read texts without the template",
                         "train a decoder with it (its head reads the last token, where a template matters), "
                         "or put the words into the data's text instead")


def _with_template(state: dict | None, pieces: dict[str, dict]) -> dict:
    """A serialised post-processor that also puts ``pieces`` (prefix, suffix) around the first sequence: merged
    into its TemplateProcessing (alone or inside a Sequence), or after a ByteLevel one."""
    def wrap(sequence: list[dict]) -> list[dict]:
        out = []
        for item in sequence:
            first = item.get("Sequence", {}).get("id") == "A"
            kind = {"type_id": item.get("Sequence", {}).get("type_id", 0)}
            out += [{"SpecialToken": {"id": TEMPLATE_PIECES[0], **kind}}] * (first and TEMPLATE_PIECES[0] in pieces)
            out.append(item)
            out += [{"SpecialToken": {"id": TEMPLATE_PIECES[1], **kind}}] * (first and TEMPLATE_PIECES[1] in pieces)
        return out

    def merged(template: dict | None) -> dict:
        template = template or {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                         {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}}
        return {**template, "single": wrap(template["single"]), "pair": wrap(template["pair"]),
                "special_tokens": {**template.get("special_tokens", {}), **pieces}}

    kind = (state or {}).get("type")
    if state is None or kind == "TemplateProcessing":
        return merged(state)
    if kind == "ByteLevel":
        return {"type": "Sequence", "processors": [state, merged(None)]}
    if kind == "Sequence":
        at = [i for i, p in enumerate(state["processors"]) if p.get("type") == "TemplateProcessing"]
        if len(at) <= 1:
            processors = list(state["processors"])
            if at:
                processors[at[0]] = merged(processors[at[0]])
            else:
                processors.append(merged(None))
            return {**state, "processors": processors}
    raise ModelError(f"`task.text_template` cannot be added to this tokenizer: its post-processor ({kind}) adds "
                     "its own tokens in a way aicd does not merge a template into",
                     "put the words into the data's text instead, or remove `task.text_template`")


def _reloaded(tokenizer):
    """``tokenizer`` saved and loaded again, as evaluation and serving will load it."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def load_causal_lm(uri: str, dtype: str = "float32", digest: str | None = None):
    """(model, tokenizer, local_dir) of a causal LM given by any model URI (``digest``: its pin)."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = resolve_model(uri, digest)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), **_SAFE)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load causal LM from {uri!r} ({model_dir}): {err}",
                         "point the URI at a transformers causal-LM folder with safetensors weights") from err
    model.eval()
    return model, load_tokenizer(model_dir), model_dir


# load_classifier's default pooling: the one the model folder declares.
AUTO = "auto"


def load_classifier(uri: str, labels: list[str], digest: str | None = None, pooling: str | None = AUTO,
                    head_seed: int = 0):
    """(model, tokenizer, local_dir) of a sequence classifier with the task's labels.

    A plain encoder gets a fresh classification head sized to ``labels``, drawn from ``head_seed``
    (training passes ``training.seed``): the same URI and seed give the same head in any process,
    and the caller's random state is left as it was. A model that already has a head must have
    exactly these labels. ``digest``: the URI's pin.
    ``pooling``: what feeds the head (:mod:`aicd.components.pooling`); ``AUTO`` takes the one
    the folder declares (a sentence-transformers encoder's mean pooling), None the model's own.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from aicd.components.pooling import CONFIG_KEY, apply_pooling, declared_pooling

    model_dir = resolve_model(uri, digest)
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
    existing = getattr(config, "id2label", None) or {}
    trained_head = getattr(config, "architectures", None) and any(
        a.endswith("ForSequenceClassification") for a in config.architectures)
    if trained_head and sorted(existing.values()) != sorted(labels):
        raise ModelError(f"model {uri!r} has labels {sorted(existing.values())}, the task has {sorted(labels)}",
                         "use a model trained for these labels, or a plain encoder to train a new head")
    id2label = {i: name for i, name in enumerate(labels)}
    try:
        with torch.random.fork_rng(devices=[]):  # the head is drawn on the CPU; no GPU state is touched
            torch.random.default_generator.manual_seed(head_seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), num_labels=len(labels), id2label=id2label,
                label2id={v: k for k, v in id2label.items()}, **_SAFE)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load classifier from {uri!r} ({model_dir}): {err}",
                         "point the URI at a transformers encoder folder with safetensors weights") from err
    saved = getattr(model.config, CONFIG_KEY, None)  # a full-weights artifact aicd trained with a pooling
    if pooling == AUTO and saved:
        apply_pooling(model, saved, uri)
    elif pooling == AUTO:
        apply_pooling(model, declared_pooling(model_dir), uri, declared=True)
    else:
        apply_pooling(model, pooling, uri)
    model.eval()
    return model, load_tokenizer(model_dir), model_dir


# A Model artifact without weights that stands for one of the spec's base candidates (find_champion
# writes it while the champion is a bare base model, or none serves yet): {"candidate": name}.
BASE_MODEL_REF = "base-model.json"


def base_model_ref(path: str | Path) -> str | None:
    """The candidate name the artifact at ``path`` refers to ("" for the spec's first), or None when
    it is an ordinary Model artifact (:func:`aicd.components.contracts.read_model_ref` reads it)."""
    from aicd.components.contracts import read_model_ref

    ref = read_model_ref(path, verify=False)
    return ref.candidate if ref.is_base else None


def format_prompt(tokenizer, instruction: str, template: str | None = None, system: str | None = None) -> str:
    """The text a causal LM sees for one instruction: the spec's template or the chat template."""
    if template is not None:
        return template.format(instruction=instruction)
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": instruction}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{instruction}\n"


def adapter_pooling(path: str | Path) -> str | None:
    """The pooling a classifier adapter was trained with: the model's own pooler when the adapter saved
    it (``modules_to_save``, as adapters trained before mean pooling did), else the base's declared one."""
    import json

    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return AUTO
    saved = json.loads(config.read_text()).get("modules_to_save") or []
    return None if "pooler" in saved else AUTO


def load_model_artifact(path: str | Path, labels: list[str] | None = None):
    """(model, tokenizer, card) of an aicd Model artifact, digests verified first.

    ``kind: adapter`` cards name their base model URI (``base_model``) and the pin it was trained
    with (``base_pin``, when the base was pinned); the base is verified, loaded and the PEFT adapter
    applied on top. ``kind: model`` holds full weights.
    ``labels`` is required for text-classification artifacts.
    """
    import copy

    from aicd.components.cards import verify_card
    from aicd.components.provenance import remembered

    card = copy.deepcopy(remembered(Path(path), "card", lambda: verify_card(path)))  # a full model's load reuses it
    kind, task = card.get("kind"), card.get("task", "causal-lm")
    if kind not in ("adapter", "model"):
        raise ModelError(f"{path} is a {kind!r} artifact, not an adapter or model",
                         "pass the Model artifact a training step wrote")
    classification = task == "text-classification"
    if classification and not labels:
        labels = card.get("labels")
    if kind == "model":
        uri = str(path)
        model, tokenizer, _ = load_classifier(uri, labels) if classification else load_causal_lm(uri)
        return model, tokenizer, card
    from peft import PeftModel

    base = card.get("base_model")
    if not base:
        raise ModelError(f"{path}/card.json names no base_model", "produce the adapter again with train_adapter")
    pin = card.get("base_pin")
    model, base_dir = (load_classifier(base, labels, pin, pooling=adapter_pooling(path)) if classification
                       else load_causal_lm(base, digest=pin))[::2]
    model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    model.eval()
    # The adapter folder carries the tokenizer used in training (chat template included).
    tokenizer = load_tokenizer(path) if (Path(path) / "tokenizer_config.json").exists() else load_tokenizer(base_dir)
    return model, tokenizer, card
