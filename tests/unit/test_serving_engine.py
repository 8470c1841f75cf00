"""The predictor's engine: one base in memory, adapters verified and switched per batch."""

import json
import shutil
from pathlib import Path

import pytest
from helpers.adapters import LABELS, make_lora_adapter
from helpers.data import make_dataset, review_rows
from helpers.specs import classification_spec
from tiny_models import recard_base

from aicd.components.errors import IntegrityError, ServingError
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.engine import Engine, GenItem
from aicd.components.training.adapter import train_adapter


@pytest.fixture(scope="module")
def lm_adapters(tiny_causal_lm, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm-adapters")
    return {name: make_lora_adapter(tiny_causal_lm, root / name, seed=i + 1) for i, name in enumerate(["a1", "a2"])}


@pytest.fixture(scope="module")
def lm_engine(tiny_causal_lm, lm_adapters) -> Engine:
    engine = Engine(ServeConfig(base=str(tiny_causal_lm), adapters={k: str(v) for k, v in lm_adapters.items()}))
    engine.load_base()
    for name, path in lm_adapters.items():
        engine.attach(engine.verify(name, str(path)))
    return engine


def _ids(engine: Engine, text: str) -> list[int]:
    return engine.tokenizer(text)["input_ids"]


def test_adapters_share_one_base_and_change_outputs(lm_engine):
    prompt = GenItem(_ids(lm_engine, "What is AI?"), max_tokens=8)
    outputs = {name: lm_engine.generate(name, [prompt])[0].text for name in (None, "a1", "a2")}
    assert len(set(outputs.values())) == 3, outputs
    # one PeftModel holding both adapters over a single copy of the base weights
    assert set(lm_engine.model.peft_config) == {"a1", "a2"}
    bases = {id(m.base_layer.weight) for m in lm_engine.model.modules() if hasattr(m, "base_layer")}
    assert len(bases) == sum(1 for m in lm_engine.model.modules() if hasattr(m, "base_layer"))


def test_batched_greedy_generation_matches_one_at_a_time(lm_engine):
    texts = ["What is AI?", "Tell me a joke about a computer and a doctor.", "How are you?"]
    items = [GenItem(_ids(lm_engine, t), max_tokens=6) for t in texts]
    alone = [lm_engine.generate("a1", [item])[0] for item in items]
    together = lm_engine.generate("a1", items)
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.completion_tokens <= 6 for r in together)


def test_each_item_keeps_its_own_max_tokens(lm_engine):
    ids = _ids(lm_engine, "Do you like sports?")
    short, long = lm_engine.generate(None, [GenItem(ids, 2), GenItem(ids, 7)])
    assert short.completion_tokens <= 2 and long.completion_tokens <= 7
    if long.finish_reason == "length":
        assert short.finish_reason == "length" and short.completion_tokens == 2


def test_detach_and_reattach(lm_engine, lm_adapters):
    before = lm_engine.generate("a2", [GenItem(_ids(lm_engine, "Hi"), 5)])[0].text
    lm_engine.detach("a2")
    with pytest.raises(ServingError, match="'a2' is not served"):
        lm_engine.generate("a2", [GenItem(_ids(lm_engine, "Hi"), 5)])
    lm_engine.attach(lm_engine.verify("a2", str(lm_adapters["a2"])))
    assert lm_engine.generate("a2", [GenItem(_ids(lm_engine, "Hi"), 5)])[0].text == before


def test_tampered_adapter_is_refused(tiny_causal_lm, tmp_path, lm_engine):
    path = make_lora_adapter(tiny_causal_lm, tmp_path / "bad", seed=9)
    weights = path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="adapter_model.safetensors changed"):
        lm_engine.verify("bad", str(path))


def test_adapter_of_another_base_is_refused(tiny_causal_lm, tiny_encoder, tmp_path, lm_engine):
    path = make_lora_adapter(tiny_encoder, tmp_path / "cls", task="text-classification", labels=LABELS)
    with pytest.raises(ServingError, match="'text-classification' adapter, the server runs 'causal-lm'"):
        lm_engine.verify("cls", str(path))


def test_folder_without_card_is_refused(tmp_path, lm_engine):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(IntegrityError, match="has no card.json"):
        lm_engine.verify("x", str(tmp_path))


