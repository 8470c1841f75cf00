"""Secrets are read by Secret name: a mounted file in a cluster, a variable locally."""

import pytest

from aicd.components.errors import AicdError
from aicd.components.secrets import read_secret


def test_mounted_file_then_variable(tmp_path, monkeypatch):
    (tmp_path / "gitops-cred").mkdir()
    (tmp_path / "gitops-cred" / "token").write_text("from-file\n")
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("AICD_SECRET_GITOPS_CRED_TOKEN", raising=False)
    assert read_secret("gitops-cred") == "from-file"
    monkeypatch.setenv("AICD_SECRET_GITOPS_CRED_TOKEN", "from-env")
    assert read_secret("gitops-cred") == "from-env"


def test_missing_secret_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    with pytest.raises(AicdError) as info:
        read_secret("label-studio-token", "token")
    assert "secret 'label-studio-token' (key 'token') is not available" in info.value.message
    assert "export AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN" in info.value.hint
