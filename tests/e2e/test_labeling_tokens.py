"""Label Studio's two kinds of API token against real servers on 127.0.0.1.

- The session's server (tests/helpers/servers.py) runs with Label Studio's default settings:
  legacy tokens are disabled and every labeling test uses a personal access token. Here: the
  admin's own legacy token is refused there with a message that says what to do.
- A second server enables legacy tokens: the legacy path still exports and imports.
- A third issues access tokens that live 2 seconds (SimpleJWT's ACCESS_TOKEN_LIFETIME, set
  through a settings module): a long export outlives several of them. The only stand-in is the
  slowness: the test sleeps between requests, as a large project on a slow link would take.
"""

import json
import logging
import time
from pathlib import Path

import pytest
from helpers.servers import running

from aicd.components.data.format import write_dataset
from aicd.components.errors import LabelingError
from aicd.components.labeling import client as client_module
from aicd.components.labeling.annotations import import_labels
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.labeling.export import export_for_labeling
from aicd.components.labeling.versions import fingerprint
from aicd.components.spec import parse_spec
from aicd.pipelines.preflight import PreflightError, preflight

pytestmark = pytest.mark.e2e
ACCESS_SECONDS = 2.0


def rows(n: int) -> dict[str, list[dict]]:
    labels = ["negative", "neutral", "positive"]
    return {"train": [{"id": f"r{i:04d}", "text": f"review number {i}", "label": labels[i % 3], "source": "t"}
                      for i in range(n)]}


def dataset(path: Path, n: int) -> Path:
    data = rows(n)
    write_dataset(path, data, [], fingerprint=fingerprint(data), parent=None, sources=["test"], task="test")
    return path


def spec_for(review_sentiment_spec: dict, url: str, project: str, **labeling) -> dict:
    review_sentiment_spec["labeling"] = {"url": url, "project": project, **labeling}
    return review_sentiment_spec


def argv(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    with running(tmp_path_factory.mktemp("ls-short"), access_seconds=ACCESS_SECONDS) as server:
        yield server


@pytest.fixture(scope="module")
def legacy_server(tmp_path_factory):
    with running(tmp_path_factory.mktemp("ls-legacy"), legacy=True) as server:
        yield server


def test_default_server_refuses_legacy_tokens_clearly(ls, label_studio, review_sentiment_spec, tmp_path,
                                                      monkeypatch):  # noqa: F811
    assert label_studio.kind == "personal" and ls.credentials.kind == "personal"
    assert label_studio.token not in argv(label_studio.pid) and label_studio.legacy_token not in argv(label_studio.pid)
    with pytest.raises(LabelingError) as err:
        LabelStudio(label_studio.url, label_studio.legacy_token).find_project("anything")
    assert "refused the legacy API token (HTTP 401" in str(err.value)
    assert "this organization accepts personal access tokens only" in str(err.value)
    assert "Account & Settings > Personal Access Token" in str(err.value)
    # the same through a step, the token in the Secret: nothing is created
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.legacy_token)
    spec = spec_for(review_sentiment_spec, label_studio.url, "e2e legacy refused")
    with pytest.raises(LabelingError, match=r"(?s)personal access tokens only.*`labeling.token_secret`") as err:
        export_for_labeling(spec, dataset(tmp_path / "v1", 6))
    assert label_studio.legacy_token not in str(err.value)
    assert ls.find_project("e2e legacy refused") is None
    # a personal access token named legacy in the spec: refused before any request
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    spec["labeling"]["token_kind"] = "legacy"
    with pytest.raises(LabelingError, match="`labeling.token_kind` is legacy, but the Secret holds a personal"):
        export_for_labeling(spec, tmp_path / "v1")


def test_preflight_names_a_refused_token_before_any_step(ls, label_studio, review_sentiment_spec, monkeypatch):  # noqa: F811
    """`aicd run poc` checks the Secret's token with one authenticated call: a legacy token on the
    default server, or no Secret at all, is reported before any step; a personal access token passes."""
    spec = parse_spec(spec_for(review_sentiment_spec, label_studio.url, "e2e preflight"))
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.legacy_token)
    with pytest.raises(PreflightError, match=r"Label Studio token: .*personal access tokens only") as err:
        preflight(spec, "poc")
    assert label_studio.legacy_token not in str(err.value)
    monkeypatch.delenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN")
    with pytest.raises(PreflightError, match=r"Label Studio token: .*`labeling.token_secret`"):
        preflight(spec, "poc")
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", label_studio.token)
    preflight(spec, "poc")
    assert ls.find_project("e2e preflight") is None  # the check created nothing


