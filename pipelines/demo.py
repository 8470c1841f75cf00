"""``make demo``: run the main job locally on the offline default.

Today this runs the parts that exist, for real: validate the spec, resolve the
candidate model from its offline package (converting the GGUF once), load it with
transformers and answer the spec's probe prompts greedily.
"""

import logging
import time
from pathlib import Path

from aicd.components.spec import load_spec

log = logging.getLogger(__name__)


def run_demo(spec_path: str, workdir: str = ".aicd/demo") -> int:
    import torch

    from aicd.components.models import format_prompt, load_causal_lm

    started = time.monotonic()
    spec = load_spec(spec_path)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    candidate = spec.candidate()
    print(f"spec {spec_path}: ok ({spec.name}, {spec.task.type})")
    model, tokenizer, model_dir = load_causal_lm(candidate.uri)
    print(f"model {candidate.name}: {candidate.uri} -> {model_dir}")
    torch.manual_seed(spec.metrics.seed)
    for question in spec.metrics.probe_prompts or ["Hello, who are you?"]:
        prompt = format_prompt(tokenizer, question, candidate.prompt_template or spec.task.prompt_template,
                               spec.task.system_prompt)
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=spec.metrics.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        print(f"Q: {question}\nA: {answer}")
    print(f"demo finished in {time.monotonic() - started:.1f}s")
    return 0
