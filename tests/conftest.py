"""Shared fixtures: tiny random models (fast), the example specs, and the real servers (tests/helpers).

Helpers shared by tests live in the ``helpers`` package (ports, servers, artifacts, specs,
data), imported as ``from helpers.<module> import ...``, never from another test module.
Every test under tests/local/ is marked ``local`` (kfp.local runs), so ``make test-fast``
can leave them out with the slow and e2e ones.
"""

import copy
from pathlib import Path

import pytest
import yaml
from ci_skips import pytest_configure, pytest_runtest_makereport  # noqa: F401 - hooks: a skip fails under CI
from helpers.gitops import remote  # noqa: F401 - a bare GitOps repository seeded with the manifests
from helpers.servers import label_studio, ls  # noqa: F401 - the real Label Studio fixtures, for every test
from tiny_models import make_causal_lm, make_encoder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """Folder of a tiny random Llama (safetensors + BPE tokenizer with a chat template)."""
    return make_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """Folder of a tiny random BERT encoder, shaped like all-MiniLM-L6-v2."""
    return make_encoder(tmp_path_factory.mktemp("tiny-bert"))


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name / "spec.yaml").read_text())


@pytest.fixture
def support_bot_spec() -> dict:
    """The support-bot example spec as a plain dict (a fresh copy per test)."""
    return copy.deepcopy(_example("support-bot"))


@pytest.fixture
def review_sentiment_spec() -> dict:
    """The review-sentiment example spec as a plain dict (a fresh copy per test)."""
    return copy.deepcopy(_example("review-sentiment"))


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory):
    """A real kube-apiserver 1.20.2 + etcd on 127.0.0.1 with the project's CRDs (tests/kube_server.py).

    Gives ``.kubeconfig``, ``.token`` (admin), ``.kubectl(...)``, ``.namespace()`` (fresh per test),
    ``.can_i(...)`` and ``.api_client(as_user=...)``. Missing binaries fail under CI, skip elsewhere.
    """
    import os

    from kube_server import KubeServer, KubeServerUnavailable

    server = KubeServer(tmp_path_factory.mktemp("kube"))
    try:
        server.start()
    except KubeServerUnavailable as err:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(err))
    try:
        server.install_crds()
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items):
    """Mark every test under tests/local/ as ``local`` (kfp.local pipeline runs: minutes, not seconds)."""
    local_dir = Path(__file__).resolve().parent / "local"
    for item in items:
        if local_dir in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.local)
