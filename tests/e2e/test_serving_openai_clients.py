"""The predictor as real clients use it: the official openai client (sync, async, streaming),
lm-evaluation-harness's local-completions and local-chat-completions models on a task from a local
file, and aicd's own evaluation scoring a live endpoint's NLL; against a predictor process serving a
tiny base and an adapter on 127.0.0.1."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.adapters import make_lora_adapter
from helpers.predictor import predictor

from aicd.components.evaluation.endpoints import EndpointBackend
from aicd.components.evaluation.inference import score_causal_lm
from aicd.components.models import load_causal_lm, load_tokenizer

pytestmark = [pytest.mark.e2e]
TASKS = Path(__file__).parent / "lm_eval_tasks"
DOCS = [json.loads(line) for line in (TASKS / "qa.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def served(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-clients")
    adapter = make_lora_adapter(tiny_causal_lm, root / "a1", seed=1)
    args = ["--base", str(tiny_causal_lm), "--adapter", f"a1={adapter}", "--max-batch-wait-ms", "5"]
    with predictor(args, root) as url:
        yield url, tiny_causal_lm, adapter, root


def _local(base: Path, adapter: Path | None):
    """The model as aicd's evaluation loads it: the base, with the adapter when one is named."""
    from peft import PeftModel

    model, tokenizer, _ = load_causal_lm(str(base))
    return (PeftModel.from_pretrained(model, str(adapter)) if adapter else model).eval(), tokenizer


def test_the_openai_client_sync_async_and_streaming(served):
    import openai

    url, *_ = served
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=60)
    ask = {"model": "a1", "messages": [{"role": "user", "content": "What is AI?"}], "max_tokens": 8}
    plain = client.chat.completions.create(**ask)
    streamed = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == plain.choices[0].message.content
    assert streamed[-1].usage.completion_tokens == plain.usage.completion_tokens
    sampled = [client.chat.completions.create(**ask, temperature=1.2, seed=s).choices[0].message.content
               for s in (3, 3, 4, 5)]
    assert sampled[0] == sampled[1]  # a seed reproduces its sample
    assert any(other != sampled[0] for other in sampled[2:]), sampled  # and other seeds really sample otherwise
    scored = client.completions.create(model="base", prompt="How are you?", max_tokens=4, logprobs=2)
    assert len(scored.choices[0].logprobs.token_logprobs) == scored.usage.completion_tokens
    with pytest.raises(openai.BadRequestError, match="`logit_bias` is not supported by this predictor"):
        client.completions.create(model="a1", prompt="hi", max_tokens=2, logit_bias={"5": 1})
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"base", "a1"} and models["a1"].model_extra["digest"].startswith("sha256:")

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=60)
        answers = await asyncio.gather(*(aclient.completions.create(model=m, prompt="Tell me a joke.", max_tokens=6)
                                         for m in ("a1", "base", "a1", "base")))
        stream = await aclient.completions.create(model="a1", prompt="Tell me a joke.", max_tokens=6, stream=True)
        pieces = [chunk.choices[0].text async for chunk in stream]
        await aclient.close()
        return [a.choices[0].text for a in answers] + ["".join(pieces)]

    texts = asyncio.run(together())
    assert texts[0] == texts[2] == texts[4] and texts[1] == texts[3] and texts[0] != texts[1]


@pytest.mark.parametrize("model", ["base", "a1"])
def test_evaluation_scores_the_live_endpoints_nll_as_it_scores_locally(served, model):
    url, base, adapter, _ = served
    inputs, targets = [d["question"] for d in DOCS], [d["choices"][d["label"]][:-len("</s>")] for d in DOCS]
    live = EndpointBackend(model_info={"name": model}, url=f"{url}/openai/v1/chat/completions", model_name=model,
                           tokenizer=load_tokenizer(base)).score(inputs, targets)
    local_model, tokenizer = _local(base, adapter if model == "a1" else None)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": x}], tokenize=False,
                                             add_generation_prompt=True) for x in inputs]
    local = score_causal_lm(local_model, tokenizer, prompts, targets)
    assert live[1] == local[1]
    assert live[0] == pytest.approx(local[0], abs=1e-4)


def _lm_eval(tmp: Path, model: str, model_args: str, task: str, *extra: str) -> list[dict]:
    tasks = tmp / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{task}.yaml").write_text((TASKS / f"{task}.yaml").read_text().replace(
        "DATA_FILE", str(TASKS / "qa.jsonl")))
    out = tmp / f"out-{task}-{abs(hash(model_args))}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "unused",
           "HF_DATASETS_CACHE": str(tmp / "datasets")}
    run = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", model, "--model_args", model_args,
                          "--tasks", task, "--include_path", str(tasks), "--output_path", str(out),
                          "--log_samples", *extra], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    (samples,) = out.rglob(f"samples_{task}_*.jsonl")
    return sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"])


@pytest.mark.parametrize("model", ["base", "a1"])
def test_lm_eval_local_completions_loglikelihoods_equal_aicds_scoring(served, model, tmp_path):
    url, base, adapter, _ = served
    args = (f"base_url={url}/openai/v1/completions,model={model},tokenizer={base},tokenizer_backend=huggingface,"
            "tokenized_requests=True,max_retries=1,num_concurrent=1")
    samples = _lm_eval(tmp_path, "local-completions", args, "aicd_qa_choice", "--batch_size", "4")
    local_model, tokenizer = _local(base, adapter if model == "a1" else None)
    assert len(samples) == len(DOCS)
    for sample, doc in zip(samples, DOCS):
        answers = [" " + c[:-len("</s>")] for c in doc["choices"]]  # aicd scores the answer and EOS
        nll, counts = score_causal_lm(local_model, tokenizer, [doc["question"]] * len(answers), answers)
        harness = [float(r[0]) for r in sample["filtered_resps"]]
        assert harness == pytest.approx([-m * n for m, n in zip(nll, counts)], abs=1e-4)


def test_lm_eval_local_chat_completions_generates_what_the_client_gets(served, tmp_path):
    import openai

    url, *_ = served
    args = f"base_url={url}/openai/v1/chat/completions,model=a1,max_retries=1,num_concurrent=1"
    samples = _lm_eval(tmp_path, "local-chat-completions", args, "aicd_qa_generate", "--apply_chat_template")
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=60)
    assert len(samples) == len(DOCS)
    for sample, doc in zip(samples, DOCS):
        direct = client.chat.completions.create(model="a1", messages=[{"role": "user", "content": doc["question"]}],
                                                max_tokens=8, temperature=0, stop=["\n\n"])
        assert sample["resps"][0][0] == direct.choices[0].message.content


def test_evaluate_model_reports_a_live_endpoints_nll_equal_to_the_local_evaluation(served, support_bot_spec, tmp_path):
    """The evaluation contract on a live endpoint: its report carries the NLL the local evaluation computes."""
    from helpers.data import causal_dataset
    from helpers.specs import small_spec

    from aicd.components.evaluation.evaluate import evaluate_model

    url, base, adapter, _ = served
    spec = small_spec(support_bot_spec, base)
    data = causal_dataset(tmp_path / "data")
    live = evaluate_model(spec, data, tmp_path / "live", endpoint=f"{url}/openai/v1/chat/completions",
                          endpoint_model="a1", light=True)
    local = evaluate_model(spec, data, tmp_path / "local", model=adapter, light=True)
    assert live["metrics"]["nll"]["value"] == pytest.approx(local["metrics"]["nll"]["value"], abs=1e-4)