def test_classifier_adapters_answer_in_label_order(tiny_encoder, tmp_path):
    paths = {f"c{i}": make_lora_adapter(tiny_encoder, tmp_path / f"c{i}", "text-classification", LABELS, seed=i)
             for i in (1, 2)}
    engine = Engine(ServeConfig(base=str(tiny_encoder), task="text-classification", labels=LABELS))
    engine.load_base()
    assert engine.serve_base is False  # a plain encoder has no trained head to serve
    for name, path in paths.items():
        engine.attach(engine.verify(name, str(path)))
    texts = ["This drug worked wonders.", "Terrible medicine, awful side effects."]
    one, two = engine.classify("c1", texts), engine.classify("c2", texts)
    for label, probs in one + two:
        assert label in LABELS and len(probs) == 3 and abs(sum(probs) - 1) < 1e-4
        assert label == LABELS[probs.index(max(probs))]
    assert [p for _, p in one] != [p for _, p in two]
    assert engine.classify("c1", texts[:1])[0][1] == pytest.approx(one[0][1], abs=1e-5)


def test_classifier_labels_must_match(tiny_encoder, tmp_path):
    path = make_lora_adapter(tiny_encoder, tmp_path / "c", "text-classification", LABELS)
    engine = Engine(ServeConfig(base=str(tiny_encoder), task="text-classification", labels=["bad", "good"]))
    engine.load_base()
    with pytest.raises(ServingError, match="has labels"):
        engine.verify("c", str(path))


def test_pickled_weights_are_refused_even_with_a_valid_card(tiny_causal_lm, tmp_path, lm_engine):
    from aicd.components.cards import write_card

    path = make_lora_adapter(tiny_causal_lm, tmp_path / "pickled", seed=3)
    (path / "adapter_model.safetensors").rename(path / "adapter_model.bin")
    write_card(path, kind="adapter", task="causal-lm", base_model=str(tiny_causal_lm))
    with pytest.raises(ServingError, match="only safetensors weights are served, it holds adapter_model.bin"):
        lm_engine.verify("pickled", str(path))


@pytest.mark.parametrize("kind, loads", [("converted-gguf", True), ("download", True), ("adapter", False)])
def test_a_base_from_resolve_models_own_cache_loads(tiny_causal_lm, tmp_path, kind, loads):
    """The GGUF conversion and download caches carry a card of their own kind (make demo's SmolLM2 base
    is one): the predictor serves them as a plain base; an adapter given as --base is still refused."""
    import shutil

    from aicd.components.cards import write_card

    base = tmp_path / "base"
    shutil.copytree(tiny_causal_lm, base)
    write_card(base, kind, source="sha256:test")
    engine = Engine(ServeConfig(base=str(base)))
    if loads:
        engine.load_base()
        assert engine.model is not None and engine.base_card is None
    else:
        with pytest.raises(ServingError, match=f"is a '{kind}' artifact"):
            engine.load_base()


@pytest.fixture
def full_model(tiny_causal_lm, tmp_path):
    """A full-model artifact (kind model, with its card) copied from the tiny causal LM."""
    import shutil

    from aicd.components.cards import write_card

    path = tmp_path / "full"
    shutil.copytree(tiny_causal_lm, path)
    return path, write_card(path, "model", task="causal-lm", method="from-scratch")


def _load(consumer, path, pin):
    from aicd.components.contracts import read_model_ref
    from aicd.components.models import load_causal_lm, load_model_artifact

    if consumer == "predictor":  # --base PATH --base-digest PIN
        return Engine(ServeConfig(base=str(path), base_digest=pin)).load_base()
    if consumer == "candidate":  # a spec candidate with `digest: PIN`, as evaluation loads it
        return load_causal_lm(str(path), digest=pin)
    read_model_ref(path)  # a Model artifact: gate, promotion, evaluation
    return load_model_artifact(path)


# (consumer, pin) -> refused; the predictor is pinned to the card digest when rendered from a promotion.
CARDLESS = [("predictor", "card", True), ("predictor", "content", False), ("predictor", "other", True),
            ("candidate", "card", True), ("candidate", "content", False), ("candidate", "other", True),
            ("artifact", "content", True), ("artifact", None, True)]


