"""Training examples and batch plans; also the small data sets the other training tests share."""

import copy

import pytest
from helpers.data import CHAT_QA as QA
from helpers.data import causal_rows, make_dataset, review_rows  # noqa: F401 - shared, also used here
from helpers.specs import causal_spec, classification_spec  # noqa: F401

from aicd.components.errors import DataError, TrainingError
from aicd.components.models import format_prompt, load_causal_lm, load_tokenizer
from aicd.components.spec import TaskSpec
from aicd.components.training.examples import IGNORE, check_length, encode_rows
from aicd.components.training.packing import BatchPlan


@pytest.fixture
def causal_task(support_bot_spec) -> TaskSpec:
    support_bot_spec["task"]["max_length"] = 256  # the tiny tokenizer spends many tokens per word
    return TaskSpec.model_validate(support_bot_spec["task"])


def test_labels_only_on_the_response(tiny_causal_lm, causal_task):
    tok = load_tokenizer(tiny_causal_lm)
    ex = encode_rows(causal_rows(1), tok, causal_task).examples[0]
    prompt = format_prompt(tok, QA[0][0], None, causal_task.system_prompt)
    n_prompt = len(tok(prompt)["input_ids"])
    assert "<|assistant|>" in prompt and "<|system|>" in prompt  # the chat template was applied
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    response = tok(QA[0][1], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.labels[n_prompt:] == response == ex.input_ids[n_prompt:]


def test_long_examples_are_truncated_to_max_length(tiny_causal_lm, support_bot_spec):
    tok = load_tokenizer(tiny_causal_lm)
    system = support_bot_spec["task"]["system_prompt"]
    n_prompt = len(tok(format_prompt(tok, QA[0][0], None, system))["input_ids"])
    support_bot_spec["task"]["max_length"] = n_prompt + 5
    ex = encode_rows(causal_rows(1), tok, TaskSpec.model_validate(support_bot_spec["task"])).examples[0]
    assert ex.length == len(ex.labels) == n_prompt + 5
    assert sum(label != IGNORE for label in ex.labels) == 5
    support_bot_spec["task"]["max_length"] = n_prompt  # no room left for the response
    with pytest.raises(DataError, match=f"no example of the train split fits in task.max_length={n_prompt} tokens"):
        encode_rows(causal_rows(1), tok, TaskSpec.model_validate(support_bot_spec["task"]))


def test_spec_prompt_template_is_used(tiny_causal_lm, support_bot_spec):
    support_bot_spec["task"]["prompt_template"] = "Q: {instruction}\nA: "
    task = TaskSpec.model_validate(support_bot_spec["task"])
    tok = load_tokenizer(tiny_causal_lm)
    ex = encode_rows(causal_rows(1), tok, task).examples[0]
    n_prompt = len(tok("Q: What is AI?\nA: ")["input_ids"])
    assert tok.decode(ex.input_ids[:n_prompt]) == "Q: What is AI?\nA: "
    assert ex.labels[n_prompt - 1] == IGNORE and ex.labels[n_prompt] != IGNORE


@pytest.mark.parametrize("rows, message", [
    ([], "the train split is empty: there is nothing to train on"),
    ([{"id": "1", "question": "x", "response": "y"}], "the train split has no column instruction"),
])
def test_unusable_split(tiny_causal_lm, causal_task, rows, message):
    with pytest.raises(DataError, match=message):
        encode_rows(rows, load_tokenizer(tiny_causal_lm), causal_task)


def test_unknown_label(tiny_encoder, review_sentiment_spec):
    task = TaskSpec.model_validate(review_sentiment_spec["task"])
    rows = review_rows(3) + [{"id": "x", "text": "meh", "label": "mixed"}]
    with pytest.raises(DataError, match=r"labels \['mixed'\] in the data are not in `task.labels`"):
        encode_rows(rows, load_tokenizer(tiny_encoder), task)


def test_max_length_above_model_limit(tiny_causal_lm, support_bot_spec):
    support_bot_spec["task"]["max_length"] = 1000
    model, _, _ = load_causal_lm(str(tiny_causal_lm))
    with pytest.raises(TrainingError, match="`task.max_length` is 1000, above the model's limit of 256 tokens"):
        check_length(TaskSpec.model_validate(support_bot_spec["task"]), model)


def test_batch_plan_is_a_function_of_the_step(tiny_causal_lm, causal_task):
    examples = encode_rows(causal_rows(20), load_tokenizer(tiny_causal_lm), causal_task).examples
    plan = BatchPlan(examples, batch_size=4, accumulation=2, world=1, seed=3)
    again = BatchPlan(copy.copy(examples), batch_size=4, accumulation=2, world=1, seed=3)
    assert [plan.global_indices(s) for s in (5, 0, 2)] == [again.global_indices(s) for s in (5, 0, 2)]
    # Over one epoch-sized stretch every example appears once.
    stream = [i for s in range(5) for i in plan.global_indices(s)]
    assert sorted(stream[:20]) == list(range(20))
    # 2 ranks x 1 micro-batch cover the same global batch as 1 rank x 2 micro-batches.
    two = BatchPlan(examples, batch_size=4, accumulation=1, world=2, seed=3)
    one = [ex for mb in plan.micro_batches(1) for ex in mb]
    split = [ex for r in range(2) for mb in two.micro_batches(1, r) for ex in mb]
    assert sorted(map(id, one)) == sorted(map(id, split))
    assert plan.global_targets(1) == two.global_targets(1)


def test_length_grouping_groups_lengths(tiny_causal_lm, causal_task):
    examples = encode_rows(causal_rows(48), load_tokenizer(tiny_causal_lm), causal_task).examples
    grouped = BatchPlan(examples, batch_size=4, seed=0, group_by_length=True)
    plain = BatchPlan(examples, batch_size=4, seed=0, group_by_length=False)

    def spread(plan):  # mean length range inside a batch
        batches = [[examples[i].length for i in plan.global_indices(s)] for s in range(12)]
        return sum(max(b) - min(b) for b in batches) / len(batches)

    assert spread(grouped) < spread(plain)


def test_uppercase_augmentation_adds_seeded_upper_case_copies(review_sentiment_spec):
    from aicd.components.spec import parse_spec
    from aicd.components.training.adapter import uppercase_copies

    rows = [{"id": f"r{i}", "text": f"Review {i} was fine", "label": "positive"} for i in range(20)]
    review_sentiment_spec["training"]["uppercase_augmentation"] = 0.25
    spec = parse_spec(review_sentiment_spec)
    out = uppercase_copies(rows, spec)
    assert out[:20] == rows and len(out) == 25  # the originals untouched, then a quarter again
    for copy_ in out[20:]:
        original = next(r for r in rows if f"{r['id']}:upper" == copy_["id"])
        assert copy_["text"] == original["text"].upper() and copy_["label"] == original["label"]
    assert uppercase_copies(rows, spec) == out  # seeded: the same rows every run
    review_sentiment_spec["training"]["seed"] = 1
    assert uppercase_copies(rows, parse_spec(review_sentiment_spec))[20:] != out[20:]


def test_uppercase_augmentation_is_refused_for_causal_lm(support_bot_spec):
    from aicd.components.errors import SpecError
    from aicd.components.spec import parse_spec

    support_bot_spec["training"]["uppercase_augmentation"] = 0.2
    with pytest.raises(SpecError, match="`training.uppercase_augmentation` applies to text-classification only; "
                                        "remove it for a causal-lm task"):
        parse_spec(support_bot_spec)


def test_lowercase_is_refused_for_causal_lm(support_bot_spec):
    from aicd.components.errors import SpecError
    from aicd.components.spec import parse_spec

    support_bot_spec["task"]["lowercase"] = True
    with pytest.raises(SpecError, match="`task.lowercase` applies to text-classification only; remove it"):
        parse_spec(support_bot_spec)


def test_lowercase_tokenizer_is_saved_and_added_once(tiny_causal_lm, tmp_path, review_sentiment_spec):
    """The normalizer goes into tokenizer.json (a reload lower-cases); a tokenizer that lower-cases already
    is left as it is, so a second application adds nothing."""
    from aicd.components.models import load_tokenizer, task_tokenizer
    from aicd.components.spec import parse_spec

    review_sentiment_spec["task"]["lowercase"] = True
    task = parse_spec(review_sentiment_spec).task
    cased = load_tokenizer(tiny_causal_lm)
    assert cased("Great DRUG")["input_ids"] != cased("great drug")["input_ids"]
    lowered = task_tokenizer(cased, task)
    once = repr(lowered.backend_tokenizer.normalizer)
    assert lowered("Great DRUG")["input_ids"] == lowered("great drug")["input_ids"]
    assert repr(task_tokenizer(lowered, task).backend_tokenizer.normalizer) == once
    lowered.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again("Great DRUG")["input_ids"] == again("great drug")["input_ids"]
    review_sentiment_spec["task"]["lowercase"] = False
    untouched = load_tokenizer(tiny_causal_lm)
    assert task_tokenizer(untouched, parse_spec(review_sentiment_spec).task) is untouched
    assert untouched("Great DRUG")["input_ids"] != untouched("great drug")["input_ids"]
