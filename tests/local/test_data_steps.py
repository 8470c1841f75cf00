"""The data steps under kfp.local (SubprocessRunner in this environment), on the example specs' data."""

import re
from pathlib import Path

import pytest
from helpers.specs import sections
from kfp import dsl, local
from kfp.dsl import HTML

from aicd.components.cards import verify_card
from aicd.components.data.format import read_split


@pytest.fixture
def kfp_local(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    return tmp_path


def test_ingest_step_on_support_bot(kfp_local, support_bot_spec):
    from aicd.components.data.steps import ingest_dataset

    # the parent as the pipeline passes it (ingest.parent_ref): its scheme is checked, the card keeps the fingerprint
    task = ingest_dataset(**sections(support_bot_spec, "task", "data"), parent_fingerprint="sha256:" + "0" * 64 + "@v1")
    dataset = task.outputs["dataset"]
    card = verify_card(dataset.path, kind="dataset")
    meta = dataset.metadata
    assert meta["fingerprint"] == card["fingerprint"] and meta["digest"] == card["digest"]
    assert meta["parent"] == card["parent"] == "sha256:" + "0" * 64
    assert int(meta["rows_train"]) == card["counts"]["train"] > 500
    assert int(meta["quarantine_duplicate"]) == card["quarantine_counts"]["duplicate"]
    assert {"instruction", "response", "topic"} <= set(read_split(dataset.path, "validation")[0])


def test_ingest_then_profile_on_review_sentiment(kfp_local, review_sentiment_spec):
    """A step that takes an artifact runs inside a pipeline under kfp.local."""
    from aicd.components.data.steps import ingest_dataset, profile_dataset

    @dsl.pipeline
    def data_pipeline(task: dict, data: dict) -> HTML:
        ingest_task = ingest_dataset(task=task, data=data)
        profile_task = profile_dataset(dataset=ingest_task.outputs["dataset"])
        return profile_task.outputs["report"]

    run = data_pipeline(**sections(review_sentiment_spec, "task", "data"))
    report = run.output
    page = Path(report.path).read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,iVBORw0KGgo', page)) == 4
    assert "Label distribution by split" in page and "drugscom" in page
    assert int(report.metadata["plots"]) == 4 and report.metadata["fingerprint"] in page


def test_ingest_step_fails_on_bad_data(kfp_local, review_sentiment_spec, tmp_path):
    from aicd.components.data.steps import ingest_dataset

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine words here", "label": "positive"}\nnot json\nnot json either\n')
    review_sentiment_spec["data"]["sources"] = [{"uri": str(bad)}]
    with pytest.raises(RuntimeError, match="ingest-dataset"):
        ingest_dataset(**sections(review_sentiment_spec, "task", "data"))