@pytest.mark.parametrize("consumer, pin, refused", CARDLESS)
def test_a_full_model_whose_card_was_deleted_is_refused_unless_its_content_is_pinned(full_model, consumer, pin,
                                                                                    refused):
    """card.json deleted: refused by a predictor pinned to the promoted card digest (as the rendered manifests
    pin it), by a spec candidate pinned to another digest, and always as a Model artifact; only a pin on the
    files' content digest admits the folder, and the error names the folder and both fixes."""
    from aicd.components.cards import content_digest

    path, card = full_model
    pins = {"card": card["digest"], "content": content_digest(path), "other": "sha256:" + "0" * 64, None: None}
    (path / "card.json").unlink()
    if not refused:
        _load(consumer, path, pins[pin])
        return
    with pytest.raises(IntegrityError) as info:
        _load(consumer, path, pins[pin])
    assert str(path) in info.value.message and "card.json" in info.value.message
    if consumer != "artifact":
        assert f"is not the pinned {pins[pin]}" in info.value.message
        assert "produce it again" in info.value.hint and "candidates[].digest" in info.value.hint


def test_a_pinned_full_model_with_its_card_and_the_rendered_pin(full_model, support_bot_spec):
    """With its card the promoted digest loads; the manifests' predictor args pin a promoted full model by
    its card digest, and a base candidate by the spec's `digest`."""
    from aicd.components.delivery import isvc
    from aicd.components.spec import parse_spec

    path, card = full_model
    Engine(ServeConfig(base=str(path), base_digest=card["digest"])).load_base()
    support_bot_spec["candidates"][0]["digest"] = "sha256:" + "a" * 64
    spec = parse_spec(support_bot_spec)
    args = isvc.predictor_args(spec, isvc.ModelRef(card["digest"], "/mnt/models/base"))
    assert args[args.index("--base-digest") + 1] == card["digest"]
    uri = spec.candidates[0].uri
    args = isvc.predictor_args(spec, isvc.ModelRef(isvc.base_model_id(uri), uri))
    assert args[args.index("--base-digest") + 1] == "sha256:" + "a" * 64
    args = isvc.predictor_args(spec, isvc.ModelRef(card["digest"], uri, "/mnt/models/adapters/x", "x"))
    assert "--base-digest" in args  # the adapter's base is the pinned candidate


def test_an_adapter_trained_on_the_pooler_is_refused_on_a_mean_pooled_base(tiny_encoder, tmp_path):
    base = shutil.copytree(tiny_encoder, tmp_path / "base")
    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    train_adapter(classification_spec(base, tmp_path / "ck", max_steps=2), data, "lora-r8", tmp_path / "old",
                  progress=False)  # on the plain encoder: it trains and saves the pooler
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    recard_base(base)  # its provider shipped the change with a new card
    fresh = make_lora_adapter(base, tmp_path / "new", "text-classification", LABELS)
    engine = Engine(ServeConfig(base=str(base), task="text-classification", labels=LABELS))
    engine.load_base()
    engine.attach(engine.verify("new", str(fresh)))
    with pytest.raises(ServingError, match=r"^adapter 'old' was trained on the encoder's \[CLS\] pooler"):
        engine.verify("old", str(tmp_path / "old"))


def test_a_lowercase_classifier_reads_shouted_text_as_trained_in_evaluation_and_serving(tiny_causal_lm, tmp_path):
    """``task.lowercase`` on a cased tokenizer (a decoder as the classifier): training lower-cases, the
    adapter's saved tokenizer carries it, and both evaluation's loader and the serving engine read a
    shouted review as the same tokens, while the base's own tokenizer still tells the two apart."""
    from aicd.components.models import load_model_artifact

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    spec = classification_spec(tiny_causal_lm, tmp_path / "ck", max_steps=2, methods=[
        {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}])
    spec["candidates"][0]["name"] = "tiny-llama"
    spec["task"]["lowercase"] = True
    train_adapter(spec, data, "lora", tmp_path / "low", progress=False)
    shouted, quiet = "THIS DRUG WORKED WONDERS.", "this drug worked wonders."

    _, tokenizer, card = load_model_artifact(tmp_path / "low", LABELS)
    assert tokenizer(shouted)["input_ids"] == tokenizer(quiet)["input_ids"]
    assert card["hyperparameters"]["lowercase"] is True
    engine = Engine(ServeConfig(base=str(tiny_causal_lm), task="text-classification", labels=LABELS))
    engine.load_base()
    assert engine.tokenizer(shouted)["input_ids"] != engine.tokenizer(quiet)["input_ids"]  # the base is cased
    engine.attach(engine.verify("low", str(tmp_path / "low")))
    (label, probs), (label2, probs2) = engine.classify("low", [shouted, quiet])
    assert label == label2 and probs == pytest.approx(probs2, abs=1e-6)
