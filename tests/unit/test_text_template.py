"""`task.text_template` and `training.head_init: label-words`: a decoder classifier reads a question about
the label at its last token, and its head can start from the model's own answer.

The template rides in the tokenizer's post-processor, so the trained model's saved tokenizer carries it
to evaluation and serving; these tests hold that, the truncation rule and the refusals."""

import json
import shutil

import pytest
from helpers.adapters import LABELS
from helpers.data import make_dataset, review_rows
from helpers.specs import classification_spec
from safetensors.torch import load_file, save_file
from tiny_models import recard_base

from aicd.components.errors import ModelError, SpecError, TrainingError
from aicd.components.models import load_model_artifact, load_tokenizer, task_tokenizer
from aicd.components.spec import parse_spec

TEMPLATE = "Review:\n{text}\nThe sentiment of this review is"


def _task(review_sentiment_spec, **task):
    review_sentiment_spec["task"].update(task)
    return parse_spec(review_sentiment_spec).task


@pytest.mark.parametrize("template, message", [
    ("Review: {review}", "must contain {text} exactly once and no other field, got ['review']"),
    ("{text} and {text}", "must contain {text} exactly once and no other field, got ['text', 'text']"),
    ("{text} is {label}", "must contain {text} exactly once and no other field, got ['text', 'label']"),
    ("Sentiment:", "must contain {text} exactly once and no other field, got none"),
    ("  {text} ", "adds no words around {text}; remove it"),
    ("{text} {", "is not a str.format template"),
])
def test_a_bad_text_template_is_refused_with_the_fix(review_sentiment_spec, template, message):
    review_sentiment_spec["task"]["text_template"] = template
    with pytest.raises(SpecError, match="`task.text_template`") as err:
        parse_spec(review_sentiment_spec)
    assert message in str(err.value)


def test_template_and_label_words_are_refused_for_causal_lm(support_bot_spec):
    support_bot_spec["task"]["text_template"] = "{text}?"
    with pytest.raises(SpecError, match="`task.text_template` applies to text-classification only; use "
                                        "`task.prompt_template`"):
        parse_spec(support_bot_spec)
    del support_bot_spec["task"]["text_template"]
    support_bot_spec["training"]["head_init"] = "label-words"
    with pytest.raises(SpecError, match="`training.head_init` applies to text-classification only"):
        parse_spec(support_bot_spec)


def test_the_template_wraps_every_text_survives_saving_and_truncation_keeps_it(tiny_causal_lm, tmp_path,
                                                                            review_sentiment_spec):
    task = _task(review_sentiment_spec, text_template=TEMPLATE, lowercase=False)
    plain = load_tokenizer(tiny_causal_lm)
    words = lambda s: plain(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix, suffix = words("Review:\n"), words("\nThe sentiment of this review is")
    text = "great drug, no side effects"
    wrapped = task_tokenizer(load_tokenizer(tiny_causal_lm), task, saved=True)
    assert wrapped(text)["input_ids"] == prefix + words(text) + suffix
    once = wrapped.backend_tokenizer.to_str()
    assert task_tokenizer(wrapped, task).backend_tokenizer.to_str() == once  # a second application adds nothing
    # a long text is cut, the template kept whole at both ends
    long = wrapped("word " * 500, truncation=True, max_length=40)["input_ids"]
    assert len(long) == 40 and long[:len(prefix)] == prefix and long[-len(suffix):] == suffix
    # what evaluation and serving load reads the same ids
    wrapped.save_pretrained(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok")(text)["input_ids"] == wrapped(text)["input_ids"]
    # a template with only a suffix, and the text without any template
    suffix_task = _task(review_sentiment_spec, text_template="{text}!", lowercase=False)
    only_suffix = task_tokenizer(load_tokenizer(tiny_causal_lm), suffix_task)
    assert only_suffix(text)["input_ids"] == words(text) + words("!")
    assert plain(text)["input_ids"] == words(text)
    # escaped braces read as the single braces str.format gives
    braces = task_tokenizer(load_tokenizer(tiny_causal_lm),
                            _task(review_sentiment_spec, text_template="{{{text}}}", lowercase=False))
    assert braces(text)["input_ids"] == words("{") + words(text) + words("}")


def test_a_tokenizer_that_drops_the_template_on_loading_is_refused_for_training(tiny_encoder, tmp_path,
                                                                               review_sentiment_spec):
    """A model-specific tokenizer class (BertTokenizer here) rebuilds its post-processor when loaded: the
    template would not reach evaluation and serving. Training refuses it and leaves the tokenizer as it was;
    scoring a base model in memory (nothing saved) may still use it."""
    folder = tmp_path / "bert-tokenizer"
    load_tokenizer(tiny_encoder).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "BertTokenizer"}))
    task = _task(review_sentiment_spec, text_template=TEMPLATE)
    tokenizer = load_tokenizer(folder)
    assert type(tokenizer).__name__ == "BertTokenizer"
    before = tokenizer("good")["input_ids"]
    with pytest.raises(ModelError, match=r"(?s)cannot be carried by this model's tokenizer \(BertTokenizer\).*"
                                         r"fix: train a decoder with it"):
        task_tokenizer(tokenizer, task, saved=True)
    assert tokenizer("good")["input_ids"] == before
    in_memory = task_tokenizer(load_tokenizer(folder), task)("good")["input_ids"]
    assert in_memory[0] == before[0] and in_memory[-1] == before[-1] and len(in_memory) > len(before)