def test_legacy_tokens_where_the_organization_enables_them(legacy_server, review_sentiment_spec, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("AICD_SECRET_LABEL_STUDIO_TOKEN_TOKEN", legacy_server.token)
    spec = spec_for(review_sentiment_spec, legacy_server.url, "e2e legacy", batch_size=4, token_kind="legacy")
    out = export_for_labeling(spec, dataset(tmp_path / "v1", 9))
    client = LabelStudio(legacy_server.url, legacy_server.token)  # auto: 40 hex is a legacy token
    assert client.credentials.kind == "legacy" and out.created == 4
    for task in client.tasks(out.project_id):
        client.annotate(task["id"], result_for("choices", "neutral"))
    spec["labeling"]["token_kind"] = "auto"
    result = import_labels(spec, tmp_path / "v1", tmp_path / "v2")
    assert result.labeled == 4 and client.credentials.refreshes == 0


def test_access_token_expires_during_a_long_export(short_lived, review_sentiment_spec, tmp_path, monkeypatch,
                                                   caplog):
    """60 rows go out in 6 imports and come back in 6 export pages, each request 0.5 s slower (a slow
    link): a 2-second access token (refreshed 0.4 s early) cannot last 3 s, so it expires in every
    phase and the client refreshes on the way; no task is lost or duplicated."""
    monkeypatch.setattr(client_module, "IMPORT_CHUNK", 10)
    monkeypatch.setattr(client_module, "EXPORT_CHUNK", 10)
    client = LabelStudio(short_lived.url, short_lived.token)
    send = client._send

    def slow_send(method, path, **kwargs):
        if "/import" in path or "/export" in path:
            time.sleep(0.5)
        return send(method, path, **kwargs)

    monkeypatch.setattr(client, "_send", slow_send)
    spec = spec_for(review_sentiment_spec, short_lived.url, "e2e long export", batch_size=60)
    with caplog.at_level(logging.DEBUG):
        out = export_for_labeling(spec, dataset(tmp_path / "v1", 60), client=client)
        after_import = client.credentials.refreshes
        tasks = client.tasks(out.project_id)
        ids = [t["data"]["aicd_id"] for t in tasks]
        assert out.created == 60 and len(ids) == len(set(ids)) == 60
        annotated = {t["data"]["aicd_id"] for t in tasks[:12]}
        for task in tasks[:12]:
            client.annotate(task["id"], result_for("choices", "positive"))
        exported = client.export(out.project_id)
        labeled = import_labels(spec, tmp_path / "v1", tmp_path / "v2", client=client)
    assert after_import >= 2 and client.credentials.refreshes >= after_import + 2  # the first, then 3 s per phase
    assert sorted(t["data"]["aicd_id"] for t in exported) == sorted(ids)
    assert {t["data"]["aicd_id"] for t in exported if len(t["annotations"]) == 1} == annotated
    assert all(len(t["annotations"]) == 0 for t in exported if t["data"]["aicd_id"] not in annotated)
    assert labeled.labeled == 12
    assert json.loads((tmp_path / "v2" / "card.json").read_text())["labeling"]["labeled"] == 12
    assert "access token refreshed" in caplog.text and "answered 401" not in caplog.text  # refreshed ahead of expiry
    # the clock says the access token is still good, the server says it expired: one refresh, then on
    client.credentials._expires = time.time() + 3600
    time.sleep(ACCESS_SECONDS + 0.5)
    before = client.credentials.refreshes
    with caplog.at_level(logging.DEBUG):
        assert client.find_project("e2e long export")["id"] == out.project_id
    assert client.credentials.refreshes == before + 1 and "answered 401 to GET /api/projects/" in caplog.text
    # no token in the logs (urllib3's included), the client's repr, or the server's command line
    access = client.credentials.header().removeprefix("Bearer ")
    for secret in (short_lived.token, access, short_lived.legacy_token):
        assert secret not in caplog.text and secret not in repr(client.credentials)
        assert secret not in argv(short_lived.pid)

