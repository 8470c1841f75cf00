"""Payload log + feedback -> feedback data set: joining, masking, preference pairs, bad input."""

import json

import pytest

from aicd.components.data.format import SPLITS, read_quarantine, read_split
from aicd.components.errors import DataError, LabelingError
from aicd.components.labeling.feedback import Masker, add_feedback, collect_feedback
from aicd.components.labeling.payloads import exchange_of
from aicd.components.spec import LabelingSpec


def chat(rid, prompt, answer):
    return {"type": "request", "id": rid, "time": f"2026-01-01T00:00:{rid[-2:]}Z", "adapter": "base",
            "endpoint": "/openai/v1/chat/completions",
            "request": {"model": "m", "messages": [{"role": "system", "content": "be nice"},
                                                   {"role": "user", "content": prompt}]},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]},
            "latency_ms": 12.5}


def fb(rid, rating, correction=None, t="01"):
    return {"type": "feedback", "id": rid, "time": f"2026-01-01T00:01:{t}Z", "rating": rating,
            "correction": correction}


def write_log(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def all_rows(out):
    return [r for s in SPLITS for r in read_split(out, s)]


def test_masker_masks_default_patterns():
    mask = Masker(LabelingSpec(project="demo").pii_patterns)
    text = mask("mail jane.doe+x@example.co.uk or call +1 (555) 123-4567 today")
    assert text == "mail [EMAIL] or call [PHONE] today"
    assert mask.counts == {"email": 1, "phone": 1}


def test_feedback_log_becomes_a_dataset(tmp_path, support_bot_spec):
    write_log(tmp_path / "payloads.jsonl", [  # read through the log folder, as the predictor writes it
        chat("r01", "What is AI?", "AI is the study of thinking machines."),
        chat("r02", "My email is bob@example.com, reset my password", "Sure, bob@example.com, done."),
        chat("r03", "Do you like sports?", "No."),
        chat("r04", "Tell me a joke", "Knock knock."),
        chat("r05", "Do you like sports?", "I love watching tennis!"),
        chat("r06", "Unrated request", "Fine."),
        fb("r01", "up"), fb("r02", "up"), fb("r03", "down"), fb("r05", "up"),
        fb("r04", "down", "Why did the computer see a doctor? It had a virus."),
        fb("r99", "up"),  # feedback on a request that is not in the log
    ])
    result = collect_feedback(support_bot_spec, tmp_path, tmp_path / "out")
    rows = {r["id"]: r for r in all_rows(tmp_path / "out")}
    assert set(rows) == {"r01", "r02", "r04", "r05"} and result.rows == 4 and result.new_rows == 4
    assert rows["r02"]["instruction"] == "My email is [EMAIL], reset my password"
    assert rows["r02"]["response"] == "Sure, [EMAIL], done."
    joke = rows["r04"]
    assert joke["response"].startswith("Why did the computer") and joke["source"] == "feedback:correction"
    assert (joke["prompt"], joke["chosen"], joke["rejected"]) == ("Tell me a joke", joke["response"], "Knock knock.")
    # the thumbs-down "No." pairs with the accepted answer to the same prompt
    assert rows["r05"]["rejected"] == "No." and rows["r05"]["chosen"] == "I love watching tennis!"
    assert result.preference_pairs == 2
    quarantine = {q["kind"]: q for q in read_quarantine(tmp_path / "out")}
    assert quarantine["thumbs-down"]["response"] == "No." and "negative signal" in quarantine["thumbs-down"]["reason"]
    assert "not in the log" in quarantine["orphan-feedback"]["reason"]
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["parent"] is None and card["feedback"]["masked"]["email"] == 2
    assert card["quarantine_counts"] == {"orphan-feedback": 1, "thumbs-down": 1}
    assert sum(card["counts"].values()) == 4 and card["fingerprint"].startswith("sha256:")
    assert card["rows_per_source"] == {"feedback:correction": 1, "feedback:up": 3}
    # the data area's profile report reads a feedback version like an ingested one
    from aicd.components.data.profile import profile_dataset

    profile_dataset(tmp_path / "out", tmp_path / "profile.html")
    assert "feedback:correction" in (tmp_path / "profile.html").read_text()


def test_rerun_on_parent_adds_only_new_rows(tmp_path, support_bot_spec):
    log = write_log(tmp_path / "a.jsonl", [chat("r01", "What is AI?", "Machines that think."), fb("r01", "up")])
    first = collect_feedback(support_bot_spec, log, tmp_path / "v1")
    write_log(log, [chat("r01", "What is AI?", "Machines that think."), fb("r01", "up"),
                    chat("r02", "What is AI?", "Machines that think."), fb("r02", "up"),  # same exchange again
                    chat("r03", "Hello", "Hi there!"), fb("r03", "up", t="05")])
    second = collect_feedback(support_bot_spec, log, tmp_path / "v2", parent_dir=tmp_path / "v1")
    assert second.new_rows == 1 and second.rows == 2
    card = json.loads((tmp_path / "v2" / "card.json").read_text())
    assert card["parent"] == first.fingerprint


def test_latest_feedback_wins(tmp_path, support_bot_spec):
    log = write_log(tmp_path / "p.jsonl", [chat("r01", "Hi", "Hello!"), fb("r01", "up", t="01"),
                                           fb("r01", "down", t="02")])
    assert collect_feedback(support_bot_spec, log, tmp_path / "out").rows == 0


def test_classification_feedback_checks_labels(tmp_path, review_sentiment_spec):
    def v1(rid, text, label):
        return {"type": "request", "id": rid, "time": "t", "adapter": "base", "endpoint": "/v1/models/m:predict",
                "request": {"instances": [text]}, "response": {"predictions": [label]}, "latency_ms": 3}
    log = write_log(tmp_path / "p.jsonl", [v1("r01", "great pill", "positive"), fb("r01", "up"),
                                           v1("r02", "awful", "positive"), fb("r02", "down", "negative"),
                                           v1("r03", "meh", "neutral"), fb("r03", "down", "so-so")])
    collect_feedback(review_sentiment_spec, log, tmp_path / "out")
    rows = {r["id"]: r for r in all_rows(tmp_path / "out")}
    assert (rows["r01"]["label"], rows["r02"]["label"]) == ("positive", "negative")
    assert rows["r02"]["rejected"] is None  # no preference pairs for classification
    bad = [q for q in read_quarantine(tmp_path / "out") if q["kind"] == "unknown-label"]
    assert len(bad) == 1 and "'so-so' is not one of task.labels" in bad[0]["reason"]


@pytest.mark.parametrize("record, expected", [
    ({"request": {"prompt": "Hi"}, "response": {"choices": [{"text": "Hello"}]}}, ("Hi", "Hello", None)),
    ({"request": {"instances": [{"text": "Hi"}]}, "response": {"predictions": ["Hello"]}}, ("Hi", "Hello", None)),
    ({"request": {"inputs": [{"name": "text", "data": ["Hi"]}]},
      "response": {"outputs": [{"name": "out", "data": ["Hello"]}]}}, ("Hi", "Hello", None)),
    ({"request": {"instances": ["a", "b"]}, "response": {"predictions": ["x", "y"]}},
     (None, None, "2 instances in one request: feedback cannot say which one it is about")),
    ({"request": {"prompt": "Hi"}, "response": {"error": "overloaded"}},
     (None, None, "the request failed (overloaded)")),
    ({"request": {"foo": 1}, "response": {}, "endpoint": "/x"},
     (None, None, "unknown request shape on '/x' (keys: foo)")),
])
def test_exchange_of_protocols(record, expected):
    assert exchange_of(record) == expected


def test_bad_logs(tmp_path, support_bot_spec):
    with pytest.raises(LabelingError, match="payload log .* does not exist"):
        collect_feedback(support_bot_spec, tmp_path / "missing", tmp_path / "out")
    log = write_log(tmp_path / "p.jsonl", [chat("r01", "Hi", "Hello"), fb("r01", "up")], ["{not json", "[1]"])
    with pytest.raises(DataError, match=r"2 of 4 lines are unreadable \(first: line 3, not JSON"):
        collect_feedback(support_bot_spec, log, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_one_log_per_predictor_pod(tmp_path, support_bot_spec):
    """The payload-logs claim holds one sub-folder per pod (servingruntime.yaml subPathExpr); feedback
    may reach another pod than its request, and the latest feedback by time wins across pods."""
    claim = tmp_path / "claim"
    for pod in ("pod-a", "pod-b"):
        (claim / pod).mkdir(parents=True)
    write_log(claim / "pod-a" / "payloads.jsonl", [chat("r01", "What is AI?", "Thinking machines."),
                                                   chat("r02", "Hello", "Hi!"), fb("r02", "up", t="09")])
    write_log(claim / "pod-b" / "payloads.jsonl", [fb("r01", "up"), chat("r03", "Bye", "See you."),
                                                   fb("r03", "up"), fb("r02", "down", t="05")])
    result = collect_feedback(support_bot_spec, claim, tmp_path / "out")
    assert sorted(r["id"] for r in all_rows(tmp_path / "out")) == ["r01", "r02", "r03"]
    assert result.new_rows == 3
    (claim / "pod-b" / "payloads.jsonl").write_text("{broken\n")
    with pytest.raises(DataError, match=r"first: .*pod-b/payloads.jsonl:1, not JSON"):
        collect_feedback(support_bot_spec, claim, tmp_path / "out2")
    (tmp_path / "empty" / "pod-c").mkdir(parents=True)  # a pod that has not logged anything yet
    with pytest.raises(LabelingError, match="holds no payloads.jsonl, neither itself nor in a sub-folder"):
        collect_feedback(support_bot_spec, tmp_path / "empty", tmp_path / "out3")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_add_feedback_to_a_dataset(tmp_path, support_bot_spec):
    from aicd.components.labeling.versions import fingerprint, read_version, write_version
    from aicd.components.spec import parse_spec

    task = parse_spec(support_bot_spec).task
    rows = {"train": [{"id": "d1", "instruction": "What is AI?", "response": "Thinking machines.", "source": "s"}],
            "validation": [], "test": [{"id": "d2", "instruction": "Hello", "response": "Hi!", "source": "s"}]}
    write_version(tmp_path / "data", task, rows, [{"kind": "too-long", "reason": "x"}], None, ["s"])
    log = write_log(tmp_path / "p.jsonl", [
        chat("r01", "What is AI?", "Thinking machines."), fb("r01", "up"),  # the data set has this pair
        chat("r02", "Tell me a joke", "No."), fb("r02", "down", "Knock knock."),
        chat("r03", "Bye", "See you."), fb("r03", "up"), chat("r04", "Rude", "Go away."), fb("r04", "down")])
    feedback = collect_feedback(support_bot_spec, log, tmp_path / "fb")
    assert feedback.rows == 3
    result = add_feedback(support_bot_spec, tmp_path / "data", tmp_path / "fb", tmp_path / "train")
    card, splits = read_version(tmp_path / "train")
    ids = sorted(r["id"] for rs in splits.values() for r in rs)
    assert ids == ["d1", "d2", "r02", "r03"] and (result.rows, result.added) == (4, 2)
    fb_rows = {r["id"]: (name, r) for name, rs in read_version(tmp_path / "fb")[1].items() for r in rs}
    assert {r["id"]: name for name, rs in splits.items() for r in rs if r["id"].startswith("r")} == \
        {i: fb_rows[i][0] for i in ("r02", "r03")}  # each kept in the split collect_feedback gave it
    assert card["parent"] == fingerprint(rows) and card["sources"][-1]["fingerprint"] == feedback.fingerprint
    assert card["fingerprint"] == result.fingerprint
    assert sorted(q["kind"] for q in read_quarantine(tmp_path / "train")) == ["thumbs-down", "too-long"]


def _with_scheme(spec, row_hash):
    spec = json.loads(json.dumps(spec))
    spec["data"]["row_hash"] = row_hash
    return spec


@pytest.mark.parametrize(("dataset_scheme", "feedback_scheme"), [("v2", "v1"), ("v1", "v2")])
def test_add_feedback_splits_again_under_the_datasets_scheme(tmp_path, support_bot_spec, dataset_scheme,
                                                              feedback_scheme):
    """Feedback split under one scheme merged into a data set of the other: each added row gets the
    split the data set's scheme gives its prompt (else a prompt could be in train under one scheme and
    in test under the other), and the card names the data set's scheme."""
    from aicd.components.labeling.versions import read_version, split_of, write_version
    from aicd.components.spec import parse_spec

    parsed = parse_spec(_with_scheme(support_bot_spec, dataset_scheme))
    rows = {"train": [{"id": "d1", "instruction": "What is AI?", "response": "Thinking machines.", "source": "s"}],
            "validation": [], "test": []}
    write_version(tmp_path / "data", parsed.task, rows, [], None, ["s"], row_hash=dataset_scheme)
    prompts = [f"question number {i} about the product" for i in range(40)]
    records = [r for i, p in enumerate(prompts) for r in (chat(f"r{i:02d}", p, f"answer {i}"), fb(f"r{i:02d}", "up"))]
    log = write_log(tmp_path / "p.jsonl", records)
    collect_feedback(_with_scheme(support_bot_spec, feedback_scheme), log, tmp_path / "fb")
    old = {r["id"]: name for name, rs in read_version(tmp_path / "fb")[1].items() for r in rs}
    result = add_feedback(_with_scheme(support_bot_spec, dataset_scheme), tmp_path / "data", tmp_path / "fb",
                          tmp_path / "train")
    card, splits = read_version(tmp_path / "train")
    got = {r["id"]: name for name, rs in splits.items() for r in rs if r["id"].startswith("r")}
    want = {f"r{i:02d}": split_of(p, parsed.data.split, dataset_scheme) for i, p in enumerate(prompts)}
    assert result.added == 40 and got == want and card["row_hash"] == dataset_scheme
    assert got != old  # the two schemes split these prompts differently: the test checks a real move


def test_add_feedback_refuses_rows_with_ids_of_the_other_scheme(tmp_path, support_bot_spec):
    """A feedback version that inherited data set rows (ids digested under v1) cannot join a v2 data set:
    those ids cannot be made again, so the merge is refused and nothing is written."""
    from aicd.components.labeling.versions import write_version
    from aicd.components.spec import parse_spec

    task = parse_spec(support_bot_spec).task
    parent = {"train": [{"id": "h0123456789abcdef", "instruction": "Old", "response": "Row.", "source": "s"}],
              "validation": [], "test": []}
    write_version(tmp_path / "v1data", task, parent, [], None, ["s"])
    write_version(tmp_path / "v2data", task, {"train": [], "validation": [], "test": []}, [], None, ["s"],
                  row_hash="v2")
    log = write_log(tmp_path / "p.jsonl", [chat("r01", "Hi", "Hello."), fb("r01", "up")])
    collect_feedback(support_bot_spec, log, tmp_path / "fb", parent_dir=tmp_path / "v1data")
    with pytest.raises(DataError) as err:
        add_feedback(_with_scheme(support_bot_spec, "v2"), tmp_path / "v2data", tmp_path / "fb", tmp_path / "out")
    message = str(err.value)
    assert "'v1'" in message and "'v2'" in message and "h0123456789abcdef" in message
    assert "collect the feedback again" in message and not (tmp_path / "out").exists()