@pytest.fixture
def tied_causal_lm(tiny_causal_lm, tmp_path):
    """The tiny Llama with its output embedding tied to the input one (as SmolLM2's is)."""
    folder = tmp_path / "tied"
    shutil.copytree(tiny_causal_lm, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "lm_head.weight"}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return recard_base(folder)


def test_label_words_head_starts_as_the_models_own_next_token_choice(tied_causal_lm, tmp_path):
    """Before any step, the classifier's logits are the causal LM's next-token logits of each label's first
    token after the template; the head then trains at the method's rate, not 20x."""
    import torch

    from aicd.components.models import load_causal_lm
    from aicd.components.training.adapter import classifier_options, find_method, load_base

    spec = parse_spec(classification_spec(tied_causal_lm, tmp_path / "ck", head_init="label-words", methods=[
        {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}]))
    # labels whose first tokens differ in the tiny vocabulary; a template ending in a space: no space before them
    labels = ["bad", "fine", "good"]
    spec = parse_spec({**spec.model_dump(mode="json"), "task": {
        **spec.task.model_dump(), "labels": labels, "text_template": "{text}\nThe sentiment of this review is "}})
    method = find_method(spec, "lora")
    classifier, tokenizer, _ = load_base(spec, method, str(tied_causal_lm))
    lm, _, _ = load_causal_lm(str(tied_causal_lm))
    firsts = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    assert len(set(firsts)) == 3
    texts = ["great drug", "it did nothing for my pain at all"]
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt")
            expected = lm(**enc).logits[0, -1, firsts]
            assert classifier(**enc).logits[0] == pytest.approx(expected.tolist(), abs=1e-4)
    rows = review_rows()
    assert classifier_options(spec, method, rows)["head_learning_rate"] == pytest.approx(spec.training.learning_rate)


def test_label_words_are_refused_where_there_is_no_answer_to_start_from(tiny_causal_lm, tiny_encoder, tmp_path):
    from aicd.components.training.adapter import find_method, load_base

    for model, message in ((tiny_causal_lm, "has a separate LM head, which its classifier does not load"),
                           (tiny_encoder, "needs a decoder classifier whose head `score` reads the last token")):
        spec = parse_spec(classification_spec(model, tmp_path / "ck", head_init="label-words"))
        with pytest.raises(TrainingError, match=message):
            load_base(spec, find_method(spec, spec.training.methods[0].name), str(model))


