"""The memory probe of bench_serving: the serving Engine with 4 adapters against 4 merged copies,
each in a fresh interpreter (RSS growth after loading, libraries imported first)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import ROOT_DIR

_MEMORY = """
import gc, json, sys, psutil, torch, transformers, peft
torch.set_num_threads(1)
base_dir, adapters, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.engine import Engine
from aicd.components.models import load_causal_lm


def own(model):
    # Weights in this process's own memory, as from separate artifact files: safetensors
    # mmaps would otherwise share identical pages between copies of the same file.
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.data = t.data.clone()
    return model


def storage_bytes(models):
    seen = {}
    for m in models:
        for t in list(m.parameters()) + list(m.buffers()):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


gc.collect()
before = psutil.Process().memory_info().rss
keep = []
if mode == "engine":
    engine = Engine(ServeConfig(base=base_dir, adapters=adapters))
    engine.load_base()
    own(engine.model)
    for name, uri in adapters.items():
        engine.attach(engine.verify(name, uri))
    keep.append(own(engine.model))
else:
    from peft import PeftModel
    for name, uri in adapters.items():
        model, _, _ = load_causal_lm(base_dir)
        keep.append(own(PeftModel.from_pretrained(model, uri).merge_and_unload()))
gc.collect()
print(json.dumps({"growth": psutil.Process().memory_info().rss - before, "storage": storage_bytes(keep)}))
"""


def memory_growth(base: Path, adapters: dict[str, Path], mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEMORY, str(base), json.dumps({k: str(v) for k, v in
                                                                                 adapters.items()}), mode],
                          capture_output=True, text=True, cwd=ROOT_DIR, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe ({mode}) failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
