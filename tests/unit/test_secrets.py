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


@pytest.mark.parametrize("name, key, message", [
    ("../etc", "token", "is not a Kubernetes Secret name"), ("a/b", "token", "is not a Kubernetes Secret name"),
    ("..", "token", "is not a Kubernetes Secret name"), ("ok", "../passwd", "is not a Kubernetes Secret key"),
    ("ok", "..", "is not a Kubernetes Secret key"), ("ok", "a/b", "is not a Kubernetes Secret key"),
])
def test_secret_names_cannot_leave_the_secrets_folder(tmp_path, monkeypatch, name, key, message):
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    with pytest.raises(AicdError, match=message):
        read_secret(name, key)


def test_a_secret_file_linking_out_is_refused_and_kubernetes_links_are_not(tmp_path, monkeypatch):
    (tmp_path / "outside").write_text("not a secret")
    tmp_path = tmp_path / "secrets"
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    (tmp_path / "evil").mkdir(parents=True)
    (tmp_path / "evil" / "token").symlink_to(tmp_path.parent / "outside")
    with pytest.raises(AicdError, match="leaves"):
        read_secret("evil", "token")
    data = tmp_path / "good" / "..2026_12_06"  # the layout of a mounted Secret: key -> ..data/key
    data.mkdir(parents=True)
    (data / "token").write_text("tok\n")
    (tmp_path / "good" / "..data").symlink_to("..2026_12_06")
    (tmp_path / "good" / "token").symlink_to("..data/token")
    assert read_secret("good", "token") == "tok"