def test_a_templated_adapter_reads_text_the_same_in_training_evaluation_and_serving(tied_causal_lm, tmp_path):
    """Trained with a template and label-words head, the adapter's saved tokenizer wraps texts; the serving
    engine's probabilities equal the evaluation loader's model on the wrapped ids."""
    import torch

    from aicd.components.serving.config import ServeConfig
    from aicd.components.serving.engine import Engine
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    spec = classification_spec(tied_causal_lm, tmp_path / "ck", max_steps=2, head_init="label-words", methods=[
        {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}])
    spec["candidates"][0]["name"] = "tiny-llama"
    spec["task"].update(text_template=TEMPLATE, lowercase=False)
    train_adapter(spec, data, "lora", tmp_path / "tpl", progress=False)
    model, tokenizer, card = load_model_artifact(tmp_path / "tpl", LABELS)
    assert card["hyperparameters"]["text_template"] == TEMPLATE
    assert card["hyperparameters"]["head_init"] == "label-words"
    text = "this drug worked wonders"
    suffix = load_tokenizer(tied_causal_lm)("\nThe sentiment of this review is", add_special_tokens=False)["input_ids"]
    ids = tokenizer(text)["input_ids"]
    assert ids[-len(suffix):] == suffix
    with torch.inference_mode():
        expected = torch.softmax(model(**tokenizer([text], return_tensors="pt")).logits.float(), -1)[0]
    engine = Engine(ServeConfig(base=str(tied_causal_lm), task="text-classification", labels=LABELS))
    engine.load_base()
    assert engine.tokenizer(text)["input_ids"] != ids  # the base's own tokenizer has no template
    engine.attach(engine.verify("tpl", str(tmp_path / "tpl")))
    ((_, probs),) = engine.classify("tpl", [text])
    assert probs == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("processor", ["bytelevel", "sequence", "sequence-without-template"])
def test_the_template_joins_the_post_processors_decoders_ship(tiny_causal_lm, tmp_path, review_sentiment_spec,
                                                              processor):
    """Llama 3's tokenizer ships Sequence[ByteLevel, TemplateProcessing] (the bos token), Qwen's a ByteLevel
    alone: the template is merged into the TemplateProcessing, or added after, and the model's own tokens
    stay where they were; saved and loaded, the ids are the same."""
    from tokenizers import processors

    plain = load_tokenizer(tiny_causal_lm)
    bos = plain.convert_tokens_to_ids(plain.bos_token or plain.eos_token)
    bytelevel = processors.ByteLevel(trim_offsets=False)
    with_bos = processors.TemplateProcessing(single=f"{plain.convert_ids_to_tokens(bos)}:0 $A:0",
                                             special_tokens=[(plain.convert_ids_to_tokens(bos), bos)])
    plain.backend_tokenizer.post_processor = {
        "bytelevel": bytelevel, "sequence": processors.Sequence([bytelevel, with_bos]),
        "sequence-without-template": processors.Sequence([bytelevel])}[processor]
    folder = tmp_path / "tok"
    plain.save_pretrained(folder)
    words = lambda s: load_tokenizer(folder)(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    own = [bos] if processor == "sequence" else []
    task = _task(review_sentiment_spec, text_template=TEMPLATE, lowercase=False)
    wrapped = task_tokenizer(load_tokenizer(folder), task, saved=True)
    text = "great drug"
    expected = own + words("Review:\n") + words(text) + words("\nThe sentiment of this review is")
    assert wrapped(text)["input_ids"] == expected
    wrapped.save_pretrained(tmp_path / "again")
    assert load_tokenizer(tmp_path / "again")(text)["input_ids"] == expected


def test_a_post_processor_that_adds_its_own_tokens_another_way_is_refused(tiny_causal_lm, review_sentiment_spec):
    from tokenizers import processors

    tokenizer = load_tokenizer(tiny_causal_lm)
    tokenizer.backend_tokenizer.post_processor = processors.RobertaProcessing(("<s>", 1), ("<s>", 1))
    with pytest.raises(ModelError, match=r"(?s)its post-processor \(RobertaProcessing\) adds its own tokens.*"
                                         r"fix: put the words into the data's text instead"):
        task_tokenizer(tokenizer, _task(review_sentiment_spec, text_template=TEMPLATE))


def test_labels_that_start_with_the_same_token_are_named_in_a_warning(tied_causal_lm, tmp_path, caplog):
    """In the tiny vocabulary " negative", " neutral" and " positive" all start with the space token: their
    head rows start equal, which the log says (training still tells them apart)."""
    from aicd.components.training.adapter import find_method, load_base

    spec = parse_spec(classification_spec(tied_causal_lm, tmp_path / "ck", head_init="label-words", methods=[
        {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}]))
    with caplog.at_level("WARNING", logger="aicd.components.training.adapter"):
        load_base(spec, find_method(spec, "lora"), str(tied_causal_lm))
    assert "labels ['negative', 'neutral', 'positive'] start with the same token" in caplog.text
