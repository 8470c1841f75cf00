"""Client errors that need no server, import collection from an export, and the KFP steps."""


import pytest
from helpers.ports import free_port

from aicd.components.errors import LabelingError
from aicd.components.labeling.annotations import _check_bad_fraction, collect
from aicd.components.labeling.client import LabelStudio
from aicd.components.labeling.configs import result_for
from aicd.components.spec import LabelingSpec


def test_unreachable_server():
    client = LabelStudio(f"http://127.0.0.1:{free_port()}", "x" * 40, timeout=5, backoff=0.01)
    with pytest.raises(LabelingError, match=r"Label Studio at http://127.0.0.1:\d+ is unreachable") as err:
        client.find_project("demo")
    assert "fix `labeling.url`" in str(err.value)


def test_token_comes_from_the_secret(monkeypatch):
    spec = LabelingSpec(project="demo", token_secret="ls-token-test")
    monkeypatch.delenv("AICD_SECRET_LS_TOKEN_TEST_TOKEN", raising=False)
    monkeypatch.setenv("AICD_SECRETS_DIR", "/nonexistent")
    with pytest.raises(LabelingError, match=r"token \(`labeling.token_secret` = 'ls-token-test'\) is not available"):
        LabelStudio.from_spec(spec)
    monkeypatch.setenv("AICD_SECRET_LS_TOKEN_TEST_TOKEN", "abc123")
    assert LabelStudio.from_spec(spec).credentials.header() == "Token abc123"  # not a JWT: a legacy token
    with pytest.raises(LabelingError, match="`labeling.token_kind` is personal, but the token in the Secret"):
        LabelStudio.from_spec(spec.model_copy(update={"token_kind": "personal"}))


def test_bad_url():
    with pytest.raises(LabelingError, match="must start with http:// or https://"):
        LabelStudio("127.0.0.1:8080", "t")


def _task(tid, row_id, *annotations):
    return {"id": tid, "data": {"aicd_id": row_id, "text": "t"},
            "annotations": [{"id": tid * 10 + i, "completed_by": who, "result": res, "was_cancelled": cancel,
                             "updated_at": f"2026-01-01T00:00:0{i}Z"}
                            for i, (who, res, cancel) in enumerate(annotations)]}


def test_collect_quarantines_unusable_annotations():
    labels = ["neg", "pos"]
    tasks = [
        _task(1, "a", (1, result_for("choices", "pos"), False), (2, result_for("choices", "neg"), False)),
        _task(2, "b", (1, result_for("choices", "pos"), False), (2, result_for("choices", "bogus"), False)),
        _task(3, "c", (1, [], False), (2, result_for("choices", "pos"), True)),
        _task(4, "d", (1, result_for("choices", "neg"), False), (1, result_for("choices", "pos"), False)),
        _task(6, "e", (1, result_for("choices", "neg"), False), (1, result_for("choices", "nope"), False)),
        {"id": 5, "data": {"text": "made by hand"}, "annotations": []},
    ]
    got = collect("choices", tasks, labels)
    assert got.items["a"].values == {1: "pos", 2: "neg"}
    assert got.items["b"].values == {1: "pos"}
    assert got.items["d"].values == {1: "pos"}  # the annotator's latest annotation counts
    assert got.items["e"].values == {}  # ... even when it is unusable
    assert got.skipped == 1 and got.foreign_tasks == 1 and got.usable == 6
    reasons = sorted(q["reason"] for q in got.quarantine)
    assert reasons == ["empty result (nothing was selected)", "label 'bogus' is not one of task.labels ['neg', 'pos']",
                       "label 'nope' is not one of task.labels ['neg', 'pos']"]
    with pytest.raises(LabelingError, match=r"3 of 9 annotations \(33%\) are unusable, more than"):
        _check_bad_fraction(got, 0.05)
    _check_bad_fraction(got, 0.34)


def test_steps_compile(tmp_path):
    from kfp import compiler

    from aicd.components.labeling import steps

    for name in ("export_for_labeling", "import_labels", "collect_feedback", "review_candidates"):
        compiler.Compiler().compile(getattr(steps, name), str(tmp_path / f"{name}.yaml"))
        assert (tmp_path / f"{name}.yaml").read_text().count("aicd.components.labeling") >= 1
