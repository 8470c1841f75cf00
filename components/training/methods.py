"""Fine-tuning methods: the one place a peft config is built from a MethodSpec.

``peft_config`` is to aicd what trl's ``get_peft_config`` is to trl: LoRA, DoRA,
rsLoRA, IA3 (and QLoRA, LoRA on a 4-bit base) map onto peft configs; ``full`` fine-tuning
has none. Target modules are checked against the model first, so a typo names the
modules the model really has instead of failing deep inside peft.
"""

import logging

from aicd.components.errors import ModelError, TrainingError
from aicd.components.spec import MethodSpec

log = logging.getLogger(__name__)

ADAPTER_METHODS = ("lora", "dora", "rslora", "ia3", "qlora", "dpo")  # dpo: a LoRA trained on preference pairs
# Layer names that are feed-forward outputs (IA3 scales their inputs instead of outputs).
_FEEDFORWARD = {"down_proj", "fc2", "output.dense", "dense_4h_to_h", "c_proj", "w2", "wo", "mlp.fc_out"}


def linear_module_names(model) -> list[str]:
    """Sorted short names of the model's Linear layers, as target_modules can name them."""
    import torch

    names = set()
    for full, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and full:
            parts = full.split(".")
            names.add(parts[-1])
            if len(parts) > 1 and not parts[-2].isdigit():
                names.add(".".join(parts[-2:]))
    return sorted(names)


def _matches(model, target: str) -> bool:
    return any(full == target or full.endswith("." + target) for full, _ in model.named_modules())


def check_target_modules(model, method: MethodSpec, where: str) -> None:
    """Raise ModelError naming the modules the model has when a target is missing."""
    if not method.target_modules:
        return
    missing = [t for t in method.target_modules if not _matches(model, t)]
    if missing:
        have = ", ".join(linear_module_names(model))
        raise ModelError(f"`{where}.target_modules` names {', '.join(missing)}, which the model does not have",
                         f"use some of the model's linear layers: {have}")


def qlora_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def require_qlora(where: str) -> None:
    if not qlora_available():
        raise TrainingError(f"`{where}` uses method qlora, which needs a CUDA GPU and the bitsandbytes package, "
                            "and this machine has not both",
                            "run this method on a GPU node with bitsandbytes installed (training.resources.gpus), "
                            "or use method lora here")


def head_modules(model) -> list[str] | None:
    """What a classifier trains and saves in full beside the adapter: the new head and, on BERT-style
    encoders, the pooler that feeds it (a sentence encoder's pooler was never trained for the [CLS]
    vector, and frozen it leaves the head a poor feature)."""
    if model is None:
        return None
    return [name for name in ("classifier", "score", "pooler") if _trainable_module(model, name)]


def _trainable_module(model, name: str) -> bool:
    """Whether the model has a module ``name`` with parameters (a mean pooler has none: nothing to save)."""
    return any((full == name or full.endswith("." + name)) and any(True for _ in module.parameters())
               for full, module in model.named_modules())


def peft_config(method: MethodSpec, task: str, model=None, where: str = "training.methods"):
    """The peft config of one method, or None for full fine-tuning.

    ``task`` is ``causal-lm`` or ``text-classification``; when ``model`` is given the
    target modules are checked against it first.
    """
    from peft import IA3Config, LoraConfig, TaskType
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FF

    if method.method == "full":
        return None
    if method.method == "qlora":
        require_qlora(where)
    if model is not None:
        check_target_modules(model, method, where)
    task_type = TaskType.CAUSAL_LM if task == "causal-lm" else TaskType.SEQ_CLS
    targets = list(method.target_modules) if method.target_modules else None
    if method.method == "ia3":
        feedforward = None
        if targets:
            model_type = getattr(getattr(model, "config", None), "model_type", "")
            known = set(IA3_FF.get(model_type, [])) | _FEEDFORWARD
            feedforward = [t for t in targets if t in known]
        return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward)
    return LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                      target_modules=targets, use_dora=method.method == "dora",
                      use_rslora=method.method == "rslora", bias="none",
                      modules_to_save=head_modules(model) if task_type == TaskType.SEQ_CLS else None)


def apply_method(model, method: MethodSpec, task: str, where: str = "training.methods"):
    """The model ready to train: wrapped by peft, or all weights trainable for ``full``."""
    from peft import get_peft_model

    config = peft_config(method, task, model, where)
    if config is None:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if method.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("%s: %d trainable parameters of %d (%.3f%%)", method.name, trainable, total, 100 * trainable / total)
    return peft_model
