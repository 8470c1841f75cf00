"""Artifacts for tests: real PEFT adapters on the tiny models, with verified cards."""

from pathlib import Path

from aicd.components.cards import write_card


def make_adapter(base_dir: Path, out: Path, *, applied: bool = True, classification: bool = False,
                 labels=None) -> Path:
    """A real PEFT LoRA artifact on the tiny model; ``applied=False`` leaves B at zero (a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from aicd.components.models import load_causal_lm, load_classifier

    torch.manual_seed(0)
    if classification:
        base, tok, _ = load_classifier(str(base_dir), labels)
        config = LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS",
                            init_lora_weights=not applied)
    else:
        base, tok, _ = load_causal_lm(str(base_dir))
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=not applied)
    get_peft_model(base, config).save_pretrained(out)
    tok.save_pretrained(out)
    write_card(out, "adapter", task="text-classification" if classification else "causal-lm", labels=labels,
               base_model=str(base_dir), method="lora", name="tiny-lora")
    return out


def report_folder(folder: Path, report: dict) -> Path:
    """An evaluation folder as evaluate_model leaves it: ``report.json`` and its ``evaluation`` card."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    write_card(folder, "evaluation", task=report.get("task"), model=report.get("model"))
    return folder
